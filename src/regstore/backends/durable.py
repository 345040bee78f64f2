"""Directory entries of a local store made durable in groups (a group commit).

A file store makes each new directory entry durable (a rename onto a blob's path, a new link,
a new directory) by fsyncing its directory: on a crash-safe mirror that is about twenty
directory fsyncs per small image, each a device flush, and they were most of the time a first
mirror of many small images spent waiting. :class:`EntrySync` lets a writer *defer* them and
make them durable together at the points where order matters: before a manifest becomes
visible (everything it references durable first), after its tag, and when the store closes.

File contents are never deferred: a file's bytes are still fsynced before it is renamed into
place, so after a crash a path holds its old file or its new one, whole, never a torn one. A
deferred entry can only be *missing* after a crash (a blob fetched again by the next pull).

On Linux one ``syncfs(2)`` of the store's filesystem makes every deferred entry durable at once
(from any thread, and those of another regstore process too); elsewhere each deferred directory
is fsynced. Waiters are grouped: a thread asking for durability while a sync runs waits for the
next one, which serves every thread that asked meanwhile. A failed sync is not retried: the
kernel reports a writeback error once, so a later sync that succeeds proves nothing about the
entries the failed one covered. Every later request then raises the same error.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator

from regstore.errors import StoreError

__all__ = ["EntrySync", "fsync_dir"]


def fsync_dir(path: str) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX: fsync the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], None] | None:
    """Linux's ``syncfs(2)`` through libc (CPython's os does not offer it), raising OSError;
    None elsewhere. Since Linux 5.8 it reports the filesystem's writeback errors."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


_syncfs = _load_syncfs()


class EntrySync:
    """The deferred directory entries of one local store (thread-safe).

    ``changed(directory)`` is called after a new entry appears in ``directory``: it fsyncs the
    directory at once, unless the calling thread is inside :meth:`deferring`, where it only
    records it. :meth:`flush` makes every entry recorded so far (by any thread) durable.
    """

    def __init__(self, root: str, *, syncfs: Callable[[int], None] | bool | None = True) -> None:
        self._root = root
        # True: this platform's syncfs (looked up now, so a caller can wrap the module's)
        self._syncfs = _syncfs if syncfs is True else syncfs or None
        self._local = threading.local()
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._started = 0  #: syncs started so far (the generation of the newest)
        self._completed = 0  #: the newest generation finished
        self._running = False
        self._failed: BaseException | None = None
        # syncfs reports writeback errors that happened since this descriptor was opened: it
        # is opened before the first entry is deferred and kept until close.
        self._fd: int | None = None
        #: syncs made (syncfs calls, or flushes of the directory fsync fallback)
        self.syncs = 0

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Within this block, the calling thread's :meth:`changed` only records directories."""
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1

    def changed(self, directory: str) -> None:
        """A new entry (or a rename onto one) was made in ``directory``."""
        if not getattr(self._local, "depth", 0):
            fsync_dir(directory)
            return
        with self._cond:
            if self._syncfs is not None and self._fd is None and self._failed is None:
                try:
                    self._fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    self._syncfs = None  # the root cannot be opened: fsync each directory
            self._pending.add(directory)

    def flush(self) -> None:
        """Return once every entry recorded before this call is durable.

        Raises StoreError if a sync failed (this one or an earlier one).
        """
        with self._cond:
            if self._failed is None and not self._pending and not self._running:
                return  # nothing deferred anywhere
            # A sync already running may have started before this thread's entries were
            # made: only one that starts after this call counts.
            target = self._started + 1
            while self._completed < target and self._failed is None:
                if self._running:
                    self._cond.wait()
                    continue
                self._run_one()
            if self._failed is not None:
                raise StoreError(
                    f"the store {self._root} could not make its writes durable: {self._failed}"
                ) from self._failed

    def _run_one(self) -> None:
        # called holding the lock; runs the sync without it
        self._running = True
        self._started += 1
        generation = self._started
        pending, self._pending = self._pending, set()
        self._cond.release()
        try:
            self._sync(pending)
        except BaseException as exc:  # a failed sync leaves the store failed (see the module)
            failure: BaseException | None = exc
        else:
            failure = None
        finally:
            self._cond.acquire()
            self._running = False
            self._completed = generation
            if failure is not None and self._failed is None:
                self._failed = failure
            self._cond.notify_all()

    def _sync(self, pending: set[str]) -> None:
        self.syncs += 1
        if self._syncfs is not None and self._fd is not None:
            self._syncfs(self._fd)
            return
        for directory in sorted(pending):
            try:
                fsync_dir(directory)
            except FileNotFoundError:
                continue  # removed since: nothing of it left to make durable

    def close(self) -> None:
        """Flush, then release the descriptor (the object stays usable: it reopens it)."""
        try:
            self.flush()
        finally:
            with self._cond:
                while self._running:  # another thread's sync still uses the descriptor
                    self._cond.wait()
                fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
