"""The GPU check: everything a GPU can tell this project, in one prepared command of about six minutes.

    make gpu-check                          # on a GPU machine: writes benchmarks/gpu/<device>-<date>.json and .md
    make gpu-check DEVICE=cpu QUICK=1       # tiny sizes on the CPU, a minute or two (the test suite runs it)
    python benchmarks/gpu_check.py --device cuda --parts throughput,data --budget 300 --out DIR

Parts, each with its own share of the time budget, each writing what it finished (the JSON and the table are
rewritten after every item, so a part that fails or runs out of time leaves the rest):
  1. throughput   training images/s of every registered model at its protocol tier (low: N/M of the registry),
                  256x256 crops, batch 16 and the seminar's batch: fp32, bf16 (entropy path float32) and
                  bf16 + trainer.compile (for --compile-models), next to CompressAI's own loop (fp32) on the
                  same synthetic batch; peak GPU memory; MFU (3 x 2 x forward MACs per image x images/s
                  against this GPU's measured matmul rate in the same precision); one row from real packed data
                  through Trainer.fit with loader workers. Files the fp32 rates in benchmarks/throughput.json
                  (--record) for sweep.py --dry-run's estimates.
  2. data         loader crops/s with all cores for PNG (data/vimeo-sample, decoded per access) and packed data,
                  against part 1's step rate: does the loader keep the GPU busy, and with how many cores.
  3. correctness  a few hundred steps of the hyperprior and the checkerboard model in fp32 and bf16 on real
                  crops (loss falls, no NaN), their evaluation with real bitstreams on Kodak images, and the
                  cross-device check: encode on the GPU and decode on the CPU, and the reverse (CompressAI #309).
  4. launch       the local launcher with jobs_per_gpu=2 (two jobs on one GPU at once, CUDA_VISIBLE_DEVICES
                  seen by each), one DDP job through torchrun (NCCL, one process), and a run killed (SIGKILL)
                  after a step checkpoint and resumed, against the same run uninterrupted.
  5. rd_ab        fp32 against bf16 for the hyperprior at one lambda, two seeds each: Kodak bpp and PSNR, the
                  precision's difference against the seeds' spread.

Runs on the torch it finds (the GPU machine's, not this project's pin) with the packages of `make gpu-wheels`.
No determinism flags are set (cudnn.benchmark stays off, as in training): GPU convolution backward passes are
not bit-reproducible, so the resume check states its tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO  # noqa: E402
from codec.training.callbacks import Callback  # noqa: E402

KODAK = REPO / "data" / "kodak"
VIMEO = REPO / "data" / "vimeo-sample"
PARTS = ("throughput", "data", "correctness", "launch", "rd_ab")
# Each part's share of the budget; a part may use what an earlier one left.
SHARES = {"throughput": 0.3, "data": 0.07, "correctness": 0.18, "launch": 0.3, "rd_ab": 0.15}


# -- sizes -------------------------------------------------------------------------------------------
def sizes(quick: bool, seminar_batch: int) -> dict:
    """What each part runs: the protocol's sizes, or tiny ones (QUICK: the CPU smoke run of the test suite)."""
    from codec.models.registry import REGISTRY

    if quick:
        return {"channels": lambda name: REGISTRY[name].tiny, "patch": 64, "batches": [2], "warmup": 1, "steps": 2,
                "correct_steps": 12, "correct_batch": 2, "kodak_images": 1, "data_seconds": 1.0,
                "launch_steps": 4, "ab_steps": 4, "ab_seeds": [0, 1], "ab_images": 1, "matmul": 256,
                "packed_steps": 2}
    return {"channels": lambda name: REGISTRY[name].channels["low"], "patch": 256, "batches": [16, seminar_batch],
            "warmup": 5, "steps": 20, "correct_steps": 200, "correct_batch": 16, "kodak_images": 4,
            "data_seconds": 5.0, "launch_steps": 40, "ab_steps": 3000, "ab_seeds": [0, 1], "ab_images": 8,
            "matmul": 8192, "packed_steps": 60}


