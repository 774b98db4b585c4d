"""The run config's schema: one dataclass per config group, each key's type and default in one place.

The entry points register these with Hydra's ConfigStore (conf/registration.py), so Hydra itself
rejects an unknown key or a wrong type, in a YAML file or on the command line, naming the key. What a
type cannot say (ranges, rules across fields) is checked by `validate`. The library receives the
`RunConfig` object that `OmegaConf.to_object` builds; it never sees Hydra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from omegaconf import II, MISSING

from codec.errors import ConfigError

# A key whose value does not change what a run computes (where it logs, how often it checkpoints, how
# many loader processes): a finished run with another value of it still counts as done (config_fingerprint).
SAME_RESULTS = {"same_results": True}


def _same_results(default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    return field(default=default, default_factory=factory, metadata=SAME_RESULTS)


class Task(StrEnum):
    train = "train"  # train, then evaluate
    eval = "eval"  # evaluate `checkpoint` only
    classical = "classical"  # JPEG and WebP anchors on the evaluation images


class Rate(StrEnum):
    low = "low"
    high = "high"


class DataFormat(StrEnum):
    vimeo = "vimeo"
    folder = "folder"
    packed = "packed"  # a copy made by `python -m codec.prepare` (uint8 shards, same split and crops)
    zip = "zip"  # data.root is a .zip (Vimeo-90k's as downloaded, or of images), read without unpacking


class SmallImages(StrEnum):
    pad = "pad"
    skip = "skip"


class SchedulerName(StrEnum):
    multistep = "multistep"
    plateau = "plateau"


class LoggerMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class CoderDevice(StrEnum):
    cpu = "cpu"  # deterministic entropy coding
    same = "same"  # the device the transforms run on


class ClassicalCodec(StrEnum):
    jpeg = "jpeg"
    webp = "webp"


@dataclass
class Channels:
    N: int = MISSING
    M: int = MISSING


@dataclass
class ModelConfig:
    # A name in the model registry (codec/models/registry.py); conf/model/<name>.yaml selects it.
    name: str = MISSING
    # Channels per rate tier; null: the registry's table for the model (the protocol's).
    channels: Optional[dict[Rate, Channels]] = None
    N: int = II("model_channel:${model.name},${rate},N,${model.channels}")
    M: int = II("model_channel:${model.name},${rate},M,${model.channels}")
    # The protocol's epoch budget for this model (conf/model/<name>.yaml).
    epochs: int = MISSING
    # checkerboard only: its training forward (twopass: anchors, then non-anchors with context from
    # the quantised anchors, as the decoder sees them).
    forward_method: str = "twopass"


@dataclass
class DataConfig:
    format: DataFormat = MISSING
    root: str = MISSING
    # Vimeo-90k's official list file, relative to root (sep_trainlist.txt, tri_trainlist.txt); for
    # format=zip, its name in the archive (null: Vimeo's own names are looked for, else every image is read).
    list_file: Optional[str] = None
    patch_size: int = 256
    batch_size: int = 16
    val_batch_size: int = 16
    # Fraction held out for validation (whole sequences for Vimeo), chosen by a hash of the names.
    val_fraction: float = 0.05
    # Loader processes per training process: a number, or auto (the CPUs this process may use, from
    # its affinity mask, which Slurm's cpus_per_task sets, shared among the node's DDP ranks, minus one
    # for the training loop; at most 8).
    num_workers: str = _same_results("auto")
    # Images smaller than patch_size: pad (reflect) or skip.
    small_images: SmallImages = SmallImages.pad
    # Keep decoded images in memory (small data sets only).
    cache_images: bool = False


@dataclass
class OptimizerConfig:
    # Adam on the model; the entropy bottleneck quantiles get their own Adam (aux loss).
    lr: float = 1.0e-4
    aux_lr: float = 1.0e-3
    weight_decay: float = 0.0
    # One fused kernel for all parameters (same update rule; faster: benchmarks/README.md).
    fused: bool = True


@dataclass
class SchedulerConfig:
    # multistep: MultiStepLR; plateau: ReduceLROnPlateau on the validation loss. Stepped once per epoch.
    name: SchedulerName = MISSING
    milestones: list[int] = field(default_factory=lambda: [40, 90, 140])
    gamma: float = 0.5
    factor: float = 0.5
    patience: int = 10
    min_lr: float = 0.0


@dataclass
class TrainerConfig:
    epochs: int = II("model.epochs")
    # Cap in optimizer steps (null: none), for the quickstart and tests.
    max_steps: Optional[int] = None
    # Batches per epoch; null: one pass over the training set (more than one pass repeats the data).
    steps_per_epoch: Optional[int] = None
    # Gradient clipping of the model's parameters (0 or null: off).
    clip_max_norm: Optional[float] = 1.0
    log_every_steps: int = _same_results(50)
    # Write last.pth every epoch, and also every this many minutes (0: off) and every this many steps (null: off).
    checkpoint_every_minutes: float = _same_results(10.0)
    checkpoint_every_steps: Optional[int] = _same_results(None)
    # Limit validation to this many batches (null: all).
    val_batches: Optional[int] = None
    # Model and batches in channels-last (NHWC) layout while training: faster convolutions.
    channels_last: bool = True
    # 32 | bf16 | 16: autocast the transforms while training (entropy models and loss stay float32;
    # 16 adds a GradScaler). Validation and evaluation are always float32 (codec/training/precision.py).
    precision: str = "32"
    # torch.compile the transforms' training forward (off: on this 2-core CPU inductor takes over a
    # minute to compile and then steps within noise of eager; benchmarks/README.md). Validation and
    # evaluation run the transforms eagerly, so the bitstreams do not depend on it.
    compile: bool = False
    # Your own training-loop callbacks, by import path ("package.module:Class", a subclass of
    # codec.training.callbacks.Callback built with no arguments), after the logging and checkpoint ones.
    callbacks: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    # Evaluation with real bitstreams on each test set: a manifest's name (data/manifests/; kodak is
    # shipped, others come by `python -m codec.datasets fetch NAME`) or an image folder. The first is the
    # run's headline (results.json's top level, W&B's bpp/psnr); each has its block (results.json "sets",
    # W&B "<set>/bpp", the report's <set>/ folder).
    sets: list[str] = field(default_factory=lambda: ["kodak"])
    # Where fetched sets live (null: $LIC_SWEEP_DATASETS, else data/sets in the repository).
    sets_root: Optional[str] = None
    entropy_coder_device: CoderDevice = _same_results(CoderDevice.cpu)
    max_images: Optional[int] = None
    save_bitstreams: bool = _same_results(False)
    save_reconstructions: bool = _same_results(False)
    classical_codecs: list[ClassicalCodec] = field(default_factory=lambda: [ClassicalCodec.jpeg,
                                                                             ClassicalCodec.webp])
    classical_qualities: list[int] = field(default_factory=lambda: [10, 30, 50, 70, 90])


@dataclass
class LoggerConfig:
    # Weights & Biases: offline by default (no account needed; `wandb sync` later).
    mode: LoggerMode = LoggerMode.offline
    project: str = "lic-sweep"
    entity: Optional[str] = None
    # Directory that holds the wandb/ run folders (null: the run directory).
    dir: Optional[str] = None
    group: Optional[str] = II("sweep_name")
    tags: list[str] = field(default_factory=lambda: ["${model.name}", "${rate}", "${experiment_name}"])
    log_images: int = 2


@dataclass
class LadderConfig:
    # sweep.py --ladder: overrides for the fine-tuned lambdas (e.g. a shorter schedule:
    # ["trainer.max_steps=600", "trainer.epochs=3"]); the anchors train with the config as it is.
    finetune: list[str] = field(default_factory=list)
    # Fine-tune the anchor's lambda too (anchors then train in <sweep dir>_anchors), so that every point
    # has the same training; false: the anchor is its lambda's point (for converged anchors).
    refine_anchor: bool = True


@dataclass
class RunConfig:
    """Everything one run needs, as plain typed values."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = _same_results(factory=LoggerConfig)
    ladder: LadderConfig = _same_results(factory=LadderConfig)
    task: Task = _same_results(Task.train)
    # task=eval: the checkpoint to evaluate (ours or a CompressAI state_dict).
    checkpoint: Optional[str] = _same_results(None)
    # A checkpoint to resume from (default: the run directory's checkpoints/last.pth).
    resume: Optional[str] = _same_results(None)
    # Start from another run's weights (model only: fresh optimizers, schedule and step count); shapes must
    # match. A run directory that already has its own last.pth resumes from that instead.
    init_from: Optional[str] = None
    lmbda: float = 0.013
    # Rate tier (low|high) picks N and M from the model's table; follows lambda unless set.
    rate: Rate = II("rate_tier:${lmbda}")
    seed: int = 1
    # auto: CUDA when present, else CPU; or cpu, cuda, cuda:N.
    device: str = _same_results("auto")
    experiment_name: str = MISSING
    sweep_name: str = _same_results(II("experiment_name"))
    # <model>_lmbda<lambda>; for task=eval, the checkpoint's own model and lambda.
    run_name: str = II("run_name:${task},${model.name},${lmbda},${checkpoint}")


