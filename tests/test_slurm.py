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

from sweeps.slurm import _job_ids
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


# one at a time (pytest-xdist runs them in one worker): the cluster has two CPUs, which one test's jobs fill
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm"),
              pytest.mark.skipif(not _cluster_up(), reason="no Slurm cluster (.ci/slurm/start.sh)")]

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
    cmd = _sweep_cmd(tmp_path, "model=hyperprior", "lmbda=0.013", "trainer.max_steps=6", "trainer.steps_per_epoch=6",
                     "trainer.checkpoint_every_steps=1")
    code, output, _ = _sweep_requeued_at_first_checkpoint(tmp_path, cmd)
    assert code == 0, output[-4000:]
    results = _results(tmp_path)["hyperprior_lmbda0.013"]
    assert results["train_steps"] == 6
    job_logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert "resuming from" in job_logs


def test_two_tasks_train_one_grid_point_as_one_ddp_job_and_a_requeue_resumes_it(tmp_path):
    """hydra.launcher.tasks_per_node=2: Slurm starts two tasks of one job, which form one gloo process
    group from Slurm's environment (codec.training.distributed.export_slurm_distributed); rank 0 alone logs and writes,
    the replica check after training passes (it raises otherwise), and a requeue (SIGTERM to both tasks)
    stops both after the same step and resumes them."""
    from codec.records.wandb_file import find_runs

    cmd = _sweep_cmd(tmp_path, "model=hyperprior", "lmbda=0.013", "trainer.max_steps=6", "trainer.steps_per_epoch=6",
                     "trainer.checkpoint_every_steps=1", "data.batch_size=2", "hydra.launcher.tasks_per_node=2")
    run_dir = tmp_path / "sweep" / "runs" / "hyperprior_lmbda0.013"
    code, output, job_folder = _sweep_requeued_at_first_checkpoint(tmp_path, cmd, tasks=2)
    assert code == 0, output[-4000:]
    results = _results(tmp_path)["hyperprior_lmbda0.013"]
    assert results["train_steps"] == 6 and results["num_images"] == 1
    logs = {p.name: p.read_text() for p in job_folder.glob("*_log.*")}
    assert {f"{job_folder.name}_0_log.out", f"{job_folder.name}_1_log.out"} <= set(logs)  # two tasks
    assert "DDP: 2 processes (gloo), rank 0 of 2" in logs[f"{job_folder.name}_0_log.out"]
    assert "DDP: 2 processes (gloo), rank 1 of 2" in logs[f"{job_folder.name}_1_log.out"]
    assert "resuming from" in logs[f"{job_folder.name}_0_log.out"]
    # one W&B run, rank 0's, continued after the requeue: rank 1 wrote none of its own
    assert {p.stem.removeprefix("run-") for p in find_runs(run_dir)} == {results["wandb_run_id"]}


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def _ladder(tmp_path, env=None, **popen):
    cmd = _sweep_cmd(tmp_path, "--ladder", "model=factorized", "lmbda=0.0067,0.013", "trainer.max_steps=3",
                     "trainer.steps_per_epoch=3", "ladder.finetune=['trainer.max_steps=3','trainer.steps_per_epoch=3']")
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env or _env(), **popen)


def _output_of(process: subprocess.Popen, timeout: float = 600) -> str:
    """The command's output once it ended (killed if it outlives `timeout`, failing the test)."""
    try:
        return process.communicate(timeout=timeout)[0]
    finally:
        if process.poll() is None:
            process.kill()