# -- the report ------------------------------------------------------------------------------------
class Report:
    """The JSON and its markdown table, rewritten after every item."""

    def __init__(self, out: Path, device: torch.device, quick: bool, budget: float) -> None:
        name = gpu_name(device)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() + ("-quick" if quick else "")
        self.json_path = out / f"{stem}-{time.strftime('%Y-%m-%d')}.json"
        self.md_path = self.json_path.with_suffix(".md")
        # the fp32 rates in benchmarks/throughput.json's form: `python -m codec.cost merge FILE` files them
        self.rates_path = self.json_path.with_name(f"{self.json_path.stem}-throughput.json")
        self.data = {"device": name, "device_type": device.type, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                     "cpu_cores": os.cpu_count(), "quick": quick, "budget_s": budget,
                     "command": " ".join(sys.argv), "parts": {}}
        out.mkdir(parents=True, exist_ok=True)

    def part(self, name: str) -> dict:
        return self.data["parts"].setdefault(name, {"status": "running", "seconds": 0.0, "results": [], "notes": []})

    def save(self) -> None:
        for path, text in ((self.json_path, json.dumps(self.data, indent=1, default=str)), (self.md_path, markdown(self.data))):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def gpu_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} {os.cpu_count()} cores"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(data: dict) -> str:
    lines = [f"# GPU check: {data['device']}", "",
             f"{data['date']}; torch {data['torch']} (CUDA {data['cuda']}), Python {data['python']}, "
             f"{data['cpu_cores']} CPU cores{'; QUICK (tiny sizes)' if data['quick'] else ''}. "
             f"Command: `{data['command']}`", ""]
    for name, part in data["parts"].items():
        lines += [f"## {name} ({part['status']}, {part['seconds']:.0f} s)", ""]
        rows = part["results"]
        if rows:
            keys = list(dict.fromkeys(k for row in rows for k in row))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
            lines.append("")
        lines += [f"- {note}" for note in part["notes"]] + ([""] if part["notes"] else [])
    return "\n".join(lines)


class Clock:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def quiet():
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


# -- the project's pieces ----------------------------------------------------------------------------
def our_config(args, run_dir: Path, *overrides: str):
    from entry import config_for

    return config_for(["experiment=quickstart_scratch", "logger=none", f"data.root={VIMEO}", "data.num_workers=0",
                       f"device={args.device}", "trainer.checkpoint_every_minutes=0", "trainer.val_batches=1",
                       f"hydra.run.dir={run_dir}", *overrides])


def our_trainer(args, tmp: Path, name: str, N: int, M: int, batch: int, patch: int, *overrides: str):
    from codec.training.trainer import build_trainer

    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    config = our_config(args, run_dir, f"model={name}", f"model.N={N}", f"model.M={M}", f"data.batch_size={batch}",
                        f"data.patch_size={patch}", "data.cache_images=false", *overrides)  # fed synthetic batches
    with quiet():
        return build_trainer(config, run_dir)


def timed_steps(step, x: torch.Tensor, warmup: int, steps: int, device: torch.device) -> tuple[float, float | None]:
    """(images/s, peak GPU memory in GiB) of `steps` calls of step(x) after `warmup` untimed ones."""
    for _ in range(warmup):
        step(x)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x)
    sync(device)
    seconds = time.perf_counter() - start
    loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss {loss} in the timed steps")
    # the step's own peak: what it allocated above the model, optimizer state and batch it started with
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 30 if device.type == "cuda" else None
    return steps * x.shape[0] / seconds, peak


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype) -> float:
    """This device's dense matmul rate (TFLOP/s) in `dtype`: the MFU's denominator, measured, not quoted."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e12


# -- 1. throughput ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def forward_macs(name: str, N: int, M: int, patch: int) -> int:
    """thop's MACs of one training-mode forward pass of one patch x patch image (codec.models.complexity)."""
    from codec.models.complexity import measure

    return measure(name, N, M, batch=1, height=patch, width=patch).thop_macs


