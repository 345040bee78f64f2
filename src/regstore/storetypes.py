"""The value types of the storage contract: what the store hooks take and return.

Blob states and statuses, complete-blob listings, entries of a store's working area, and the
Protocols of the file-like handles a backend returns for reading and writing blobs. They are
plain values (standard library only), shared by the specs (:mod:`regstore.hookspecs`), the
facade (:mod:`regstore.store`), the backends and the engine; the specs module holds specs only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BlobInfo",
    "BlobReadHandle",
    "BlobState",
    "BlobStatus",
    "BlobWriteHandle",
    "StagingEntry",
    "StagingKind",
    "StoreLockHandle",
]


class BlobState(str, Enum):
    """Where a blob stands in a store."""

    ABSENT = "absent"  #: nothing was ever written, or it was discarded
    PARTIAL = "partial"  #: an interrupted write left ``current_size`` bytes; nobody holds it
    WRITING = "writing"  #: a writer holds it right now (this or another process)
    COMPLETE = "complete"  #: verified, committed and readable

    def __str__(self) -> str:
        # the value on every Python (3.11 made str() of a str-Enum "BlobState.COMPLETE")
        return str(self.value)


@dataclass(frozen=True)
class BlobStatus:
    """The answer of ``regstore_store_blob_status``.

    - ``state``: absent, partial (staged bytes, nobody writing: a writer may resume), writing
      (a live writer holds it), or complete (verified and visible).
    - ``size``: the full size for a complete blob; for a partial or writing one the declared
      size when the writer gave it (``set_size``), else None.
    - ``current_size``: bytes stored so far; equal to ``size`` once complete, the resume offset
      of a partial blob, 0 when absent.
    """

    state: BlobState
    size: int | None = None
    current_size: int = 0


@dataclass(frozen=True)
class BlobInfo:
    """One complete blob, as listed by ``regstore_store_list_blobs``."""

    digest: str
    size: int
    mtime: float  #: seconds since the epoch of its commit (for garbage-collection grace)


class StagingKind(str, Enum):
    """What a leftover in a store's working area is (see :class:`StagingEntry`)."""

    UPLOAD = "upload"  #: staged bytes of a blob whose write did not finish (resumable)
    MULTIPART = "multipart"  #: an incomplete multipart upload (object stores)
    LOCK = "lock"  #: a blob lock (object) left by a writer, live or gone
    TEMPORARY = "temporary"  #: a temporary file of an interrupted small-file write
    QUARANTINE = "quarantine"  #: a damaged blob moved aside by ``quarantine_blob``

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class StagingEntry:
    """One thing in a store's working area that is neither a complete blob nor a manifest.

    Listed by ``regstore_store_list_staging`` and handed back, unchanged, to
    ``regstore_store_drop_staging``. ``key`` identifies the entry to its backend (opaque to
    everyone else); ``location`` says where it is, for people.
    """

    kind: StagingKind
    key: str
    location: str
    size: int  #: bytes it occupies (0 when unknown or empty)
    mtime: float  #: seconds since the epoch of its last change (the grace of ``gc`` runs from it)
    digest: str | None = None  #: the blob it belongs to, when it belongs to one
    active: bool = False  #: a live writer holds it right now: it is never dropped

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-able form (with its age in seconds when ``now`` is given)."""
        found: dict[str, Any] = {
            "kind": self.kind.value,
            "location": self.location,
            "size": self.size,
            "mtime": self.mtime,
            "digest": self.digest,
            "active": self.active,
        }
        if now is not None:
            found["age"] = max(0.0, now - self.mtime)
        return found


@runtime_checkable
class BlobReadHandle(Protocol):
    """A readable stream over a complete blob, positioned at the ``offset`` the hook was asked
    for: reading to the end yields the blob's bytes from there. ``size`` is the whole blob's.
    (No ``seek``: a reader wanting another offset opens the blob again.)"""

    size: int

    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


@runtime_checkable
class BlobWriteHandle(Protocol):
    """The backend's half of a layer writer. It stores bytes; the facade hashes and verifies.

    - ``current_size``: bytes already staged when opened (an interrupted write to resume).
    - ``write(data)``: append. Only called sequentially by one thread.
    - ``staged()``: iterate the staged prefix (so a resumed write can re-hash it).
    - ``commit(size)``: the facade has verified digest and size; make the blob visible
      atomically and release the lock. Must not leave a window where a reader sees half a blob.
    - ``close()``: release the lock, keeping staged bytes so a later writer resumes.
    - ``discard()``: drop staged bytes and release the lock.
    - optional ``set_size(size)``: told the declared full size as soon as the caller knows it
      (before the bytes), e.g. to choose a multipart part size. The facade still verifies it.
    """

    current_size: int

    def write(self, data: bytes | memoryview, /) -> int: ...
    def staged(self) -> Iterator[bytes]: ...
    def commit(self, size: int) -> None: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...


@runtime_checkable
class StoreLockHandle(Protocol):
    """A held named lock of a store (``regstore_store_lock``): exclusive across every party
    that writes the store, until :meth:`release`."""

    def release(self) -> None:
        """Release the lock. Idempotent."""
