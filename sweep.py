"""The grid: every (model, lambda) point of an experiment as one Hydra multirun, then the analysis.

    python sweep.py                                        # experiment=quickstart: 4x4 fine-tunes, ~8 min
    python sweep.py --ladder experiment=mini               # the believable CPU protocol, about an hour
    python sweep.py experiment=seminar data.root=/data/vimeo_septuplet
    python sweep.py model=hyperprior,checkerboard lmbda=0.013,0.025   # narrow the grid
    python sweep.py hydra/launcher=local                   # one job per GPU (see conf/hydra/launcher)
    python sweep.py --dry-run [overrides]                  # print the planned runs only
    python sweep.py status [overrides]                     # done / running / failed / pending
    python sweep.py --ladder [overrides]                   # anchors from scratch, the rest fine-tuned
    python sweep.py --ladder --dry-run [overrides]         # the runs and the ladder's multiruns in order

Running the same sweep again skips finished runs, resumes interrupted ones from last.pth and
reruns failed ones. `python run.py -m ...` runs the same multirun and ends with the same summary.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from codec.errors import LicSweepError
from entry import compose, exit_on_user_error, run_config
from sweep_summary import print_rows, run_rows

REPO = Path(__file__).resolve().parent


def grid_overrides(overrides: list[str]) -> list[list[str]]:
    """One override list per job, expanded by Hydra's own BasicSweeper exactly as `run.py -m` expands
    it: the experiment's hydra.sweeper.params, then the command line (a value given there narrows or
    replaces that axis)."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as exc:  # hydra's OverrideParseException and friends
        raise LicSweepError(f"cannot parse overrides {overrides}: {exc}") from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose(fixed, with_hydra=True).hydra.sweeper.get("params") or {}
    # imported after compose: Hydra's plugin scan re-imports its core plugins (a class imported earlier
    # would no longer be the module's)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    sweeper = BasicSweeper(max_batch_size=None, params=params)
    everything = parser.parse_overrides(sweeper._parse_config() + list(overrides))
    return [job for batch in BasicSweeper.split_arguments(everything, None) for job in batch]


