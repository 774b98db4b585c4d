"""Ladder against from-scratch training: per model, the training steps each way and the BD-rate of the
ladder's curve against the from-scratch curve (negative: the ladder reaches the same PSNR with fewer bits).

    python -m analysis.compare outputs/mini outputs/mini_scratch

The first folder is a ladder sweep (python sweep.py --ladder ...; its anchors in FOLDER_anchors when
ladder.refine_anchor), the second the same grid trained from scratch with the fine-tunes' budget
(python sweep.py ... plus the ladder.finetune overrides). Lambdas that the second folder lacks count in
both curves. Steps saved compare the ladder (anchors and fine-tunes) with training every lambda like
its anchor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.sources import run_results
from analysis.tables import bd_metrics, model_order, write_table
from codec.errors import LicSweepError
from codec.records.layout import SweepDir


def _runs(root: Path) -> pd.DataFrame:
    rows = []
    for path, record in run_results(root):
        if isinstance(record, Exception):
            raise LicSweepError(str(record))
        if record.training:
            rows.append({"model": record.identity.model, "lmbda": record.identity.lmbda,
                         "bpp": record.headline["bpp"], "psnr": record.headline["psnr"],
                         "steps": record.training.train_steps, "fine_tuned": bool(record.identity.init_from)})
    if not rows:
        raise LicSweepError(f"no finished training runs (results.json) under {root}")
    return pd.DataFrame(rows)


def compare(ladder_root: Path, scratch_root: Path) -> pd.DataFrame:
    ladder, scratch = _runs(ladder_root), _runs(scratch_root)
    anchor_root = SweepDir(ladder_root).anchors.path  # ladder.refine_anchor: anchors apart
    anchors = _runs(anchor_root) if anchor_root.is_dir() else ladder[~ladder["fine_tuned"]]
    rows = []
    for model in model_order(ladder["model"]):
        lad = ladder[ladder["model"] == model]
        own = scratch[scratch["model"] == model]
        model_anchors = anchors[anchors["model"] == model]
        if own.empty or model_anchors.empty:
            continue
        shared = lad[~lad["lmbda"].isin(own["lmbda"])]
        scr = pd.concat([own, shared])
        anchor_steps = int(model_anchors["steps"].max())
        ladder_steps = int(lad["steps"].sum()) + (int(model_anchors["steps"].sum()) if anchor_root.is_dir() else 0)
        rate, psnr, note = bd_metrics(scr[["bpp", "psnr"]], lad[["bpp", "psnr"]])
        rows.append({"model": model, "points": len(lad), "ladder steps": ladder_steps,
                     "all from scratch, anchor budget": anchor_steps * len(lad),
                     "steps saved (%)": 100 * (1 - ladder_steps / (anchor_steps * len(lad))),
                     "scratch steps (fine-tune budget)": int(scr["steps"].sum()),
                     "BD-rate ladder vs scratch (%)": rate, "BD-PSNR (dB)": psnr, "note": note})
    if not rows:
        raise LicSweepError(f"no model is in both {ladder_root} and {scratch_root}")
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("ladder", type=Path)
    parser.add_argument("scratch", type=Path)
    parser.add_argument("--out", type=Path, help="write ladder_vs_scratch.{md,csv,tex} here (default: LADDER/report)")
    args = parser.parse_args(argv)
    try:
        table = compare(args.ladder, args.scratch)
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table.to_markdown(index=False, floatfmt=".2f"))
    paths = write_table(table, args.out or args.ladder / "report", "ladder_vs_scratch", floatfmt=".2f")
    print(f"\nwritten: {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
