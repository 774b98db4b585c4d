"""One run end to end on the shipped sample: training, checkpoints, resume, NaN stop, DDP, W&B."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codec.records.wandb_file import find_runs, read_run
from codec.models.checkpoint import load_checkpoint
from codec.errors import LicSweepError
from codec.runs.job import train_and_evaluate
from codec.models.registry import REGISTRY
from codec.training.callbacks import Callback, CheckpointPolicy
from codec.training.trainer import NonFiniteLoss, build_trainer
from codec.runs.tracking import Tracker
from tests.conftest import REPO, config_for, hold_env, subprocess_env, tiny_overrides, wait_for_held

MODEL_NAMES = list(REGISTRY)

CONTRACT = ("model", "lmbda", "N", "M", "dataset", "num_images", "num_pixels", "bits", "bpp", "psnr",
            "ms_ssim", "enc_time", "dec_time", "per_image")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_quickstart_run_leaves_checkpoints_results_and_wandb_run(tmp_path, model):
    config = config_for(tiny_overrides(tmp_path, f"model={model}", "lmbda=0.025"))
    run_dir = tmp_path / "run"
    summary = train_and_evaluate(config, run_dir)
    assert summary["train_steps"] == 2
    for name in ("last.pth", "best.pth"):
        ckpt = load_checkpoint(run_dir / "checkpoints" / name)
        assert {"state_dict", "optimizer", "aux_optimizer", "scheduler", "epoch", "step", "best_loss", "rng",
                "config", "wandb_run_id"} <= set(ckpt)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(CONTRACT) <= set(results)
    assert results["model"] == model and results["lmbda"] == 0.025 and (results["N"], results["M"]) == REGISTRY[model].tiny
    assert results["num_images"] == 2 and len(results["per_image"]) == 2
    assert (run_dir / "per_image.csv").read_text().count("\n") == 3

    [wandb_file] = find_runs(run_dir)
    run = read_run(wandb_file)
    assert run.state == "finished" and run.run_id == ckpt["wandb_run_id"]
    assert run.name == f"{model}_lmbda0.025" and run.group == "quickstart_scratch"
    assert set(run.tags) == {model, "high", "quickstart_scratch"}
    assert (run.config["model"], run.config["lmbda"], run.config["N"], run.config["M"], run.config["rate"]) == \
        (model, 0.025, *REGISTRY[model].tiny, "high")
    assert run.config["scheduler"]["name"] in ("plateau", "multistep")
    for field in ("bpp", "psnr", "ms_ssim", "bits", "enc_time", "dec_time", "num_images"):
        assert run.summary[field] == pytest.approx(results[field])
    assert any("train/loss" in h for h in run.history) and any("val/loss" in h for h in run.history)


def _run(tmp_path, run_dir, *extra, env=None, check=True):
    cmd = [sys.executable, "run.py", *tiny_overrides(tmp_path, *extra), f"hydra.run.dir={run_dir}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=subprocess_env(**(env or {})))
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _run_killed(tmp_path, run_dir, point, *extra):
    """The same command run under tests/killpoint.py, which SIGKILLs its process group at `point`."""
    cmd = [sys.executable, "tests/killpoint.py", point, *tiny_overrides(tmp_path, *extra), f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=subprocess_env(),
                          start_new_session=True)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    common = ("model=hyperprior", "trainer.max_steps=4", "trainer.steps_per_epoch=3", "trainer.epochs=5",
              "eval.max_images=1")
    _run(tmp_path, tmp_path / "straight", *common)
    killed = _run_killed(tmp_path, tmp_path / "resumed", "step:2", *common, "trainer.checkpoint_every_steps=1")
    assert killed.returncode in (-9, 137), killed.stderr[-2000:]
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pth")["step"] == 2
    resumed = _run(tmp_path, tmp_path / "resumed", *common)
    assert "resuming from" in resumed.stdout

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pth")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pth")
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"]) == (4, 1)
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key
    assert a["scheduler"]["milestones"] == b["scheduler"]["milestones"]
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    # the same W&B run, continued (the killed process's records may be lost, its id is not)
    runs = [read_run(p) for p in find_runs(tmp_path / "resumed")]
    assert len(runs) == 2 and {r.run_id for r in runs} == {b["wandb_run_id"]}
    assert runs[-1].state == "finished" and runs[-1].summary["train_steps"] == 4


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = config_for(tiny_overrides(tmp_path, "model=factorized", "trainer.max_steps=5",
                                       "trainer.steps_per_epoch=5", "trainer.checkpoint_every_steps=1"))
    trainer = build_trainer(config, tmp_path / "run")
    calls = {"n": 0}
    forward = trainer.criterion.forward

    def poisoned(output, target):
        calls["n"] += 1
        losses = forward(output, target)
        if calls["n"] == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(trainer.criterion, "forward", poisoned)
    tracker = Tracker(config, tmp_path / "run", None)
    trainer.state.wandb_run_id = tracker.run_id
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at step 3.*last good checkpoint"):
        try:
            trainer.fit([CheckpointPolicy()])
        finally:
            tracker.finish(1)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert read_run(find_runs(tmp_path / "run")[0]).state == "failed"


def test_tracker_finish_returns_only_once_wandb_has_written_the_run(tmp_path, monkeypatch):
    """wandb's finish() can return while its service still holds the run file's records (seen in CI:
    a header-only file); Tracker.finish waits for the exit record, and says so when it never comes."""
    import threading

    import codec.runs.tracking as tracking
    from codec.records.wandb_file import wait_until_written

    config = config_for(tiny_overrides(tmp_path, "model=factorized"))
    tracker = Tracker(config, tmp_path / "run", None, extra_config={"note": "x"})
    waited = []
    monkeypatch.setattr(tracking, "wait_until_written", lambda path, timeout: waited.append(path) or wait_until_written(path, timeout))
    tracker.finish()
    [run_file] = find_runs(tmp_path / "run")
    assert waited == [str(run_file)] and read_run(run_file).config["note"] == "x"

    # A run file that holds only its header until the writer catches up 0.3 s later.
    full = run_file.read_bytes()
    late = tmp_path / "late.wandb"
    late.write_bytes(full[:7])
    threading.Timer(0.3, late.write_bytes, [full]).start()
    assert wait_until_written(late, timeout=20)
    assert wait_until_written(tmp_path / "header-only.wandb", timeout=0.2) is False
    (tmp_path / "header-only.wandb").write_bytes(full[:7])
    assert wait_until_written(tmp_path / "header-only.wandb", timeout=0.2) is False
    # Caught mid-write (or cut by a kill) at any byte: the records written so far read back, no error.
    cut = tmp_path / "cut.wandb"
    for n in range(7, len(full)):
        cut.write_bytes(full[:n])
        assert read_run(cut).run_id


def test_nan_stop_from_the_command_line_exits_cleanly(tmp_path):
    out = _run(tmp_path, tmp_path / "run", "model=factorized", "optimizer.lr=1e30", "trainer.max_steps=6",
               "trainer.steps_per_epoch=6", "trainer.clip_max_norm=0", check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: the loss became" in out.stderr and "Traceback" not in out.stderr


def test_ddp_with_gloo_two_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run.py",
           *tiny_overrides(tmp_path, "model=hyperprior", "device=cpu", "trainer.max_steps=3",
                           "trainer.steps_per_epoch=3", "data.batch_size=2", "eval.max_images=1"),
           f"hydra.run.dir={run_dir}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=subprocess_env(OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert ckpt["step"] == 3
    assert len(find_runs(run_dir)) == 1  # rank 0 alone logs
    assert json.loads((run_dir / "results.json").read_text())["num_images"] == 1


def test_a_signal_to_one_ddp_rank_stops_every_rank_after_the_same_step(tmp_path):
    """SIGUSR1 reaches rank 1 alone, while both ranks are held after step 3 (tests/hold; rank 0 is then
    released without a signal): the ranks agree on the stop in that step's all-reduce, rank 0 saves
    last.pth at step 3 and both end cleanly (without the agreement rank 0 would start step 4 alone and
    hang in its gradient all-reduce); the same command resumes from step 3 and finishes."""
    import os
    import signal

    run_dir, held = tmp_path / "ddp", tmp_path / "held"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run.py",
           *tiny_overrides(tmp_path, "model=hyperprior", "device=cpu", "trainer.max_steps=6",
                           "trainer.steps_per_epoch=6", "trainer.checkpoint_every_steps=3", "data.batch_size=2",
                           "eval.max_images=1"), f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=subprocess_env(OMP_NUM_THREADS="1", **hold_env(held, 3)))
    try:
        wait_for_held(held, 2, lambda: proc.poll() is None, "the two ranks")
        ranks = {int(dict(line.split("=", 1) for line in Path(f"/proc/{p.name}/environ").read_text().split("\0")
                          if "=" in line)["RANK"]): int(p.name) for p in held.iterdir()}
        os.kill(ranks[1], signal.SIGUSR1)
        (held / "release").touch()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "stopped by signal SIGUSR1: last.pth saved" in output
    assert load_checkpoint(run_dir / "checkpoints" / "last.pth")["step"] == 3
    assert not (run_dir / "results.json").exists()
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                           env=subprocess_env(OMP_NUM_THREADS="1"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "epoch 0, step 3" in rerun.stdout
    assert json.loads((run_dir / "results.json").read_text())["train_steps"] == 6


def test_sigterm_saves_and_the_next_command_resumes(tmp_path):
    import signal

    run_dir = tmp_path / "run"
    extra = ("model=factorized", "trainer.max_steps=400", "trainer.steps_per_epoch=400", "eval.max_images=1")
    cmd = [sys.executable, "run.py", *tiny_overrides(tmp_path, *extra), f"hydra.run.dir={run_dir}"]
    held = tmp_path / "held"  # the run waits after step 5 and its checkpoint (tests/hold) for the signal
    proc = subprocess.Popen(cmd + ["trainer.checkpoint_every_steps=5"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=subprocess_env(**hold_env(held, 5)))
    ckpt = run_dir / "checkpoints" / "last.pth"
    wait_for_held(held, 1, lambda: proc.poll() is None, "the run", timeout=300)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "last.pth saved" in output
    step = load_checkpoint(ckpt)["step"]
    assert step == 5
    assert not (run_dir / "failed.json").exists() and not (run_dir / ".running").exists()
    resumed = _run(tmp_path, run_dir, *extra[:1], "trainer.max_steps=" + str(step + 2),
                   "trainer.steps_per_epoch=400", "eval.max_images=1")
    assert f"step {step}" in resumed.stdout and load_checkpoint(ckpt)["step"] == step + 2


def test_init_from_loads_the_weights_only(tmp_path):
    """Fine-tuning from another run: its weights, fresh optimizers, scheduler and step count."""
    source = tmp_path / "source"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=hyperprior", "lmbda=0.0067")), source)
    config = config_for(tiny_overrides(tmp_path, "model=hyperprior", "lmbda=0.025",
                                       f"init_from={source / 'checkpoints' / 'last.pth'}"))
    trainer = build_trainer(config, tmp_path / "finetune")
    weights = load_checkpoint(source / "checkpoints" / "last.pth")["state_dict"]
    for key, value in trainer.model.state_dict().items():
        if key.endswith(".weight"):
            assert torch.equal(value, weights[key].to(value.dtype)), key
    assert trainer.state.step == 0 and trainer.state.epoch == 0 and trainer.optimizer.state_dict()["state"] == {}
    assert trainer.lr == config.optimizer.lr
    summary = train_and_evaluate(config, tmp_path / "finetune")
    assert summary["train_steps"] == 2 and summary["lmbda"] == 0.025


def test_init_from_with_other_shapes_is_refused_by_name(tmp_path):
    source = tmp_path / "source"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=hyperprior")), source)
    path = source / "checkpoints" / "last.pth"
    with pytest.raises(LicSweepError, match=rf"init_from={path}: its weights do not fit model=hyperprior N=16 M=12"):
        build_trainer(config_for(tiny_overrides(tmp_path, "model=hyperprior", "model.N=16", f"init_from={path}")),
                      tmp_path / "other")
    with pytest.raises(LicSweepError, match=r"do not fit model=factorized N=8 M=12 \(\d+ mismatches, e.g. "):
        build_trainer(config_for(tiny_overrides(tmp_path, "model=factorized", f"init_from={path}")), tmp_path / "f")


def test_init_from_a_run_that_did_not_finish_is_refused(tmp_path):
    """A ladder's anchor that failed (or was killed: resumable) leaves a last.pth: a fine-tune must not start
    from that half-trained model. A checkpoint outside a run directory (pretrained/) is taken as it is."""
    source = tmp_path / "source"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=factorized")), source)
    (source / ".hydra").mkdir()  # a run directory as run.py leaves it
    path = source / "checkpoints" / "last.pth"
    tune = config_for(tiny_overrides(tmp_path, "model=factorized", "lmbda=0.025", f"init_from={path}"))
    build_trainer(tune, tmp_path / "tune_done")  # finished: accepted
    (source / "results.json").rename(tmp_path / "results.json")
    (source / "failed.json").write_text('{"error": "NonFiniteLoss: the loss became nan"}')
    with pytest.raises(LicSweepError, match=rf"init_from={path}: its run \({source}\) is failed, not finished "
                                            rf"\(see {source / 'failed.json'}\)"):
        build_trainer(tune, tmp_path / "tune_failed")
    (source / "failed.json").unlink()
    with pytest.raises(LicSweepError, match="is resumable, not finished"):
        build_trainer(tune, tmp_path / "tune_resumable")
    outside = tmp_path / "base.pth"
    outside.write_bytes(path.read_bytes())
    build_trainer(config_for(tiny_overrides(tmp_path, "model=factorized", f"init_from={outside}")), tmp_path / "t2")


class StepLog(Callback):
    """A user's own callback, named in the config (trainer.callbacks)."""
    steps: list[int] = []

    def on_step_end(self, trainer, metrics):
        StepLog.steps.append(trainer.state.step)


