"""The dry run's cost: steps per epoch, total steps, and hours estimated from a measured throughput table."""

import json
import re

import pytest

from codec.runs import cost
from tests.conftest import config_for


def test_steps_and_hours_follow_the_data_the_budget_and_the_measured_rate(tmp_path, monkeypatch):
    config = config_for(["experiment=seminar", "model=hyperprior", "lmbda=0.013", "device=cpu",
                         "data.root=/nonexistent"])
    # without data and without steps_per_epoch: steps unknown; with 430000 training frames: 6718 steps/epoch
    assert cost.run_cost(config, {})["total steps"] is None
    known = cost.run_cost(config, {}, train_images=430000)
    assert known["steps/epoch"] == 430000 // 64 and known["total steps"] == 200 * (430000 // 64)
    assert known["est. hours"] is None  # no rate for this device
    # a measured rate at the same size: hours = steps x batch / rate
    entry = {"N": 128, "M": 192, "patch": 256, "batch": 64, "images_per_s": 100.0}
    table = {cost.device_key("cpu"): {"hyperprior": entry}}
    hours = cost.run_cost(config, table, train_images=430000)["est. hours"]
    assert hours == pytest.approx(200 * (430000 // 64) * 64 / 100.0 / 3600)
    # measured at a quarter of the pixels per crop: the same MACs per second, so four times the time per image
    small = {**entry, "patch": 128, "images_per_s": 400.0}
    assert cost.run_cost(config, {cost.device_key("cpu"): {"hyperprior": small}}, 430000)["est. hours"] == \
        pytest.approx(hours)
    assert cost.macs_per_pixel("hyperprior", 192, 320) > cost.macs_per_pixel("hyperprior", 128, 192)


def test_record_writes_the_table_and_the_dry_run_prints_hours(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO, subprocess_env

    path = tmp_path / "throughput.json"
    cost.record("dev", "factorized", 64, 96, 128, 8, 24.0, "test", path)
    cost.record("dev", "hyperprior", 64, 96, 128, 8, 20.0, "test", path)
    assert json.loads(path.read_text())["dev"]["hyperprior"]["images_per_s"] == 20.0
    out = subprocess.run([sys.executable, "sweep.py", "--dry-run", "experiment=mini", "model=factorized"], cwd=REPO,
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    budget = config_for(["experiment=mini", "model=factorized", "lmbda=0.0932"]).trainer.max_steps
    assert "total steps" in out.stdout and f" {budget} " in out.stdout
    # which of the two lines is printed is decided by the repository's table for this machine, not left open
    if "factorized" in cost.load_table().get(cost.device_key(), {}):
        hours = [float(h) for h in re.findall(r" (\d+\.\d\d)\s*$", out.stdout, re.M)]
        assert len(hours) == 4 and f"estimated total: {sum(hours):.1f} hours on {cost.device_key()}" in out.stdout
    else:
        assert f"no measured throughput for {cost.device_key()}" in out.stdout


def test_record_runs_uses_the_steps_a_run_trained_itself(tmp_path):
    from codec.runs.job import train_and_evaluate
    from tests.conftest import tiny_overrides

    run = tmp_path / "sweep" / "runs" / "factorized_lmbda0.0067"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=factorized", "lmbda=0.0067")), run)
    results = json.loads((run / "results.json").read_text())
    assert results["steps_this_process"] == results["train_steps"] == 2
    lines = cost.record_runs(tmp_path / "sweep", tmp_path / "throughput.json")
    assert len(lines) == 1 and lines[0].startswith("factorized:")
    # evaluated again after a resume at the last step: nothing trained, nothing filed
    results["steps_this_process"] = 0
    (run / "results.json").write_text(json.dumps(results))
    assert cost.record_runs(tmp_path / "sweep", tmp_path / "other.json") == []
