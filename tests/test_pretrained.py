"""Base checkpoints (pretrained/, codec.pretrained): exported from a sweep's anchors with their provenance,
small, safe to load, and the quickstart's starting point for every model."""

import pytest
import torch

from codec.models.checkpoint import load_checkpoint
from codec.runs.job import train_and_evaluate
from codec.models.registry import DERIVED_BUFFERS, REGISTRY, channels_of
from codec.runs.pretrained import PRETRAINED, export
from codec.training.trainer import build_trainer
from tests.conftest import config_for, tiny_overrides

SEMINAR = ("factorized", "hyperprior", "joint_autoregressive", "checkerboard")


def test_export_takes_each_models_highest_from_scratch_lambda_with_provenance(tmp_path):
    sweep = tmp_path / "sweep"
    for model, lmbda, init in (("hyperprior", 0.0067, None), ("hyperprior", 0.025, None), ("factorized", 0.025, None)):
        train_and_evaluate(config_for(tiny_overrides(tmp_path, f"model={model}", f"lmbda={lmbda}")),
                           sweep / "runs" / f"{model}_lmbda{lmbda}")
    anchor = sweep / "runs" / "hyperprior_lmbda0.025" / "checkpoints" / "last.pth"
    # a fine-tune at a higher lambda is not an anchor
    train_and_evaluate(config_for(tiny_overrides(tmp_path, "model=hyperprior", "lmbda=0.0932", f"init_from={anchor}")),
                       sweep / "runs" / "hyperprior_lmbda0.0932")
    written = export(sweep, tmp_path / "out", command="test")
    assert [p.name for p in written] == ["factorized.pth", "hyperprior.pth"]
    base = load_checkpoint(tmp_path / "out" / "hyperprior.pth")
    source = load_checkpoint(anchor)
    parameters = {n for n, _ in REGISTRY["hyperprior"].build(*channels_of(source["state_dict"])).named_parameters()}
    assert base["lmbda"] == 0.025 and base["provenance"]["source"] == str(anchor)
    assert base["provenance"]["command"] == "test" and len(base["provenance"]["git_commit"]) in (40, 7)
    # labelled by the set the run was evaluated on (here the tests' folder), not "kodak" whatever it was
    assert base["provenance"]["results"]["set"] == "eval_images" and base["provenance"]["results"]["bpp"] > 0
    assert base["config"]["model"]["name"] == "hyperprior"
    for key, value in source["state_dict"].items():
        if key.endswith(DERIVED_BUFFERS):  # rebuilt by the model: not shipped
            assert key not in base["state_dict"], key
            continue
        # parameters in float16; buffers (likelihood bounds 1e-9, GDN pedestals 1.5e-11) exactly as trained
        half = key in parameters and value.is_floating_point()
        assert base["state_dict"][key].dtype == (torch.float16 if half else value.dtype), key
        assert torch.equal(base["state_dict"][key], value.to(base["state_dict"][key].dtype)), key
    bounds = [v for k, v in base["state_dict"].items() if k.endswith("likelihood_lower_bound.bound")]
    assert bounds and all(b.dtype == torch.float32 and b.item() > 0 for b in bounds)
    assert "| hyperprior | 0.025 |" in (tmp_path / "out" / "MANIFEST.md").read_text()
    assert base["provenance"]["fine_tuned_from"] is None
    # --lmbda: each model's run at that lambda, a fine-tune too, with what it was fine-tuned from
    tuned = export(sweep, tmp_path / "tuned", command="test", lmbda=0.0932)
    assert [p.name for p in tuned] == ["hyperprior.pth"]
    assert load_checkpoint(tuned[0])["provenance"]["fine_tuned_from"] == str(anchor)
    # and a run fine-tunes from it
    config = config_for(tiny_overrides(tmp_path, "model=hyperprior", "lmbda=0.0018",
                                       f"init_from={tmp_path / 'out' / 'hyperprior.pth'}"))
    assert train_and_evaluate(config, tmp_path / "tune")["train_steps"] == 2


@pytest.mark.parametrize("model", SEMINAR)
def test_the_shipped_base_checkpoints_fit_the_quickstart(tmp_path, model):
    """Each seminar model's pretrained/<model>.pth: a few MB, weights only (weights_only load), stamped
    with the command and commit that made it, and of the quickstart's shape."""
    path = PRETRAINED / f"{model}.pth"
    assert path.is_file(), f"{path} is missing: README, 'Base checkpoints', says how to make it"
    assert path.stat().st_size < 6e6  # measured 1.5-5.0 MB
    base = load_checkpoint(path)
    assert base["provenance"]["command"].startswith("python -m codec.pretrained")
    # the mini-protocol's fine-tune at 0.0067 (from its model's 3000-step anchor at 0.0932)
    assert base["provenance"]["trained_with"].startswith(f"python run.py model={model} lmbda=0.0067 experiment=mini")
    assert base["config"]["experiment_name"] == "mini" and base["lmbda"] == 0.0067
    assert base["provenance"]["fine_tuned_from"].endswith(f"{model}_lmbda0.0932/checkpoints/last.pth")
    config = config_for(["experiment=quickstart", f"model={model}", "lmbda=0.0067", "logger.mode=disabled"])
    assert config.init_from == str(path)
    trainer = build_trainer(config, tmp_path / "run")  # init_weights checks every shape
    key = "g_a.0.weight"
    assert torch.equal(trainer.model.state_dict()[key], base["state_dict"][key].float())
    assert set(SEMINAR) <= set(REGISTRY)


def test_a_missing_base_checkpoint_says_how_to_make_it(tmp_path):
    from codec.errors import LicSweepError

    missing = tmp_path / "pretrained" / "hyperprior.pth"
    with pytest.raises(LicSweepError, match=r"does not exist; the base checkpoints of pretrained/ are made by `make mini`"):
        build_trainer(config_for(tiny_overrides(tmp_path, "model=hyperprior", f"init_from={missing}")), tmp_path / "r")


def test_a_base_checkpoint_whose_buffers_lost_precision_is_refused(tmp_path):
    """The first shipped base checkpoints had every tensor in float16: the likelihood lower bound (1e-9)
    became 0 and two of the quickstart's checkerboard fine-tunes ended with an inf loss. Such a file is
    refused, naming the buffer, instead of training into inf."""
    from codec.models.checkpoint import save_atomic
    from codec.errors import LicSweepError

    base = load_checkpoint(PRETRAINED / "hyperprior.pth")
    bounds = [v for k, v in base["state_dict"].items() if k.endswith("likelihood_lower_bound.bound")]
    assert bounds and all(b.dtype == torch.float32 and abs(b.item() - 1e-9) < 1e-15 for b in bounds)  # kept
    base["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in base["state_dict"].items()}
    save_atomic(base, tmp_path / "all_half.pth")
    config = config_for(["experiment=quickstart", "model=hyperprior", "lmbda=0.0067", "logger.mode=disabled",
                         f"init_from={tmp_path / 'all_half.pth'}"])
    with pytest.raises(LicSweepError, match=r"buffer .*likelihood_lower_bound.bound|buffer .* is stored in torch.float16"):
        build_trainer(config, tmp_path / "run")
