"""Shared start-up of the entry points (run.py, sweep.py): resolvers, config, error reporting."""

from __future__ import annotations

import sys
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from codec.errors import LicSweepError
from codec.settings import RunSettings
from conf.resolvers import CONFIG_DIR, register_resolvers

register_resolvers()
CONFIG_PATH = str(CONFIG_DIR)


def resolved_dict(cfg: DictConfig, throw_on_missing: bool = True) -> dict[str, Any]:
    """The config with every interpolation resolved; resolver errors become LicSweepError."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=throw_on_missing)
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, LicSweepError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise LicSweepError(str(cause)) from None
        if "Missing mandatory value" in str(exc):
            key = getattr(exc, "full_key", "") or str(exc)
            raise LicSweepError(f"{key} is not set; pass {key}=... on the command line") from None
        raise LicSweepError(f"bad config: {exc}") from None


def settings_from(cfg: DictConfig) -> tuple[RunSettings, dict[str, Any]]:
    values = resolved_dict(cfg)
    return RunSettings.from_dict(values), values


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The config for these command-line overrides, composed as run.py would (no job runs)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
    except HydraException as exc:
        raise LicSweepError(str(exc)) from None


def check_config(cfg: DictConfig) -> RunSettings:
    """Validate a composed config; paths that are still unset (???) are left for the run to report."""
    values = resolved_dict(cfg, throw_on_missing=False)
    return RunSettings.from_dict(values, require_data=False)


def show_resolved_config() -> None:
    """`--cfg job` prints the config with N, M and the rate tier resolved, not as ${...}, and
    refuses invalid values as a run would."""
    argv = sys.argv[1:]
    if not any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv):
        return
    if "-m" not in argv and "--multirun" not in argv:
        overrides = [a for a in argv if "=" in a and not a.startswith("-")]
        exit_on_user_error(lambda: check_config(compose(overrides)))
    if "--resolve" not in argv:
        sys.argv.append("--resolve")


def exit_on_user_error(fn: Callable[[], Any]) -> Any:
    """Run `fn`; a LicSweepError prints one line and exits 2, without a traceback."""
    try:
        return fn()
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def report_user_errors(fn: Callable[[], Any]) -> Any:
    """Inside a Hydra job: a LicSweepError prints one line and exits 2 (Hydra would print a
    traceback). In a multirun the error propagates so the sweep can record the failed job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return fn()
    except LicSweepError as exc:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
