"""Hostile inputs, second round: each file or argument below is built as an attacker would build it, and
each must end in bounded time with a refusal or a skip that names the file, key or field, no traceback,
nothing written outside the run's own folder and earlier results unchanged. (The first round, pickled
payloads, archive escapes and secrets in records, is tests/test_security.py.)"""

import hashlib
import http.server
import io
import json
import math
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.data import test_sets as datasets
from codec.data.archives import UnsafeArchive, safe_extract
from codec.models.checkpoint import InvalidCheckpoint, UnsafeCheckpoint, load_checkpoint, model_checkpoint
from codec.data.test_sets import TooLarge, fetch, fetched, set_folder
from codec.errors import ConfigError, LicSweepError
from codec.evaluation.evaluate import evaluate_model
from codec.models.checkpoint import load_model
from codec.models.registry import build_model
from tests.conftest import KODAK, REPO, config_for, small_eval_folder, subprocess_env, tiny_overrides


# -- checkpoints ------------------------------------------------------------------------------------
def _checkpoint(path: Path, **changes) -> Path:
    """A valid tiny factorized checkpoint as run.py writes its identity, with `changes` applied
    (state_dict entries by their key under "tensors")."""
    torch.manual_seed(0)
    state = build_model("factorized", 8, 12).state_dict()
    state.update(changes.pop("tensors", {}))
    ckpt = {"state_dict": state, "model_meta": {"name": "factorized", "N": 8, "M": 12}, "lmbda": 0.013,
            "wandb_run_id": "abc123def456", **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _with_weight(value: float) -> dict:
    weight = build_model("factorized", 8, 12).state_dict()["g_a.0.weight"].clone()
    weight[0, 0, 0, 0] = value
    return {"g_a.0.weight": weight}


HOSTILE_CHECKPOINTS = {
    # name: (changes, what the refusal must say)
    "lambda_is_a_path": ({"lmbda": "/../../../../../../tmp/ESCAPED"}, r"field lmbda is '/\.\./\.\..*\(a str\)"),
    "lambda_with_a_newline": ({"lmbda": "0.01\nx"}, r"field lmbda is '0\.01\\nx' \(a str\)"),
    "lambda_negative": ({"lmbda": -1.0}, r"field lmbda is -1\.0 .*finite positive"),
    "lambda_nan": ({"lmbda": math.nan}, r"field lmbda is nan"),
    "wandb_id_is_a_path": ({"wandb_run_id": "../../../escape"}, r"field wandb_run_id is '\.\./\.\./\.\./escape'"),
    "model_meta_is_a_list": ({"model_meta": ["factorized"]}, r"field model_meta is a list"),
    "model_name_unregistered": ({"model_meta": {"name": "../evil", "N": 8, "M": 12}},
                                r"field model_meta\.name is '\.\./evil'.*not a registered model"),
    "model_meta_N_disagrees": ({"model_meta": {"name": "factorized", "N": 200000, "M": 12}},
                               r"field model_meta\.N is 200000 .*its tensors have N=8"),
    "inf_weight": ({"tensors": _with_weight(math.inf)}, r"tensor g_a\.0\.weight holds 1 non-finite value"),
    "nan_weight": ({"tensors": _with_weight(math.nan)}, r"tensor g_a\.0\.weight holds 1 non-finite value"),
    "declares_160_gb": ({"tensors": {"g_a.0.weight": torch.zeros(1).expand(200000, 3, 5, 5)}},
                        r"tensor g_a\.0\.weight declares shape \(200000, 3, 5, 5\) \(15000000 values\) but the "
                        r"file holds 1"),
    "wrong_shape": ({"tensors": {"g_a.2.weight": torch.zeros(8, 9, 5, 5)}},
                    r"g_a\.2\.weight \(8, 9, 5, 5\) where factorized N=8 M=12 has \(8, 8, 5, 5\)"),
    "extra_tensor": ({"tensors": {"g_a.99.weight": torch.zeros(3)}}, r"g_a\.99\.weight is not a tensor of factorized"),
    "not_a_tensor": ({"tensors": {"g_a.0.bias": "x" * 10}}, r"state_dict entry 'g_a\.0\.bias' is a str, not a tensor"),
    "lambda_400_digits": ({"lmbda": 10 ** 400}, r"field lmbda is 1000.*\(a int\); it must be a finite positive"),
    "lambda_true": ({"lmbda": True}, r"field lmbda is True \(a bool\)"),
    "sparse_weight": ({"tensors": {"g_a.0.weight": torch.zeros(8, 3, 5, 5).to_sparse()}},
                      r"tensor g_a\.0\.weight is a torch\.sparse_coo"),
    "complex_weight": ({"tensors": {"g_a.0.weight": torch.zeros(8, 3, 5, 5, dtype=torch.complex64)}},
                       r"tensor g_a\.0\.weight is a torch\.strided torch\.complex64 tensor"),
    "broadcast_view_of_a_real_storage": ({"tensors": {"g_a.0.weight": torch.zeros(600).as_strided((8, 3, 5, 5),
                                                                                                  (0, 25, 5, 1))}},
                                         r"tensor g_a\.0\.weight repeats its values \(a broadcast view"),
    "views_sharing_one_storage": ({"tensors": (lambda base: {"g_a.0.weight": base[:600].view(8, 3, 5, 5),
                                                             "g_a.2.weight": base[:1600].view(8, 8, 5, 5),
                                                             "g_a.4.weight": base[:1600].view(8, 8, 5, 5)})(
                                      torch.zeros(1600))},
                                  r"its tensors declare [\d,]+ bytes of values but the file holds [\d,]+$"),
    "quantiles_of_1e5": ({"tensors": {"entropy_bottleneck.quantiles": torch.full((12, 1, 3), 1e5)}},
                         r"tensor entropy_bottleneck\.quantiles reaches 1e\+05"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CHECKPOINTS))
def test_a_checkpoint_claiming_what_it_is_not_is_refused_naming_the_field(tmp_path, case):
    changes, message = HOSTILE_CHECKPOINTS[case]
    path = _checkpoint(tmp_path / f"{case}.pth", **changes)
    start = time.monotonic()
    with pytest.raises(InvalidCheckpoint, match=rf"checkpoint {path} refused: {message}"):
        load_model(path)
    assert time.monotonic() - start < 30


def test_a_refused_checkpoint_names_no_folder(tmp_path):
    """The run directory of task=eval comes from the checked identity only: a file that fails the check
    gets eval_unknown, whatever its fields say."""
    from conf.registration import run_name

    good = _checkpoint(tmp_path / "good.pth", lmbda=0.0067)
    assert run_name("eval", "hyperprior", 0.013, str(good)) == "eval_factorized_lmbda0.0067"
    for case, (changes, _) in HOSTILE_CHECKPOINTS.items():
        path = _checkpoint(tmp_path / f"{case}.pth", **changes)
        assert run_name("eval", "hyperprior", 0.013, str(path)) == "eval_unknown", case


def _eval_cli(cwd: Path, checkpoint: Path, *extra: str, timeout: float = 300):
    """`python run.py task=eval checkpoint=...` from `cwd` (so its outputs/ are there), as a user runs it."""
    cmd = [sys.executable, str(REPO / "run.py"), *tiny_overrides(cwd, "model=factorized"), "task=eval",
           f"checkpoint={checkpoint}", "eval.max_images=1", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


def _one_clear_line(out, *needles: str) -> None:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_checkpoint_whose_lambda_points_at_another_run_leaves_that_run_alone(tmp_path):
    """At 0291263 this evaluation wrote its .hydra/, results.json, per_image.csv and run.log into the other
    sweep's finished run, overwriting them."""
    finished = tmp_path / "other_sweep" / "runs" / "factorized_lmbda0.013"
    (finished / ".hydra").mkdir(parents=True)
    (finished / "results.json").write_text('{"bpp": 0.5}')
    (finished / ".hydra" / "config.yaml").write_text("lmbda: 0.013\n")
    before = _tree(tmp_path / "other_sweep")
    evil = _checkpoint(tmp_path / "downloads" / "evil.pth", lmbda="/../" * 12 + str(finished).lstrip("/"))
    work = tmp_path / "work"
    work.mkdir()
    out = _eval_cli(work, evil)
    _one_clear_line(out, str(evil), "field lmbda")
    assert _tree(tmp_path / "other_sweep") == before
    written = [p for p in work.rglob("*") if p.is_file() and "eval_images" not in p.parts]
    assert written and all(p.is_relative_to(work / "outputs" / "quickstart_scratch" / "runs" / "eval_unknown")
                           for p in written), written


@pytest.mark.parametrize("case", ["finite_weights_that_overflow", "inf_weight", "declares_160_gb"])
def test_evaluating_a_checkpoint_that_used_to_hang_or_exhaust_memory_ends_with_one_line(tmp_path, case):
    """At 0291263: inf weights (and finite ones that overflow g_a) ran CompressAI's entropy coder without
    end; a 1.5 MB file made loading allocate 160 GB."""
    changes, needle = {
        "finite_weights_that_overflow": ({"tensors": {"g_a.0.weight": build_model("factorized", 8, 12).state_dict()[
            "g_a.0.weight"] * 1e36}}, "the model's entropy_bottleneck would entropy-code a value of"),
        "inf_weight": (HOSTILE_CHECKPOINTS["inf_weight"][0], "tensor g_a.0.weight holds 1 non-finite"),
        "declares_160_gb": (HOSTILE_CHECKPOINTS["declares_160_gb"][0], "tensor g_a.0.weight declares shape"),
    }[case]
    path = _checkpoint(tmp_path / f"{case}.pth", **changes)
    start = time.monotonic()
    out = _eval_cli(tmp_path, path, f"hydra.run.dir={tmp_path / 'eval'}", timeout=300)
    _one_clear_line(out, needle)
    assert time.monotonic() - start < 240  # it ends: start-up alone can take a minute on a loaded CI machine
    assert not (tmp_path / "eval" / "results.json").exists()


@pytest.mark.parametrize("name, key", [("factorized", "g_a.6.bias"), ("hyperprior", "g_a.6.bias"),
                                       ("joint_autoregressive", "entropy_parameters.4.bias"),
                                       ("checkerboard", "latent_codec.y.entropy_parameters.4.bias"),
                                       ("mean_scale_hyperprior", "h_s.4.bias")])
def test_finite_weights_that_give_symbols_the_coder_cannot_take_are_refused_naming_the_image(tmp_path, name, key):
    """CompressAI's rANS coder loops without end on symbols near 2^27 (int32 overflow), finite or not: a latent
    (g_a) or a mean (entropy parameters, h_s) of 1e9 used to hang evaluation; every route to the coder
    (each model's coding) is checked where it quantizes its symbols."""
    from codec.models.bitstream import LatentOutOfRange

    torch.manual_seed(0)
    model = build_model(name, 8, 12)
    with torch.no_grad():
        model.state_dict()[key].fill_(1e9)
    folder = small_eval_folder(tmp_path, count=1)
    start = time.monotonic()
    with pytest.raises(LatentOutOfRange, match=rf"{folder / 'kodim01.png'}: the model's \S+ would entropy-code a "
                                               r"value of -?[\d.]+e\+\d+ \(the coder takes"):
        evaluate_model(model, folder)
    assert time.monotonic() - start < 30


def test_a_resume_state_of_the_wrong_type_is_refused(tmp_path):
    from codec.training.state import train_state_of

    path = _checkpoint(tmp_path / "last.pth", optimizer={}, step="5; rm -rf /")
    ckpt, _ = model_checkpoint(path)
    with pytest.raises(InvalidCheckpoint, match=r"field step is '5; rm -rf /' \(a str\), not what training records"):
        train_state_of(ckpt, path)


def test_resuming_from_a_last_pth_with_a_hostile_wandb_id_is_refused(tmp_path):
    from codec.runs.job import train_and_evaluate

    run_dir = tmp_path / "run"
    _checkpoint(run_dir / "checkpoints" / "last.pth", optimizer={}, wandb_run_id="../../../outside")
    config = config_for(tiny_overrides(tmp_path, "model=factorized"))
    with pytest.raises(InvalidCheckpoint, match=r"last\.pth refused: field wandb_run_id is '\.\./\.\./\.\./outside'"):
        train_and_evaluate(config, run_dir)
    assert not (tmp_path / "outside").exists()


def test_a_hostile_wandb_id_file_in_a_run_directory_is_refused(tmp_path):
    from codec.runs.tracking import RUN_ID_FILE, Tracker

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_ID_FILE).write_text("../../outside\n")
    config = config_for(tiny_overrides(tmp_path, "model=factorized"))
    with pytest.raises(LicSweepError, match=rf"{RUN_ID_FILE}: '\.\./\.\./outside' is not a W&B run id"):
        Tracker(config, run_dir, None)


RAW_PAYLOAD = """
import os, pickle, sys
class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with open(sys.argv[1], "wb") as f:
    pickle.dump({"state_dict": {}, "x": Payload()}, f, protocol=int(sys.argv[3]))
"""


@pytest.mark.parametrize("protocol", [0, 4, 5])
def test_a_raw_pickle_is_refused_naming_what_it_asks_for(tmp_path, protocol):
    """torch's reader stops a plain pickle of protocol 0 or 4 at its first unknown opcode ("Unsupported
    operand 149"): the refusal still names the object the file would import."""
    path, marker = tmp_path / "raw.pth", tmp_path / "ran"
    subprocess.run([sys.executable, "-c", RAW_PAYLOAD, str(path), str(marker), str(protocol)], check=True, timeout=60)
    with pytest.raises(UnsafeCheckpoint, match=r"raw\.pth refused: .*(it asks for|GLOBAL) posix\.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_plain_pickle_of_tensors_only_is_still_read(tmp_path):
    """What the scan for imported objects leaves alone: torch.save's legacy (non-zip) format."""
    path = tmp_path / "legacy.pth"
    state = build_model("factorized", 8, 12).state_dict()
    torch.save({"state_dict": state, "model_meta": {"name": "factorized", "N": 8, "M": 12}}, path,
               _use_new_zipfile_serialization=False)
    ckpt, identity = model_checkpoint(path)
    assert identity.model == "factorized" and identity.N == 8 and identity.lmbda is None


# -- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [("+trainer.max_stepz=5", "trainer.max_stepz"),
                                           ("+logger.api_key=k-123", "logger.api_key"),
                                           ("+db_password=hunter2", "db_password"),
                                           ("+model.extra.deep=1", "model.extra"),
                                           ("+model.channels.low.api_key=k-123", "model.channels.low.api_key")])
