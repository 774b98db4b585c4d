"""Test-only, imported at start-up by every Python process that has tests/hold on PYTHONPATH (the jobs a
launcher starts inherit it): with LIC_SWEEP_TEST_HOLD=STEP:DIR set, a training run stops after optimizer
step STEP (and the checkpoint that step wrote), writes DIR/<pid>, and waits there until its stop signal
arrives, or until DIR/release exists (a DDP rank that no signal reached); then the loop goes on as it
would. A test kills a sweep while every job is held at a known step, not at whatever step the machine's
speed left it. Production code reads nothing."""

import os

_HOLD = os.environ.get("LIC_SWEEP_TEST_HOLD")

if _HOLD:
    import functools
    import time
    from pathlib import Path

    import codec.runs.job
    from codec.training.callbacks import Callback

    _step, _, _folder = _HOLD.partition(":")

    class _HoldAt(Callback):
        def on_step_end(self, trainer, metrics):
            if trainer.state.step != int(_step):
                return
            (Path(_folder) / str(os.getpid())).touch()
            while not trainer.stop.received and not (Path(_folder) / "release").exists():
                time.sleep(0.05)

    codec.runs.job.train_and_evaluate = functools.partial(codec.runs.job.train_and_evaluate, callbacks=[_HoldAt()])
