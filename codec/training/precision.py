"""Mixed precision for training: the analysis and synthesis transforms (g_a, g_s, h_a, h_s) run under
autocast while the model trains; the entropy models, likelihoods, the context model and the loss stay
in float32 (the transforms' outputs are cast back), so the rate term and the bitstream stay sound.
Validation and evaluation (model.eval()) always run in float32."""

from __future__ import annotations

import functools

import torch

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
TRANSFORMS = ("g_a", "g_s", "h_a", "h_s")


def _in_training(model: torch.nn.Module, training_forward) -> None:
    """Each transform's forward (on the instance: state_dict keys do not change) becomes
    training_forward(eager forward) while the module trains; in eval mode the eager forward runs."""
    for name in TRANSFORMS:
        module = getattr(model, name, None)
        if module is None:
            continue
        eager = module.forward

        @functools.wraps(eager)
        def forward(*args, _eager=eager, _train=training_forward(eager), _module=module, **kwargs):
            return (_train if _module.training else _eager)(*args, **kwargs)

        module.forward = forward


def autocast_transforms(model: torch.nn.Module, precision: str, device_type: str) -> None:
    """The transforms' training forward under autocast, its output cast back to float32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return

    def autocast(inner):
        def run(*args, **kwargs):
            with torch.autocast(device_type, dtype=dtype):
                out = inner(*args, **kwargs)
            return out.float()
        return run

    _in_training(model, autocast)


def compile_transforms(model: torch.nn.Module, enabled: bool) -> None:
    """trainer.compile: the transforms' training forward through torch.compile."""
    if enabled:
        _in_training(model, torch.compile)


def grad_scaler(precision: str, device_type: str) -> torch.amp.GradScaler:
    """A GradScaler for float16 (its small exponent range underflows gradients); inert otherwise."""
    return torch.amp.GradScaler(device_type, enabled=precision == "16")
