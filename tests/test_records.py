"""The run record and the run directory (codec/records/): one typed record of a run's outputs, written and
read in one place; every path of a run in one object; the headline-set rule in one function."""

from __future__ import annotations

import json
import math

import pytest

from codec.records.layout import RunDir, SweepDir, headline_set, run_name
from codec.records.record import (RECORD_VERSION, Identity, ImageResult, Provenance, RunRecord, SetResult, Training,
                                  UnreadableRecord, read_record, summary_for_set)
from codec.records.status import finished_record, run_state


def _set(name, bpps, psnr=30.0):
    rows = [ImageResult(f"img{i}.png", 64 * 96, int(b * 64 * 96), b, psnr + i, 0.9 if i else math.nan, 0.1, 0.2)
            for i, b in enumerate(bpps)]
    return SetResult(name, f"/data/{name}", rows, ["notes.txt"])


def _record():
    return RunRecord(Identity("hyperprior", 0.0067, 128, 192, "low", "hyperprior_lmbda0.0067", "mini", "mini", 1),
                     {"kodak": _set("kodak", [0.2, 0.4]), "clic": _set("clic", [0.3])},
                     Training(100, 2, 1.5, 0, "epochs", 12.5, 100), Provenance("abc123", "f00", False, "run1", "cpu"))


def test_a_record_round_trips_through_results_json(tmp_path):
    record = _record()
    run = RunDir(tmp_path / "run")
    record.write(run)
    values = json.loads(run.results.read_text())
    # results.json keeps its shape: identity, training, provenance and the headline set's block on top
    assert values["record_version"] == RECORD_VERSION and values["set"] == "kodak" == headline_set(["kodak", "clic"])
    assert values["bpp"] == pytest.approx(0.3) and values["num_images"] == 2 and values["ms_ssim_images"] == 1
    assert values["ms_ssim"] == pytest.approx(0.9) and values["train_steps"] == 100
    assert values["config_fingerprint"] == "abc123" and list(values["sets"]) == ["kodak", "clic"]
    back = read_record(run.path)
    assert json.dumps(back.to_json()) == json.dumps(record.to_json()) == json.dumps(values)  # NaN != NaN: as text
    assert run.per_image.read_text().splitlines()[0].startswith("set,image,num_pixels,bits,bpp")
    assert len(run.per_image.read_text().splitlines()) == 1 + 3


def test_the_w_and_b_summary_and_the_analysis_rows_derive_from_the_record():
    record = _record()
    summary = record.summary()
    assert summary["bpp"] == pytest.approx(0.3) and summary["clic/bpp"] == pytest.approx(0.3)
    assert summary["kodak/psnr"] == pytest.approx(30.5) and summary["eval_sets"] == ["kodak", "clic"]
    assert "per_image" not in summary and "sets" not in summary
    clic = summary_for_set(summary, "clic")
    assert clic["set"] == "clic" and clic["num_images"] == 1 and summary_for_set(summary, "div2k") is None
    row = record.row("clic")
    assert row["model"] == "hyperprior" and row["set"] == "clic" and row["psnr"] == pytest.approx(30.0)
    assert row["git_commit"] == "f00" and row["train_steps"] == 100 and record.row("div2k") is None


def test_files_from_before_the_record_read_the_same(tmp_path):
    """Version 1 (no record_version), and a file from before eval.sets (one set, named by its folder)."""
    old = {"model": "factorized", "lmbda": 0.0018, "N": 128, "M": 192, "dataset": "/data/kodak", "bpp": 0.12,
           "psnr": 27.1, "num_images": 24, "train_steps": 50, "config_fingerprint": "x",
           "per_image": [{"image": "kodim01.png", "bpp": 0.12, "psnr": 27.1}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    record = read_record(tmp_path / "results.json")
    assert record.version == 1 and list(record.sets) == ["kodak"] and record.headline["bpp"] == 0.12
    assert record.training.train_steps == 50 and record.provenance.config_fingerprint == "x"
    assert record.headline.per_image[0].bpp == 0.12 and math.isnan(record.headline.per_image[0].bits)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"model": "x", "sets": {}}', '{"model": "x", "sets": 3}'])
def test_an_unreadable_record_names_its_file(tmp_path, content):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(UnreadableRecord, match=str(path)):
        read_record(path)
    assert finished_record(tmp_path, "x") is None


def test_a_run_directory_knows_its_paths_and_its_state(tmp_path):
    sweep = SweepDir(tmp_path / "outputs" / "mine")
    run = sweep.run(run_name("hyperprior", "1e-3"))
    assert run.path == tmp_path / "outputs" / "mine" / "runs" / "hyperprior_lmbda0.001"
    assert sweep.anchors.path == tmp_path / "outputs" / "mine_anchors" and sweep.report.name == "report"
    assert run.set_outputs("kodak", ["kodak", "clic"]) == run.path
    assert run.set_outputs("clic", ["kodak", "clic"]) == run.path / "sets" / "clic"
    assert run.classical("kodak", ["kodak", "clic"]) == run.path / "classical"
    assert run.classical("clic", ["kodak", "clic"]) == run.path / "classical" / "clic"
    assert run_state(run) == "pending"
    run.last_checkpoint.parent.mkdir(parents=True)
    run.last_checkpoint.write_bytes(b"")
    assert run_state(run) == "resumable" and RunDir.of_checkpoint(run.last_checkpoint) is None  # no .hydra
    run.hydra.mkdir()
    assert RunDir.of_checkpoint(run.last_checkpoint) == run
    _record().write(run)
    assert run_state(run) == "done" and run_state(run, "abc123") == "done" and run_state(run, "other") == "stale"
    assert finished_record(run, "abc123").identity.model == "hyperprior"


def test_keys_that_leave_results_unchanged_are_marked_in_the_schema():
    """The config fingerprint leaves out exactly the keys the schema marks; changing one of them keeps a
    finished run done, changing any other makes it stale."""
    from codec.schema import config_fingerprint
    from entry import config_for

    base = ["experiment=quickstart", "model=factorized", "lmbda=0.0018"]
    same = config_fingerprint(config_for(base, require_data=False))
    for kept in ("data.num_workers=0", "trainer.log_every_steps=7", "device=cpu", "logger.mode=disabled",
                 "eval.save_bitstreams=true", "sweep_name=other", "trainer.checkpoint_every_steps=3"):
        assert config_fingerprint(config_for([*base, kept], require_data=False)) == same, kept
    for changed in ("data.batch_size=2", "trainer.max_steps=7", "seed=2", "eval.max_images=1", "lmbda=0.0035"):
        assert config_fingerprint(config_for([*base, changed], require_data=False)) != same, changed
