"""sweep.py: small multiruns with the basic and the local launcher, idempotency, failures, status."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_plugins.lic_sweep_launcher.slots import SlotPool, make_slots
from sweeps.plan import plan
from tests.conftest import REPO, subprocess_env, tiny_overrides


def _sweep(tmp_path, *args, timeout=600, last=(), env=None):
    """sweep.py ARGS with the tests' tiny settings; `last`: overrides that win over those."""
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("trainer.max_steps", "trainer.steps_per"))]
    cmd = [sys.executable, "sweep.py", *args, *overrides, "trainer.max_steps=3", "trainer.steps_per_epoch=3",
           "eval.max_images=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", *last]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env() | (env or {}))


def _results(tmp_path):
    return {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep" / "runs").glob("*/results.json")}


GRID = ("model=factorized,hyperprior", "lmbda=0.0067,0.0483")
RUNS = {"factorized_lmbda0.0067", "factorized_lmbda0.0483", "hyperprior_lmbda0.0067", "hyperprior_lmbda0.0483"}


def test_basic_launcher_grid_then_rerun_skips_and_resumes(tmp_path):
    out = _sweep(tmp_path, *GRID, "hydra/launcher=basic")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = _results(tmp_path)
    assert set(results) == RUNS
    assert {r["group"] for r in results.values()} == {"quickstart_scratch"}
    assert "RD plot:" in out.stdout and (tmp_path / "sweep" / "report" / "rd_psnr.png").is_file()
    assert "4 done of 4 runs" in out.stdout

    # a finished run is skipped; one with a checkpoint but no results resumes; a failed one reruns; a
    # .running marker left by a killed job (its process is gone) is taken over, with a message
    runs = tmp_path / "sweep" / "runs"
    for name in ("hyperprior_lmbda0.0483", "factorized_lmbda0.0067", "factorized_lmbda0.0483"):
        (runs / name / "results.json").unlink()
    (runs / "factorized_lmbda0.0067" / "failed.json").write_text(json.dumps({"error": "RuntimeError: boom"}))
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a pid no process can have
    (runs / "factorized_lmbda0.0483" / ".running").write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    status = _sweep(tmp_path, "status", *GRID)
    assert re.search(r"factorized_lmbda0\.0067\s.*failed", status.stdout), status.stdout
    assert "1 done, 1 failed, 2 resumable of 4 runs" in status.stdout, status.stdout
    out = _sweep(tmp_path, *GRID, "hydra/launcher=basic")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("already finished") == 1 and len(re.findall(r"resuming from \S+: epoch", out.stdout)) == 3
    assert f"taking over from process {dead}" in out.stdout
    assert "4 done of 4 runs" in out.stdout and set(_results(tmp_path)) == RUNS
    assert not list(runs.glob("*/failed.json")) and not list(runs.glob("*/.running"))

    # a run whose results came from another config is stale: the next sweep reruns it (here: it resumes
    # from its last checkpoint and trains the extra step), and skips the others
    longer = ("model=factorized,hyperprior", "lmbda=0.0067,0.0483", "hydra/launcher=basic")
    status = _sweep(tmp_path, "status", *longer, last=["trainer.epochs=2", "trainer.max_steps=4"])
    assert "4 stale of 4 runs" in status.stdout, status.stdout
    out = _sweep(tmp_path, "model=hyperprior", "lmbda=0.0067", "hydra/launcher=basic", "--no-analysis",
                 last=["trainer.epochs=2", "trainer.max_steps=4"])
    assert out.returncode == 0 and "already finished" not in out.stdout, out.stdout[-3000:]
    assert _results(tmp_path)["hyperprior_lmbda0.0067"]["train_steps"] == 4


def test_run_py_multirun_ends_with_the_same_summary_and_report(tmp_path):
    """The summary and the report are a Hydra Callback: `run.py -m` gets them as sweep.py does."""
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("trainer.max_steps", "trainer.steps_per"))]
    broken = tmp_path / "sweep" / "runs" / "hyperprior_lmbda0.0067" / "checkpoints" / "last.pth"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    cmd = [sys.executable, "run.py", "-m", *overrides, "model=factorized,hyperprior", "lmbda=0.0067",
           "trainer.max_steps=2", "trainer.steps_per_epoch=2", "eval.max_images=1", "hydra/launcher=basic",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1 done, 1 failed of 2 runs" in out.stdout
    assert "not done: hyperprior_lmbda0.0067 (failed)" in out.stdout and "failed.json" in out.stdout
    assert "RD plot:" in out.stdout and (tmp_path / "sweep" / "report" / "rd_psnr.png").is_file()


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    broken = tmp_path / "sweep" / "runs" / "factorized_lmbda0.0067" / "checkpoints" / "last.pth"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")  # the first job fails when it tries to resume
    out = _sweep(tmp_path, "model=factorized", "lmbda=0.0067,0.013", "hydra/launcher=basic", "--no-analysis")
    assert out.returncode == 1
    assert set(_results(tmp_path)) == {"factorized_lmbda0.013"}
    failed = json.loads((tmp_path / "sweep" / "runs" / "factorized_lmbda0.0067" / "failed.json").read_text())
    assert "last.pth cannot be read" in failed["error"]
    assert "not done: factorized_lmbda0.0067 (failed)" in out.stdout and "failed.json" in out.stdout
    assert broken.read_bytes() == b"not a checkpoint"  # nothing overwritten


def test_an_invalid_grid_point_fails_before_any_work(tmp_path):
    out = _sweep(tmp_path, "model=factorized", "lmbda=-1,0.013")
    assert out.returncode == 2 and "lmbda=-1 must be positive" in out.stderr
    assert not (tmp_path / "sweep" / "runs").exists()


def test_local_launcher_runs_jobs_side_by_side_on_cpu(tmp_path):
    figures = {"LIC_SWEEP_LOCAL_THROUGHPUT": str(tmp_path / "throughput.json")}
    out = _sweep(tmp_path, *GRID, "hydra/launcher=local", "hydra.launcher.cpu_jobs=2", "--no-analysis", env=figures)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert set(_results(tmp_path)) == RUNS
    schedule = [json.loads(l) for l in (tmp_path / "sweep" / "launcher_schedule.jsonl").read_text().splitlines()]
    assert {s["slot"] for s in schedule} == {"cpu0", "cpu1"}
    _assert_no_slot_shared(schedule)
    overlap = any(a["start"] < b["end"] and b["start"] < a["end"] for a in schedule for b in schedule if a is not b)
    assert overlap  # two jobs did run at once
    # the sweep's end filed this machine's figures (two jobs at once), and the dry run estimates from them
    from codec.runs.cost import device_key

    filed = json.loads((tmp_path / "throughput.json").read_text())[device_key("cpu")]
    assert set(filed) == {"factorized", "hyperprior"}
    assert all(e["jobs_at_once"] == 2 and 0 < e["start_seconds"] < 120 and e["eval_seconds_per_megapixel"] > 0
               and e["val_seconds_per_image"] > 0 for e in filed.values())
    dry = _sweep(tmp_path, "--dry-run", *GRID, "hydra/launcher=local", "hydra.launcher.cpu_jobs=2", env=figures)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"figures from runs in {tmp_path / 'sweep'}" in dry.stdout
    assert "wall, local launcher, 2 CPU job(s) at once" in dry.stdout and "plus its measured start-up" in dry.stdout


def _assert_no_slot_shared(schedule):
    for a in schedule:
        for b in schedule:
            if a is not b and a["slot"] == b["slot"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_local_launcher_gives_each_running_job_its_own_gpu(tmp_path):
    """Two fake GPUs, four jobs: never two running jobs on one GPU, the rest queued."""
    out = _sweep(tmp_path, *GRID, "hydra/launcher=local", "hydra.launcher.gpus=[0,1]", "device=cpu",
                 "--no-analysis")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    schedule = [json.loads(l) for l in (tmp_path / "sweep" / "launcher_schedule.jsonl").read_text().splitlines()]
    assert len(schedule) == 4 and {s["slot"] for s in schedule} == {"gpu0", "gpu1"}
    _assert_no_slot_shared(schedule)


def test_slot_pool_assignment():
    slots = make_slots(["0", "1", "3"])
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "3"]
    pool = SlotPool(slots)
    held = [pool.acquire() for _ in range(3)]
    assert pool.acquire() is None  # the fourth job waits
    assert len({s.name for s in held}) == 3
    pool.release(held[1])
    again = pool.acquire()
    assert again == held[1] and pool.acquire() is None
    with pytest.raises(RuntimeError):
        pool.release(held[1]) or pool.release(held[1])
    cpu = make_slots([], cpu_jobs=2, cpu_count=8)
    assert [dict(s.env)["OMP_NUM_THREADS"] for s in cpu] == ["4", "4"]
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in make_slots(["0"], jobs_per_gpu=2)] == ["0", "0"]


