"""The dry run's cost: steps per epoch, total steps, and hours estimated from a measured throughput table."""

import json
import math
import os
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
        assert len(hours) == 4 and f"estimated: {sum(hours):.2f} job-hours in all" in out.stdout
        # four jobs, two at a time (the mini's local launcher on this machine's cores): two waves
        slots = min(4, os.cpu_count())
        wall = re.search(r"; ([\d.]+) (h|min) wall, local launcher, (\d+) CPU job", out.stdout)
        assert wall and int(wall.group(3)) == os.cpu_count()
        assert float(wall.group(1)) / (1 if wall.group(2) == "h" else 60) == \
            pytest.approx(sum(hours) / slots * math.ceil(4 / slots) / (4 / slots), abs=0.05)
    else:
        assert f"no measured throughput for {cost.device_key()}" in out.stdout


def test_record_runs_uses_the_steps_a_run_trained_itself_and_files_where_its_time_went(tmp_path):
    from codec.runs.job import train_and_evaluate
    from tests.conftest import tiny_overrides

    run = tmp_path / "sweep" / "runs" / "factorized_lmbda0.0067"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=factorized", "lmbda=0.0067")), run)
    results = json.loads((run / "results.json").read_text())
    assert results["steps_this_process"] == results["train_steps"] == 2
    # the record says where the job's time went: steps, one validation per epoch, the evaluation, the whole job
    assert 0 < results["step_seconds"] < results["train_seconds"] and results["validations"] == 1
    assert results["val_seconds"] > 0 and results["eval_seconds"] > 0 and results["val_images"] > 0
    assert results["train_device"] == cost.device_key("cpu")
    lines = cost.record_runs(tmp_path / "sweep", tmp_path / "throughput.json")
    assert len(lines) == 1 and lines[0].startswith(f"{cost.device_key('cpu')}: factorized:")
    entry = json.loads((tmp_path / "throughput.json").read_text())[cost.device_key("cpu")]["factorized"]
    assert entry["images_per_s"] == pytest.approx(2 * 4 / results["step_seconds"], rel=1e-3)
    assert entry["start_seconds"] == pytest.approx(results["job_seconds"] - results["step_seconds"]
                                                   - results["val_seconds"] - results["eval_seconds"], abs=1e-3)
    pixels = sum(s["num_pixels"] * s["num_images"] for s in results["sets"].values())
    assert entry["eval_seconds_per_megapixel"] == pytest.approx(results["eval_seconds"] / pixels * 1e6, rel=1e-3)
    assert entry["val_seconds_per_image"] == pytest.approx(results["val_seconds"] / results["val_images"], rel=1e-2)
    assert entry["jobs_at_once"] == 1
    # evaluated again after a resume at the last step: nothing trained, nothing filed
    results["steps_this_process"] = 0
    (run / "results.json").write_text(json.dumps(results))
    assert cost.record_runs(tmp_path / "sweep", tmp_path / "other.json") == []


def test_a_job_is_its_steps_plus_its_measured_start_up_validations_and_evaluation():
    config = config_for(["experiment=mini", "model=hyperprior", "lmbda=0.0067", "device=cpu"])
    t, d = config.trainer, config.data
    entry = {"N": config.model.N, "M": config.model.M, "patch": d.patch_size, "batch": d.batch_size,
             "images_per_s": 8.0, "start_seconds": 20.0, "val_seconds_per_image": 0.5,
             "eval_seconds_per_megapixel": 5.0}
    steps = t.max_steps
    hours = cost.job_hours(entry, config, steps, eval_megapixels=2.0, val_images=6)
    expected = steps * d.batch_size / 8.0 + 20.0 + t.epochs * 6 * 0.5 + 2.0 * 5.0
    assert hours * 3600 == pytest.approx(expected)
    # without the job figures (a benchmark's rate only): the steps alone
    bare = {k: entry[k] for k in ("N", "M", "patch", "batch", "images_per_s")}
    assert cost.job_hours(bare, config, steps, 2.0, val_images=6) * 3600 == pytest.approx(steps * d.batch_size / 8.0)
    # a shorter run validates once per epoch it reaches
    assert cost.job_hours(entry, config, t.steps_per_epoch + 1, None, val_images=6) * 3600 == \
        pytest.approx((t.steps_per_epoch + 1) * d.batch_size / 8.0 + 20.0 + 2 * 6 * 0.5)
    # epochs from the training set's size when steps_per_epoch is unset (the seminar: one validation per
    # epoch of the data, 200 epochs), each of the validation split's images, or trainer.val_batches' worth
    seminar = config_for(["experiment=seminar", "model=hyperprior", "lmbda=0.0067", "device=cpu",
                          "data.root=/nonexistent"])
    s, sd = seminar.trainer, seminar.data
    per_epoch = 430000 // sd.batch_size
    entry = {**entry, "N": seminar.model.N, "M": seminar.model.M}
    row = cost.run_cost(seminar, {cost.device_key("cpu"): {"hyperprior": entry}}, 430000, None, 22000)
    validations = s.epochs if not s.max_steps else min(s.epochs, math.ceil(row["total steps"] / per_epoch))
    val_images = min(22000, s.val_batches * sd.val_batch_size) if s.val_batches else 22000
    assert row["est. hours"] * 3600 == pytest.approx(
        row["total steps"] * sd.batch_size / 8.0 + 20.0 + validations * val_images * 0.5)


