"""The run record: what a run leaves behind, typed, with a version, in one place.

A record is a run's identity (model, lambda, N, M, ...), its results per test set (the means and each
image's row; the first set of eval.sets is the headline), its training summary and its provenance.
results.json and per_image.csv are written and read only here (RunRecord.write, read_record); the W&B
run summary (RunRecord.summary), the analysis' rows (RunRecord.row) and the status view derive from it,
so a results field is added or renamed here and nowhere else. Torch-free: the analysis reads records
without importing torch.

results.json keeps its shape across versions: the identity, training and provenance fields at the top
level, the headline set's block beside them (so that a reader of one set need not know about sets), and
every set's block under "sets". Version 1 (before this module, no "record_version") is read the same way;
files written before eval.sets hold one set, named by their folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from codec.errors import LicSweepError
from codec.records.files import write_json_atomic, write_text_atomic
from codec.records.layout import RunDir, headline_set

RECORD_VERSION = 2

# The means of a set over its images (MS-SSIM over the images it is defined for), in results.json, W&B
# ("<set>/<field>" for every set) and the analysis' rows.
MEANS = ("bits", "bpp", "psnr", "ms_ssim", "enc_time", "dec_time", "num_pixels")
COUNTS = ("ms_ssim_images", "num_images")


class UnreadableRecord(LicSweepError):
    pass


@dataclass
class ImageResult:
    image: str
    num_pixels: int
    bits: int
    bpp: float
    psnr: float
    ms_ssim: float
    enc_time: float
    dec_time: float


def summarize(per_image: list[ImageResult]) -> dict[str, float]:
    """Means over the images; MS-SSIM over the images it is defined for (ms_ssim_images of them, NaN if none)."""
    summary = {k: sum(getattr(r, k) for r in per_image) / len(per_image) for k in MEANS if k != "ms_ssim"}
    defined = [r.ms_ssim for r in per_image if not math.isnan(r.ms_ssim)]
    summary["ms_ssim"] = sum(defined) / len(defined) if defined else float("nan")
    return {k: float(summary[k]) for k in MEANS} | {"ms_ssim_images": len(defined), "num_images": len(per_image)}


@dataclass
class SetResult:
    """One test set's results: its folder, the means over its images, the files skipped, each image."""
    name: str
    dataset: str
    per_image: list[ImageResult]
    skipped: list[str] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)  # MEANS and COUNTS; computed when not given

    def __post_init__(self) -> None:
        if not self.means and self.per_image:
            self.means = summarize(self.per_image)

    def __getitem__(self, key: str) -> Any:
        return self.means[key]

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, **self.means, "skipped": list(self.skipped),
                "per_image": [asdict(r) for r in self.per_image]}

    @classmethod
    def from_json(cls, name: str, block: dict[str, Any]) -> SetResult:
        rows = [ImageResult(**{f.name: row.get(f.name, math.nan) for f in fields(ImageResult)})  # a field a file
                for row in block.get("per_image", [])]  # lacks is NaN
        return cls(name, str(block.get("dataset", "")), rows,
                   list(block.get("skipped", [])), {k: block[k] for k in (*MEANS, *COUNTS) if k in block})


@dataclass
class Identity:
    """What the run is: the fields runs are told apart by (sweeps, W&B's columns, the analysis' rows)."""
    model: str
    lmbda: float | None = None
    N: int | None = None
    M: int | None = None
    rate: str | None = None
    run_name: str | None = None
    experiment: str | None = None
    group: str | None = None
    seed: int | None = None
    init_from: str | None = None
    checkpoint: str | None = None  # task=eval: the file evaluated
    quality: int | None = None  # classical codecs

    @classmethod
    def of_config(cls, config) -> Identity:
        """The identity of a training run from its validated config (codec.schema.RunConfig)."""
        return cls(config.model.name, config.lmbda, config.model.N, config.model.M, str(config.rate), config.run_name,
                   config.experiment_name, config.logger.group, config.seed, config.init_from)

    def flat(self) -> dict[str, Any]:
        """The fields set (a training run's all; an evaluation's or a classical point's fewer)."""
        always = {"model", "lmbda", "N", "M"}
        if self.run_name is not None:  # a training run records every field of its identity
            always |= {"rate", "run_name", "experiment", "group", "seed", "init_from"}
        return {k: v for k, v in asdict(self).items() if k in always or v is not None}


