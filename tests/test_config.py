"""The config tree: the 16 grid points of experiment=seminar, and invalid overrides."""

import subprocess
import sys
from pathlib import Path

import pytest

from codec.errors import LicSweepError
from entry import compose, config_for
from sweeps.grid import grid_overrides
from sweeps.plan import plan
from tests.conftest import REPO


def check_config(cfg):
    from entry import run_config

    return run_config(cfg, require_data=False)

LAMBDAS = [0.0067, 0.013, 0.025, 0.0483]
MODELS = ["factorized", "hyperprior", "joint_autoregressive", "checkerboard"]
# The seminar protocol (README: Full protocol): channels per model and rate tier.
CHANNELS = {
    ("factorized", "low"): (128, 192), ("factorized", "high"): (192, 320),
    ("hyperprior", "low"): (128, 192), ("hyperprior", "high"): (192, 320),
    ("joint_autoregressive", "low"): (192, 192), ("joint_autoregressive", "high"): (192, 320),
    ("checkerboard", "low"): (192, 192), ("checkerboard", "high"): (192, 320),
}
SCHEDULE = {"factorized": ("plateau", 200), "hyperprior": ("multistep", 200),
            "joint_autoregressive": ("plateau", 250), "checkerboard": ("plateau", 250)}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("lmbda", LAMBDAS)
def test_seminar_grid_point_matches_protocol(model, lmbda):
    s = check_config(compose(["experiment=seminar", f"model={model}", f"lmbda={lmbda}"]))
    rate = "low" if lmbda < 0.02 else "high"
    assert (s.model.name, s.lmbda, s.rate) == (model, lmbda, rate)
    assert (s.model.N, s.model.M) == CHANNELS[(model, rate)]
    sched, epochs = SCHEDULE[model]
    assert s.scheduler.name == sched and s.trainer.epochs == epochs
    if sched == "multistep":
        assert list(s.scheduler.milestones) == [40, 90, 140] and s.scheduler.gamma == 0.5
    else:
        assert s.scheduler.factor == 0.5
    assert (s.data.patch_size, s.data.batch_size, s.optimizer.lr) == (256, 64, 1e-4)


def test_seminar_sweep_plans_exactly_the_16_points():
    rows = plan(["experiment=seminar"])
    assert sorted((r["model"], r["lmbda"]) for r in rows) == sorted((m, l) for m in MODELS for l in LAMBDAS)
    assert len({r["run"] for r in rows}) == 16


def test_sweep_narrows_from_the_shell():
    points = grid_overrides(["experiment=seminar", "model=hyperprior,checkerboard", "lmbda=0.013"])
    assert sorted(next(o for o in p if o.startswith("model=")) for p in points) == \
        ["model=checkerboard", "model=hyperprior"]
    assert all("lmbda=0.013" in p and "experiment=seminar" in p for p in points)
    assert len(grid_overrides(["experiment=seminar"])) == 16


def test_any_model_runs_with_any_scheduler():
    s = check_config(compose(["experiment=seminar", "model=hyperprior", "scheduler=plateau"]))
    assert s.scheduler.name == "plateau" and s.trainer.epochs == 200
    s = check_config(compose(["experiment=seminar", "model=checkerboard", "scheduler=multistep"]))
    assert s.scheduler.name == "multistep" and s.trainer.epochs == 250


def test_rate_override_and_explicit_channels():
    s = check_config(compose(["experiment=seminar", "model=factorized", "lmbda=0.0067", "rate=high"]))
    assert (s.model.N, s.model.M) == (192, 320)
    s = check_config(compose(["model=factorized", "model.N=8", "model.M=12"]))
    assert (s.model.N, s.model.M) == (8, 12)


@pytest.mark.parametrize("override, message", [
    ("model=foo", r"model/foo.*checkerboard.*factorized.*hyperprior.*joint_autoregressive"),
    ("lmbda=-1", r"lmbda=-1 must be positive"),
    ("lmbda=0", r"lmbda=0 must be positive"),
    ("rate=mid", r"Invalid value 'mid', expected one of \[low, high\].*full_key: rate"),
    ("data.batch_size=-4", r"data.batch_size=-4 must be positive"),
    ("trainer.clip_max_nrom=2.0", r"trainer.clip_max_nrom"),
    ("trainer.max_steps=abc", r"'abc'.*could not be converted to Integer.*full_key: trainer.max_steps"),
    ("optimizer.lr=fast", r"'fast'.*could not be converted to Float.*full_key: optimizer.lr"),
    ("data.small_images=crop", r"Invalid value 'crop', expected one of \[pad, skip\].*data.small_images"),
    ("scheduler.patience=-1", r"scheduler.patience=-1 must be >= 0"),
    ("trainer.checkpoint_every_steps=0", r"trainer.checkpoint_every_steps=0 must be positive"),
    ("data.patch_size=100", r"data.patch_size=100 must be a multiple of 64"),
    ("scheduler=cosine", r"scheduler/cosine.*multistep.*plateau"),
    ("trainer.epochs=0", r"trainer.epochs=0"),
    ("device=tpu", r"device='tpu'"),
])
def test_invalid_override_names_setting_and_choices(override, message):
    import re

    with pytest.raises(LicSweepError) as info:
        check_config(compose(["experiment=seminar", override]))
    assert re.search(message, str(info.value), re.S), str(info.value)


