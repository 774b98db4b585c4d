"""One run: compose the config, train, evaluate, log.

    python run.py experiment=quickstart model=checkerboard lmbda=0.025
    python run.py task=eval checkpoint=outputs/.../checkpoints/best.pth    # evaluate only
    python run.py task=classical                 # JPEG and WebP anchors on the same images
    python run.py --cfg job experiment=seminar model=hyperprior lmbda=0.0067   # show the config
    python run.py -m experiment=quickstart       # the grid as a Hydra multirun (see sweep.py)
    python run.py --help

Running the same command again in the same run directory resumes from checkpoints/last.pth;
a run that finished with the same config is skipped.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from entry import CONFIG_PATH, exit_on_user_error, report_user_errors, settings_from, show_resolved_config


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return report_user_errors(lambda: run(cfg, run_dir))
    # In a sweep a failing job must not stop the others: record the failure, return.
    from codec import job_status

    try:
        return run(cfg, run_dir)
    except Exception as exc:
        job_status.mark_failed(run_dir, exc)
        print(f"FAILED {run_dir.name}: {type(exc).__name__}: {exc} (details in {run_dir / 'failed.json'})")
        return {"failed": str(exc)}


def run(cfg: DictConfig, run_dir: Path) -> dict:
    settings, values = settings_from(cfg)
    if settings.task == "classical":
        from codec.classical import evaluate_classical_anchors

        e = settings.eval
        points = evaluate_classical_anchors(e.classical_codecs, e.classical_qualities, e.root, run_dir / "classical",
                                            e.max_images)
        print(f"done: {len(points)} classical anchor points in {run_dir / 'classical'}")
        return {"classical": points}
    if settings.task == "eval":
        from codec.evaluate import evaluate_checkpoint

        summary = evaluate_checkpoint(settings, settings.checkpoint, run_dir)
    else:
        from codec import job_status
        from codec.job import train_and_evaluate

        job_status.mark_running(run_dir)
        try:
            summary = train_and_evaluate(settings, values, run_dir)
        except (KeyboardInterrupt, SystemExit):
            job_status.clear_running(run_dir)  # interrupted, resumable from last.pth
            raise
        except BaseException as exc:
            job_status.mark_failed(run_dir, exc)
            raise
        job_status.clear_running(run_dir)
    shown = {k: summary[k] for k in ("bpp", "psnr", "ms_ssim", "train_steps", "stopped_by") if k in summary}
    print(f"done {settings.run_name}: " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in shown.items()) + f" ({run_dir})")
    return summary


if __name__ == "__main__":
    show_resolved_config()
    exit_on_user_error(main)
