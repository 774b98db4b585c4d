"""The model registry: everything about a model in its one entry.

An entry holds the CompressAI class (or ours), how to build it, its channels per rate tier (the
protocol's N and M, read by the config, the complexity table and the analysis), how it is coded to
bytes (codec/models/coding.py), its plot label and style, and its name in CompressAI's zoo where it has one.
Adding a model is one `register(ModelEntry(...))`, one conf/model/<name>.yaml and its tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
from compressai.models import (
    CompressionModel,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)

from codec.errors import ConfigError, LicSweepError
from codec.models.checkerboard import CheckerboardAutoregressive
from codec.models.coding import FactorizedCoding, HyperpriorCoding, LatentCodecCoding, SerialContextCoding

# Entropy-coder tables: their sizes change with update(), so they do not identify an architecture.
CODER_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
# Buffers a model rebuilds itself: the coder tables (update()) and the masked convolutions' masks.
DERIVED_BUFFERS = (*CODER_TABLES, ".mask")


def parameter_shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of everything but the entropy-coder tables: what identifies an architecture."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith(CODER_TABLES)}


def with_derived_buffers(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` completed with the model's own buffers it rebuilds (coder tables, context masks), which a
    file may leave out (pretrained/ does); the file's own values win where it has them."""
    return {**{k: v for k, v in own.items() if k.endswith(DERIVED_BUFFERS)}, **state_dict}


def channels_of(state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(N, M) of a state_dict: g_a's first and last convolutions (the same in every registered model)."""
    return int(state_dict["g_a.0.weight"].shape[0]), int(state_dict["g_a.6.weight"].shape[0])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[CompressionModel]
    # (N, M) per rate tier, as the protocol (and CompressAI's zoo) uses them.
    channels: dict[str, tuple[int, int]]
    coding: Any  # one of codec.models.coding's codings
    label: str
    style: tuple[str, str]  # matplotlib colour and marker
    # `python -m compressai.utils.eval_model -a NAME`, where CompressAI's zoo has the architecture.
    compressai_name: str | None = None
    # Builder taking (N, M, **options); default: cls(N=N, M=M).
    builder: Callable[..., CompressionModel] | None = None

    def build(self, N: int, M: int, **options) -> CompressionModel:
        return self.builder(N=N, M=M, **options) if self.builder else self.cls(N=N, M=M)

    def shapes(self, N: int, M: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every state_dict entry of this model at (N, M), allocating nothing (a file's
        claimed N and M are checked against these before a model of that size is built)."""
        return _shapes_without_memory(self.name, N, M)

    def matches(self, state_dict: dict[str, torch.Tensor]) -> bool:
        """Whether `state_dict` has exactly this architecture's parameters and shapes."""
        try:
            N, M = channels_of(state_dict)
        except (KeyError, AttributeError, IndexError, TypeError):
            return False
        expected = {k: v for k, v in self.shapes(N, M).items() if not k.endswith(CODER_TABLES)}
        return expected == parameter_shapes(state_dict)


@functools.lru_cache(maxsize=64)
def _shapes_without_memory(name: str, N: int, M: int) -> dict[str, tuple[int, ...]]:
    # Fake tensors carry shapes and dtypes but no storage: N=200000 costs what N=8 does.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return {k: tuple(v.shape) for k, v in REGISTRY[name].build(N, M).state_dict().items()}


REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    REGISTRY[entry.name] = entry
    return entry


def registry_entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise ConfigError(f"model={name!r} is not registered; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build_model(name: str, N: int, M: int, **options) -> CompressionModel:
    """The model registered as `name`, with N hidden and M latent channels."""
    return registry_entry(name).build(N, M, **options)


def entry_of(model: torch.nn.Module) -> ModelEntry:
    """The registry entry of a model instance (its exact class)."""
    for entry in REGISTRY.values():
        if type(model) is entry.cls:
            return entry
    raise ConfigError(f"{type(model).__name__} is not a registered model class")


def entry_for_state_dict(state_dict: dict[str, torch.Tensor]) -> ModelEntry:
    """The one registered architecture whose parameters and shapes are those of `state_dict`."""
    found = [e for e in REGISTRY.values() if e.matches(state_dict)]
    if len(found) != 1:
        what = "none" if not found else " and ".join(e.name for e in found)
        raise LicSweepError(f"cannot tell the architecture of this state_dict: it matches {what} of the registered "
                            f"models ({', '.join(REGISTRY)})")
    return found[0]


def model_channels(name: str, rate: str, which: str, channels: dict | None = None) -> int:
    """N or M for the rate tier: from `channels` when the config gives a table, else the registry's."""
    if channels:
        return int(channels[rate][which])
    return registry_entry(name).channels[str(rate)]["NM".index(which)]


register(ModelEntry(
    "factorized", FactorizedPrior, {"low": (128, 192), "high": (192, 320)}, FactorizedCoding(),
    "Factorized prior (Ballé 2018)", ("tab:blue", "o"), compressai_name="bmshj2018-factorized"))
register(ModelEntry(
    "hyperprior", ScaleHyperprior, {"low": (128, 192), "high": (192, 320)}, HyperpriorCoding(),
    "Scale hyperprior (Ballé 2018)", ("tab:orange", "s"), compressai_name="bmshj2018-hyperprior"))
register(ModelEntry(
    "joint_autoregressive", JointAutoregressiveHierarchicalPriors, {"low": (192, 192), "high": (192, 320)},
    SerialContextCoding(), "Joint autoregressive (Minnen 2018)", ("tab:green", "^"), compressai_name="mbt2018"))
register(ModelEntry(
    "checkerboard", CheckerboardAutoregressive, {"low": (192, 192), "high": (192, 320)}, LatentCodecCoding(),
    "Checkerboard context (He 2021)", ("tab:red", "D"),
    builder=lambda N, M, forward_method="twopass", **_: CheckerboardAutoregressive(N, M, forward_method=forward_method)))
register(ModelEntry(
    "mean_scale_hyperprior", MeanScaleHyperprior, {"low": (128, 192), "high": (192, 320)},
    HyperpriorCoding(means=True), "Mean-scale hyperprior (Minnen 2018)", ("tab:purple", "v"),
    compressai_name="mbt2018-mean"))
