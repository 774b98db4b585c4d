"""Resume is exact wherever a kill lands: a real run is SIGKILLed (its whole process group, through
tests/killpoint.py) at a chosen point, the same command is run again, and the final weights, results and
W&B run must be those of the uninterrupted run.

Settings: 3 epochs of 3 steps, last.pth also every 2 steps, so kills land mid-epoch (after a step
checkpoint), at epoch boundaries, in validation, inside the atomic writes and in evaluation."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from codec.records.wandb_file import find_runs, read_run
import codec.records.files
from codec.records.files import CannotWrite
from codec.models.checkpoint import load_checkpoint
from codec.runs.job import train_and_evaluate
from codec.models.registry import REGISTRY
from tests.conftest import REPO, config_for, hold_env, subprocess_env, tiny_overrides, wait_for_held

SETTINGS = ("trainer.epochs=3", "trainer.steps_per_epoch=3", "trainer.max_steps=null", "trainer.checkpoint_every_steps=2",
            "eval.max_images=1", "lmbda=0.0067")
STEPS = 9
WEIGHT_TOLERANCE = 1e-6


def _command(tmp_path, model, run_dir, point=None):
    overrides = [*tiny_overrides(tmp_path, f"model={model}", *SETTINGS), f"hydra.run.dir={run_dir}"]
    return [sys.executable, *(["tests/killpoint.py", point] if point else ["run.py"]), *overrides]


def _run(cmd, expect):
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True,
                         env=subprocess_env(OMP_NUM_THREADS="1"))
    assert out.returncode == expect, f"{cmd[1:3]}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


class Baselines:
    """Each model's uninterrupted run, made once per test session (under one folder, whose evaluation
    images every harness run shares) and compared against by every kill test."""

    def __init__(self, root):
        self.root, self._done, self._lock = root, {}, threading.Lock()

    def __call__(self, model):
        with self._lock:
            lock = self._done.setdefault(model, threading.Lock())
        with lock:
            run_dir = self.root / f"{model}_straight"
            if not (run_dir / "results.json").is_file():
                _run(_command(self.root, model, run_dir), 0)
            return run_dir


@pytest.fixture(scope="session")
def straight(tmp_path_factory):
    return Baselines(tmp_path_factory.mktemp("resume_harness"))


def _killed_then_resumed(root, model, points, name):
    """SIGKILL at each point in turn, each time rerunning the same command (a job preempted again and
    again), then the rerun that finishes; its output, with the checks after each kill's rerun folded
    into the final one: a resume that went wrong anywhere in the chain shows in the final weights."""
    run_dir = root / name
    for i, point in enumerate(points):
        killed = _run(_command(root, model, run_dir, point), -9)
        if i and points[i - 1] not in BEFORE_ANY_CHECKPOINT:  # killpoint flushes stdout before the kill
            assert "resuming from" in killed.stdout, (name, point, killed.stdout[-2000:])
    resumed = _run(_command(root, model, run_dir), 0)
    if points[-1] == "evaluation":  # training had ended: the rerun resumes at the last step and only evaluates
        assert re.search(rf"resuming from .*: epoch 3, step {STEPS}\b", resumed.stdout), (name, resumed.stdout[-2000:])
    return run_dir, resumed.stdout


def _max_weight_difference(a_dir, b_dir) -> float:
    a = load_checkpoint(a_dir / "checkpoints" / "last.pth")["state_dict"]
    b = load_checkpoint(b_dir / "checkpoints" / "last.pth")["state_dict"]
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def _check_same_as_straight(straight, run_dir, point, resumed_stdout):
    diff = _max_weight_difference(straight, run_dir)
    assert diff <= WEIGHT_TOLERANCE, f"{run_dir.name}: weights differ by {diff:.3g} after a kill at {point}"
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert (ckpt["step"], ckpt["epoch"]) == (STEPS, 3)
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (run_dir, straight))
    for key in ("bpp", "psnr", "bits", "train_steps", "best_val_loss"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), (point, key)
    # one W&B run, continued under the same id, finished, its summary complete
    runs = [read_run(p) for p in find_runs(run_dir)]
    assert {r.run_id for r in runs} == {ckpt["wandb_run_id"]} == {ours["wandb_run_id"]}, point
    final = max(runs, key=lambda r: r.path.parent.name)
    assert final.state == "finished" and final.summary["bpp"] == pytest.approx(ours["bpp"])
    assert final.summary["train_steps"] == STEPS
    # the history is complete from the checkpoint on: every epoch that ended after the resume step is
    # there (what the killed process logged before is W&B's to keep or lose: its service died with it)
    resumed = re.search(r"resuming from .*: epoch \d+, step (\d+)", resumed_stdout)
    resumed_at = int(resumed.group(1)) if resumed else 0  # killed before the first checkpoint: started over
    val_steps = {h["_step"] for r in runs for h in r.history if "val/loss" in h}
    assert {s for s in range(3, STEPS + 1, 3) if s > resumed_at} <= val_steps, (point, resumed_at, val_steps)
    assert not (run_dir / ".running").exists() and not (run_dir / "failed.json").exists()
    return diff


def _check(straight, plan):
    """plan: (model, points) pairs, each one chain of kills into one run directory; two chains at a time
    (one single-threaded process each: the machine has two cores). The weight difference per chain."""
    def one(item):
        model, points = item
        name = f"{model}_" + "+".join(p.replace(":", "_") for p in points)
        run_dir, stdout = _killed_then_resumed(straight.root, model, points, name)
        return _check_same_as_straight(straight(model), run_dir, points, stdout)

    with ThreadPoolExecutor(max_workers=2) as pool:
        figures = dict(zip([f"{m} {' > '.join(p)}" for m, p in plan], pool.map(one, plan)))
    print("max weight difference per kill chain:", figures)
    return figures


# The distinct situations a kill can leave, in the order a run meets them: before the first checkpoint
# (the rerun starts over, in the same W&B run), during the write of best.pth (temporary file, no rename),
# right after an epoch's last.pth, mid-epoch after a step checkpoint (step 5: after step 4's, inside
# epoch 2), during validation, during the write of last.pth, during evaluation.
CHAIN = ["step:1", "write:best.pth:1", "epoch_end:1", "step:5", "validation:2", "write:last.pth:2", "evaluation"]
# kills that leave no checkpoint to resume from (last.pth is written every 2 steps): the rerun starts over
BEFORE_ANY_CHECKPOINT = {"step:1"}
# What differs between models in a resume is the state they save (optimizers, the entropy models'
# buffers, a context model) and how they are coded: mid-epoch resume and evaluation for every model.
PER_MODEL = ["step:5", "evaluation"]


@pytest.mark.xdist_group("resume_harness")  # with the exhaustive test, so that both share the baselines
def test_every_kill_situation_resumes_identically(straight):
    """The scale hyperprior killed at every situation in one chain of reruns; every other registered model
    killed mid-epoch and in evaluation. Each ends with the uninterrupted run's weights, results and one
    finished W&B run."""
    plan = [("hyperprior", CHAIN), *[(m, PER_MODEL) for m in REGISTRY if m != "hyperprior"]]
    _check(straight, plan)


@pytest.mark.exhaustive
@pytest.mark.xdist_group("resume_harness")
def test_every_kill_point_alone_for_every_model_and_every_step(straight):
    """The release check (make test-exhaustive): each point of the chain alone, for every registered model,
    and a kill after every one of the nine steps for the scale hyperprior."""
    plan = [(m, [p]) for m in REGISTRY for p in CHAIN]
    plan += [("hyperprior", [f"step:{s}"]) for s in range(1, STEPS + 1) if f"step:{s}" not in CHAIN]
    figures = _check(straight, plan)
    assert all(diff <= WEIGHT_TOLERANCE for diff in figures.values())


def test_a_kill_between_temporary_file_and_rename_leaves_the_previous_checkpoint(tmp_path):
    """A write interrupted before its rename leaves the old last.pth readable and a stray temporary file,
    which the resumed run ignores (and the next write replaces nothing of)."""
    run_dir = tmp_path / "run"
    _run(_command(tmp_path, "factorized", run_dir, "write:last.pth:2"), -9)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert ckpt["step"] == 6 and ckpt["epoch"] == 1  # the step-6 checkpoint, before epoch 2's end
    assert list((run_dir / "checkpoints").glob(".last.pth.*.tmp"))
    assert torch.isfinite(next(iter(ckpt["state_dict"].values()))).all()


@pytest.mark.parametrize("code, failing, target", [
    (errno.ENOSPC, "fsync", "last.pth"),  # the disk fills while a checkpoint is written
    (errno.EACCES, "mkstemp", "results.json"),  # the run folder becomes read-only before the results
])
def test_a_failed_write_ends_the_run_naming_the_path_and_the_rerun_resumes(tmp_path, monkeypatch, code, failing,
                                                                            target):
    config = config_for(tiny_overrides(tmp_path, "model=factorized", *SETTINGS))
    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    train_and_evaluate(config, straight)
    real = {"fsync": os.fsync, "mkstemp": codec.records.files.tempfile.mkstemp}[failing]
    writes = {"count": 0}

    def fail(*args, **kwargs):
        name = kwargs.get("prefix", "") if failing == "mkstemp" else os.readlink(f"/proc/self/fd/{args[0]}")
        if f".{target}." in os.path.basename(name):
            writes["count"] += 1
            if writes["count"] == 3:  # a few good writes first
                raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(codec.records.files.os if failing == "fsync" else codec.records.files.tempfile, failing, fail)
    if target == "results.json":  # fail the first results write
        writes["count"] = 2
    with pytest.raises(CannotWrite, match=rf"cannot write {run_dir / '*'}.*{target}: {os.strerror(code)} "
                                          rf"\({errno.errorcode[code]}\)"):
        train_and_evaluate(config, run_dir)
    monkeypatch.undo()
    # nothing lost: the last good checkpoint loads, no temporary file is left, the W&B run is readable
    good = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert not list((run_dir / "checkpoints").glob("*.tmp")) and not (run_dir / "results.json").exists()
    first = read_run(find_runs(run_dir)[0])
    assert first.state == "failed" and first.run_id == good["wandb_run_id"]
    summary = train_and_evaluate(config, run_dir)  # the rerun resumes and finishes
    assert summary["train_steps"] == STEPS and _max_weight_difference(straight, run_dir) <= WEIGHT_TOLERANCE
    assert json.loads((run_dir / "results.json").read_text())["bpp"] == \
        json.loads((straight / "results.json").read_text())["bpp"]


def _torchrun(tmp_path, run_dir, script, *extra):
    overrides = tiny_overrides(tmp_path, "model=hyperprior", "device=cpu", *SETTINGS, "data.batch_size=2", *extra)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *script, *overrides,
            f"hydra.run.dir={run_dir}"]


def test_killing_one_ddp_rank_ends_the_job_and_the_rerun_resumes(tmp_path):
    """Rank 1 of a 2-process gloo run is SIGKILLed alone: torchrun ends the job (rank 0 does not hang in
    its collective), and the same command resumes from rank 0's last checkpoint to the same weights."""
    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    _run(_torchrun(tmp_path, straight, ["run.py"]), 0)
    start = time.monotonic()
    # the subprocess limit is above the bound asserted below, so that the assertion (not the limit) decides
    killed = subprocess.run(_torchrun(tmp_path, run_dir, ["tests/killpoint.py", "rank_step:1:5"]), cwd=REPO,
                            capture_output=True, text=True, timeout=600, start_new_session=True,
                            env=subprocess_env(OMP_NUM_THREADS="1"))
    assert killed.returncode != 0 and time.monotonic() - start < 400
    assert "exitcode  : -9" in killed.stderr or "Signal 9" in killed.stderr, killed.stderr[-2000:]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pth")["step"] == 4
    from codec.records.status import run_state

    assert run_state(run_dir) in ("failed", "resumable")  # rank 0 recorded the broken collective, or was killed
    resumed = _run(_torchrun(tmp_path, run_dir, ["run.py"]), 0)
    assert "resuming from" in resumed.stdout and "epoch 1, step 4" in resumed.stdout
    assert _max_weight_difference(straight, run_dir) <= WEIGHT_TOLERANCE
    assert json.loads((run_dir / "results.json").read_text())["bpp"] == \
        json.loads((straight / "results.json").read_text())["bpp"]


