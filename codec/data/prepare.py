"""Pack training data once into uint8 shards, so that training reads crops through memory maps instead
of decoding a PNG per sample (a 448x256 Vimeo frame: about 3.5 ms of PNG decoding per core; a crop out of
a memory map: tens of microseconds; benchmarks/README.md).

    python -m codec.prepare vimeo_septuplet.zip OUT --workers auto     # straight from the download
    python -m codec.prepare SRC OUT --format vimeo [--list-file sep_trainlist.txt]
    python -m codec.prepare SRC OUT --format folder
    python run.py ... data.format=packed data.root=OUT

A .zip source is read member by member (nothing unpacked; codec.data.zipped: Vimeo-90k's layout where its
list file is inside, else every image). Images are decoded on --workers processes (auto: every CPU this
process may use) and written in the source's order, so the shards do not depend on the number of workers,
and a zip gives the same shards and index as its unpacked folder. Before it starts, prepare prints the
frames, the bytes it will write (from a sample it decodes) and the disk free, and refuses when the disk is
too small; then a progress line with frames/s and ETA.

OUT holds shard-NNNNN.u8 (images one after another, each H x W x 3 bytes, row-major; with --compression
zlib each image's bytes zlib-compressed: 58% of the size, ~1.3 ms to decompress a Vimeo frame) and index.json:
per image its group (the Vimeo sequence or the file's relative path: the unit of the train/validation
split, so the split is the source's), its name, shard, byte offset and size. Crops are drawn as from the
source (same seed, same positions), so a packed run sees the same pixels. Packing resumes: progress.json
records every finished shard; a rerun (also after a SIGKILL) keeps those and goes on from there. An image
that cannot be decoded is listed in index.json's "unreadable" and left out, with a message.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from codec.data.images import UnreadableImage, read_rgb
from codec.data.packed import INDEX, PROGRESS, _shard_path
from codec.errors import LicSweepError
from codec.records.files import write_json_atomic

SHARD_BYTES = 1 << 30  # 1 GiB: a few thousand Vimeo frames
SAMPLE = 48  # images decoded before packing starts, for the size and time estimate
MARGIN = 1 << 30  # disk space left free beyond the estimate
# zlib level 1: a Vimeo frame in 4.6 ms, to 58% of its raw size; level 6 takes twice as long for 56%
# (benchmarks/README.md, "Training-data loading")
ZLIB_LEVEL = 1
COMPRESSIONS = ("none", "zlib")
NAMED = 20  # unreadable images named one by one; the rest are counted
IN_FLIGHT = 32  # decoded images per worker that may wait for the writer


def _decode(item, compression: str | None = None):
    """(stored bytes, (height, width)) of an image, or (None, why) when it cannot be decoded: in a worker
    process. Stored bytes: the uint8 HxWx3 pixels, zlib-compressed (level 1) with compression="zlib"."""
    try:
        img = np.ascontiguousarray(item.read() if hasattr(item, "read") else read_rgb(item))
    except UnreadableImage as exc:
        return None, str(exc)
    data = img.tobytes()
    return (zlib.compress(data, ZLIB_LEVEL) if compression == "zlib" else data), img.shape[:2]


def worker_count(setting: str | int) -> int:
    """--workers as a number: itself, or for auto every CPU this process may run on (its affinity mask)."""
    if str(setting) == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        workers = int(setting)
    except ValueError:
        raise LicSweepError(f"--workers {setting!r}: a number of processes, or auto") from None
    if workers < 1:
        raise LicSweepError(f"--workers {setting!r}: at least 1")
    return workers


def _clock(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def estimate(items: list, compression: str | None = None, sample: int = SAMPLE) -> tuple[float, float]:
    """(bytes written per image, seconds per image on one core), from `sample` images spread over `items`;
    refuses a source of which none of the sampled images can be decoded."""
    picks = [items[round(k * (len(items) - 1) / max(1, sample - 1))] for k in range(min(sample, len(items)))]
    start, sizes, failures = time.perf_counter(), [], []
    for item in picks:
        data, detail = _decode(item, compression)
        if data is not None:
            sizes.append(len(data))
        else:
            failures.append(detail)
    if not sizes:
        raise LicSweepError(f"none of the {len(picks)} images sampled across the source can be decoded (the first: "
                            f"{failures[0]}); is it the right file?")
    seconds = (time.perf_counter() - start) / max(1, len(picks))
    return float(np.mean(sizes)), seconds


def _source_kind(src: Path, fmt: str | None) -> str:
    if not src.exists():
        raise LicSweepError(f"SRC {src} does not exist")
    if fmt in (None, "auto"):
        if src.is_file() and src.suffix.lower() == ".zip":
            return "zip"
        return "vimeo" if any((src / name).is_file() for name in ("sep_trainlist.txt", "tri_trainlist.txt")) \
            else "folder"
    if fmt not in ("vimeo", "folder", "zip"):
        raise LicSweepError(f"--format {fmt!r}: choose vimeo, folder or zip")
    return fmt


def _what(source: dict) -> str:
    return (f"{source.get('source')} (format {source.get('format')}, list file {source.get('list_file')}, "
            f"{source.get('total', '?')} images, compression {source.get('compression') or 'none'})")


def _same(stored: dict, source: dict) -> bool:
    """Whether a packing record is of this source (a record written before it kept the count and the
    listing's hash is compared on what it kept)."""
    return all(stored.get(k) == v for k, v in source.items() if k in stored or k not in ("total", "listing"))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LicSweepError(f"{path} cannot be read ({exc}); delete OUT (or choose another) and pack again") from None
    if not isinstance(value, dict):
        raise LicSweepError(f"{path} is not a packing record; delete OUT (or choose another) and pack again")
    return value


def _shard_number(path: Path) -> int | None:
    number = path.stem.split("-", 1)[1]
    return int(number) if number.isdigit() else None


def _listing_digest(items: list, src: Path) -> str:
    """A hash of the images' names in order: a source that changed under a partial packing is not mixed in."""
    return hashlib.sha1("\n".join(_name(path, src) for _, path in items).encode()).hexdigest()


def _name(item, src: Path) -> str:
    return item.name if hasattr(item, "read") else str(item.relative_to(src))


def item_name(item, src: Path) -> str:
    """An image's name in the index, as it is written: relative to the source (a zip member: as in the unpacked
    folder). (tests/killpoint.py counts the images written through it.)"""
    return _name(item, src)


def prepare(src: str | Path, out: str | Path, fmt: str | None = None, list_file: str | None = None,
            shard_bytes: int = SHARD_BYTES, workers: int | str = 1, progress_seconds: float = 10.0,
            check_space: bool = True, compression: str = "none") -> dict:
    """Pack the images of `src` (a Vimeo-90k folder, an image folder, or a .zip of either; `fmt` None: told
    by the source) into `out`; returns the index. Resumes an interrupted packing of the same source."""
    from codec.data.training import source_groups

    src, out = Path(src).resolve(), Path(out)
    fmt = _source_kind(src, fmt)
    if out.exists() and not out.is_dir():
        raise LicSweepError(f"OUT {out} is a file; name a folder to write the packed store into")
    if not 0 < shard_bytes < 1 << 40:
        raise LicSweepError(f"--shard-mb: {shard_bytes / (1 << 20)} MiB; give a size above 0 (default 1024)")
    if fmt == "vimeo" and not list_file:
        list_file = "sep_trainlist.txt"
    workers = worker_count(workers)
    if compression not in COMPRESSIONS:
        raise LicSweepError(f"--compression {compression!r}: choose {' or '.join(COMPRESSIONS)}")
    compressed = compression if compression != "none" else None
    groups = source_groups(fmt, src, list_file)
    items = [(group, path) for group, paths in groups.items() for path in paths]
    if not items:
        raise LicSweepError(f"SRC {src} holds no images to pack")
    source = {"source": str(src), "format": fmt, "list_file": list_file if fmt != "folder" else None,
              "compression": compressed, "total": len(items), "listing": _listing_digest(items, src)}
    if (out / INDEX).is_file():
        index = _read_json(out / INDEX)
        if _same(index, source):
            print(f"{out} is already packed from {src} ({len(index['images'])} images)")
            return index
        raise LicSweepError(f"{out} holds a packed copy of {_what(index)}, not of {_what(source)}; choose another OUT")
    out.mkdir(parents=True, exist_ok=True)
    done = {"images": [], "unreadable": [], "shards": 0, "items": 0, **source}
    if (out / PROGRESS).is_file():
        saved = _read_json(out / PROGRESS)
        if not _same(saved, source):
            raise LicSweepError(f"{out} holds a partial packing of {_what(saved)}, not of {_what(source)}; choose "
                                "another OUT")
        done = saved
        print(f"resuming: {done['shards']} shards ({done['items']} of {len(items)} images) already packed")
    for stale in out.glob("shard-*.u8"):  # a shard that was being written when packing stopped
        number = _shard_number(stale)
        if number is not None and number >= done["shards"]:
            stale.unlink()
    todo = items[done["items"]:]
    per_image, seconds = estimate([path for _, path in todo], compressed) if todo else (0.0, 0.0)
    need, free = per_image * len(todo), shutil.disk_usage(out).free
    layout = (f"Vimeo-90k layout, list file {list_file}" if list_file or fmt == "vimeo" else "every image in it")
    if todo:
        print(f"{len(items):,} images in {src} ({fmt}: {layout}), {len(todo):,} to pack: about {need / 1e9:.2f} GB to "
              f"write ({per_image * 1000 / 1e6:.0f} MB per 1,000 images), {free / 1e9:.2f} GB free in {out.resolve()}; "
              f"about {_clock(seconds * len(todo) / workers)} on {workers} worker(s) ({1 / max(seconds, 1e-9):.0f} "
              f"images/s per worker on {min(SAMPLE, len(todo))} sampled)", flush=True)
    if check_space and todo and need + MARGIN > free:
        raise LicSweepError(f"{out}: packing needs about {need / 1e9:.1f} GB (+{MARGIN / 1e9:.0f} GB margin) but "
                            f"its disk has {free / 1e9:.1f} GB free; choose an OUT on a larger disk, or train from the "
                            "source without packing (data.format=zip reads the archive in place)")
    shard, offset, pending, pending_bad = done["shards"], 0, [], []
    handle = open(_shard_path(out, shard), "wb")
    start, total_bytes, shown = time.monotonic(), 0, time.monotonic()
    tty = sys.stdout.isatty()  # a terminal: one progress line rewritten every second; a log: a line every 10 s
    every = min(progress_seconds, 1.0) if tty else progress_seconds

    def close_shard() -> None:
        nonlocal shard, offset, handle, pending, pending_bad
        handle.flush()
        os.fsync(handle.fileno())  # on disk before progress.json says it is (a crash, not only a kill)
        handle.close()
        done["images"] += pending
        done["unreadable"] += pending_bad
        done["shards"], done["items"] = shard + 1, done["items"] + len(pending) + len(pending_bad)
        write_json_atomic(done, out / PROGRESS)
        shard, offset, pending, pending_bad = shard + 1, 0, [], []
        handle = open(_shard_path(out, shard), "wb")

    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and len(todo) > 1 else None
    decode = functools.partial(_decode, compression=compressed)

    def decoded_in_order():
        """The decoded images in the source's order, at most IN_FLIGHT per worker ahead of the writer (the
        workers may decode faster than the disk writes: the rest waits in the source, not in memory)."""
        step = IN_FLIGHT * workers
        for first in range(0, len(todo), step):
            block = [path for _, path in todo[first:first + step]]
            yield from pool.imap(decode, block, chunksize=4) if pool else map(decode, block)

    decoded = decoded_in_order()
    try:
        for n, ((group, path), (data, shape)) in enumerate(zip(todo, decoded), start=done["items"] + 1):
            name = item_name(path, src)
            if data is None:  # shape holds why
                bad = len(done["unreadable"]) + len(pending_bad)
                if bad < NAMED:
                    print(f"left out: {shape}")
                elif bad == NAMED:
                    print(f"left out: more unreadable images; they are counted, and listed in {out / INDEX}")
                pending_bad.append(name)
                continue
            handle.write(data)
            pending.append({"group": group, "name": name, "shard": shard, "offset": offset, "height": shape[0],
                            "width": shape[1]} | ({"stored": len(data)} if compressed else {}))
            offset += len(data)
            total_bytes += len(data)
            if offset >= shard_bytes:
                close_shard()
            now = time.monotonic()
            if now - shown >= every or n == len(items):
                shown, rate = now, (n - len(items) + len(todo)) / max(now - start, 1e-9)
                bar = "#" * int(30 * n / len(items))
                print(f"{'[' + bar.ljust(30) + '] ' if tty else ''}packed {n:,} of {len(items):,} images "
                      f"({100 * n / len(items):.1f}%), {total_bytes / 1e9:.2f} GB this session, {rate:.0f} images/s, "
                      f"ETA {_clock((len(items) - n) / max(rate, 1e-9))}",
                      end="\r" if tty and n < len(items) else "\n", flush=True)
        if pending or pending_bad:
            close_shard()
    except OSError as exc:
        raise LicSweepError(f"packing into {out} failed ({exc}); {done['shards']} finished shards are kept, "
                            "rerun the same command to resume") from None
    finally:
        handle.close()
        if pool:
            pool.terminate()
    _shard_path(out, shard).unlink(missing_ok=True)  # the empty one opened last
    if not done["images"]:
        raise LicSweepError(f"none of the {len(items)} images of {src} could be decoded (listed in {out / PROGRESS}); "
                            "nothing to train on")
    index = {k: v for k, v in done.items() if k not in ("items",)}
    write_json_atomic(index, out / INDEX)
    (out / PROGRESS).unlink(missing_ok=True)
    size = sum(p.stat().st_size for p in out.glob("shard-*.u8"))
    elapsed = time.monotonic() - start
    if tty:  # the progress line may end in a carriage return (the last image was unreadable)
        print(" " * 150, end="\r")
    print(f"packed {len(index['images'])} images of {src} into {out}: {index['shards']} shards, {size / 1e9:.2f} GB"
          + (f", {len(todo) / max(elapsed, 1e-9):.0f} images/s on {workers} worker(s)" if todo else "")
          + (f"; {len(index['unreadable'])} unreadable left out" if index["unreadable"] else ""))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the training data: a Vimeo-90k root, an image folder, or a .zip of "
                        "either (vimeo_septuplet.zip as downloaded)")
    parser.add_argument("out", type=Path, help="the packed store to write (then data.format=packed data.root=OUT)")
    parser.add_argument("--format", default="auto", choices=("auto", "vimeo", "folder", "zip"),
                        help="as data.format; auto: zip for a .zip, vimeo where a Vimeo list file is in SRC, else folder")
    parser.add_argument("--list-file", default=None, help="Vimeo-90k's list file, as data.list_file (default: "
                        "sep_trainlist.txt, or in a zip whichever of Vimeo's list files it holds)")
    parser.add_argument("--workers", default="auto", help="decoding processes: a number, or auto (every CPU this "
                        "process may use)")
    parser.add_argument("--shard-mb", type=float, default=SHARD_BYTES >> 20, help="shard size in MiB")
    parser.add_argument("--compression", default="none", choices=COMPRESSIONS,
                        help="zlib: 58%% of the raw size, each crop then costs a 1.3 ms decompression (benchmarks/README.md)")
    parser.add_argument("--no-space-check", action="store_true", help="pack even when the estimate exceeds the free disk")
    args = parser.parse_args(argv)
    if not 0 < args.shard_mb < 1 << 20:  # also nan and inf
        parser.error(f"--shard-mb {args.shard_mb}: a size in MiB above 0 (default {SHARD_BYTES >> 20})")
    try:
        prepare(args.src, args.out, args.format, args.list_file, int(args.shard_mb * (1 << 20)), args.workers,
                check_space=not args.no_space_check, compression=args.compression)
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
