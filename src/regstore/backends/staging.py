"""Blob handles of the fsspec backend and the staging-strategy protocol they run on.

:class:`StagedBlobWriter` is the :class:`~regstore.hookspecs.BlobWriteHandle` of every
:class:`~regstore.backends.fsspec_store.FsspecBackend`: it holds the blob's lock and drives the
backend's *staging strategy* (:class:`StagingStrategy`), the small API an object store plugin
overrides: where bytes are staged, how an interrupted write is found and re-read, and how the
verified bytes become the blob in one atomic step. :class:`BlobReader` is the read handle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Protocol

from regstore.digest import CHUNK_SIZE
from regstore.errors import StoreError
from regstore.reference import Digest

from .base import translate_errors
from .locks import BlobLock

__all__ = ["BlobReader", "StagedBlobWriter", "StagingStrategy", "StagingStream"]


class StagingStream(Protocol):
    """An append-only stream into a blob's staging area, as returned by ``open_staging``."""

    def write(self, data: bytes | memoryview, /) -> int:
        """Append ``data``; returns its length."""

    def close(self) -> None:
        """Persist everything written durably (flush, fsync) and close."""


class StagingStrategy(Protocol):
    """How a backend stages a blob's bytes and promotes them (see FsspecBackend's methods).

    Every method is called with the blob's write lock held by the caller.
    """

    def staged_size(self, digest: Digest) -> int:
        """Bytes staged for ``digest`` (by this or an interrupted writer); 0 if none."""

    def open_staging(self, digest: Digest) -> StagingStream:
        """An append stream positioned after the staged bytes."""

    def read_staged(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        """The staged bytes from the start, in chunks."""

    def promote_staged(self, digest: Digest, size: int) -> None:
        """Make the staged ``size`` bytes the complete blob, atomically."""

    def discard_staged(self, digest: Digest) -> None:
        """Forget whatever is staged for ``digest``."""


class BlobReader:
    """A :class:`~regstore.hookspecs.BlobReadHandle` over a complete blob file.

    ``size`` is the full size of the blob, whatever offset the stream started at. I/O errors
    surface as StoreError.
    """

    def __init__(self, raw: IO[bytes], size: int, digest: Digest) -> None:
        self._raw = raw
        self.size = size
        self.digest = digest

    def read(self, n: int = -1, /) -> bytes:
        with translate_errors(f"cannot read blob {self.digest}"):
            return self._raw.read(n)

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        with translate_errors(f"cannot read blob {self.digest}"):
            readinto = getattr(self._raw, "readinto", None)
            if readinto is not None:
                return int(readinto(buffer) or 0)
            data = self._raw.read(len(buffer))
            memoryview(buffer)[: len(data)] = data
            return len(data)

    def close(self) -> None:
        with translate_errors(f"cannot close blob {self.digest}"):
            self._raw.close()


class StagedBlobWriter:
    """The default :class:`~regstore.hookspecs.BlobWriteHandle`, built on the backend's
    staging strategy. It holds the blob's lock from creation until commit, close or discard.

    The staging stream is opened lazily on the first write, so a writer that never writes
    leaves nothing behind (the seed's zero-size trap cannot happen).
    """

    def __init__(self, backend: StagingStrategy, digest: Digest, lock: BlobLock) -> None:
        self._backend = backend
        self.digest = digest
        self._lock: BlobLock | None = lock
        self._stream: StagingStream | None = None
        self.current_size = backend.staged_size(digest)

    def _what(self, verb: str) -> str:
        return f"cannot {verb} blob {self.digest}"

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
        with translate_errors(self._what("write")):
            if self._stream is None:
                self._stream = self._backend.open_staging(self.digest)
            self._stream.write(data)
        return len(data)

    def staged(self) -> Iterator[bytes]:
        self._check_held()
        with translate_errors(self._what("read the staged bytes of")):
            self._close_stream()  # make everything written so far readable
            yield from self._backend.read_staged(self.digest, CHUNK_SIZE)

    def commit(self, size: int) -> None:
        self._check_held()
        try:
            with translate_errors(self._what("commit")):
                if self._stream is None:  # an empty blob, or all bytes were resumed
                    self._stream = self._backend.open_staging(self.digest)
                self._close_stream()
                self._backend.promote_staged(self.digest, size)
        finally:
            self._release()

    def close(self) -> None:
        try:
            with translate_errors(self._what("close")):
                self._close_stream()
        finally:
            self._release()

    def discard(self) -> None:
        try:
            with translate_errors(self._what("discard")):
                try:
                    self._close_stream()
                finally:
                    self._backend.discard_staged(self.digest)
        finally:
            self._release()

    def __del__(self) -> None:
        # Dropped without close(): free the lock so the blob does not stay "writing".
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self._release()
