"""The fifth model, added as one registry entry and one YAML: it composes with the protocol's channels,
trains, codes real bitstreams that agree with CompressAI's eval_model (as mbt2018-mean), and appears in
the complexity table, the analysis and a sweep. The generic tests over the registry (test_models,
test_evaluation, test_training) cover it too."""

import json
import subprocess
import sys

import pytest
import torch

from analysis.sources import from_results
from analysis.tables import bd_table, part3_table
from codec.models.complexity import complexity_table
from codec.models.registry import REGISTRY, build_model
from entry import config_for
from tests.conftest import REPO, kodak_crop, small_eval_folder, subprocess_env, tiny_overrides

NAME = "mean_scale_hyperprior"


def test_protocol_channels_and_schedule_compose():
    low = config_for(["experiment=seminar", f"model={NAME}", "lmbda=0.013"], require_data=False)
    high = config_for(["experiment=seminar", f"model={NAME}", "lmbda=0.0483"], require_data=False)
    assert (low.model.N, low.model.M, high.model.N, high.model.M) == (128, 192, 192, 320)
    assert low.scheduler.name == "multistep" and low.trainer.epochs == 200
    assert type(build_model(NAME, 8, 12)).__name__ == "MeanScaleHyperprior"


def test_bitstreams_agree_with_compressai_eval_model(tmp_path):
    """Our decoder's latent equals the encoder's (means included), and bpp/PSNR are eval_model's."""
    from compressai.utils.eval_model.__main__ import inference, load_checkpoint, read_image

    from codec.evaluation.evaluate import evaluate_model
    from codec.models.checkpoint import load_model

    torch.manual_seed(0)
    model = build_model(NAME, 16, 24)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = kodak_crop()
    for _ in range(30):
        out = model(x)
        bpp = sum(torch.log2(l).sum() for l in out["likelihoods"].values()) / -x[0, 0].numel()
        loss = 0.05 * 255**2 * torch.nn.functional.mse_loss(out["x_hat"], x) + bpp + model.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    folder = small_eval_folder(tmp_path)
    ours, _ = evaluate_model(load_model(path)[0], folder)  # the decode check runs on every image
    reference = load_checkpoint(REGISTRY[NAME].compressai_name, False, str(path)).eval()
    for row in ours:
        ref = inference(reference, read_image(folder / row.image))
        # our bits are eval_model's payload plus the 4-8 byte header (image size, string lengths)
        assert 4 * 8 <= row.bits - ref["bpp"] * row.num_pixels <= 8 * 8
        assert row.psnr == pytest.approx(ref["psnr-rgb"], abs=0.01)


def test_in_the_complexity_table():
    row = complexity_table(batch=1, height=64, width=64, models=(NAME,)).iloc[0]
    assert row["cls"] == "MeanScaleHyperprior" and row["thop_macs"] > 0 and row["true_params"] > row["thop_params"]


def test_in_a_sweep_and_its_report(tmp_path):
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("trainer.max_steps", "trainer.steps_per"))]
    cmd = [sys.executable, "sweep.py", *overrides, f"model={NAME}", "lmbda=0.0067,0.0483", "trainer.max_steps=3",
           "trainer.steps_per_epoch=3", "eval.max_images=1", "hydra/launcher=basic",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 done of 2 runs" in out.stdout and (tmp_path / "sweep" / "report" / "rd_psnr.png").is_file()
    results = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("runs/*/results.json")}
    assert set(results) == {f"{NAME}_lmbda0.0067", f"{NAME}_lmbda0.0483"}
    frame = from_results(tmp_path / "sweep").frame
    assert set(part3_table(frame)["model"]) == {NAME}
    assert list(bd_table(frame, reference=NAME)["model"]) == [NAME]
