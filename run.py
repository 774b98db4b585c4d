"""One run: compose the config, train, evaluate, log.

    python run.py experiment=quickstart model=checkerboard lmbda=0.025
    python run.py --cfg job experiment=seminar model=hyperprior lmbda=0.0067   # show the config
    python run.py --help
"""

import hydra
from omegaconf import DictConfig

from entry import CONFIG_PATH, exit_on_user_error, settings_from, show_resolved_config


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    settings, values = settings_from(cfg)
    print(f"run {settings.run_name}: model={settings.model.name} lmbda={settings.lmbda} "
          f"N={settings.model.N} M={settings.model.M} (training lands with issue 3)")


if __name__ == "__main__":
    show_resolved_config()
    exit_on_user_error(main)