@dataclass
class Training:
    """How the training went; absent for task=eval and classical points."""
    train_steps: int
    train_epochs: int | None = None  # None: a file that does not say
    best_val_loss: float | None = None
    skipped_files: int = 0
    stopped_by: str | None = None
    train_seconds: float | None = None
    steps_this_process: int | None = None
    skipped_file_names: list[str] = field(default_factory=list)
    # Where this process's time went, for the cost estimate (codec/runs/cost.py; None in older files): in
    # training steps (data loading included), in `validations` validations of `val_images` images in all, in
    # the evaluation, and the whole job from its process's start (interpreter, imports, data, W&B and
    # checkpoints included).
    step_seconds: float | None = None
    val_seconds: float | None = None
    validations: int | None = None
    val_images: int | None = None
    eval_seconds: float | None = None
    job_seconds: float | None = None

    def flat(self) -> dict[str, Any]:
        values = asdict(self)
        if not self.skipped_file_names:
            del values["skipped_file_names"]
        return values


@dataclass
class Provenance:
    config_fingerprint: str | None = None  # codec.records.status: a rerun with the same config is skipped
    git_commit: str | None = None
    git_dirty: bool | None = None
    wandb_run_id: str | None = None
    coding_device: str | None = None
    train_device: str | None = None  # the training device's name, as codec.runs.cost files rates under it


@dataclass
class RunRecord:
    identity: Identity
    sets: dict[str, SetResult]  # in eval.sets' order: headline_set() is the first
    training: Training | None = None
    provenance: Provenance = field(default_factory=Provenance)
    version: int = RECORD_VERSION

    @property
    def headline(self) -> SetResult:
        return self.sets[headline_set(list(self.sets))]

    def for_set(self, name: str | None = None) -> SetResult | None:
        """A test set's results (None: the headline); None when the run was not evaluated on it."""
        return self.headline if name is None else self.sets.get(name)

    def to_json(self) -> dict[str, Any]:
        head = self.headline
        return {"record_version": self.version, **self.identity.flat(),
                **(self.training.flat() if self.training else {}),
                **{k: v for k, v in asdict(self.provenance).items() if v is not None},
                "set": head.name, **head.to_json(), "sets": {name: s.to_json() for name, s in self.sets.items()}}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunRecord:
        def known(kind, source=values):
            return {f.name: source[f.name] for f in fields(kind) if f.name in source}

        if "sets" in values:
            sets = {name: SetResult.from_json(name, block) for name, block in values["sets"].items()}
        else:  # a file from before eval.sets: one set, named by its folder
            name = values.get("set") or Path(str(values.get("dataset", ""))).name
            sets = {name: SetResult.from_json(name, values)}
        if not sets:
            raise KeyError("sets")
        training = Training(**known(Training)) if "train_steps" in values else None
        return cls(Identity(**known(Identity)), sets, training, Provenance(**known(Provenance)),
                   int(values.get("record_version", 1)))

    def summary(self) -> dict[str, Any]:
        """The W&B run summary: the flat fields of results.json without the per-image rows, the headline's
        means as they are, every set's as "<set>/<field>", and the sets' names (eval_sets)."""
        values = {k: v for k, v in self.to_json().items() if k not in ("per_image", "sets")}
        for name, s in self.sets.items():
            values |= {f"{name}/{k}": s.means[k] for k in (*MEANS, "num_images") if k in s.means}
        return values | {"eval_sets": list(self.sets)}

    def row(self, set_name: str | None = None) -> dict[str, Any] | None:
        """One flat row for the analysis (identity, provenance, training, the set's means and name); None
        when the run was not evaluated on that set."""
        s = self.for_set(set_name)
        if s is None:
            return None
        return {**self.identity.flat(), **asdict(self.provenance), **(self.training.flat() if self.training else {}),
                **s.means, "set": s.name, "dataset": s.dataset}

    def write(self, run: RunDir) -> None:
        """per_image.csv (one row per set and image), then results.json (which marks the run done), each
        written atomically."""
        rows = [{"set": name, **asdict(r)} for name, s in self.sets.items() for r in s.per_image]
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=["set", *(f.name for f in fields(ImageResult))])
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(table.getvalue(), run.per_image)
        write_json_atomic(self.to_json(), run.results)


def read_record(path: str | Path) -> RunRecord:
    """The record in a results.json file, or in the results.json of a run directory."""
    path = Path(path)
    path = RunDir(path).results if path.is_dir() else path
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UnreadableRecord(f"{path}: not a readable run record ({type(exc).__name__}: {exc})") from None


def summary_for_set(values: dict[str, Any], name: str | None) -> dict[str, Any] | None:
    """A W&B summary's (RunRecord.summary's) fields for one test set: the headline's as they are, another's
    from its "<set>/<field>" keys; None if the run lacks that set."""
    if name is None or values.get("set") == name:
        return values
    if name not in (values.get("eval_sets") or []):
        return None
    prefix = f"{name}/"
    return {**values, **{k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}, "set": name}


def sets_in_summary(values: dict[str, Any]) -> list[str]:
    """The test sets a W&B summary has results for, headline first."""
    return list(values.get("eval_sets") or ([values["set"]] if values.get("set") else []))
