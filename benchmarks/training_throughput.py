"""Training throughput (images per second) per model: our Trainer.fit against the loop of
CompressAI's examples/train.py, same model, initial weights, batch, crop, optimizers, PNG files.

    python benchmarks/training_throughput.py [--steps 150] [--batch 8] [--patch 64] [--N 32 --M 48]
    python benchmarks/training_throughput.py --ablation   # each of our speed-ups added in turn
    python benchmarks/training_throughput.py --set trainer.channels_last=false   # any override of ours
    python benchmarks/training_throughput.py --record    # file the rates for sweep.py --dry-run's estimates
    python benchmarks/training_throughput.py --quickstart  # the quickstart's N, M, batch and crop (its config's)
    python benchmarks/training_throughput.py --protocol  # the protocol's size: N=128 M=192, 256x256, no cache,
                                                         # PNG and packed data, each lever in turn

Ours is timed end to end: Trainer.fit for one epoch of `steps` steps, which includes opening the data, one
validation batch and writing best.pth and last.pth at the end (the peer does none of that).
The peer reads and decodes each PNG at every access, as ImageFolder does. Each pair runs `repeats`
times, alternating, and the best time of each counts. Threads: torch's default unless --threads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import compressai_peer  # noqa: E402
from benchmarks.common import REPO, header  # noqa: E402
from codec.models.registry import REGISTRY


def our_config(name: str, args, run_dir: Path, extra: list[str]):
    from entry import config_for

    overrides = ["experiment=quickstart_scratch", f"model={name}", "rate=low", f"model.N={args.N}", f"model.M={args.M}",
                 "logger=none", f"data.root={REPO / 'data' / 'vimeo-sample'}", f"data.batch_size={args.batch}",
                 f"data.patch_size={args.patch}", f"data.num_workers={args.workers}", "trainer.epochs=1",
                 f"trainer.steps_per_epoch={args.steps}", f"trainer.max_steps={args.steps}", "trainer.val_batches=1",
                 "trainer.checkpoint_every_minutes=0", f"hydra.run.dir={run_dir}", *extra, *args.set]
    return config_for(overrides)


# Cumulative: each row adds one of our speed-ups to the one above; the last is our default.
ABLATION = [
    ("plain (PNG decoded per access, per-tensor Adam, NCHW)",
     ["data.cache_images=false", "optimizer.fused=false", "trainer.channels_last=false"]),
    ("+ decoded images cached", ["data.cache_images=true", "optimizer.fused=false", "trainer.channels_last=false"]),
    ("+ fused Adam", ["data.cache_images=true", "optimizer.fused=true", "trainer.channels_last=false"]),
    ("+ channels-last (our default)", ["data.cache_images=true", "optimizer.fused=true", "trainer.channels_last=true"]),
]


def protocol_ablation(packed: Path) -> list[tuple[str, list[str]]]:
    """At the protocol's size nothing is cached; each row adds one lever to the one above."""
    plain = ["data.cache_images=false", "optimizer.fused=false", "trainer.channels_last=false"]
    packed_data = ["data.format=packed", f"data.root={packed}"]
    return [
        ("plain (PNG decoded per access, per-tensor Adam, NCHW)", plain),
        ("+ packed data", [*plain, *packed_data]),
        ("+ fused Adam", [*packed_data, "data.cache_images=false", "optimizer.fused=true", "trainer.channels_last=false"]),
        ("+ channels-last (our default, packed)", [*packed_data, "data.cache_images=false"]),
        ("+ bf16 autocast", [*packed_data, "data.cache_images=false", "trainer.precision=bf16"]),
    ]


def time_ours(name: str, args, tmp: Path, extra: list[str] = ()) -> tuple[float, object]:
    from codec.training.callbacks import CheckpointPolicy
    from codec.training.trainer import build_trainer

    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    config = our_config(name, args, run_dir, extra)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), \
            contextlib.redirect_stderr(quiet):
        start = time.perf_counter()
        trainer = build_trainer(config, run_dir)
        trainer.fit([CheckpointPolicy()])
        return time.perf_counter() - start, trainer


