"""Training-data loading: random crops per second per core from PNG files (decoded at every access, as
at protocol size where nothing is cached) against a packed copy (codec.prepare: uint8 shards read through
memory maps), and the disk space per 1000 frames. Same dataset class, same crops (tested).

    python benchmarks/data_loading.py [--patch 256] [--batch 16] [--seconds 10] [--device cuda]

Data: data/vimeo-sample (448x256 Vimeo-90k frames), packed into a temporary folder first. One process
(one core: torch and numpy held to one thread); a loader with W workers scales with W up to the cores
left. With --device cuda each batch is also copied to the GPU (pinned memory), as training does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, header  # noqa: E402
from codec.data.training import CropDataset, split_files
from codec.data.prepare import prepare

VIMEO = REPO / "data" / "vimeo-sample"


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
        index = prepare(VIMEO, Path(tmp) / "packed", "vimeo", "sep_trainlist.txt", progress_every=10**9)
        png = split_files("vimeo", VIMEO, 0.05, "sep_trainlist.txt")
        packed = split_files("packed", Path(tmp) / "packed", 0.05)
        frames = len(png.train) + len(png.val)
        png_bytes = sum(p.stat().st_size for p in png.train + png.val)
        packed_bytes = sum(p.stat().st_size for p in (Path(tmp) / "packed").glob("shard-*.u8"))
        rates = {"PNG (decoded per access)": crops_per_second(png.train, args, device),
                 "packed (codec.prepare)": crops_per_second(packed.train, args, device)}
    base = rates["PNG (decoded per access)"]
    print(f"\n{frames} frames ({len(index['images'])} packed)\n")
    print("| source | crops/s per core | ratio | disk per 1000 frames |")
    print("|---|---|---|---|")
    disk = {"PNG (decoded per access)": png_bytes, "packed (codec.prepare)": packed_bytes}
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / base:.2f}x | {disk[name] / frames * 1000 / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()
