"""``ComposedBlobs``: the blob half of a backend, derived from a staging part and a lock part.

See :class:`ComposedBlobs`; :class:`~regstore.backends.fsspec_store.FsspecBackend` is built on
it, and so is a backend written from the plugin kit (:mod:`regstore.backends.kit`).
"""

from __future__ import annotations

import abc
import contextlib
from typing import IO

from regstore.errors import BlobNotFoundError, LayerAlreadyExistsError, LayerLockedError
from regstore.hookspecs import hookimpl
from regstore.reference import Digest
from regstore.storetypes import (
    BlobReadHandle,
    BlobState,
    BlobStatus,
    BlobWriteHandle,
    StagingEntry,
    StoreLockHandle,
)

from .base import BackendBase
from .locks import LockManager
from .staging import BlobReader, BlobStaging

__all__ = ["ComposedBlobs"]


class ComposedBlobs(BackendBase):
    """The blob half of a store composed of a staging part and a lock part.

    Hand it ``self.staging`` (a :class:`~regstore.backends.staging.BlobStaging`, attached to
    this store) and ``self.locks`` (a :class:`~regstore.backends.locks.LockManager`), implement
    the two primitives of complete blobs, :meth:`complete_size` and :meth:`open_complete`, and
    ``blob_status``, ``open_blob`` and ``blob_writer`` are derived, with the locking rules of
    the contract (a writer is refused while another holds the blob; a blob that completes
    between the first look and the lock is reported complete), as are ``list_staging`` and
    ``drop_staging`` for the staging part's own entries, and the named store locks
    (``regstore_store_lock``) from the lock part's ``mutex``.
    """

    staging: BlobStaging
    locks: LockManager

    def blob_lock_key(self, digest: Digest) -> str:
        """The lock part's key of a blob's write lock."""
        return f"blob/{digest.algorithm}/{digest.hex}"

    def named_lock_key(self, key: str) -> str:
        """The lock part's key of the store lock ``key``: under ``named/``, apart from the
        blob locks (``blob/...``) and the layouts' own mutexes."""
        return f"named/{key}"

    def store_lock(self, key: str, timeout: float | None) -> StoreLockHandle:
        """Take the named store lock ``key`` (see ``regstore_store_lock``) through the lock
        part's :meth:`~regstore.backends.locks.LockManager.mutex`."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.locks.mutex(self.named_lock_key(key), timeout))
        return _HeldMutex(stack)

    @hookimpl
    def regstore_store_lock(self, key: str, timeout: float | None) -> StoreLockHandle | None:
        with self._translate(f"cannot take the store lock {key}"):
            return self.store_lock(key, timeout)

    @abc.abstractmethod
    def complete_size(self, digest: Digest) -> int | None:
        """The size of the complete blob ``digest``; None if it is not complete."""

    @abc.abstractmethod
    def open_complete(self, digest: Digest, offset: int) -> IO[bytes]:
        """A binary stream over the complete blob from ``offset``; FileNotFoundError if it is
        not there. Each call gives an independent stream; it must not hold the whole blob."""

    def blob_status(self, digest: Digest) -> BlobStatus:
        size = self.complete_size(digest)
        if size is not None:
            return BlobStatus(BlobState.COMPLETE, size=size, current_size=size)
        held = self.locks.is_held(self.blob_lock_key(digest))
        staged = self.staging.staged_size(digest)
        # Look again, last: a writer publishes before it releases its lock, so "not held"
        # followed by "not there" really means not complete.
        size = self.complete_size(digest)
        if size is not None:
            return BlobStatus(BlobState.COMPLETE, size=size, current_size=size)
        if held:
            return BlobStatus(BlobState.WRITING, current_size=staged)
        if staged > 0:
            return BlobStatus(BlobState.PARTIAL, current_size=staged)
        return BlobStatus(BlobState.ABSENT)

    def open_blob(self, digest: Digest, offset: int) -> BlobReadHandle:
        try:
            size = self.complete_size(digest)
            if size is None:
                raise FileNotFoundError(str(digest))
            stream = self.open_complete(digest, offset)
        except FileNotFoundError:
            if self.locks.is_held(self.blob_lock_key(digest)):
                raise LayerLockedError(str(digest)) from None
            raise BlobNotFoundError(None, str(digest)) from None
        return BlobReader(stream, size, digest, self.error_types)

    def blob_writer(self, digest: Digest) -> BlobWriteHandle:
        if self.complete_size(digest) is not None:
            raise LayerAlreadyExistsError(str(digest))
        lock = self.locks.try_acquire(self.blob_lock_key(digest))
        if lock is None:
            raise LayerLockedError(str(digest))
        try:
            if self.complete_size(digest) is not None:  # committed since the first look
                raise LayerAlreadyExistsError(str(digest))
            return self.staging.writer(digest, lock)
        except BaseException:
            lock.release()
            raise

    def list_staging(self) -> list[StagingEntry]:
        return self.staging.entries()

    def drop_staging(self, entry: StagingEntry) -> bool:
        if entry.active:
            return False
        return self.staging.drop_entry(entry)


class _HeldMutex:
    """A lock part's mutex, held until :meth:`release`."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack: contextlib.ExitStack | None = stack

    def release(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
