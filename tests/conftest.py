from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
KODAK = REPO / "data" / "kodak"
VIMEO = REPO / "data" / "vimeo-sample"


@pytest.fixture(autouse=True)
def _small_torch(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("WANDB_SILENT", "true")


def kodak_crop(name: str = "kodim23.png", height: int = 128, width: int = 192) -> torch.Tensor:
    """A real Kodak crop as a 1x3xHxW float tensor in [0, 1]."""
    img = np.asarray(Image.open(KODAK / name).convert("RGB"))[:height, :width]
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
