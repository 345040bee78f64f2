"""The staging part of a composed store, and the blob handles built on it.

A store's blob half is composed of two parts it is handed: a *lock part*
(:mod:`~regstore.backends.locks`) and a *staging part*, a :class:`BlobStaging`: where a blob's
bytes wait while they are written, how an interrupted write is found and resumed, and how the
verified bytes become the blob in one atomic step. The parts regstore ships:

- :class:`AppendStaging`: the kit's way to write one. Implement five primitives, ``size``,
  ``append``, ``iterate``, ``seal`` and ``drop``, and the writer (:class:`StagedBlobWriter`),
  resume, size check and status are derived from them. The local disk (append + rename), the
  memory store (a bytearray per blob) and the generic fsspec staging are such parts.
- a part with its own write handle (S3: part objects + multipart copy) subclasses
  :class:`BlobStaging` and returns that handle from :meth:`BlobStaging.writer`.

A staging part also owns the housekeeping of its kind: :meth:`BlobStaging.entries` lists what
interrupted writes left, :meth:`BlobStaging.drop_entry` removes one unless a writer came back.
:class:`BlobReader` is the read handle over a complete blob.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Protocol

from regstore.digest import CHUNK_SIZE
from regstore.errors import StoreError, UnsupportedError
from regstore.reference import Digest
from regstore.storetypes import BlobWriteHandle, StagingEntry, StagingKind

from .base import translate_errors
from .locks import BlobLock

if TYPE_CHECKING:
    from .locks import LockManager

__all__ = [
    "AppendStaging",
    "BlobReader",
    "BlobStaging",
    "StagedBlobWriter",
    "StagingHost",
    "StagingStream",
]


class StagingStream(Protocol):
    """An append-only stream into a blob's staging area, as returned by ``append``."""

    def write(self, data: bytes | memoryview, /) -> int:
        """Append ``data``; returns its length."""

    def close(self) -> None:
        """Persist everything written durably (flush, fsync) and close."""


class StagingHost(Protocol):
    """What a staging part needs from the store it is part of (``attach`` hands it over)."""

    locks: LockManager

    def blob_lock_key(self, digest: Digest) -> str:
        """The lock key of a blob's write lock."""


class BlobStaging(abc.ABC):
    """The staging part of a composed store (see the module docstring).

    Every method but :meth:`entries` is called with the blob's write lock held by the caller
    (the store takes it before :meth:`writer`; housekeeping takes it before :meth:`discard`).
    Staged bytes must survive the writer's ``close()`` and its crash, so that the next writer
    resumes them (:meth:`staged_size`, the handle's ``current_size`` and ``staged()``).
    """

    #: The store this part belongs to, set by :meth:`attach` when the store is built.
    store: StagingHost

    def attach(self, store: StagingHost) -> None:
        """Called once by the store that is handed this part (before any other call)."""
        self.store = store

    @abc.abstractmethod
    def staged_size(self, digest: Digest) -> int:
        """Bytes staged for ``digest`` (by this or an interrupted writer); 0 if none."""

    @abc.abstractmethod
    def writer(self, digest: Digest, lock: BlobLock) -> BlobWriteHandle:
        """The write handle of a freshly locked blob; it releases ``lock`` when done."""

    @abc.abstractmethod
    def discard(self, digest: Digest) -> None:
        """Forget whatever is staged for ``digest`` (nothing staged is fine)."""

    # -- housekeeping of this kind of staging ------------------------------------------------

    def entries(self) -> list[StagingEntry]:
        """What interrupted writes left, one UPLOAD entry per digest.

        Default: UnsupportedError (``regstore gc`` and ``verify`` then say this store cannot
        list its staging area, rather than believing it empty).
        """
        raise UnsupportedError("this store cannot list its staging area")

    def entry(self, digest: Digest) -> StagingEntry | None:
        """The UPLOAD entry of ``digest`` as it is now (None if nothing is staged)."""
        return next((e for e in self.entries() if e.key == str(digest)), None)

    def drop_entry(self, entry: StagingEntry) -> bool:
        """Remove one listed entry of this part's kinds unless a writer holds it or resumed it
        since it was listed (then False, removing nothing). Default: UPLOAD entries, under the
        blob's lock.
        """
        if entry.kind is not StagingKind.UPLOAD:
            raise UnsupportedError(f"this store has no {entry.kind} entries")
        digest = Digest(entry.key)
        lock = self.store.locks.try_acquire(self.store.blob_lock_key(digest))
        if lock is None:
            return False  # a writer holds it: it is not abandoned
        try:
            now = self.entry(digest)
            if now is None:
                return True
            if now.size != entry.size or now.mtime > entry.mtime:
                return False  # a writer resumed it since it was listed
            self.discard(digest)
            return True
        finally:
            lock.release()