def plan(overrides: list[str], with_cost: bool = False) -> list[dict]:
    """Each job's config (composed once and validated), run directory and config fingerprint, for
    --dry-run, status and the ladder."""
    from codec.job_status import config_fingerprint
    from codec.schema import SchedulerName, as_dict

    from codec.cost import load_table

    rows, images, table = [], {}, load_table() if with_cost else {}
    for job in grid_overrides(overrides):
        cfg = compose(job, with_hydra=True)
        run_dir = REPO / str(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
        c = run_config(cfg, require_data=False)
        sched = c.scheduler
        detail = (f"milestones={list(sched.milestones)} gamma={sched.gamma}" if sched.name == SchedulerName.multistep
                  else f"factor={sched.factor} patience={sched.patience}")
        sweep_dir = str(cfg.hydra.sweep.dir)  # as ${hydra:sweep.dir} gives it to the jobs
        rows.append({"run": c.run_name, "model": c.model.name, "lmbda": c.lmbda, "rate": str(c.rate),
                     "N": c.model.N, "M": c.model.M, "scheduler": f"{sched.name} ({detail})",
                     "epochs": c.trainer.epochs, "max_steps": c.trainer.max_steps, "experiment": c.experiment_name,
                     "run_dir": run_dir, "fingerprint": config_fingerprint(as_dict(c)), "job": job,
                     "finetune": list(c.ladder.finetune), "sweep_dir": sweep_dir,
                     "refine_anchor": c.ladder.refine_anchor, "sweep_name": c.sweep_name})
        if with_cost:  # steps and estimated hours from the measured throughput table (codec/cost.py)
            from codec.cost import run_cost, training_images

            key = (c.data.format, c.data.root, c.data.list_file, c.data.val_fraction)
            if key not in images:
                images[key] = training_images(c)
            rows[-1].update(run_cost(c, table, images[key]))
    return rows


def print_plan(rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows).drop(columns=["run_dir", "fingerprint", "job", "finetune", "sweep_dir", "refine_anchor",
                                             "sweep_name"])
    if "est. hours" in frame:
        frame["est. hours"] = frame["est. hours"].map(lambda h: "?" if h is None or h != h else f"{h:.2f}")
        for column in ("steps/epoch", "total steps"):
            frame[column] = frame[column].map(lambda v: "?" if v is None or v != v else str(int(v)))
    print(frame.to_string(index=False))
    print(f"\n{len(rows)} runs planned for experiment={rows[0]['experiment'] if rows else '?'}")
    if "est. hours" in frame:
        from codec.cost import THROUGHPUT_FILE, device_key

        if (frame["total steps"] == "?").any():
            print("steps unknown where the training data is not there (data.root) and trainer.steps_per_epoch is unset")
        known = [float(h) for h in frame["est. hours"] if h != "?"]
        if known:
            print(f"estimated total: {sum(known):.1f} hours on {device_key()} (from "
                  f"{THROUGHPUT_FILE.relative_to(REPO)}; scaled by MACs per pixel and crop size, not timed)")
        else:
            print(f"no measured throughput for {device_key()} in {THROUGHPUT_FILE.relative_to(REPO)}: run `make bench` "
                  "(or `python -m codec.cost record SWEEP_DIR` after a sweep) on this machine for hour estimates")


def launch(overrides: list[str], analysis: bool) -> int:
    """`python run.py -m` with the same overrides, in this process; its summary callback ends it."""
    import run

    extra = [] if analysis else ["hydra.callbacks.sweep_summary.analysis=false"]
    sys.argv = [str(REPO / "run.py"), "-m", *overrides, *extra]
    try:
        run.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def ladder_steps(overrides: list[str], rows: list[dict]) -> list[list[str]]:
    """The multiruns of a lambda ladder, in order: first the anchors (the highest lambda of each group)
    from scratch for every model, then each group's lambdas fine-tuned from their model's anchor
    (init_from its last.pth; fresh optimizers and schedule; the experiment's `ladder.finetune`
    overrides). A group is a set of rate tiers in which every model has the same channels (one group
    per tier in the protocol; one for all lambdas when an experiment gives both tiers one size), so a
    fine-tune always starts from weights of its own shape.

    With ladder.refine_anchor (the default) the anchors train in a sweep folder of their own
    (<sweep dir>_anchors) and the anchor's lambda is fine-tuned too, so that every point of the curve has
    had the same training: the anchor's and one fine-tune. Without it the anchor is its lambda's point
    (right when the anchors are converged; an anchor short of convergence then sits below the fine-tunes,
    which trained longer)."""
    shapes: dict[str, set] = {}  # tier -> {(model, N, M)}
    lambdas: dict[str, dict[float, str]] = {}  # tier -> {value: text as given}
    for row in rows:  # plan(overrides)
        text = next((o.split("=", 1)[1] for o in row["job"] if o.startswith("lmbda=")), str(row["lmbda"]))
        shapes.setdefault(row["rate"], set()).add((row["model"], row["N"], row["M"]))
        lambdas.setdefault(row["rate"], {})[row["lmbda"]] = text
    groups: dict[frozenset, dict[float, str]] = {}
    for tier, tier_lambdas in lambdas.items():
        groups.setdefault(frozenset(shapes[tier]), {}).update(tier_lambdas)
    anchors = [group[max(group)] for group in groups.values()]
    sweep_dir = rows[0]["sweep_dir"] if rows else "${hydra:sweep.dir}"
    refine = bool(rows) and rows[0]["refine_anchor"]
    if refine:  # the anchors apart, in a sweep folder (and W&B group) of their own
        anchor_dir = f"{sweep_dir.rstrip('/')}_anchors"
        name = f"{rows[0]['sweep_name']}_anchors"
        own = [o for o in overrides if not o.startswith(("sweep_name=", "hydra.sweep.dir="))]
        steps = [[*own, f"sweep_name={name}", f"hydra.sweep.dir={anchor_dir}", f"lmbda={','.join(anchors)}"]]
    else:
        anchor_dir = sweep_dir
        steps = [[*overrides, f"lmbda={','.join(anchors)}"]]
    for anchor, group in zip(anchors, groups.values()):
        tuned = [text for value, text in sorted(group.items()) if refine or text != anchor]
        if tuned:
            anchor_checkpoint = f"{anchor_dir}/runs/${{model.name}}_lmbda{anchor}/checkpoints/last.pth"
            steps.append([*overrides, *rows[0]["finetune"], f"lmbda={','.join(tuned)}",
                          f"init_from='{anchor_checkpoint}'"])
    return steps


def on_slurm(overrides: list[str]) -> bool:
    """Whether these overrides launch through submitit's Slurm launcher (hydra/launcher=slurm)."""
    first_job = grid_overrides(overrides)[0]  # one grid point: compose does not take a sweep's lists
    return "SlurmLauncher" in str(compose(first_job, with_hydra=True).hydra.launcher.get("_target_", ""))


def _job_ids(submitit_dir: Path) -> set[str]:
    """The Slurm job ids submitit has folders for (<id> or <id>_<task>) in this folder."""
    if not submitit_dir.is_dir():
        return set()
    return {p.name.split("_")[0] for p in submitit_dir.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit()}


def _submitted_job_id(submitit_dir: Path, process: subprocess.Popen, before: set[str], timeout_s: float = 600) -> str:
    """The Slurm job id of a multirun's jobs (one job, or one array) once submitit has made its first
    folder, among the ids not in `before` (the folder's, before the multirun started: a rerun's sweep
    folder keeps the earlier runs' jobs); "" if the multirun ended without submitting."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = sorted(_job_ids(submitit_dir) - before, key=int)
        if new:
            return new[0]
        if process.poll() is not None:
            return ""
        time.sleep(0.5)
    raise LicSweepError(f"the anchors' Slurm jobs did not appear in {submitit_dir} within {timeout_s:.0f} s")


def _submitit_dir(step: list[str]) -> Path:
    """The folder submitit keeps a ladder step's jobs in (hydra.launcher.submitit_folder without its %j)."""
    return Path(str(compose(grid_overrides(step)[0], with_hydra=True).hydra.launcher.submitit_folder)).parent


# Slurm's states of a job that has not ended
_NOT_ENDED = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING", "SUSPENDED",
              "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING", "RESV_DEL_HOLD", "SPECIAL_EXIT", "POWER_UP_NODE"}


