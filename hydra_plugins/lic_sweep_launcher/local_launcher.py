"""Hydra launcher `hydra/launcher=local`: jobs as subprocesses, one per GPU, the rest queued.

hydra-submitit-launcher's submitit_local starts every job at once on the same GPUs; this one
gives each running job its own GPU through CUDA_VISIBLE_DEVICES and starts the next job when a
GPU frees up. Without GPUs, `cpu_jobs` jobs share the cores. Each job runs in its own process
(hydra_plugins/lic_sweep_launcher/job.py) from the config composed here, once, so a crashing job cannot
take the others down; its output goes to job.log in its run directory. A job ends (SIGTERM: it saves
last.pth) when the launcher's process dies, so a killed sweep leaves no job running on behind it.
"""

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
import cloudpickle
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import open_dict
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.lic_sweep_launcher.slots import SlotPool, make_slots

log = logging.getLogger(__name__)


TORCHRUN_ENV = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME",
                "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


@dataclass
class LocalGpuLauncherConf:
    _target_: str = "hydra_plugins.lic_sweep_launcher.local_launcher.LocalGpuLauncher"
    # GPU ids to use (null: CUDA_VISIBLE_DEVICES, else every CUDA device)
    gpus: Optional[List[str]] = None
    jobs_per_gpu: int = 1
    # concurrent jobs on a machine without GPUs (None: one per CPU core)
    cpu_jobs: Optional[int] = None
    poll_seconds: float = 0.5
    env: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/launcher", name="local_gpu", node=LocalGpuLauncherConf,
                             provider="lic-sweep")


class LocalGpuLauncher(Launcher):
    def __init__(self, gpus=None, jobs_per_gpu: int = 1, cpu_jobs: Optional[int] = None, poll_seconds: float = 0.5,
                 env: dict | None = None, **_: Any) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.jobs_per_gpu, self.cpu_jobs, self.poll_seconds = jobs_per_gpu, cpu_jobs, poll_seconds
        self.env = dict(env or {})
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _prepare(self, idx: int, overrides: Sequence[str], spool: Path) -> Tuple[Path, Path]:
        """Compose the job's config (the only time), and pickle it with the task for the job's process."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        path = spool / f"job{idx}.pkl"
        with open(path, "wb") as f:
            cloudpickle.dump({"hydra_context": self.hydra_context, "task_function": self.task_function,
                              "config": sweep_config}, f)
        return job_dir, path

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pool = SlotPool(make_slots(self.gpus, self.jobs_per_gpu, self.cpu_jobs or os.cpu_count() or 1))
        spool = Path(tempfile.mkdtemp(prefix=".launcher-", dir=sweep_dir))
        schedule_path = sweep_dir / "launcher_schedule.jsonl"
        log.info(f"Launching {len(job_overrides)} jobs, at most {len(pool.free)} at once "
                 f"({', '.join(s.name for s in pool.free)})")

        queue = list(enumerate(job_overrides, start=initial_job_idx))
        running: Dict[int, Tuple[subprocess.Popen, Any, Path, float, Any]] = {}
        returns: Dict[int, JobReturn] = {}
        # each job is a run of its own: not in this process's W&B service, nor in a torchrun group it was started in
        base_env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE" and k not in TORCHRUN_ENV
                    and not k.startswith("TORCHELASTIC_")}
        while queue or running:
            while queue and (slot := pool.acquire()) is not None:
                idx, overrides = queue.pop(0)
                job_dir, job_file = self._prepare(idx, overrides, spool)
                job_dir.mkdir(parents=True, exist_ok=True)
                logfile = open(job_dir / "job.log", "ab")
                cmd = [sys.executable, "-m", "hydra_plugins.lic_sweep_launcher.job", str(job_file)]
                env = {**base_env, **self.env, **dict(slot.env)}
                log.info(f"\t#{idx} [{slot.name}] : {' '.join(filter_overrides(overrides))}")
                proc = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=os.getcwd(),
                                        preexec_fn=end_with_parent)
                running[idx] = (proc, slot, job_dir, time.time(), logfile)
            time.sleep(self.poll_seconds)
            for idx, (proc, slot, job_dir, started, logfile) in list(running.items()):
                if proc.poll() is None:
                    continue
                logfile.close()
                pool.release(slot)
                del running[idx]
                with open(schedule_path, "a") as f:
                    f.write(json.dumps({"job": idx, "slot": slot.name, "start": started, "end": time.time(),
                                        "returncode": proc.returncode, "dir": str(job_dir)}) + "\n")
                ret = JobReturn(overrides=list(job_overrides[idx - initial_job_idx]), working_dir=str(job_dir))
                ret.status = JobStatus.COMPLETED if proc.returncode == 0 else JobStatus.FAILED
                ret.return_value = {"returncode": proc.returncode, "log": str(job_dir / "job.log")} \
                    if proc.returncode == 0 else None
                if proc.returncode != 0:
                    log.error(f"job #{idx} failed (exit {proc.returncode}), log: {job_dir / 'job.log'}")
                    ret._return_value = RuntimeError(f"exit code {proc.returncode}, log: {job_dir / 'job.log'}")
                returns[idx] = ret
        for path in spool.glob("*.pkl"):
            path.unlink()
        spool.rmdir()
        return [returns[i] for i in sorted(returns)]


def end_with_parent() -> None:
    """In a child process before it starts (Linux): SIGTERM when its parent process dies (the launcher's
    jobs; sweep.py's multirun)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
