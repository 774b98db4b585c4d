"""The training loop: Adam on the model, Adam on the entropy bottleneck quantiles (aux loss), per-epoch
scheduler, NaN stop, optional DDP. `build_trainer` assembles the parts (and resumes); `Trainer.fit` is the
loop; what happens around it (W&B logging, when checkpoints are written, tests' fault injection) are
`Callback`s."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from codec.data.training import CropDataset, epoch_order, loader_workers, split_files
from codec.errors import LicSweepError
from codec.models.checkpoint import model_checkpoint, save_atomic
from codec.models.registry import build_model
from codec.records.secrets import without_secrets
from codec.schema import RunConfig, as_dict
from codec.training.callbacks import Callback
from codec.training.distributed import Distributed, init_distributed, pick_device
from codec.training.loss import RateDistortionLoss
from codec.training.precision import autocast_transforms, compile_transforms, grad_scaler
from codec.training.schedulers import make_scheduler
from codec.training.stopping import StopSignals
from codec.training.state import (TrainState, fine_tune_weights, restore_rng_state, train_state_of,
                                  training_checkpoint)


class NonFiniteLoss(LicSweepError):
    pass


@dataclass
class TrainResult:
    steps: int
    epochs: int
    best_loss: float
    last: dict[str, float]
    skipped_files: list[str] = field(default_factory=list)
    stopped_by: str = "epochs"
    # where this process's time went (the cost estimate's calibration, codec/runs/cost.py): seconds in training
    # steps (data loading included, callbacks not), in validation, how many validations ran and of how many
    # images in all
    step_seconds: float = 0.0
    val_seconds: float = 0.0
    validations: int = 0
    val_images: int = 0


def split_parameters(model: torch.nn.Module):
    """(main parameters, entropy bottleneck quantiles), as in CompressAI's examples/train.py."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


def _collate(batch):
    images = torch.stack([b[0] for b in batch])
    skipped = [line for b in batch if b[1] for line in b[1].split("\n")]
    return images, skipped


