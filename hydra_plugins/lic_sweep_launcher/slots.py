"""Slots for concurrent jobs on one machine: one per GPU (times jobs_per_gpu), or N CPU slots."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    name: str  # "gpu0", "cpu1"
    env: tuple[tuple[str, str], ...]  # environment for a job in this slot


def visible_gpus() -> list[str]:
    """GPU ids the launcher may hand out: CUDA_VISIBLE_DEVICES if set, else every CUDA device."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def make_slots(gpus: list[str] | None, jobs_per_gpu: int = 1, cpu_jobs: int = 1,
               cpu_count: int | None = None) -> list[Slot]:
    """With GPUs: each job sees exactly one GPU (CUDA_VISIBLE_DEVICES); without: `cpu_jobs` jobs
    share the cores, each with an equal share of threads."""
    gpus = visible_gpus() if gpus is None else [str(g) for g in gpus]
    if gpus:
        return [Slot(f"gpu{g}" + (f".{k}" if jobs_per_gpu > 1 else ""), (("CUDA_VISIBLE_DEVICES", g),))
                for g in gpus for k in range(jobs_per_gpu)]
    cores = cpu_count or os.cpu_count() or 1
    threads = str(max(1, cores // max(1, cpu_jobs)))
    return [Slot(f"cpu{i}", (("CUDA_VISIBLE_DEVICES", ""), ("OMP_NUM_THREADS", threads),
                             ("MKL_NUM_THREADS", threads))) for i in range(max(1, cpu_jobs))]


class SlotPool:
    """Hands out free slots; a slot is never given to two running jobs."""

    def __init__(self, slots: list[Slot]):
        if not slots:
            raise ValueError("no slots to run jobs in")
        self.free = list(slots)
        self.busy: dict[str, Slot] = {}

    def acquire(self) -> Slot | None:
        if not self.free:
            return None
        slot = self.free.pop(0)
        if slot.name in self.busy:
            raise RuntimeError(f"slot {slot.name} handed out twice")
        self.busy[slot.name] = slot
        return slot

    def release(self, slot: Slot) -> None:
        if self.busy.pop(slot.name, None) is None:
            raise RuntimeError(f"slot {slot.name} released but not in use")
        self.free.append(slot)
