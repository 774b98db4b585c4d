"""The OmegaConf resolvers the config tree uses, registered in one place."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from codec.errors import ConfigError
from codec.rate import RATE_TIERS, rate_tier

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "conf"


def model_channel(channels: DictConfig, rate: str, which: str) -> int:
    """N or M of the model's channel table for the rate tier."""
    if rate not in RATE_TIERS:
        raise ConfigError(f"rate={rate!r} is not a rate tier; choose one of {', '.join(RATE_TIERS)}")
    return int(channels[rate][which])


def register_resolvers() -> None:
    resolvers = {
        "rate_tier": rate_tier,
        "model_channel": model_channel,
        "repo_root": lambda: str(REPO_ROOT),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
