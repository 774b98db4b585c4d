"""Peak memory of a training step and of an evaluation, per model.

    python benchmarks/peak_memory.py                    # a small size: batch 8 of 64x64, N=32 M=48
    python benchmarks/peak_memory.py --size protocol    # the seminar's crops and channels (low tier), batch 16
    python benchmarks/peak_memory.py --device cuda

Each figure comes from a fresh child process. Training: our Trainer.train_step on a batch from the
shipped Vimeo sample, two steps (the first also creates Adam's state). Evaluation: our
evaluate_model on the first Kodak image (768x512), real bitstreams. On CPU the figure is the rise
of the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs just before) over
its resident memory at that point: what the step or the evaluation adds on top of the loaded
model, data and libraries. On CUDA it is torch.cuda.max_memory_allocated, after a reset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, header  # noqa: E402
from codec.models.registry import REGISTRY

# batch, crop, channels (None: the model's low tier from its config). The seminar trains with
# batch 64; 16 keeps the CPU run short, and activation memory grows about linearly with the batch.
SIZES = {
    "small": {"batch": 8, "patch": 64, "channels": (32, 48)},
    "protocol": {"batch": 16, "patch": 256, "channels": None},
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak(device: torch.device) -> int:
    """Reset the peak counters; return the baseline in bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _status_kib("VmHWM") * 1024


def child(phase: str, name: str, size: str, device_name: str) -> dict:
    from entry import config_for

    spec = SIZES[size]
    device = torch.device(device_name)
    experiment = "quickstart_scratch" if spec["channels"] else "seminar"  # seminar: the protocol's channel table
    overrides = [f"experiment={experiment}", f"model={name}", "rate=low", "logger=none", f"device={device_name}",
                 f"data.root={REPO / 'data' / 'vimeo-sample'}", f"data.batch_size={spec['batch']}",
                 f"data.patch_size={spec['patch']}", "hydra.run.dir=/tmp/unused"]
    if spec["channels"]:
        overrides += [f"model.N={spec['channels'][0]}", f"model.M={spec['channels'][1]}"]
    config = config_for(overrides)
    if phase == "train":
        import tempfile

        from codec.training.trainer import build_trainer

        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(config, Path(tmp))
            x = torch.stack([trainer.train_set[i][0] for i in range(spec["batch"])]).to(device)
            base = _reset_peak(device)
            for _ in range(2):
                trainer.train_step(x)
            peak = _peak(device)
    else:
        from codec.evaluation.evaluate import evaluate_model
        from codec.models.registry import build_model

        torch.manual_seed(0)
        model = build_model(name, config.model.N, config.model.M).to(device).eval()
        base = _reset_peak(device)
        evaluate_model(model, REPO / "data" / "kodak", device=device, max_images=1)
        peak = _peak(device)
    return {"peak_over_base": peak - base, "N": config.model.N, "M": config.model.M}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(REGISTRY))
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.size, args.device)))
        return
    spec = SIZES[args.size]
    what = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "CPU peak RSS rise"
    print(header(f"{args.size} size: training batch {spec['batch']} of {spec['patch']}x{spec['patch']}, "
                 f"evaluation of one 768x512 Kodak image; {what}, MiB"))
    print("| model | N / M | training step MiB | evaluation MiB |")
    print("|---|---|---|---|")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name in args.models:
        figures = {}
        for phase in ("train", "eval"):
            out = subprocess.run([sys.executable, __file__, "--size", args.size, "--device", args.device,
                                  "--child", phase, name], capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{name} {phase} failed:\n{out.stderr[-2000:]}")
            figures[phase] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {figures['train']['N']} / {figures['train']['M']} | "
              f"{figures['train']['peak_over_base'] / 2**20:.0f} | {figures['eval']['peak_over_base'] / 2**20:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