def part_throughput(args, s: dict, part: dict, report: Report, clock: Clock, tmp: Path, shared: dict) -> None:
    from benchmarks.compressai_peer import peer_step
    from codec.models.registry import build_model

    device = torch.device(args.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32  # what fp32 convolutions run in
    peaks = {"32": matmul_tflops(device, s["matmul"], torch.float32),
             "bf16": matmul_tflops(device, s["matmul"], torch.bfloat16)}
    torch.backends.cuda.matmul.allow_tf32 = tf32
    part["notes"].append(f"measured matmul rate ({s['matmul']}^3): fp32 {peaks['32']:.3g} TFLOP/s (TF32 "
                         f"{'allowed, as cuDNN convolutions use it' if torch.backends.cudnn.allow_tf32 else 'off'}), "
                         f"bf16 {peaks['bf16']:.3g} TFLOP/s; MFU = 3 x 2 x forward MACs per image (thop) x images/s "
                         "over the rate of the row's precision")
    variants = [("fp32", ["trainer.precision=32"]), ("bf16", ["trainer.precision=bf16"]),
                ("bf16+compile", ["trainer.precision=bf16", "trainer.compile=true"])]
    shared["step_rate"] = {}
    for batch in s["batches"]:
        for name in args.models:
            N, M = s["channels"](name)
            patch = s["patch"]
            flops_per_image = 3 * 2 * forward_macs(name, N, M, patch)
            x = torch.rand(batch, 3, patch, patch, device=device)
            row = {"model": name, "N": N, "M": M, "batch": batch}
            if clock.left() < 5:
                part["notes"].append(f"out of time before {name} at batch {batch}")
                return
            torch.manual_seed(0)
            model = build_model(name, N, M).to(device)
            step = peer_step(model, 0.0067, 1e-4, 1e-3, 1.0)
            peer, _ = timed_steps(step, x, s["warmup"], s["steps"], device)
            row["compressai img/s"] = peer
            del model, step
            for label, overrides in variants:
                if label.endswith("compile"):
                    if name not in args.compile_models or batch != s["batches"][0]:
                        continue
                    if clock.left() < (20 if args.quick else 120):
                        part["notes"].append(f"{name} bf16+compile not timed: under 2 minutes left for compiling")
                        continue
                    torch._dynamo.reset()  # the transforms share Sequential.forward: start under the recompile limit
                if clock.left() < 5:
                    part["notes"].append(f"out of time in {name} at batch {batch}")
                    break
                try:
                    trainer = our_trainer(args, tmp, name, N, M, batch, patch, *overrides)
                    ours = lambda x: trainer.train_step(trainer._on_device(x))["loss"]  # noqa: E731
                    rate, peak = timed_steps(ours, x, s["warmup"] + (3 if "compile" in label else 0), s["steps"],
                                             device)
                except Exception as exc:  # noqa: BLE001 - a failing variant is a finding, not the end
                    row[f"{label} img/s"] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                    continue
                finally:
                    trainer = None
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                precision = "32" if label == "fp32" else "bf16"
                row |= {f"{label} img/s": rate, f"{label} x peer": rate / peer,
                        f"{label} MFU %": 100 * rate * flops_per_image / (peaks[precision] * 1e12),
                        f"{label} peak GiB": peak}
                shared["step_rate"][(name, batch, label)] = rate
                if label == "fp32":  # for sweep.py --dry-run: beside the report, and in the repository's table
                    from codec.runs.cost import THROUGHPUT_FILE, device_key, record

                    source = f"benchmarks/gpu_check.py, {time.strftime('%Y-%m-%d')} (training steps, synthetic crops)"
                    for path in [report.rates_path] + ([THROUGHPUT_FILE] if args.record else []):
                        record(device_key(args.device), name, N, M, patch, batch, rate, source, path)
            part["results"].append(row)
            report.save()
    _packed_row(args, s, part, tmp, shared)


def _packed_row(args, s: dict, part: dict, tmp: Path, shared: dict) -> None:
    """One model end to end through Trainer.fit from real packed crops with loader workers."""
    from codec.data.prepare import prepare
    from codec.training.trainer import build_trainer

    packed = tmp / "packed"
    if not packed.exists():
        with quiet():
            prepare(VIMEO, packed, "vimeo", "sep_trainlist.txt", progress_seconds=1e9)
    shared["packed"] = packed
    name, batch = "hyperprior", s["batches"][0]
    N, M = s["channels"](name)
    workers = min(16, os.cpu_count() or 1)
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    config = our_config(args, run_dir, f"model={name}", f"model.N={N}", f"model.M={M}", "data.format=packed",
                        f"data.root={packed}", "data.cache_images=false", f"data.num_workers={workers}",
                        f"data.batch_size={batch}", f"data.patch_size={s['patch']}", "trainer.precision=bf16",
                        "trainer.epochs=1", f"trainer.steps_per_epoch={s['packed_steps']}",
                        f"trainer.max_steps={s['packed_steps']}")
    with quiet():
        trainer = build_trainer(config, run_dir)
        result = trainer.fit([])
    rate = result.steps * batch / result.step_seconds
    part["results"].append({"model": name, "N": N, "M": M, "batch": batch,
                            "bf16 img/s": rate, "note": f"packed data, {workers} loader workers, Trainer.fit"})
    shared["packed_rate"] = rate


# -- 2. data feeding --------------------------------------------------------------------------------
def part_data(args, s: dict, part: dict, report: Report, clock: Clock, tmp: Path, shared: dict) -> None:
    from torch.utils.data import DataLoader

    from codec.data.prepare import prepare
    from codec.data.training import CropDataset, split_files

    from benchmarks.data_loading import vimeo_zip

    packed = shared.get("packed") or tmp / "packed"
    with quiet():
        if not packed.exists():
            prepare(VIMEO, packed, "vimeo", "sep_trainlist.txt", progress_seconds=1e9)
        if not (tmp / "packed-zlib").exists():
            prepare(VIMEO, tmp / "packed-zlib", "vimeo", "sep_trainlist.txt", progress_seconds=1e9, compression="zlib")
    if not (tmp / "vimeo_septuplet.zip").exists():
        vimeo_zip(tmp / "vimeo_septuplet.zip", zipfile.ZIP_STORED)
    # in order of importance: the clock may stop the part after any of them
    sources = {"PNG (decoded per access)": split_files("vimeo", VIMEO, 0.05, "sep_trainlist.txt").train,
               "packed": split_files("packed", packed, 0.05).train,
               "zip in place (data.format=zip)": split_files("zip", tmp / "vimeo_septuplet.zip", 0.05).train,
               "packed zlib": split_files("packed", tmp / "packed-zlib", 0.05).train}
    batch = s["batches"][0]
    cores = os.cpu_count() or 1
    want = shared.get("step_rate", {}).get(("hyperprior", batch, "bf16"))
    for label, items in sources.items():
        for workers in sorted({1, min(16, cores)}):
            if clock.left() < s["data_seconds"] + 5:
                part["notes"].append("out of time")
                return
            dataset = CropDataset(items, s["patch"], True, seed=0)
            loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                pin_memory=args.device.startswith("cuda"), persistent_workers=workers > 0)
            done, start = 0, None
            while start is None or time.perf_counter() - start < s["data_seconds"]:
                for x, _ in loader:
                    if start is None:  # from the first batch: workers started
                        start = time.perf_counter()
                        continue
                    x.to(args.device, non_blocking=True)
                    done += x.shape[0]
                    if time.perf_counter() - start >= s["data_seconds"]:
                        break
            rate = done / (time.perf_counter() - start)
            row = {"source": label, "workers": workers, "crops/s": rate, "crops/s per worker": rate / workers}
            if want:
                row |= {"GPU asks (hyperprior bf16 img/s)": want, "keeps up": rate >= want,
                        "workers needed": math.ceil(want / (rate / workers))}
            part["results"].append(row)
            report.save()
            del loader
    part["notes"].append(f"{len(sources['packed'])} training frames of data/vimeo-sample, read from the page cache "
                         "after the first pass: decoding is measured, a cold disk is not")


