"""What a run directory says about its job: finished (results.json for this config), failed
(failed.json), running (a live .running marker), resumable (a checkpoint, no results), pending."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from codec.checkpoint import write_json_atomic
from codec.errors import LicSweepError

# Settings that do not change what a run computes: a finished run with other values of these
# still counts as done.
_VOLATILE = {"task", "resume", "device", "logger", "sweep_name", "checkpoint", "ladder"}
_VOLATILE_NESTED = {("data", "num_workers"), ("trainer", "log_every_steps"),
                    ("trainer", "checkpoint_every_minutes"), ("trainer", "checkpoint_every_steps"), ("eval", "save_bitstreams"),
                    ("eval", "save_reconstructions"), ("eval", "entropy_coder_device")}


def config_fingerprint(config: dict[str, Any]) -> str:
    kept = {}
    for key, value in config.items():
        if key in _VOLATILE or key == "hydra":
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if (key, k) not in _VOLATILE_NESTED}
        kept[key] = value
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_results(run_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The stored results if this run directory finished with the same config."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("config_fingerprint") == fingerprint else None


def _is_rank_zero() -> bool:
    """Under torchrun only rank 0 keeps the run directory's status files."""
    return os.environ.get("RANK", "0") == "0"


def mark_running(run_dir: Path) -> None:
    """Claim the run directory; a live job already in it (another sweep, same run) is an error."""
    if not _is_rank_zero():
        return
    marker = Path(run_dir) / ".running"
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
                       "slurm_job_id": os.environ.get("SLURM_JOB_ID")}, Path(run_dir) / ".running")
    (Path(run_dir) / "failed.json").unlink(missing_ok=True)


def clear_running(run_dir: Path) -> None:
    if _is_rank_zero():
        (Path(run_dir) / ".running").unlink(missing_ok=True)


def mark_failed(run_dir: Path, exc: BaseException) -> None:
    if not _is_rank_zero():
        return
    try:
        write_json_atomic({"error": f"{type(exc).__name__}: {exc}",
                           "traceback": "".join(traceback.format_exception(exc))[-5000:],
                           "log": str(Path(run_dir) / "run.log"), "time": time.time()}, Path(run_dir) / "failed.json")
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
        # lost by that: the W&B run was finished by the job (codec/job.py), submitit has written the
        # result, log records are flushed as they are written, and loader workers have ended.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # the one way to set a status once the interpreter is exiting

    atexit.register(exit_failed)


def unfinished_run(checkpoint: Path) -> tuple[Path, str] | None:
    """(run directory, state) when `checkpoint` sits in a run directory (<run>/checkpoints/*.pth with the
    run's .hydra) whose run has not finished: failed, running, resumable or pending; else None."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent.parent
    if checkpoint.parent.name != "checkpoints" or not (run_dir / ".hydra").is_dir():
        return None
    state = run_state(run_dir)
    return None if state == "done" else (run_dir, state)


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
    run_dir = Path(run_dir)
    results = run_dir / "results.json"
    if results.is_file():
        if fingerprint is None or finished_results(run_dir, fingerprint) is not None:
            return "done"
        return "stale"
    marker = run_dir / ".running"
    if marker.is_file():
        try:
            if _alive(json.loads(marker.read_text())):
                return "running"
        except (OSError, json.JSONDecodeError):
            pass
    if (run_dir / "failed.json").is_file():
        return "failed"
    if (run_dir / "checkpoints" / "last.pth").is_file():
        return "resumable"
    return "pending"
