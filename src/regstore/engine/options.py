"""The knobs shared by every image of one transfer operation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from regstore.manifest import Platform

from .blobs import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD

__all__ = ["TransferOptions"]


@dataclass(frozen=True)
class TransferOptions:
    """Knobs shared by every image of one operation."""

    platforms: tuple[Platform, ...] = ()
    mount_from: tuple[str, ...] = ()
    chunk_size: int = DEFAULT_CHUNK_SIZE
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD
    skip_unchanged: bool = False
    #: with ``skip_unchanged``: an unchanged tag counts only when the destination (a store)
    #: holds every blob of its image too (an import completes what verify moved aside)
    confirm_unchanged: bool = False
    #: move each image's referrers (and cosign's ``.sig``/``.att``/``.sbom`` tags) with it
    referrers: bool = False
    #: only referrers of these artifact types (all when empty)
    referrer_types: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        platforms: Sequence[str | Platform] | None = None,
        mount_from: Sequence[str] = (),
        **kwargs: Any,
    ) -> TransferOptions:
        """Parse user-facing values (``"linux/amd64"``) into options."""
        parsed = tuple(p if isinstance(p, Platform) else Platform.parse(p) for p in platforms or ())
        return cls(platforms=parsed, mount_from=tuple(mount_from), **kwargs)
