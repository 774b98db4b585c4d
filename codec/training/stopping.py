"""Stopping a training run on a signal, resumably: SIGTERM, SIGUSR1 or SIGUSR2 (Slurm's time-out and
preemption, `scontrol requeue`, `kill`) sets a flag; the loop stops after the current step, saves
last.pth, then hands the signal over to the job system (StopSignals.hand_over)."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopSignals:
    """While entered (in the main thread), the stop signals set `received` instead of their handlers."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _on_signal(self, signum, _frame) -> None:
        self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name

    def agreed(self, in_group: bool, device: torch.device) -> int | None:
        """The stop signal, the same on every rank: under DDP a signal that reached any rank stops all of
        them after the same step (one all-reduce of a number per step), so rank 0 saves last.pth while
        the others wait with it instead of hanging in the next step's collective, or dying mid-step and
        cutting rank 0's connection (which a `scontrol requeue` of a 2-task job did)."""
        if in_group:
            flag = torch.tensor([self.received or 0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.received = int(flag.item()) or None
        return self.received

    def hand_over(self, saved_in) -> None:
        """After last.pth is saved: let the job system finish its part of the signal.

        submitit's SIGUSR2 handler (time-out, preemption) requeues the job and exits. A Slurm
        requeue (`scontrol requeue`) or preemption sends SIGTERM and kills the job a little later:
        returning now would let submitit record the job as finished, so wait for the kill; the
        requeued job resumes from last.pth. Outside Slurm, SIGTERM ends the process. SIGUSR1
        (and SIGUSR2 without submitit) only stop this run, which the next command resumes."""
        previous = self._previous.get(self.received)
        if callable(previous):
            previous(self.received, None)
        if self.received == signal.SIGTERM:
            if os.environ.get("SLURM_JOB_ID"):
                tqdm.write("SIGTERM in a Slurm job: last.pth saved, waiting for Slurm to end and requeue the job")
                while True:
                    time.sleep(60)
            # A plain `kill`: end the process (and a sweep running in it), resumable from last.pth.
            tqdm.write(f"SIGTERM: last.pth saved in {saved_in}; rerun the same command to resume")
            raise SystemExit(128 + signal.SIGTERM)
