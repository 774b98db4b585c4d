"""The W&B run of one training run: offline by default, resumed under the same id."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from codec.errors import LicSweepError
from codec.models.checkpoint import valid_run_id
from codec.records.files import write_text_atomic
from codec.records.layout import RunDir
from codec.records.secrets import without_secrets
from codec.records.wandb_file import wait_until_written
from codec.schema import RunConfig, as_dict

RUN_ID_FILE = RunDir(".").wandb_run_id.name


class Tracker:
    """Thin wrapper over a wandb run; inert on non-zero ranks and with logger.mode=disabled."""

    def __init__(self, config: RunConfig, run_dir: Path, run_id: str | None, enabled: bool = True,
                 extra_config: dict[str, Any] | None = None):
        self.run = None
        log = config.logger
        if not enabled or log.mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        values = as_dict(config)
        flat = {"model": config.model.name, "lmbda": config.lmbda, "N": config.model.N, "M": config.model.M,
                "rate": str(config.rate), "experiment": config.experiment_name}
        # Flat keys first, so the UI can compare runs by model/lmbda/N/M/rate; the nested model
        # config stays under "model_config".
        full = without_secrets({**{k: v for k, v in values.items() if k != "model"}, "model_config": values["model"],
                                **flat, **(extra_config or {})})
        # The id lives in the run directory from the run's first moment, not only in its checkpoints: a
        # job killed before its first checkpoint continues the same W&B run too.
        id_file = RunDir(run_dir).wandb_run_id
        run_id = run_id or (id_file.read_text().strip() if id_file.is_file() else None) or uuid.uuid4().hex[:12]
        if not valid_run_id(run_id):  # wandb names folders after it: only its own characters
            raise LicSweepError(f"{id_file}: {run_id[:80]!r} is not a W&B run id (1 to 64 letters, digits, _ or -); "
                                "delete the file to start a new W&B run")
        options = dict(
            mode=os.environ.get("WANDB_MODE", log.mode), project=log.project, entity=log.entity,
            dir=str(Path(log.dir) if log.dir else run_dir), id=run_id,
            resume="allow", name=config.run_name, group=log.group or None,
            tags=[str(t) for t in log.tags], config=full, reinit="finish_previous",
        )
        # After a kill, the dead process's wandb-core holds the run id for a few seconds.
        deadline = time.monotonic() + 60
        while True:
            try:
                self.run = wandb.init(**options)
                if not id_file.is_file():
                    write_text_atomic(self.run.id, id_file)
                return
            except Exception as exc:
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run else None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run:
            for k, v in values.items():
                self.run.summary[k] = v

    def images(self, key: str, pairs: list, step: int) -> None:
        if self.run and pairs:
            import wandb

            self.run.log({key: [wandb.Image(img, caption=cap) for img, cap in pairs]}, step=step)

    def table(self, key: str, rows: list[dict[str, Any]]) -> None:
        if self.run and rows:
            import wandb

            columns = list(rows[0])
            self.run.log({key: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def finish(self, exit_code: int = 0) -> None:
        if self.run:
            run_file = self.run.settings.sync_file if self.run.settings.mode == "offline" else None
            self.run.finish(exit_code=exit_code)
            self.run = None
            # a failing run (a preempted job's grace period) waits less: its record only says how it ended
            wait = 60 if exit_code == 0 else 10
            if run_file and not wait_until_written(run_file, timeout=wait):
                print(f"warning: W&B had not finished writing {run_file} {wait} s after the run ended; "
                      "its config or results may be missing from reports", file=sys.stderr)