def _slurm_jobs_ended(job_id: str) -> bool:
    """Whether Slurm has ended every task of this job, or forgotten the job; False while it cannot tell
    (the controller not answering: the caller asks again)."""
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    if out.returncode != 0:
        return "Invalid job id" in out.stderr
    states = {field.split("=", 1)[1] for line in out.stdout.splitlines() for field in line.split()
              if field.startswith("JobState=")}
    return bool(states) and not states & _NOT_ENDED


def launch_ladder_on_slurm(steps: list[list[str]], analysis: bool) -> int:
    """Every ladder step submitted at once: the anchors' job (an array for several) first, then each
    fine-tune step with --dependency=afterok:<anchors' job> (and kill-on-invalid-dep, so a failed anchor cancels its
    fine-tunes instead of leaving them pending). The order is then Slurm's to keep: the fine-tunes queue
    while the anchors train and start when they end. This process waits for all steps to report (each
    is a `run.py -m` of its own); if it dies, the jobs run on, and the rerun skips what finished. When an
    anchor fails, it stops waiting for the fine-tunes once Slurm has cancelled them (submitit, which reads
    job states through sacct, would wait for ever on a cluster that keeps no accounting)."""
    def start(step: list[str], last: bool) -> tuple[subprocess.Popen, str]:
        """The step's `run.py -m` and the Slurm job id it submitted (steps may share a submitit folder:
        each is started once the one before has submitted, and its id is the one new in the folder)."""
        extra = [] if analysis and last else ["hydra.callbacks.sweep_summary.analysis=false"]
        folder = _submitit_dir(step)
        before = _job_ids(folder)
        process = subprocess.Popen([sys.executable, str(REPO / "run.py"), "-m", *step, *extra], cwd=REPO)
        return process, _submitted_job_id(folder, process, before)

    first, array = start(steps[0], len(steps) == 1)
    dependency = [f"+hydra.launcher.additional_parameters.dependency=afterok:{array}",
                  "+hydra.launcher.additional_parameters.kill-on-invalid-dep=yes"] if array else []
    if array:
        print(f"anchors submitted as Slurm job {array}; the fine-tunes are submitted now with "
              f"--dependency=afterok:{array}", flush=True)
    later = [start([*step, *dependency], i == len(steps) - 1) for i, step in enumerate(steps[1:], start=1)]
    if first.wait() and array:
        for process, job in later:
            while job and process.poll() is None and not _slurm_jobs_ended(job):
                time.sleep(2)
            if process.poll() is None:
                process.terminate()
        print(f"\nan anchor of Slurm job {array} did not finish (its summary is above): Slurm cancelled the fine-tunes "
              "queued behind it (--kill-on-invalid-dep=yes). Fix it and rerun the same command: finished runs "
              "are skipped.", flush=True)
    codes = [first.wait(), *(process.wait() for process, _ in later)]
    return next((code for code in codes if code), 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs, train nothing")
    parser.add_argument("--no-analysis", action="store_true", help="skip the RD plot and tables at the end")
    parser.add_argument("--ladder", action="store_true",
                        help="train each rate tier's highest lambda from scratch, then fine-tune the other lambdas "
                             "of the tier from it (init_from), as multiruns in that order")
    parser.add_argument("overrides", nargs="*", help="'status' and/or Hydra overrides, e.g. experiment=seminar")
    args = parser.parse_intermixed_args(argv)
    show_status = bool(args.overrides) and args.overrides[0] == "status"
    overrides = args.overrides[1:] if show_status else args.overrides

    if args.dry_run or show_status:
        rows = plan(overrides, with_cost=args.dry_run)
        if args.ladder:  # each run as its ladder step composes it (fine-tunes: init_from, ladder.finetune)
            steps = ladder_steps(overrides, rows)
            rows = [row for step in steps for row in plan(step, with_cost=args.dry_run)]
        if args.dry_run:
            print_plan(rows)
            for i, step in enumerate(steps if args.ladder else []):
                print(f"ladder step {i + 1}: {' '.join(o for o in step if o not in overrides)}")
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
            print(f"ladder step {i + 1} of {len(steps)}: {' '.join(o for o in step if o not in overrides)}")
        return launch_ladder_on_slurm(steps, analysis=not args.no_analysis)
    for i, step in enumerate(steps):
        print(f"ladder step {i + 1} of {len(steps)}: {' '.join(o for o in step if o not in overrides)}", flush=True)
        code = launch(step, analysis=not args.no_analysis and i == len(steps) - 1)
        if code:  # a fine-tune needs its anchor: stop here; the rerun skips what is done
            return code
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
