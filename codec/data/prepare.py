"""Pack training data once into uint8 shards, so that training reads crops through memory maps instead
of decoding a PNG per sample (a 448x256 Vimeo frame: about 3.5 ms of PNG decoding per core; a crop out of
a memory map: tens of microseconds; benchmarks/README.md).

    python -m codec.prepare SRC OUT --format vimeo [--list-file sep_trainlist.txt]
    python -m codec.prepare SRC OUT --format folder
    python run.py ... data.format=packed data.root=OUT

OUT holds shard-NNNNN.u8 (images one after another, each H x W x 3 bytes, row-major) and index.json:
per image its group (the Vimeo sequence or the file's relative path: the unit of the train/validation
split, so the split is the source's), its name, shard, byte offset and size. Crops are drawn as from the
source (same seed, same positions), so a packed run sees the same pixels. Packing shows progress and
resumes: progress.json records every finished shard; a rerun keeps those and goes on from there. An
image that cannot be decoded is listed in index.json's "unreadable" and left out, with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from codec.data.images import UnreadableImage, read_rgb
from codec.data.packed import INDEX, PROGRESS, _shard_path
from codec.errors import LicSweepError
from codec.records.files import write_json_atomic

SHARD_BYTES = 1 << 30  # 1 GiB: a few thousand Vimeo frames


def prepare(src: str | Path, out: str | Path, fmt: str = "folder", list_file: str | None = None,
            shard_bytes: int = SHARD_BYTES, progress_every: int = 500) -> dict:
    """Pack the images of `src` (data.format `fmt`) into `out`; returns the index. Resumes an interrupted
    packing of the same source."""
    from codec.data.training import source_groups

    if fmt not in ("vimeo", "folder"):
        raise LicSweepError(f"--format {fmt!r}: choose vimeo or folder")
    src, out = Path(src).resolve(), Path(out)
    groups = source_groups(fmt, src, list_file)
    items = [(group, path) for group, paths in groups.items() for path in paths]
    source = {"source": str(src), "format": fmt, "list_file": list_file if fmt == "vimeo" else None}
    if (out / INDEX).is_file():
        index = json.loads((out / INDEX).read_text())
        if {k: index.get(k) for k in source} == source:
            print(f"{out} is already packed from {src} ({len(index['images'])} images)")
            return index
        raise LicSweepError(f"{out} holds a packed copy of {index.get('source')}, not {src}; choose another OUT")
    out.mkdir(parents=True, exist_ok=True)
    done = {"images": [], "unreadable": [], "shards": 0, "items": 0, **source}
    if (out / PROGRESS).is_file():
        saved = json.loads((out / PROGRESS).read_text())
        if {k: saved.get(k) for k in source} != source:
            raise LicSweepError(f"{out} holds a partial packing of {saved.get('source')}, not {src}; choose another OUT")
        done = saved
        print(f"resuming: {done['shards']} shards ({done['items']} of {len(items)} images) already packed")
    for stale in out.glob("shard-*.u8"):  # a shard that was being written when packing stopped
        if int(stale.stem.split("-")[1]) >= done["shards"]:
            stale.unlink()
    shard, offset, pending, pending_bad = done["shards"], 0, [], []
    handle = open(_shard_path(out, shard), "wb")
    start, total_bytes = time.monotonic(), 0

    def close_shard() -> None:
        nonlocal shard, offset, handle, pending, pending_bad
        handle.close()
        done["images"] += pending
        done["unreadable"] += pending_bad
        done["shards"], done["items"] = shard + 1, done["items"] + len(pending) + len(pending_bad)
        write_json_atomic(done, out / PROGRESS)
        shard, offset, pending, pending_bad = shard + 1, 0, [], []
        handle = open(_shard_path(out, shard), "wb")

    try:
        for n, (group, path) in enumerate(items[done["items"]:], start=done["items"] + 1):
            name = str(path.relative_to(src))
            try:
                img = np.ascontiguousarray(read_rgb(path))
            except UnreadableImage as exc:
                print(f"left out: {exc}")
                pending_bad.append(name)
                continue
            handle.write(img.tobytes())
            pending.append({"group": group, "name": name, "shard": shard, "offset": offset, "height": img.shape[0],
                            "width": img.shape[1]})
            offset += img.nbytes
            total_bytes += img.nbytes
            if offset >= shard_bytes:
                close_shard()
            if n % progress_every == 0 or n == len(items):
                rate = (n - done["items"]) / max(time.monotonic() - start, 1e-9)
                print(f"packed {n} of {len(items)} images ({total_bytes / 1e9:.2f} GB this session, "
                      f"{rate:.0f} images/s)", flush=True)
        if pending or pending_bad:
            close_shard()
    except OSError as exc:
        raise LicSweepError(f"packing into {out} failed ({exc}); {done['shards']} finished shards are kept, "
                            "rerun the same command to resume") from None
    finally:
        handle.close()
    _shard_path(out, shard).unlink(missing_ok=True)  # the empty one opened last
    index = {k: v for k, v in done.items() if k not in ("items",)}
    write_json_atomic(index, out / INDEX)
    (out / PROGRESS).unlink(missing_ok=True)
    size = sum(p.stat().st_size for p in out.glob("shard-*.u8"))
    print(f"packed {len(index['images'])} images of {src} into {out}: {index['shards']} shards, {size / 1e9:.2f} GB"
          + (f"; {len(index['unreadable'])} unreadable left out" if index["unreadable"] else ""))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the training data (a Vimeo-90k root or an image folder)")
    parser.add_argument("out", type=Path, help="the packed store to write (then data.format=packed data.root=OUT)")
    parser.add_argument("--format", default="folder", choices=("vimeo", "folder"), help="as data.format")
    parser.add_argument("--list-file", default="sep_trainlist.txt", help="Vimeo-90k's list file, as data.list_file")
    parser.add_argument("--shard-mb", type=int, default=SHARD_BYTES >> 20, help="shard size in MiB")
    args = parser.parse_args(argv)
    try:
        prepare(args.src, args.out, args.format, args.list_file, args.shard_mb << 20)
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
