import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
# The sweeps the tests run file their figures for the dry run's estimate here, not in this machine's own
# outputs/throughput.json (codec.runs.cost.LOCAL_FILE); set before codec.runs.cost is imported.
os.environ.setdefault("LIC_SWEEP_LOCAL_THROUGHPUT",
                      str(Path(tempfile.mkdtemp(prefix="lic-sweep-throughput-")) / "throughput.json"))
KODAK = REPO / "data" / "kodak"
VIMEO = REPO / "data" / "vimeo-sample"


@pytest.fixture(autouse=True)
def _small_torch(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("WANDB_SILENT", "true")


def kodak_crop(name: str = "kodim23.png", height: int = 128, width: int = 192) -> torch.Tensor:
    """A real Kodak crop as a 1x3xHxW float tensor in [0, 1]."""
    img = np.asarray(Image.open(KODAK / name).convert("RGB"))[:height, :width]
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def small_channels(name: str) -> tuple[int, int]:
    """(N, M) for a test model that trains to non-trivial latents in a few steps: twice the entry's tiny
    channels (16 and 24 for the seminar's models; Cheng 2020's latent has N channels, ELIC's needs M >= 20)."""
    from codec.models.registry import registry_entry

    N, M = registry_entry(name).tiny
    return 2 * N, 2 * M


def tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    """A few CPU steps of the quickstart with tiny channels and a small evaluation folder."""
    return ["experiment=quickstart_scratch", "debug=tiny", "logger.mode=offline",
            f"eval.sets=[{small_eval_folder(tmp_path)}]", "eval.max_images=null", *extra]


def small_eval_folder(tmp_path: Path, count: int = 2) -> Path:
    """Crops of real Kodak images (not multiples of 64), as PNG files. Safe to call from several threads
    at once (the resume harness does): the folder is written aside and renamed into place whole."""
    folder = tmp_path / "eval_images"
    with _EVAL_FOLDER_LOCK:
        if not folder.exists():
            staging = tmp_path / f".eval_images.{os.getpid()}.{threading.get_ident()}"
            staging.mkdir(parents=True)
            for i, name in enumerate(["kodim01.png", "kodim23.png", "kodim15.png"][:count]):
                img = Image.open(KODAK / name).convert("RGB")
                img.crop((0, 0, 200 + 10 * i, 170)).save(staging / name)
            staging.rename(folder)
    return folder


_EVAL_FOLDER_LOCK = threading.Lock()


def config_for(overrides: list[str]):
    """The typed RunConfig for these overrides, composed as run.py composes it."""
    from entry import config_for as compose_config

    return compose_config(overrides)


def hold_env(folder: Path, step: int) -> dict:
    """Environment entries that hold every training run started under them after optimizer step `step`
    (and its checkpoint) until its stop signal arrives, each writing folder/<pid> when it got there
    (tests/hold/sitecustomize.py): a test stops jobs at a known step, not at a machine's speed."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"LIC_SWEEP_TEST_HOLD": f"{step}:{folder}",
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "hold"), str(REPO)])}


def wait_for_held(folder: Path, count: int, alive, what: str, timeout: float = 300) -> None:
    """Until `count` runs are held in `folder`; `alive()` false (the command ended) fails at once."""
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < count:
        assert time.monotonic() < deadline and alive(), f"{what} never reached the hold step"
        time.sleep(0.2)


def subprocess_env(**extra: str) -> dict:
    """The environment for a child run.py: without WANDB_SERVICE, which an in-process W&B run of
    this test session leaves behind and which would make the child share (and outlive) its service."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_SILENT": "true", **extra}


# CI (.ci/run) prepares everything the suite can use (the private Slurm cluster, slurm-wlm) and sets
# LIC_SWEEP_NO_SKIPS=1: a test that skips there means something it prepared is not working (a node went
# down between start.sh and the tests), and the run fails naming the tests instead of passing without them.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and os.environ.get("LIC_SWEEP_NO_SKIPS") == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid} ({reason})")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED:
        print(f"\nLIC_SWEEP_NO_SKIPS=1: {len(_SKIPPED)} test(s) skipped where CI prepared what they need:\n  "
              + "\n  ".join(_SKIPPED))
        session.exitstatus = 1
