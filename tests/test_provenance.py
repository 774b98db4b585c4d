"""The reproducibility card: in the run directory, results.json, the W&B run and the analysis table."""

import json
import subprocess

import torch

import codec.runs.provenance as provenance
from analysis.sources import from_offline_wandb
from analysis.tables import part3_table
from codec.runs.job import train_and_evaluate
from tests.conftest import KODAK, config_for, tiny_overrides


def test_a_run_directory_holds_its_card_and_wandb_and_the_analysis_have_the_commit(tmp_path):
    run_dir = tmp_path / "run"
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=factorized")), run_dir)
    card = json.loads((run_dir / "repro.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.REPO, capture_output=True, text=True).stdout.strip()
    assert card["git_commit"] == head and isinstance(card["git_dirty"], bool)
    assert card["torch"] == torch.__version__ and card["python"].count(".") == 2
    assert any(p.lower().startswith("torch==") for p in card["packages"])
    assert list(card["test_data"]) == ["eval_images"] and card["test_data"]["eval_images"]["files"] == 2 and card["train_data"]["files"] > 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["git_commit"] == head
    frame = from_offline_wandb(run_dir).frame
    assert frame["git_commit"].iloc[0] == head
    assert part3_table(frame)["commit"].iloc[0] == head[:10]


def test_the_data_manifest_changes_with_a_file_and_the_dirty_tree_keeps_its_diff(tmp_path, monkeypatch):
    files = sorted(KODAK.glob("*.png"))[:3]
    one, same = provenance.files_manifest(files, KODAK), provenance.files_manifest(list(reversed(files)), KODAK)
    assert one == same and one["files"] == 3
    assert provenance.files_manifest(files[:2], KODAK)["sha256"] != one["sha256"]

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    (repo / "a.py").write_text("x = 2\n")
    monkeypatch.setattr(provenance, "REPO", repo)
    (tmp_path / "run_dir_dirty").mkdir()
    card = provenance.reproducibility_card(tmp_path / "run_dir_dirty")
    assert card["git_dirty"] is True and card["git_diff"] == "repro.diff"
    assert "+x = 2" in (tmp_path / "run_dir_dirty" / "repro.diff").read_text()