def time_peer(name: str, args, files: list[Path], tmp: Path, seed: int) -> float:
    from codec.models.registry import build_model

    device = torch.device(args.device)
    dataset = compressai_peer.image_folder(files, tmp / "peer_data", args.patch)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(name, args.N, args.M).to(device)
    compressai_peer.train_steps(model, dataset, args.steps, args.batch, args.lmbda, args.lr, args.aux_lr,
                                args.clip, args.workers, device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(REGISTRY))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--N", type=int, default=32)
    parser.add_argument("--M", type=int, default=48)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ablation", action="store_true", help="also time ours with each speed-up added in turn")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for our runs (e.g. optimizer.fused=false)")
    parser.add_argument("--protocol", action="store_true",
                        help="the protocol's size (N=128 M=192, 256x256 crops, no image cache) with PNG and packed "
                             "data and each lever in turn (implies --ablation's table)")
    parser.add_argument("--quickstart", action="store_true",
                        help="the quickstart's size: N, M, batch and crop as experiment=quickstart composes them")
    parser.add_argument("--record", action="store_true",
                        help="file our default loop's images/s per model in benchmarks/throughput.json under this "
                             "device (sweep.py --dry-run estimates hours from it)")
    args = parser.parse_args()
    if args.quickstart:
        from entry import config_for

        quickstart = config_for(["experiment=quickstart", f"model={args.models[0]}"], require_data=False)
        args.N, args.M = quickstart.model.N, quickstart.model.M
        args.patch, args.batch = quickstart.data.patch_size, quickstart.data.batch_size
    if args.protocol:
        args.N, args.M, args.patch = 128, 192, 256
        args.set += ["data.cache_images=false"]
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.set += [f"device={args.device}"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _, trainer = time_ours(args.models[0], args, tmp)  # warm-up, and the settings both share
        s = trainer.config
        args.lmbda, args.lr, args.aux_lr, args.clip = s.lmbda, s.optimizer.lr, s.optimizer.aux_lr, s.trainer.clip_max_norm
        files = list(trainer.train_set.files)
        print(header(f"N={args.N} M={args.M}, batch {args.batch} of {args.patch}x{args.patch} crops from "
                     f"{len(files)} PNG files (data/vimeo-sample), {args.steps} steps, "
                     f"{args.workers} loader workers, device {args.device}, our options: {' '.join(args.set)}"))
        if args.protocol:
            from codec.data.prepare import prepare

            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                prepare(REPO / "data" / "vimeo-sample", tmp / "packed", "vimeo", "sep_trainlist.txt")
            variants = protocol_ablation(tmp / "packed")
        else:
            variants = ABLATION if args.ablation else [("ours (defaults)", [])]
        print("| model | CompressAI loop img/s | " + " | ".join(f"{v} img/s (ratio)" for v, _ in variants) + " |")
        print("|---|---|" + "---|" * len(variants))
        images = args.steps * args.batch
        for name in args.models:
            peer, ours = [], {v: [] for v, _ in variants}
            for _ in range(args.repeats):
                peer.append(time_peer(name, args, files, tmp, s.seed))
                for label, extra in variants:
                    ours[label].append(time_ours(name, args, tmp, extra)[0])
            cells = [f"{images / min(t):.1f} ({min(peer) / min(t):.2f}x)" for t in ours.values()]
            if args.record:
                from codec.runs.cost import device_key, record

                default = next((t for label, t in ours.items() if "default" in label), list(ours.values())[-1])
                record(device_key(args.device), name, args.N, args.M, args.patch, args.batch, images / min(default),
                       f"benchmarks/training_throughput.py, {time.strftime('%Y-%m-%d')}")
            print(f"| {name} | {images / min(peer):.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
