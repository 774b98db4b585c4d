"""Evaluation with real bitstreams: agreement with CompressAI's eval_model, odd inputs, decode check."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from codec.evaluation import evaluate as evaluation
from codec.evaluation.classical import evaluate_classical
from codec.errors import LicSweepError
from codec.evaluation.evaluate import DecodeMismatch, evaluate_model, list_eval_images
from codec.models.checkpoint import load_model
from codec.records.record import summarize
from codec.models.bitstream import _write_varint, encode
from codec.models.registry import CODER_TABLES, REGISTRY, build_model
from tests.conftest import KODAK, REPO, kodak_crop, small_channels, small_eval_folder, subprocess_env
from tests.test_models import _train_a_little


def _tiny_trained(name):
    torch.manual_seed(0)
    model = build_model(name, *small_channels(name))
    _train_a_little(model, kodak_crop(), steps=30, lmbda=0.05)
    return model.eval()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_agrees_with_compressai_eval_model(tmp_path, name):
    """The same payload (bits less our header) and PSNR within 0.01 dB as compressai.utils.eval_model's
    inference, which codes with the model's own compress/decompress."""
    from compressai.utils.eval_model.__main__ import inference, read_image

    model = _tiny_trained(name)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(KODAK / "kodim04.png", folder / "kodim04.png")  # a full-size (portrait) Kodak image

    ours, _ = evaluate_model(load_model(path)[0], folder)
    reference_model = load_model(path)[0].eval()
    reference_model.update(force=True)
    for row in ours:
        ref = inference(reference_model, read_image(folder / row.image))
        assert row.psnr == pytest.approx(ref["psnr-rgb"], abs=0.01)
        # our bits are the payload plus the header README describes (4 bytes of image size and a varint
        # length per string but the last); CompressAI counts the payload only
        strings = encode(reference_model, read_image(folder / row.image).unsqueeze(0)).strings
        header = 4 + sum(len(_write_varint(len(s[0]))) for s in strings[:-1])
        assert round(row.bits - ref["bpp"] * row.num_pixels) == 8 * header


