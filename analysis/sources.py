"""Logged runs as one pandas DataFrame, one row per run, from offline W&B run files, a W&B
project online, or run directories' results.json. Unfinished and crashed runs are listed apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

from codec.records.wandb_file import find_runs, read_run
from codec.errors import LicSweepError
from codec.records.layout import RESULTS_FILE
from codec.records.record import RunRecord, UnreadableRecord, read_record, sets_in_summary, summary_for_set

COLUMNS = ["model", "lmbda", "N", "M", "rate", "bpp", "psnr", "ms_ssim", "bits", "num_pixels", "num_images",
           "enc_time", "dec_time", "run_id", "group", "state", "source", "git_commit"]
REQUIRED = ["model", "lmbda", "bpp", "psnr"]


@dataclass
class Runs:
    frame: pd.DataFrame
    left_out: list[str] = field(default_factory=list)  # "name: why"
    looked_in: str = ""
    sets: list[str] = field(default_factory=list)  # the test sets the runs were evaluated on, headline first
    headline: str | None = None  # the set the frame holds


def _row(values: dict, **extra) -> dict:
    return {c: values.get(c) for c in COLUMNS} | extra


def _finish(rows: list[dict], left_out: list[str], where: str, sets: list[str] = (), dataset: str | None = None) -> Runs:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        raise LicSweepError(f"no finished runs found in {where}" + (f" ({len(left_out)} left out: "
                            + "; ".join(left_out[:5]) + ")" if left_out else ""))
    frame = frame.sort_values(["model", "lmbda"]).reset_index(drop=True)
    sets = list(dict.fromkeys(sets))
    return Runs(frame, left_out, where, sets, dataset or (sets[0] if sets else None))


def _missing(values: dict) -> list[str]:
    return [k for k in REQUIRED if values.get(k) is None]


def from_offline_wandb(root: str | Path, dataset: str | None = None) -> Runs:
    """Every offline W&B run under `root`; the latest file per run id wins (a resumed run). `dataset`:
    the fields of that test set (default: each run's headline set)."""
    files = find_runs(root)
    if not files:
        raise LicSweepError(f"no offline W&B runs (wandb/offline-run-*/run-*.wandb) under {root}")
    latest: dict[str, object] = {}
    for path in files:
        run = read_run(path)
        if run.run_id not in latest or path.parent.name > latest[run.run_id].path.parent.name:
            latest[run.run_id] = run
    rows, left_out, sets = [], [], []
    for run in latest.values():
        if run.config.get("task") not in (None, "train"):
            continue
        values = {**run.config, **run.summary, "run_id": run.run_id, "group": run.group, "state": run.state,
                  "git_commit": (run.config.get("repro") or {}).get("git_commit")}
        sets += sets_in_summary(values)
        _sort_run(summary_for_set(values, dataset), f"{run.name or run.run_id}", f" ({run.path})", "wandb-offline",
                  rows, left_out, dataset)
    return _finish(rows, left_out, str(root), sets, dataset)


def _sort_run(values: dict | None, name: str, where: str, source: str, rows: list, left_out: list,
              dataset: str | None = None) -> None:
    """A finished run with the required fields becomes a row; any other is listed as left out (values
    None: the run was not evaluated on `dataset`)."""
    if values is None:
        left_out.append(f"{name}: not evaluated on {dataset}{where}")
    elif values["state"] != "finished":
        left_out.append(f"{name}: {values['state']}{where}")
    elif _missing(values):
        left_out.append(f"{name}: lacks {', '.join(_missing(values))}{where}")
    else:
        rows.append(_row(values, source=source))


def run_results(root: str | Path) -> Iterator[tuple[Path, RunRecord | Exception]]:
    """(path, record) for every run record (results.json) under `root`, in path order, the classical
    anchors' left out; the record is the exception when a file cannot be read. The one walk over run
    records that every reader of run directories (tables, per-image statistics, ladder comparison) goes
    through."""
    for path in sorted(p for p in Path(root).rglob(RESULTS_FILE) if "classical" not in p.parts):
        try:
            yield path, read_record(path)
        except UnreadableRecord as exc:
            yield path, exc


def from_results(root: str | Path, dataset: str | None = None) -> Runs:
    """Every run record under `root` (run directories), classical anchors excluded; `dataset` as in
    from_offline_wandb."""
    results = list(run_results(root))
    if not results:
        raise LicSweepError(f"no results.json under {root}")
    rows, left_out, sets = [], [], []
    for path, record in results:
        if isinstance(record, Exception):
            left_out.append(f"{path}: unreadable ({record})")
            continue
        sets += list(record.sets)
        values = record.row(dataset)
        if values is None:
            left_out.append(f"{path}: not evaluated on {dataset}")
            continue
        if _missing(values):
            left_out.append(f"{path}: lacks {', '.join(_missing(values))}")
            continue
        rows.append(_row(values | {"state": "finished", "run_id": values.get("wandb_run_id")}, source="results.json"))
    return _finish(rows, left_out, str(root), sets, dataset)


def from_wandb_api(project: str, entity: str | None = None, group: str | None = None,
                   tags: list[str] | None = None, dataset: str | None = None) -> Runs:
    """Runs of a W&B project online (needs `wandb login`), filtered by group and tags."""
    import wandb

    filters: dict = {}
    if group:
        filters["group"] = group
    if tags:
        filters["tags"] = {"$in": tags}
    path = f"{entity}/{project}" if entity else project
    try:
        api_runs = wandb.Api().runs(path, filters=filters)
    except Exception as exc:
        raise LicSweepError(f"cannot read W&B project {path}: {exc}") from None
    rows, left_out, sets = [], [], []
    for run in api_runs:
        values = {**dict(run.config), **dict(run.summary), "run_id": run.id, "group": run.group, "state": run.state}
        sets += sets_in_summary(values)
        _sort_run(summary_for_set(values, dataset), run.name, "", "wandb-api", rows, left_out, dataset)
    return _finish(rows, left_out, f"W&B project {path} (group={group}, tags={tags})", sets, dataset)


def load_runs(source: str, root: str | Path | None = None, dataset: str | None = None, **online) -> Runs:
    if source == "offline":
        return from_offline_wandb(root, dataset)
    if source == "results":
        return from_results(root, dataset)
    if source == "online":
        return from_wandb_api(**online, dataset=dataset)
    raise LicSweepError(f"source={source!r} is not valid; choose offline, online or results")


def history(root: str | Path) -> dict[str, pd.DataFrame]:
    """Training history per run name, from offline W&B files (the latest file per run id)."""
    curves: dict[str, pd.DataFrame] = {}
    for path in find_runs(root):
        run = read_run(path)
        rows = [h for h in run.history if "train/loss" in h or "val/loss" in h]
        if rows:
            key = run.name or run.run_id
            frame = pd.DataFrame(rows)
            curves[key] = pd.concat([curves[key], frame]) if key in curves else frame
    return curves
