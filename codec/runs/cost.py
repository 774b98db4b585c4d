"""What a sweep will cost: steps per epoch, total steps, each job's hours and the sweep's wall time, from
measured figures per device: the training rate, and where measured, a job's fixed start-up seconds, its
validation seconds per epoch and its evaluation seconds per megapixel. A rate measured at one size is
carried to another by the model's MACs per pixel (thop, codec/models/complexity.py) and the crop size.

Two tables: benchmarks/throughput.json (shipped, any device: benchmarks and the GPU check file theirs) and
outputs/throughput.json, this machine's own, which every sweep's end fills from its finished runs (their
records say where each job's time went) and which wins where both have a figure.

    python -m codec.cost record outputs/mini        # file a finished sweep's figures by hand (outputs/throughput.json)
    python benchmarks/training_throughput.py --record   # or a benchmark's rate (any device)
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from codec.models.checkpoint import load_checkpoint
from codec.records.files import write_json_atomic
from codec.records.layout import REPO, RESULTS_FILE, RunDir
from codec.records.record import read_record

THROUGHPUT_FILE = REPO / "benchmarks" / "throughput.json"
# this machine's figures, from its own sweeps (git-ignored; the tests point it elsewhere)
LOCAL_FILE = Path(os.environ.get("LIC_SWEEP_LOCAL_THROUGHPUT", REPO / "outputs" / "throughput.json"))


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


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_table(path: Path | None = None) -> dict:
    """One table's figures; without a path, the shipped table and this machine's own together."""
    if path is not None:
        return _read(path)
    table = _read(THROUGHPUT_FILE)
    for device, models in _read(LOCAL_FILE).items():
        for model, entries in models.items():
            table.setdefault(device, {})[model] = [*_entries(table.get(device, {}).get(model)), *_entries(entries)]
    return table


def _entries(value) -> list[dict]:
    """A model's figures on one device: one entry (one size measured) or a list of them."""
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def pick_entry(table: dict, device: str, model: str, N: int, M: int, patch: int, batch: int) -> dict | None:
    """The figures measured closest to this size (model MACs x crop pixels x batch; this machine's own
    sweeps before the shipped table where two are as close)."""
    entries = _entries(table.get(device, {}).get(model))
    if not entries:
        return None
    work = macs_per_pixel(model, N, M) * patch ** 2 * batch
    return min(reversed(entries), key=lambda e: abs(math.log(
        macs_per_pixel(model, e["N"], e["M"]) * e["patch"] ** 2 * e["batch"] / work)))


def record(device: str, model: str, N: int, M: int, patch: int, batch: int, images_per_s: float, source: str,
           path: Path = THROUGHPUT_FILE, **measured: float) -> None:
    """File a rate (and any of start_seconds, val_seconds_per_image, eval_seconds_per_megapixel,
    jobs_at_once: the figures of whole jobs) for one model at one size on one device, in place of one
    filed before for the same size."""
    table = load_table(path)
    entry = {"N": N, "M": M, "patch": patch, "batch": batch, "images_per_s": round(images_per_s, 3), "source": source,
             **{k: round(v, 4) for k, v in measured.items() if v is not None}}
    size = ("N", "M", "patch", "batch")
    others = [e for e in _entries(table.get(device, {}).get(model)) if any(e[k] != entry[k] for k in size)]
    table.setdefault(device, {})[model] = [*others, entry] if others else entry
    write_json_atomic(table, path)


def estimate_hours(entry: dict, model: str, N: int, M: int, patch: int, batch: int, steps: int) -> float:
    """Hours for `steps` training steps of `batch` crops of `patch`, from a measured entry of the same model."""
    measured_macs_per_s = entry["images_per_s"] * entry["patch"] ** 2 * macs_per_pixel(model, entry["N"], entry["M"])
    return steps * batch * patch ** 2 * macs_per_pixel(model, N, M) / measured_macs_per_s / 3600


