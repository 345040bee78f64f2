"""Write locks for blobs and a mutex for shared files: the locking half of a backend.

A :class:`LockManager` hands out exclusive locks by *key* (``blob/sha256/<hex>``,
``oci-index``). Keys are built by the backend from validated digests only; a lock manager turns
them into its own namespace (a lock file, a dict entry, a lock object in a bucket).

Two implementations live here:

- :class:`ThreadLockManager`: process-local locks (memory stores). Locks are kept in a
  module-level table keyed by ``namespace`` + key, so two backend instances opened on the same
  store in one process (two ``open_store("memory://a")``) exclude each other, as they share
  content.
- :class:`FlockLockManager`: ``fcntl.flock`` on one lock file per key, for a local disk. The
  kernel drops a flock when its process dies, so a killed writer never leaves a stale lock;
  flocks taken through separate ``open()`` calls conflict even inside one process, and a
  process-local table answers same-process questions without touching the disk.

A backend on another medium (S3: a lock object created with a conditional put and renewed as
a lease) implements the :class:`LockManager` protocol and passes it to
:class:`regstore.backends.fsspec_store.FsspecBackend`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from regstore.errors import StoreError

__all__ = [
    "BlobLock",
    "FlockLockManager",
    "LockManager",
    "ThreadLockManager",
]

#: How long :meth:`LockManager.mutex` waits before giving up (a wedged peer, not contention).
MUTEX_TIMEOUT = 60.0


@runtime_checkable
class BlobLock(Protocol):
    """An exclusive lock that is held until :meth:`release`."""

    def release(self) -> None:
        """Release the lock. Idempotent; never raises for an already released lock."""


@runtime_checkable
class LockManager(Protocol):
    """Exclusive locks by key, across every party that may write the same store.

    The contract a backend relies on:

    - :meth:`try_acquire` never blocks for long: it returns a held lock, or None when someone
      else (thread or process) holds the key.
    - :meth:`is_held` answers without taking the lock in a way that could make a concurrent
      :meth:`try_acquire` fail spuriously for long (a brief probe is tolerated when
      :meth:`try_acquire` retries over it).
    - A holder that dies (process killed) must not keep the key forever: the kernel releases a
      flock; a lease expires.
    """

    def try_acquire(self, key: str) -> BlobLock | None:
        """Take ``key`` exclusively, or return None if it is held by someone else."""

    def is_held(self, key: str) -> bool:
        """True if someone (this process or another) holds ``key`` right now."""

    def mutex(
        self, key: str, timeout: float = MUTEX_TIMEOUT
    ) -> contextlib.AbstractContextManager[None]:
        """A blocking critical section on ``key`` (read-modify-write of a shared file).

        Raises StoreError if the key cannot be taken within ``timeout`` seconds.
        """


def _sleep_backoff(attempt: int) -> None:
    # 1 ms doubling to 20 ms, with jitter so two contenders do not retry in lock step
    time.sleep(min(0.001 * (2**attempt), 0.02) * (0.5 + random.random()))


def _mutex_loop(acquire: Callable[[], BlobLock | None], key: str, timeout: float) -> Iterator[None]:
    """Hold the lock ``acquire`` takes (polling with backoff) for the body of a ``with``."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        lock = acquire()
        if lock is not None:
            break
        if time.monotonic() >= deadline:
            raise StoreError(f"could not take the store lock {key!r} within {timeout:g} s")
        _sleep_backoff(attempt)
        attempt += 1
    try:
        yield
    finally:
        lock.release()


# -- process-local locks (memory stores) ---------------------------------------------------------

# RLock: a lock's __del__ may run from the garbage collector while this thread holds the guard
_thread_guard = threading.RLock()
_thread_held: set[str] = set()


class _ThreadLock:
    def __init__(self, full_key: str) -> None:
        self._key: str | None = full_key

    def release(self) -> None:
        with _thread_guard:
            if self._key is not None:
                _thread_held.discard(self._key)
                self._key = None

    def __del__(self) -> None:
        # A writer dropped without close() must not lock its blob for the life of the process.
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self.release()


