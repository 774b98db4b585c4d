"""A ladder on Slurm: every step submitted at once, the fine-tunes queued behind their anchors' job with
--dependency=afterok (and --kill-on-invalid-dep, so that a failed anchor cancels them)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from codec.errors import LicSweepError
from entry import compose
from sweeps.grid import first_job
from sweeps.launch import REPO, multirun_command


def on_slurm(overrides: list[str]) -> bool:
    """Whether these overrides launch through submitit's Slurm launcher (hydra/launcher=slurm)."""
    return "SlurmLauncher" in str(compose(first_job(overrides), with_hydra=True).hydra.launcher.get("_target_", ""))


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
    return Path(str(compose(first_job(step), with_hydra=True).hydra.launcher.submitit_folder)).parent


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
        folder = _submitit_dir(step)
        before = _job_ids(folder)
        process = subprocess.Popen(multirun_command(step, analysis and last), cwd=REPO)
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
