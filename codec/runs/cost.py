"""What a sweep will cost: steps per epoch, total steps and estimated hours per run, from a table of
measured training throughput per device (benchmarks/throughput.json). A measured rate for one size is
carried to another by the model's MACs per pixel (thop, codec/models/complexity.py) and the crop size: a
first-order estimate, good to tell a one-hour run from a one-week one.

    python -m codec.cost record outputs/mini        # rates of finished runs on this machine
    python benchmarks/training_throughput.py --record   # or a benchmark's (any device)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
from pathlib import Path

import torch

from codec.models.checkpoint import load_checkpoint
from codec.records.files import write_json_atomic
from codec.records.layout import REPO, RESULTS_FILE, RunDir
from codec.records.record import read_record

THROUGHPUT_FILE = REPO / "benchmarks" / "throughput.json"


def device_key(device: str = "auto") -> str:
    """The name throughput is filed under: the GPU's name, or the CPU's architecture and core count."""
    if device != "cpu" and torch.cuda.is_available():
        index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        return torch.cuda.get_device_name(index)
    return f"cpu {platform.machine()} {os.cpu_count()} cores"


@functools.lru_cache(maxsize=64)
def macs_per_pixel(model: str, N: int, M: int) -> float:
    from codec.models.complexity import measure

    return measure(model, N, M, batch=1, height=64, width=64).macs_per_pixel


def load_table(path: Path = THROUGHPUT_FILE) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def record(device: str, model: str, N: int, M: int, patch: int, batch: int, images_per_s: float, source: str,
           path: Path = THROUGHPUT_FILE) -> None:
    table = load_table(path)
    table.setdefault(device, {})[model] = {"N": N, "M": M, "patch": patch, "batch": batch,
                                           "images_per_s": round(images_per_s, 3), "source": source}
    write_json_atomic(table, path)


def estimate_hours(entry: dict, model: str, N: int, M: int, patch: int, batch: int, steps: int) -> float:
    """Hours for `steps` steps of `batch` crops of `patch`, from a measured entry of the same model."""
    measured_macs_per_s = entry["images_per_s"] * entry["patch"] ** 2 * macs_per_pixel(model, entry["N"], entry["M"])
    return steps * batch * patch ** 2 * macs_per_pixel(model, N, M) / measured_macs_per_s / 3600


def run_cost(config, table: dict | None = None, train_images: int | None = None) -> dict:
    """steps/epoch, total steps and estimated hours of one run (None where not known)."""
    t, d, m = config.trainer, config.data, config.model
    per_epoch = t.steps_per_epoch or (train_images // d.batch_size if train_images else None)
    total = None if per_epoch is None else t.epochs * per_epoch
    if t.max_steps:
        total = min(total, t.max_steps) if total is not None else t.max_steps
    entry = (table if table is not None else load_table()).get(device_key(config.device), {}).get(m.name)
    hours = estimate_hours(entry, m.name, m.N, m.M, d.patch_size, d.batch_size, total) \
        if entry and total is not None else None
    return {"steps/epoch": per_epoch, "total steps": total, "est. hours": hours}


def training_images(config) -> int | None:
    """How many training samples the run's data gives (None if data.root is not there)."""
    from codec.data.training import split_files
    from codec.errors import LicSweepError

    d = config.data
    try:
        return len(split_files(d.format, d.root, d.val_fraction, d.list_file).train)
    except (LicSweepError, OSError):
        return None


def record_runs(sweep_dir: Path, path: Path = THROUGHPUT_FILE) -> list[str]:
    """File the end-to-end training rate (steps x batch / train_seconds: with validation and checkpoints)
    of each model's longest finished run under sweep_dir as this machine's rate."""
    best: dict[str, tuple[int, dict]] = {}
    for results_file in sorted(sweep_dir.rglob(RESULTS_FILE)):
        run, kept = RunDir(results_file.parent), read_record(results_file)
        t, who = kept.training, kept.identity
        # a resumed run's seconds cover only what it trained itself
        if t is None or not t.steps_this_process or not t.train_seconds or not run.last_checkpoint.is_file():
            continue
        steps = t.steps_this_process
        c = load_checkpoint(run.last_checkpoint)["config"]
        if steps > best.get(who.model, (0, {}))[0]:
            best[who.model] = (steps, {"N": who.N, "M": who.M, "patch": c["data"]["patch_size"],
                                       "batch": c["data"]["batch_size"],
                                       "rate": steps * c["data"]["batch_size"] / t.train_seconds, "run": str(run.path)})
    lines = []
    for model, (_, e) in best.items():
        record(device_key("cpu"), model, e["N"], e["M"], e["patch"], e["batch"], e["rate"], f"run {e['run']}", path)
        lines.append(f"{model}: {e['rate']:.2f} images/s at N={e['N']} M={e['M']}, {e['batch']}x{e['patch']}^2")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.cost", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="file the training rates of a finished sweep's runs as this CPU's")
    rec.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    for line in record_runs(args.sweep_dir):
        print(f"{device_key('cpu')}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