# -- 3. correctness ---------------------------------------------------------------------------------
class TimeUp(Exception):
    pass


class LossTrace(Callback):
    """Each step's loss; ends the run (TimeUp) at the part's deadline, so that no run outlasts its part."""

    def __init__(self, deadline: float = math.inf) -> None:
        self.losses: list[float] = []
        self.deadline = deadline

    def on_step_end(self, trainer, metrics: dict[str, float]) -> None:
        self.losses.append(metrics["loss"])
        if time.monotonic() > self.deadline:
            raise TimeUp


def train_briefly(args, tmp: Path, name: str, N: int, M: int, steps: int, batch: int, patch: int,
                  precision: str, seed: int = 0, lmbda: float = 0.0067, clock: Clock | None = None):
    """`steps` steps on cached real crops (data/vimeo-sample), or fewer where the clock's time runs out
    (leaving 10 s for what follows); the trainer and each step's loss."""
    from codec.training.trainer import build_trainer

    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    config = our_config(args, run_dir, f"model={name}", f"model.N={N}", f"model.M={M}", f"data.batch_size={batch}",
                        f"data.patch_size={patch}", f"trainer.precision={precision}", f"seed={seed}",
                        f"lmbda={lmbda}", "trainer.epochs=1", f"trainer.steps_per_epoch={steps}",
                        f"trainer.max_steps={steps}", "data.cache_images=true")
    trace = LossTrace(time.monotonic() + clock.left() - 10 if clock else math.inf)
    with quiet():
        trainer = build_trainer(config, run_dir)
        try:
            trainer.fit([trace])
        except TimeUp:
            pass
    return trainer, trace.losses