def job_hours(entry: dict, config, steps: int, eval_megapixels: float | None, per_epoch: int | None = None,
              val_images: int | None = None) -> float:
    """A whole job's hours: its training steps, plus, where the entry measured them, the job's fixed seconds
    (start-up, data, checkpoints, W&B), its validations (one per epoch of `per_epoch` steps it runs, of
    `val_images` images each) and its evaluation (by the megapixels it codes), each carried to this config's
    size by MACs per pixel (and the validation by the crop area)."""
    t, d, m = config.trainer, config.data, config.model
    hours = estimate_hours(entry, m.name, m.N, m.M, d.patch_size, d.batch_size, steps)
    size = macs_per_pixel(m.name, m.N, m.M) / macs_per_pixel(m.name, entry["N"], entry["M"])
    per_epoch = per_epoch or t.steps_per_epoch or steps
    validations = min(t.epochs, math.ceil(steps / per_epoch)) if steps else 0
    if val_images is None:
        val_images = 0
    elif t.val_batches:
        val_images = min(val_images, t.val_batches * d.val_batch_size)
    seconds = entry.get("start_seconds", 0.0)
    seconds += validations * val_images * entry.get("val_seconds_per_image", 0.0) * size * (
        d.patch_size / entry["patch"]) ** 2
    if eval_megapixels is not None:
        seconds += eval_megapixels * entry.get("eval_seconds_per_megapixel", 0.0) * size
    return hours + seconds / 3600


