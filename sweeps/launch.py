"""Starting a sweep's multirun: `python run.py -m` with the sweep's overrides, in a process of its own
(Hydra's command line is its public way in); its summary callback (sweeps.summary) ends it."""

from __future__ import annotations

import subprocess
import sys

from codec.records.layout import REPO

NO_ANALYSIS = "hydra.callbacks.sweep_summary.analysis=false"


def multirun_command(overrides: list[str], analysis: bool = True) -> list[str]:
    return [sys.executable, str(REPO / "run.py"), "-m", *overrides, *([] if analysis else [NO_ANALYSIS])]


def launch(overrides: list[str], analysis: bool = True) -> int:
    """The multirun's exit status (non-zero when a run is not done: sweeps.summary). Ctrl-C reaches the
    multirun too (one process group), which stops its jobs resumably: this process waits for it. If this
    process dies (SIGKILL), the multirun gets SIGTERM, and its jobs with it (they save last.pth)."""
    from hydra_plugins.lic_sweep_launcher.local_launcher import end_with_parent

    sys.stdout.flush()
    process = subprocess.Popen(multirun_command(overrides, analysis), preexec_fn=end_with_parent)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue
