"""The same sweep with several seeds: is each model's curve monotone for every seed, with a margin?

    python -m analysis.seeds outputs/quickstart_seed1 outputs/quickstart_seed2 outputs/quickstart_seed3

Per model and neighbouring pair of lambdas: the gap between the seeds' mean bpp (and PSNR) against the
run-to-run spread, as the separation = gap / (half the seed range of one point + half of the other).
Above 1 the seeds' ranges do not overlap: the order of the two points is not within run-to-run noise.
Also each seed's BD-rate against the factorized model, and whether it is computable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.sources import from_results
from analysis.tables import bd_table, curve_checks, model_order, write_table
from codec.errors import LicSweepError


def separation(runs: pd.DataFrame) -> pd.DataFrame:
    """runs: one row per (seed, model, lambda). Per model and neighbouring lambdas: gaps and separations."""
    rows = []
    for model in model_order(runs["model"]):
        per_point = runs[runs["model"] == model].groupby("lmbda")[["bpp", "psnr"]].agg(["mean", "min", "max"])
        lambdas = list(per_point.index)
        for low, high in zip(lambdas, lambdas[1:]):
            row = {"model": model, "lambdas": f"{low:g} -> {high:g}"}
            for metric in ("bpp", "psnr"):
                a, b = per_point.loc[low, metric], per_point.loc[high, metric]
                half_ranges = (a["max"] - a["min"]) / 2 + (b["max"] - b["min"]) / 2
                gap = b["mean"] - a["mean"]
                row[f"{metric} gap"] = gap
                row[f"{metric} separation"] = gap / half_ranges if half_ranges > 0 else float("inf")
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="the same sweep run with different seeds")
    parser.add_argument("--out", type=Path, help="write seeds_*.md/csv/tex here (default: the first sweep's report/)")
    args = parser.parse_args(argv)
    try:
        frames = []
        for i, root in enumerate(args.sweeps):
            frames.append(from_results(root).frame.assign(sweep=str(root), seed_index=i))
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = pd.concat(frames, ignore_index=True)
    checks = pd.concat([curve_checks(f).assign(sweep=str(root)) for f, root in zip(frames, args.sweeps)])
    bd = pd.concat([bd_table(f, "factorized").assign(sweep=str(root)) for f, root in zip(frames, args.sweeps)
                    if "factorized" in set(f["model"])])
    sep = separation(runs)
    out = args.out or args.sweeps[0] / "report"
    for name, table in (("seeds_curve_checks", checks), ("seeds_bd_rate", bd), ("seeds_separation", sep)):
        write_table(table, out, name, floatfmt=".3f")
        print(table.to_markdown(index=False, floatfmt=".3f"), end="\n\n")
    ok = bool(checks["bpp rises with lambda"].all() and checks["PSNR rises with bpp"].all()
              and (sep[["bpp separation", "psnr separation"]] > 1).all().all() and bd["BD-rate (%)"].notna().all())
    verdict = ("monotone for every seed, neighbours apart beyond the seeds' spread, BD-rate computable" if ok
               else "NOT all monotone and separated")
    print(f"{len(args.sweeps)} sweeps: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
