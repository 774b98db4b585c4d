"""Starting a sweep's multirun: `python run.py -m` with the sweep's overrides, in a process of its own
(Hydra's command line is its public way in); its summary callback (sweeps.summary) ends it."""

from __future__ import annotations

import signal
import subprocess
import sys

from codec.records.layout import REPO

NO_ANALYSIS = "hydra.callbacks.sweep_summary.analysis=false"
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def multirun_command(overrides: list[str], analysis: bool = True) -> list[str]:
    return [sys.executable, str(REPO / "run.py"), "-m", *overrides, *([] if analysis else [NO_ANALYSIS])]


def launch(overrides: list[str], analysis: bool = True) -> int:
    """The multirun's exit status (non-zero when a run is not done: sweeps.summary). Ctrl-C reaches the
    multirun too (one process group), which stops its jobs resumably: this process waits for it. If this
    process dies (SIGKILL), the multirun gets SIGTERM, and its jobs with it (they save last.pth)."""
    from hydra_plugins.lic_sweep_launcher.local_launcher import end_with_parent

    sys.stdout.flush()
    process = subprocess.Popen(multirun_command(overrides, analysis), preexec_fn=end_with_parent)
    # SIGTERM, SIGUSR1 and SIGUSR2 sent to this process go on to the multirun, whose jobs stop resumably
    # (codec/training/stopping.py) as they did when the multirun ran in this process; this one waits.
    forward = {s: signal.signal(s, lambda signum, _frame: process.send_signal(signum)) for s in FORWARDED}
    try:
        while True:
            try:
                code = process.wait()
                return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says
            except KeyboardInterrupt:
                continue
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)
