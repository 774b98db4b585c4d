"""Learning-rate schedulers by name (scheduler.name): torch's own classes, each with the config keys it
takes (named as torch names its arguments). Stepped once per epoch; ReduceLROnPlateau on the validation loss."""

from __future__ import annotations

from typing import Any

import torch

SCHEDULERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "multistep": (torch.optim.lr_scheduler.MultiStepLR, ("milestones", "gamma")),
    "plateau": (torch.optim.lr_scheduler.ReduceLROnPlateau, ("factor", "patience", "min_lr")),
}


def scheduler_settings(s) -> dict[str, Any]:
    """The arguments scheduler config `s` gives its class."""
    _, keys = SCHEDULERS[str(s.name)]
    return {k: list(getattr(s, k)) if k == "milestones" else getattr(s, k) for k in keys}


def make_scheduler(s, optimizer):
    cls, _ = SCHEDULERS[str(s.name)]
    return cls(optimizer, **scheduler_settings(s))