def part_correctness(args, s: dict, part: dict, report: Report, clock: Clock, tmp: Path, shared: dict) -> None:
    from codec.evaluation.evaluate import evaluate_model

    device = torch.device(args.device)
    trained = {}
    for name in ("hyperprior", "checkerboard"):
        N, M = s["channels"](name)
        for precision in ("32", "bf16"):
            if clock.left() < 10:
                part["notes"].append("out of time")
                return
            trainer, losses = train_briefly(args, tmp, name, N, M, s["correct_steps"], s["correct_batch"],
                                            s["patch"], precision, clock=clock)
            tenth = max(1, len(losses) // 10)
            first, last = statistics.mean(losses[:tenth]), statistics.mean(losses[-tenth:])
            with quiet():
                rows, _ = evaluate_model(trainer.model, KODAK, device, max_images=s["kodak_images"])
            part["results"].append({
                "check": "train + evaluate", "model": name, "precision": precision, "steps": len(losses),
                "finite": all(math.isfinite(v) for v in losses), "loss first 10%": first, "loss last 10%": last,
                "loss falls": last < first, "Kodak bpp": statistics.mean(r.bpp for r in rows),
                "Kodak PSNR": statistics.mean(r.psnr for r in rows), "images": len(rows)})
            report.save()
            if precision == "32":
                trained[name] = trainer.model
    for name, model in trained.items():
        if clock.left() < 5:
            part["notes"].append("out of time before the cross-device check")
            return
        part["results"].extend(cross_device(model, device, s["kodak_images"], name))
        report.save()
    part["notes"].append("cross-device: the bitstream of each image encoded on one device is decoded on the other; "
                         "'bytes equal' compares the two devices' bitstreams of the same image, 'max |x_hat diff|' "
                         "the decoded reconstructions (0 = bit-identical)")


def cross_device(model, device: torch.device, images: int, name: str) -> list[dict]:
    """Encode on one device and decode on the other, both ways: are the bitstreams and reconstructions the same?"""
    import copy

    import numpy as np
    from PIL import Image

    from codec.models import bitstream

    others = [torch.device("cpu")] if device.type == "cuda" else [device]
    rows = []
    models = {}
    for d in {device, *others}:
        m = copy.deepcopy(model).to(d, memory_format=torch.contiguous_format).eval()
        m.update(force=True)
        models[d] = m
    files = sorted(KODAK.glob("*.png"))[:images]
    with torch.no_grad():
        for src in models:
            for dst in models:
                if src == dst and len(models) > 1:
                    continue
                bytes_equal, max_diff, mismatches = True, 0.0, 0
                for f in files:
                    x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)
                    x = x.float().div(255).unsqueeze(0)
                    enc = bitstream.encode(models[src], x.to(src))
                    data = bitstream.pack(enc)
                    enc_dst = bitstream.encode(models[dst], x.to(dst))
                    bytes_equal &= data == bitstream.pack(enc_dst)
                    x_hat, y_hat = bitstream.decode(models[dst], bitstream.unpack(data, models[dst]))
                    x_own, _ = bitstream.decode(models[src], bitstream.unpack(data, models[src]))
                    max_diff = max(max_diff, float((x_hat.cpu() - x_own.cpu()).abs().max()))
                    mismatches += int((~torch.isclose(enc.y_hat.cpu(), y_hat.cpu(), rtol=0, atol=1e-3)).sum())
                rows.append({"check": "cross-device", "model": name, "encode on": str(src), "decode on": str(dst),
                             "images": len(files), "bytes equal": bytes_equal, "latent mismatches": mismatches,
                             "max |x_hat diff|": max_diff})
    return rows