def test_a_typo_in_a_users_own_experiment_file_stops_before_any_work(tmp_path):
    """The schema (codec/schema.py) is Hydra's: a key it does not have, in any YAML file, is refused with
    the key's name, instead of being dropped while its default is used."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment_name: mine\ntrainer:\n  clip_max_nrom: 2.0\n")
    with pytest.raises(LicSweepError, match=r"clip_max_nrom.*not in 'TrainerConfig'"):
        compose([f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"])
    (tmp_path / "experiment" / "typed.yaml").write_text(
        "# @package _global_\nexperiment_name: typed\ndata:\n  batch_size: many\n")
    with pytest.raises(LicSweepError, match=r"'many'.*Integer.*data.batch_size"):
        compose([f"hydra.searchpath=[file://{tmp_path}]", "experiment=typed"])
    good = tmp_path / "experiment" / "good.yaml"
    good.write_text("# @package _global_\nexperiment_name: good\ntrainer:\n  clip_max_norm: 2.0\n")
    good_config = config_for([f"hydra.searchpath=[file://{tmp_path}]", "experiment=good"], require_data=False)
    assert good_config.trainer.clip_max_norm == 2.0


def test_a_typo_on_the_command_line_exits_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "run.py", "trainer.clip_max_nrom=2", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "trainer.clip_max_nrom" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_cli_shows_resolved_protocol_and_rejects_bad_values():
    cmd = [sys.executable, "run.py", "--cfg", "job", "experiment=seminar", "model=checkerboard", "lmbda=0.025"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "'N': 192" in out.stdout and "M: 320" in out.stdout and "epochs: 250" in out.stdout
    assert "name: plateau" in out.stdout and "factor: 0.5" in out.stdout
    bad = subprocess.run(cmd[:-1] + ["lmbda=-1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "lmbda=-1 must be positive" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sweep_dry_run_prints_the_plan():
    out = subprocess.run([sys.executable, "sweep.py", "--dry-run", "experiment=seminar"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "16 runs planned for experiment=seminar" in out.stdout
    assert "multistep (milestones=[40, 90, 140] gamma=0.5)" in out.stdout


def test_a_bad_value_in_a_single_run_exits_with_one_line_and_leaves_no_record(tmp_path):
    out = subprocess.run([sys.executable, "run.py", "lmbda=-1", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "error: lmbda=-1 must be positive" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "failed.json").exists()


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_grid_point_of_every_experiment_composes(experiment):
    from codec.models.registry import REGISTRY

    rows = plan([f"experiment={experiment}"])
    runs = 2 * len(REGISTRY) if experiment == "zoo_smoke" else 16  # zoo_smoke: every registered model, 2 lambdas
    assert len(rows) == runs and {r["experiment"] for r in rows} == {experiment}


def test_the_mini_ladder_and_the_quickstart_that_starts_from_its_anchors():
    from sweeps.ladder import ladder_steps

    rows = plan(["experiment=mini"])
    assert {(r["N"], r["M"]) for r in rows} == {(64, 96)}  # one size: one anchor per model
    steps = ladder_steps(["experiment=mini"], rows)
    assert len(steps) == 2 and "lmbda=0.0932" in steps[0] and "lmbda=0.0018,0.0067,0.025,0.0932" in steps[1]
    quick = config_for(["experiment=quickstart", "model=checkerboard", "lmbda=0.0018"])
    mini = config_for(["experiment=mini", "model=checkerboard", "lmbda=0.0932"])
    # the fine-tunes get the mini's shorter schedule (ladder.finetune), the anchors its own
    assert any(o.startswith("trainer.max_steps=") for o in mini.ladder.finetune)
    assert set(mini.ladder.finetune) <= set(steps[1]) and not any(o.startswith("trainer.") for o in steps[0][1:])
    assert quick.init_from == str(REPO / "pretrained" / "checkerboard.pth")
    assert (quick.model.N, quick.model.M, quick.data.root) == (mini.model.N, mini.model.M, mini.data.root)
    assert quick.trainer.max_steps < mini.trainer.max_steps


@pytest.mark.parametrize("typed", ["1e-3", "0.001", "1.0e-3"])
def test_a_ladder_finds_its_anchor_however_its_lambda_is_typed(typed):
    """The fine-tunes' init_from is the anchor's run folder as the anchor's run names it (lmbda=1e-3 runs in
    hyperprior_lmbda0.001), whatever spelling the command line used."""
    from codec.records.layout import SweepDir, run_name
    from sweeps.ladder import ladder_steps

    overrides = ["experiment=mini", "model=hyperprior", f"lmbda=0.0001,{typed}"]
    rows = plan(overrides)
    anchor = next(r for r in rows if r["lmbda"] == 0.001)
    assert anchor["run"] == "hyperprior_lmbda0.001" == run_name("hyperprior", typed)
    steps = ladder_steps(overrides, rows)
    init_from = next(o for o in steps[1] if o.startswith("init_from="))
    anchor_run = SweepDir(anchor["sweep_dir"]).anchors.run("${model.name}_lmbda0.001")
    assert init_from == f"init_from='{anchor_run.last_checkpoint}'"
    # and composed for the fine-tune, it names the folder the anchor's own plan gives
    tuned = plan(steps[1])
    anchors = plan(steps[0])
    assert {Path(r["run_dir"]).name for r in anchors} == {"hyperprior_lmbda0.001"}
    anchor_dir = Path(anchors[0]["run_dir"])
    for row in tuned:
        composed = compose(row["job"])
        assert (REPO / composed.init_from).resolve() == (anchor_dir / "checkpoints" / "last.pth").resolve()
