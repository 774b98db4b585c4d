"""The model registry: everything about a model in its one entry.

An entry holds the CompressAI class (or ours), how to build it, its channels per rate tier (the
protocol's N and M, read by the config, the complexity table and the analysis), which tensors of a
state_dict carry N and M (how a checkpoint's architecture is recognised), its smallest channels (debug=tiny
and smoke runs), how it is coded to bytes (codec/models/coding.py), its plot label and style, and its name
in CompressAI's zoo where it has one.

Adding a model here is one `register(ModelEntry(...))`, one conf/model/<name>.yaml and its tests. A model
in another installed package needs no change here: that package names its ModelEntry under the entry-point
group `lic_sweep.models` (examples/lic_sweep_example), and carries its epochs and scheduler in the entry
instead of a YAML file; it is registered when this module is first imported, in every process.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable
from unittest import mock

import torch
from compressai.models import (
    Cheng2020Anchor,
    Cheng2020Attention,
    CompressionModel,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.models.sensetime import Cheng2020AnchorCheckerboard, Elic2022Chandelier, Elic2022Official

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


# The state_dict tensors whose first dimension is N and M: g_a's first and last convolutions in Ballé's
# and Minnen's transforms.
G_A_CHANNELS = ("g_a.0.weight", "g_a.6.weight")


def channels_of(state_dict: dict[str, torch.Tensor], keys: tuple[str, str] = G_A_CHANNELS) -> tuple[int, int]:
    """(N, M) of a state_dict: the first dimension of the tensors `keys` names (a registry entry's
    channel_keys)."""
    return int(state_dict[keys[0]].shape[0]), int(state_dict[keys[1]].shape[0])


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
    # Builder taking (N, M, **options); default: cls(N=N, M=M). It raises ValueError for channels the
    # architecture cannot take (the config check names them before any work).
    builder: Callable[..., CompressionModel] | None = None
    # The state_dict tensors whose first dimension is N and M.
    channel_keys: tuple[str, str] = G_A_CHANNELS
    # (N, M) for debug=tiny and smoke runs: the smallest the architecture is built with.
    tiny: tuple[int, int] = (8, 12)
    # The latent has N channels (Cheng 2020): where a channel table (an experiment's, written for models with
    # their own M) gives N and M, this model takes N for both. An explicit model.M other than N is refused.
    m_is_n: bool = False
    # An entry from another package (no conf/model/<name>.yaml): the protocol's epochs and scheduler
    # (a conf/scheduler/ name), from which its `model=<name>` config is made.
    epochs: int | None = None
    scheduler: str | None = None

    def build(self, N: int, M: int, **options) -> CompressionModel:
        return self.builder(N=N, M=M, **options) if self.builder else self.cls(N=N, M=M)

    def channels_of(self, state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(N, M) of a state_dict of this architecture (KeyError where it lacks the channel tensors)."""
        return channels_of(state_dict, self.channel_keys)

    def check_channels(self, N: int, M: int) -> None:
        """ConfigError naming model.N and model.M where this architecture cannot be built with them
        (built without memory: any size costs what the tiny one does)."""
        from torch._subclasses.fake_tensor import DataDependentOutputException, UnsupportedFakeTensorException

        try:
            self.shapes(N, M)
        except (DataDependentOutputException, UnsupportedFakeTensorException) as exc:
            raise ConfigError(f"model={self.name}: its class reads tensor values (or runs an op without shape "
                              f"rules) while it is built ({exc}); lic-sweep checks a model's shapes on fake "
                              "tensors, without memory: compute channel counts with Python ints") from None
        except Exception as exc:  # the builder's ValueError, a class's assert, a layer's own check
            raise ConfigError(f"model={self.name} cannot be built with model.N={N} model.M={M}: "
                              f"{exc or type(exc).__name__}") from None

    def shapes(self, N: int, M: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every state_dict entry of this model at (N, M), allocating nothing (a file's
        claimed N and M are checked against these before a model of that size is built)."""
        key = (self.name, self.cls, N, M)
        if key not in _SHAPES:
            with _fake_tensors():  # shapes, no storage: N=200000 costs what N=8 does
                _SHAPES[key] = {k: tuple(v.shape) for k, v in self.build(N, M).state_dict().items()}
        return _SHAPES[key]

    def matches(self, state_dict: dict[str, torch.Tensor]) -> bool:
        """Whether `state_dict` has exactly this architecture's parameters and shapes."""
        try:
            N, M = self.channels_of(state_dict)
            expected = self.shapes(N, M)
        except Exception:  # not this architecture's tensors, or channels it cannot be built with
            return False
        return {k: v for k, v in expected.items() if not k.endswith(CODER_TABLES)} == parameter_shapes(state_dict)


_SHAPES: dict[tuple, dict[str, tuple[int, ...]]] = {}


_FAKE_LOCK = threading.RLock()  # the ramp's patch below is process-wide: one fake build at a time


@contextlib.contextmanager
def _fake_tensors():
    """Modules built here get fake tensors (shapes, no storage). CompressAI's sequential_channel_ramp (ELIC's
    layers) reads its channel counts out of a tensor, which a fake one cannot give: it runs on real tensors,
    and only its layers are made fake."""
    import compressai.layers
    import compressai.layers.layers
    from compressai.models import sensetime
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    mode = FakeTensorMode(allow_fallback_kernels=False)  # an op without shape rules fails, never allocates
    original = compressai.layers.layers.sequential_channel_ramp

    def ramp(*args, make_layer, **kwargs):
        def fake_layer(*layer_args, **layer_kwargs):
            with mode:
                return make_layer(*layer_args, **layer_kwargs)
        with unset_fake_temporarily():
            return original(*args, make_layer=fake_layer, **kwargs)

    with _FAKE_LOCK, contextlib.ExitStack() as stack:
        for home in (sensetime, compressai.layers, compressai.layers.layers):
            stack.enter_context(mock.patch.object(home, "sequential_channel_ramp", ramp))
        with mode:
            yield


REGISTRY: dict[str, ModelEntry] = {}
# Entries from other packages (the entry-point group), and those that could not be registered, with why.
ENTRY_POINT_GROUP = "lic_sweep.models"
PLUGINS: dict[str, str] = {}  # name -> the entry point's value (package:object)
PLUGIN_ERRORS: dict[str, str] = {}  # name -> why it is not registered


def register(entry: ModelEntry) -> ModelEntry:
    REGISTRY[entry.name] = entry
    return entry


def registry_entry(name: str) -> ModelEntry:
    register_deferred()
    if name in PLUGIN_ERRORS and name not in REGISTRY:
        raise ConfigError(PLUGIN_ERRORS[name])
    if name not in REGISTRY:
        raise ConfigError(f"model={name!r} is not registered; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build_model(name: str, N: int, M: int, **options) -> CompressionModel:
    """The model registered as `name`, with N hidden and M latent channels."""
    return registry_entry(name).build(N, M, **options)


def entry_of(model: torch.nn.Module) -> ModelEntry:
    """The registry entry of a model instance (its exact class)."""
    register_deferred()
    for entry in REGISTRY.values():
        if type(model) is entry.cls:
            return entry
    raise ConfigError(f"{type(model).__name__} is not a registered model class")


def entry_for_state_dict(state_dict: dict[str, torch.Tensor]) -> ModelEntry:
    """The one registered architecture whose parameters and shapes are those of `state_dict`."""
    register_deferred()
    found = [e for e in REGISTRY.values() if e.matches(state_dict)]
    own = [e for e in found if e.name not in PLUGINS]
    if len(found) > 1 and len(own) == 1:  # a package's model with a built-in's parameters (a new loss, say):
        return own[0]                     # a file without model_meta.name is the built-in's
    if len(found) != 1:
        what = "none" if not found else " and ".join(e.name for e in found)
        raise LicSweepError(f"cannot tell the architecture of this state_dict: it matches {what} of the registered "
                            f"models ({', '.join(REGISTRY)})")
    return found[0]


def model_channels(name: str, rate: str, which: str, channels: dict | None = None) -> int:
    """N or M for the rate tier: from `channels` when the config gives a table, else the registry's."""
    if channels:
        return int(channels[rate]["N" if registry_entry(name).m_is_n else which])
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


def _latent_of_n(cls):
    """Cheng 2020's models: the latent has N channels (g_a ends in an N->N convolution), so M must be N."""
    def build(N: int, M: int, **_):
        if M != N:
            raise ValueError(f"{cls.__name__}'s latent has N channels: set model.M={N} (equal to model.N)")
        return cls(N=N)
    return build


def elic_groups(M: int) -> list[int]:
    """ELIC's five channel groups (He 2022: 16, 16, 32, 64, 192 of M=320) scaled to M; CompressAI's own at 320."""
    head = [M * share // 320 for share in (16, 16, 32, 64)]
    if min(head) < 1 or M - sum(head) < 1:
        raise ValueError(f"ELIC's five channel groups need M >= 20 (model.M={M})")
    return [*head, M - sum(head)]


def _elic(cls):
    return lambda N, M, **_: cls(N=N, M=M, groups=elic_groups(M))


CHENG_KEYS = ("g_a.0.conv1.weight", "g_a.6.weight")  # a residual block first, a plain convolution last
ELIC_KEYS = ("g_a.0.weight", "g_a.13.weight")
register(ModelEntry(
    "cheng2020_anchor", Cheng2020Anchor, {"low": (128, 128), "high": (192, 192)}, SerialContextCoding(),
    "Cheng 2020 anchor", ("tab:brown", "P"), compressai_name="cheng2020-anchor",
    builder=_latent_of_n(Cheng2020Anchor), channel_keys=CHENG_KEYS, tiny=(8, 8), m_is_n=True))
register(ModelEntry(
    "cheng2020_attention", Cheng2020Attention, {"low": (128, 128), "high": (192, 192)}, SerialContextCoding(),
    "Cheng 2020 attention", ("tab:pink", "X"), compressai_name="cheng2020-attn",
    builder=_latent_of_n(Cheng2020Attention), channel_keys=("g_a.0.conv1.weight", "g_a.7.weight"), tiny=(8, 8),
    m_is_n=True))
register(ModelEntry(
    "cheng2020_checkerboard", Cheng2020AnchorCheckerboard, {"low": (128, 128), "high": (192, 192)},
    LatentCodecCoding(), "Cheng 2020 anchor + checkerboard (CompressAI)", ("tab:gray", "h"),
    builder=_latent_of_n(Cheng2020AnchorCheckerboard), channel_keys=CHENG_KEYS, tiny=(8, 8), m_is_n=True))
register(ModelEntry(
    "elic", Elic2022Official, {"low": (192, 320), "high": (192, 320)}, LatentCodecCoding(strings=11),
    "ELIC (He 2022)", ("tab:olive", "*"), builder=_elic(Elic2022Official), channel_keys=ELIC_KEYS, tiny=(8, 20)))
register(ModelEntry(
    "elic_chandelier", Elic2022Chandelier, {"low": (192, 320), "high": (192, 320)}, LatentCodecCoding(strings=11),
    "ELIC, Chandelier's context (CompressAI)", ("tab:cyan", "p"), builder=_elic(Elic2022Chandelier),
    channel_keys=ELIC_KEYS, tiny=(8, 20)))

# ---- entries from other installed packages -------------------------------------------------------------

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RATES = ("low", "high")


def check_entry(entry) -> None:
    """ValueError saying what is wrong with an entry from another package, before any work uses it."""
    if not isinstance(entry, ModelEntry):
        raise ValueError(f"it is a {type(entry).__name__}, not a codec.models.registry.ModelEntry")
    if not isinstance(entry.name, str) or not _NAME.fullmatch(entry.name):
        raise ValueError(f"its name {entry.name!r} is not lower-case letters, digits and _ (it names run folders "
                         "and `model=<name>`)")
    if not (isinstance(entry.cls, type) and issubclass(entry.cls, CompressionModel)):
        raise ValueError(f"its cls {entry.cls!r} is not a compressai.models.CompressionModel subclass")
    tiers = entry.channels if isinstance(entry.channels, dict) else {}
    for rate in _RATES:
        nm = tiers.get(rate)
        if not (isinstance(nm, tuple) and len(nm) == 2 and all(type(v) is int and v > 0 for v in nm)):
            raise ValueError(f"its channels[{rate!r}] is {nm!r}, not a (N, M) pair of positive ints")
    missing = [m for m in ("strings", "encode", "decode_latent", "latent_hw", "compressai_shape")
               if not hasattr(entry.coding, m)]
    if missing:
        raise ValueError(f"its coding {entry.coding!r} lacks {', '.join(missing)} (use one of "
                         "codec.models.coding's codings, or subclass one)")
    from codec.records.layout import REPO

    schedulers = sorted(p.stem for p in (REPO / "conf" / "scheduler").glob("*.yaml"))
    if type(entry.epochs) is not int or entry.epochs <= 0 or entry.scheduler not in schedulers:
        raise ValueError(f"it has epochs={entry.epochs!r} scheduler={entry.scheduler!r}; an entry without a "
                         f"conf/model/<name>.yaml gives its protocol epochs (an int) and scheduler (one of "
                         f"{', '.join(schedulers)}: conf/scheduler/)")
    for N, M in (entry.tiny, *tiers.values()):
        entry.check_channels(N, M)
        shapes = entry.shapes(N, M)
        found = tuple(shapes[k][0] if k in shapes else None for k in entry.channel_keys)
        if found != (N, M):
            raise ValueError(f"its channel_keys {entry.channel_keys} give (N, M) = {found} for a model built with "
                             f"N={N} M={M}: name the two state_dict tensors whose first dimension is N and M "
                             "(how its checkpoints are recognised)")
    with _fake_tensors():
        built = entry.build(*entry.tiny)
    if type(built) is not entry.cls:
        raise ValueError(f"its builder makes a {type(built).__name__}, not its cls {entry.cls.__name__}")


_DEFERRED: list = []  # entry points whose module was being imported when this module was


def _load(point, may_defer: bool = False) -> None:
    package = point.dist.name if point.dist else "an installed package"
    where = f"entry point {point.name} = {point.value} (group {ENTRY_POINT_GROUP}, from {package})"
    PLUGIN_ERRORS.pop(point.name, None)
    try:
        entry = point.load()
        check_entry(entry)
        if entry.name != point.name:
            raise ValueError(f"its ModelEntry is named {entry.name!r}; name the entry point as the model")
        if entry.name in REGISTRY:
            owner = PLUGINS.get(entry.name, "lic-sweep's own registry")
            raise ValueError(f"model {entry.name!r} is already registered by {owner}")
    except (Exception, SystemExit) as exc:  # an import error, a wrong object: named, kept for when it is used
        if may_defer and isinstance(exc, (ImportError, AttributeError)) and "partially initialized" in str(exc):
            _DEFERRED.append(point)  # it needs a module that is importing this one: tried again at first lookup
            return
        kind = "" if isinstance(exc, (ValueError, ConfigError)) else f"{type(exc).__name__}: "
        PLUGIN_ERRORS[point.name] = f"model={point.name} cannot be used: {where}: {kind}{exc}"
        if point.name in REGISTRY:  # a clash: lic-sweep's model keeps the name; say so where it is used
            print(f"warning: {PLUGIN_ERRORS[point.name]}; model={point.name} is lic-sweep's own", file=sys.stderr)
        return
    register(entry)
    PLUGINS[entry.name] = point.value


def _register_installed() -> None:
    """Every ModelEntry that an installed package names under the `lic_sweep.models` entry-point group.
    One that cannot be loaded or checked is not registered; using its name raises why (naming it). One whose
    module (or a module it imports) is being imported right now, as when a script imports a package's model
    before lic-sweep, is loaded at the first lookup instead."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = sys.modules.get(point.module)
        if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False):
            _DEFERRED.append(point)
            continue
        _load(point, may_defer=True)


def register_deferred() -> None:
    """Load the entry points deferred at import (their module has finished importing since)."""
    while _DEFERRED:
        _load(_DEFERRED.pop(0))


_register_installed()