def test_run_directories_are_distinct_per_point_and_per_sweep(tmp_path):
    a = plan(["model=factorized,hyperprior", "lmbda=0.0067,0.0483", "sweep_name=a"])
    b = plan(["model=factorized,hyperprior", "lmbda=0.0067,0.0483", "sweep_name=b"])
    dirs_a, dirs_b = {r["run_dir"] for r in a}, {r["run_dir"] for r in b}
    assert len(dirs_a) == 4 and len(dirs_b) == 4 and not dirs_a & dirs_b


def test_a_run_directory_in_use_is_refused(tmp_path):
    from codec.records import status as job_status
    from codec.errors import LicSweepError

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".running").write_text(json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname()}))
        with pytest.raises(LicSweepError, match=f"in use by process {holder.pid}"):
            job_status.mark_running(tmp_path)
        assert job_status.run_state(tmp_path) == "running"
    finally:
        holder.kill()
        holder.wait()
    assert job_status.run_state(tmp_path) == "pending"


def test_ladder_trains_the_anchor_first_then_fine_tunes_from_it(tmp_path):
    """sweep.py --ladder: per model and rate tier, the highest lambda from scratch (in the sweep's
    _anchors folder), then every lambda of the tier fine-tuned from its weights (fresh optimizers,
    schedule and steps), in that order."""
    from codec.models.checkpoint import load_checkpoint

    out = _sweep(tmp_path, "--ladder", "model=factorized,hyperprior", "lmbda=0.0018,0.0067",
                 "hydra/launcher=basic", "--no-analysis")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ladder step 1 of 2: sweep_name=quickstart_scratch_anchors" in out.stdout
    assert "ladder step 2 of 2: init_from=" in out.stdout
    runs, anchors = tmp_path / "sweep" / "runs", tmp_path / "sweep_anchors" / "runs"
    for model in ("factorized", "hyperprior"):
        anchor = anchors / f"{model}_lmbda0.0067"
        assert load_checkpoint(anchor / "checkpoints" / "last.pth")["config"]["init_from"] is None
        for lmbda in ("0.0018", "0.0067"):
            tune = runs / f"{model}_lmbda{lmbda}"
            ckpt = load_checkpoint(tune / "checkpoints" / "last.pth")
            assert ckpt["config"]["init_from"] == str(anchor / "checkpoints" / "last.pth")
            assert ckpt["step"] == 3  # its own, fresh step count
            # the anchor had finished (results written) before the fine-tune's job started
            assert (anchor / "results.json").stat().st_mtime <= (tune / ".hydra" / "config.yaml").stat().st_mtime
    assert out.stdout.count("initialised the weights from") == 4
    assert not (anchors.parent / "report").exists()  # the anchors are not a curve of the sweep


