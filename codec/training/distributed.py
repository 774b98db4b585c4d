"""Devices and distributed training: torchrun's and Slurm's environment (several Slurm tasks of one grid point
make one DDP job), the device a run uses."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from codec.errors import LicSweepError


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: bool = False  # in a torch.distributed process group (DDP), even of one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def export_slurm_distributed() -> bool:
    """One grid point on several GPUs under Slurm: a job step with several tasks (submitit's launcher
    with tasks_per_node > 1 or nodes > 1, or `srun -n N python run.py ...`) starts one process per task;
    this exports torch.distributed's environment (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) from
    Slurm's, with submitit's helper, so that they form one process group. True when it did. torchrun's
    own variables, or a single task, leave the environment as it is."""
    if "WORLD_SIZE" in os.environ or "SLURM_PROCID" not in os.environ:
        return False
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1"))) <= 1:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    # each task keeps every GPU of its node visible and takes cuda:LOCAL_RANK (pick_device)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def init_distributed(device_setting: str) -> Distributed:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK, or Slurm's tasks do (export_slurm_distributed); NCCL on
    CUDA, gloo on CPU. Under torchrun even one process joins a process group (`torchrun --nproc_per_node=1`
    runs the DDP code path on a one-GPU machine)."""
    export_slurm_distributed()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device_setting != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    ddp = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), group=True)
    print(f"DDP: {ddp.world_size} processes ({dist.get_backend()}), rank {ddp.rank} of {ddp.world_size}", flush=True)
    return ddp


def leave_distributed(ddp: Distributed) -> None:
    """The end of a DDP job: leave the process group (NCCL warns at exit about one never destroyed)."""
    if ddp.group and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(setting: str, ddp: Distributed) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LicSweepError(f"device={setting} but CUDA is not available; use device=cpu or device=auto")
        if ddp.group:
            return torch.device("cuda", ddp.local_rank)
    return torch.device(setting)
