"""The rate-distortion loss: lambda * 255^2 * MSE + bpp (bpp from the likelihoods)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class RateDistortionLoss(nn.Module):
    def __init__(self, lmbda: float):
        super().__init__()
        self.lmbda = lmbda

    def forward(self, output: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = target.shape
        num_pixels = n * h * w
        bpp = sum(torch.log(l).sum() for l in output["likelihoods"].values()) / (-math.log(2) * num_pixels)
        mse = torch.mean((output["x_hat"] - target) ** 2)
        loss = self.lmbda * 255**2 * mse + bpp
        return {"loss": loss, "mse": mse, "bpp": bpp, "psnr": psnr_from_mse(mse)}


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1]."""
    return -10 * torch.log10(mse.clamp_min(1e-10))
