"""The grid: every (model, lambda) point of an experiment as one Hydra multirun, then the analysis.

    python sweep.py                                        # experiment=quickstart, the whole 4x4 grid
    python sweep.py experiment=seminar data.root=/data/vimeo_septuplet
    python sweep.py model=hyperprior,checkerboard lmbda=0.013,0.025   # narrow the grid
    python sweep.py hydra/launcher=local                   # one job per GPU (see conf/hydra/launcher)
    python sweep.py --dry-run [overrides]                  # print the planned runs only
    python sweep.py status [overrides]                     # done / running / failed / pending

Running the same sweep again skips finished runs, resumes interrupted ones from last.pth and
reruns failed ones.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from codec.errors import LicSweepError
from entry import check_config, compose, exit_on_user_error, resolved_dict

REPO = Path(__file__).resolve().parent


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
    from codec.job_status import config_fingerprint, run_state

    rows = []
    for point in grid_overrides(overrides):
        cfg = compose(point, with_hydra=True)
        run_dir = REPO / str(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
        with open_dict(cfg):
            del cfg["hydra"]
        s = check_config(cfg)
        values = resolved_dict(cfg, throw_on_missing=False)
        sched = s.scheduler
        detail = (f"milestones={list(sched.milestones)} gamma={sched.gamma}" if sched.name == "multistep"
                  else f"factor={sched.factor} patience={sched.patience}")
        rows.append({"run": s.run_name, "model": s.model.name, "lmbda": s.lmbda, "rate": s.rate,
                     "N": s.model.N, "M": s.model.M, "scheduler": f"{sched.name} ({detail})",
                     "epochs": s.trainer.epochs, "max_steps": s.trainer.max_steps,
                     "experiment": s.experiment_name, "sweep": s.sweep_name, "overrides": point,
                     "run_dir": run_dir, "state": run_state(run_dir, config_fingerprint(values))})
    return rows


def print_plan(rows: list[dict]) -> None:
    import pandas as pd

    table = pd.DataFrame(rows).drop(columns=["overrides", "run_dir", "sweep", "state"])
    print(table.to_string(index=False))
    print(f"\n{len(rows)} runs planned for experiment={rows[0]['experiment'] if rows else '?'}")


def print_status(rows: list[dict]) -> dict[str, int]:
    import json

    import pandas as pd

    shown = []
    for r in rows:
        bpp = psnr = note = ""
        if r["state"] == "done":
            res = json.loads((r["run_dir"] / "results.json").read_text())
            bpp, psnr = f"{res['bpp']:.4f}", f"{res['psnr']:.2f}"
        elif r["state"] == "failed":
            err = json.loads((r["run_dir"] / "failed.json").read_text())
            note = f"{err['error'][:80]} (see {r['run_dir'] / 'failed.json'})"
        shown.append({"run": r["run"], "state": r["state"], "bpp": bpp, "psnr": psnr, "note": note})
    print(pd.DataFrame(shown).to_string(index=False))
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "failed", "resumable", "pending", "stale")}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(rows)} runs")
    return counts


def launch(overrides: list[str]) -> int:
    """`run.py -m` with the same overrides: Hydra expands the same grid as plan()."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    cmd = [sys.executable, str(REPO / "run.py"), "-m", *overrides]
    print("launching: " + " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs, train nothing")
    parser.add_argument("--no-analysis", action="store_true", help="skip the RD plot and tables at the end")
    parser.add_argument("overrides", nargs="*", help="'status' and/or Hydra overrides, e.g. experiment=seminar")
    args = parser.parse_intermixed_args(argv)
    show_status = bool(args.overrides) and args.overrides[0] == "status"
    overrides = args.overrides[1:] if show_status else args.overrides

    rows = plan(overrides)
    if args.dry_run:
        print_plan(rows)
        return 0
    if show_status:
        print_status(rows)
        return 0
    print_plan(rows)
    start = time.monotonic()
    launch(overrides)
    rows = plan(overrides)
    print(f"\nsweep {rows[0]['sweep']} finished in {time.monotonic() - start:.0f} s:")
    counts = print_status(rows)
    sweep_dir = rows[0]["run_dir"].parent.parent
    if not args.no_analysis and counts["done"]:
        from analysis.report import build_report

        report = build_report(runs_root=sweep_dir, out_dir=sweep_dir / "report", source="offline")
        print(f"\nRD plot: {report['rd_plot']}\nresults table: {report['results_table']}")
    failed = [r for r in rows if r["state"] != "done"]
    for r in failed:
        logs = [p for p in (r["run_dir"] / "failed.json", r["run_dir"] / "job.log", r["run_dir"] / "run.log")
                if p.exists()]
        print(f"not done: {r['run']} ({r['state']}), see {', '.join(map(str, logs)) or r['run_dir']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
