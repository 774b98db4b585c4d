"""The grid of a sweep: one override list per job, expanded as `run.py -m` expands it (Hydra's basic
sweeper: the experiment's hydra.sweeper.params, then the command line, whose value for a key narrows or
replaces that axis; the cartesian product in the order the keys first appear), with Hydra's public
override parser."""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser

from codec.errors import LicSweepError
from entry import compose


def _parse(overrides: list[str]):
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # hydra's OverrideParseException and friends
        raise LicSweepError(f"cannot parse overrides {overrides}: {exc}") from None


def grid_overrides(overrides: list[str]) -> list[list[str]]:
    """One override list per job of the grid these command-line overrides describe."""
    parsed = _parse(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose(fixed, with_hydra=True).hydra.sweeper.get("params") or {}
    axes: dict[str, list[str]] = {}
    for o in _parse([f"{key}={value}" for key, value in params.items()]) + parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise LicSweepError(f"{o.input_line}: interval sweeps are not supported (Hydra's basic sweeper has none); list the values or use range()")
            axes[key] = [f"{key}={value}" for value in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*axes.values())]


def first_job(overrides: list[str]) -> list[str]:
    """One grid point (compose does not take a sweep's lists): for settings every job shares."""
    return grid_overrides(overrides)[0]
