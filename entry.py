"""Start-up shared by the entry points (run.py, sweep.py): config registration and composition, the
typed config, and the one failure policy of every job (`task_wrapper`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from codec.errors import LicSweepError
from codec.schema import RunConfig, Task, refuse_unknown_keys, refuse_unknown_override_keys, validate
from conf.registration import CONFIG_DIR, register

register()
CONFIG_PATH = str(CONFIG_DIR)


def _user_message(exc: BaseException) -> str:
    """One readable message for a config error: Hydra's, the OmegaConf cause beneath it (which names the
    key, its type and the value), or our own error raised inside a resolver."""
    parts, seen = [], exc
    while seen is not None:
        if isinstance(seen, LicSweepError):
            return str(seen)
        text = str(seen).strip()
        if text and text not in parts:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    lines = [line.strip() for part in parts for line in part.splitlines()
             if line.strip() and not line.strip().startswith(("reference_type", "object_type"))]
    return "; ".join(dict.fromkeys(lines))


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The config for these command-line overrides, composed as run.py would (no job runs)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as exc:
        raise LicSweepError(_user_message(exc)) from None


def run_config(cfg: DictConfig, require_data: bool = True) -> RunConfig:
    """The typed, validated config of one run. With require_data=False (plans, --cfg), an unset data.root
    is left for the run to report."""
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    refuse_unknown_keys(cfg)
    if not require_data and OmegaConf.is_missing(cfg.data, "root"):
        cfg = cfg.copy()
        cfg.data.root = ""
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        if "missing mandatory value" in str(exc).lower():
            key = getattr(exc, "full_key", "") or str(exc)
            raise LicSweepError(f"{key} is not set; pass {key}=... on the command line") from None
        raise LicSweepError(_user_message(exc)) from None
    return validate(config, require_data=require_data)


def config_for(overrides: list[str], require_data: bool = True) -> RunConfig:
    """The typed config of one run for these command-line overrides (tests, benchmarks, notebooks)."""
    return run_config(compose(overrides), require_data=require_data)


def show_resolved_config() -> None:
    """`--cfg job` prints the config with N, M and the rate tier resolved, not as ${...}, and refuses
    invalid values as a run would."""
    argv = sys.argv[1:]
    if not any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv):
        return
    if "-m" not in argv and "--multirun" not in argv:
        overrides = [a for a in argv if "=" in a and not a.startswith("-")]
        exit_on_user_error(lambda: run_config(compose(overrides), require_data=False))
    if "--resolve" not in argv:
        sys.argv.append("--resolve")


def exit_on_user_error(fn: Callable[[], Any]) -> Any:
    """Run `fn`; a LicSweepError prints one line and exits 2, without a traceback."""
    try:
        return fn()
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class RefuseUnknownKeys(Callback):
    """Hydra callback (conf/config.yaml): a key the schema lacks (`+trainer.max_stepz=5`, `+db_password=...`)
    stops the run or multirun before Hydra writes anything (.hydra/, multirun.yaml) or launches a job: one
    line naming the key, exit status 2. Job-side, run_config refuses the same keys (API users, Slurm jobs)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_user_error(lambda: refuse_unknown_keys(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A key swept over (+db_password=a,b) is in no config yet: its name is checked from the overrides.
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        settings = [o.key_or_group for o in overrides if not o.key_or_group.startswith("hydra")
                    and not o.is_delete() and not (CONFIG_DIR / o.key_or_group).is_dir()]
        exit_on_user_error(lambda: (refuse_unknown_override_keys(settings), refuse_unknown_keys(config)))


def task_wrapper(task: Callable[[RunConfig, Path], dict], cfg: DictConfig, run_dir: Path, multirun: bool) -> dict:
    """The one failure policy of every job, whatever launched it (run.py, a local or Slurm multirun):

    - the config is typed and validated first; a training job then claims its run directory (`.running`)
      and releases it when it ends or is interrupted (SIGTERM, Ctrl-C: resumable from last.pth);
    - a failure writes `failed.json` (error, traceback) in the run directory; in a multirun the job then
      returns {"failed": ...} so the other jobs go on and the sweep's summary lists it (a Slurm job's process
      still exits 1, so that Slurm sees the failure and cancels what depends on it); in a single run it
      is raised (a user error prints one line and exits 2, a bug keeps its traceback). A directory held by
      another live job is refused without touching that job's files.
    """
    from codec.records import status as job_status
    from codec.training.distributed import export_slurm_distributed

    export_slurm_distributed()  # several Slurm tasks of one grid point: one DDP job, rank 0 keeps the status

    def failed(exc: BaseException, record: bool = True) -> dict:
        if record:
            job_status.mark_failed(run_dir, exc)
        if not multirun:
            if isinstance(exc, LicSweepError):  # Hydra would print a traceback for it
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(2)
            raise exc
        print(f"FAILED {run_dir.name}: {type(exc).__name__}: {exc}" + (f" (details in {run_dir / 'failed.json'})"
                                                                         if record else ""))
        job_status.fail_the_cluster_job()
        return {"failed": str(exc)}

    try:
        config = run_config(cfg)
    except LicSweepError as exc:  # a single run just says so; a multirun's summary needs the record
        return failed(exc, record=multirun)
    claims = config.task == Task.train
    if claims:
        try:
            job_status.mark_running(run_dir)
        except LicSweepError as exc:
            return failed(exc, record=False)
    try:
        result = task(config, run_dir)
    except (KeyboardInterrupt, SystemExit):
        if claims:
            job_status.clear_running(run_dir)
        raise
    except Exception as exc:
        return failed(exc)
    if claims:
        job_status.clear_running(run_dir)
    return result
