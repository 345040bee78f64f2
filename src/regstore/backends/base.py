"""``BackendBase``: the store hookimpls, with validation, error translation and derived defaults.

A backend subclasses :class:`BackendBase` and implements a small core of plain methods
(:meth:`~BackendBase.get_manifest`, :meth:`~BackendBase.put_manifest`, ...,
:meth:`~BackendBase.blob_writer`); the ``regstore_store_*`` hookimpls here call them. So a
backend author never writes a pluggy marker, and overriding a method can never silently drop a
hookimpl (pluggy only sees attributes that carry the marker, which an override would not).

What every hookimpl does before and after calling the core:

- validates names, tags and digests again (a wrapper plugin or a direct caller may bypass the
  :class:`regstore.store.ObjectStore` facade), so no unchecked string ever reaches a path;
- translates ``OSError`` into :class:`regstore.errors.StoreError` (chained), the one place a
  backend's I/O failures become regstore errors; regstore errors and ``TimeoutError`` from
  ``wait_blob`` pass through unchanged.

Derived defaults a backend may override for speed or precision: :meth:`~BackendBase.wait_blob`
(polls :meth:`~BackendBase.blob_status`), :meth:`~BackendBase.manifest_is_partial` (False),
:meth:`~BackendBase.unlinked_blobs` (none: every repository reaches every blob),
:meth:`~BackendBase.outside_references` (none: the store holds nothing but its repositories),
:meth:`~BackendBase.describe`, :meth:`~BackendBase.close`,
:meth:`~BackendBase.store_exists` (True: cannot tell). Optional operations
(:meth:`~BackendBase.delete_manifest`, :meth:`~BackendBase.delete_tag`,
:meth:`~BackendBase.list_blobs`, :meth:`~BackendBase.delete_blob`,
:meth:`~BackendBase.quarantine_blob`, :meth:`~BackendBase.list_staging`,
:meth:`~BackendBase.drop_staging`) raise UnsupportedError unless implemented.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from regstore.errors import RegstoreError, StoreError, UnsupportedError
from regstore.hookspecs import hookimpl
from regstore.reference import Digest, validate_name, validate_reference, validate_tag
from regstore.storetypes import (
    BlobInfo,
    BlobReadHandle,
    BlobState,
    BlobStatus,
    BlobWriteHandle,
    StagingEntry,
    StagingKind,
)

__all__ = [
    "WAIT_BACKOFF_MAX",
    "WAIT_BACKOFF_MIN",
    "BackendBase",
    "translate_errors",
]

#: wait_blob polls blob_status starting this often, doubling up to WAIT_BACKOFF_MAX (seconds).
WAIT_BACKOFF_MIN = 0.01
WAIT_BACKOFF_MAX = 0.25


@contextlib.contextmanager
def translate_errors(
    what: str,
    *,
    timeout_is_result: bool = False,
    error_types: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Turn ``OSError`` (and ``error_types``) raised inside the block into a chained
    :class:`StoreError`.

    ``what`` says what was being done (``"cannot read manifest library/alpine:3.19"``).
    Regstore errors pass through. ``TimeoutError`` is an ``OSError`` too: it passes through
    only where it is a documented outcome (``timeout_is_result``, i.e. ``wait_blob``).
    """
    try:
        yield
    except RegstoreError:
        raise
    except TimeoutError as exc:
        if timeout_is_result:
            raise
        raise StoreError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"{what}: {exc}") from exc
    except error_types as exc:
        raise StoreError(f"{what}: {exc}") from exc


