"""Small base checkpoints shipped in the repository (pretrained/): the weights of a finished run, in
float16 (parameters; buffers float32), with the run's config and where they came from.
`python -m codec.pretrained SWEEP_DIR [--lmbda L]` writes one per model from a finished sweep (each
model's run at L; without it, its highest-lambda run from scratch), and the quickstart fine-tunes every
lambda from them (init_from; `make pretrained` = `python -m codec.pretrained outputs/mini --lmbda 0.0067`). How to redo them: README, "Base checkpoints"."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import sys
from pathlib import Path

from codec.errors import LicSweepError
from codec.models.checkpoint import model_checkpoint, save_atomic
from codec.models.registry import DERIVED_BUFFERS, build_model
from codec.records.files import write_text_atomic
from codec.records.layout import REPO, RunDir, SweepDir
from codec.records.record import read_record
from codec.runs.provenance import git_commit

PRETRAINED = REPO / "pretrained"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_checkpoint(source: Path, command: str) -> dict:
    """The shipped form of a run's last.pth: floating parameters in float16 (half the size; a fine-tune
    casts them back to float32), buffers in float32, without the buffers a model rebuilds itself (entropy-coder tables,
    context masks), with the run's config and results and the provenance (source file and hash,
    commit, command, date)."""
    ckpt, _ = model_checkpoint(source)
    if "model_meta" not in ckpt:
        raise LicSweepError(f"{source} is not a checkpoint written by run.py (no model_meta)")
    run = RunDir(source.parent.parent)
    head = read_record(run.results).headline if run.results.is_file() else None
    results = {"set": head.name, **{k: head.means[k] for k in ("bpp", "psnr", "ms_ssim", "num_images") if k in head.means}} if head else {}
    overrides_file = run.overrides  # how Hydra ran the job
    trained_with = ("python run.py " + " ".join(line[2:].strip() for line in overrides_file.read_text().splitlines()
                                                if line.startswith("- "))) if overrides_file.is_file() else None
    # Parameters in float16; buffers as they are: they hold constants that float16 cannot represent
    # (the likelihood lower bound 1e-9 and the GDN pedestal 1.5e-11 become 0, and a fine-tune's loss
    # turns inf). The buffers a model rebuilds (coder tables, context masks) are left out.
    meta = ckpt["model_meta"]
    parameters = {name for name, _ in build_model(meta["name"], meta["N"], meta["M"]).named_parameters()}
    state = {k: v.half() if k in parameters and v.is_floating_point() else v for k, v in ckpt["state_dict"].items()
             if not k.endswith(DERIVED_BUFFERS)}
    return {"state_dict": state, "model_meta": ckpt["model_meta"], "lmbda": ckpt["lmbda"], "config": ckpt["config"],
            "step": ckpt.get("step"),
            "provenance": {"source": str(source.resolve().relative_to(REPO) if source.resolve().is_relative_to(REPO)
                                          else source), "source_sha256": _sha256(source), "trained_with": trained_with,
                           # the weights' own record (a fine-tune's start), beside the command its folder last ran
                           "fine_tuned_from": ckpt["config"].get("init_from"),
                           "git_commit": git_commit() or "unknown",
                           "command": command, "exported": datetime.date.today().isoformat(),
                           "dtype": "parameters float16, buffers float32", "results": results}}


def anchors(sweep_dir: Path, lmbda: float | None = None) -> dict[str, Path]:
    """model name -> last.pth of one finished run per model in a sweep directory: the run at `lmbda` (a
    ladder's fine-tune or anchor), or else the highest-lambda run trained from scratch (the ladder's anchor)."""
    best: dict[str, tuple[float, Path]] = {}
    for run in SweepDir(sweep_dir).run_dirs(started_by_hydra=False):
        path = run.last_checkpoint
        if not run.results.is_file() or not path.is_file():
            continue  # unfinished
        ckpt, identity = model_checkpoint(path)
        name, own = identity.model, identity.lmbda
        if own is None:
            continue
        wanted = own == lmbda if lmbda is not None else ckpt["config"].get("init_from") is None
        if wanted and own > best.get(name, (-1.0, path))[0]:
            best[name] = (own, path)
    if not best:
        what = f"at lambda {lmbda}" if lmbda is not None else "trained from scratch"
        raise LicSweepError(f"{sweep_dir}: no finished run {what} under runs/*/ (run "
                            "`python sweep.py --ladder experiment=mini` first)")
    return {name: path for name, (_, path) in best.items()}


def export(sweep_dir: Path, out_dir: Path = PRETRAINED, command: str = "", lmbda: float | None = None) -> list[Path]:
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["| model | lambda | steps | fine-tuned from | test set | bpp | PSNR (dB) | size | sha256 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, source in sorted(anchors(sweep_dir, lmbda).items()):
        base = base_checkpoint(source, command)
        path = out_dir / f"{name}.pth"
        save_atomic(base, path)
        results = base["provenance"]["results"]
        start = base["provenance"]["fine_tuned_from"] or "scratch"
        lines.append(f"| {name} | {base['lmbda']} | {base['step']} | `{start}` | {results.get('set', '?')} | "
                     f"{results.get('bpp', float('nan')):.4f} | {results.get('psnr', float('nan')):.2f} | {path.stat().st_size / 1e6:.1f} MB | "
                     f"`{_sha256(path)[:16]}` |")
        written.append(path)
    table = "\n".join(lines)
    write_text_atomic(f"<!-- written by: {command} -->\n{table}\n", out_dir / "MANIFEST.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a finished sweep, e.g. outputs/mini")
    parser.add_argument("--out", type=Path, default=PRETRAINED, help="where to write <model>.pth (default: pretrained/)")
    parser.add_argument("--lmbda", type=float, default=None,
                        help="each model's run at this lambda (default: its highest-lambda run from scratch)")
    args = parser.parse_args(argv)
    command = "python -m codec.pretrained " + " ".join(argv if argv is not None else sys.argv[1:])
    for path in export(args.sweep_dir, args.out, command, args.lmbda):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
