"""Test-only: run `run.py` with its overrides, and SIGKILL the whole process group (the run, its W&B
service, loader workers) at a chosen point. Start it with start_new_session=True.

    python tests/killpoint.py POINT OVERRIDES...

POINT is one of
    step:N                      right after optimizer step N (and any checkpoint that step wrote)
    epoch_end:E                 right after epoch E's last.pth was written
    validation:E                during epoch E's validation (after its first batch)
    write:best.pth:E            during the write of best.pth at the end of epoch E (temporary file
    write:last.pth:E            written, not yet renamed over the old one); likewise last.pth
    evaluation                  during the evaluation, after the first image was coded
    rank_step:R:N               only DDP rank R, by itself, right after step N
    prepare_image:K             `python -m codec.prepare ARGS...` (not run.py), killed when it has taken the
                                K-th decoded image from its workers (the current shard half written)

The faults come in through the training loop's callbacks and by wrapping functions in this process
only: production code reads no test switch.
"""

import functools
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def kill() -> None:
    sys.stdout.flush()
    os.killpg(os.getpgid(0), signal.SIGKILL)


def install(point: str) -> None:
    import codec.records.files
    import codec.evaluation.evaluate
    import codec.runs.job
    from codec.training.callbacks import Callback

    kind, _, arg = point.partition(":")
    if kind == "prepare_image":
        import codec.data.prepare

        name, seen = codec.data.prepare.item_name, [0]

        def name_or_die(*args, **kwargs):
            seen[0] += 1
            if seen[0] == int(arg):
                kill()
            return name(*args, **kwargs)

        codec.data.prepare.item_name = name_or_die
        return

    class KillAt(Callback):
        def on_step_end(self, trainer, metrics):
            if kind == "step" and trainer.state.step == int(arg):
                kill()
            if kind == "rank_step" and f"{trainer.ddp.rank}:{trainer.state.step}" == arg:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_epoch_end(self, trainer, val):
            # after the job's CheckpointPolicy (called before this callback) wrote the epoch's last.pth
            if kind == "epoch_end" and trainer.state.batch_in_epoch == 0 and trainer.state.epoch == int(arg):
                kill()

    codec.runs.job.train_and_evaluate = functools.partial(codec.runs.job.train_and_evaluate, callbacks=[KillAt()])

    if kind == "validation":  # in the validation at the end of epoch E (E - 1 epochs are counted), after a batch
        from codec.training.trainer import Trainer

        def validate_and_die(trainer):
            if trainer.state.epoch == int(arg) - 1:
                criterion = trainer.criterion

                def loss_then_die(*args, **kwargs):  # only validation calls it now: training waits for it
                    out = criterion(*args, **kwargs)
                    kill()
                    return out

                trainer.criterion = loss_then_die
            return validate(trainer)

        validate = Trainer.validate
        Trainer.validate = validate_and_die

    if kind == "write":
        name, epoch = arg.split(":")
        replace = os.replace
        import torch

        def replace_or_die(src, dst):
            if Path(dst).name == name and torch.load(src, weights_only=True)["epoch"] == int(epoch):
                kill()
            return replace(src, dst)

        codec.records.files.os.replace = replace_or_die  # the module's os: the atomic write's rename

    if kind == "evaluation":
        pack = codec.evaluation.evaluate.pack

        def pack_then_die(*args, **kwargs):
            data = pack(*args, **kwargs)
            kill()
            return data

        codec.evaluation.evaluate.pack = pack_then_die


if __name__ == "__main__":
    point, overrides = sys.argv[1], sys.argv[2:]
    install(point)
    if point.startswith("prepare_image"):
        from codec.data.prepare import main

        sys.exit(main(overrides))
    import run

    sys.argv = [str(REPO / "run.py"), *overrides]
    run.main()
