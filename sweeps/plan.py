"""The plan of a sweep: each job's validated config, run directory, fingerprint and, for --dry-run, its
steps and estimated hours (codec.runs.cost)."""

from __future__ import annotations

import os

from codec.records.layout import REPO
from entry import compose, run_config
from sweeps.grid import grid_overrides


def plan(overrides: list[str], with_cost: bool = False, device: str | None = None) -> list[dict]:
    """Each job's config (composed once and validated), run directory and config fingerprint, for
    --dry-run, status and the ladder; with_cost: steps, hours and the loader's crops/s (from the figures
    measured on `device`, a name in the throughput tables; default this machine's)."""
    from codec.runs.cost import data_sizes, evaluation_megapixels, load_table, run_cost
    from codec.schema import config_fingerprint
    from codec.training.schedulers import scheduler_settings

    rows, images, pixels, table = [], {}, {}, load_table() if with_cost else {}
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
                     "refine_anchor": c.ladder.refine_anchor, "sweep_name": c.sweep_name,
                     "slots": launcher_slots(cfg.hydra.launcher)})
        if with_cost:  # steps and estimated hours from the measured throughput table (codec/runs/cost.py)
            key = (c.data.format, c.data.root, c.data.list_file, c.data.val_fraction)
            if key + (c.data.patch_size,) not in images:
                images[key + (c.data.patch_size,)] = data_sizes(c, loader=True)
            sets = (tuple(c.eval.sets), c.eval.sets_root, c.eval.max_images)
            if sets not in pixels:
                pixels[sets] = evaluation_megapixels(c)
            train_images, val_images, per_core = images[key + (c.data.patch_size,)]
            rows[-1].update(run_cost(c, table, train_images, pixels[sets], val_images, device))
            rows[-1]["cpus_per_job"] = launcher_cpus(cfg.hydra.launcher)
            rows[-1]["data"] = {"source": c.data.root, "format": str(c.data.format), "patch": c.data.patch_size,
                                "num_workers": str(c.data.num_workers), "per_core": per_core}
    return rows


def launcher_slots(launcher) -> tuple[int | None, str]:
    """How many of a multirun's jobs run at once, and the launcher's words for it (None: all at once)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("LocalGpuLauncher"):  # the launcher's own slots: GPUs x jobs_per_gpu, else cpu_jobs
        from hydra_plugins.lic_sweep_launcher.slots import make_slots

        slots = make_slots(launcher.get("gpus"), launcher.jobs_per_gpu, launcher.get("cpu_jobs") or os.cpu_count() or 1)
        kind = "GPU" if slots[0].name.startswith("gpu") else "CPU"
        return len(slots), f"local launcher, {len(slots)} {kind} job(s) at once"
    if "submitit" in target.lower():
        parallel = launcher.get("array_parallelism")
        return parallel, f"Slurm, {parallel or 'every'} job(s) at once as the cluster allows"
    return 1, "one job at a time (Hydra's basic launcher)"


def launcher_cpus(launcher) -> int | None:
    """The CPUs each job gets where the launcher gives each its own (Slurm's cpus_per_task), else None."""
    if "submitit" in str(launcher.get("_target_", "")).lower():
        return launcher.get("cpus_per_task")
    return None


PLAN_ONLY = ["run_dir", "fingerprint", "job", "finetune", "sweep_dir", "refine_anchor", "sweep_name", "slots", "step",
             "figures", "data", "device", "cpus_per_job"]


def print_plan(rows: list[dict]) -> None:
    import pandas as pd

    from codec.runs.cost import THROUGHPUT_FILE, device_key, loader_check

    device = rows[0].get("device") if rows else None
    device = device or device_key()
    frame = pd.DataFrame(rows).drop(columns=[c for c in PLAN_ONLY if c in rows[0]] if rows else [])
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
            from codec.runs.cost import sweep_wall_hours

            slots, how = rows[0]["slots"]
            wall = sweep_wall_hours(rows, slots)
            print(f"estimated: {sum(known):.2f} job-hours in all" + (f"; {_clock(wall)} wall, {how}" if wall else "")
                  + f" on {device}")
            figures = [r["figures"] for r in rows if r.get("figures")]
            for source in sorted({f["source"] for f in figures}):
                print(f"  figures from {source}")
            if all("start_seconds" in f for f in figures):
                print("  each job: training steps at the measured rate (carried by MACs per pixel and crop size), "
                      "plus its measured start-up, validations and evaluation")
            else:
                print("  training steps only, at the measured rate carried by MACs per pixel and crop size: a job's "
                      "start-up, validation and evaluation are not in it until a sweep on this machine has measured them")
            at_once = {f["jobs_at_once"] for f in figures if f.get("jobs_at_once")}
            if slots and at_once and at_once != {slots}:
                print(f"  note: measured with {'/'.join(map(str, sorted(at_once)))} jobs at once, planned with {slots}: "
                      "each job's speed differs")
        else:
            print(f"no measured throughput for {device} in {THROUGHPUT_FILE.relative_to(REPO)} or "
                  "outputs/throughput.json: any sweep on this machine files its figures at its end (or run `make bench`,"
                  " or `make gpu-check` on a GPU) for hour estimates")
    for line in loader_check(rows):
        print(line)


def _clock(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 2 else f"{hours * 60:.0f} min"
