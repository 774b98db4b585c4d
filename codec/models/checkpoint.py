"""Model checkpoints: saved atomically, loaded without unpickling anything but tensors, numbers, strings
and containers, and checked (model_checkpoint: what the file claims to be, before any of it is used);
load_model builds the registered model a checkpoint holds. The training state a checkpoint also holds is
codec.training.state's."""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codec.errors import LicSweepError
from codec.models.registry import registry_entry, with_derived_buffers
from codec.records.files import _write_atomic


class UnsafeCheckpoint(LicSweepError):
    """A checkpoint file that would need arbitrary unpickling (and could run code) to load."""


def save_atomic(obj: Any, path: str | Path) -> None:
    _write_atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint dict; plain state_dicts (CompressAI's tools write those) come back as
    {"state_dict": ...}."""
    path = Path(path)
    if not path.is_file():
        raise LicSweepError(f"checkpoint {path} does not exist")
    try:
        # weights_only: tensors, numbers, strings and containers only. A pickle that names any other
        # Python object (which is how a checkpoint can run code when it is loaded) is refused unread.
        with warnings.catch_warnings():  # a plain pickle's protocol is reported below, not as torch's warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")  # refused below
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        if not detail and (asked := _objects_asked_for(path)):  # a plain pickle that torch's reader stops early
            detail = f"it asks for {', '.join(asked[:3])}"
        if not detail:  # not a pickle that asks for code, just not a readable checkpoint
            lines = [line for line in str(exc).splitlines()[2:] if line.strip() and "documentation" not in line]
            raise LicSweepError(f"checkpoint {path} cannot be read: not a checkpoint that loads with only tensors, "
                                f"numbers and strings ({'; '.join(lines) or 'unpickling failed'})") from None
        raise UnsafeCheckpoint(
            f"checkpoint {path} refused: loading it would unpickle arbitrary Python objects, which can run "
            f"code on this machine ({detail}). lic-sweep and CompressAI "
            "checkpoints hold only tensors, numbers and strings; re-save the state_dict from a trusted "
            "source") from None
    except Exception as exc:
        raise LicSweepError(f"checkpoint {path} cannot be read: {exc}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise LicSweepError(f"checkpoint {path} holds neither a state_dict nor a lic-sweep checkpoint")


class InvalidCheckpoint(LicSweepError):
    """A checkpoint whose recorded identity or tensors are not what a model of the registry has."""


# W&B run ids: its own are 8 lowercase letters and digits, ours 12 hex digits; wandb forbids / \ # ? % :
# and uses the id in folder names, so nothing but these characters may come from a file.
WANDB_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Trained entropy bottlenecks have quantiles within a few tens; CompressAI's update() builds a table as
# wide as their range.
MAX_QUANTILE = 1e4


def valid_run_id(value: Any) -> bool:
    return isinstance(value, str) and WANDB_RUN_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class CheckpointIdentity:
    """What a checkpoint says it is, checked: the only values of a file that may name a folder (the model
    is a registry name, lambda a finite positive number) or a W&B run (its id in wandb's characters)."""

    model: str
    N: int
    M: int
    lmbda: float | None
    wandb_run_id: str | None


def model_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, CheckpointIdentity]:
    """A checkpoint (load_checkpoint) whose identity and tensors are checked before any model is built
    from it: every tensor holds the data its shape declares, has the shape the registry's model makes for
    the recorded N and M (found without allocating that model), and is finite. Each refusal names the
    file and the field or tensor."""
    path = Path(path)
    ckpt = load_checkpoint(path, map_location)
    state_dict = ckpt["state_dict"]

    def refuse(what: str) -> InvalidCheckpoint:
        return InvalidCheckpoint(f"checkpoint {path} refused: {what}")

    if not isinstance(state_dict, dict) or not state_dict:
        raise refuse(f"its state_dict is a {type(state_dict).__name__} with nothing a model can load")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise refuse(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided or value.device.type == "meta" or value.is_complex() or value.is_quantized:
            raise refuse(f"tensor {key} is a {value.layout} {value.dtype} tensor on {value.device.type}; a model's "
                         "weights are dense real tensors")
        # A view can declare any size over a tiny storage (zeros(1).expand(200000, 3, 5, 5)): a model of
        # that size would then be built. A saved parameter always has its own values.
        if value.numel() and value.untyped_storage().nbytes() < value.numel() * value.element_size():
            raise refuse(f"tensor {key} declares shape {tuple(value.shape)} ({value.numel()} values) but the file "
                         f"holds {value.untyped_storage().nbytes() // value.element_size()} for it")
        if any(stride == 0 and size > 1 for stride, size in zip(value.stride(), value.shape)):
            raise refuse(f"tensor {key} repeats its values (a broadcast view, stride 0 along a dimension of "
                         "size > 1); a saved weight has its own values")
    storages = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in state_dict.values()}
    declared = sum(v.numel() * v.element_size() for v in state_dict.values())
    if declared > sum(storages.values()):  # views that overlap each other: more values than the file holds
        raise refuse(f"its tensors declare {declared:,} bytes of values but the file holds {sum(storages.values()):,}")
    meta = ckpt.get("model_meta")
    if meta is not None and not isinstance(meta, dict):
        raise refuse(f"field model_meta is a {type(meta).__name__}, not a record of model name, N and M")
    from codec.models.registry import CODER_TABLES, PLUGIN_ERRORS, REGISTRY, entry_for_state_dict

    meta = meta or {}
    name = meta.get("name")
    if isinstance(name, str) and name in PLUGIN_ERRORS and name not in REGISTRY:
        raise refuse(f"field model_meta.name is {name!r}: {PLUGIN_ERRORS[name]}")
    if name is not None and (not isinstance(name, str) or name not in REGISTRY):
        raise refuse(f"field model_meta.name is {_shown(name)}, not a registered model ({', '.join(REGISTRY)})")
    if name is None and not any(set(e.channel_keys) <= set(state_dict) for e in REGISTRY.values()):
        raise refuse("its state_dict has none of the registered models' analysis transforms (g_a.0.weight and "
                     "g_a.6.weight, or an entry's own channel_keys)")
    entry = REGISTRY[name] if name else entry_for_state_dict(state_dict)
    try:
        N, M = entry.channels_of(state_dict)
    except (KeyError, IndexError):
        raise refuse(f"its state_dict has no {' and '.join(entry.channel_keys)} (the tensors that give "
                     f"{entry.name}'s N and M)") from None
    for key, derived in (("N", N), ("M", M)):
        recorded = meta.get(key, derived)
        if type(recorded) is not int or recorded != derived:
            raise refuse(f"field model_meta.{key} is {_shown(recorded)}, but its tensors have {key}={derived}")
    try:
        entry.check_channels(N, M)
    except Exception as exc:
        raise refuse(str(exc)) from None
    expected = entry.shapes(N, M)
    wrong = [f"{k} {tuple(v.shape)} where {entry.name} N={N} M={M} has {expected[k]}" for k, v in state_dict.items()
             if k in expected and not k.endswith(CODER_TABLES) and tuple(v.shape) != expected[k]]
    wrong += [f"{k} is not a tensor of {entry.name}" for k in state_dict if k not in expected]
    wrong += [f"{k} has {v.dim()} dimensions (entropy-coder tables have at most 2)" for k, v in state_dict.items()
              if k.endswith(CODER_TABLES) and v.dim() > 2]
    if wrong:
        raise refuse(f"{wrong[0]}" + (f" ({len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise refuse(f"tensor {key} holds {bad} non-finite value(s) (inf or NaN); a model with them cannot be "
                         "entropy-coded. Use an earlier checkpoint of the run")
        # The entropy bottleneck's coder table spans its quantiles: wider ones overflow int32 in update()
        if key.endswith("quantiles") and value.numel() and float(value.abs().max()) > MAX_QUANTILE:
            raise refuse(f"tensor {key} reaches {float(value.abs().max()):.3g}; an entropy bottleneck's quantiles "
                         f"lie within +-{MAX_QUANTILE:g} (its coder table would not fit)")
    lmbda = ckpt.get("lmbda")
    if lmbda is not None:
        try:
            number = float(lmbda) if isinstance(lmbda, (int, float)) and not isinstance(lmbda, bool) else math.nan
        except OverflowError:  # an int of 400 digits
            number = math.inf
        if not math.isfinite(number) or number <= 0:
            raise refuse(f"field lmbda is {_shown(lmbda)}; it must be a finite positive number")
        lmbda = number
    run_id = ckpt.get("wandb_run_id")
    if run_id is not None and not valid_run_id(run_id):
        raise refuse(f"field wandb_run_id is {_shown(run_id)}; W&B run ids are 1 to 64 letters, digits, _ or -")
    return ckpt, CheckpointIdentity(entry.name, N, M, lmbda, run_id)


def _shown(value: Any) -> str:
    """A value from a file, for a message: its type and a short, one-line repr."""
    text = repr(value)
    return f"{text[:60] + '...' if len(text) > 60 else text} (a {type(value).__name__})"


# What torch.save itself asks a pickle for: anything else in a plain pickle is an object to be built.
_TORCH_SAVE_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset")


def _objects_asked_for(path: Path, limit: int = 64 << 20) -> list[str]:
    """The Python objects (module.name) a plain pickle file would import to load, read with pickletools
    (which builds nothing): torch's own reader stops at the first opcode it does not know (a raw pickle of
    protocol 4 or 0) before it says what the file asks for. torch.save's own objects are left out."""
    import pickletools

    asked: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    try:
        if path.stat().st_size > limit:
            return []
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                               "BINSTRING", "STRING"):
                    strings.append(str(arg))
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(int(arg)), str):
                    strings.append(memo[int(arg)])
                elif op.name in ("GLOBAL", "INST"):
                    asked.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    asked.append(f"{strings[-2]}.{strings[-1]}")
                if op.name == "STOP":
                    break
    except Exception:  # not a pickle at all: the caller says the file cannot be read
        pass
    return [a for a in dict.fromkeys(asked) if not a.startswith(_TORCH_SAVE_GLOBALS)]


def load_model(path: str | Path):
    """(model, checkpoint dict) from our checkpoint or a CompressAI state_dict; the architecture is the
    checkpoint's own record, else the one registered model whose parameters have these names and shapes.
    Everything the file claims is checked first (codec.models.checkpoint.model_checkpoint)."""
    model, ckpt, _ = checked_model(path)
    return model, ckpt


def checked_model(path: str | Path):
    ckpt, identity = model_checkpoint(path)
    entry = registry_entry(identity.model)
    try:
        model = entry.build(identity.N, identity.M)
        model.load_state_dict(with_derived_buffers(model.state_dict(), ckpt["state_dict"]))
    except (KeyError, RuntimeError) as exc:
        raise LicSweepError(f"checkpoint {path} does not load into {entry.cls.__name__}: {exc}") from None
    return model, ckpt, identity


def checkpoint_identity(path: str | Path) -> CheckpointIdentity:
    """What a checkpoint records or its state_dict shows (model, N, M, lambda or None), checked."""
    return model_checkpoint(path)[1]
