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
``LayerLockedError``). A backend that cannot do an operation at all raises
``UnsupportedError`` from it (or leaves the hook out: the facade then raises it); hooks that
change the store return nothing and raise on failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

# The value types of the contract live in their own module; re-exported here for one release
# (import them from regstore.storetypes).
from regstore.storetypes import (
    BlobInfo,
    BlobReadHandle,
    BlobState,
    BlobStatus,
    BlobWriteHandle,
    StagingEntry,
    StagingKind,
    StoreLockHandle,
)

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
    "StoreLockHandle",
    "StoreSpec",
    "hookimpl",
    "hookspec",
]

PROJECT = "regstore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``factory(url, **options)`` returns a backend object whose methods are store hookimpls.
BackendFactory = Callable[..., object]


class Register(Protocol):
    """The callback handed to ``regstore_register_backends``: ``register(scheme, factory,
    description="")`` makes ``factory(url, **options)`` serve URLs of ``scheme`` (lower case;
    a scheme registered by two plugins is an error naming both)."""

    def __call__(self, scheme: str, factory: BackendFactory, description: str = "") -> None: ...


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
        """Observe one transfer event (planned, started, progress, skipped, mounted, verified,
        failed, manifest, warning).

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
    ) -> None:
        """Store the exact manifest bytes under ``name`` and ``digest``; then point ``tag``
        at it when a tag is given. ``partial`` marks an index stored without all its children
        (a platform-filtered pull); the backend records it. The caller has verified the digest
        and that every referenced blob is complete. Atomic per file.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_manifest_is_partial(self, name: str, digest: str) -> bool:
        """True if the manifest ``digest`` was stored as partial (see put_manifest)."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_unlinked_blobs(self, name: str, digests: list[str]) -> dict[str, str]:
        """Of ``digests`` (blobs that manifests stored in ``name`` refer to), those that ``name``
        does not lead to, each with what is wrong: in a layout that records which blobs each
        repository may serve (the distribution layout's ``_layers`` links: a registry serving
        the store answers 404 for a blob of a repository without its link), the ones whose
        record is missing or holds anything but the blob's digest. Whether the blobs
        themselves are stored is not asked here. Optional: a backend whose repositories share
        every blob leaves it out (nothing is ever unlinked there). Raises StoreError when the
        records cannot be read.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_outside_references(self) -> list[str]:
        """Digests that content the store holds outside its repositories keeps in use: in an
        OCI layout, the ``index.json`` entries no repository is known for (written by skopeo,
        umoci or oras under a bare ref name), the manifests they name and everything those
        reference. gc deletes none of them. Optional: a backend that holds nothing but its
        repositories leaves it out. Raises StoreError when that content cannot be read
        (StoreDamageError for a manifest named there that cannot be parsed).
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_delete_manifest(self, name: str, digest: str) -> None:
        """Remove the manifest ``digest`` from ``name`` and every tag pointing at it.

        Raises ImageManifestNotFoundError if ``name`` has no such manifest. Blobs stay (gc).
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_delete_tag(self, name: str, tag: str) -> None:
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
    def regstore_store_delete_blob(self, digest: str) -> None:
        """Delete a complete blob (garbage collection). Raises BlobNotFoundError if absent."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_mark_blob_used(self, digest: str) -> None:
        """Record that the complete blob ``digest`` is being reused now (a pull found it
        present and will reference it), so that gc's grace period counts from now: see
        ``regstore_store_blob_used_at``. The facade calls it under the store lock
        ``blob-use/<alg>/<hex>``, which gc holds while it decides to delete the blob; it need
        not be durable (a pull that dies before its manifest leaves nothing that needs it).

        Optional: a backend without it leaves a reused blob protected only by its commit time
        (gc may then collect an old blob a running pull has just decided to reuse).
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def regstore_store_blob_used_at(self, digest: str) -> float | None:
        """When the blob was last committed or marked used (epoch seconds, by the clock that
        dates the store's blobs); None for an absent blob, or when the backend keeps no such
        record. Optional."""
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
    def regstore_store_list_quarantined(self) -> list[str]:
        """The digests of the blobs ``quarantine_blob`` moved aside whose copies the working
        area still holds: what ``list_staging`` lists as ``quarantine`` entries, without
        listing (or needing the permissions of) the rest of the working area. A sync asks it
        before it skips an unchanged image. Read-only; stops at the first result.
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

    # -- named locks -------------------------------------------------------------------------

    @hookspec(firstresult=True)
    def regstore_store_lock(self, key: str, timeout: float | None) -> StoreLockHandle | None:
        """Take the store-wide lock named ``key`` (``/``-separated words, e.g.
        ``referrers/<name>/<tag>``), waiting up to ``timeout`` seconds (None: the backend's
        default), and return its handle; the caller releases it. Exclusive across threads and
        across every process that writes the same store (as the blob write locks are). The
        store facade holds it around read-modify-write updates of shared manifests (a
        referrers index).

        Optional. Returning None (or not implementing the hook) means "unsupported": the
        facade then serialises the update in this process only, and concurrent processes can
        lose each other's updates. Raises StoreError when the lock cannot be taken in time.
        Backends built on :class:`~regstore.backends.composed.ComposedBlobs` get it from their
        lock part, in a key namespace apart from the blob locks.
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
