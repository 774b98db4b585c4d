"""Figures: PSNR against bpp (one line per model, like the report's), MS-SSIM (dB) against bpp,
training curves. PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import model_order  # noqa: E402
from codec.models.registry import REGISTRY  # noqa: E402


def _save(fig, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return out_dir / f"{name}.png"


def _style(model: str) -> tuple[str | None, str]:
    """Colour and marker from the model's registry entry."""
    return REGISTRY[model].style if model in REGISTRY else (None, "x")


def ms_ssim_db(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return -10 * np.log10(np.clip(1 - v, 1e-10, None))


def rd_plot(runs: pd.DataFrame, out_dir: Path, name: str = "rd_psnr", metric: str = "psnr",
            references: dict[str, pd.DataFrame] | None = None, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for model in model_order(runs["model"]):
        g = runs[runs["model"] == model].sort_values("bpp")
        y = g["psnr"] if metric == "psnr" else ms_ssim_db(g["ms_ssim"])
        color, marker = _style(model)
        ax.plot(g["bpp"], y, marker=marker, color=color, label=REGISTRY[model].label if model in REGISTRY else model)
        for _, row in g.iterrows():
            ax.annotate(f"{row['lmbda']:g}", (row["bpp"], row["psnr"] if metric == "psnr" else ms_ssim_db(row["ms_ssim"])),
                        textcoords="offset points", xytext=(4, -10), fontsize=6, color=color)
    from analysis.anchors import CLASSICAL_ANCHORS

    x_max = 1.3 * float(runs["bpp"].max())
    visible = [runs["psnr"] if metric == "psnr" else ms_ssim_db(runs["ms_ssim"])]
    for label, curve in (references or {}).items():
        if metric == "ms_ssim" and "ms_ssim" not in curve:
            continue
        y = curve["psnr"] if metric == "psnr" else ms_ssim_db(curve["ms_ssim"])
        classical = label in CLASSICAL_ANCHORS
        ax.plot(curve["bpp"], y, linestyle=":" if classical else "--", linewidth=1, marker="." if classical else "+",
                label=label, alpha=0.7 if classical else 0.85)
        visible.append(np.asarray(y)[np.asarray(curve["bpp"]) <= x_max])
    if references:  # published curves run to 2-4 bpp: show the runs' range, and the references within it
        values = np.concatenate([np.asarray(v, dtype=float) for v in visible])
        ax.set_xlim(0, x_max)
        ax.set_ylim(np.nanmin(values) - 1, np.nanmax(values) + 1)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "MS-SSIM (dB)")
    ax.set_title(title or ("Rate-distortion, Kodak" if metric == "psnr" else "MS-SSIM, Kodak"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2 if len(references or {}) > 6 else 1)
    return _save(fig, out_dir, name)


def training_curves(curves: dict[str, pd.DataFrame], out_dir: Path, name: str = "training_curves") -> Path | None:
    if not curves:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for run, frame in sorted(curves.items()):
        if "train/loss" in frame:
            t = frame.dropna(subset=["train/loss"])
            a.plot(t["_step"], t["train/loss"], label=run, linewidth=1)
        if "val/loss" in frame:
            v = frame.dropna(subset=["val/loss"])
            b.plot(v["_step"], v["val/loss"], marker=".", label=run, linewidth=1)
    for ax, title in ((a, "training loss"), (b, "validation loss")):
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    b.legend(fontsize=5, ncol=2)
    return _save(fig, out_dir, name)