@pytest.mark.slow
def test_a_killed_sweep_reruns_to_the_uninterrupted_sweeps_results(tmp_path):
    """SIGKILL of sweep.py alone (the parent) while two jobs run under the local launcher: the jobs end
    too (saving last.pth), no live .running marker blocks the rerun, and the rerun's results equal an
    uninterrupted sweep's."""
    def sweep(sweep_dir, *extra):
        overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("trainer.max_steps", "trainer.steps"))]
        return [sys.executable, "sweep.py", "--no-analysis", *overrides, "model=factorized,hyperprior",
                "lmbda=0.0067", "trainer.epochs=2", "trainer.steps_per_epoch=5", "trainer.max_steps=null",
                "trainer.checkpoint_every_steps=5", "eval.max_images=1", "hydra/launcher=local",
                "hydra.launcher.cpu_jobs=2", f"hydra.sweep.dir={sweep_dir}", *extra]

    _run(sweep(tmp_path / "straight"), 0)
    # both jobs are held at step 5 (tests/hold) when the sweep is killed: on a slow machine one tiny job
    # could otherwise finish before the other wrote its first checkpoint
    held = tmp_path / "held"
    proc = subprocess.Popen(sweep(tmp_path / "killed"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=subprocess_env(OMP_NUM_THREADS="1", **hold_env(held, 5)))
    checkpoints = [tmp_path / "killed" / "runs" / f"{m}_lmbda0.0067" / "checkpoints" / "last.pth"
                   for m in ("factorized", "hyperprior")]
    wait_for_held(held, 2, lambda: proc.poll() is None, "the sweep's jobs")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from codec.records.status import run_state

    deadline = time.monotonic() + 240
    while any(run_state(p.parent.parent) == "running" for p in checkpoints):  # the jobs end with their parent
        assert time.monotonic() < deadline, "a job outlived the killed sweep"
        time.sleep(0.5)
    assert [load_checkpoint(p)["step"] for p in checkpoints] == [5, 5]
    assert all(run_state(p.parent.parent) == "resumable" for p in checkpoints)
    _run(sweep(tmp_path / "killed"), 0)
    for m in ("factorized", "hyperprior"):
        a, b = (json.loads((tmp_path / d / "runs" / f"{m}_lmbda0.0067" / "results.json").read_text())
                for d in ("straight", "killed"))
        assert (a["bpp"], a["psnr"], a["bits"], a["train_steps"]) == (b["bpp"], b["psnr"], b["bits"], b["train_steps"])
