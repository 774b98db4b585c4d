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

from codec.schema import RunConfig, Task
from entry import CONFIG_PATH, exit_on_user_error, show_resolved_config, task_wrapper


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> dict:
    hydra_config = HydraConfig.get()
    return task_wrapper(run, cfg, Path(hydra_config.runtime.output_dir), hydra_config.mode == RunMode.MULTIRUN)


def run(config: RunConfig, run_dir: Path) -> dict:
    if config.task == Task.classical:
        from codec.runs.job import classical_anchors

        return classical_anchors(config, run_dir)
    if config.task == Task.eval:
        from codec.runs.job import evaluate_checkpoint

        summary = evaluate_checkpoint(config, run_dir)
    else:
        from codec.runs.job import train_and_evaluate

        summary = train_and_evaluate(config, run_dir)
    shown = {k: summary[k] for k in ("bpp", "psnr", "ms_ssim", "train_steps", "stopped_by") if k in summary}
    print(f"done {config.run_name}: " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in shown.items()) + f" ({run_dir})")
    return summary


if __name__ == "__main__":
    show_resolved_config()
    exit_on_user_error(main)
