"""One job, as run.py runs it: train (or resume) and evaluate with real bitstreams (task=train), evaluate a
checkpoint (task=eval), or measure the classical anchors (task=classical). Each writes its run record
(codec.records.record) and logs it to W&B."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from codec.records.layout import RunDir
from codec.records.record import Identity, Provenance, RunRecord, Training
from codec.schema import RunConfig, config_fingerprint


def train_and_evaluate(config: RunConfig, run_dir: str | Path, callbacks: list = ()) -> dict[str, Any]:
    """Returns the summary of the run (evaluation fields when evaluation ran). A run directory that already
    finished with the same config is not trained again. `callbacks` join the training loop's own."""
    from codec.evaluation.evaluate import evaluate_sets
    from codec.records.status import finished_record
    from codec.runs.cost import device_key
    from codec.runs.tracking import Tracker
    from codec.training.callbacks import CheckpointPolicy, TrackerLogging, callbacks_from_config
    from codec.training.distributed import leave_distributed
    from codec.training.trainer import build_trainer

    run = RunDir(run_dir)
    fingerprint = config_fingerprint(config)
    done = finished_record(run, fingerprint)
    if done is not None:
        print(f"{config.run_name}: already finished in {run.path}, skipped")
        _job_clock.job_ended()
        return done.summary() | {"skipped_as_done": True}
    own = callbacks_from_config(config.trainer.callbacks)  # a wrong one stops here, before any work
    start = time.monotonic()
    trainer = build_trainer(config, run.path)
    first_step = trainer.state.step  # > 0 when resumed: train_seconds covers only the steps from here
    card = _card(config, trainer, run) if trainer.ddp.is_main else {}
    tracker = Tracker(config, run.path, trainer.state.wandb_run_id, enabled=trainer.ddp.is_main,
                      extra_config={"repro": card})
    trainer.state.wandb_run_id = tracker.run_id
    exit_code = 1
    try:
        result = trainer.fit([TrackerLogging(tracker), CheckpointPolicy(), *own, *callbacks])
        training = Training(result.steps, result.epochs, result.best_loss, len(result.skipped_files),
                            result.stopped_by, round(time.monotonic() - start, 1), result.steps - first_step,
                            list(result.skipped_files), round(result.step_seconds, 2), round(result.val_seconds, 2),
                            result.validations, result.val_images)
        summary = training.flat()
        if trainer.ddp.is_main and result.stopped_by.startswith("signal"):
            print(f"stopped by {result.stopped_by}: last.pth saved, rerun the same command to resume")
        elif trainer.ddp.is_main:
            evaluation_start = time.monotonic()
            sets, device = evaluate_sets(config.eval, trainer.model, run, tracker.table)
            training.eval_seconds = round(time.monotonic() - evaluation_start, 2)
            training.job_seconds = round(_job_clock.seconds(), 1)
            record = RunRecord(Identity.of_config(config), sets, training,
                               Provenance(fingerprint, card.get("git_commit"), card.get("git_dirty"), tracker.run_id,
                                          str(device), device_key(str(trainer.device))))
            record.write(run)
            summary = record.summary()
        tracker.summary(summary)
        exit_code = 0
        return summary
    finally:
        tracker.finish(exit_code)
        _job_clock.job_ended()
        leave_distributed(trainer.ddp)


def evaluate_checkpoint(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """`python run.py task=eval checkpoint=PATH`: evaluate, write the run record in run_dir, log to W&B.
    Model and lambda are the checkpoint's (lambda is None for a file that does not record it)."""
    from codec.evaluation.evaluate import evaluate_sets
    from codec.models.checkpoint import checked_model
    from codec.runs.tracking import Tracker
    from codec.training.distributed import Distributed, pick_device

    model, _, identity = checked_model(config.checkpoint)
    model = model.to(pick_device(config.device, Distributed()))
    tracker = Tracker(config, run_dir, None, extra_config={"checkpoint": str(config.checkpoint),
                                                           "model": identity.model, "lmbda": identity.lmbda})
    try:
        run = RunDir(run_dir)
        sets, device = evaluate_sets(config.eval, model, run, tracker.table)
        record = RunRecord(Identity(identity.model, identity.lmbda, identity.N, identity.M,
                                    checkpoint=str(config.checkpoint)), sets,
                           provenance=Provenance(wandb_run_id=tracker.run_id, coding_device=str(device)))
        record.write(run)
        summary = record.summary()
        tracker.summary(summary)
        return summary
    finally:
        tracker.finish()


def classical_anchors(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """`python run.py task=classical`: JPEG and WebP at each quality on each test set, one record per point."""
    from codec.data.test_sets import resolved_sets
    from codec.evaluation.classical import evaluate_classical_anchors

    e, run, points = config.eval, RunDir(run_dir), []
    folders = resolved_sets(e.sets, e.sets_root)
    for name, folder in folders.items():
        points += evaluate_classical_anchors(e.classical_codecs, e.classical_qualities, folder,
                                            run.classical(name, list(folders)), e.max_images, name)
    print(f"done: {len(points)} classical anchor points in {run.classical()}")
    return {"classical": points}


class _JobClock:
    """Seconds since this job began: since its process started (interpreter and imports included) for the
    first job of a process, since the previous job ended for the next ones (Hydra's basic launcher runs a
    multirun's jobs one after another in one process)."""

    def __init__(self) -> None:
        import psutil

        self.began = psutil.Process().create_time()

    def seconds(self) -> float:
        return time.time() - self.began

    def job_ended(self) -> None:
        self.began = time.time()


_job_clock = _JobClock()


def _card(config: RunConfig, trainer, run: RunDir) -> dict[str, Any]:
    """The run's reproducibility card (codec.runs.provenance): code, packages, device, data manifests."""
    from codec.data.test_sets import resolved_sets
    from codec.evaluation.evaluate import list_eval_images
    from codec.runs.provenance import reproducibility_card

    test_sets = {name: (list_eval_images(folder, config.eval.max_images)[0], folder)
                 for name, folder in resolved_sets(config.eval.sets, config.eval.sets_root).items()}
    train_files = [*trainer.train_set.files, *trainer.val_set.files]
    return reproducibility_card(run, train_files, config.data.root, test_sets, trainer.device)
