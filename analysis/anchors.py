"""Published reference curves shipped in analysis/anchors (copied from the project's anchors,
with their README naming the sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

ANCHOR_DIR = Path(__file__).resolve().parent / "anchors"
DEFAULT_ANCHORS = {
    "CompressAI bmshj2018-factorized": "compressai-bmshj2018-factorized_mse_cuda.json",
    "CompressAI bmshj2018-hyperprior": "compressai-bmshj2018-hyperprior_mse_cuda.json",
    "CompressAI mbt2018": "compressai-mbt2018_mse_cuda.json",
    "He 2021 checkerboard (paper)": "paper-minnen2018-checkerboard_mse.json",
    "seminar report": "seminar-report.json",
}
# Classical codecs on Kodak as CompressAI publishes them (analysis/anchors/README.md).
CLASSICAL_ANCHORS = {
    "VTM": "classical/kodak-vtm.json",
    "HM": "classical/kodak-hm.json",
    "BPG 4:4:4": "classical/kodak-bpg_444_x265_ycbcr.json",
    "AV1": "classical/kodak-av1.json",
    "JPEG 2000": "classical/kodak-jpeg2000.json",
    "JPEG": "classical/kodak-jpeg.json",
    "WebP": "classical/kodak-webp.json",
}


def load_anchor(file: str | Path) -> pd.DataFrame:
    path = Path(file) if Path(file).is_absolute() else ANCHOR_DIR / file
    data = json.loads(path.read_text())["results"]
    frame = pd.DataFrame({"bpp": data["bpp"], "psnr": data["psnr-rgb"]})
    if "ms-ssim-rgb" in data:
        frame["ms_ssim"] = data["ms-ssim-rgb"]
    if "lmbda" in data:
        frame["lmbda"] = data["lmbda"]
    return frame.sort_values("bpp").reset_index(drop=True)


def load_anchors(names: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    """The published curves by label: by default the learned models' and the classical codecs'."""
    return {label: load_anchor(file) for label, file in (names or {**DEFAULT_ANCHORS, **CLASSICAL_ANCHORS}).items()}