def _row(model, lmbda, rate, N, M, finetune=(), refine=False):
    return {"model": model, "lmbda": lmbda, "rate": rate, "N": N, "M": M, "job": [f"lmbda={lmbda}"],
            "finetune": list(finetune), "sweep_dir": "/s", "refine_anchor": refine, "sweep_name": "s"}


def test_ladder_groups_tiers_by_channels_and_applies_the_fine_tune_overrides():
    """Tiers whose channels differ (the protocol) get one anchor each; tiers that share every model's
    channels (experiment=mini) share one anchor, the highest lambda; fine-tunes get ladder.finetune."""
    from sweeps.ladder import ladder_steps

    lambdas = (0.0018, 0.0067, 0.025, 0.0932)
    tiered = [_row(m, l, "low" if l < 0.018 else "high", 8 if l < 0.018 else 16, 12) for m in ("a", "b")
              for l in lambdas]
    steps = ladder_steps(["x=1"], tiered)
    assert [s for s in steps[0] if s.startswith("lmbda=")] == ["lmbda=0.0067,0.0932"]
    assert [[o for o in s if o.startswith("lmbda=")] for s in steps[1:]] == [["lmbda=0.0018"], ["lmbda=0.025"]]
    assert "0.0067/checkpoints" in steps[1][-1] and "0.0932/checkpoints" in steps[2][-1]

    shared = [_row(m, l, "low" if l < 0.018 else "high", 8, 12, ["trainer.max_steps=5"]) for m in ("a", "b")
              for l in lambdas]
    steps = ladder_steps(["x=1"], shared)
    assert len(steps) == 2 and "lmbda=0.0932" in steps[0] and "trainer.max_steps=5" not in steps[0]
    assert "lmbda=0.0018,0.0067,0.025" in steps[1] and "trainer.max_steps=5" in steps[1]
    assert steps[1][-1] == "init_from='/s/runs/${model.name}_lmbda0.0932/checkpoints/last.pth'"

    # refine_anchor: the anchors train apart (/s_anchors) and every lambda, the anchor's too, is fine-tuned
    refined = [_row(m, l, "low" if l < 0.018 else "high", 8, 12, ["trainer.max_steps=5"], refine=True)
               for m in ("a", "b") for l in lambdas]
    steps = ladder_steps(["x=1", "hydra.sweep.dir=/s"], refined)
    assert steps[0] == ["x=1", "sweep_name=s_anchors", "hydra.sweep.dir=/s_anchors", "lmbda=0.0932"]
    assert "lmbda=0.0018,0.0067,0.025,0.0932" in steps[1] and "hydra.sweep.dir=/s" in steps[1]
    assert steps[1][-1] == "init_from='/s_anchors/runs/${model.name}_lmbda0.0932/checkpoints/last.pth'"


