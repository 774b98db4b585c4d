"""The resumable training state: TrainState, the random generators' states, and what a training checkpoint
holds beyond the model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codec.errors import LicSweepError
from codec.models.checkpoint import InvalidCheckpoint, _shown, model_checkpoint
from codec.models.registry import parameter_shapes, with_derived_buffers
from codec.records.status import unfinished_run


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


def fine_tune_weights(path: Path, model, m, device) -> tuple[dict, object]:
    """(state_dict, identity) of checkpoint `path` checked for fine-tuning `model` (init_from; model config
    `m`): a file of a finished run, every parameter there with this model's shape, no buffer narrowed below
    what this model's constants need."""
    if not path.is_file():
        raise LicSweepError(f"init_from={path} does not exist" + (
            "; the base checkpoints of pretrained/ are made by `make mini` then `make pretrained` "
            "(README, 'Base checkpoints')" if path.parent.name == "pretrained" else ""))
    unfinished = unfinished_run(path)
    if unfinished:  # e.g. a ladder's anchor that failed: its last.pth is a half-trained model
        source, state = unfinished
        raise LicSweepError(f"init_from={path}: its run ({source}) is {state}, not finished"
                            + (f" (see {source / 'failed.json'})" if state == "failed" else "")
                            + "; fine-tune from a finished run, or copy the checkpoint out of its run directory "
                              "to start from it as it is")
    ckpt, identity = model_checkpoint(path, map_location=device)
    own = model.state_dict()
    weights = with_derived_buffers(own, ckpt["state_dict"])  # pretrained/ leaves the rebuilt buffers out
    theirs, ours = parameter_shapes(weights), parameter_shapes(own)
    wrong = [f"{k} {theirs.get(k, 'missing')} vs {shape}" for k, shape in ours.items() if theirs.get(k) != shape]
    wrong += [f"{k} not in this model" for k in theirs if k not in ours]
    if wrong:
        raise LicSweepError(f"init_from={path}: its weights do not fit model={m.name} N={m.N} M={m.M} "
                            f"({len(wrong)} mismatches, e.g. {'; '.join(wrong[:3])}); use a checkpoint of the "
                            "same model and channels")
    parameters = {name for name, _ in model.named_parameters()}
    narrowed = [k for k, v in weights.items() if k not in parameters and v.is_floating_point()
                and torch.finfo(v.dtype).bits < torch.finfo(own[k].dtype).bits]
    if narrowed:  # e.g. a likelihood bound of 1e-9 stored in float16 is 0: the loss would turn inf
        raise LicSweepError(f"init_from={path}: buffer {narrowed[0]} is stored in {weights[narrowed[0]].dtype} "
                            f"({len(narrowed)} such), which cannot hold this model's constants; export "
                            "parameters only in lower precision (python -m codec.pretrained does)")
    return weights, identity
