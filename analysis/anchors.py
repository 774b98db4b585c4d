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
# Classical codecs as CompressAI publishes them (analysis/anchors/README.md): label -> the file's suffix,
# classical/<set>-<suffix>.json, where <set> is a test-set manifest's "anchors" (data/manifests/).
CLASSICAL_CODECS = {"VTM": "vtm", "HM": "hm", "BPG 4:4:4": "bpg_444_x265_ycbcr", "AV1": "av1",
                    "JPEG 2000": "jpeg2000", "JPEG": "jpeg", "WebP": "webp"}


def classical_anchors(prefix: str = "kodak") -> dict[str, str]:
    """label -> file of the classical curves published for one test set (those that exist)."""
    return {label: f"classical/{prefix}-{suffix}.json" for label, suffix in CLASSICAL_CODECS.items()
            if (ANCHOR_DIR / "classical" / f"{prefix}-{suffix}.json").is_file()}


CLASSICAL_ANCHORS = classical_anchors("kodak")


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
    """The published curves by label: by default the learned models' and the classical codecs' on Kodak."""
    return {label: load_anchor(file) for label, file in (names or {**DEFAULT_ANCHORS, **CLASSICAL_ANCHORS}).items()}


def anchors_for_set(name: str | None) -> dict[str, pd.DataFrame]:
    """The published curves measured on a test set: Kodak's (learned and classical) for kodak, the classical
    ones its manifest names for another set (CLIC 2020 test: VTM, BPG), none for a set nobody published."""
    from codec.data.test_sets import manifests

    m = manifests().get(name or "kodak")
    if m is None or not m.anchors:
        return {}
    return load_anchors() if m.anchors == "kodak" else load_anchors(classical_anchors(m.anchors))
