"""The ``User-Agent`` regstore's requests carry, known without importing ``requests`` (nor
``importlib.metadata``: a sync's early HEADs carry it before either is loaded)."""

from __future__ import annotations

import functools
import os
import re
import sys

__all__ = ["default_user_agent"]


@functools.cache
def default_user_agent() -> str:
    """``regstore/<version> python-requests/<version>``."""
    return f"regstore/{_version('regstore')} python-requests/{_version('requests')}"


def _version(distribution: str) -> str:
    named = _named_version(distribution)
    if named is not None:
        return named
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0.0.0+unknown"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _named_version(distribution: str) -> str | None:
    """The version a ``<name>-<version>.dist-info`` directory's name gives, for the first
    directory of ``sys.path`` holding ``distribution`` (as ``importlib.metadata`` finds it:
    what it reads from METADATA, a wheel's installer names the directory by); None where the
    name does not tell (an ``.egg-info``, anything but a directory on ``sys.path``)."""
    wanted = _normalize(distribution)
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".") if isinstance(entry, str) else None
        except OSError:
            continue
        for child in children or ():
            stem, _, suffix = child.rpartition(".")
            name, _, version = stem.partition("-")
            if suffix.lower() in ("dist-info", "egg-info") and _normalize(name) == wanted:
                return version if suffix.lower() == "dist-info" and version else None
    return None
