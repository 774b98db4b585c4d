"""The reproducibility card of a run: which code (git commit, and the diff when the tree was dirty),
which packages, which interpreter, framework and device, and which data (a hash of the training and
test files' names and sizes: cheap on 82 GB of Vimeo-90k, and it changes when a file is added, removed
or replaced by one of another size). Written to <run dir>/repro.json and into the W&B run's config."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from codec.records.files import write_json_atomic, write_text_atomic
from codec.records.layout import REPO, RunDir


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    """HEAD of the repository this code runs from (None outside a git checkout)."""
    return (_git("rev-parse", "HEAD") or "").strip() or None


def files_manifest(files: Iterable[Path], root: str | Path | None = None) -> dict[str, Any]:
    """sha256 over 'relative name<TAB>size' lines, sorted; with the count and total size."""
    rows, total = [], 0
    for item in files:
        if hasattr(item, "nbytes"):  # an image of a packed store (codec.prepare): its source name, its bytes
            name, size = item.name, item.nbytes
        else:
            path = Path(item)
            size = path.stat().st_size
            name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        total += size
        rows.append(f"{name}\t{size}")
    rows.sort()
    return {"files": len(rows), "bytes": total, "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}


def packages() -> list[str]:
    """`pip freeze` without running pip: every installed distribution as name==version."""
    seen = {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions() if d.metadata["Name"]}
    return sorted(seen, key=str.lower)


def reproducibility_card(run_dir: Path | RunDir, train_files: Iterable[Path] = (), train_root: str | Path | None = None,
                         test_sets: dict[str, tuple[Iterable[Path], str | Path]] | None = None,
                         device: torch.device | None = None) -> dict[str, Any]:
    run = RunDir(run_dir)
    commit = git_commit()
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.strip()) if status is not None else None
    card: dict[str, Any] = {
        "git_commit": commit, "git_dirty": dirty,
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": (torch.cuda.get_device_name(device) if device is not None and device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "train_data": files_manifest(train_files, train_root), 
        "test_data": {name: files_manifest(files, root) for name, (files, root) in (test_sets or {}).items()},
        "packages": packages(),
    }
    if dirty:
        diff = _git("diff", "HEAD") or ""
        write_text_atomic(diff, run / "repro.diff")
        card["git_diff"] = "repro.diff"
        card["git_diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
    write_json_atomic(card, run.repro)
    return card
