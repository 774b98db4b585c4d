"""Tables: the report's Part 3 table per model, BD-rate / BD-PSNR, complexity; each as
markdown, CSV and LaTeX."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd

PART3_COLUMNS = {"model": "model", "lmbda": "lambda", "num_pixels": "pixels", "bits": "bits", "bpp": "bpp",
                 "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "enc_time": "encode (s)", "dec_time": "decode (s)"}


def model_order(models) -> list[str]:
    """The registry's order (codec/models.py) for the models present, then any others by name."""
    from codec.models import REGISTRY

    present = set(models)
    return [m for m in REGISTRY if m in present] + sorted(present - set(REGISTRY))


def part3_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model and lambda: pixels, bits (mean per image), bpp, PSNR, MS-SSIM, encode and decode time."""
    frame = runs[list(PART3_COLUMNS)].copy()
    frame["model"] = pd.Categorical(frame["model"], model_order(frame["model"]))
    if "git_commit" in runs and runs["git_commit"].notna().any():  # which code made each row
        frame["commit"] = runs["git_commit"].map(lambda c: c[:10] if isinstance(c, str) else "")
    frame = frame.sort_values(["model", "lmbda"]).rename(columns=PART3_COLUMNS)
    frame["model"] = frame["model"].astype(str)
    return frame.reset_index(drop=True)


def bd_metrics(curve_ref: pd.DataFrame, curve_test: pd.DataFrame, method: str = "pchip") -> tuple[float, float, str]:
    """(BD-rate %, BD-PSNR dB, note) with the bjontegaard package; NaN and a note where it cannot."""
    import bjontegaard as bd

    ref = curve_ref.sort_values("bpp")
    test = curve_test.sort_values("bpp")
    if min(len(ref), len(test)) < 2:
        return math.nan, math.nan, f"too few points ({len(test)} vs {len(ref)}; at least 2 needed)"
    note = "" if min(len(ref), len(test)) >= 4 else f"only {min(len(ref), len(test))} points (4 is the usual minimum)"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rate = bd.bd_rate(ref["bpp"].values, ref["psnr"].values, test["bpp"].values, test["psnr"].values,
                              method=method, require_matching_points=False)
            psnr = bd.bd_psnr(ref["bpp"].values, ref["psnr"].values, test["bpp"].values, test["psnr"].values,
                              method=method, require_matching_points=False)
        if caught:
            note = "; ".join(filter(None, [note, str(caught[0].message).split("\n")[0]]))
        return float(rate), float(psnr), note
    except Exception as exc:  # non-monotonic curves, no overlap
        if "strictly increasing" in str(exc):
            return math.nan, math.nan, "not computable: a curve's PSNR does not rise with its bpp at every point"
        return math.nan, math.nan, f"not computable: {exc}"


def bd_table(runs: pd.DataFrame, reference: str = "factorized", anchors: dict[str, pd.DataFrame] | None = None,
             method: str = "pchip") -> pd.DataFrame:
    """BD-rate and BD-PSNR of every model against `reference` (a model in the runs or an anchor name)."""
    curves = {m: g[["bpp", "psnr"]] for m, g in runs.groupby("model")}
    pool = {**(anchors or {}), **curves}
    if reference not in pool:
        raise KeyError(f"reference {reference!r} is neither a model in the runs nor an anchor: {', '.join(pool)}")
    rows = []
    for model, curve in curves.items():
        rate, psnr, note = bd_metrics(pool[reference], curve, method)
        low, high, share = psnr_overlap(pool[reference], curve)
        if high <= low:
            note = "; ".join(filter(None, [note, "no PSNR overlap with the reference: nothing to integrate"]))
        elif share < 0.5:
            note = "; ".join(filter(None, [note, f"the overlap covers only {100 * share:.0f}% of the model's PSNR "
                                                 "range: the figure holds for that part of the curve only"]))
        rows.append({"model": model, "reference": reference, "points": len(curve), "BD-rate (%)": rate,
                     "BD-PSNR (dB)": psnr, "PSNR range (dB)": f"{low:.2f}-{high:.2f}" if high > low else "none",
                     "note": note})
    return pd.DataFrame(rows)


def psnr_overlap(curve_ref: pd.DataFrame, curve_test: pd.DataFrame) -> tuple[float, float, float]:
    """The PSNR interval both curves cover (the bjontegaard package integrates BD-rate over it, no
    extrapolation) and the share of the test curve's own PSNR range that it is."""
    low = max(curve_ref["psnr"].min(), curve_test["psnr"].min())
    high = min(curve_ref["psnr"].max(), curve_test["psnr"].max())
    own = curve_test["psnr"].max() - curve_test["psnr"].min()
    return float(low), float(high), float(max(high - low, 0) / own) if own > 0 else 0.0


def curve_checks(runs: pd.DataFrame, published: pd.DataFrame | None = None,
                 published_name: str = "CompressAI bmshj2018-factorized") -> pd.DataFrame:
    """Per model: does bpp rise with lambda and PSNR with bpp (the curve a researcher can believe), the
    smallest step between neighbouring points, and the PSNR gap to a published curve at the same bpp
    (interpolated in log bpp; points outside its range are left out)."""
    import numpy as np

    rows = []
    for model in model_order(runs["model"]):
        curve = runs[runs["model"] == model].sort_values("lmbda")
        bpp, psnr = curve["bpp"].to_numpy(float), curve["psnr"].to_numpy(float)
        row = {"model": model, "points": len(curve),
               "bpp rises with lambda": bool(np.all(np.diff(bpp) > 0)),
               "PSNR rises with bpp": bool(np.all(np.diff(psnr[np.argsort(bpp)]) > 0)),
               "min bpp step (%)": float(100 * np.min(np.diff(bpp) / bpp[:-1])) if len(bpp) > 1 else math.nan,
               "min PSNR step (dB)": float(np.min(np.diff(psnr))) if len(psnr) > 1 else math.nan}
        if published is not None:
            ref = published.sort_values("bpp")
            inside = (bpp >= ref["bpp"].min()) & (bpp <= ref["bpp"].max())
            gap = np.interp(np.log(bpp[inside]), np.log(ref["bpp"].to_numpy(float)), ref["psnr"].to_numpy(float)) \
                - psnr[inside]
            row[f"dB under {published_name} (mean)"] = float(gap.mean()) if inside.any() else math.nan
            row[f"dB under {published_name} (max)"] = float(gap.max()) if inside.any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def complexity_for_runs(runs: pd.DataFrame, batch: int = 64, size: int = 256) -> pd.DataFrame:
    """thop params/MACs (and true params) for every (model, N, M) in the runs, at the report's input."""
    from codec.complexity import measure

    rows = []
    for (model, N, M), _ in runs.groupby(["model", "N", "M"]):
        c = measure(model, int(N), int(M), batch=batch, height=size, width=size)
        rows.append({"model": model, "N": int(N), "M": int(M), "input": c.input, "thop params": c.thop_params,
                     "true params": c.true_params, "thop MACs": c.thop_macs, "MACs/pixel": round(c.macs_per_pixel)})
    return pd.DataFrame(rows)


def write_table(frame: pd.DataFrame, out_dir: Path, name: str, floatfmt: str = ".4f") -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{name}.csv", "md": out_dir / f"{name}.md", "tex": out_dir / f"{name}.tex"}
    frame.to_csv(paths["csv"], index=False)
    paths["md"].write_text(frame.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    paths["tex"].write_text(frame.to_latex(index=False, float_format=lambda v: f"{v:{floatfmt}}"))
    return paths