def unknown_keys(cfg: Any, schema: type = RunConfig, prefix: str = "",
                 ignore: tuple[str, ...] = ("hydra",)) -> list[tuple[str, type]]:
    """(key, the schema class it was added to) for each key of a composed config (a DictConfig) that the
    schema does not have: Hydra composes `+key=value` into a config even where the schema has no such key.
    Dict-typed settings (model.channels) are checked entry by entry against their value's schema."""
    import typing

    from omegaconf import DictConfig, OmegaConf

    def schema_of(kind):
        """The dataclass a DictConfig under this annotation follows, and whether it is a dict of them."""
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) is typing.Union and len(args) == 1:
            kind = args[0]
        if typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            return typing.get_args(kind)[1], True
        return (kind, False) if dataclasses.is_dataclass(kind) else (None, False)

    fields = typing.get_type_hints(schema)
    found = []
    for key in cfg.keys():
        if not prefix and key in ignore:
            continue
        if key not in fields:
            found.append((f"{prefix}{key}", schema))
            continue
        child_schema, is_dict = schema_of(fields[key])
        if child_schema is None or OmegaConf.is_missing(cfg, key) or not isinstance(child := cfg[key], DictConfig):
            continue
        if not is_dict:
            found += unknown_keys(child, child_schema, f"{prefix}{key}.")
            continue
        for entry in child.keys():
            if not OmegaConf.is_missing(child, entry) and isinstance(value := child[entry], DictConfig):
                found += unknown_keys(value, child_schema, f"{prefix}{key}.{entry}.")
    return found


