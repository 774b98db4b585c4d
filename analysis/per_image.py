"""BD-rate image by image, with a bootstrap confidence interval for its mean: whether a difference between
two models holds across the test images or comes from a few of them. Reads the per-image results that
every run keeps in results.json (bpp and PSNR of each image at each lambda)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sources import run_results
from analysis.tables import bd_metrics, model_order
from codec.errors import LicSweepError


def per_image_points(root: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """One row per (model, lambda, image) from the results.json files under root (classical runs excluded),
    on one test set (default: each run's headline set)."""
    rows = []
    for path, record in run_results(root):
        if isinstance(record, Exception):
            raise LicSweepError(str(record))
        s = record.for_set(dataset)
        for img in s.per_image if s else []:
            rows.append({"model": record.identity.model, "lmbda": record.identity.lmbda, "image": img.image,
                         "bpp": img.bpp, "psnr": img.psnr})
    return pd.DataFrame(rows, columns=["model", "lmbda", "image", "bpp", "psnr"])


def bootstrap_mean_ci(values, resamples: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap over the values (images resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    means = np.random.default_rng(seed).choice(v, size=(resamples, len(v)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(v.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def per_image_bd_table(points: pd.DataFrame, reference: str = "factorized") -> pd.DataFrame:
    """Per model: the BD-rate against `reference` on each image (its curve over the sweep's lambdas), the
    mean over images with a 95% bootstrap interval, and how many images gave a computable figure."""
    rows = []
    ref_points = points[points["model"] == reference]
    for model in model_order(points["model"]):
        if model == reference:
            continue
        own = points[points["model"] == model]
        rates = []
        images = sorted(set(own["image"]) & set(ref_points["image"]))
        for image in images:
            rate, _, _ = bd_metrics(ref_points[ref_points["image"] == image][["bpp", "psnr"]],
                                    own[own["image"] == image][["bpp", "psnr"]])
            if not math.isnan(rate):
                rates.append(rate)
        mean, low, high = bootstrap_mean_ci(rates)
        rows.append({"model": model, "reference": reference, "images": f"{len(rates)} of {len(images)}",
                     "mean BD-rate (%)": mean, "95% CI low": low, "95% CI high": high,
                     "images better than reference": int(np.sum(np.asarray(rates) < 0))})
    return pd.DataFrame(rows)
