"""Typed, validated run settings, built from the resolved config (a plain dict).

Validation happens here, before any work, so a bad value fails with a message that names the
setting and what would be valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from codec.errors import ConfigError
from codec.rate import RATE_TIERS, rate_tier

MODEL_NAMES = ("factorized", "hyperprior", "joint_autoregressive", "checkerboard")
SCHEDULER_NAMES = ("multistep", "plateau")
DATA_FORMATS = ("vimeo", "folder")
TASKS = ("train", "eval", "classical")


def _positive_int(setting: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{setting}={value!r} must be a positive integer")


def _optional_positive_int(setting: str, value: Any) -> None:
    if value is not None:
        _positive_int(setting, value)


def _positive_number(setting: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{setting}={value!r} must be a positive number")


def _boolean(setting: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}={value!r} must be true or false")


def _one_of(setting: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{setting}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _build(cls, section: str, values: Mapping[str, Any] | None):
    if values is None:
        raise ConfigError(f"the config has no '{section}' section")
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing setting(s): {', '.join(f'{section}.{m}' for m in missing)}")
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class ModelSettings:
    name: str
    N: int
    M: int
    forward_method: str = "twopass"

    def validate(self) -> None:
        _one_of("model", self.name, MODEL_NAMES)
        _positive_int("model.N", self.N)
        _positive_int("model.M", self.M)
        _one_of("model.forward_method", self.forward_method, ("twopass", "twopass_faster", "onepass"))


@dataclass
class DataSettings:
    format: str
    root: str
    patch_size: int
    batch_size: int
    val_batch_size: int = 16
    val_fraction: float = 0.05
    num_workers: int = 0
    small_images: str = "pad"
    list_file: str | None = None
    cache_images: bool = False

    def validate(self, require_root: bool = True) -> None:
        _one_of("data.format", self.format, DATA_FORMATS)
        if require_root and (not self.root or self.root == "???"):
            raise ConfigError("data.root is not set; pass data.root=/path/to/dataset")
        _positive_int("data.patch_size", self.patch_size)
        if self.patch_size % 64:
            raise ConfigError(f"data.patch_size={self.patch_size} must be a multiple of 64 (the models downsample by 64)")
        _positive_int("data.batch_size", self.batch_size)
        _positive_int("data.val_batch_size", self.val_batch_size)
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            raise ConfigError(f"data.val_fraction={self.val_fraction!r} must be between 0 and 1 (exclusive)")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers!r} must be 0 or a positive integer")
        _one_of("data.small_images", self.small_images, ("pad", "skip"))
        if self.format == "vimeo" and not self.list_file:
            raise ConfigError("data.list_file must name the Vimeo-90k list file (e.g. sep_trainlist.txt)")


@dataclass
class OptimizerSettings:
    lr: float
    aux_lr: float = 1e-3
    weight_decay: float = 0.0
    fused: bool = True
    name: str = "adam"

    def validate(self) -> None:
        _one_of("optimizer", self.name, ("adam",))
        _positive_number("optimizer.lr", self.lr)
        _positive_number("optimizer.aux_lr", self.aux_lr)
        _boolean("optimizer.fused", self.fused)


@dataclass
class SchedulerSettings:
    name: str
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    factor: float = 0.5
    patience: int = 10
    min_lr: float = 0.0

    def validate(self) -> None:
        _one_of("scheduler", self.name, SCHEDULER_NAMES)
        if self.name == "multistep":
            _positive_number("scheduler.gamma", self.gamma)
            if any(not isinstance(m, int) or m <= 0 for m in self.milestones):
                raise ConfigError(f"scheduler.milestones={self.milestones!r} must be positive epoch numbers")
        else:
            if not 0 < self.factor < 1:
                raise ConfigError(f"scheduler.factor={self.factor!r} must be between 0 and 1")


@dataclass
class TrainerSettings:
    epochs: int
    max_steps: int | None = None
    steps_per_epoch: int | None = None
    clip_max_norm: float = 1.0
    log_every_steps: int = 50
    checkpoint_every_minutes: float = 10
    val_batches: int | None = None
    channels_last: bool = True

    def validate(self) -> None:
        _positive_int("trainer.epochs", self.epochs)
        _optional_positive_int("trainer.max_steps", self.max_steps)
        _optional_positive_int("trainer.steps_per_epoch", self.steps_per_epoch)
        _optional_positive_int("trainer.val_batches", self.val_batches)
        _positive_int("trainer.log_every_steps", self.log_every_steps)
        _boolean("trainer.channels_last", self.channels_last)
        if self.clip_max_norm is not None and self.clip_max_norm < 0:
            raise ConfigError(f"trainer.clip_max_norm={self.clip_max_norm!r} must be >= 0 (0 or null: off)")


@dataclass
class EvalSettings:
    root: str
    entropy_coder_device: str = "cpu"
    max_images: int | None = None
    save_bitstreams: bool = False
    save_reconstructions: bool = False
    classical_codecs: list[str] = field(default_factory=lambda: ["jpeg", "webp"])
    classical_qualities: list[int] = field(default_factory=lambda: [10, 30, 50, 70, 90])

    def validate(self) -> None:
        _optional_positive_int("eval.max_images", self.max_images)
        for codec in self.classical_codecs:
            _one_of("eval.classical_codecs", codec, ("jpeg", "webp"))
        for q in self.classical_qualities:
            if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
                raise ConfigError(f"eval.classical_qualities: {q!r} must be an integer from 1 to 100")
        _one_of("eval.entropy_coder_device", self.entropy_coder_device, ("cpu", "same"))


@dataclass
class LoggerSettings:
    mode: str = "offline"
    project: str = "lic-sweep"
    entity: str | None = None
    dir: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_images: int = 2
    name: str = "wandb"

    def validate(self) -> None:
        _one_of("logger.mode", self.mode, ("offline", "online", "disabled"))


@dataclass
class RunSettings:
    """Everything one run needs, as plain values."""

    lmbda: float
    rate: str
    model: ModelSettings
    data: DataSettings
    optimizer: OptimizerSettings
    scheduler: SchedulerSettings
    trainer: TrainerSettings
    eval: EvalSettings
    logger: LoggerSettings
    task: str = "train"
    seed: int = 1
    device: str = "auto"
    experiment_name: str = ""
    sweep_name: str = ""
    run_name: str = ""
    checkpoint: str | None = None
    resume: str | None = None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], require_data: bool = True) -> "RunSettings":
        """Build and validate from the resolved config; raises ConfigError naming the setting."""
        sections = {
            "model": ModelSettings, "data": DataSettings, "optimizer": OptimizerSettings,
            "scheduler": SchedulerSettings, "trainer": TrainerSettings, "eval": EvalSettings,
            "logger": LoggerSettings,
        }
        values = dict(cfg)
        for key, section_cls in sections.items():
            values[key] = _build(section_cls, key, cfg.get(key))
        settings = _build(cls, "run", values)
        settings.validate(require_data=require_data)
        return settings

    def validate(self, require_data: bool = True) -> None:
        _one_of("task", self.task, TASKS)
        rate_tier(self.lmbda)  # raises on a non-positive or non-numeric lambda
        _one_of("rate", self.rate, RATE_TIERS)
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is not valid; choose auto, cpu, cuda or cuda:N")
        if self.task == "eval" and not self.checkpoint:
            raise ConfigError("task=eval needs checkpoint=PATH (a .pth file written by run.py or CompressAI)")
        for part in (self.model, self.optimizer, self.scheduler, self.trainer, self.eval, self.logger):
            part.validate()
        if self.task == "train":
            self.data.validate(require_root=require_data)
