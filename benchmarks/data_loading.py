"""Training-data loading: random crops per second per core from each form the training data can take (the
unpacked PNG folder, Vimeo's zip read in place, packed uint8, packed zlib), their disk space per 1,000 frames,
and codec.prepare's frames/s per worker, with the extrapolation to the full Vimeo-90k septuplets.

    python benchmarks/data_loading.py [--patch 256] [--batch 16] [--seconds 10] [--device cuda]

Data: data/vimeo-sample (448x256 Vimeo-90k frames), zipped in Vimeo's layout and packed into a temporary
folder first. Crops: one process (one core: torch and numpy held to one thread), the dataset class training
uses; a loader with W workers scales with W up to the cores left. With --device cuda each batch is also
copied to the GPU (pinned memory), as training does. Prepare: the sample packed from the zip with 1 and 2
workers (and --workers auto's count, where more cores are here).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, header  # noqa: E402
from codec.data.prepare import prepare, worker_count  # noqa: E402
from codec.data.training import CropDataset, split_files  # noqa: E402

VIMEO = REPO / "data" / "vimeo-sample"
# Vimeo-90k septuplets: frames in sep_trainlist.txt (64,612 sequences) and in the whole zip (91,701)
LISTED_FRAMES, ALL_FRAMES, ZIP_GB = 64_612 * 7, 91_701 * 7, 82


def crops_per_second(items: list, args, device: torch.device) -> float:
    dataset = CropDataset(items, args.patch, train=True, seed=0)
    done, index, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        batch = torch.stack([dataset[(index + i) % len(dataset)][0] for i in range(args.batch)])
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
            torch.cuda.synchronize(device)
        index += args.batch
        done += args.batch
    return done / (time.perf_counter() - start)


def vimeo_zip(path: Path, compression: int, copies: int = 1) -> None:
    """data/vimeo-sample as a zip in vimeo_septuplet.zip's layout (members under vimeo_septuplet/); with
    copies > 1 its sequences again under other numbers (a longer run for prepare's rate)."""
    names = (VIMEO / "sep_trainlist.txt").read_text().split()
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        listed = []
        for copy in range(copies):
            for name in names:
                new = f"{int(name[:5]) + 100 * copy:05d}{name[5:]}"
                listed.append(new)
                for frame in sorted((VIMEO / "sequences" / name).glob("im*.png")):
                    zf.write(frame, f"vimeo_septuplet/sequences/{new}/{frame.name}")
        zf.writestr("vimeo_septuplet/sep_trainlist.txt", "\n".join(listed) + "\n")


def packing_rate(src: Path, out: Path, workers: int) -> float:
    """Frames per second of codec.prepare from `src` with `workers` processes (its own output silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        index = prepare(src, out, workers=workers, progress_seconds=1e9)
    return len(index["images"]) / (time.perf_counter() - start)


def writer_rate(tmp: Path, frames: int = 512) -> float:
    """Frames per second the writing process can take at most: a decoded 448x256 frame pickled and unpickled
    (as the worker pool's pipe does, in this one process) and appended to a file, with no decoding."""
    import pickle

    import numpy as np

    frame = np.random.default_rng(0).integers(0, 256, (256, 448, 3), dtype=np.uint8)
    with open(tmp / "writer.u8", "wb") as shard:
        start = time.perf_counter()
        for _ in range(frames):
            data, shape = pickle.loads(pickle.dumps((frame.tobytes(), frame.shape[:2])))
            shard.write(data)
        shard.flush()
        os.fsync(shard.fileno())
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed per source")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(header(f"{args.patch}x{args.patch} random crops, batches of {args.batch}, one process, "
                 f"data/vimeo-sample, device {device}"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vimeo_zip(tmp / "stored.zip", zipfile.ZIP_STORED)
        vimeo_zip(tmp / "deflated.zip", zipfile.ZIP_DEFLATED)
        with contextlib.redirect_stdout(io.StringIO()):
            prepare(VIMEO, tmp / "packed", "vimeo", "sep_trainlist.txt", progress_seconds=1e9)
            prepare(VIMEO, tmp / "packed-zlib", "vimeo", "sep_trainlist.txt", progress_seconds=1e9,
                    compression="zlib")
        png = split_files("vimeo", VIMEO, 0.05, "sep_trainlist.txt")
        frames = len(png.train) + len(png.val)
        forms = {  # name: (training items, bytes on disk)
            "PNG folder (data.format=vimeo)": (png.train, sum(p.stat().st_size for p in png.train + png.val)),
            "zip, stored members (data.format=zip)": (split_files("zip", tmp / "stored.zip", 0.05).train,
                                                      (tmp / "stored.zip").stat().st_size),
            "zip, deflated members (data.format=zip)": (split_files("zip", tmp / "deflated.zip", 0.05).train,
                                                        (tmp / "deflated.zip").stat().st_size),
            "packed uint8 (codec.prepare)": (split_files("packed", tmp / "packed", 0.05).train,
                                             sum(p.stat().st_size for p in (tmp / "packed").glob("shard-*"))),
            "packed zlib (codec.prepare --compression zlib)": (
                split_files("packed", tmp / "packed-zlib", 0.05).train,
                sum(p.stat().st_size for p in (tmp / "packed-zlib").glob("shard-*")))}
        rates = {name: crops_per_second(items, args, device) for name, (items, _) in forms.items()}
        vimeo_zip(tmp / "longer.zip", zipfile.ZIP_STORED, copies=8)
        counts = sorted({1, 2, worker_count("auto")})
        packing = {w: packing_rate(tmp / "longer.zip", tmp / f"prepared-{w}", w) for w in counts}
        writer = writer_rate(tmp)
    base = rates["PNG folder (data.format=vimeo)"]
    print(f"\n{frames} frames; the full septuplets: {LISTED_FRAMES:,} frames listed for training, "
          f"{ALL_FRAMES:,} in the {ZIP_GB} GB zip\n")
    print("| source | crops/s per core | ratio | disk per 1000 frames | full set on disk |")
    print("|---|---|---|---|---|")
    for name, rate in rates.items():
        per_frame = forms[name][1] / frames
        whole = ZIP_GB if name.startswith("zip") else per_frame * (ALL_FRAMES if "PNG" in name else LISTED_FRAMES) / 1e9
        print(f"| {name} | {rate:.0f} | {rate / base:.2f}x | {per_frame * 1000 / 1e6:.0f} MB | {whole:.0f} GB |")
    print(f"\n`python -m codec.prepare vimeo_septuplet.zip OUT --workers W` on the sample 8 times ({frames * 8} frames, "
          f"{os.cpu_count()} cores here; the writing process shares them; its 48-frame estimate included):\n")
    print("| workers | frames/s | frames/s per worker | the full set's listed frames |")
    print("|---|---|---|---|")
    for w, rate in packing.items():
        print(f"| {w} | {rate:.0f} | {rate / w:.0f} | {LISTED_FRAMES / rate / 3600:.2f} h here; on 16 workers at this "
              f"rate per worker {LISTED_FRAMES / (rate / w * 16) / 60:.0f} min |")
    print(f"\nThe writing process alone (a frame pickled and unpickled as through the pool's pipe, appended to a "
          f"file, fsync'ed at the end, on this disk): {writer:.0f} frames/s, {writer * 344e3 / 1e9:.2f} GB/s: packing cannot go faster than "
          f"{LISTED_FRAMES / writer / 60:.0f} min for the listed frames, whatever the workers")


if __name__ == "__main__":
    main()
