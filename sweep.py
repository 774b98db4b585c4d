"""The grid: every (model, lambda) point of an experiment, as one Hydra multirun.

    python sweep.py --dry-run                                  # plan of experiment=quickstart
    python sweep.py --dry-run experiment=seminar model=hyperprior,checkerboard
"""

from __future__ import annotations

import argparse
import itertools
import sys

from hydra.core.override_parser.overrides_parser import OverridesParser

from entry import check_config, compose, exit_on_user_error
from codec.errors import LicSweepError


def grid_overrides(overrides: list[str]) -> list[list[str]]:
    """One override list per grid point: the experiment's sweeper params, narrowed or
    extended by sweep values given on the command line (`model=a,b`, `lmbda=0.1,0.2`)."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as exc:  # hydra's OverrideParseException and friends
        raise LicSweepError(f"cannot parse overrides {overrides}: {exc}") from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cli_sweeps = {o.get_key_element(): o for o in parsed if o.is_sweep_override()}

    hydra_cfg = compose(fixed, with_hydra=True).hydra
    params = dict(hydra_cfg.sweeper.get("params") or {})
    axes: list[list[str]] = []
    keys = list(params) + [k for k in cli_sweeps if k not in params]
    for key in keys:
        if key in cli_sweeps:
            values = list(cli_sweeps[key].sweep_string_iterator())
        else:
            values = list(parser.parse_override(f"{key}={params[key]}").sweep_string_iterator())
        axes.append([f"{key}={v}" for v in values])
    # A fixed value on the command line (model=hyperprior) narrows that axis to one value.
    fixed_keys = {o.split("=", 1)[0] for o in fixed}
    axes = [axis for axis in axes if axis[0].split("=", 1)[0] not in fixed_keys]
    return [fixed + list(point) for point in itertools.product(*axes)]


def plan(overrides: list[str]) -> list[dict]:
    rows = []
    for point in grid_overrides(overrides):
        s = check_config(compose(point))
        sched = s.scheduler
        detail = (f"milestones={list(sched.milestones)} gamma={sched.gamma}" if sched.name == "multistep"
                  else f"factor={sched.factor} patience={sched.patience}")
        rows.append({"run": s.run_name, "model": s.model.name, "lmbda": s.lmbda, "rate": s.rate,
                     "N": s.model.N, "M": s.model.M, "scheduler": f"{sched.name} ({detail})",
                     "epochs": s.trainer.epochs, "max_steps": s.trainer.max_steps,
                     "experiment": s.experiment_name, "overrides": point})
    return rows


def print_plan(rows: list[dict]) -> None:
    import pandas as pd

    table = pd.DataFrame(rows).drop(columns=["overrides"])
    print(table.to_string(index=False))
    print(f"\n{len(rows)} runs planned for experiment={rows[0]['experiment'] if rows else '?'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs, train nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=seminar model=a,b")
    args = parser.parse_args(argv)

    rows = plan(args.overrides)
    print_plan(rows)
    if not args.dry_run:
        print("training and evaluation are not wired into the sweep yet: this is the plan only")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
