"""The ``User-Agent`` regstore's requests carry, known without importing ``requests`` (nor,
where the standard path finder alone finds distributions, ``importlib.metadata``: a sync's
early HEADs carry it before either is loaded)."""

from __future__ import annotations

import functools

from regstore.entrypoints import installed_versions

__all__ = ["default_user_agent"]


@functools.cache
def default_user_agent() -> str:
    """``regstore/<version> python-requests/<version>``."""
    found = installed_versions("regstore", "requests")
    return f"regstore/{_version('regstore', found)} python-requests/{_version('requests', found)}"


def _version(distribution: str, found: dict[str, str | None]) -> str:
    known = found[distribution]
    if known is not None:
        return known
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0.0.0+unknown"
