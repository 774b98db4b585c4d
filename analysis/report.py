"""The report folder of a sweep: RD figures, the Part 3 table, BD-rate, complexity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from codec.records.record import read_record

from analysis.anchors import anchors_for_set
from analysis.plots import rd_plot, training_curves
from analysis.sources import history, load_runs
from analysis.per_image import per_image_bd_table, per_image_points
from analysis.tables import (bd_table, complexity_for_runs, curve_checks, part3_table, to_markdown,
                             with_integer_columns, write_table)


def classical_curves(root: Path, subfolder: str = "") -> dict[str, pd.DataFrame]:
    """JPEG/WebP results written by `run.py task=classical` under root, as curves: those of the first of
    eval.sets in classical/, another set's in classical/<set>/ (subfolder)."""
    points: dict[str, list] = {}
    for path in sorted(Path(root).rglob(f"classical/{subfolder + '/' if subfolder else ''}*/results.json")):
        r = read_record(path).summary()
        points.setdefault(r["model"].upper(), []).append({"bpp": r["bpp"], "psnr": r["psnr"], "ms_ssim": r["ms_ssim"]})
    return {f"{codec} (same images)": pd.DataFrame(p).sort_values("bpp") for codec, p in points.items()}


def build_report(runs_root: str | Path | None, out_dir: str | Path, source: str = "offline",
                 reference: str = "factorized", with_anchors: bool = True, complexity: bool = True,
                 log_to_wandb: bool = False, dataset: str | None = None, **online) -> dict[str, Any]:
    """The report of the runs' headline test set in out_dir, and of each other set they were evaluated on
    (eval.sets) in out_dir/<set>/, each with the published curves of its own set."""
    out_dir = Path(out_dir)
    runs = load_runs(source, runs_root, dataset, **online)
    frame = runs.frame
    for line in runs.left_out:
        print(f"left out: {line}")
    set_label = runs.headline or "kodak"
    first_set = runs.sets[0] if runs.sets else set_label
    print(f"\n== test set {set_label} ==")
    classical = classical_curves(Path(runs_root), "" if set_label == first_set else set_label) if runs_root else {}
    anchors = anchors_for_set(set_label) if with_anchors else {}

    written: dict[str, Any] = {"runs": len(frame), "left_out": runs.left_out}
    written["rd_plot"] = rd_plot(frame, out_dir, "rd_psnr", references=classical, title=f"Rate-distortion, {set_label}")
    written["ms_ssim_plot"] = rd_plot(frame, out_dir, "rd_ms_ssim", metric="ms_ssim", references=classical,
                                     title=f"MS-SSIM, {set_label}")
    if anchors:
        written["rd_plot_anchors"] = rd_plot(frame, out_dir, "rd_psnr_with_anchors", references={**classical, **anchors},
                                             title=f"Rate-distortion, {set_label}, with published anchors")
    if runs_root and source == "offline":
        written["training_curves"] = training_curves(history(runs_root), out_dir)

    part3 = part3_table(frame)
    written["results_table"] = write_table(part3, out_dir, "results")["md"]
    with_integer_columns(frame, round_values=False).to_csv(out_dir / "runs.csv", index=False)
    bd_ref = reference if reference in set(frame["model"]) or reference in anchors else frame["model"].iloc[0]
    bd = bd_table(frame, reference=bd_ref, anchors=anchors)
    written["bd_table"] = write_table(bd, out_dir, "bd_rate", floatfmt=".2f")["md"]
    if anchors and "CompressAI bmshj2018-hyperprior" in anchors:
        write_table(bd_table(frame, "CompressAI bmshj2018-hyperprior", anchors), out_dir, "bd_rate_vs_compressai",
                    floatfmt=".2f")
    # The headline as papers report it: BD-rate against VTM (and BPG), over the PSNR range both cover.
    vtm = bd_table(frame, "VTM", anchors) if "VTM" in anchors else None
    if vtm is not None:
        written["bd_vtm_table"] = write_table(vtm, out_dir, "bd_rate_vs_vtm", floatfmt=".2f")["md"]
    if "BPG 4:4:4" in anchors:
        write_table(bd_table(frame, "BPG 4:4:4", anchors), out_dir, "bd_rate_vs_bpg", floatfmt=".2f")
    if runs_root and source != "online":
        points = per_image_points(runs_root, dataset)
        if not points.empty and bd_ref in set(points["model"]) and points["model"].nunique() > 1:
            written["per_image_bd_table"] = write_table(per_image_bd_table(points, bd_ref), out_dir,
                                                        "bd_rate_per_image", floatfmt=".2f")["md"]
    factorized = anchors.get("CompressAI bmshj2018-factorized")
    checks = curve_checks(frame, factorized)
    written["curve_checks"] = write_table(checks, out_dir, "curve_checks", floatfmt=".2f")["md"]
    if complexity:
        written["complexity_table"] = write_table(complexity_for_runs(frame), out_dir, "complexity", ".0f")["md"]

    print(to_markdown(part3))
    if vtm is not None:
        print(f"\nBD-rate against VTM ({set_label}, CompressAI's published VTM curve):")
        print(to_markdown(vtm, floatfmt=".2f"))
    print()
    print(to_markdown(bd, floatfmt=".2f"))
    print()
    print(to_markdown(checks, floatfmt=".2f"))
    if log_to_wandb:
        _log_report(written, part3, bd, online.get("project", "lic-sweep"))
    written["set"] = set_label
    if dataset is None:  # the other sets, each in its own folder
        for other in runs.sets[1:]:
            written.setdefault("sets", {})[other] = build_report(
                runs_root, out_dir / other, source, reference, with_anchors, complexity=False, dataset=other,
                **online)
    return written


def _log_report(written: dict[str, Any], part3: pd.DataFrame, bd: pd.DataFrame, project: str) -> None:
    import os

    import wandb

    run = wandb.init(project=project, job_type="analysis", mode=os.environ.get("WANDB_MODE", "offline"),
                     name="analysis", reinit="finish_previous")
    try:
        for key in ("rd_plot", "ms_ssim_plot", "rd_plot_anchors", "training_curves"):
            if written.get(key):
                run.log({key: wandb.Image(str(written[key]))})
        run.log({"results": wandb.Table(dataframe=part3), "bd_rate": wandb.Table(dataframe=bd)})
    finally:
        run.finish()
