"""Mixed precision for training: the analysis and synthesis transforms (g_a, g_s, h_a, h_s) run under
autocast while the model trains; the entropy models, likelihoods, the context model and the loss stay
in float32 (the transforms' outputs are cast back), so the rate term and the bitstream stay sound.
Validation and evaluation (model.eval()) always run in float32."""

from __future__ import annotations

import functools

import torch

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
TRANSFORMS = ("g_a", "g_s", "h_a", "h_s")


def autocast_transforms(model: torch.nn.Module, precision: str, device_type: str) -> None:
    """Wrap the transforms' forward (on the instances: state_dict keys do not change) in autocast,
    active only in training mode."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return
    for name in TRANSFORMS:
        module = getattr(model, name, None)
        if module is None:
            continue

        @functools.wraps(module.forward)
        def forward(*args, _inner=module.forward, _module=module, **kwargs):
            if not _module.training:
                return _inner(*args, **kwargs)
            with torch.autocast(device_type, dtype=dtype):
                out = _inner(*args, **kwargs)
            return out.float()

        module.forward = forward


def compile_transforms(model: torch.nn.Module, enabled: bool) -> None:
    """trainer.compile: the transforms' forward through torch.compile while training (on the instances:
    state_dict keys do not change); in eval mode the eager forward runs."""
    if not enabled:
        return
    for name in TRANSFORMS:
        module = getattr(model, name, None)
        if module is None:
            continue
        compiled = torch.compile(module.forward)

        @functools.wraps(module.forward)
        def forward(*args, _eager=module.forward, _compiled=compiled, _module=module, **kwargs):
            return (_compiled if _module.training else _eager)(*args, **kwargs)

        module.forward = forward


def grad_scaler(precision: str, device_type: str) -> torch.amp.GradScaler:
    """A GradScaler for float16 (its small exponent range underflows gradients); inert otherwise."""
    return torch.amp.GradScaler(device_type, enabled=precision == "16")