def test_the_wall_time_packs_each_ladder_steps_jobs_into_the_launchers_slots():
    rows = [{"est. hours": h, "step": 0} for h in (1.0, 1.0, 1.0)] + [{"est. hours": 0.5, "step": 1}] * 4
    # step 0: three 1-hour jobs on two slots -> 2 h; step 1 starts after it: four half-hour jobs -> 1 h
    assert cost.sweep_wall_hours(rows, 2) == pytest.approx(3.0)
    assert cost.sweep_wall_hours(rows, 1) == pytest.approx(5.0)
    assert cost.sweep_wall_hours(rows, None) == pytest.approx(1.5)  # all at once (a cluster with room)
    assert cost.sweep_wall_hours([*rows, {"est. hours": None}], 2) is None


def test_the_figures_measured_closest_to_the_planned_size_are_used_and_this_machines_win(tmp_path, monkeypatch):
    shipped, local = tmp_path / "shipped.json", tmp_path / "local.json"
    monkeypatch.setattr(cost, "THROUGHPUT_FILE", shipped)
    monkeypatch.setattr(cost, "LOCAL_FILE", local)
    cost.record("dev", "hyperprior", 64, 96, 128, 8, 20.0, "shipped", shipped)
    cost.record("dev", "hyperprior", 8, 12, 64, 4, 900.0, "tiny", local)
    cost.record("dev", "hyperprior", 64, 96, 256, 4, 5.0, "quickstart", local)
    cost.record("dev", "hyperprior", 64, 96, 256, 4, 6.0, "quickstart again", local)  # same size: replaces
    assert [e["source"] for e in cost.load_table(local)["dev"]["hyperprior"]] == ["tiny", "quickstart again"]
    table = cost.load_table()
    assert cost.pick_entry(table, "dev", "hyperprior", 64, 96, 256, 4)["source"] == "quickstart again"
    assert cost.pick_entry(table, "dev", "hyperprior", 64, 96, 128, 8)["source"] == "shipped"
    assert cost.pick_entry(table, "dev", "hyperprior", 8, 12, 64, 2)["source"] == "tiny"
    assert cost.pick_entry(table, "other", "hyperprior", 64, 96, 256, 4) is None


def test_merge_files_the_gpu_checks_rates_in_the_repositorys_table(tmp_path):
    """The GPU check writes its fp32 rates beside its report (what comes back from a borrowed machine);
    `python -m codec.cost merge` files them in benchmarks/throughput.json's form."""
    came_back, table = tmp_path / "h200-throughput.json", tmp_path / "throughput.json"
    cost.record("NVIDIA H200", "hyperprior", 128, 192, 256, 16, 900.0, "gpu check", came_back)
    cost.record("NVIDIA H200", "hyperprior", 128, 192, 256, 64, 1000.0, "gpu check", came_back)
    cost.record("cpu x86_64 2 cores", "hyperprior", 64, 96, 256, 4, 4.0, "here", table, start_seconds=12.0)
    assert cost.main(["merge", str(came_back), "--to", str(table)]) == 0
    merged = cost.load_table(table)
    assert [e["batch"] for e in merged["NVIDIA H200"]["hyperprior"]] == [16, 64]
    assert merged["cpu x86_64 2 cores"]["hyperprior"]["start_seconds"] == 12.0
    with pytest.raises(SystemExit):
        cost.main(["merge", str(tmp_path / "missing.json")])