def run_cost(config, table: dict | None = None, train_images: int | None = None,
             eval_megapixels: float | None = None, val_images: int | None = None, device: str | None = None) -> dict:
    """steps/epoch, total steps, the estimated hours of the whole job (None where not known) and the measured
    figures they come from."""
    t, d, m = config.trainer, config.data, config.model
    per_epoch = t.steps_per_epoch or (train_images // d.batch_size if train_images else None)
    total = None if per_epoch is None else t.epochs * per_epoch
    if t.max_steps:
        total = min(total, t.max_steps) if total is not None else t.max_steps
    device = device or device_key(config.device)
    entry = pick_entry(table if table is not None else load_table(), device, m.name, m.N, m.M,
                       d.patch_size, d.batch_size)
    hours = job_hours(entry, config, total, eval_megapixels, per_epoch, val_images) \
        if entry and total is not None else None
    return {"steps/epoch": per_epoch, "total steps": total, "est. hours": hours, "figures": entry, "device": device}


def sweep_wall_hours(rows: list[dict], slots: int | None) -> float | None:
    """The wall time of a sweep whose jobs (rows with 'est. hours', in launch order, 'step' = the ladder step,
    each step a multirun that starts when the one before ended) run `slots` at a time (None: all at once)."""
    if not rows or any(r.get("est. hours") is None for r in rows):
        return None
    wall = 0.0
    for step in sorted({r.get("step", 0) for r in rows}):
        jobs = [r["est. hours"] for r in rows if r.get("step", 0) == step]
        free = [0.0] * min(len(jobs), slots or len(jobs))
        for hours in jobs:  # the launcher hands each job to the first slot that frees up
            heapq.heappush(free, heapq.heappop(free) + hours)
        wall += max(free)
    return wall


def data_sizes(config, loader: bool = False) -> tuple[int | None, int | None, float | None]:
    """How many training and validation samples the run's data gives (None if data.root is not there) and,
    with `loader`, the random crops per second one loader worker makes from it on this machine."""
    from codec.data.training import crops_per_second, split_files
    from codec.errors import LicSweepError

    d = config.data
    try:
        split = split_files(d.format, d.root, d.val_fraction, d.list_file)
        rate = crops_per_second(split.train, d.patch_size) if loader and split.train else None
    except (LicSweepError, OSError, ValueError):
        return None, None, None
    return len(split.train), len(split.val), rate


def images_per_second(entry: dict, model: str, N: int, M: int, patch: int) -> float:
    """The training rate (crops/s) a measured entry gives at this size (carried by MACs per pixel and crop area)."""
    return entry["images_per_s"] * entry["patch"] ** 2 * macs_per_pixel(model, entry["N"], entry["M"]) / (
        patch ** 2 * macs_per_pixel(model, N, M))


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_check(rows: list[dict]) -> list[str]:
    """Lines for the dry run: per data source, the loader's crops/s on this machine's CPUs (measured for one
    worker, times the workers data.num_workers gives a job here, shared among the jobs the launcher runs at
    once) against what each model trains per second on the estimate's device, with a warning where the loader
    would starve it."""
    from codec.data.training import loader_workers, loader_workers_for

    lines, sources = [], {}
    for r in rows:
        if r.get("data") and r["data"]["per_core"] is not None:
            sources.setdefault(r["data"]["source"], []).append(r)
    for source, runs in sources.items():
        data = runs[0]["data"]
        given = loader_workers(data["num_workers"])
        workers = max(1, given)  # 0: the training process loads, between its steps
        lines.append(f"data {source} ({data['format']}): {data['per_core']:,.0f} random {data['patch']}px crops/s per "
                     f"loader worker here; data.num_workers={data['num_workers']} gives "
                     f"{given or 'none (the training process loads between steps)'} on this machine's {_cpus()} CPUs")
        shown = set()
        for r in runs:
            entry, key = r.get("figures"), (r["model"], r["N"], r["M"], r.get("step", 0))
            if not entry or key in shown:
                continue
            shown.add(key)
            at_once = min(r["slots"][0] or len(rows), sum(1 for o in rows if o.get("step", 0) == r.get("step", 0)))
            if r.get("cpus_per_job"):  # Slurm: each job its own cpus_per_task, wherever it runs
                at_once, usable = 1, max(1, loader_workers_for(data["num_workers"], r["cpus_per_job"]))
            else:  # the local launcher: the jobs at once share this machine's CPUs
                usable = min(workers, max(1, _cpus() // max(1, at_once)))
            have, need = data["per_core"] * usable, images_per_second(entry, r["model"], r["N"], r["M"], data["patch"])
            shared = f", {at_once} jobs at once: {usable} worker(s) each" if at_once > 1 else ""
            verdict = "keeps up" if have >= need else (
                f"WARNING: the loader would starve it: {math.ceil(need / data['per_core'])} workers needed at this rate"
                + ("; pack the data once (`python -m codec.prepare`, 10-14x the crops/s per worker: "
                   "benchmarks/README.md) or give each job more CPUs" if data["format"] != "packed"
                   else "; give each job more CPUs"))
            lines.append(f"  {r['model']} N={r['N']} M={r['M']}: trains ~{need:,.0f} crops/s on {r['device']}; the "
                         f"loader gives ~{have:,.0f}{shared}: {verdict}")
    return lines


def evaluation_megapixels(config) -> float | None:
    """The megapixels a run's evaluation codes (every test set, eval.max_images of each; None if a set is
    not there). Read from the images' headers."""
    from PIL import Image

    from codec.data.test_sets import resolved_sets
    from codec.errors import LicSweepError
    from codec.evaluation.evaluate import list_eval_images

    e = config.eval
    try:
        pixels = 0
        for folder in resolved_sets(e.sets, e.sets_root).values():
            for path in list_eval_images(folder, e.max_images)[0]:
                with Image.open(path) as image:
                    pixels += image.width * image.height
        return pixels / 1e6
    except (LicSweepError, OSError):
        return None


def _jobs_at_once(spans: list[tuple[float, float]]) -> int:
    """The most jobs that ran at one time, from (start, end) times (a start read up to 2 s early: a process's
    start time has whole seconds)."""
    events = sorted([(s + 2, 1) for s, e in spans if e > s + 2] + [(e, -1) for s, e in spans if e > s + 2])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return max(most, 1)


def record_runs(sweep_dir: Path, path: Path = LOCAL_FILE, note: str = "") -> list[str]:
    """File the figures of a finished sweep's runs as this machine's: per model, the training rate of its
    longest run (steps x batch / seconds in steps; for records older than the step clock, / train_seconds,
    validation and checkpoints included; the median of its runs that trained at least half as long), and the
    medians over its runs of the fixed seconds of a job, the
    validation seconds per epoch and the evaluation seconds per megapixel, with how many jobs ran at once."""
    runs: dict[str, list[tuple]] = {}
    spans = []
    for results_file in sorted(sweep_dir.rglob(RESULTS_FILE)):
        run, kept = RunDir(results_file.parent), read_record(results_file)
        t, who = kept.training, kept.identity
        # a resumed run's seconds cover only what it trained itself
        if t is None or not t.steps_this_process or not t.train_seconds or not run.last_checkpoint.is_file():
            continue
        if t.job_seconds:
            end = results_file.stat().st_mtime
            spans.append((end - t.job_seconds, end))
        runs.setdefault(who.model, []).append((run, kept))
    at_once = _jobs_at_once(spans) if spans else None
    lines = []
    for model, kept_runs in runs.items():
        run, kept = max(kept_runs, key=lambda rk: rk[1].training.steps_this_process)
        who, most = kept.identity, kept.training.steps_this_process
        c = load_checkpoint(run.last_checkpoint)["config"]
        batch, patch = c["data"]["batch_size"], c["data"]["patch_size"]
        # the median over the model's runs of at least half the longest's steps (of this size: a sweep's runs
        # of one model share it), so that one run slowed by something else on the machine does not decide
        rate = statistics.median(k.training.steps_this_process * batch / (k.training.step_seconds or k.training.train_seconds)
                                 for _, k in kept_runs if 2 * k.training.steps_this_process >= most
                                 and (k.identity.N, k.identity.M) == (who.N, who.M))
        timed = [k for _, k in kept_runs if k.training.job_seconds and k.training.step_seconds]
        figures = {}
        if timed:
            figures["start_seconds"] = statistics.median(
                x.job_seconds - x.step_seconds - (x.val_seconds or 0) - (x.eval_seconds or 0)
                for x in (k.training for k in timed))
            per_image = [k.training.val_seconds / k.training.val_images for k in timed if k.training.val_images]
            figures["val_seconds_per_image"] = statistics.median(per_image) if per_image else None
            per_mpx = [k.training.eval_seconds / _megapixels(k) for k in timed
                       if k.training.eval_seconds and _megapixels(k)]
            figures["eval_seconds_per_megapixel"] = statistics.median(per_mpx) if per_mpx else None
            figures["jobs_at_once"] = at_once
        device = kept.provenance.train_device or device_key("cpu")  # older records: trained on this CPU
        record(device, model, who.N, who.M, patch, batch, rate,
               f"runs in {sweep_dir}" + (f" ({note})" if note else ""), path, **figures)
        lines.append(f"{device}: {model}: {rate:.2f} images/s at N={who.N} M={who.M}, {batch}x{patch}^2"
                     + (f"; a job's fixed {figures['start_seconds']:.0f} s, {at_once} jobs at once" if timed else ""))
    return lines


def _megapixels(kept) -> float:
    return sum(s.means.get("num_pixels", 0) * s.means.get("num_images", 0) for s in kept.sets.values()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.cost", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="file a finished sweep's figures (rate, start-up, validation, evaluation) "
                                        "as this machine's")
    rec.add_argument("sweep_dir", type=Path)
    rec.add_argument("--to", type=Path, default=LOCAL_FILE,
                     help=f"the table to file them in (default {LOCAL_FILE}, this machine's; "
                          f"{THROUGHPUT_FILE.relative_to(REPO)} to ship them with the repository)")
    rec.add_argument("--note", default="", help="words on the machine and the date, kept with the figures")
    merge = sub.add_parser("merge", help="file the figures of a table in this form (the GPU check's "
                                         "<device>-<date>-throughput.json) in another")
    merge.add_argument("table", type=Path)
    merge.add_argument("--to", type=Path, default=THROUGHPUT_FILE)
    args = parser.parse_args(argv)
    if args.command == "merge":
        if not args.table.is_file():
            parser.error(f"{args.table}: no such file")
        count = 0
        for device, models in load_table(args.table).items():
            for model, entries in models.items():
                for e in _entries(entries):
                    figures = {k: v for k, v in e.items() if k not in ("N", "M", "patch", "batch", "images_per_s",
                                                                      "source")}
                    record(device, model, e["N"], e["M"], e["patch"], e["batch"], e["images_per_s"], e["source"],
                           args.to, **figures)
                    count += 1
        print(f"{count} entries from {args.table} filed in {args.to}")
        return 0
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    lines = record_runs(args.sweep_dir, args.to, args.note)
    for line in lines:
        print(f"{line}")
    print(f"{len(lines)} model(s) filed in {args.to}" if lines else f"no finished run with training under {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
