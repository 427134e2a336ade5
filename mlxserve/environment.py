"""MLXSERVE_* environment variables, read alike everywhere."""

from __future__ import annotations

import os

TRUE_WORDS = ("1", "true", "yes", "on")


def env(name: str, default=None):
    return os.environ.get(f"MLXSERVE_{name}", default)


def env_flag(name: str) -> bool:
    """A yes/no variable: 1/true/yes/on set it; 0/false/no/off, anything else or nothing
    leave it off."""
    return (env(name) or "").strip().lower() in TRUE_WORDS