def refuse_unknown_override_keys(keys: list[str]) -> None:
    """refuse_unknown_keys for setting names alone (a multirun's overrides, before any job is composed)."""
    from omegaconf import OmegaConf

    probe = OmegaConf.create()
    for key in keys:
        OmegaConf.update(probe, key, None, force_add=True)
    refuse_unknown_keys(probe)


def refuse_unknown_keys(cfg: Any) -> None:
    """ConfigError naming the first key of `cfg` that the schema lacks, and the setting it may have meant.
    Such keys are refused like typos: nothing reads them, and a secret passed as one would be recorded."""
    import difflib

    unknown = unknown_keys(cfg)
    if not unknown:
        return
    key, schema = unknown[0]
    parent = key.rpartition(".")[0]
    near = difflib.get_close_matches(key.rpartition(".")[2], [f.name for f in dataclasses.fields(schema)], n=1)
    hint = f"; did you mean {parent + '.' if parent else ''}{near[0]}?" if near else ""
    more = f" (nor {', '.join(k for k, _ in unknown[1:4])})" if len(unknown) > 1 else ""
    raise ConfigError(f"{key} is not a setting{more}{hint}; every setting is in the schema (codec/schema.py) "
                      "with its type and default, and + on the command line cannot add one")


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain JSON values (W&B config, checkpoints, the config fingerprint)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_fingerprint(cfg: RunConfig) -> str:
    """A hash of the settings that change what a run computes (every key but those marked _same_results):
    a rerun whose fingerprint equals the finished run's skips it; another one is stale."""
    values, kept = as_dict(cfg), {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("same_results"):
            continue
        group = getattr(cfg, f.name)
        value = values[f.name]
        if dataclasses.is_dataclass(group):
            value = {g.name: value[g.name] for g in dataclasses.fields(group) if not g.metadata.get("same_results")}
        kept[f.name] = value
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _positive(setting: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        raise ConfigError(f"{setting}={value!r} must be positive")


def validate(cfg: RunConfig, require_data: bool = True) -> RunConfig:
    """What the types cannot say: ranges and rules across fields. Raises ConfigError naming the setting."""
    from codec.models.rate import rate_tier
    from codec.models.registry import registry_entry

    registry_entry(cfg.model.name)  # names the registered models when unknown
    rate_tier(cfg.lmbda)  # lambda must be positive
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"device={cfg.device!r} is not valid; choose auto, cpu, cuda or cuda:N")
    if cfg.task == Task.eval and not cfg.checkpoint:
        raise ConfigError("task=eval needs checkpoint=PATH (a .pth file written by run.py or CompressAI)")
    for key in ("N", "M"):
        _positive(f"model.{key}", getattr(cfg.model, key))
    registry_entry(cfg.model.name).check_channels(cfg.model.N, cfg.model.M)
    if cfg.model.forward_method not in ("twopass", "twopass_faster", "onepass"):
        raise ConfigError(f"model.forward_method={cfg.model.forward_method!r} is not valid; choose twopass, "
                          "twopass_faster or onepass")
    d, t, o, s = cfg.data, cfg.trainer, cfg.optimizer, cfg.scheduler
    for name, value in (("data.patch_size", d.patch_size), ("data.batch_size", d.batch_size),
                        ("data.val_batch_size", d.val_batch_size), ("optimizer.lr", o.lr),
                        ("optimizer.aux_lr", o.aux_lr), ("trainer.epochs", t.epochs),
                        ("trainer.log_every_steps", t.log_every_steps)):
        _positive(name, value)
    for name, value in (("trainer.max_steps", t.max_steps), ("trainer.steps_per_epoch", t.steps_per_epoch),
                        ("trainer.val_batches", t.val_batches), ("eval.max_images", cfg.eval.max_images),
                        ("trainer.checkpoint_every_steps", t.checkpoint_every_steps)):
        _positive(name, value, allow_none=True)
    if t.precision not in ("32", "bf16", "16"):
        raise ConfigError(f"trainer.precision={t.precision!r} is not valid; choose 32, bf16 or 16")
    if d.patch_size % 64:
        raise ConfigError(f"data.patch_size={d.patch_size} must be a multiple of 64 (the models downsample by 64)")
    if not 0 < d.val_fraction < 1:
        raise ConfigError(f"data.val_fraction={d.val_fraction!r} must be between 0 and 1 (exclusive)")
    if d.num_workers != "auto" and not (d.num_workers.isdigit()):
        raise ConfigError(f"data.num_workers={d.num_workers!r} must be auto or a number >= 0")
    for name, value in (("optimizer.weight_decay", o.weight_decay),
                        ("trainer.clip_max_norm", t.clip_max_norm or 0),
                        ("trainer.checkpoint_every_minutes", t.checkpoint_every_minutes),
                        ("scheduler.patience", s.patience), ("scheduler.min_lr", s.min_lr),
                        ("logger.log_images", cfg.logger.log_images)):
        if value < 0:
            raise ConfigError(f"{name}={value!r} must be >= 0")
    if s.name == SchedulerName.multistep:
        _positive("scheduler.gamma", s.gamma)
        if any(m <= 0 for m in s.milestones):
            raise ConfigError(f"scheduler.milestones={list(s.milestones)!r} must be positive epoch numbers")
    elif not 0 < s.factor < 1:
        raise ConfigError(f"scheduler.factor={s.factor!r} must be between 0 and 1")
    if not cfg.eval.sets:
        raise ConfigError("eval.sets is empty; name at least one test set, e.g. eval.sets=[kodak]")
    from codec.data.test_sets import set_folder, set_name

    names = [set_name(entry) for entry in cfg.eval.sets]
    if len(set(names)) < len(names):
        raise ConfigError(f"eval.sets={list(cfg.eval.sets)!r} names a set twice ({names})")
    for entry in cfg.eval.sets:  # before hours of training: each set is here (else how to fetch it)
        set_folder(entry, cfg.eval.sets_root)
    for q in cfg.eval.classical_qualities:
        if not 1 <= q <= 100:
            raise ConfigError(f"eval.classical_qualities: {q!r} must be an integer from 1 to 100")
    if cfg.task == Task.train:
        if require_data and d.root in ("", "???"):
            raise ConfigError("data.root is not set; pass data.root=/path/to/dataset")
        if d.format == DataFormat.vimeo and not d.list_file:
            raise ConfigError("data.list_file must name the Vimeo-90k list file (e.g. sep_trainlist.txt)")
    return cfg
