"""trainer.precision: bf16 autocast of the transforms on the CPU; entropy models, loss, evaluation in float32."""

import pytest
import torch

from codec.models.bitstream import decode, decode_mismatches, encode, pack, unpack
from codec.errors import ConfigError
from codec.runs.job import train_and_evaluate
from codec.training.trainer import build_trainer
from tests.conftest import config_for, kodak_crop, tiny_overrides

STEPS = ("trainer.max_steps=6", "trainer.steps_per_epoch=6")


def _weights(path):
    from codec.models.checkpoint import load_checkpoint

    return load_checkpoint(path)["state_dict"]


@pytest.mark.parametrize("model", ["hyperprior", "joint_autoregressive"])
def test_bf16_trains_near_fp32_and_its_bitstreams_decode_exactly(tmp_path, model):
    runs = {}
    for precision in ("32", "bf16"):
        config = config_for(tiny_overrides(tmp_path, f"model={model}", *STEPS, f"trainer.precision={precision}"))
        summary = train_and_evaluate(config, tmp_path / precision)
        assert summary["train_steps"] == 6 and torch.isfinite(torch.tensor(summary["best_val_loss"]))
        runs[precision] = summary
    # the same 6 steps from the same start: bf16 rounding moves each transform's weights only a little. The
    # distance bf16-fp32 relative to fp32's own move over the run, per transform (L2 over its parameters),
    # measured at most 4.1% (the hyperprior's h_s) on a CPU without native bf16 (2026-11-30); the largest
    # single element is no measure: Adam turns a rounding flip of a tiny gradient into a whole step.
    start = build_trainer(config_for(tiny_overrides(tmp_path, f"model={model}")), tmp_path / "fresh").model.state_dict()
    w32, w16 = _weights(tmp_path / "32" / "checkpoints" / "last.pth"), _weights(tmp_path / "bf16" / "checkpoints" / "last.pth")
    for transform in ("g_a", "g_s", "h_a", "h_s"):
        keys = [k for k in w32 if k.startswith(transform + ".") and k.endswith(("weight", "bias"))]
        apart = sum(float((w16[k] - w32[k]).pow(2).sum()) for k in keys) ** 0.5
        moved = sum(float((w32[k] - start[k]).pow(2).sum()) for k in keys) ** 0.5
        assert 0 < apart < 0.10 * moved, (transform, apart, moved)
    assert runs["bf16"]["best_val_loss"] == pytest.approx(runs["32"]["best_val_loss"], rel=1e-3)
    assert w16["g_a.0.weight"].dtype == torch.float32  # the weights stay float32
    # evaluation is float32 and the real bitstream decodes to what was encoded
    trainer = build_trainer(config_for(tiny_overrides(tmp_path, f"model={model}", "trainer.precision=bf16")),
                            tmp_path / "bf16")
    net = trainer.model.eval()
    net.update(force=True)
    with torch.no_grad():
        encoded = encode(net, kodak_crop(height=128, width=128))
        x_hat, y_hat = decode(net, unpack(pack(encoded), net))
    assert x_hat.dtype == y_hat.dtype == torch.float32
    assert decode_mismatches(encoded, y_hat) == 0  # the decoder's latent is the encoder's
    assert abs(runs["bf16"]["bpp"] - runs["32"]["bpp"]) < 0.05 * runs["32"]["bpp"] + 0.02


def test_fp16_keeps_a_grad_scaler_and_a_bad_precision_is_named(tmp_path):
    config = config_for(tiny_overrides(tmp_path, "model=factorized", *STEPS, "trainer.precision=16"))
    trainer = build_trainer(config, tmp_path / "run")
    assert trainer.scaler.is_enabled()
    with pytest.raises(ConfigError, match="trainer.precision='64' is not valid; choose 32, bf16 or 16"):
        config_for(tiny_overrides(tmp_path, "trainer.precision=64"))


def test_compile_runs_the_transforms_compiled_while_training_and_eagerly_otherwise(tmp_path, monkeypatch):
    """trainer.compile: training goes through torch.compile (here with the 'eager' backend, which traces
    with dynamo but skips inductor's minutes of code generation), evaluation through the eager forward;
    the checkpoint's keys are the usual ones."""
    traced, calls = [], []
    real = torch.compile

    def recording(fn, **kwargs):
        traced.append(fn.__self__)
        compiled = real(fn, backend="eager")

        def counted(*args, **kw):
            calls.append(fn.__self__)
            return compiled(*args, **kw)
        return counted

    monkeypatch.setattr(torch, "compile", recording)
    config = config_for(tiny_overrides(tmp_path, "model=hyperprior", "trainer.max_steps=2", "trainer.compile=true"))
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["train_steps"] == 2 and summary["num_images"] == 2
    assert len(traced) == 4 and {type(m).__name__ for m in traced} == {"Sequential"}  # g_a, g_s, h_a, h_s
    assert len(calls) == 2 * 4  # each transform once per training step; validation and evaluation eager
    assert set(_weights(tmp_path / "run" / "checkpoints" / "last.pth")) == set(
        build_trainer(config_for(tiny_overrides(tmp_path, "model=hyperprior")), tmp_path / "plain").model.state_dict())
