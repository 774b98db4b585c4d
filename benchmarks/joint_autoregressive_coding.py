"""Serial (joint autoregressive) coding: our bit-exact coder against CompressAI's, and the
checkerboard model's decode against the serial one, on Kodak images.

    python benchmarks/joint_autoregressive_coding.py [--N 192 --M 192] [--images 2] [--crop 256] [--device cuda]

The transforms run on --device (CPU by default); the entropy coders run on the CPU either way.

Prints seconds per image and the ratios, and checks on every image that both coders produce the
same bitstream and the same decoded image. Models are untrained (time does not depend on the
weights' values; bitstream sizes do, slightly).
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

from codec.models import fast_autoregressive  # noqa: E402
from codec.models.bitstream import pad
from codec.evaluation.evaluate import list_eval_images, to_tensor
from codec.data.images import read_rgb
from codec.models.registry import build_model

REPO = Path(__file__).resolve().parent.parent


def timed(fn, device: torch.device):
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--N", type=int, default=192)
    parser.add_argument("--M", type=int, default=192)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--crop", type=int, default=None, help="code the top-left SIZE x SIZE of each image (a quick run)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    device = torch.device(args.device)
    ja = build_model("joint_autoregressive", args.N, args.M).eval().to(device)
    cb = build_model("checkerboard", args.N, args.M).eval().to(device)
    for m in (ja, cb):
        m.update(force=True)
    images, _ = list_eval_images(REPO / "data" / "kodak", args.images)
    totals = dict.fromkeys(["ca_enc", "ca_dec", "our_enc", "our_dec", "cb_enc", "cb_dec"], 0.0)
    with torch.no_grad():
        for path in images:
            x = to_tensor(read_rgb(path))
            x = pad(x[..., :args.crop, :args.crop] if args.crop else x).to(device)
            theirs, t = timed(lambda: ja.compress(x), device)
            totals["ca_enc"] += t
            ours, t = timed(lambda: fast_autoregressive.compress(ja, x), device)
            totals["our_enc"] += t
            assert ours["strings"] == theirs["strings"], f"{path.name}: bitstreams differ"
            ref, t = timed(lambda: ja.decompress(theirs["strings"], theirs["shape"])["x_hat"], device)
            totals["ca_dec"] += t
            # the same work as CompressAI's decompress: the latent, then the synthesis transform
            x_hat, t = timed(lambda: ja.g_s(fast_autoregressive.decode_latent(ja, theirs["strings"], theirs["shape"]))
                             .clamp_(0, 1), device)
            totals["our_dec"] += t
            assert torch.equal(x_hat, ref), f"{path.name}: decoded images differ"
            enc, t = timed(lambda: cb.compress(x), device)
            totals["cb_enc"] += t
            _, t = timed(lambda: cb.decompress(enc["strings"], enc["shape"]), device)
            totals["cb_dec"] += t
    n = len(images)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} threads, device {device}, "
          f"torch {torch.__version__}, N={args.N} M={args.M}, {n} Kodak image(s)"
          f"{f' cropped to {args.crop}x{args.crop}' if args.crop else ''}, seconds per image")
    print("| coder | encode s | decode s |")
    print("|---|---|---|")
    print(f"| CompressAI JointAutoregressiveHierarchicalPriors | {totals['ca_enc'] / n:.2f} | {totals['ca_dec'] / n:.2f} |")
    print(f"| ours (codec/models/fast_autoregressive.py), bit-exact | {totals['our_enc'] / n:.2f} | {totals['our_dec'] / n:.2f} |")
    print(f"| checkerboard (two-pass) | {totals['cb_enc'] / n:.2f} | {totals['cb_dec'] / n:.2f} |")
    print(f"\nspeed-up over CompressAI: encode {totals['ca_enc'] / totals['our_enc']:.1f}x, "
          f"decode {totals['ca_dec'] / totals['our_dec']:.1f}x; identical bitstreams and decoded images")
    print(f"checkerboard decode vs serial: {totals['ca_dec'] / totals['cb_dec']:.0f}x faster than CompressAI's, "
          f"{totals['our_dec'] / totals['cb_dec']:.0f}x faster than ours")


if __name__ == "__main__":
    main()
