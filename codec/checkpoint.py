"""Checkpoints: the resumable training state (`TrainState` and what `training_checkpoint` adds to it),
written atomically so that a kill at any moment leaves the previous file readable, and loaded without
unpickling anything but tensors, numbers, strings and containers."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import torch

from codec.errors import LicSweepError


class UnsafeCheckpoint(LicSweepError):
    """A checkpoint file that would need arbitrary unpickling (and could run code) to load."""


class CannotWrite(LicSweepError):
    """A file could not be written (disk full, no permission): the previous version is untouched."""


def _write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`. A kill leaves the
    previous file; a failed write (ENOSPC, EACCES, ...) too, and raises CannotWrite naming the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__ or exc.__context__
        if not isinstance(cause, OSError):  # torch.save wraps the file's OSError; anything else is a bug
            raise
        code = errno.errorcode.get(cause.errno, "")
        kept = f"the previous {path.name} is unchanged; " if path.exists() else ""
        raise CannotWrite(f"cannot write {path}: {cause.strerror or cause}{f' ({code})' if code else ''}; {kept}"
                          "free disk space or fix the folder's permissions, then rerun the same command to "
                          "resume") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def save_atomic(obj: Any, path: str | Path) -> None:
    _write_atomic(path, lambda f: torch.save(obj, f))


def write_json_atomic(obj: Any, path: str | Path) -> None:
    write_text_atomic(json.dumps(obj, indent=2), path)


def write_text_atomic(text: str, path: str | Path) -> None:
    _write_atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint dict; plain state_dicts (CompressAI's tools write those) come back as
    {"state_dict": ...}."""
    path = Path(path)
    if not path.is_file():
        raise LicSweepError(f"checkpoint {path} does not exist")
    try:
        # weights_only: tensors, numbers, strings and containers only. A pickle that names any other
        # Python object (which is how a checkpoint can run code when it is loaded) is refused unread.
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
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


def rng_state() -> dict:
    import random

    import numpy as np

    # numpy's key array as a tensor: the checkpoint then loads with torch.load(weights_only=True),
    # as CompressAI's eval_model and update_model load files
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                       cached), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """Where training stands: with the weights, optimizers, scheduler and RNG states (all in the
    checkpoint), everything a resumed run needs to continue exactly as an uninterrupted one."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    best_loss: float = math.inf
    wandb_run_id: str | None = None
    skipped_files: list[str] = field(default_factory=list)


def training_checkpoint(state: TrainState, model, optimizer, aux_optimizer, scheduler, config: dict,
                        model_meta: dict, lmbda: float) -> dict:
    """The checkpoint dict: the model's state_dict under "state_dict" (CompressAI's tools read it), the
    optimizers, scheduler, RNG states and the TrainState fields at top level."""
    return {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "aux_optimizer": aux_optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
            "config": config, "model_meta": model_meta, "lmbda": lmbda, **dataclasses.asdict(state)}


def train_state_of(ckpt: dict, path: Path) -> TrainState:
    if "optimizer" not in ckpt:
        raise LicSweepError(f"{path} is a bare state_dict; it cannot resume training")
    # every field has a default: a checkpoint written before a field existed still resumes
    return TrainState(**{f.name: ckpt[f.name] for f in dataclasses.fields(TrainState) if f.name in ckpt})
