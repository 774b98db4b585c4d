"""The sweep through a real one-node Slurm cluster (submitit_slurm), including a requeue.

Needs the cluster that .ci/slurm/start.sh starts (munged, slurmctld, slurmd on 127.0.0.1);
skipped where `sinfo` finds no idle node. The cluster lives in .ci/slurm/run/ and touches nothing in /etc."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, hold_env, subprocess_env, tiny_overrides, wait_for_held


# The private cluster of .ci/slurm/start.sh, found as every Slurm client finds its cluster: SLURM_CONF
# (.ci/run sources .ci/slurm/run/env); without it, the private cluster's file when one was started.
PRIVATE_CONF = REPO / ".ci" / "slurm" / "run" / "slurm.conf"
SLURM_CONF = os.environ.get("SLURM_CONF") or (str(PRIVATE_CONF) if PRIVATE_CONF.is_file() else "")


def _env(**extra):
    return subprocess_env(SLURM_CONF=SLURM_CONF, **extra)


def _cluster_up() -> bool:
    if not shutil.which("sinfo") or not SLURM_CONF:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20, env=_env())
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not _cluster_up(), reason="no Slurm cluster (.ci/slurm/start.sh)")]

SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20", "device=cpu", "data.num_workers=0"]


def _sweep_cmd(tmp_path, *extra):
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("trainer.max_steps", "trainer.steps_per"))]
    return [sys.executable, "sweep.py", "--no-analysis", *overrides, *SLURM, "eval.max_images=1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]


def _results(tmp_path):
    return {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep" / "runs").glob("*/results.json")}


def test_grid_through_submitit_slurm(tmp_path):
    out = subprocess.run(_sweep_cmd(tmp_path, "model=factorized,hyperprior", "lmbda=0.013", "trainer.max_steps=3",
                                    "trainer.steps_per_epoch=3"),
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = _results(tmp_path)
    assert set(results) == {"factorized_lmbda0.013", "hyperprior_lmbda0.013"}
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # each grid point ran as its own Slurm job


def _start_when_requeued(job_id: str) -> None:
    """Slurm holds a requeued job for about two minutes (reason BeginTime); once it is pending, make it
    eligible now (what an impatient user would do: scontrol update StartTime=now), to keep CI short."""
    deadline = time.time() + 120
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                               timeout=30, env=_env()).stdout.strip()
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30, env=_env())
            return
        time.sleep(0.5)


def _sweep_requeued_at_first_checkpoint(tmp_path, cmd, tasks: int = 1) -> tuple[int, str, Path]:
    """Run the sweep, `scontrol requeue` its one job while its `tasks` tasks are held after step 1 and
    its checkpoint (tests/hold), wait for the end: (return code, output, the job's submitit folder)."""
    held = tmp_path / "held"
    sweep = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(**hold_env(held, 1)))
    try:
        wait_for_held(held, tasks, lambda: sweep.poll() is None, "the job")
        [job_folder] = [p for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.is_dir()]  # the job id
        subprocess.run(["scontrol", "requeue", job_folder.name], check=True, timeout=30, env=_env())
        _start_when_requeued(job_folder.name)
        output, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    return sweep.returncode, output, job_folder


def test_requeued_job_resumes_from_its_checkpoint(tmp_path):
    cmd = _sweep_cmd(tmp_path, "model=hyperprior", "lmbda=0.013", "trainer.max_steps=60", "trainer.steps_per_epoch=60",
                     "trainer.checkpoint_every_steps=1")
    code, output, _ = _sweep_requeued_at_first_checkpoint(tmp_path, cmd)
    assert code == 0, output[-4000:]
    results = _results(tmp_path)["hyperprior_lmbda0.013"]
    assert results["train_steps"] == 60
    job_logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert "resuming from" in job_logs


def test_two_tasks_train_one_grid_point_as_one_ddp_job_and_a_requeue_resumes_it(tmp_path):
    """hydra.launcher.tasks_per_node=2: Slurm starts two tasks of one job, which form one gloo process
    group from Slurm's environment (codec.train.export_slurm_distributed); rank 0 alone logs and writes,
    the replica check after training passes (it raises otherwise), and a requeue (SIGTERM to both tasks)
    stops both after the same step and resumes them."""
    from analysis.wandb_offline import find_runs

    cmd = _sweep_cmd(tmp_path, "model=hyperprior", "lmbda=0.013", "trainer.max_steps=40", "trainer.steps_per_epoch=40",
                     "trainer.checkpoint_every_steps=1", "data.batch_size=2", "hydra.launcher.tasks_per_node=2")
    run_dir = tmp_path / "sweep" / "runs" / "hyperprior_lmbda0.013"
    code, output, job_folder = _sweep_requeued_at_first_checkpoint(tmp_path, cmd, tasks=2)
    assert code == 0, output[-4000:]
    results = _results(tmp_path)["hyperprior_lmbda0.013"]
    assert results["train_steps"] == 40 and results["num_images"] == 1
    logs = {p.name: p.read_text() for p in job_folder.glob("*_log.*")}
    assert {f"{job_folder.name}_0_log.out", f"{job_folder.name}_1_log.out"} <= set(logs)  # two tasks
    assert "DDP: 2 processes (gloo), rank 0 of 2" in logs[f"{job_folder.name}_0_log.out"]
    assert "DDP: 2 processes (gloo), rank 1 of 2" in logs[f"{job_folder.name}_1_log.out"]
    assert "resuming from" in logs[f"{job_folder.name}_0_log.out"]
    # one W&B run, rank 0's, continued after the requeue: rank 1 wrote none of its own
    assert {p.stem.removeprefix("run-") for p in find_runs(run_dir)} == {results["wandb_run_id"]}


def test_a_ladder_on_slurm_queues_the_fine_tunes_behind_their_anchors(tmp_path):
    """sweep.py --ladder under hydra/launcher=slurm submits every step at once: the anchors' job, then
    the fine-tunes (a job array) with --dependency=afterok:<the anchors' job> (Slurm keeps the order); they train from the
    anchors' weights once those finished."""
    from codec.checkpoint import load_checkpoint

    # an anchor long enough (400 tiny steps) to be still training when the fine-tunes are submitted
    cmd = _sweep_cmd(tmp_path, "--ladder", "model=factorized", "lmbda=0.0067,0.013", "trainer.max_steps=400",
                     "trainer.steps_per_epoch=400", "ladder.finetune=['trainer.max_steps=3','trainer.steps_per_epoch=3']")
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [array] = [line.split("Slurm job ")[1].split(";")[0] for line in out.stdout.splitlines()
               if line.startswith("anchors submitted as Slurm job")]
    scripts = list((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh"))
    assert scripts and all(f"#SBATCH --dependency=afterok:{array}" in s.read_text() for s in scripts)
    anchor = tmp_path / "sweep_anchors" / "runs" / "factorized_lmbda0.013"
    assert not any("--dependency" in s.read_text() for s in (tmp_path / "sweep_anchors" / ".submitit").rglob("*_submission.sh"))
    for lmbda in ("0.0067", "0.013"):
        tune = tmp_path / "sweep" / "runs" / f"factorized_lmbda{lmbda}"
        assert load_checkpoint(tune / "checkpoints" / "last.pth")["config"]["init_from"] == \
            str(anchor / "checkpoints" / "last.pth")
        # queued while the anchor trained (submitted before its results existed), started after it ended
        submitted = min(s.stat().st_mtime for s in scripts)
        assert submitted < (anchor / "results.json").stat().st_mtime <= (tune / ".hydra" / "config.yaml").stat().st_mtime