@pytest.mark.slow
def test_a_stop_signal_to_sweep_py_reaches_its_multirun_and_the_rerun_resumes(tmp_path):
    """sweep.py runs its multirun as a child process: SIGUSR1 sent to sweep.py alone (a user's `kill -USR1`,
    Slurm's `--signal`) still stops the run after the step it is in, saving last.pth (as when the multirun
    ran in sweep.py's own process), sweep.py exits with the summary's status, and the rerun resumes."""
    import signal
    import time

    from codec.models.checkpoint import load_checkpoint
    from tests.conftest import hold_env, wait_for_held

    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "sweep.py", "--no-analysis", *tiny_overrides(tmp_path), "model=factorized",
               "lmbda=0.0067", "trainer.max_steps=4", "trainer.steps_per_epoch=4", "hydra/launcher=basic",
               f"hydra.sweep.dir={sweep_dir}"]
    held = tmp_path / "held"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=subprocess_env(**hold_env(held, 2)))
    try:
        wait_for_held(held, 1, lambda: proc.poll() is None, "the run")
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)  # sweep.py only, not its process group
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = sweep_dir / "runs" / "factorized_lmbda0.0067" / "checkpoints" / "last.pth"
    assert proc.returncode == 1 and "stopped by signal SIGUSR1" in out, out[-3000:]
    assert load_checkpoint(last)["step"] == 2 and "resumable" in out
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert rerun.returncode == 0 and "resuming from" in rerun.stdout + rerun.stderr, rerun.stdout[-3000:]
    assert load_checkpoint(last)["step"] == 4