class ThreadLockManager:
    """Process-local exclusive locks, shared by every manager with the same ``namespace``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _full(self, key: str) -> str:
        return f"{self.namespace}\0{key}"

    def try_acquire(self, key: str) -> BlobLock | None:
        full = self._full(key)
        with _thread_guard:
            if full in _thread_held:
                return None
            _thread_held.add(full)
        return _ThreadLock(full)

    def is_held(self, key: str) -> bool:
        with _thread_guard:
            return self._full(key) in _thread_held

    @contextlib.contextmanager
    def mutex(self, key: str, timeout: float = MUTEX_TIMEOUT) -> Iterator[None]:
        yield from _mutex_loop(lambda: self.try_acquire(key), key, timeout)

    def __repr__(self) -> str:
        return f"ThreadLockManager({self.namespace!r})"


# -- flock (local disk) --------------------------------------------------------------------------

_flock_guard = threading.RLock()  # RLock: see _thread_guard
#: Lock files held by this process (any manager instance): same-process answers without I/O.
_flock_held: set[str] = set()

#: How long try_acquire keeps retrying while only *probes* (shared flocks of is_held) are in
#: the way. A probe holds its shared lock for microseconds; a real writer holds an exclusive one.
_PROBE_GRACE = 0.2


def _same_file(fd: int, path: str) -> bool:
    """True if ``fd`` is still the file at ``path`` (a releasing holder may have unlinked it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _flock_exclusive_nb(fd: int) -> bool:
    """Take LOCK_EX without blocking, retrying briefly while only shared probes hold it."""
    deadline = time.monotonic() + _PROBE_GRACE
    attempt = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        # Who is in the way? A shared lock succeeds only if no exclusive holder exists.
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a real writer holds it
        fcntl.flock(fd, fcntl.LOCK_UN)
        if time.monotonic() >= deadline:
            return False
        _sleep_backoff(attempt)
        attempt += 1


class _FlockLock:
    def __init__(self, path: str, fd: int, remove: bool) -> None:
        self._path = path
        self._fd: int | None = fd
        self._remove = remove
        self._pid = os.getpid()

    def release(self) -> None:
        with _flock_guard:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            if os.getpid() != self._pid:
                # A forked child's copy: the lock belongs to the open file description it
                # shares with the parent, so unlocking here would unlock the parent's writer.
                os.close(fd)
                return
            try:
                if self._remove:
                    # Unlink while still holding it; acquirers re-check the inode (_same_file),
                    # so nobody can lock the unlinked file and believe they own the key.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._path)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
                _flock_held.discard(self._path)

    def __del__(self) -> None:
        # Closing the descriptor releases the flock anyway; this also clears _flock_held.
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self.release()


def _forget_after_fork() -> None:
    # A forked child owns none of its parent's writers: its own attempts must go to the
    # kernel (which sees the inherited descriptors as the parent's locks), not to these sets.
    global _thread_guard, _flock_guard
    _thread_guard, _flock_guard = threading.RLock(), threading.RLock()
    _thread_held.clear()
    _flock_held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class FlockLockManager:
    """Cross-process exclusive locks on a local disk: one ``<directory>/<key>.lock`` per key.

    Blob lock files are removed when released, so the lock directory holds only the locks in
    use; the ``oci-index`` style mutex files stay (removing them buys nothing).
    """

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)

    def _lock_path(self, key: str) -> str:
        # keys come from the backend (validated digests, fixed words): still refuse escapes
        parts = key.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise StoreError(f"refusing lock key {key!r}")
        return os.path.join(self.directory, *parts) + ".lock"

    def _acquire(self, key: str, *, remove: bool) -> BlobLock | None:
        path = self._lock_path(key)
        with _flock_guard:
            if path in _flock_held:
                return None
            _flock_held.add(path)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            for _ in range(100):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    if not _flock_exclusive_nb(fd):
                        os.close(fd)
                        break
                    if _same_file(fd, path):
                        return _FlockLock(path, fd, remove)
                except BaseException:
                    os.close(fd)
                    raise
                # We locked a file its previous holder unlinked on release: try the new one.
                os.close(fd)
        except BaseException:
            with _flock_guard:
                _flock_held.discard(path)
            raise
        with _flock_guard:
            _flock_held.discard(path)
        return None

    def try_acquire(self, key: str) -> BlobLock | None:
        return self._acquire(key, remove=True)

    def is_held(self, key: str) -> bool:
        path = self._lock_path(key)
        with _flock_guard:
            if path in _flock_held:
                return True
        for _ in range(10):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                except OSError as exc:  # pragma: no cover - filesystems without flock
                    if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                        raise StoreError(
                            f"the filesystem of {path} does not support flock"
                        ) from exc
                    raise
                fcntl.flock(fd, fcntl.LOCK_UN)
                if _same_file(fd, path):
                    return False
                # the file was replaced while we probed it: probe the current one
            finally:
                os.close(fd)
        return False

    @contextlib.contextmanager
    def mutex(self, key: str, timeout: float = MUTEX_TIMEOUT) -> Iterator[None]:
        yield from _mutex_loop(lambda: self._acquire(key, remove=False), key, timeout)

    def __repr__(self) -> str:
        return f"FlockLockManager({self.directory!r})"
