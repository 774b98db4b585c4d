"""One job, as run.py runs it: train (or resume), evaluate with real bitstreams, log to W&B."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from codec.settings import RunSettings


def train_and_evaluate(settings: RunSettings, config: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Returns the summary of the run (evaluation fields when evaluation ran). A run directory
    that already finished with the same config is not trained again."""
    from codec.job_status import config_fingerprint, finished_results
    from codec.tracking import Tracker
    from codec.train import Trainer

    run_dir = Path(run_dir)
    fingerprint = config_fingerprint(config)
    done = finished_results(run_dir, fingerprint)
    if done is not None:
        print(f"{settings.run_name}: already finished in {run_dir}, skipped")
        return {k: v for k, v in done.items() if k != "per_image"} | {"skipped_as_done": True}
    start = time.monotonic()
    trainer = Trainer(settings, run_dir, config)
    tracker = Tracker(settings, run_dir, config, trainer.wandb_id, enabled=trainer.ddp.is_main)
    trainer.wandb_id = tracker.run_id
    exit_code = 1
    try:
        result = trainer.fit(tracker)
        summary: dict[str, Any] = {
            "train_steps": result.steps, "train_epochs": result.epochs, "best_val_loss": result.best_loss,
            "skipped_files": len(result.skipped_files), "stopped_by": result.stopped_by,
            "train_seconds": round(time.monotonic() - start, 1),
        }
        if result.skipped_files:
            summary["skipped_file_names"] = result.skipped_files
        if trainer.ddp.is_main and result.stopped_by.startswith("signal"):
            print(f"stopped by {result.stopped_by}: last.pth saved, rerun the same command to resume")
        elif trainer.ddp.is_main:
            summary |= _evaluate(settings, trainer, tracker, run_dir, summary | {"config_fingerprint": fingerprint})
        tracker.summary(summary)
        exit_code = 0
        return summary
    finally:
        tracker.finish(exit_code)


def _evaluate(settings, trainer, tracker, run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    from codec.evaluate import evaluate_run

    return evaluate_run(settings, trainer.model, run_dir, tracker, **extra)