class Trainer:
    """The parts of one training run (see build_trainer) and its loop."""

    def __init__(self, config: RunConfig, run_dir: Path, ddp: Distributed, device: torch.device,
                 train_set: CropDataset, val_set: CropDataset, model, optimizer, aux_optimizer, scheduler):
        self.config, self.run_dir, self.ddp, self.device = config, Path(run_dir), ddp, device
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.train_set, self.val_set = train_set, val_set
        self.model, self.optimizer, self.aux_optimizer, self.scheduler = model, optimizer, aux_optimizer, scheduler
        self.main_params, _ = split_parameters(model)
        self.memory_format = memory_format(config, model, device)
        self.criterion = RateDistortionLoss(config.lmbda)
        compile_transforms(model, config.trainer.compile)  # inside the autocast: it compiles the float32 forward
        autocast_transforms(model, config.trainer.precision, device.type)
        self.scaler = grad_scaler(config.trainer.precision, device.type)
        self.workers = loader_workers(config.data.num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world_size)))
        self.net = model
        if ddp.group:
            from torch.nn.parallel import DistributedDataParallel as DDP

            quantiles = [n for n, _ in model.named_parameters() if n.endswith(".quantiles")]
            DDP._set_params_and_buffers_to_ignore_for_model(model, quantiles)
            # No buffer broadcast: the models' buffers are entropy-coder tables derived from the parameters
            # (update(), which only rank 0 runs before its checkpoints, resizes them), not trained state.
            self.net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                           broadcast_buffers=False)
        self.state = TrainState()
        self.callbacks: list[Callback] = []
        self.stop = StopSignals()  # .received: the signal that asked this run to stop, if any
        self._last_val_batch = None
        self.clock = {"step_seconds": 0.0, "val_seconds": 0.0, "validations": 0, "val_images": 0}

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # -- checkpoints -------------------------------------------------------------------------
    def resume(self, path: Path | None = None) -> None:
        """Continue from `path` (default: the run directory's last.pth, if any)."""
        explicit = path is not None
        path = Path(path) if explicit else self.ckpt_dir / "last.pth"
        if not path.exists():
            if explicit:
                raise LicSweepError(f"resume={path}: no such checkpoint")
            return
        ckpt, identity = model_checkpoint(path, map_location=self.device)
        state = train_state_of(ckpt, path)
        saved, ours = {"name": identity.model, "N": identity.N, "M": identity.M}, self._model_meta()
        if saved != ours:
            raise LicSweepError(f"{path} was written for {saved}, not {ours}; use another run directory")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        self.state = state
        if self.ddp.is_main:
            print(f"resuming from {path}: epoch {state.epoch}, step {state.step}")

    def init_weights(self, path: Path) -> None:
        """The model's weights from another checkpoint (fine-tuning, e.g. a lambda ladder); optimizers,
        scheduler and step count stay fresh. Every parameter must be there with this model's shape, and a
        checkpoint inside a run directory must be of a finished run."""
        weights, identity = fine_tune_weights(path, self.model, self.config.model, self.device)
        self.model.load_state_dict(weights)
        if self.ddp.is_main:
            print(f"initialised the weights from {path} ({identity.model}, lambda {identity.lmbda or '?'}); "
                  "optimizers and schedule start fresh")

    def _model_meta(self) -> dict:
        m = self.config.model
        return {"name": m.name, "N": m.N, "M": m.M}

    def save(self, name: str, update_entropy_models: bool = False) -> Path:
        path = self.ckpt_dir / name
        if not self.ddp.is_main:
            return path
        if update_entropy_models:
            self.model.update(force=True)
        ckpt = training_checkpoint(self.state, self.model, self.optimizer, self.aux_optimizer, self.scheduler,
                                   without_secrets(as_dict(self.config)), self._model_meta(), self.config.lmbda)
        if self.scaler.is_enabled():  # trainer.precision=16: the loss scale goes on where it was
            ckpt["scaler"] = self.scaler.state_dict()
        save_atomic(ckpt, path)
        return path

    # -- steps -------------------------------------------------------------------------------
    def _loader(self, dataset, order, batch_size, drop_last):
        return DataLoader(Subset(dataset, order), batch_size=batch_size, shuffle=False,
                          num_workers=self.workers, drop_last=drop_last, collate_fn=_collate,
                          generator=torch.Generator(), pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def _note_skipped(self, skipped: list[str]) -> None:
        new = [s for s in skipped if s not in self.state.skipped_files]
        if new and self.ddp.is_main:
            tqdm.write(f"warning: skipped {len(new)} unusable training file(s): " + "; ".join(new))
        self.state.skipped_files.extend(new)

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        self.net.train()
        out = self.net(x)
        losses = self.criterion(out, x)
        if not torch.isfinite(losses["loss"]):
            raise NonFiniteLoss(
                f"the loss became {losses['loss'].item()} at step {self.state.step + 1} (epoch {self.state.epoch}); "
                f"training stopped. The last good checkpoint stays in {self.ckpt_dir}. Lower optimizer.lr "
                "or set trainer.clip_max_norm.")
        # Every step starts from no gradients at all: a gradient left from the previous step (the aux
        # loss's, on the quantiles) is not in the checkpoint, so a resumed run would not see it.
        self.optimizer.zero_grad(set_to_none=True)
        self.aux_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if self.config.trainer.clip_max_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.main_params, self.config.trainer.clip_max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

        aux_loss = self.model.aux_loss()
        aux_loss.backward()
        if self.ddp.group:  # quantiles are outside DDP: average their gradients by hand
            for group in self.aux_optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= self.ddp.world_size
        self.aux_optimizer.step()
        return {k: v.item() for k, v in losses.items()} | {"aux_loss": aux_loss.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        order = list(range(len(self.val_set)))
        for i, (x, _) in enumerate(self._loader(self.val_set, order, self.config.data.val_batch_size, False)):
            if self.config.trainer.val_batches and i >= self.config.trainer.val_batches:
                break
            x = self._on_device(x)
            losses = self.criterion(self.model(x), x)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item() * x.shape[0]
            count += x.shape[0]
            self._last_val_batch = x
        self.clock["val_images"] += count
        return {k: v / count for k, v in totals.items()}

    def val_images(self, n: int) -> list:
        if n <= 0 or self._last_val_batch is None:
            return []
        x = self._last_val_batch[:n]
        with torch.no_grad():
            x_hat = self.model(x)["x_hat"].clamp(0, 1)
        pairs = torch.cat([x, x_hat], dim=3).cpu()
        return [(p.permute(1, 2, 0).numpy(), "original | reconstruction") for p in pairs]

    def _check_replicas_in_sync(self) -> None:
        """Every rank must hold the same weights (DDP averages gradients; the quantiles by hand)."""
        mine = _checksum(self.model).to(self.device)
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        if not torch.allclose(mine, reference, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"rank {self.ddp.rank}: weights differ from rank 0 after training")

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, callbacks: list[Callback] = ()) -> TrainResult:
        self.callbacks = [*callbacks]
        t, state, bs = self.config.trainer, self.state, self.config.data.batch_size
        max_steps = t.max_steps or math.inf
        stopped_by, last = "epochs", {}
        with self.stop:
            while state.epoch < t.epochs and state.step < max_steps:
                self.train_set.set_epoch(state.epoch)
                order = epoch_order(len(self.train_set), self.config.seed, state.epoch, self.ddp.rank,
                                    self.ddp.world_size, min_length=(t.steps_per_epoch or 0) * bs)
                batches = t.steps_per_epoch or len(order) // bs
                order = order[state.batch_in_epoch * bs: batches * bs]
                bar = tqdm(total=batches, initial=state.batch_in_epoch, disable=not self.ddp.is_main,
                           desc=f"epoch {state.epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True)
                tick = time.perf_counter()
                for x, skipped in self._loader(self.train_set, order, bs, True):
                    self._note_skipped(skipped)
                    last = self.train_step(self._on_device(x))
                    self.clock["step_seconds"] += time.perf_counter() - tick
                    state.step += 1
                    state.batch_in_epoch += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", bpp=f"{last['bpp']:.3f}", psnr=f"{last['psnr']:.2f}")
                    for callback in self.callbacks:
                        callback.on_step_end(self, last)
                    if state.step >= max_steps or self.stop.agreed(self.ddp.group, self.device):
                        break
                    tick = time.perf_counter()
                bar.close()
                if self.stop.received:
                    self.save("last.pth")
                    self.stop.hand_over(self.ckpt_dir)
                    stopped_by = f"signal {self.stop.name}"
                    break
                if state.batch_in_epoch < batches:  # the step budget ended mid-epoch
                    stopped_by = "max_steps"
                self._end_epoch(finished=state.batch_in_epoch >= batches)
            if state.step >= max_steps and stopped_by == "epochs":
                stopped_by = "max_steps"
        if self.ddp.group:
            self._check_replicas_in_sync()
        if not (self.ckpt_dir / "best.pth").exists():  # e.g. resumed after the budget was reached
            self.save("best.pth", update_entropy_models=True)
        return TrainResult(state.step, state.epoch, state.best_loss, last, list(state.skipped_files), stopped_by,
                           **self.clock)

    def _end_epoch(self, finished: bool) -> None:
        """Validate; for a finished epoch step the scheduler and count it; then the callbacks (logging,
        checkpoints) see the state a resumed run starts from."""
        tick = time.perf_counter()
        val = self.validate()
        self.clock["val_seconds"] += time.perf_counter() - tick
        self.clock["validations"] += 1
        if finished:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val["loss"])
            else:
                self.scheduler.step()
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
        for callback in self.callbacks:
            callback.on_epoch_end(self, val)
        if self.ddp.is_main:
            tqdm.write(f"epoch {self.state.epoch} step {self.state.step}: val loss {val['loss']:.4f} "
                       f"bpp {val['bpp']:.4f} psnr {val['psnr']:.2f} dB lr {self.lr:.2e}")


def build_trainer(config: RunConfig, run_dir: Path) -> Trainer:
    """The data, model, optimizers and scheduler of a run, resumed from its last checkpoint if it has one."""
    ddp = init_distributed(config.device)
    device = pick_device(config.device, ddp)
    d = config.data
    split = split_files(d.format, d.root, d.val_fraction, d.list_file)
    train_set = CropDataset(split.train, d.patch_size, True, d.small_images, config.seed, d.cache_images)
    val_set = CropDataset(split.val, d.patch_size, False, d.small_images, config.seed, d.cache_images)
    per_rank = len(train_set) // ddp.world_size
    if per_rank < d.batch_size:
        raise LicSweepError(f"data.batch_size={d.batch_size} is larger than the {per_rank} training "
                            f"images per process in {d.root}; lower data.batch_size")
    torch.manual_seed(config.seed)
    m, o = config.model, config.optimizer
    model = build_model(m.name, m.N, m.M, forward_method=m.forward_method)
    model = model.to(device, memory_format=memory_format(config, model, device))
    main, aux = split_parameters(model)
    optimizer = torch.optim.Adam(main, lr=o.lr, weight_decay=o.weight_decay, fused=o.fused)
    aux_optimizer = torch.optim.Adam(aux, lr=o.aux_lr, fused=o.fused)
    trainer = Trainer(config, run_dir, ddp, device, train_set, val_set, model, optimizer, aux_optimizer,
                      make_scheduler(config.scheduler, optimizer))
    resume = Path(config.resume) if config.resume else None
    if config.init_from and not (resume or trainer.ckpt_dir / "last.pth").exists():
        trainer.init_weights(Path(config.init_from))
    trainer.resume(resume)
    return trainer


def memory_format(config: RunConfig, model: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """Channels-last (NHWC) for the model and batches while training, when trainer.channels_last; on the CPU
    not for a model with a strided 1x1 convolution from fewer than 16 channels (the shortcut of Cheng 2020's
    first residual block): PyTorch 2.14's CPU backward of such a convolution in channels-last crashes the
    process with a segmentation fault, at 3 to 12 input channels, on 1 or 2 threads (2026-12-02, this
    project's 2-core EPYC)."""
    if not config.trainer.channels_last:
        return torch.contiguous_format
    if device.type == "cpu" and any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                                    and m.in_channels < 16 for m in model.modules()):
        return torch.contiguous_format
    return torch.channels_last


def _checksum(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()