def test_callbacks_named_in_the_config_join_the_loop_and_a_wrong_one_stops_before_any_work(tmp_path):
    import importlib

    module = importlib.import_module("tests.test_training")  # the copy the config's import path loads
    module.StepLog.steps.clear()
    run_dir = tmp_path / "run"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "trainer.callbacks=['tests.test_training:StepLog']")),
                       run_dir)
    assert module.StepLog.steps == [1, 2]
    for wrong in ("tests.test_training:Nope", "tests.test_training:tiny_overrides", "no_such_package:X", "StepLog"):
        with pytest.raises(LicSweepError, match=f"trainer.callbacks: .*{wrong}"):
            train_and_evaluate(config_for(tiny_overrides(tmp_path, f"trainer.callbacks=['{wrong}']")),
                               tmp_path / "wrong")
        assert not (tmp_path / "wrong" / "checkpoints").exists()


def test_channels_last_is_not_used_on_the_cpu_where_pytorch_crashes_with_it(tmp_path):
    """PyTorch 2.14's CPU backward of a strided 1x1 convolution from 3 channels in channels-last segfaults
    (Cheng 2020's first residual block has one); such a model trains in NCHW on the CPU, the rest in NHWC."""
    from compressai.layers import ResidualBlockWithStride

    from codec.models.registry import build_model
    from codec.training.trainer import memory_format

    config = config_for(tiny_overrides(tmp_path, "trainer.channels_last=true"))
    cpu, cheng_first_block = torch.device("cpu"), ResidualBlockWithStride(3, 8, stride=2)
    assert memory_format(config, cheng_first_block, cpu) == torch.contiguous_format
    assert memory_format(config, build_model("hyperprior", 8, 12), cpu) == torch.channels_last
    assert memory_format(config, cheng_first_block, torch.device("cuda")) == torch.channels_last
