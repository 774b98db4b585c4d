"""The end of every multirun (`python run.py -m ...` and `python sweep.py ...`), as a Hydra Callback
(conf/config.yaml: hydra.callbacks.sweep_summary): each run's state with bpp and PSNR, the failures with
where their logs are, the report folder, and a non-zero exit when a run is not done."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from codec.records.layout import RunDir, SweepDir

STATES = ("done", "running", "failed", "resumable", "pending", "stale")


def run_rows(run_dirs: list[Path], fingerprints: dict[Path, str] | None = None) -> list[dict]:
    """One row per run directory: name, state, bpp and PSNR of the headline set, and a note pointing at a
    failure's record."""
    from codec.records.record import UnreadableRecord, read_record
    from codec.records.status import run_state

    rows = []
    for run_dir in run_dirs:
        run = RunDir(run_dir)
        state = run_state(run, (fingerprints or {}).get(run_dir))
        row = {"run": run.name, "state": state, "bpp": "", "psnr": "", "note": "", "run_dir": run.path}
        if state == "done":
            try:
                head = read_record(run.results).headline
                row |= {"bpp": f"{head['bpp']:.4f}", "psnr": f"{head['psnr']:.2f}"}
            except UnreadableRecord as exc:
                row["note"] = str(exc)[:120]
        elif state == "failed":
            err = json.loads(run.failed.read_text())
            row["note"] = f"{err['error'][:80]} (see {run.failed})"
        rows.append(row)
    return rows


def print_rows(rows: list[dict]) -> dict[str, int]:
    import pandas as pd

    print(pd.DataFrame(rows).drop(columns=["run_dir"]).to_string(index=False))
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(rows)} runs")
    return counts


def finish_sweep(sweep_dir: Path, rows: list[dict], analysis: bool = True) -> int:
    """The summary, the report (when a run is done) and where each unfinished run's logs are; the exit code."""
    counts = print_rows(rows)
    if analysis and counts["done"]:
        from analysis.report import build_report

        report = build_report(runs_root=sweep_dir, out_dir=SweepDir(sweep_dir).report, source="offline")
        print(f"\nRD plot: {report['rd_plot']}\nresults table: {report['results_table']}")
    unfinished = [r for r in rows if r["state"] != "done"]
    for r in unfinished:
        run = RunDir(r["run_dir"])
        logs = [p for p in (run.failed, run.job_log) if p.exists()]
        print(f"not done: {r['run']} ({r['state']}), see {', '.join(map(str, logs)) or r['run_dir']}")
    return 1 if unfinished else 0


def file_this_machines_figures(sweep_dir: Path) -> None:
    """The finished runs' figures (rate, start-up, validation, evaluation) as this machine's, for the next dry
    run's estimate (codec.runs.cost.LOCAL_FILE). Never fails the sweep."""
    from codec.runs.cost import LOCAL_FILE, record_runs

    try:
        if record_runs(sweep_dir, LOCAL_FILE):
            print(f"this machine's figures for sweep.py --dry-run: {LOCAL_FILE}")
    except Exception as exc:  # noqa: BLE001 - an estimate's input must not turn a finished sweep into a failed one
        print(f"note: could not file this sweep's figures in {LOCAL_FILE}: {exc}")


class SweepSummary(Callback):
    def __init__(self, analysis: bool = True) -> None:
        self.analysis = analysis

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        runs = [run.path for run in SweepDir(sweep_dir).run_dirs()]
        print(f"\nsweep {sweep_dir.name}:")
        code = finish_sweep(sweep_dir, run_rows(runs), self.analysis)
        file_this_machines_figures(sweep_dir)
        if code:
            sys.exit(code)
