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

One ``syncfs(2)`` of the store's filesystem makes every deferred entry durable at once (from
any thread, and those of another regstore process too). Entries are deferred only where that
holds (:func:`syncfs_covers`: Linux 5.8 or later, a local filesystem of a known kind, nothing
mounted inside the store); elsewhere each directory is fsynced at once, as before. Waiters are
grouped: a thread asking for durability while a sync runs waits for the next one, which serves
every thread that asked meanwhile. A failed sync is not retried: the kernel reports a writeback
error once, so a later sync that succeeds proves nothing about the entries the failed one
covered. Every later request then raises the same error. syncfs reports any write error of the
filesystem (another program's file too): a disk that fails writes fails the store's run.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from regstore.errors import StoreError

from .libc import checked_linux_call

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
    import ctypes  # (start-up: loaded when a store first defers an entry, not by every command)

    return checked_linux_call("syncfs", [ctypes.c_int])


_UNLOADED: Any = object()
#: syncfs once the first store defers an entry (None where there is none)
_syncfs: Callable[[int], None] | None = _UNLOADED


def _platform_syncfs() -> Callable[[int], None] | None:
    global _syncfs
    if _syncfs is _UNLOADED:
        _syncfs = _load_syncfs()
    return _syncfs


#: Filesystems whose syncfs writes back every dirty inode of the filesystem and waits for it
#: (FUSE, for one, would not ask its daemon to sync directories; a network filesystem may not
#: report another client's view). Elsewhere nothing is deferred.
SYNCFS_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def syncfs_covers(root: str, mountinfo: str | None = None, kernel: str | None = None) -> bool:
    """True if one ``syncfs`` of ``root``'s filesystem makes every entry under ``root``
    durable and reports write errors: Linux 5.8 or later (before it syncfs dropped writeback
    errors), a filesystem of :data:`SYNCFS_FILESYSTEMS`, and no other filesystem mounted
    below ``root`` (syncfs would not reach it). ``mountinfo`` and ``kernel`` default to this
    process's ``/proc/self/mountinfo`` and ``uname -r``."""
    release = re.match(r"(\d+)\.(\d+)", kernel if kernel is not None else os.uname().release)
    if release is None or (int(release.group(1)), int(release.group(2))) < (5, 8):
        return False
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
                mountinfo = file.read()
        except OSError:
            return False
    real = os.path.realpath(root).rstrip("/") + "/"
    best, fstype = "", None
    for line in mountinfo.splitlines():
        fields, sep, tail = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not tail:
            continue
        point = _unescape(parts[4]).rstrip("/") + "/"
        if point.startswith(real) and point != real:
            return False  # a filesystem mounted inside the store
        if real.startswith(point) and len(point) > len(best):
            best, fstype = point, tail.split()[0]
    return fstype in SYNCFS_FILESYSTEMS


class EntrySync:
    """The deferred directory entries of one local store (thread-safe).

    ``changed(directory)`` is called after a new entry appears in ``directory``: it fsyncs the
    directory at once, unless the calling thread is inside :meth:`deferring` and ``syncfs``
    covers the store (:func:`syncfs_covers`), where it only records it. :meth:`flush` makes
    every entry recorded so far (by any thread) durable.
    """

    def __init__(self, root: str, *, syncfs: Callable[[int], None] | bool | None = True) -> None:
        self._root = root
        # True: this platform's syncfs where it covers the store (looked up when first needed,
        # so a caller can wrap the module's); a callable: that one, trusted; None: never
        self._syncfs: Any = _UNLOADED if syncfs is True else syncfs or None
        self._check = syncfs is True
        self._local = threading.local()
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._started = 0  #: syncs started so far (the generation of the newest)
        self._completed = 0  #: the newest generation finished
        self._running = False
        self._failed: OSError | None = None
        # syncfs reports writeback errors of the filesystem not yet seen through this
        # descriptor: it is opened before the first entry is deferred and kept until close.
        self._fd: int | None = None
        #: syncfs calls made
        self.syncs = 0

    def _usable(self) -> bool:
        # called holding the lock: True once the descriptor is open (opened on first use)
        if self._fd is not None:
            return True
        if self._syncfs is _UNLOADED:
            self._syncfs = _platform_syncfs()
        if self._syncfs is None:
            return False
        if self._check and not syncfs_covers(self._root):
            self._syncfs = None
            return False
        try:
            self._fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # no store yet: asked again next time
        except OSError:
            self._syncfs = None
            return False
        self._check = False
        return True

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Within this block, the calling thread's :meth:`changed` only records directories
        (where syncfs covers the store; elsewhere it fsyncs them at once, as outside)."""
        with self._cond:
            usable = self._usable()
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1 if usable else depth
        try:
            yield
        finally:
            self._local.depth = depth

    def changed(self, directory: str) -> None:
        """A new entry (or a rename onto one) was made in ``directory``."""
        if not getattr(self._local, "depth", 0):
            fsync_dir(directory)
            return
        with self._cond:
            self._pending.add(directory)

    def flush(self, *, barrier: bool = False) -> None:
        """Return once every entry recorded before this call is durable; with ``barrier``,
        once every entry made on the store's filesystem before this call is, whoever made it
        (another thread that has not recorded its entry yet, another process).

        Raises StoreError if a sync failed (this one or an earlier one).
        """
        with self._cond:
            idle = self._failed is None and not self._running and not self._pending
            if idle and (not barrier or not self._usable()):
                return  # nothing deferred here; without syncfs nothing is deferred anywhere
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
        fd = self._fd if self._usable() else None
        self._cond.release()
        failure: OSError | None = None
        interrupted = False
        try:
            self._sync(fd, pending)
        except OSError as exc:  # a failed sync leaves the store failed (see the module)
            failure = exc
        except BaseException:  # interrupted (Ctrl-C): not failed, the sync is owed still
            interrupted = True
            raise
        finally:
            self._cond.acquire()
            self._running = False
            if interrupted:
                self._started = generation - 1
                self._pending |= pending
            else:
                self._completed = generation
                if failure is not None and self._failed is None:
                    self._failed = failure
            self._cond.notify_all()

    def _sync(self, fd: int | None, pending: set[str]) -> None:
        if fd is None or self._syncfs is None:
            # the store was closed between an entry and its flush: each directory, then
            for directory in sorted(pending):
                with contextlib.suppress(FileNotFoundError):  # removed since: nothing to do
                    fsync_dir(directory)
            return
        self.syncs += 1
        self._syncfs(fd)

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