# -- 4. launch paths --------------------------------------------------------------------------------
class SeenDevices(Callback):
    """Writes what the job saw (CUDA_VISIBLE_DEVICES, the device, when it trained) into its run folder."""

    def __init__(self) -> None:
        self.began = time.time()

    def on_epoch_end(self, trainer, val) -> None:
        (trainer.run_dir / "seen.json").write_text(json.dumps({
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": str(trainer.device),
            "device_count": torch.cuda.device_count(), "began": self.began, "ended": time.time(),
            "group": trainer.ddp.group, "backend": _backend()}))


def _backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


class KillAfterCheckpoint(Callback):
    """SIGKILLs its own process at the step LIC_GPU_CHECK_KILL_AT names (after that step's checkpoint)."""

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.state.step == int(os.environ.get("LIC_GPU_CHECK_KILL_AT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)


def _tiny_run(args, s: dict, *extra: str, callbacks: str = "benchmarks.gpu_check:SeenDevices") -> list[str]:
    """A small real run: a few steps of a small model, evaluated with real bitstreams on one Kodak image."""
    steps = s["launch_steps"]
    return ["experiment=quickstart_scratch", "logger.mode=offline", "model.N=16", "model.M=24", "data.batch_size=4",
            f"trainer.max_steps={steps}", f"trainer.steps_per_epoch={steps}", "trainer.epochs=1",
            f"eval.sets=[{KODAK}]", "eval.max_images=1", f"device={args.device}", f"trainer.callbacks=[{callbacks}]",
            *extra]


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """The command's result; one that outlasts `timeout` is killed and returns "timeout" as its exit."""
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH":
                   os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p), **(env or {})}
    try:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(timeout, 5), env=environment)
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(cmd, "timeout", "", f"timed out after {timeout:.0f} s\n{out}")


