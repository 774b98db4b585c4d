"""The training loop: Adam on the model, Adam on the entropy bottleneck quantiles (aux loss),
per-epoch scheduler, atomic checkpoints, exact resume, NaN stop, optional DDP (torchrun)."""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from codec.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_atomic
from codec.data import CropDataset, epoch_order, split_files
from codec.errors import LicSweepError
from codec.loss import RateDistortionLoss
from codec.models import build_model
from codec.settings import RunSettings
from codec.tracking import Tracker, without_secrets


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


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_setting: str) -> Distributed:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device_setting != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(setting: str, ddp: Distributed) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LicSweepError(f"device={setting} but CUDA is not available; use device=cpu or device=auto")
        if ddp.world_size > 1:
            return torch.device("cuda", ddp.local_rank)
    return torch.device(setting)


def split_parameters(model: torch.nn.Module):
    """(main parameters, entropy bottleneck quantiles), as in CompressAI's examples/train.py."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


def make_scheduler(settings: RunSettings, optimizer):
    s = settings.scheduler
    if s.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s.milestones), gamma=s.gamma)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=s.factor,
                                                      patience=s.patience, min_lr=s.min_lr)


def _collate(batch):
    images = torch.stack([b[0] for b in batch])
    skipped = [line for b in batch if b[1] for line in b[1].split("\n")]
    return images, skipped


class Trainer:
    def __init__(self, settings: RunSettings, run_dir: Path, config: dict[str, Any]):
        self.s, self.run_dir, self.config = settings, Path(run_dir), config
        self.ddp = init_distributed(settings.device)
        self.device = pick_device(settings.device, self.ddp)
        self.ckpt_dir = self.run_dir / "checkpoints"
        d = settings.data
        split = split_files(d.format, d.root, d.val_fraction, d.list_file)
        self.train_set = CropDataset(split.train, d.patch_size, True, d.small_images, settings.seed, d.cache_images)
        self.val_set = CropDataset(split.val, d.patch_size, False, d.small_images, settings.seed, d.cache_images)
        per_rank = len(self.train_set) // self.ddp.world_size
        if per_rank < d.batch_size:
            raise LicSweepError(f"data.batch_size={d.batch_size} is larger than the {per_rank} training "
                                f"images per process in {d.root}; lower data.batch_size")

        torch.manual_seed(settings.seed)
        m = settings.model
        self.memory_format = torch.channels_last if settings.trainer.channels_last else torch.contiguous_format
        self.model = build_model(m.name, m.N, m.M, forward_method=m.forward_method).to(
            self.device, memory_format=self.memory_format)
        main, aux = split_parameters(self.model)
        self.main_params = main
        o = settings.optimizer
        self.optimizer = torch.optim.Adam(main, lr=o.lr, weight_decay=o.weight_decay, fused=o.fused)
        self.aux_optimizer = torch.optim.Adam(aux, lr=o.aux_lr, fused=o.fused)
        self.scheduler = make_scheduler(settings, self.optimizer)
        self.criterion = RateDistortionLoss(settings.lmbda)
        self.net = self.model
        if self.ddp.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            quantiles = [n for n, _ in self.model.named_parameters() if n.endswith(".quantiles")]
            DDP._set_params_and_buffers_to_ignore_for_model(self.model, quantiles)
            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.best_loss, self.wandb_id = math.inf, None
        self.skipped: dict[str, None] = {}
        self._stop_signal = None
        self._resume()

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        path = Path(self.s.resume) if self.s.resume else self.ckpt_dir / "last.pth"
        if not path.exists():
            if self.s.resume:
                raise LicSweepError(f"resume={self.s.resume}: no such checkpoint")
            return
        ckpt = load_checkpoint(path, map_location=self.device)
        if "optimizer" not in ckpt:
            raise LicSweepError(f"{path} is a bare state_dict; it cannot resume training")
        saved = ckpt.get("model_meta", {})
        ours = {"name": self.s.model.name, "N": self.s.model.N, "M": self.s.model.M}
        if saved and saved != ours:
            raise LicSweepError(f"{path} was written for {saved}, not {ours}; use another run directory")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step, self.batch_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]
        self.best_loss, self.wandb_id = ckpt["best_loss"], ckpt.get("wandb_run_id")
        self.skipped = dict.fromkeys(ckpt.get("skipped_files", []))
        restore_rng_state(ckpt["rng"])
        if self.ddp.is_main:
            print(f"resuming from {path}: epoch {self.epoch}, step {self.step}")

    def _checkpoint(self) -> dict:
        return {
            "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "best_loss": self.best_loss, "rng": rng_state(), "config": without_secrets(self.config),
            "wandb_run_id": self.wandb_id, "skipped_files": list(self.skipped),
            "model_meta": {"name": self.s.model.name, "N": self.s.model.N, "M": self.s.model.M},
            "lmbda": self.s.lmbda,
        }

    def save(self, name: str, update_entropy_models: bool = False) -> Path:
        if not self.ddp.is_main:
            return self.ckpt_dir / name
        if update_entropy_models:
            self.model.update(force=True)
        path = self.ckpt_dir / name
        save_atomic(self._checkpoint(), path)
        return path

    # -- loop --------------------------------------------------------------------------------
    def _loader(self, dataset, order, batch_size, drop_last):
        return DataLoader(Subset(dataset, order), batch_size=batch_size, shuffle=False,
                          num_workers=self.s.data.num_workers, drop_last=drop_last, collate_fn=_collate,
                          generator=torch.Generator(), pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def _note_skipped(self, skipped: list[str]) -> None:
        new = [s for s in skipped if s not in self.skipped]
        if new and self.ddp.is_main:
            tqdm.write(f"warning: skipped {len(new)} unusable training file(s): " + "; ".join(new))
        self.skipped.update(dict.fromkeys(new))

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        self.net.train()
        out = self.net(x)
        losses = self.criterion(out, x)
        if not torch.isfinite(losses["loss"]):
            raise NonFiniteLoss(
                f"the loss became {losses['loss'].item()} at step {self.step + 1} (epoch {self.epoch}); "
                f"training stopped. The last good checkpoint stays in {self.ckpt_dir}. Lower optimizer.lr "
                "or set trainer.clip_max_norm.")
        # Every step starts from no gradients at all: a gradient left from the previous step (the aux
        # loss's, on the quantiles) is not in the checkpoint, so a resumed run would not see it.
        self.optimizer.zero_grad(set_to_none=True)
        self.aux_optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.s.trainer.clip_max_norm:
            torch.nn.utils.clip_grad_norm_(self.main_params, self.s.trainer.clip_max_norm)
        self.optimizer.step()

        aux_loss = self.model.aux_loss()
        aux_loss.backward()
        if self.ddp.world_size > 1:  # quantiles are outside DDP: average their gradients by hand
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
        for i, (x, _) in enumerate(self._loader(self.val_set, order, self.s.data.val_batch_size, False)):
            if self.s.trainer.val_batches and i >= self.s.trainer.val_batches:
                break
            x = self._on_device(x)
            losses = self.criterion(self.model(x), x)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item() * x.shape[0]
            count += x.shape[0]
        self._last_val_batch = x
        return {k: v / count for k, v in totals.items()}

    def _val_images(self, n: int) -> list:
        if n <= 0:
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

    def _hand_over_signal(self, previous) -> None:
        """After last.pth is saved: let the job system finish its part of the signal.

        submitit's SIGUSR2 handler (time-out, preemption) requeues the job and exits. A Slurm
        requeue (`scontrol requeue`) or preemption sends SIGTERM and kills the job a little later:
        returning now would let submitit record the job as finished, so wait for the kill; the
        requeued job resumes from last.pth. Outside Slurm, SIGTERM ends the process. SIGUSR1
        (and SIGUSR2 without submitit) only stop this run, which the next command resumes."""
        if callable(previous):
            previous(self._stop_signal, None)
        if self._stop_signal == signal.SIGTERM:
            if os.environ.get("SLURM_JOB_ID"):
                tqdm.write("SIGTERM in a Slurm job: last.pth saved, waiting for Slurm to end and requeue the job")
                while True:
                    time.sleep(60)
            # A plain `kill`: end the process (and a sweep running in it), resumable from last.pth.
            tqdm.write(f"SIGTERM: last.pth saved in {self.ckpt_dir}; rerun the same command to resume")
            raise SystemExit(128 + signal.SIGTERM)

    def _on_signal(self, signum, _frame):
        self._stop_signal = signum

    def fit(self, tracker: Tracker) -> TrainResult:
        t = self.s.trainer
        max_steps = t.max_steps or math.inf
        stopped_by = "epochs"
        last: dict[str, float] = {}
        kill_after = int(os.environ.get("LIC_SWEEP_KILL_AFTER_STEP", "0"))  # fault injection for tests
        every_steps = int(os.environ.get("LIC_SWEEP_CHECKPOINT_EVERY_STEPS", "0"))
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)} \
            if self.ddp.world_size == 1 and _main_thread() else {}
        last_save = time.monotonic()
        try:
            while self.epoch < t.epochs and self.step < max_steps:
                self.train_set.set_epoch(self.epoch)
                bs = self.s.data.batch_size
                order = epoch_order(len(self.train_set), self.s.seed, self.epoch, self.ddp.rank,
                                    self.ddp.world_size, min_length=(t.steps_per_epoch or 0) * bs)
                batches = t.steps_per_epoch or len(order) // bs
                order = order[self.batch_in_epoch * bs: batches * bs]
                bar = tqdm(total=batches, initial=self.batch_in_epoch, disable=not self.ddp.is_main,
                           desc=f"epoch {self.epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True)
                for x, skipped in self._loader(self.train_set, order, bs, True):
                    self._note_skipped(skipped)
                    last = self.train_step(self._on_device(x))
                    self.step += 1
                    self.batch_in_epoch += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", bpp=f"{last['bpp']:.3f}", psnr=f"{last['psnr']:.2f}")
                    if self.step % t.log_every_steps == 0 or self.step == 1:
                        tracker.log({f"train/{k}": v for k, v in last.items()}
                                    | {"train/lr": self.optimizer.param_groups[0]["lr"], "epoch": self.epoch}, step=self.step)
                    minutes = (time.monotonic() - last_save) / 60
                    if (t.checkpoint_every_minutes and minutes >= t.checkpoint_every_minutes) or \
                            (every_steps and self.step % every_steps == 0):
                        self.save("last.pth")
                        last_save = time.monotonic()
                    if kill_after and self.step == kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if self.step >= max_steps or self._stop_signal:
                        break
                bar.close()
                if self._stop_signal:
                    self.save("last.pth")
                    self._hand_over_signal(old_handlers.get(self._stop_signal))
                    stopped_by = f"signal {signal.Signals(self._stop_signal).name}"
                    break
                epoch_done = self.batch_in_epoch >= batches
                val = self.validate()
                if epoch_done:
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        self.scheduler.step(val["loss"])
                    else:
                        self.scheduler.step()
                    self.epoch += 1
                    self.batch_in_epoch = 0
                else:
                    stopped_by = "max_steps"
                tracker.log({f"val/{k}": v for k, v in val.items()}
                            | {"val/lr": self.optimizer.param_groups[0]["lr"], "epoch": self.epoch}, step=self.step)
                tracker.images("val/reconstructions", self._val_images(self.s.logger.log_images), step=self.step)
                if val["loss"] < self.best_loss:
                    self.best_loss = val["loss"]
                    self.save("best.pth", update_entropy_models=True)
                self.save("last.pth", update_entropy_models=True)
                last_save = time.monotonic()
                if self.ddp.is_main:
                    tqdm.write(f"epoch {self.epoch} step {self.step}: val loss {val['loss']:.4f} "
                               f"bpp {val['bpp']:.4f} psnr {val['psnr']:.2f} dB lr {self.optimizer.param_groups[0]['lr']:.2e}")
            if self.step >= max_steps and stopped_by == "epochs":
                stopped_by = "max_steps"
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if self.ddp.world_size > 1:
            self._check_replicas_in_sync()
        if not (self.ckpt_dir / "best.pth").exists():  # e.g. resumed after the budget was reached
            self.save("best.pth", update_entropy_models=True)
        return TrainResult(self.step, self.epoch, self.best_loss, last, list(self.skipped), stopped_by)


def _checksum(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
