"""The grid: every (model, lambda) point of an experiment as one Hydra multirun, then the analysis.

    python sweep.py                                        # experiment=quickstart: 4x4 fine-tunes, ~8 min
    python sweep.py --ladder experiment=mini               # the believable CPU protocol, about an hour
    python sweep.py experiment=seminar data.root=/data/vimeo_septuplet
    python sweep.py model=hyperprior,checkerboard lmbda=0.013,0.025   # narrow the grid
    python sweep.py hydra/launcher=local                   # one job per GPU (see conf/hydra/launcher)
    python sweep.py --dry-run [overrides]                  # print the planned runs only
    python sweep.py --dry-run --for-device "NVIDIA H200" experiment=seminar data.root=...   # hours and loader
                                                           # check with that device's figures (a login node)
    python sweep.py status [overrides]                     # done / running / failed / pending
    python sweep.py --ladder [overrides]                   # anchors from scratch, the rest fine-tuned
    python sweep.py --ladder --dry-run [overrides]         # the runs and the ladder's multiruns in order

Running the same sweep again skips finished runs, resumes interrupted ones from last.pth and
reruns failed ones. `python run.py -m ...` runs the same multirun and ends with the same summary.
"""

from __future__ import annotations

import argparse
import sys

from entry import compose, exit_on_user_error, run_config
from sweeps.grid import grid_overrides
from sweeps.ladder import ladder_steps
from sweeps.launch import launch
from sweeps.plan import plan, print_plan
from sweeps.slurm import launch_ladder_on_slurm, on_slurm
from sweeps.summary import print_rows, run_rows


def _step_line(i: int, steps: list[list[str]], overrides: list[str], of: bool = True) -> str:
    """A ladder step as printed: its number and the overrides it adds to the command line's."""
    added = " ".join(o for o in steps[i] if o not in overrides)
    return f"ladder step {i + 1}{f' of {len(steps)}' if of else ''}: {added}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs, train nothing")
    parser.add_argument("--for-device", default=None, metavar="NAME",
                        help="--dry-run: estimate with the figures measured on NAME (a device in benchmarks/throughput.json "
                             "or outputs/throughput.json, e.g. 'NVIDIA H200'), not this machine's")
    parser.add_argument("--no-analysis", action="store_true", help="skip the RD plot and tables at the end")
    parser.add_argument("--ladder", action="store_true",
                        help="train each rate tier's highest lambda from scratch, then fine-tune the other lambdas "
                             "of the tier from it (init_from), as multiruns in that order")
    parser.add_argument("overrides", nargs="*", help="'status' and/or Hydra overrides, e.g. experiment=seminar")
    args = parser.parse_intermixed_args(argv)
    show_status = bool(args.overrides) and args.overrides[0] == "status"
    overrides = args.overrides[1:] if show_status else args.overrides

    if args.dry_run or show_status:
        rows = plan(overrides, with_cost=args.dry_run, device=args.for_device)
        if args.ladder:  # each run as its ladder step composes it (fine-tunes: init_from, ladder.finetune)
            steps = ladder_steps(overrides, rows)
            rows = [row | {"step": i} for i, step in enumerate(steps)
                    for row in plan(step, with_cost=args.dry_run, device=args.for_device)]
        if args.dry_run:
            print_plan(rows)
            for i, step in enumerate(steps if args.ladder else []):
                print(_step_line(i, steps, overrides, of=False))
        else:
            print_rows(run_rows([r["run_dir"] for r in rows], {r["run_dir"]: r["fingerprint"] for r in rows}))
        return 0
    if not args.ladder:
        for job in grid_overrides(overrides):  # checked before any work: a bad grid point stops the sweep here
            run_config(compose(job), require_data=False)
        return launch(overrides, analysis=not args.no_analysis)
    steps = ladder_steps(overrides, plan(overrides))  # plan() checks every grid point too
    if on_slurm(overrides):
        for i, step in enumerate(steps):
            print(_step_line(i, steps, overrides), flush=True)
        return launch_ladder_on_slurm(steps, analysis=not args.no_analysis)
    for i, step in enumerate(steps):
        print(_step_line(i, steps, overrides), flush=True)
        code = launch(step, analysis=not args.no_analysis and i == len(steps) - 1)
        if code:  # a fine-tune needs its anchor: stop here; the rerun skips what is done
            return code
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
