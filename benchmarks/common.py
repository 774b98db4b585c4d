"""What the benchmark scripts share: the repository root and the line that says where they ran."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def header(what: str) -> str:
    """A comment line with the date, the machine and the setting, printed before each table."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, {device}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; {what}")
