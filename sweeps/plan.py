"""The plan of a sweep: each job's validated config, run directory, fingerprint and, for --dry-run, its
steps and estimated hours (codec.runs.cost)."""

from __future__ import annotations

from codec.records.layout import REPO
from entry import compose, run_config
from sweeps.grid import grid_overrides


def plan(overrides: list[str], with_cost: bool = False) -> list[dict]:
    """Each job's config (composed once and validated), run directory and config fingerprint, for
    --dry-run, status and the ladder."""
    from codec.runs.cost import load_table, run_cost, training_images
    from codec.schema import config_fingerprint
    from codec.training.schedulers import scheduler_settings

    rows, images, table = [], {}, load_table() if with_cost else {}
    for job in grid_overrides(overrides):
        cfg = compose(job, with_hydra=True)
        sweep_dir = str(cfg.hydra.sweep.dir)  # as ${hydra:sweep.dir} gives it to the jobs
        c = run_config(cfg, require_data=False)
        detail = " ".join(f"{k}={v}" for k, v in scheduler_settings(c.scheduler).items())
        rows.append({"run": c.run_name, "model": c.model.name, "lmbda": c.lmbda, "rate": str(c.rate),
                     "N": c.model.N, "M": c.model.M, "scheduler": f"{c.scheduler.name} ({detail})",
                     "epochs": c.trainer.epochs, "max_steps": c.trainer.max_steps, "experiment": c.experiment_name,
                     "run_dir": REPO / sweep_dir / str(cfg.hydra.sweep.subdir), "fingerprint": config_fingerprint(c),
                     "job": job, "finetune": list(c.ladder.finetune), "sweep_dir": sweep_dir,
                     "refine_anchor": c.ladder.refine_anchor, "sweep_name": c.sweep_name})
        if with_cost:  # steps and estimated hours from the measured throughput table (codec/runs/cost.py)
            key = (c.data.format, c.data.root, c.data.list_file, c.data.val_fraction)
            if key not in images:
                images[key] = training_images(c)
            rows[-1].update(run_cost(c, table, images[key]))
    return rows


PLAN_ONLY = ["run_dir", "fingerprint", "job", "finetune", "sweep_dir", "refine_anchor", "sweep_name"]


def print_plan(rows: list[dict]) -> None:
    import pandas as pd

    from codec.runs.cost import THROUGHPUT_FILE, device_key

    frame = pd.DataFrame(rows).drop(columns=PLAN_ONLY)
    if "est. hours" in frame:
        frame["est. hours"] = frame["est. hours"].map(lambda h: "?" if h is None or h != h else f"{h:.2f}")
        for column in ("steps/epoch", "total steps"):
            frame[column] = frame[column].map(lambda v: "?" if v is None or v != v else str(int(v)))
    print(frame.to_string(index=False))
    print(f"\n{len(rows)} runs planned for experiment={rows[0]['experiment'] if rows else '?'}")
    if "est. hours" in frame:
        if (frame["total steps"] == "?").any():
            print("steps unknown where the training data is not there (data.root) and trainer.steps_per_epoch is unset")
        known = [float(h) for h in frame["est. hours"] if h != "?"]
        if known:
            print(f"estimated total: {sum(known):.1f} hours on {device_key()} (from "
                  f"{THROUGHPUT_FILE.relative_to(REPO)}; scaled by MACs per pixel and crop size, not timed)")
        else:
            print(f"no measured throughput for {device_key()} in {THROUGHPUT_FILE.relative_to(REPO)}: run `make bench` "
                  "(or `python -m codec.cost record SWEEP_DIR` after a sweep) on this machine for hour estimates")
