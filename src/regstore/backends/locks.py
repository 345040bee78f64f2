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

This is the *lock part* of a composed store. A lock part on another medium (S3: a lock object
created with a conditional put and renewed as a lease) subclasses :class:`LockManagerBase`
(which derives the blocking :meth:`~LockManager.mutex` from ``try_acquire``), validates its
keys with :func:`check_lock_key`, keeps this process's holdings in a :class:`HeldKeys` table,
and is handed to :class:`regstore.backends.fsspec_store.FsspecBackend` as ``locks=``.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from regstore.errors import StoreError

__all__ = [
    "MUTEX_TIMEOUT",
    "BlobLock",
    "FlockLockManager",
    "HeldKeys",
    "LockManager",
    "LockManagerBase",
    "ThreadLockManager",
    "check_lock_key",
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
        self, key: str, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """A blocking critical section on ``key`` (read-modify-write of a shared file).

        Raises StoreError if the key cannot be taken within ``timeout`` seconds (None: the
        manager's default). :class:`LockManagerBase` derives it from :meth:`try_acquire`.
        """


def check_lock_key(key: str) -> list[str]:
    """The ``/``-separated components of a lock key, refusing any that could escape a lock
    directory or prefix (empty, ``.``, ``..``, backslashes, NUL). Keys come from the backend
    (validated digests, fixed words); this is the one check every lock part makes.
    """
    parts = key.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise StoreError(f"refusing lock key {key!r}")
    return parts


class HeldKeys:
    """The keys this process holds, across every lock manager of one kind.

    A lock part answers "held here?" from this table without I/O, and refuses a second holder
    in the same process before asking the medium (two stores opened on the same place in one
    process exclude each other). Cleared in a forked child, which holds none of its parent's
    locks. Thread-safe; the guard is re-entrant because a lock's ``__del__`` may run from the
    garbage collector while this thread holds it.
    """

    _all: list[HeldKeys] = []

    def __init__(self) -> None:
        self._guard = threading.RLock()
        self._held: set[str] = set()
        HeldKeys._all.append(self)

    def claim(self, key: str) -> bool:
        """Mark ``key`` held; False if this process holds it already."""
        with self._guard:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def free(self, key: str) -> None:
        """Forget ``key`` (idempotent)."""
        with self._guard:
            self._held.discard(key)

    def __contains__(self, key: object) -> bool:
        with self._guard:
            return key in self._held

    def _after_fork(self) -> None:
        self._guard = threading.RLock()
        self._held.clear()


def _forget_after_fork() -> None:
    # A forked child owns none of its parent's writers: its own attempts must go to the
    # medium (the kernel sees inherited descriptors as the parent's locks), not to these sets.
    for table in HeldKeys._all:
        table._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _sleep_backoff(attempt: int, first: float = 0.001, longest: float = 0.02) -> None:
    # doubling from ``first`` to ``longest``, with jitter so contenders do not retry in step
    time.sleep(min(first * (2**attempt), longest) * (0.5 + random.random()))


class LockManagerBase(abc.ABC):
    """The shared half of a lock part: :meth:`mutex` by polling :meth:`try_acquire`.

    A lock part implements :meth:`try_acquire` and :meth:`is_held` (see :class:`LockManager`
    for their contract) and may tune the polling with ``mutex_timeout`` (seconds before giving
    up), ``mutex_backoff`` (first and longest pause, doubled with jitter in between), override
    :meth:`acquire_mutex` (a mutex key taken differently from a blob key) and
    :meth:`before_release` (a last check that the lock was held throughout the body).
    """

    mutex_timeout: float = MUTEX_TIMEOUT
    mutex_backoff: tuple[float, float] = (0.001, 0.02)

    @abc.abstractmethod
    def try_acquire(self, key: str) -> BlobLock | None:
        """Take ``key`` exclusively, or return None if it is held by someone else."""

    @abc.abstractmethod
    def is_held(self, key: str) -> bool:
        """True if someone (this process or another) holds ``key`` right now."""

    def acquire_mutex(self, key: str) -> BlobLock | None:
        """One attempt at the mutex ``key``. Default: :meth:`try_acquire`."""
        return self.try_acquire(key)

    def before_release(self, lock: BlobLock) -> None:  # noqa: B027 - optional, not abstract
        """Called after the body of :meth:`mutex` succeeded, before releasing. Default: nothing."""

    @contextlib.contextmanager
    def mutex(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """A blocking critical section on ``key``, polling with backoff.

        Raises StoreError if the key cannot be taken within ``timeout`` seconds (default
        ``mutex_timeout``).
        """
        limit = self.mutex_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        first, longest = self.mutex_backoff
        attempt = 0
        while True:
            lock = self.acquire_mutex(key)
            if lock is not None:
                break
            if time.monotonic() >= deadline:
                raise StoreError(f"could not take the store lock {key!r} within {limit:g} s")
            _sleep_backoff(attempt, first, longest)
            attempt += 1
        try:
            yield
            self.before_release(lock)
        finally:
            lock.release()


# -- process-local locks (memory stores) ---------------------------------------------------------

_thread_held = HeldKeys()


class _ThreadLock:
    def __init__(self, full_key: str) -> None:
        self._key: str | None = full_key

    def release(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            _thread_held.free(key)

    def __del__(self) -> None:
        # A writer dropped without close() must not lock its blob for the life of the process.
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self.release()


class ThreadLockManager(LockManagerBase):
    """Process-local exclusive locks, shared by every manager with the same ``namespace``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _full(self, key: str) -> str:
        check_lock_key(key)
        return f"{self.namespace}\0{key}"

    def try_acquire(self, key: str) -> BlobLock | None:
        full = self._full(key)
        return _ThreadLock(full) if _thread_held.claim(full) else None

    def is_held(self, key: str) -> bool:
        return self._full(key) in _thread_held

    def __repr__(self) -> str:
        return f"ThreadLockManager({self.namespace!r})"


# -- flock (local disk) --------------------------------------------------------------------------

#: Lock files held by this process (any manager instance): same-process answers without I/O.
_flock_held = HeldKeys()

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
    def __init__(self, path: str, fd: int) -> None:
        self._path = path
        self._fd: int | None = fd
        self._pid = os.getpid()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.getpid() != self._pid:
            # A forked child's copy: the lock belongs to the open file description it
            # shares with the parent, so unlocking here would unlock the parent's writer.
            os.close(fd)
            return
        try:
            # Unlink while still holding it; acquirers re-check the inode (_same_file), so
            # nobody can lock the unlinked file and believe they own the key.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            _flock_held.free(self._path)

    def __del__(self) -> None:
        # Closing the descriptor releases the flock anyway; this also clears _flock_held.
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self.release()


class FlockLockManager(LockManagerBase):
    """Cross-process exclusive locks on a local disk: one ``<directory>/<key>.lock`` per key.

    Lock files are removed when released, so the lock directory holds only the locks in use
    (a store lock taken per blob, ``blob-use/...``, would otherwise leave a file per blob).
    """

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)

    def _lock_path(self, key: str) -> str:
        return os.path.join(self.directory, *check_lock_key(key)) + ".lock"

    def _acquire(self, key: str) -> BlobLock | None:
        path = self._lock_path(key)
        if not _flock_held.claim(path):
            return None
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            for _ in range(100):
                try:
                    fd = os.open(path, flags, 0o644)
                except FileNotFoundError:  # its directory is made when missing, not each time
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    fd = os.open(path, flags, 0o644)
                try:
                    if not _flock_exclusive_nb(fd):
                        os.close(fd)
                        break
                    if _same_file(fd, path):
                        return _FlockLock(path, fd)
                except BaseException:
                    os.close(fd)
                    raise
                # We locked a file its previous holder unlinked on release: try the new one.
                os.close(fd)
        except BaseException:
            _flock_held.free(path)
            raise
        _flock_held.free(path)
        return None

    def try_acquire(self, key: str) -> BlobLock | None:
        return self._acquire(key)

    def is_held(self, key: str) -> bool:
        path = self._lock_path(key)
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

    def acquire_mutex(self, key: str) -> BlobLock | None:
        return self._acquire(key)

    def __repr__(self) -> str:
        return f"FlockLockManager({self.directory!r})"
