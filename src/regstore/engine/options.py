"""The knobs shared by every image of one transfer operation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from regstore.manifest import Platform

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_MONOLITHIC_THRESHOLD", "TransferOptions"]

#: Blobs up to this size are pushed with one PUT; larger ones in chunks (resumable).
#: (Here, not in :mod:`.blobs`, which moves them: a sync that finds nothing to move never
#: imports the machinery that would.)
DEFAULT_MONOLITHIC_THRESHOLD = 32 << 20
#: The PATCH size of a chunked push. Each PATCH ends with the registry making the chunk
#: durable (distribution's filesystem driver fsyncs the upload) while the client waits, and
#: the next chunk's bytes wait with it: with 32 MiB chunks a 1 GiB push spent ~1 s of its ~5 s
#: idle on those 32 waits. A 1 GiB layer into a fresh registry each time (medians of four,
#: benchmarks/RESULTS.md): 128 MiB chunks 3.78-4.12 s, 512 MiB 3.57 s, one PATCH 3.41 s, curl's
#: monolithic PUT 3.38-3.40 s. Docker, skopeo and crane send a layer in one PATCH; this bound
#: is kept so that a 5xx or 429 on a chunk resends at most this much. Memory is unaffected
#: (bodies stream).
DEFAULT_CHUNK_SIZE = 512 << 20


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