def test_results_json_and_per_image_csv_from_a_checkpoint_on_the_command_line(tmp_path):
    model = _tiny_trained("hyperprior")
    ckpt = tmp_path / "compressai_state_dict.pth"
    torch.save(model.state_dict(), ckpt)  # a bare state_dict, as CompressAI's tools write
    out = subprocess.run([sys.executable, "run.py", "task=eval", f"checkpoint={ckpt}",
                          f"eval.sets=[{small_eval_folder(tmp_path)}]", "eval.save_bitstreams=true",
                          "eval.save_reconstructions=true", f"hydra.run.dir={tmp_path}/${{run_name}}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert out.returncode == 0, out.stderr[-2000:]
    # named from the checkpoint itself (a bare state_dict records no lambda), not from the config's defaults
    run_dir = tmp_path / "eval_hyperprior_lmbdaunknown"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == "hyperprior" and (results["N"], results["M"]) == (16, 24)
    assert results["lmbda"] is None and "done eval_hyperprior_lmbdaunknown" in out.stdout
    assert results["num_images"] == 2 and results["coding_device"] == "cpu"
    for row in results["per_image"]:
        stem = row["image"].removesuffix(".png")
        assert row["bits"] == 8 * (run_dir / "bitstreams" / f"{stem}.bin").stat().st_size
        assert Image.open(run_dir / "reconstructions" / f"{stem}.png").size == Image.open(
            small_eval_folder(tmp_path) / row["image"]).size
    assert results["bpp"] == pytest.approx(np.mean([r["bits"] / r["num_pixels"] for r in results["per_image"]]))


def test_odd_inputs(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    base = Image.open(KODAK / "kodim07.png").crop((0, 0, 201, 177))  # not a multiple of 64
    base.save(folder / "rgb.png")
    base.convert("L").save(folder / "gray.png")
    base.convert("RGBA").save(folder / "rgba.png")
    (folder / "notes.bin").write_bytes(b"\x00\x01 not an image")
    model = _tiny_trained("factorized")
    with pytest.warns(UserWarning, match="skipped 1 non-image file.*notes.bin"):
        results, skipped = evaluate_model(model, folder)
    assert sorted(r.image for r in results) == ["gray.png", "rgb.png", "rgba.png"]
    assert skipped == ["notes.bin"]
    by_name = {r.image: r for r in results}
    assert all(r.num_pixels == 201 * 177 for r in results)
    assert by_name["rgba.png"].psnr == pytest.approx(by_name["rgb.png"].psnr)  # alpha dropped
    assert summarize(results)["num_images"] == 3


def test_empty_folder_and_missing_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LicSweepError, match="holds no PNG or JPEG"):
        list_eval_images(tmp_path / "empty")
    with pytest.raises(LicSweepError, match="is not a directory"):
        list_eval_images(tmp_path / "nowhere")
    with pytest.raises(LicSweepError, match=r"checkpoint .*missing.pth does not exist"):
        load_model(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(LicSweepError, match="cannot be read"):
        load_model(tmp_path / "junk.pth")


def test_missing_checkpoint_on_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "run.py", "task=eval", f"checkpoint={tmp_path / 'nope.pth'}",
                          f"hydra.run.dir={tmp_path / 'eval'}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=subprocess_env())
    assert out.returncode == 2 and "nope.pth does not exist" in out.stderr and "Traceback" not in out.stderr


def test_decode_mismatch_is_an_error_naming_the_image(tmp_path, monkeypatch):
    model = _tiny_trained("joint_autoregressive")
    real_decode = evaluation.decode

    def corrupted(model, enc):
        x_hat, y_hat = real_decode(model, enc)
        y_hat = y_hat.clone()
        y_hat[0, 0, 1, 1] += 3
        return x_hat, y_hat

    monkeypatch.setattr(evaluation, "decode", corrupted)
    with pytest.raises(DecodeMismatch, match=r"kodim01.png: the decoded latent differs"):
        evaluate_model(model, small_eval_folder(tmp_path, count=1))


def test_classical_anchors_in_the_same_format(tmp_path):
    low = evaluate_classical("jpeg", 10, small_eval_folder(tmp_path)).to_json()  # results.json's form
    high = evaluate_classical("webp", 90, small_eval_folder(tmp_path)).to_json()
    for r in (low, high):
        assert {"model", "bpp", "psnr", "ms_ssim", "bits", "enc_time", "dec_time", "per_image"} <= set(r)
    assert low["model"] == "jpeg" and low["quality"] == 10
    assert low["bpp"] < high["bpp"] and low["psnr"] < high["psnr"]
    with pytest.raises(LicSweepError, match="jpeg2000"):
        evaluate_classical("jpeg2000", 50, small_eval_folder(tmp_path))


@pytest.mark.parametrize("model", [name for name, entry in REGISTRY.items() if entry.compressai_name])
def test_our_checkpoints_load_in_compressai_eval_model(tmp_path, model):
    """CompressAI's eval_model and update_model load files with torch.load(weights_only=True): every registered
    model that its zoo has reads back with the weights our run wrote."""
    from compressai.utils.eval_model.__main__ import load_checkpoint

    from codec.training.callbacks import CheckpointPolicy
    from codec.training.trainer import build_trainer
    from tests.conftest import config_for, tiny_overrides

    config = config_for(tiny_overrides(tmp_path, f"model={model}", "logger=none"))
    trainer = build_trainer(config, tmp_path / "run")
    trainer.fit([CheckpointPolicy()])
    for name in ("best.pth", "last.pth"):
        assert "rng" in torch.load(tmp_path / "run" / "checkpoints" / name, weights_only=True)
    net = load_checkpoint(REGISTRY[model].compressai_name, False, str(tmp_path / "run" / "checkpoints" / "best.pth"))
    assert type(net) is REGISTRY[model].cls
    ours = {k: v for k, v in trainer.model.state_dict().items() if not k.endswith(CODER_TABLES)}
    theirs = net.state_dict()
    assert all(torch.equal(theirs[k], v.contiguous()) for k, v in ours.items())


def test_two_test_sets_give_two_blocks_in_results_wandb_and_the_report(tmp_path):
    """eval.sets with two sets: results.json keeps one block per set (the first also at the top level),
    per_image.csv names the set of each row, W&B's summary has "<set>/bpp", and the report has one
    folder per set; the analysis reads each set from results.json and from the offline W&B files."""
    from analysis.report import build_report
    from analysis.sources import from_offline_wandb, from_results
    from codec.runs.job import train_and_evaluate
    from tests.conftest import config_for, tiny_overrides

    second = tmp_path / "second_set"
    second.mkdir()
    for i, name in enumerate(("kodim05.png", "kodim21.png", "kodim11.png")):
        Image.open(KODAK / name).crop((0, 0, 160 + 16 * i, 128)).save(second / f"s{i}.png")
    first = small_eval_folder(tmp_path)
    for model, lmbda in (("factorized", 0.0067), ("factorized", 0.025), ("hyperprior", 0.0067), ("hyperprior", 0.025)):
        config = config_for(tiny_overrides(tmp_path, f"model={model}", f"lmbda={lmbda}",
                                           f"eval.sets=[{first},{second}]"))
        summary = train_and_evaluate(config, tmp_path / "sweep" / f"{model}_{lmbda}")
    assert summary["eval_sets"] == ["eval_images", "second_set"] and summary["second_set/num_images"] == 3
    results = json.loads((tmp_path / "sweep" / "hyperprior_0.025" / "results.json").read_text())
    assert results["set"] == "eval_images" and list(results["sets"]) == ["eval_images", "second_set"]
    assert results["num_images"] == 2 and results["sets"]["second_set"]["num_images"] == 3
    assert results["bpp"] == results["sets"]["eval_images"]["bpp"] != results["sets"]["second_set"]["bpp"]
    rows = (tmp_path / "sweep" / "hyperprior_0.025" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("set,image,") and sum(r.startswith("second_set,") for r in rows) == 3
    for frame in (from_results(tmp_path / "sweep", "second_set").frame,
                  from_offline_wandb(tmp_path / "sweep", "second_set").frame):
        row = frame[(frame["model"] == "hyperprior") & (frame["lmbda"] == 0.025)].iloc[0]
        assert row["bpp"] == pytest.approx(results["sets"]["second_set"]["bpp"])
        assert row["num_images"] == 3
    written = build_report(tmp_path / "sweep", tmp_path / "report", complexity=False)
    assert written["set"] == "eval_images" and list(written["sets"]) == ["second_set"]
    assert (tmp_path / "report" / "results.md").is_file()
    table = (tmp_path / "report" / "second_set" / "results.md").read_text()
    assert f"{results['sets']['second_set']['bpp']:.4f}" in table
    assert (tmp_path / "report" / "second_set" / "rd_psnr.png").is_file()
