"""Model complexity: thop's params and MACs, the true parameter count, MACs per pixel.

    python -m codec.complexity                      # the report's Part 4 setting, both tiers
    python -m codec.complexity --batch 1 --height 512 --width 768 --out reports/complexity

thop counts only module types it has rules for (conv, linear, ...), and only exact types: GDN,
the entropy models and CompressAI's masked convolutions (subclasses of nn.Conv2d) count as zero
MACs and zero params. `true_params` counts every parameter; `macs_with_masked` adds the masked
context convolutions (as dense convs, which is what the forward pass computes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from compressai.layers import CheckerboardMaskedConv2d, MaskedConv2d

from codec.models.registry import REGISTRY, build_model


@dataclass
class Complexity:
    model: str
    cls: str
    rate: str
    N: int
    M: int
    input: str
    thop_params: int
    true_params: int
    thop_macs: int
    macs_with_masked: int
    macs_per_pixel: float


def _thop_profile(model: torch.nn.Module, x: torch.Tensor, count_masked: bool) -> tuple[int, int]:
    from thop import profile
    from thop.vision.basic_hooks import count_convNd

    custom = {MaskedConv2d: count_convNd, CheckerboardMaskedConv2d: count_convNd} if count_masked else {}
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, params = profile(model, inputs=(x,), custom_ops=custom, verbose=False)
    return int(macs), int(params)


def measure(name: str, N: int, M: int, batch: int = 64, height: int = 256, width: int = 256,
            rate: str = "", exact_batch: bool = False) -> Complexity:
    """Complexity of one training-mode forward pass on a batch of `batch` x 3 x height x width.

    thop's MAC count is linear in the batch, so by default it is measured on one image and
    scaled (tests check the linearity); `exact_batch` runs the whole batch instead.
    """
    torch.manual_seed(0)
    run_batch = batch if exact_batch else 1
    x = torch.rand(run_batch, 3, height, width)
    model = build_model(name, N, M).train()
    true_params = sum(p.numel() for p in model.parameters())
    macs, thop_params = _thop_profile(model, x, count_masked=False)
    macs_masked, _ = _thop_profile(build_model(name, N, M).train(), x, count_masked=True)
    scale = 1 if exact_batch else batch
    return Complexity(
        model=name, cls=REGISTRY[name].cls.__name__, rate=rate, N=N, M=M,
        input=f"{batch}x3x{height}x{width}", thop_params=thop_params, true_params=true_params,
        thop_macs=macs * scale, macs_with_masked=macs_masked * scale,
        macs_per_pixel=macs * scale / (batch * height * width),
    )


def complexity_table(batch: int = 64, height: int = 256, width: int = 256,
                     models: tuple[str, ...] = tuple(REGISTRY), exact_batch: bool = False) -> pd.DataFrame:
    """Every model at its protocol channels for each rate tier (the registry's table)."""
    rows = []
    for name in models:
        for rate, (N, M) in REGISTRY[name].channels.items():
            rows.append(asdict(measure(name, N, M, batch, height, width, rate, exact_batch)))
    return pd.DataFrame(rows)


def human(n: float) -> str:
    """thop's clever_format style: 2.887M, 771.752G, 1.730T."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3f}{unit}"
    return f"{n:.3f}"


def to_markdown(df: pd.DataFrame) -> str:
    shown = df.copy()
    for col in ("thop_params", "true_params", "thop_macs", "macs_with_masked"):
        shown[col] = shown[col].map(human)
    shown["macs_per_pixel"] = shown["macs_per_pixel"].map(lambda v: f"{v:,.0f}")
    return shown.to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.complexity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size (report: 64)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--kodak", action="store_true", help="also measure one 768x512 Kodak image")
    parser.add_argument("--models", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    parser.add_argument("--exact-batch", action="store_true", help="run the whole batch through thop")
    parser.add_argument("--out", type=Path, default=Path("reports/complexity"),
                        help="folder for complexity.csv and complexity.md")
    args = parser.parse_args(argv)
    for dim in ("batch", "height", "width"):
        if getattr(args, dim) <= 0:
            parser.error(f"--{dim} must be positive")
    warnings.filterwarnings("ignore")

    tables = [complexity_table(args.batch, args.height, args.width, tuple(args.models), args.exact_batch)]
    if args.kodak:
        tables.append(complexity_table(1, 512, 768, tuple(args.models)))
    df = pd.concat(tables, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "complexity.csv", index=False)
    markdown = to_markdown(df)
    (args.out / "complexity.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nwrote {args.out / 'complexity.csv'} and {args.out / 'complexity.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