def _fine_tune_scripts(tmp_path):
    return list((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh"))


def test_a_ladder_on_slurm_queues_the_fine_tunes_behind_their_anchors_and_outlives_the_sweep(tmp_path):
    """sweep.py --ladder under hydra/launcher=slurm submits every step at once: the anchors' job, then
    the fine-tunes (a job array) with --dependency=afterok:<the anchors' job> and --kill-on-invalid-dep=yes
    (Slurm keeps the order); they train from the anchors' weights once those finished. The sweep's whole
    process group is SIGKILLed once everything is submitted: the jobs run on and finish."""
    import signal

    from codec.models.checkpoint import load_checkpoint

    # the anchor is held after its first step (tests/hold) until the sweep is dead, then released
    held = tmp_path / "held"
    sweep = _ladder(tmp_path, _env(**hold_env(held, 1)), start_new_session=True)
    try:
        wait_for_held(held, 1, lambda: sweep.poll() is None, "the anchor")
        _wait_for(lambda: _fine_tune_scripts(tmp_path) or sweep.poll() is not None, 300, "no fine-tune was submitted")
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        os.killpg(sweep.pid, signal.SIGKILL)
        output = sweep.communicate(timeout=60)[0]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    (held / "release").touch()
    [array] = [line.split("Slurm job ")[1].split(";")[0] for line in output.splitlines()
               if line.startswith("anchors submitted as Slurm job")]
    anchor = tmp_path / "sweep_anchors" / "runs" / "factorized_lmbda0.013"
    tunes = [tmp_path / "sweep" / "runs" / f"factorized_lmbda{lmbda}" for lmbda in ("0.0067", "0.013")]
    assert not (anchor / "results.json").exists()  # killed while the anchor trained
    _wait_for(lambda: all((t / "results.json").is_file() for t in tunes), 600,
              "the fine-tunes did not finish after the sweep's process died")
    scripts = _fine_tune_scripts(tmp_path)
    assert scripts and all(f"#SBATCH --dependency=afterok:{array}\n" in s.read_text()
                           and "#SBATCH --kill-on-invalid-dep=yes\n" in s.read_text() for s in scripts)
    assert not any("--dependency" in s.read_text() for s in (tmp_path / "sweep_anchors" / ".submitit").rglob("*_submission.sh"))
    submitted = min(s.stat().st_mtime for s in scripts)
    for tune in tunes:
        assert load_checkpoint(tune / "checkpoints" / "last.pth")["config"]["init_from"] == \
            str(anchor / "checkpoints" / "last.pth")
        # queued while the anchor trained (submitted before its results existed), started after it ended
        assert submitted < (anchor / "results.json").stat().st_mtime <= (tune / ".hydra" / "config.yaml").stat().st_mtime


def test_a_failed_anchor_cancels_its_fine_tunes(tmp_path):
    """The anchor's job fails (its run directory holds a last.pth that is not a checkpoint): Slurm cancels
    the fine-tunes queued behind it (--kill-on-invalid-dep) instead of leaving them pending for ever, none
    of them runs, and the sweep ends non-zero naming the failure. Fixed and rerun as the message says, the
    new fine-tunes wait for the new anchors' job (not the failed one still in the sweep folder) and finish."""
    broken = tmp_path / "sweep_anchors" / "runs" / "factorized_lmbda0.013" / "checkpoints" / "last.pth"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    sweep = _ladder(tmp_path)
    output = _output_of(sweep)
    assert sweep.returncode != 0, output[-3000:]
    assert "failed.json" in output and "Slurm cancelled the fine-tunes" in output, output[-3000:]
    [job] = _job_ids(tmp_path / "sweep" / ".submitit")  # one array
    # the cluster keeps ended jobs for MinJobAge (600 s, .ci/slurm/start.sh); no accounting database
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30,
                           env=_env()).stdout.splitlines()
    assert shown and all("JobState=CANCELLED" in line and "Reason=DependencyNeverSatisfied" in line
                         for line in shown), shown
    assert not list((tmp_path / "sweep" / "runs").glob("*/.hydra"))  # no fine-tune started
    broken.unlink()
    rerun = _ladder(tmp_path)
    output = _output_of(rerun)
    assert rerun.returncode == 0, output[-3000:]
    [anchors] = [line.split("Slurm job ")[1].split(";")[0] for line in output.splitlines()
                 if line.startswith("anchors submitted as Slurm job")]
    assert int(anchors) > int(job)
    new_scripts = [p for p in _fine_tune_scripts(tmp_path) if p.parent.name.split("_")[0] != job]
    assert new_scripts and all(f"--dependency=afterok:{anchors}\n" in p.read_text() for p in new_scripts)
    assert all((tmp_path / "sweep" / "runs" / f"factorized_lmbda{lmbda}" / "results.json").is_file()
               for lmbda in ("0.0067", "0.013"))
