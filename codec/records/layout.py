"""Where a run and a sweep keep their files, in one place: every path of a run directory and of a sweep
folder, the folder names Hydra's run.dir and sweep.dir are made of (conf/config.yaml takes them from
here through resolvers), and the rule that the headline test set's outputs sit at the top of a run
directory. Torch-free.

    outputs/<sweep_name>/                     a sweep (hydra.sweep.dir)
        runs/<model>_lmbda<lambda>/           one run (RunDir)
        report/                               the RD plot and tables
    outputs/<sweep_name>_anchors/             a ladder's anchors (ladder.refine_anchor)
    outputs/<experiment_name>/runs/<run>/     a single `python run.py` (hydra.run.dir)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The repository: the shipped data (data/), benchmarks/throughput.json, pretrained/, and where sweep.py
# keeps outputs/.
REPO = Path(__file__).resolve().parents[2]
OUTPUTS = "outputs"
RUNS = "runs"
ANCHORS_SUFFIX = "_anchors"
RESULTS_FILE = "results.json"  # a run record; its presence marks the run done


def run_name(model: str, lmbda: float | str) -> str:
    """`<model>_lmbda<lambda>`, the lambda as the float it parses to: lmbda=1e-3 and lmbda=0.001 name the
    same folder."""
    return f"{model}_lmbda{float(lmbda)}"


def sweep_dir(sweep_name: str) -> str:
    return f"{OUTPUTS}/{sweep_name}"


def run_subdir(name: str) -> str:
    return f"{RUNS}/{name}"


def single_run_dir(experiment_name: str, name: str) -> str:
    return f"{OUTPUTS}/{experiment_name}/{RUNS}/{name}"


def anchors_dir(sweep: str) -> str:
    """A ladder's anchors' sweep folder, beside the sweep's (as Hydra's sweep.dir text)."""
    return f"{str(sweep).rstrip('/')}{ANCHORS_SUFFIX}"


def headline_set(names: list[str]) -> str:
    """The headline test set (results.json's top level, W&B's bpp/psnr, the report's first plot, the
    outputs at the top of a run directory): the first of eval.sets."""
    return names[0]


@dataclass(frozen=True)
class RunDir:
    """Every file of one run's directory."""
    path: Path

    def __post_init__(self) -> None:  # from a path, or from another of its kind
        object.__setattr__(self, "path", Path(getattr(self.path, "path", self.path)))

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pth"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pth"

    @property
    def results(self) -> Path:  # the run record (codec.records.record)
        return self.path / RESULTS_FILE

    @property
    def per_image(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def failed(self) -> Path:  # the failure record (codec.records.status)
        return self.path / "failed.json"

    @property
    def running(self) -> Path:  # the live job's claim
        return self.path / ".running"

    @property
    def run_log(self) -> Path:  # Hydra's job log
        return self.path / "run.log"

    @property
    def job_log(self) -> Path:  # the local launcher's capture of the job's output
        return self.path / "job.log"

    @property
    def hydra(self) -> Path:
        return self.path / ".hydra"

    @property
    def overrides(self) -> Path:
        return self.hydra / "overrides.yaml"

    @property
    def repro(self) -> Path:  # the reproducibility card (codec.runs.provenance)
        return self.path / "repro.json"

    @property
    def wandb_run_id(self) -> Path:
        return self.path / "wandb_run_id.txt"

    def set_outputs(self, name: str, sets: list[str]) -> Path:
        """Where a test set's bitstreams and reconstructions go: the headline's at the top, others' in sets/<name>."""
        return self.path if name == headline_set(sets) else self.path / "sets" / name

    def classical(self, name: str | None = None, sets: list[str] | None = None) -> Path:
        """task=classical: the anchors' points on the headline set in classical/, another set's in classical/<set>."""
        if name is None or name == headline_set(sets or [name]):
            return self.path / "classical"
        return self.path / "classical" / name

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunDir | None:
        """The run directory a checkpoint sits in (<run>/checkpoints/*.pth with the run's .hydra), else None."""
        run = cls(Path(checkpoint).parent.parent)
        return run if Path(checkpoint).parent == run.checkpoints and run.hydra.is_dir() else None


@dataclass(frozen=True)
class SweepDir:
    """A sweep's folder: its runs, its report, a ladder's anchors beside it."""
    path: Path

    def __post_init__(self) -> None:  # from a path, or from another of its kind
        object.__setattr__(self, "path", Path(getattr(self.path, "path", self.path)))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def runs(self) -> Path:
        return self.path / RUNS

    def run(self, name: str) -> RunDir:
        return RunDir(self.runs / name)

    def run_dirs(self, started_by_hydra: bool = True) -> list[RunDir]:
        """The runs Hydra started here (each has its .hydra/overrides.yaml), or every folder under runs/, in
        name order."""
        if not started_by_hydra:
            return [RunDir(p) for p in sorted(self.runs.glob("*")) if p.is_dir()]
        return [RunDir(p.parent.parent) for p in sorted(self.runs.glob("*/.hydra/overrides.yaml"))]

    @property
    def report(self) -> Path:
        return self.path / "report"

    @property
    def anchors(self) -> SweepDir:
        return SweepDir(anchors_dir(str(self.path)))