def part_launch(args, s: dict, part: dict, report: Report, clock: Clock, tmp: Path, shared: dict) -> None:
    cuda = args.device.startswith("cuda")
    # a) two jobs at once on one device through the local launcher
    sweep = tmp / "two_jobs"
    slots = ["hydra.launcher.jobs_per_gpu=2"] if cuda else ["hydra.launcher.cpu_jobs=2"]
    cmd = [sys.executable, "run.py", "-m", "hydra/launcher=local", *slots, "model=factorized,hyperprior",
           "lmbda=0.0067", f"hydra.sweep.dir={sweep}", *_tiny_run(args, s)]
    done = _run(cmd, clock.left() / 3)
    seen = [json.loads(p.read_text()) for p in sorted(sweep.rglob("seen.json"))]
    # the launcher's processes (its schedule), and their training windows: a few seconds each in quick mode, so
    # on a loaded CPU one job's imports can outlast the other's training (not a launcher fault)
    schedule_file = sweep / "launcher_schedule.jsonl"
    spans = [json.loads(line) for line in schedule_file.read_text().splitlines()] if schedule_file.is_file() else []
    ran = len(spans) == 2 and max(x["start"] for x in spans) < min(x["end"] for x in spans)
    trained = len(seen) == 2 and max(x["began"] for x in seen) < min(x["ended"] for x in seen)
    part["results"].append({"check": "local launcher, 2 jobs on one device", "exit": done.returncode,
                            "jobs": len(seen), "CUDA_VISIBLE_DEVICES": "/".join(str(x["CUDA_VISIBLE_DEVICES"]) for x in seen),
                            "devices": "/".join(x["device"] for x in seen), "ran at once": ran,
                            "trained at once": trained})
    if done.returncode:
        part["notes"].append(f"local launcher: {done.stderr[-600:]}")
    report.save()
    # b) one DDP job through torchrun (NCCL on CUDA, gloo on CPU), one process
    run_dir = tmp / "ddp"
    done = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "run.py",
                 *_tiny_run(args, s, f"hydra.run.dir={run_dir}")], clock.left() / 2)
    seen = json.loads((run_dir / "seen.json").read_text()) if (run_dir / "seen.json").exists() else {}
    part["results"].append({"check": "torchrun, 1 process", "exit": done.returncode, "backend": seen.get("backend"),
                            "device": seen.get("device"), "results": (run_dir / "results.json").exists()})
    if done.returncode:
        part["notes"].append(f"torchrun: {done.stderr[-600:]}")
    report.save()
    # c) killed after a step checkpoint, resumed: the same weights as uninterrupted?
    straight, killed = tmp / "straight", tmp / "killed"
    kill_at = s["launch_steps"] // 2 + 1
    every = [f"trainer.checkpoint_every_steps={max(1, kill_at - 1)}", "model=hyperprior"]
    first = _run([sys.executable, "run.py", *_tiny_run(args, s, f"hydra.run.dir={straight}", *every)], clock.left() / 3)
    cut = _run([sys.executable, "run.py", *_tiny_run(args, s, f"hydra.run.dir={killed}", *every,
                                                      callbacks="benchmarks.gpu_check:KillAfterCheckpoint")],
               clock.left() / 3, env={"LIC_GPU_CHECK_KILL_AT": str(kill_at)})
    resumed = _run([sys.executable, "run.py", *_tiny_run(args, s, f"hydra.run.dir={killed}", *every)], clock.left() / 2)
    row = {"check": "SIGKILL at step %d, resumed" % kill_at, "exit (straight/killed/resumed)":
           f"{first.returncode}/{cut.returncode}/{resumed.returncode}"}
    a, b = straight / "checkpoints" / "last.pth", killed / "checkpoints" / "last.pth"
    if a.exists() and b.exists():
        sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
        sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
        from codec.models.registry import build_model

        trained = [k for k, _ in build_model("hyperprior", 16, 24).named_parameters()]  # not the coder tables
        diffs = [float((sa[k].float() - sb[k].float()).abs().max()) for k in trained]
        scale = max(float(sa[k].float().abs().max()) for k in trained)
        row |= {"max |weight diff|": max(diffs), "relative": max(diffs) / scale,
                "within 1e-3 relative": max(diffs) <= 1e-3 * scale}
    part["results"].append(row)
    part["notes"].append("resume: no determinism flags set; on CPU the weights are identical, on a GPU convolution "
                         "backward kernels may differ in the last bits, so 1e-3 of the largest weight is the bound")


# -- 5. RD A/B: fp32 against bf16 ------------------------------------------------------------------
def part_rd_ab(args, s: dict, part: dict, report: Report, clock: Clock, tmp: Path, shared: dict) -> None:
    from codec.evaluation.evaluate import evaluate_model

    device = torch.device(args.device)
    name = "hyperprior"
    N, M = s["channels"](name)
    points = {}
    # as many steps as the part's time allows (from part 1's rate when it ran), up to ab_steps
    rate = shared.get("step_rate", {}).get((name, s["batches"][0], "fp32"))
    steps = s["correct_steps"]  # without part 1's rate; each run also stops at the part's deadline
    if rate and s["batches"][0] == s["correct_batch"]:
        runs = 2 * len(s["ab_seeds"])
        steps = min(s["ab_steps"], max(50, int(0.6 * clock.left() / runs * rate / s["correct_batch"])))
    part["notes"].append(f"{steps} steps per run at batch {s['correct_batch']} of {s['patch']}x{s['patch']} crops of "
                         f"data/vimeo-sample, lambda 0.0067, lr of experiment=quickstart_scratch; Kodak, "
                         f"{s['ab_images']} images, real bitstreams")
    for seed in s["ab_seeds"]:
        for precision in ("32", "bf16"):
            if clock.left() < 10:
                part["notes"].append("out of time")
                break
            trainer, losses = train_briefly(args, tmp, name, N, M, steps, s["correct_batch"], s["patch"], precision,
                                            seed=seed, clock=clock)
            with quiet():
                rows, _ = evaluate_model(trainer.model, KODAK, device, max_images=s["ab_images"])
            points[(precision, seed)] = (statistics.mean(r.bpp for r in rows), statistics.mean(r.psnr for r in rows))
            part["results"].append({"model": name, "precision": precision, "seed": seed, "steps": len(losses),
                                    "Kodak bpp": points[(precision, seed)][0],
                                    "Kodak PSNR": points[(precision, seed)][1], "images": len(rows)})
            report.save()
    both = [seed for seed in s["ab_seeds"] if ("32", seed) in points and ("bf16", seed) in points]
    if len(both) >= 2:
        gap = [abs(points[("32", k)][i] - points[("bf16", k)][i]) for k in both for i in (0, 1)]
        spread = [abs(points[(p, both[0])][i] - points[(p, both[1])][i]) for p in ("32", "bf16") for i in (0, 1)]
        part["notes"].append(f"fp32 vs bf16, same seed: |bpp| {max(gap[0::2]):.4f}, |PSNR| {max(gap[1::2]):.3f} dB; "
                             f"seed to seed, same precision: |bpp| {max(spread[0::2]):.4f}, |PSNR| "
                             f"{max(spread[1::2]):.3f} dB")


