"""What a run directory says about its job: finished (results.json for this config), failed
(failed.json), running (a live .running marker), resumable (a checkpoint, no results), pending."""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from codec.errors import LicSweepError
from codec.records.files import write_json_atomic
from codec.records.layout import RunDir
from codec.records.record import RunRecord, UnreadableRecord, read_record


def finished_record(run_dir: Path | RunDir, fingerprint: str) -> RunRecord | None:
    """The run's record if this run directory finished with the same config (codec.schema.config_fingerprint)."""
    run = RunDir(run_dir)
    if not run.results.is_file():
        return None
    try:
        record = read_record(run.results)
    except UnreadableRecord:
        return None
    return record if record.provenance.config_fingerprint == fingerprint else None


def _is_rank_zero() -> bool:
    """Under torchrun only rank 0 keeps the run directory's status files."""
    return os.environ.get("RANK", "0") == "0"


def mark_running(run_dir: Path) -> None:
    """Claim the run directory; a live job already in it (another sweep, same run) is an error."""
    if not _is_rank_zero():
        return
    run = RunDir(run_dir)
    marker = run.running
    if marker.is_file():
        try:
            other = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            other = {}
        if other and other.get("pid") != os.getpid() and _alive(other) and other.get("host") == socket.gethostname():
            raise LicSweepError(f"{run_dir} is in use by process {other['pid']} (another sweep running the same "
                                "run?); wait for it, or give this sweep another sweep_name")
        if other and other.get("pid") != os.getpid():
            print(f"{run_dir}: taking over from process {other.get('pid')} on {other.get('host')}, which is no "
                  "longer running (killed?); resuming from its last checkpoint")
    write_json_atomic({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                       "slurm_job_id": os.environ.get("SLURM_JOB_ID")}, marker)
    run.failed.unlink(missing_ok=True)


def clear_running(run_dir: Path) -> None:
    if _is_rank_zero():
        RunDir(run_dir).running.unlink(missing_ok=True)


def mark_failed(run_dir: Path, exc: BaseException) -> None:
    if not _is_rank_zero():
        return
    run = RunDir(run_dir)
    try:
        write_json_atomic({"error": f"{type(exc).__name__}: {exc}",
                           "traceback": "".join(traceback.format_exception(exc))[-5000:],
                           "log": str(run.run_log), "time": time.time()}, run.failed)
    except LicSweepError as record_error:  # e.g. the disk that made the run fail is still full
        print(f"warning: the failure could not be recorded: {record_error}", file=sys.stderr)
    clear_running(run_dir)


def fail_the_cluster_job() -> None:
    """In a Slurm job run by submitit, a failure the multirun recorded (failed.json, the job returning
    {"failed": ...} so that the sweep's summary lists it) still ends the job's process with exit status 1,
    after submitit has stored that result: Slurm then records the job FAILED, and jobs queued behind it
    with --dependency=afterok (the ladder's fine-tunes) are cancelled instead of started. Elsewhere (run.py,
    the basic and local launchers) nothing changes."""
    submitit_job = Path(sys.argv[0]).parts[-3:] == ("submitit", "core", "_submit.py")  # not a process it started
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or not submitit_job:
        return

    def exit_failed() -> None:
        # Registered last, so it runs first and skips the exit handlers registered before it. Nothing is
        # lost by that: the W&B run was finished by the job (codec/runs/job.py), submitit has written the
        # result, log records are flushed as they are written, and loader workers have ended.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # the one way to set a status once the interpreter is exiting

    atexit.register(exit_failed)


def unfinished_run(checkpoint: Path) -> tuple[Path, str] | None:
    """(run directory, state) when `checkpoint` sits in a run directory (<run>/checkpoints/*.pth with the
    run's .hydra) whose run has not finished: failed, running, resumable or pending; else None."""
    run = RunDir.of_checkpoint(checkpoint)
    if run is None:
        return None
    state = run_state(run)
    return None if state == "done" else (run.path, state)


def _alive(marker: dict) -> bool:
    if marker.get("host") != socket.gethostname():
        return True  # another machine (a Slurm node): trust the marker
    try:
        os.kill(int(marker["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def run_state(run_dir: Path, fingerprint: str | None = None) -> str:
    """done | running | failed | resumable | pending (| stale: results of another config)."""
    run = RunDir(run_dir)
    if run.results.is_file():
        if fingerprint is None or finished_record(run, fingerprint) is not None:
            return "done"
        return "stale"
    if run.running.is_file():
        try:
            if _alive(json.loads(run.running.read_text())):
                return "running"
        except (OSError, json.JSONDecodeError):
            pass
    if run.failed.is_file():
        return "failed"
    if run.last_checkpoint.is_file():
        return "resumable"
    return "pending"
