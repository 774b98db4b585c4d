"""One job, as run.py runs it: train (or resume), evaluate with real bitstreams, log to W&B."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from codec.schema import RunConfig, as_dict


def train_and_evaluate(config: RunConfig, run_dir: str | Path, callbacks: list = ()) -> dict[str, Any]:
    """Returns the summary of the run (evaluation fields when evaluation ran). A run directory that already
    finished with the same config is not trained again. `callbacks` join the training loop's own."""
    from codec.evaluate import evaluate_run
    from codec.job_status import config_fingerprint, finished_results
    from codec.tracking import Tracker
    from codec.train import CheckpointPolicy, TrackerLogging, build_trainer

    run_dir = Path(run_dir)
    fingerprint = config_fingerprint(as_dict(config))
    done = finished_results(run_dir, fingerprint)
    if done is not None:
        print(f"{config.run_name}: already finished in {run_dir}, skipped")
        return {k: v for k, v in done.items() if k not in ("per_image", "sets")} | {"skipped_as_done": True}
    start = time.monotonic()
    trainer = build_trainer(config, run_dir)
    first_step = trainer.state.step  # > 0 when resumed: train_seconds covers only the steps from here
    card = _card(config, trainer, run_dir) if trainer.ddp.is_main else {}
    tracker = Tracker(config, run_dir, trainer.state.wandb_run_id, enabled=trainer.ddp.is_main,
                      extra_config={"repro": card})
    trainer.state.wandb_run_id = tracker.run_id
    exit_code = 1
    try:
        result = trainer.fit([TrackerLogging(tracker), CheckpointPolicy(), *callbacks])
        summary: dict[str, Any] = {
            "train_steps": result.steps, "train_epochs": result.epochs, "best_val_loss": result.best_loss,
            "skipped_files": len(result.skipped_files), "stopped_by": result.stopped_by,
            "train_seconds": round(time.monotonic() - start, 1), "steps_this_process": result.steps - first_step,
        }
        if result.skipped_files:
            summary["skipped_file_names"] = result.skipped_files
        if trainer.ddp.is_main and result.stopped_by.startswith("signal"):
            print(f"stopped by {result.stopped_by}: last.pth saved, rerun the same command to resume")
        elif trainer.ddp.is_main:
            summary |= evaluate_run(config, trainer.model, run_dir, tracker, lmbda=config.lmbda, N=config.model.N,
                                    M=config.model.M, rate=str(config.rate), run_name=config.run_name,
                                    experiment=config.experiment_name, group=config.logger.group, seed=config.seed,
                                    git_commit=card.get("git_commit"), git_dirty=card.get("git_dirty"),
                                    init_from=config.init_from, **summary,
                                    config_fingerprint=fingerprint)
        tracker.summary(summary)
        exit_code = 0
        return summary
    finally:
        tracker.finish(exit_code)


def _card(config: RunConfig, trainer, run_dir: Path) -> dict[str, Any]:
    """The run's reproducibility card (codec/provenance.py): code, packages, device, data manifests."""
    from codec.datasets import set_folder, set_name
    from codec.evaluate import list_eval_images
    from codec.provenance import reproducibility_card

    test_sets = {}
    for entry in config.eval.sets:
        folder = set_folder(entry, config.eval.sets_root)
        test_sets[set_name(entry)] = (list_eval_images(folder, config.eval.max_images)[0], folder)
    train_files = [*trainer.train_set.files, *trainer.val_set.files]
    return reproducibility_card(run_dir, train_files, config.data.root, test_sets, trainer.device)
