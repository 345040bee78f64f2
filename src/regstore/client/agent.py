"""The ``User-Agent`` regstore's requests carry, known without importing ``requests``."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

__all__ = ["default_user_agent"]


@functools.cache
def default_user_agent() -> str:
    """``regstore/<version> python-requests/<version>``."""
    return f"regstore/{_version('regstore')} python-requests/{_version('requests')}"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0.0.0+unknown"