class AppendStaging(BlobStaging):
    """A staging part from five primitives: ``size``, ``append``, ``iterate``, ``seal``,
    ``drop`` (and an optional hint, ``expect``). The write handle (:class:`StagedBlobWriter`),
    resume and the size check before publishing are derived.
    """

    @abc.abstractmethod
    def size(self, digest: Digest) -> int:
        """Bytes staged for ``digest``; 0 if none."""

    @abc.abstractmethod
    def append(self, digest: Digest) -> StagingStream:
        """An append stream positioned after the staged bytes (created if missing).

        ``close()`` must persist what was written, so a later writer sees it in :meth:`size`
        and :meth:`iterate`.
        """

    @abc.abstractmethod
    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        """The staged bytes from the start, in chunks (a resumed write re-hashes them)."""

    @abc.abstractmethod
    def seal(self, digest: Digest) -> None:
        """Make the staged bytes the complete blob in one atomic step and forget the staging.

        A reader must never see part of the blob: rename, one assignment, one transaction.
        Called only after the size was checked (and the digest verified by the facade).
        """

    @abc.abstractmethod
    def drop(self, digest: Digest) -> None:
        """Delete whatever is staged for ``digest`` (nothing staged is fine)."""

    def expect(self, digest: Digest, size: int) -> None:
        """A hint, given just before :meth:`append` when the writer declared its size: the
        blob will be ``size`` bytes in all (declared, not yet verified). A part may make room
        for them ahead; the default does nothing. It comes for a resumed blob too, and again
        when a writer reopens its stream: it must never drop or move staged bytes, and
        writes, resume and the size check must not depend on it.
        """

    # -- derived -------------------------------------------------------------------------------

    def staged_size(self, digest: Digest) -> int:
        return self.size(digest)

    def writer(self, digest: Digest, lock: BlobLock) -> BlobWriteHandle:
        return StagedBlobWriter(self, digest, lock, getattr(self.store, "error_types", ()))

    def discard(self, digest: Digest) -> None:
        self.drop(digest)

    def promote(self, digest: Digest, size: int) -> None:
        """Check that exactly ``size`` bytes are staged, then :meth:`seal`; discards and
        raises StoreError when they are not (the staging changed under the writer).
        """
        staged = self.size(digest)
        if staged != size:
            self.drop(digest)
            raise StoreError(
                f"staged bytes of {digest} changed under the writer ({staged} != {size} bytes)"
            )
        self.seal(digest)


class BlobReader:
    """A :class:`~regstore.storetypes.BlobReadHandle` over a complete blob file.

    ``size`` is the full size of the blob, whatever offset the stream started at. I/O errors
    surface as StoreError.
    """

    def __init__(
        self,
        raw: IO[bytes],
        size: int,
        digest: Digest,
        error_types: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._raw = raw
        self.size = size
        self.digest = digest
        #: the backend's own library errors (``BackendBase.error_types``), StoreErrors here too
        self._error_types = error_types

    def _translate(self, what: str) -> contextlib.AbstractContextManager[None]:
        return translate_errors(f"{what} {self.digest}", error_types=self._error_types)

    def read(self, n: int = -1, /) -> bytes:
        with self._translate("cannot read blob"):
            return self._raw.read(n)

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        with self._translate("cannot read blob"):
            readinto = getattr(self._raw, "readinto", None)
            if readinto is not None:
                return int(readinto(buffer) or 0)
            data = self._raw.read(len(buffer))
            memoryview(buffer)[: len(data)] = data
            return len(data)

    def close(self) -> None:
        with self._translate("cannot close blob"):
            self._raw.close()


class StagedBlobWriter:
    """The :class:`~regstore.storetypes.BlobWriteHandle` derived from an
    :class:`AppendStaging` part. It holds the blob's lock from creation until commit, close or
    discard.

    The staging stream is opened lazily on the first write, so a writer that never writes
    leaves nothing behind (the seed's zero-size trap cannot happen).
    """

    def __init__(
        self,
        staging: AppendStaging,
        digest: Digest,
        lock: BlobLock,
        error_types: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._staging = staging
        self.digest = digest
        self._lock: BlobLock | None = lock
        self._stream: StagingStream | None = None
        self._expected: int | None = None  # the declared size (set_size), for expect()
        #: the backend's own library errors (``BackendBase.error_types``), StoreErrors here too
        self._error_types = error_types
        with self._translate("read the staged size of"):
            self.current_size = staging.size(digest)

    def _translate(self, verb: str) -> contextlib.AbstractContextManager[None]:
        return translate_errors(f"cannot {verb} blob {self.digest}", error_types=self._error_types)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _check_held(self) -> None:
        if self._lock is None:
            raise StoreError(f"blob {self.digest} is closed for writing")

    def write(self, data: bytes | memoryview, /) -> int:
        self._check_held()
        with self._translate("write"):
            if self._stream is None:
                if self._expected is not None:
                    self._staging.expect(self.digest, self._expected)
                self._stream = self._staging.append(self.digest)
            self._stream.write(data)
        return len(data)

    def set_size(self, size: int) -> None:
        self._check_held()
        self._expected = size

    def staged(self) -> Iterator[bytes]:
        self._check_held()
        with self._translate("read the staged bytes of"):
            self._close_stream()  # make everything written so far readable
            yield from self._staging.iterate(self.digest, CHUNK_SIZE)

    def commit(self, size: int) -> None:
        self._check_held()
        try:
            with self._translate("commit"):
                if self._stream is None:  # an empty blob, or all bytes were resumed
                    self._stream = self._staging.append(self.digest)
                self._close_stream()
                self._staging.promote(self.digest, size)
        finally:
            self._release()

    def close(self) -> None:
        try:
            with self._translate("close"):
                self._close_stream()
        finally:
            self._release()

    def discard(self) -> None:
        try:
            with self._translate("discard"):
                try:
                    self._close_stream()
                finally:
                    self._staging.drop(self.digest)
        finally:
            self._release()

    def __del__(self) -> None:
        # Dropped without close(): free the lock so the blob does not stay "writing".
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self._release()
