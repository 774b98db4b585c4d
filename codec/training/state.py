"""The resumable training state: TrainState, the random generators' states, and what a training checkpoint
holds beyond the model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codec.errors import LicSweepError
from codec.models.checkpoint import InvalidCheckpoint, _shown


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
    values = {f.name: ckpt[f.name] for f in dataclasses.fields(TrainState) if f.name in ckpt}
    kinds = {"epoch": int, "step": int, "batch_in_epoch": int, "best_loss": (int, float),
             "wandb_run_id": (str, type(None)), "skipped_files": list}
    for name, value in values.items():
        if not isinstance(value, kinds[name]) or isinstance(value, bool) or (kinds[name] is int and value < 0) \
                or (name == "skipped_files" and not all(isinstance(v, str) for v in value)):
            raise InvalidCheckpoint(f"checkpoint {path} refused: field {name} is {_shown(value)}, not what "
                                    "training records there")
    return TrainState(**values)
