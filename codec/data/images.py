"""Reading images as 8-bit RGB, whatever their mode (grayscale, palette, RGBA, 16-bit)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class UnreadableImage(Exception):
    """The file exists but cannot be decoded as an image."""


def to_rgb8(img: Image.Image) -> np.ndarray:
    """HxWx3 uint8. 16-bit and 32-bit integer images are scaled, not clipped; alpha is dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.round(np.asarray(img) * (255.0 if np.asarray(img).max() <= 1 else 1)), 0, 255)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode == "P" else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def read_rgb(path, name: str | None = None) -> np.ndarray:
    """The image at `path` (a file's path, or an open binary file: then `name` names it in messages) as
    HxWx3 uint8; UnreadableImage if it cannot be decoded, or if its header declares
    more than PIL's Image.MAX_IMAGE_PIXELS (a decompression bomb: refused before any pixel is decoded).
    Training, evaluation, the classical anchors and codec.prepare read images only through this."""
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS (89.5 M) and refuses above twice that: both refuse here,
            # from the header, before a pixel is decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb8(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"{name or path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        why = str(exc).replace(" " + repr(path), "") if name else str(exc)  # not PIL's <_io.BytesIO object at 0x..>
        raise UnreadableImage(f"{name or path}: {why}") from None


def list_images(root: str | Path) -> list[Path]:
    """PNG and JPEG files under `root`, recursively, in a stable order."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
