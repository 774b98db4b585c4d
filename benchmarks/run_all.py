"""Every benchmark with its default settings, one after the other; each prints its own table.

    python benchmarks/run_all.py            # or: make bench
    python benchmarks/run_all.py --quick    # fewer steps and images, for a smoke check

Runs from the repository root; the quickstart's checkpoints (outputs/quickstart) are used for the
evaluation timing when they exist.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = [
    ("Training throughput against CompressAI's examples/train.py loop, N=32 M=48, 64x64 crops", "training_throughput.py", ["--ablation", "--record"],
     ["--steps", "20", "--repeats", "1"]),
    ("Training throughput at the quickstart's size (its N, M, batch and crop), against CompressAI's loop",
     "training_throughput.py", ["--quickstart", "--ablation", "--steps", "20", "--repeats", "1"],
     ["--quickstart", "--models", "factorized", "--steps", "2", "--repeats", "1"]),
    ("Training throughput at the protocol's size (N=128 M=192, 256x256, no cache), PNG and packed",
     "training_throughput.py", ["--protocol", "--models", "factorized", "hyperprior", "--steps", "8", "--repeats", "1"],
     ["--protocol", "--models", "factorized", "--steps", "2", "--repeats", "1"]),
    ("Kodak evaluation time against compressai.utils.eval_model", "evaluation_time.py", ["--repeats", "2"],
     ["--images", "1"]),
    ("Serial (joint autoregressive) coding against CompressAI's", "joint_autoregressive_coding.py", ["--images", "1"],
     ["--images", "1", "--N", "32", "--M", "48", "--crop", "256"]),
    ("Training-data loading: PNG against the packed copy (codec.prepare)", "data_loading.py", [],
     ["--seconds", "1"]),
    ("Peak memory per model, a small size (N=32 M=48, batch 8 of 64x64)", "peak_memory.py", [], []),
    ("Peak memory per model, the protocol's size", "peak_memory.py", ["--size", "protocol"],
     ["--size", "protocol", "--models", "factorized"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    failed = []
    for title, script, full, quick in BENCHMARKS:
        print(f"\n## {title}\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *(quick if args.quick else full)])
        print(f"\n({script}: {time.perf_counter() - start:.0f} s)", flush=True)
        if code:
            failed.append(script)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
