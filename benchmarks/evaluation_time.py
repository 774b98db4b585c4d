"""Kodak evaluation time per model: our evaluation against CompressAI's eval_model, on the same
checkpoint file and the same images.

    python benchmarks/evaluation_time.py [--images 4] [--N 32 --M 48] [--checkpoints DIR]

Both sides are timed from the checkpoint file to the averaged results: load, update the entropy
models, then per image read, pad, compress, decompress, PSNR and MS-SSIM. Ours also packs the
strings into one byte string, unpacks them, and checks that the decoded latent is the one the
encoder coded. The checkpoints are the quickstart's (lambda 0.0067) when `--checkpoints` names a
sweep directory that has them, else untrained models of the given size.
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


def checkpoint_for(name: str, args, tmp: Path) -> tuple[Path, str]:
    """The weights both sides load, as one {"state_dict": ...} file."""
    from codec.models.checkpoint import load_checkpoint
    from codec.models.registry import build_model

    path = tmp / f"{name}.pth"
    trained = Path(args.checkpoints or ".") / "runs" / f"{name}_lmbda0.0067" / "checkpoints" / "best.pth"
    if args.checkpoints and trained.exists():
        torch.save({"state_dict": load_checkpoint(trained)["state_dict"]}, path)
        return path, "quickstart, lambda 0.0067"
    torch.manual_seed(0)
    N, M = args.N, (args.N if REGISTRY[name].m_is_n else args.M)  # Cheng 2020: the latent has N channels
    torch.save({"state_dict": build_model(name, N, M).state_dict()}, path)
    return path, f"untrained N={N} M={M}"


def time_ours(checkpoint: Path, folder: Path, count: int) -> tuple[float, dict]:
    from codec.evaluation.evaluate import evaluate_model
    from codec.models.checkpoint import load_model
    from codec.records.record import summarize

    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # no progress bar
        start = time.perf_counter()
        model, _ = load_model(checkpoint)
        results, _ = evaluate_model(model, folder, max_images=count)
        return time.perf_counter() - start, summarize(results)


def time_peer(name: str, checkpoint: Path, folder: Path, files: list[Path]) -> tuple[float, dict]:
    start = time.perf_counter()
    model = compressai_peer.load_for_eval(name, checkpoint)
    metrics = compressai_peer.evaluate(model, folder, files)
    return time.perf_counter() - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(REGISTRY))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--N", type=int, default=32)
    parser.add_argument("--M", type=int, default=48)
    parser.add_argument("--checkpoints", default=str(REPO / "outputs" / "quickstart"),
                        help="a sweep directory with runs/<model>_lmbda0.0067/checkpoints/best.pth")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from codec.evaluation.evaluate import list_eval_images

    folder = REPO / "data" / "kodak"
    files, _ = list_eval_images(folder, args.images)
    print(header(f"{len(files)} Kodak images (768x512), seconds for the whole evaluation from the checkpoint file, "
                 "entropy coding on CPU"))
    print("| model | checkpoint | ours s | eval_model s | ratio (ours/theirs) | bpp ours / theirs | PSNR ours / theirs "
          "| encode s/image | decode s/image |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            checkpoint, what = checkpoint_for(name, args, Path(tmp))
            peer_times, our_times = [], []
            for _ in range(args.repeats):  # alternating; the best time of each counts
                t, peer = time_peer(name, checkpoint, folder, files)
                peer_times.append(t)
                t, ours = time_ours(checkpoint, folder, args.images)
                our_times.append(t)
            peer_s, ours_s = min(peer_times), min(our_times)
            print(f"| {name} | {what} | {ours_s:.2f} | {peer_s:.2f} | {ours_s / peer_s:.2f} | "
                  f"{ours['bpp']:.4f} / {peer['bpp']:.4f} | {ours['psnr']:.2f} / {peer['psnr-rgb']:.2f} | "
                  f"{ours['enc_time']:.3f} | {ours['dec_time']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
