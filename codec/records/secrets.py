"""Keys that name a credential: never recorded in a W&B config, a checkpoint's config or a run record."""

from __future__ import annotations

import re
from typing import Any

_SECRET_WORDS = {"key", "apikey", "token", "authtoken", "password", "passwd", "secret", "credential", "credentials"}


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_WORDS & set(re.split(r"[^a-z0-9]+", str(name).lower())))


def without_secrets(values: Any) -> Any:
    """`values` (nested dicts and lists) without any entry whose key names a credential."""
    if isinstance(values, dict):
        return {k: without_secrets(v) for k, v in values.items() if not is_secret_name(k)}
    if isinstance(values, list):
        return [without_secrets(v) for v in values]
    return values
