"""A synthetic Vimeo-90k archive in vimeo_septuplet.zip's layout, made of real pixels: crops of the frames in
data/vimeo-sample (each of its 16 sequences gives two sequences at other offsets), the list files, a readme,
and one frame that cannot be decoded (a listed sequence's im4.png holds a truncated PNG)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "vimeo-sample"
HEIGHT, WIDTH = 64, 112
BROKEN = "00003/0002"  # the listed sequence whose im4.png is truncated


def make_vimeo_zip(path: Path, sequences: int = 32, test_sequences: int = 2, top: str = "vimeo_septuplet") -> dict:
    """Write the archive; returns {"train": [names in sep_trainlist.txt], "test": [...], "frames": n}."""
    sources = sorted(p for p in (SAMPLE / "sequences").glob("*/*") if p.is_dir())
    names = [f"{1 + k // 8:05d}/{1 + k % 8:04d}" for k in range(sequences)]
    frames = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/readme.txt", "Vimeo-90k septuplet (synthetic test copy)\n")
        for k, name in enumerate(names):
            source = sources[k % len(sources)]
            top_left = (13 * k) % (256 - HEIGHT), (29 * k) % (448 - WIDTH)
            for f in range(1, 8):
                pixels = np.asarray(Image.open(source / f"im{f}.png").convert("RGB"))
                crop = pixels[top_left[0]:top_left[0] + HEIGHT, top_left[1]:top_left[1] + WIDTH]
                buffer = io.BytesIO()
                Image.fromarray(crop).save(buffer, format="PNG")
                data = buffer.getvalue()
                if name == BROKEN and f == 4:
                    data = data[:len(data) // 2]
                zf.writestr(f"{top}/sequences/{name}/im{f}.png", data)
                frames += 1
        train, test = names[:sequences - test_sequences], names[sequences - test_sequences:]
        zf.writestr(f"{top}/sep_trainlist.txt", "\n".join(train) + "\n")
        zf.writestr(f"{top}/sep_testlist.txt", "\n".join(test) + "\n")
    return {"train": train, "test": test, "frames": frames}