# -- the driver -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from codec.models.registry import REGISTRY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CPU smoke run of the test suite")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds in all (default 390; QUICK 480, a cap for slow or busy machines: it takes ~2 min)")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--models", default=",".join(REGISTRY))
    parser.add_argument("--compile-models", default=None,
                        help="models timed with trainer.compile too (default hyperprior; none with --quick, where "
                             "inductor's minutes of compiling would be the whole run: tests/test_precision.py covers it)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu")
    parser.add_argument("--record", action="store_true",
                        help="file the fp32 rates in benchmarks/throughput.json (sweep.py --dry-run's estimates)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if args.compile_models is None:
        args.compile_models = "" if args.quick else "hyperprior"
    args.compile_models = [m for m in args.compile_models.split(",") if m]
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS] + [m for m in args.models if m not in REGISTRY]
    if unknown:
        parser.error(f"unknown part or model: {', '.join(unknown)} (parts: {', '.join(PARTS)}; models: {', '.join(REGISTRY)})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device here; use --device cpu (with --quick for a smoke run)")
    budget = args.budget or (480.0 if args.quick else 390.0)
    device = torch.device(args.device)
    os.environ.setdefault("WANDB_MODE", "offline")
    report = Report(args.out, device, args.quick, budget)
    from entry import config_for

    seminar = config_for(["experiment=seminar", "data.root=/nonexistent"], require_data=False)
    s = sizes(args.quick, seminar.data.batch_size)
    shares = {p: SHARES[p] for p in parts}
    overall = Clock(budget)
    shared: dict = {}

    def stop(signum, frame):  # a timeout's TERM: what finished is on disk already; say so and leave
        report.data["stopped_by"] = signal.Signals(signum).name
        report.save()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    print(f"GPU check on {report.data['device']}, torch {torch.__version__}, budget {budget:.0f} s -> {report.json_path}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        for i, name in enumerate(parts):
            left_parts = sum(shares[p] for p in parts[i:])
            clock = Clock(max(0.0, overall.left()) * shares[name] / left_parts)
            part = report.part(name)
            start = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] {name}: up to {clock.left():.0f} s", flush=True)
            try:
                globals()[f"part_{name}"](args, s, part, report, clock, Path(tmp_name), shared)
                part["status"] = "done" if not any("out of time" in n for n in part["notes"]) else "partial"
            except Exception as exc:  # noqa: BLE001 - the next part still runs; the JSON says what broke
                part["status"] = "failed"
                part["error"] = "".join(traceback.format_exception(exc))[-3000:]
                print(part["error"], file=sys.stderr, flush=True)
            part["seconds"] = round(time.monotonic() - start, 1)
            report.save()
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {part['status']} in {part['seconds']:.0f} s", flush=True)
    print(report.md_path.read_text())
    failed = [n for n, p in report.data["parts"].items() if p["status"] == "failed"]
    print(f"wrote {report.json_path} and {report.md_path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
