"""Backends broken on purpose, to prove that the conformance kit catches them
(tests/test_conformance_kit.py). Each is the minimal backend with one classic mistake:

- ``buffering:///path`` stages a blob in a bytearray and writes it out only when the writer is
  closed or committed: it holds whole blobs in memory;
- ``stalelock:///path`` takes a blob's lock by creating a lock file (``O_EXCL``) and removes it
  on release: a writer that dies without releasing leaves its lock behind forever.

Everything else works, so the rest of the suite cannot tell them from a good backend.
"""

from __future__ import annotations

import contextlib
import os

from regstore.backends.kit import (
    BlobLock,
    Digest,
    HeldKeys,
    LockManagerBase,
    Register,
    StagingStream,
    StoreLocation,
    check_lock_key,
    hookimpl,
    location_factory,
)

from .minimal_backend import FileStaging, MinimalBackend


class _Buffered:
    """Collects every byte and writes them to the file only at close."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buffer = bytearray()

    def write(self, data: bytes | memoryview, /) -> int:
        self.buffer += data
        return len(data)

    def close(self) -> None:
        with open(self.path, "ab") as file:
            file.write(self.buffer)
        self.buffer = bytearray()


class BufferingStaging(FileStaging):
    def append(self, digest: Digest) -> StagingStream:
        os.makedirs(os.path.dirname(self.path(digest)), exist_ok=True)
        return _Buffered(self.path(digest))


class BufferingBackend(MinimalBackend):
    backend_name = "buffering"

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.staging = BufferingStaging()
        self.staging.attach(self)


_held = HeldKeys()


class _LockFile:
    def __init__(self, path: str) -> None:
        self.path: str | None = path

    def release(self) -> None:
        path, self.path = self.path, None
        if path is not None:
            _held.free(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class LockFileManager(LockManagerBase):
    """A lock is the existence of ``<key>.lock``: nobody ever frees a dead holder's."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, *check_lock_key(key)) + ".lock"

    def try_acquire(self, key: str) -> BlobLock | None:
        path = self._path(key)
        if not _held.claim(path):
            return None
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            _held.free(path)
            return None
        return _LockFile(path)

    def is_held(self, key: str) -> bool:
        return os.path.exists(self._path(key))


class StaleLockBackend(MinimalBackend):
    backend_name = "stalelock"

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.locks = LockFileManager(os.path.join(root, "locks"))


@location_factory({})
def open_buffering(location: StoreLocation) -> BufferingBackend:
    return BufferingBackend(location.path)


@location_factory({})
def open_stalelock(location: StoreLocation) -> StaleLockBackend:
    return StaleLockBackend(location.path)


@hookimpl
def regstore_register_backends(register: Register) -> None:
    register("buffering", open_buffering, "holds whole blobs in memory (broken on purpose)")
    register("stalelock", open_stalelock, "never frees a dead writer's lock (broken on purpose)")
