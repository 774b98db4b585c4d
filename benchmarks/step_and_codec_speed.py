"""Seconds per training step and encode/decode seconds per Kodak image, per model.

    python benchmarks/step_and_codec_speed.py                    # quickstart channels (low tier)
    python benchmarks/step_and_codec_speed.py --N 192 --M 320 --images 2

Training: our Trainer.train_step on batches from the shipped Vimeo sample (quickstart crop and
batch), after warm-up steps. Codec: real bitstreams through codec.evaluate on Kodak images with
an untrained model (the time is dominated by the transforms and, for the serial context model,
by its per-position loop, not by the weights' values).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec.evaluate import evaluate_model, summarize  # noqa: E402
from codec.settings import MODEL_NAMES  # noqa: E402
from tests.conftest import settings_for  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def step_seconds(name: str, N: int, M: int, steps: int, tmp: Path) -> float:
    from codec.train import Trainer

    settings, values = settings_for(["experiment=quickstart", f"model={name}", f"model.N={N}", f"model.M={M}",
                                     "logger.mode=disabled"])
    trainer = Trainer(settings, tmp / name, values)
    loader = trainer._loader(trainer.train_set, list(range(len(trainer.train_set))), settings.data.batch_size, True)
    batches = [x for x, _ in loader]
    for x in batches[:2]:
        trainer.train_step(x)
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step(batches[i % len(batches)])
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--N", type=int, default=32)
    parser.add_argument("--M", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=2, help="Kodak images to code per model")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import tempfile

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, N={args.N} M={args.M}")
    print("| model | s/step (quickstart batch) | encode s/image | decode s/image | bpp |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            per_step = step_seconds(name, args.N, args.M, args.steps, Path(tmp))
            from codec.models import build_model

            torch.manual_seed(0)
            results, _ = evaluate_model(build_model(name, args.N, args.M), REPO / "data" / "kodak",
                                        max_images=args.images)
            s = summarize(results)
            print(f"| {name} | {per_step:.3f} | {s['enc_time']:.3f} | {s['dec_time']:.3f} | {s['bpp']:.3f} |")


if __name__ == "__main__":
    main()
