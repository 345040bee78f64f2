"""The pluggy hook specifications of regstore: specs only, no behaviour.

Two kinds of hooks live here.

*Discovery and event hooks* (:class:`DiscoverySpec`) are called on the global plugin manager,
whose project name and entry-point group are both ``regstore``. A plugin module named by an
entry point in that group implements some of them: it registers backends for URL schemes,
observes transfer events, or answers for registry credentials.

*Store hooks* (:class:`StoreSpec`) are the storage contract: the seed's ``ObjectStore`` and
``Layer`` operations. Each open store has its own small plugin manager holding exactly one
backend instance plus any wrappers (``@hookimpl(wrapper=True)`` middleware: read-only guards,
metrics, caches). Only :mod:`regstore.store` calls them; users hold its typed facades.

Bytes never travel through a hook per chunk: the blob hooks return file-like handles
(:class:`BlobReadHandle`, :class:`BlobWriteHandle`) that the facade streams through directly.

Store hooks raise regstore errors to signal absence or conflict (``BlobNotFoundError``,
``ImageManifestNotFoundError``, ``RepositoryNotFoundError``, ``LayerAlreadyExistsError``,
``LayerLockedError``); a hook returning ``None`` means "not implemented by this backend".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:
    from regstore.events import TransferEvent

__all__ = [
    "PROJECT",
    "BlobInfo",
    "BlobReadHandle",
    "BlobState",
    "BlobStatus",
    "BlobWriteHandle",
    "DiscoverySpec",
    "StagingEntry",
    "StagingKind",
    "StoreSpec",
    "hookimpl",
    "hookspec",
]

PROJECT = "regstore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``register(scheme, factory, description="")``: the callback handed to backend plugins.
#: ``factory(url, **options)`` returns a backend object whose methods are store hookimpls.
BackendFactory = Callable[..., object]
Register = Callable[..., None]


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
    """The answer of ``regstore_store_blob_status``."""

    state: BlobState
    size: int | None = None  #: full size, for a complete blob (or declared, when known)
    current_size: int = 0  #: bytes stored so far (equal to ``size`` once complete)


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
    """A readable, seekable-from-the-start stream over a complete blob."""

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


class DiscoverySpec:
    """Hooks called on the global plugin manager."""

    @hookspec
    def regstore_register_backends(self, register: Register) -> None:
        """Register the store backends this plugin provides.

        Called once when the global plugin manager is built. Call
        ``register(scheme, factory, description="...")`` for each URL scheme; ``factory(url,
        **options)`` must return an object whose methods are :class:`StoreSpec` hookimpls
        (usually a :class:`regstore.backends.base.BackendBase` subclass). All results are
        collected; a scheme registered twice is an error naming both plugins.
        """

    @hookspec
    def regstore_transfer_event(self, event: TransferEvent) -> None:
        """Observe one transfer event (started, progress, skipped, mounted, verified, failed).

        Called by the engine for every event, in the thread that produced it: implementations
        must be quick and thread-safe. Return values are ignored.
        """

    @hookspec(firstresult=True)
    def regstore_credentials(self, registry: str) -> tuple[str, str] | None:
        """Return ``(username, password)`` for ``registry`` (``host[:port]``), or None.

        Asked before docker's config file; stops at the first non-None answer.
        """


class StoreSpec:
    """The storage contract: one backend instance per store plugin manager answers these."""

    # -- manifests ---------------------------------------------------------------------------

    @hookspec(firstresult=True)
    def regstore_store_get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        """Return ``(raw bytes, media type)`` of the manifest ``name`` at a tag or digest.

        Raises ImageManifestNotFoundError if there is none. Stops at the first result.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_put_manifest(
        self,
        name: str,
        tag: str | None,
        raw: bytes,
        media_type: str,
        digest: str,
        partial: bool,
    ) -> bool:
        """Store the exact manifest bytes under ``name`` and ``digest``; then point ``tag``
        at it when a tag is given. ``partial`` marks an index stored without all its children
        (a platform-filtered pull); the backend records it. The caller has verified the digest
        and that every referenced blob is complete. Atomic per file; returns True.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_manifest_is_partial(self, name: str, digest: str) -> bool:
        """True if the manifest ``digest`` was stored as partial (see put_manifest)."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_delete_manifest(self, name: str, digest: str) -> bool:
        """Remove the manifest ``digest`` from ``name`` and every tag pointing at it.

        Raises ImageManifestNotFoundError if ``name`` has no such manifest. Blobs stay (gc).
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_delete_tag(self, name: str, tag: str) -> bool:
        """Remove ``tag`` from ``name`` (the manifest stays). Raises ImageManifestNotFoundError."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_list_repositories(self) -> list[str]:
        """All repository names holding at least one manifest, sorted."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_list_tags(self, name: str) -> list[str]:
        """The tags of ``name``, sorted. Raises RepositoryNotFoundError for an unknown name."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_list_manifests(self, name: str) -> list[str]:
        """Digests of every manifest stored in ``name`` (tagged or not), sorted.

        Raises RepositoryNotFoundError for an unknown name.
        """
        raise NotImplementedError

    # -- blobs (the seed's Layer) ------------------------------------------------------------

    @hookspec(firstresult=True)
    def regstore_store_blob_status(self, digest: str) -> BlobStatus:
        """Where the blob stands: absent, partial, being written, or complete (with size)."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_open_blob(self, digest: str, offset: int) -> BlobReadHandle:
        """Open a complete blob for reading from byte ``offset``.

        Raises LayerLockedError while a writer holds it, BlobNotFoundError when not complete.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_blob_writer(self, digest: str) -> BlobWriteHandle:
        """Take the write lock on a blob and return its write handle.

        Raises LayerAlreadyExistsError when complete, LayerLockedError when another writer
        (thread or process) holds it. Resumes staged bytes of an interrupted writer.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_wait_blob(self, digest: str, timeout: float | None) -> bool:
        """Block until nobody writes the blob; True if it is complete then.

        False means the writer gave up (or there was none) and the blob is not complete.
        Raises TimeoutError if ``timeout`` seconds pass first.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_list_blobs(self) -> list[BlobInfo]:
        """Every complete blob in the store (manifest blobs included where they are blobs)."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_delete_blob(self, digest: str) -> bool:
        """Delete a complete blob (garbage collection). Raises BlobNotFoundError if absent."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_quarantine_blob(self, digest: str) -> str:
        """Move a complete blob aside, so that it is no longer complete; return where it went.

        For a blob found damaged (its bytes do not hash to its digest): the move is atomic for
        readers (the blob is complete, then absent: never half there), the bytes are kept in
        the store's working area for inspection (listed by ``list_staging`` as a
        ``quarantine`` entry, dated by the move, so ``gc`` removes them after its grace), and
        the next write of the digest starts afresh. Taken under the blob's write lock.
        Raises BlobNotFoundError if the blob is not complete, LayerLockedError if a writer
        holds it. Stops at the first result.
        """
        raise NotImplementedError

    # -- housekeeping ------------------------------------------------------------------------

    @hookspec(firstresult=True)
    def regstore_store_list_staging(self) -> list[StagingEntry]:
        """Everything in the store's working area that is not a complete blob or manifest.

        Staged bytes of unfinished writes, incomplete multipart uploads, lock files or lock
        objects, temporary files and quarantined blobs, each with its size, the time of its
        last change and whether a live writer holds it (``active``). Entries of writers that
        are gone (killed, crashed) are what ``gc`` collects once they are older than its
        grace. Read-only; stops at the first result.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_drop_staging(self, entry: StagingEntry) -> bool:
        """Remove one entry ``list_staging`` returned, unless it came back to life.

        Returns False, removing nothing, when a live writer holds it now or it changed since
        it was listed (a writer resumed it); True when it was removed or is gone already. An
        incomplete multipart upload is aborted. Stops at the first result.
        """
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    @hookspec(firstresult=True)
    def regstore_store_exists(self) -> bool:
        """True if there is a store at the URL (something was written there); False if not.

        Reading commands ask it so that a mistyped URL is an error rather than an empty
        store; answering must create nothing. A backend that cannot tell returns True (or
        does not implement the hook). Stops at the first result.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_describe(self) -> dict[str, Any]:
        """A JSON-able description: ``{"url": ..., "backend": ..., "layout": ...}``."""
        raise NotImplementedError

    @hookspec
    def regstore_store_close(self) -> None:
        """Release resources (connections, locks). Called once by ``ObjectStore.close``."""