def test_appending_a_key_the_schema_lacks_is_refused_like_a_typo(tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"^{key} is not a setting"):
        config_for(tiny_overrides(tmp_path, "model=factorized", override))


def test_appending_a_known_key_or_a_hydra_key_still_works(tmp_path):
    config = config_for(tiny_overrides(tmp_path, "model=factorized", "++trainer.max_steps=3"))
    assert config.trainer.max_steps == 3


@pytest.mark.parametrize("multirun", [False, True])
def test_a_secret_appended_on_the_command_line_stops_before_hydra_writes_anything(tmp_path, multirun):
    secret = "hunter2-0123456789"
    out_dir = tmp_path / "out"
    # a multirun sweeps over the appended key: it is in no composed config before the jobs start
    cmd = [sys.executable, "run.py", *(["-m", "lmbda=0.01,0.02"] if multirun else []),
           *tiny_overrides(tmp_path, "model=factorized"), f"+db_password={secret}" + (",other" if multirun else ""),
           f"hydra.run.dir={out_dir}", f"hydra.sweep.dir={out_dir}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=subprocess_env())
    _one_clear_line(out, "db_password is not a setting")
    assert not out_dir.exists()
    assert not any(secret.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


# -- images -----------------------------------------------------------------------------------------
def _png_bomb(path: Path, side: int = 100000) -> Path:
    """A valid PNG header declaring side x side RGB pixels, with no pixel data: about 70 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_and_a_1x1_image_are_skipped_by_name_and_do_not_skew_the_set(tmp_path):
    torch.manual_seed(0)
    model = build_model("factorized", 8, 12)
    clean = small_eval_folder(tmp_path, count=1)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "kodim01.png").write_bytes((clean / "kodim01.png").read_bytes())
    _png_bomb(hostile / "bomb.png")
    Image.new("RGB", (1, 1)).save(hostile / "one_pixel.png")
    Image.fromarray(np.asarray(Image.open(KODAK / "kodim23.png"))[:100, :120]).save(hostile / "small.png")
    reference, _ = evaluate_model(model, clean)
    with pytest.warns(UserWarning) as caught:
        results, skipped = evaluate_model(model, hostile)
    messages = [str(w.message) for w in caught]
    assert any("bomb.png" in m and "decompression bomb" in m for m in messages), messages
    assert any("one_pixel.png: 1x1 pixels, under 64 a side" in m for m in messages), messages
    assert any("MS-SSIM is not defined under 161 pixels a side: small.png" in m for m in messages), messages
    assert sorted(skipped) == ["bomb.png", "one_pixel.png"]
    assert [r.image for r in results] == ["kodim01.png", "small.png"]
    assert results[0].bpp == reference[0].bpp and math.isnan(results[1].ms_ssim)
    from codec.records.record import summarize

    summary = summarize(results)
    assert summary["ms_ssim"] == pytest.approx(reference[0].ms_ssim) and summary["ms_ssim_images"] == 1


def test_images_over_the_pixel_limit_or_the_size_header_are_skipped_before_decoding(tmp_path):
    """PIL only warns between MAX_IMAGE_PIXELS and twice that, and decodes (a 13000x13000 PNG of 164 KB is
    507 MB decoded, and far more in the model): refused here from the header. A side over 65535 does not
    fit the bitstream's size header, and used to abort the whole evaluation."""
    from codec.data.images import UnreadableImage, read_rgb

    just_over = _png_bomb(tmp_path / "just_over.png", side=int(Image.MAX_IMAGE_PIXELS ** 0.5) + 1)
    with pytest.raises(UnreadableImage, match=r"just_over\.png: Image size \(\d+ pixels\) exceeds limit"):
        read_rgb(just_over)
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "kodim01.png").write_bytes((small_eval_folder(tmp_path, count=1) / "kodim01.png").read_bytes())
    Image.new("RGB", (70000, 64)).save(folder / "wide.png")
    with pytest.warns(UserWarning, match=r"wide\.png: 70000x64 pixels, over 65535 a side"):
        results, skipped = evaluate_model(build_model("factorized", 8, 12), folder)
    assert [r.image for r in results] == ["kodim01.png"] and skipped == ["wide.png"]


def test_a_folder_of_only_hostile_images_is_refused_naming_it(tmp_path):
    _png_bomb(tmp_path / "bomb.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "one_pixel.png")
    with pytest.warns(UserWarning), pytest.raises(LicSweepError, match=rf"none of the images in {tmp_path} could be"):
        evaluate_model(build_model("factorized", 8, 12), tmp_path)


def test_the_classical_anchors_skip_the_same_images(tmp_path):
    from codec.evaluation.classical import evaluate_classical

    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "kodim01.png").write_bytes((small_eval_folder(tmp_path, count=1) / "kodim01.png").read_bytes())
    _png_bomb(folder / "bomb.png")
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    with pytest.warns(UserWarning):
        results = evaluate_classical("jpeg", 50, folder).to_json()
    assert results["num_images"] == 1 and sorted(results["skipped"]) == ["bomb.png", "one_pixel.png"]


def test_a_decompression_bomb_in_training_data_is_skipped_by_name(tmp_path):
    from codec.data.training import CropDataset

    bomb = _png_bomb(tmp_path / "bomb.png")
    dataset = CropDataset([bomb, KODAK / "kodim01.png"], patch_size=64, train=True)
    crop, skipped = dataset[0]
    assert crop.shape == (3, 64, 64) and f"{bomb} (cannot be decoded)" in skipped


# -- downloads and archives -------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def manifest_of(tmp_path, monkeypatch):
    """Writes a one-file manifest 'hostile' for an archive in a mirror folder; returns (write, mirror)."""
    manifest_dir, mirror = tmp_path / "manifests", tmp_path / "mirror"
    manifest_dir.mkdir()
    mirror.mkdir()
    monkeypatch.setattr(datasets, "MANIFESTS", manifest_dir)

    def write(archive: Path, num_images: int | None = None, **entry_changes) -> None:
        entry = {"name": archive.name, "url": "https://example.invalid/" + archive.name, "sha256": _sha(archive),
                 "size": archive.stat().st_size, "unpack": True, **entry_changes}
        (manifest_dir / "hostile.json").write_text(json.dumps({
            "name": "hostile", "description": "-", "licence": "-", "homepage": "-", "num_images": num_images,
            "files": [entry]}))

    return write, mirror


class _Endless(http.server.BaseHTTPRequestHandler):
    """Streams zeros without end (or announces `announce` bytes in Content-Length); counts what it sent."""
    announce: int | None = None
    sent = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        if self.announce is not None:
            self.send_header("Content-Length", str(self.announce))
        self.end_headers()
        block = b"\0" * 65536
        try:
            while type(self).sent < 256 << 20:  # bounded: the test must stop by itself whatever fetch does
                self.wfile.write(block)
                type(self).sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def endless_server():
    servers = []

    def start(announce=None):
        handler = type("Handler", (_Endless,), {"announce": announce, "sent": 0})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/", handler

    yield start
    for server in servers:
        server.shutdown()


def _small_archive(manifest_of, **entry_changes) -> Path:
    write, mirror = manifest_of
    archive = _zip_bytes([("a.png", b"x" * 1000)], mirror / "set.zip")
    write(archive, **entry_changes)
    return archive


def test_a_server_that_sends_more_than_the_manifest_declares_is_cut_off_at_that_size(tmp_path, manifest_of,
                                                                                        endless_server):
    archive = _small_archive(manifest_of)
    url, _ = endless_server()
    start = time.monotonic()
    with pytest.raises(TooLarge, match=rf"the source sends more, over the limit of {archive.stat().st_size:,} bytes "
                                       r"\(the size the manifest declares\); stopped reading, what arrived is kept"):
        fetch("hostile", tmp_path / "sets", source=url)
    assert time.monotonic() - start < 30
    rejected = tmp_path / "sets" / "hostile" / ".downloads" / "set.zip.rejected"
    assert rejected.stat().st_size == archive.stat().st_size
    assert not (tmp_path / "sets" / "hostile" / ".downloads" / "set.zip.part").exists()


def test_a_server_announcing_more_than_the_manifest_declares_is_refused_before_reading(tmp_path, manifest_of,
                                                                                       endless_server):
    _small_archive(manifest_of)
    url, _ = endless_server(announce=64 << 20)
    with pytest.raises(TooLarge, match=r"the server announces 67,108,864 bytes, over the limit"):
        fetch("hostile", tmp_path / "sets", source=url)
    assert not any((tmp_path / "sets" / "hostile" / ".downloads").iterdir())  # not a byte written


def test_a_file_of_unknown_size_is_read_up_to_max_size_only(tmp_path, manifest_of, endless_server):
    _small_archive(manifest_of, sha256=None, size=None)
    url, _ = endless_server()
    with pytest.raises(TooLarge, match=r"over the limit of 1,048,576 bytes \(--max-size, for a file the manifest "
                                       "gives no size for\)"):
        fetch("hostile", tmp_path / "sets", source=url, trust_first_download=True, max_size=1 << 20)
    assert (tmp_path / "sets" / "hostile" / ".downloads" / "set.zip.rejected").stat().st_size == 1 << 20
    assert datasets.main(["fetch", "hostile", "--dest", str(tmp_path / "sets"), "--source", url,
                          "--trust-first-download", "--max-size", "2M"]) == 1


def test_a_mirror_file_longer_than_declared_is_cut_off(tmp_path, manifest_of):
    archive = _small_archive(manifest_of)
    declared = archive.stat().st_size
    archive.write_bytes(archive.read_bytes() + b"\0" * (4 << 20))
    with pytest.raises(TooLarge, match=rf"over the limit of {declared:,} bytes \(the size the manifest declares"):
        fetch("hostile", tmp_path / "sets", source=str(manifest_of[1]))


def _zip_bytes(entries: list[tuple[str, bytes]], path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def test_an_archive_that_unpacks_to_far_more_than_itself_is_refused_before_extraction(tmp_path, manifest_of):
    write, mirror = manifest_of
    archive = _zip_bytes([("a.png", b"\0" * (30 << 20))], mirror / "bomb.zip")  # 30 MB in about 30 KB
    assert archive.stat().st_size < 100_000
    write(archive)
    with pytest.raises(UnsafeArchive, match=r"unpack to 31,457,280 bytes, over the limit of [\d,]+ \(10x the "
                                            r"archive's own size\); nothing was extracted"):
        fetch("hostile", tmp_path / "sets", source=str(mirror))
    assert not (tmp_path / "sets" / "hostile" / "a.png").exists()
    write(archive, unpacked_size=(30 << 20) - 1)
    with pytest.raises(UnsafeArchive, match=r"over the limit of 31,457,279 \(the manifest's unpacked size\)"):
        fetch("hostile", tmp_path / "sets", source=str(mirror))
    write(archive, unpacked_size=30 << 20, num_images=1)
    assert fetch("hostile", tmp_path / "sets", source=str(mirror)) == tmp_path / "sets" / "hostile"


def test_an_archive_cannot_plant_the_fetch_record(tmp_path, manifest_of, capsys):
    """At 0291263 a zip holding only .fetched.json failed its first fetch, and the next fetch said 'already
    fetched' while list showed the set as present."""
    write, mirror = manifest_of
    record = json.dumps({"manifest": "hostile", "sha256": {}, "images": 60, "files": {".fetched.json": 10}})
    archive = _zip_bytes([(".fetched.json", record.encode())], mirror / "set.zip")
    write(archive, num_images=60)
    sets = tmp_path / "sets"
    for _ in range(2):
        with pytest.raises(UnsafeArchive, match=r"entry '\.fetched\.json' uses a name this tool keeps for itself"):
            fetch("hostile", sets, source=str(mirror))
    assert not (sets / "hostile" / ".fetched.json").exists()
    assert "already fetched" not in capsys.readouterr().out
    assert datasets.status(datasets.manifest("hostile"), sets) != f"fetched in {sets / 'hostile'}"


def test_a_fetch_record_is_trusted_only_while_its_files_match(tmp_path, manifest_of):
    write, mirror = manifest_of
    archive = _zip_bytes([("a.png", (KODAK / "kodim01.png").read_bytes())], mirror / "set.zip")
    write(archive, num_images=1)
    sets = tmp_path / "sets"
    folder = fetch("hostile", sets, source=str(mirror))
    assert set_folder("hostile", sets) == folder and fetched(folder, datasets.manifest("hostile"))
    (folder / "a.png").write_bytes(b"truncated")  # a file changed after the fetch
    assert datasets.status(datasets.manifest("hostile"), sets).startswith("incomplete")
    with pytest.raises(LicSweepError, match=r"hostile is not fetched"):
        set_folder("hostile", sets)
    (folder / ".fetched.json").write_text(json.dumps({"manifest": "hostile", "images": 1}))  # hand-made, no files
    assert fetch("hostile", sets, source=str(mirror)) == folder  # fetched again, from the mirror
    assert (folder / "a.png").read_bytes() == (KODAK / "kodim01.png").read_bytes()


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("entries, named", [
    ([("d", b"file"), ("d/x.png", b"x")], "d/x.png' needs 'd' as a folder"),
    ([("d/x.png", b"x"), ("d", b"file")], "d/x.png' needs 'd' as a folder"),
    ([("a.png", b"1"), ("a.png", b"2")], "a.png' is a second entry for 'a.png'"),
    ([("A.png", b"1"), ("a.png", b"2")], "a.png' is a second entry for 'A.png'"),
    ([("sub/.fetched.json", b"{}")], "sub/.fetched.json' uses a name this tool keeps"),
    ([(".downloads/x.zip", b"{}")], ".downloads/x.zip' uses a name this tool keeps"),
])
def test_colliding_or_reserved_archive_entries_are_refused_before_anything_is_written(tmp_path, entries, named):
    """At 0291263 a file `d` then `d/x.png` wrote `d`, then crashed with a raw NotADirectoryError."""
    archive = _zip_bytes(entries, tmp_path / "a.zip")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=named.replace(".", r"\.")):
        safe_extract(archive, dest, reserved=(".fetched.json", ".downloads"))
    assert not any(dest.rglob("*"))


def test_a_zip_member_that_fails_its_crc_is_refused_and_what_it_wrote_is_removed(tmp_path):
    """A zip whose directory understates a member's size: zipfile stops at the declared size and fails the
    CRC; that used to end fetch in a raw BadZipFile with the earlier members left behind."""
    archive = _zip_bytes([("a.png", b"1" * 1000), ("b.png", b"A" * 100000)], tmp_path / "a.zip")
    raw = bytearray(archive.read_bytes())
    second = raw.find(b"PK\x01\x02", raw.find(b"PK\x01\x02") + 4)  # b.png's central directory record
    struct.pack_into("<I", raw, second + 24, 10)  # its uncompressed size: 10 bytes
    archive.write_bytes(raw)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=r"a\.zip: cannot be unpacked \(BadZipFile: Bad CRC-32 for file 'b\.png'\); "
                                            "the files it had written were removed"):
        safe_extract(archive, dest)
    assert not [p for p in dest.rglob("*") if p.is_file()]


