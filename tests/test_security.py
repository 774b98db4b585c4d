"""Untrusted inputs: checkpoints that would run code, archives that write outside their folder, secrets in
records; and the test cluster scripts, which must leave the machine's own Slurm alone."""

import io
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from codec.data.archives import UnsafeArchive, safe_extract
from codec.models.checkpoint import UnsafeCheckpoint, load_checkpoint
from codec.records.secrets import without_secrets
from tests.conftest import REPO, subprocess_env, tiny_overrides

PAYLOAD = """
import os, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"state_dict": {"g_a.0.weight": torch.zeros(8, 3, 5, 5)}, "optimizer": {}, "extra": Payload()},
           sys.argv[1])
"""


def _malicious_checkpoint(path, marker):
    """A checkpoint whose unpickling would run `touch marker` (written by a child process: this one never
    defines the payload class)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", PAYLOAD, str(path), str(marker)], check=True, timeout=60)
    assert path.is_file() and not marker.exists()
    return path


def test_loading_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    evil = _malicious_checkpoint(tmp_path / "evil.pth", tmp_path / "ran")
    with pytest.raises(UnsafeCheckpoint, match=r"evil.pth refused.*arbitrary Python objects.*posix.system"):
        load_checkpoint(evil)
    assert not (tmp_path / "ran").exists()


def _run(tmp_path, *args):
    cmd = [sys.executable, "run.py", *tiny_overrides(tmp_path, "model=factorized"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=subprocess_env())


def test_evaluating_a_malicious_checkpoint_is_refused_by_name(tmp_path):
    evil = _malicious_checkpoint(tmp_path / "downloaded.pth", tmp_path / "ran")
    out = _run(tmp_path, "task=eval", f"checkpoint={evil}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"checkpoint {evil} refused" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ran").exists()


def test_resuming_from_a_malicious_last_pth_is_refused_by_name(tmp_path):
    run_dir = tmp_path / "run"
    evil = _malicious_checkpoint(run_dir / "checkpoints" / "last.pth", tmp_path / "ran")
    out = _run(tmp_path, f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"checkpoint {evil} refused" in out.stderr
    assert not (tmp_path / "ran").exists()
    assert evil.is_file()  # nothing overwritten


def test_init_from_a_malicious_checkpoint_is_refused_by_name(tmp_path):
    evil = _malicious_checkpoint(tmp_path / "pretrained.pth", tmp_path / "ran")
    out = _run(tmp_path, f"init_from={evil}", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"checkpoint {evil} refused" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ran").exists()


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("make, entry", [
    (lambda p: _zip(p / "a.zip", [("ok.png", b"1"), ("../escaped.png", b"2")]), "../escaped.png"),
    (lambda p: _zip(p / "a.zip", [("/tmp/abs.png", b"2")]), "/tmp/abs.png"),
    (lambda p: _tar(p / "a.tar.gz", [_file("set/ok.png"), _file("set/../../escaped.png")]), "set/../../escaped.png"),
    (lambda p: _tar(p / "a.tar.gz", [_file("/etc/abs.png")]), "/etc/abs.png"),
    (lambda p: _tar(p / "a.tar.gz", [_link("set/link", "/etc/passwd")]), "set/link"),
    (lambda p: _tar(p / "a.tar.gz", [_link("set/hard", "../../outside", tarfile.LNKTYPE)]), "set/hard"),
])
def test_an_archive_entry_escaping_the_destination_is_refused_before_extraction(tmp_path, make, entry):
    archive = make(tmp_path)
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(UnsafeArchive, match=re.escape(repr(entry))):
        safe_extract(archive, dest)
    assert not any(dest.rglob("*")), "nothing may be extracted from a refused archive"
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "dest" / "escaped.png").exists()


def test_a_plain_archive_extracts(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [_file("set/a.png", b"1"), _file("set/sub/b.png", b"22")])
    written = safe_extract(archive, tmp_path / "dest")
    assert sorted(p.read_bytes() for p in written) == [b"1", b"22"]


def test_secrets_are_left_out_of_records():
    config = {"lmbda": 0.01, "WANDB_API_KEY": "abc", "logger": {"project": "p", "api_key": "k", "auth-token": "t"},
              "data": {"root": "/d", "password": "pw", "keyframes": 3}, "tags": [{"github_token": "g"}, "x"]}
    clean = without_secrets(config)
    assert clean == {"lmbda": 0.01, "logger": {"project": "p"}, "data": {"root": "/d", "keyframes": 3},
                     "tags": [{}, "x"]}
    assert "abc" not in repr(clean) and "pw" not in repr(clean)


def test_wandb_config_and_checkpoint_config_hold_no_secrets(tmp_path, monkeypatch):
    """The environment is never recorded wholesale; a secret-named entry that reaches a record is dropped."""
    from codec.records.wandb_file import find_runs, read_run
    from codec.runs.job import train_and_evaluate
    from codec.runs.tracking import Tracker
    from tests.conftest import config_for

    token = "local-0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", token)
    config = config_for(tiny_overrides(tmp_path, "model=factorized"))
    train_and_evaluate(config, tmp_path / "run")
    run = read_run(find_runs(tmp_path / "run")[0])
    assert token not in repr(run.config) and "WANDB_API_KEY" not in repr(run.config)
    assert run.config["lmbda"] == config.lmbda
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")
    assert token not in repr(ckpt["config"]) and ckpt["config"]["lmbda"] == config.lmbda

    tracker = Tracker(config, tmp_path / "extra", None, extra_config={"upload_token": "SECRET123", "note": "x"})
    tracker.finish()
    extra = read_run(find_runs(tmp_path / "extra")[0])
    assert "upload_token" not in extra.config and extra.config["note"] == "x"


def test_cluster_scripts_stop_nothing_by_name_and_write_nothing_under_etc():
    scripts = {p.name: p.read_text() for p in [REPO / ".ci" / "run", *(REPO / ".ci" / "slurm").glob("*.sh")]}
    for name, text in scripts.items():
        assert not re.search(r"\b(pkill|killall)\b", text), f".ci/{name} stops processes by name"
    start = scripts["start.sh"]
    assert not re.search(r"(>|mkdir[^\n]*|chown[^\n]*|chmod[^\n]*|cp[^\n]*)\s+/(etc|var|run)/", start)
    assert "SLURM_CONF" in start and "--force" in start


@pytest.mark.xdist_group("slurm")  # beside the Slurm tests' cluster, never during one of them
@pytest.mark.skipif(not shutil.which("slurmctld"), reason="slurm-wlm not installed")
def test_start_refuses_a_foreign_cluster_configuration(tmp_path):
    out = subprocess.run(["bash", ".ci/slurm/start.sh"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=subprocess_env(SLURM_CONF=str(tmp_path / "their-slurm.conf")))
    assert out.returncode == 1 and "points at another cluster" in out.stderr
