"""Classical anchors: JPEG and WebP through Pillow, measured like the learned codecs
(bits = 8 x file bytes, PSNR and MS-SSIM on the decoded 8-bit image), same results format."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from codec.errors import LicSweepError
from codec.evaluation.evaluate import checked_results, quality_metrics, to_tensor, usable_images
from codec.records.layout import RunDir
from codec.records.record import Identity, ImageResult, Provenance, RunRecord, SetResult

FORMATS = {"jpeg": ("JPEG", {"subsampling": "4:2:0"}), "webp": ("WEBP", {"method": 4})}


def code_image(img: np.ndarray, codec: str, quality: int) -> tuple[bytes, np.ndarray, float, float]:
    fmt, options = FORMATS[codec]
    t0 = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=quality, **options)
    data = buf.getvalue()
    t1 = time.perf_counter()
    with Image.open(io.BytesIO(data)) as decoded:
        rec = np.asarray(decoded.convert("RGB"))
    t2 = time.perf_counter()
    return data, rec, t1 - t0, t2 - t1


def evaluate_classical(codec: str, quality: int, folder: str | Path, max_images: int | None = None,
                       set_name: str | None = None) -> RunRecord:
    """One codec at one quality on the images of `folder` (the test set `set_name`, default the folder's name)."""
    if codec not in FORMATS:
        raise LicSweepError(f"eval.classical_codecs: {codec!r} is not supported; choose from {', '.join(FORMATS)}")
    if not 1 <= quality <= 100:
        raise LicSweepError(f"eval.classical_qualities: {quality} must be between 1 and 100")
    per_image, skipped = [], []
    for name, _, img in usable_images(folder, max_images, skipped, f"{codec} q{quality}"):
        data, rec, enc, dec = code_image(img, codec, quality)
        psnr, ssim = quality_metrics(img, to_tensor(rec))
        h, w = img.shape[:2]
        per_image.append(ImageResult(name, h * w, 8 * len(data), 8 * len(data) / (h * w), psnr, ssim, enc, dec))
    per_image, skipped = checked_results(per_image, skipped, folder)
    name = set_name or Path(folder).name
    return RunRecord(Identity(codec, quality=quality), {name: SetResult(name, str(folder), per_image, skipped)},
                     provenance=Provenance(coding_device="cpu"))


def evaluate_classical_anchors(codecs: list[str], qualities: list[int], folder: str | Path, out_dir: Path,
                               max_images: int | None = None, set_name: str | None = None) -> list[dict[str, Any]]:
    """Every codec at every quality; a run record per point under out_dir/<codec>_q<quality>/."""
    summaries = []
    for codec in codecs:
        for q in qualities:
            record = evaluate_classical(codec, q, folder, max_images, set_name)
            record.write(RunDir(out_dir / f"{codec}_q{q}"))
            summaries.append(record.summary())
            print(f"{codec} q{q}: bpp {record.headline['bpp']:.4f} psnr {record.headline['psnr']:.2f} dB")
    return summaries