class BackendBase(abc.ABC):
    """Base class of store backends: implement the core methods, get every store hook.

    Thread safety: one backend instance serves every thread using its store, so core methods
    must be thread-safe. Blob handles belong to one thread at a time.
    """

    #: The name ``describe()`` reports as ``backend`` (usually the URL scheme).
    backend_name: ClassVar[str] = "base"
    #: Exceptions of the backend's own libraries (``(sqlite3.Error,)``) that every hook turns
    #: into a chained StoreError, as it does OSError.
    error_types: ClassVar[tuple[type[BaseException], ...]] = ()

    def _translate(
        self, what: str, *, timeout_is_result: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        return translate_errors(
            what, timeout_is_result=timeout_is_result, error_types=self.error_types
        )

    # -- the core a backend implements -------------------------------------------------------

    @abc.abstractmethod
    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        """``(exact bytes, media type)`` of ``name`` at a tag or digest.

        Raises ImageManifestNotFoundError.
        """

    @abc.abstractmethod
    def put_manifest(
        self,
        name: str,
        tag: str | None,
        raw: bytes,
        media_type: str,
        digest: Digest,
        partial: bool,
    ) -> None:
        """Store the manifest bytes under ``name``/``digest``, then point ``tag`` at it."""

    @abc.abstractmethod
    def list_repositories(self) -> list[str]:
        """Names of repositories holding at least one manifest."""

    @abc.abstractmethod
    def list_tags(self, name: str) -> list[str]:
        """Tags of ``name``. Raises RepositoryNotFoundError for an unknown repository."""

    @abc.abstractmethod
    def list_manifests(self, name: str) -> list[str]:
        """Digests of every manifest of ``name``. Raises RepositoryNotFoundError."""

    @abc.abstractmethod
    def blob_status(self, digest: Digest) -> BlobStatus:
        """Where the blob stands (see :class:`regstore.storetypes.BlobState`)."""

    @abc.abstractmethod
    def open_blob(self, digest: Digest, offset: int) -> BlobReadHandle:
        """Open a complete blob from ``offset``.

        Raises LayerLockedError while a writer holds it, BlobNotFoundError if not complete.
        """

    @abc.abstractmethod
    def blob_writer(self, digest: Digest) -> BlobWriteHandle:
        """Lock the blob for writing and return its handle (resuming staged bytes).

        Raises LayerAlreadyExistsError when complete, LayerLockedError when held elsewhere.
        """

    # -- optional operations -----------------------------------------------------------------

    def delete_manifest(self, name: str, digest: Digest) -> None:
        """Remove a manifest and every tag pointing at it. Raises ImageManifestNotFoundError."""
        raise UnsupportedError(f"{self.backend_name} stores cannot delete manifests")

    def delete_tag(self, name: str, tag: str) -> None:
        """Remove a tag. Raises ImageManifestNotFoundError."""
        raise UnsupportedError(f"{self.backend_name} stores cannot delete tags")

    def list_blobs(self) -> list[BlobInfo]:
        """Every complete blob."""
        raise UnsupportedError(f"{self.backend_name} stores cannot list blobs")

    def delete_blob(self, digest: Digest) -> None:
        """Delete a complete blob. Raises BlobNotFoundError."""
        raise UnsupportedError(f"{self.backend_name} stores cannot delete blobs")

    def quarantine_blob(self, digest: Digest) -> str:
        """Move a complete blob aside (see the hookspec); returns where it went."""
        raise UnsupportedError(f"{self.backend_name} stores cannot quarantine blobs")

    def mark_blob_used(self, digest: Digest) -> None:
        """Record that the blob is being reused now (see the hookspec). Default: nothing is
        recorded, and a reused blob is protected from gc only by its commit time."""
        return None

    def blob_used_at(self, digest: Digest) -> float | None:
        """When the blob was last committed or marked used (see the hookspec). Default: no
        record (None)."""
        return None

    def list_staging(self) -> list[StagingEntry]:
        """Leftovers of unfinished writes and quarantined blobs (see the hookspec)."""
        raise UnsupportedError(f"{self.backend_name} stores cannot list their staging area")

    def list_quarantined(self) -> list[Digest]:
        """The digests of the blobs moved aside (see the hookspec). Default: the quarantine
        entries of :meth:`list_staging` (override it where the quarantine lists alone)."""
        return [
            Digest(e.digest)
            for e in self.list_staging()
            if e.kind is StagingKind.QUARANTINE and e.digest is not None
        ]

    def drop_staging(self, entry: StagingEntry) -> bool:
        """Remove one leftover unless it is in use again (see the hookspec)."""
        raise UnsupportedError(f"{self.backend_name} stores cannot clean their staging area")

    # -- derived defaults --------------------------------------------------------------------

    def store_exists(self) -> bool:
        """True if there is a store at this URL. Default: True (this backend cannot tell)."""
        return True

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        """True if the manifest was stored as a partial index. Default: never."""
        return False

    def unlinked_blobs(self, name: str, digests: list[Digest]) -> dict[Digest, str]:
        """Of ``digests``, those ``name`` does not lead to, with what is wrong (see the
        hookspec). Default: none (every repository reaches every blob)."""
        return {}

    def outside_references(self) -> list[Digest]:
        """What content outside the repositories keeps in use (see the hookspec). Default:
        none (the store holds nothing but its repositories)."""
        return []

    def wait_blob(self, digest: Digest, timeout: float | None) -> bool:
        """Block until nobody writes the blob; True if it is complete then.

        Default: poll :meth:`blob_status` with exponential backoff (10 ms doubling to 250 ms).
        Raises TimeoutError when ``timeout`` seconds pass while the blob is still written.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = WAIT_BACKOFF_MIN
        while True:
            status = self.blob_status(digest)
            if status.state is not BlobState.WRITING:
                return status.state is BlobState.COMPLETE
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"blob {digest} was still being written after {timeout} s")
                time.sleep(min(delay, remaining))
            else:
                time.sleep(delay)
            delay = min(delay * 2, WAIT_BACKOFF_MAX)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description; subclasses add their details (root, layout ...)."""
        return {"backend": self.backend_name}

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Release resources. Default: nothing to release."""

    # -- the hookimpls (pluggy sees only these) ----------------------------------------------

    @hookimpl
    def regstore_store_get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        validate_name(name)
        validate_reference(reference)
        with self._translate(f"cannot read manifest {name}:{reference}"):
            return self.get_manifest(name, reference)

    @hookimpl
    def regstore_store_put_manifest(
        self,
        name: str,
        tag: str | None,
        raw: bytes,
        media_type: str,
        digest: str,
        partial: bool,
    ) -> None:
        validate_name(name)
        if tag is not None:
            validate_tag(tag)
        checked = Digest(digest)
        with self._translate(f"cannot write manifest {name}@{checked}"):
            self.put_manifest(name, tag, bytes(raw), media_type, checked, bool(partial))

    @hookimpl
    def regstore_store_manifest_is_partial(self, name: str, digest: str) -> bool:
        validate_name(name)
        checked = Digest(digest)
        with self._translate(f"cannot read manifest {name}@{checked}"):
            return self.manifest_is_partial(name, checked)

    @hookimpl
    def regstore_store_unlinked_blobs(self, name: str, digests: list[str]) -> dict[str, str]:
        validate_name(name)
        checked = [Digest(d) for d in digests]
        with self._translate(f"cannot read the blob links of {name}"):
            return {str(d): why for d, why in self.unlinked_blobs(name, checked).items()}

    @hookimpl
    def regstore_store_outside_references(self) -> list[str]:
        with self._translate("cannot read what the store holds outside its repositories"):
            return [str(d) for d in self.outside_references()]

    @hookimpl
    def regstore_store_delete_manifest(self, name: str, digest: str) -> None:
        validate_name(name)
        checked = Digest(digest)
        with self._translate(f"cannot delete manifest {name}@{checked}"):
            self.delete_manifest(name, checked)

    @hookimpl
    def regstore_store_delete_tag(self, name: str, tag: str) -> None:
        validate_name(name)
        validate_tag(tag)
        with self._translate(f"cannot delete tag {name}:{tag}"):
            self.delete_tag(name, tag)

    @hookimpl
    def regstore_store_list_repositories(self) -> list[str]:
        with self._translate("cannot list repositories"):
            return sorted(self.list_repositories())

    @hookimpl
    def regstore_store_list_tags(self, name: str) -> list[str]:
        validate_name(name)
        with self._translate(f"cannot list tags of {name}"):
            return sorted(self.list_tags(name))

    @hookimpl
    def regstore_store_list_manifests(self, name: str) -> list[str]:
        validate_name(name)
        with self._translate(f"cannot list manifests of {name}"):
            return sorted(self.list_manifests(name))

    @hookimpl
    def regstore_store_blob_status(self, digest: str) -> BlobStatus:
        checked = Digest(digest)
        with self._translate(f"cannot stat blob {checked}"):
            return self.blob_status(checked)

    @hookimpl
    def regstore_store_open_blob(self, digest: str, offset: int) -> BlobReadHandle:
        checked = Digest(digest)
        if offset < 0:
            raise ValueError("offset must not be negative")
        with self._translate(f"cannot open blob {checked}"):
            return self.open_blob(checked, offset)

    @hookimpl
    def regstore_store_blob_writer(self, digest: str) -> BlobWriteHandle:
        checked = Digest(digest)
        with self._translate(f"cannot open blob {checked} for writing"):
            return self.blob_writer(checked)

    @hookimpl
    def regstore_store_wait_blob(self, digest: str, timeout: float | None) -> bool:
        checked = Digest(digest)
        with self._translate(f"cannot wait for blob {checked}", timeout_is_result=True):
            return self.wait_blob(checked, timeout)

    @hookimpl
    def regstore_store_list_blobs(self) -> list[BlobInfo]:
        with self._translate("cannot list blobs"):
            return sorted(self.list_blobs(), key=lambda b: b.digest)

    @hookimpl
    def regstore_store_delete_blob(self, digest: str) -> None:
        checked = Digest(digest)
        with self._translate(f"cannot delete blob {checked}"):
            self.delete_blob(checked)

    @hookimpl
    def regstore_store_mark_blob_used(self, digest: str) -> None:
        checked = Digest(digest)
        with self._translate(f"cannot mark blob {checked} used"):
            self.mark_blob_used(checked)

    @hookimpl
    def regstore_store_blob_used_at(self, digest: str) -> float | None:
        checked = Digest(digest)
        with self._translate(f"cannot tell when blob {checked} was used"):
            return self.blob_used_at(checked)

    @hookimpl
    def regstore_store_quarantine_blob(self, digest: str) -> str:
        checked = Digest(digest)
        with self._translate(f"cannot quarantine blob {checked}"):
            return self.quarantine_blob(checked)

    @hookimpl
    def regstore_store_list_staging(self) -> list[StagingEntry]:
        with self._translate("cannot list the staging area"):
            return sorted(self.list_staging(), key=lambda e: (e.kind.value, e.key))

    @hookimpl
    def regstore_store_list_quarantined(self) -> list[str]:
        with self._translate("cannot list the quarantined blobs"):
            return sorted(str(d) for d in self.list_quarantined())

    @hookimpl
    def regstore_store_drop_staging(self, entry: StagingEntry) -> bool:
        if not isinstance(entry, StagingEntry) or not isinstance(entry.kind, StagingKind):
            raise TypeError(f"not a staging entry: {entry!r}")
        if entry.digest is not None:
            Digest(entry.digest)
        with self._translate(f"cannot remove {entry.location}"):
            return bool(self.drop_staging(entry))

    @hookimpl
    def regstore_store_exists(self) -> bool:
        with self._translate(f"cannot look for the {self.backend_name} store"):
            return bool(self.store_exists())

    @hookimpl
    def regstore_store_describe(self) -> dict[str, Any]:
        return self.describe()

    @hookimpl
    def regstore_store_close(self) -> None:
        with self._translate(f"cannot close the {self.backend_name} store"):
            self.close()