def test_a_fetch_record_with_fewer_images_than_the_manifest_is_not_trusted(tmp_path, manifest_of):
    write, mirror = manifest_of
    archive = _zip_bytes([("a.png", (KODAK / "kodim01.png").read_bytes())], mirror / "set.zip")
    write(archive, num_images=1)
    folder = fetch("hostile", tmp_path / "sets", source=str(mirror))
    write(archive, num_images=41)  # the manifest now says 41: a record of one image is not that set
    assert fetched(folder, datasets.manifest("hostile")) is None


def test_an_entry_that_needs_a_folder_where_a_file_is_is_refused(tmp_path):
    archive = _zip_bytes([("d/x.png", b"x")], tmp_path / "a.zip")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "d").write_text("already here")
    with pytest.raises(UnsafeArchive, match=r"'d/x\.png' needs .*dest/d as a folder, but a file is there"):
        safe_extract(archive, tmp_path / "dest")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_a_tar_holding_a_device_or_fifo_is_refused(tmp_path, kind):
    info = tarfile.TarInfo("set/dev")
    info.type, info.devmajor, info.devminor = kind, 1, 3
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        tf.addfile(info)
    with pytest.raises(UnsafeArchive, match=r"entry 'set/dev' is a link or device"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "set").exists()


def test_a_tar_whose_entries_declare_more_than_the_limit_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("big.png")
        info.size = 20 << 20
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(UnsafeArchive, match=r"unpack to 20,971,520 bytes, over the limit of 1,000"):
        safe_extract(archive, tmp_path / "dest", max_bytes=1000)
    assert not (tmp_path / "dest" / "big.png").exists()


def test_sizes_parse_as_a_user_writes_them():
    assert datasets.parse_size("16G") == datasets.parse_size("16GiB") == 16 << 30
    assert datasets.parse_size("500M") == 500 << 20 and datasets.parse_size("1000") == 1000
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(Exception, match="size|positive"):
            datasets.parse_size(bad)

