"""Rate tiers: which lambdas count as "low" and "high" rate (picks N and M)."""

from __future__ import annotations

RATE_TIERS = ("low", "high")
# The protocol's lambdas {0.0067, 0.013} are low and {0.025, 0.0483} high; the split sits between.
HIGH_RATE_FROM_LMBDA = 0.018


def rate_tier(lmbda: float) -> str:
    from codec.errors import ConfigError

    try:
        value = float(lmbda)
    except (TypeError, ValueError):
        raise ConfigError(f"lmbda={lmbda!r} is not a number; use a positive value such as 0.013") from None
    if not value > 0:
        raise ConfigError(f"lmbda={value:g} must be positive (the protocol uses 0.0067, 0.013, 0.025, 0.0483)")
    return "high" if value >= HIGH_RATE_FROM_LMBDA else "low"
