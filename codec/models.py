"""Model registry: config names -> CompressAI model builders."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from compressai.models import (
    CompressionModel,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    ScaleHyperprior,
)

from codec.checkerboard import CheckerboardAutoregressive
from codec.errors import ConfigError

MODEL_CLASSES: dict[str, type[CompressionModel]] = {}
_BUILDERS: dict[str, Callable[..., CompressionModel]] = {}


def register_model(name: str, cls: type[CompressionModel]):
    def decorator(builder: Callable[..., CompressionModel]):
        MODEL_CLASSES[name] = cls
        _BUILDERS[name] = builder
        return builder

    return decorator


@register_model("factorized", FactorizedPrior)
def _factorized(N: int, M: int, **_) -> CompressionModel:
    return FactorizedPrior(N, M)


@register_model("hyperprior", ScaleHyperprior)
def _hyperprior(N: int, M: int, **_) -> CompressionModel:
    return ScaleHyperprior(N, M)


@register_model("joint_autoregressive", JointAutoregressiveHierarchicalPriors)
def _joint_autoregressive(N: int, M: int, **_) -> CompressionModel:
    return JointAutoregressiveHierarchicalPriors(N, M)


@register_model("checkerboard", CheckerboardAutoregressive)
def _checkerboard(N: int, M: int, forward_method: str = "twopass", **_) -> CompressionModel:
    return CheckerboardAutoregressive(N, M, forward_method=forward_method)


def build_model(name: str, N: int, M: int, **options) -> CompressionModel:
    """The model registered as `name`, with N hidden and M latent channels."""
    if name not in _BUILDERS:
        raise ConfigError(f"model={name!r} is not registered; choose one of: {', '.join(_BUILDERS)}")
    return _BUILDERS[name](N=N, M=M, **options)


def model_name_of(model: nn.Module) -> str:
    """The registry name of a model instance (the most specific registered class)."""
    for name, cls in MODEL_CLASSES.items():
        if type(model) is cls:
            return name
    raise ConfigError(f"{type(model).__name__} is not a registered model class")
