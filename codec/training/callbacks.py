"""The training loop's callbacks: logging to the run's tracker, and when to checkpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codec.training.trainer import Trainer


class Callback:
    """Hooks around the training loop; each does nothing unless overridden."""

    def on_step_end(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", val: dict[str, float]) -> None:
        """After validation and the scheduler step; trainer.state.epoch counts the finished epoch."""


def callbacks_from_config(paths: list[str]) -> list[Callback]:
    """trainer.callbacks: each "package.module:Class" imported and built; a wrong entry stops the run
    before any work, naming it."""
    import importlib

    from codec.errors import ConfigError

    built = []
    for path in paths:
        module, _, name = str(path).partition(":")
        try:
            cls = getattr(importlib.import_module(module), name) if module and name else None
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"trainer.callbacks: cannot import {path!r} ({type(exc).__name__}: {exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise ConfigError(f"trainer.callbacks: {path!r} is not \"package.module:Class\" naming a subclass of "
                              "codec.training.callbacks.Callback")
        built.append(cls())
    return built


class TrackerLogging(Callback):
    """Train metrics every trainer.log_every_steps, validation metrics and reconstructions every epoch."""

    def __init__(self, tracker):  # codec.runs.tracking.Tracker, or anything with its log() and images()
        self.tracker = tracker

    def on_step_end(self, trainer, metrics):
        state = trainer.state
        if state.step % trainer.config.trainer.log_every_steps == 0 or state.step == 1:
            self.tracker.log({f"train/{k}": v for k, v in metrics.items()} | {"train/lr": trainer.lr,
                                                                               "epoch": state.epoch}, step=state.step)

    def on_epoch_end(self, trainer, val):
        step = trainer.state.step
        self.tracker.log({f"val/{k}": v for k, v in val.items()} | {"val/lr": trainer.lr, "epoch": trainer.state.epoch},
                         step=step)
        self.tracker.images("val/reconstructions", trainer.val_images(trainer.config.logger.log_images), step=step)


class CheckpointPolicy(Callback):
    """last.pth after every epoch, every trainer.checkpoint_every_minutes and every
    trainer.checkpoint_every_steps; best.pth when the validation loss improves. Entropy models are
    updated before an epoch's checkpoints, so best.pth and the final last.pth code real bitstreams."""

    def __init__(self):
        self.last_save = time.monotonic()

    def on_step_end(self, trainer, metrics):
        t = trainer.config.trainer
        minutes = (time.monotonic() - self.last_save) / 60
        if (t.checkpoint_every_minutes and minutes >= t.checkpoint_every_minutes) or \
                (t.checkpoint_every_steps and trainer.state.step % t.checkpoint_every_steps == 0):
            trainer.save("last.pth")
            self.last_save = time.monotonic()

    def on_epoch_end(self, trainer, val):
        if val["loss"] < trainer.state.best_loss:
            trainer.state.best_loss = val["loss"]
            trainer.save("best.pth", update_entropy_models=True)
        trainer.save("last.pth", update_entropy_models=True)
        self.last_save = time.monotonic()
