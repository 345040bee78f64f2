"""``file:///abs/path`` and plain paths: a store in a local directory, safe across processes.

The fsspec backend on ``LocalFileSystem`` (made on first use: the primitives of a pull or a
sync are plain system calls), with what a local disk needs beyond fsspec:

- blob write locks are ``fcntl.flock`` locks on files under ``<root>/_regstore/locks``
  (:class:`~regstore.backends.locks.FlockLockManager`): exclusive across threads and
  processes, and released by the kernel when a writer dies, so no lock is ever stale;
- staged bytes are appended with ``O_APPEND`` to ``<root>/_regstore/uploads/<alg>/<hex>``
  and fsynced when the writer closes; commit renames them onto the final path
  (``os.replace``: atomic on one filesystem);
- small files (links, ``index.json``) are written to a temporary file, fsynced and renamed;
- new directory entries (a committed blob, a link, a directory) are made durable by fsyncing
  their directory, except where they are grouped (:mod:`~regstore.backends.durable`): a
  committed blob's and those a manifest write makes, which the layout makes durable before the
  write that makes the manifest visible, and again when it returns; closing the store makes
  any left (a blob written alone) durable;
- no read or write goes through a symbolic link that leads out of the store root
  (:class:`~regstore.errors.StoreEscapeError`): a store that arrived from elsewhere (an
  air-gap transfer, an untrusted archive) cannot make regstore write links or blobs, create
  directories or lock files, or read files anywhere else. Links that stay inside the root are
  followed, and the root itself may be a symbolic link (resolved when the store is opened).
  This guards against a store's content, not against another process changing the tree under
  an open store: a directory seen to be no link is trusted for up to a second
  (``_Confinement.TRUSTED_FOR``; the check on every access made a sync of a few hundred tags
  spend much of its time in ``realpath``), so a directory swapped for a link within that second
  is followed. Open a store that arrives from elsewhere after it has arrived. A read, a size
  or an existence check looks at the last component with the access itself (``O_NOFOLLOW``,
  ``lstat``) and resolves a link it meets there the slow way: in a directory walked a moment
  ago, one system call per access.
- the walk of the repositories goes into a link to a directory inside the root, one link
  deep (docker-registry follows links, so it lists and serves a repository moved elsewhere
  and linked back), and passes over a link back up the walk, to a file or into a loop of
  links; a link to nothing, or to a directory out of the root, above the repositories or
  inside a linked directory stops it with an error naming the link
  (``LocalBackend.follows_link``): gc must never pass over what a repository refers to. Tag
  and revision entries are read through links whatever they are.

URLs: ``file:///srv/mirror`` (``file://localhost/srv/mirror`` too) or a plain path, relative
to the working directory or absolute. ``file://relative`` is refused as ambiguous. Opening
creates nothing: the first write creates the root (so reading a mistyped path can say there is
no store there). Options: ``layout`` (``distribution`` or ``oci``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import IO, Any

from regstore.errors import BlobNotFoundError, StoreError, StoreEscapeError, StoreOptionError
from regstore.hookspecs import Register, hookimpl
from regstore.reference import Digest
from regstore.storetypes import BlobInfo

from .durable import EntrySync, fsync_dir
from .fsspec_store import FsspecBackend, FsspecStaging, WalkedFile
from .libc import checked_linux_call
from .locks import FlockLockManager
from .staging import StagingStream

__all__ = ["LocalBackend", "open_backend", "path_from_url", "regstore_register_backends"]

log = logging.getLogger("regstore.store")


def _makedirs_durable(
    path: str,
    changed: Callable[[str], None] = fsync_dir,
    made: Callable[[str], None] | None = None,
) -> None:
    """``os.makedirs`` that also makes durable (``changed``: fsyncs, or defers) the parent of
    every directory it creates, and tells ``made`` of each directory this call created."""
    # mkdir first: one call where the directory or its parent exists (the common cases), where
    # asking first cost a stat of every missing level and of the first existing one
    parent = os.path.dirname(path)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    except FileNotFoundError:
        if not parent or parent == path:
            raise
        _makedirs_durable(parent, changed, made)
        try:
            os.mkdir(path)
        except FileExistsError:  # made meanwhile by another writer
            return
    if made is not None:
        made(path)
    changed(parent)


#: A file name below a directory, for :meth:`LocalBackend.ensure_parent` of the directory.
_ANY_NAME = "entry"


def _read_all(fd: int) -> bytes:
    """Read the open file ``fd`` to its end and close it (links and manifests: small files,
    read without the fstat, ioctl and lseek calls of a buffered file object)."""
    try:
        parts = []
        while chunk := os.read(fd, _READ_ALL_CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


_READ_ALL_CHUNK = 1 << 20

#: What :meth:`_Confinement._look` saw of one path component (_NOT_DIR: a file where a
#: directory should be, so nothing below it exists either).
_MISSING, _NOT_DIR, _LINK, _PLAIN = object(), object(), object(), object()
#: What ``open(..., O_NOFOLLOW)`` answers for a final link (Linux and macOS; FreeBSD; NetBSD).
_FINAL_LINK_ERRNOS = frozenset(
    code for code in (errno.ELOOP, errno.EMLINK, getattr(errno, "EFTYPE", None)) if code
)


class _Confinement:
    """Checks that paths under a store root resolve inside its real path (see the module
    docstring); the root itself may be a symbolic link."""

    #: How long a directory seen to be a real one (not a link) is taken on trust, in seconds.
    #: A store's tree is checked on every access (a sync of 300 tags makes thousands), and
    #: ``os.path.realpath`` stats every component of the path each time; a directory of the
    #: store that was no link a moment ago is not re-examined for this long. (Swapping one for
    #: a link is the concurrent race this class does not claim to stop.)
    TRUSTED_FOR = 1.0

    def __init__(self, root: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self._prefix = root.rstrip(os.sep) + os.sep
        self._real_dirs: dict[str, float] = {}  # directory under the root -> trusted until

    def inside(self, real: str) -> bool:
        """True if the resolved path ``real`` lies in the root's real path."""
        return _within(real, self.real_root)

    def check(self, path: str) -> str:
        """``path`` if everything it resolves through stays inside the root, else raise
        StoreEscapeError naming the link. Components that do not exist yet are fine: regstore
        creates them as plain directories and files."""
        if not self._plain(path) and not self.inside(os.path.realpath(path)):
            raise self._escape(path)
        return path

    def first_missing(self, directory: str) -> str | None:
        """:meth:`check` of ``directory``, answering the first directory of it (from the root
        down) that does not exist, ``directory`` itself perhaps; None when it exists, when a
        file stands in the way, or where that is not known (a link on the way): the caller's
        rename then finds out, as before."""
        if self._real_dirs.get(directory, 0.0) > time.monotonic():
            return None  # a directory walked (or made) a moment ago
        seen, until, missing = self._walk(directory)
        if seen is _MISSING:
            return missing
        if seen is _NOT_DIR:
            return None
        if seen is _PLAIN:
            looked = self._look(directory, until)
            if looked is _MISSING:
                return directory
            if looked is not _LINK:
                return None
        self.check(directory)  # (raises for a link out of the root)
        return None

    def _plain(self, path: str) -> bool:
        """True if ``path`` lies under the root and no component below the root is a link (a
        component that does not exist ends the walk: nothing below it exists either). False
        means: resolve it the slow way (a link, ``..``, or a path outside the root)."""
        if self._real_dirs.get(path, 0.0) > time.monotonic():
            return True  # a directory walked (or made) a moment ago: nothing to look at
        seen, until = self._above(path)
        if seen is not _PLAIN:
            return seen is not _LINK
        return self._look(path, until) is not _LINK

    def _above(self, path: str) -> tuple[object, float]:
        """Walk the directories above the last component of ``path``, below the root:
        ``(_PLAIN, until)`` when all are real directories (trusted until ``until``),
        ``_MISSING`` when one does not exist and ``_NOT_DIR`` when one is a file (nor does
        ``path`` exist then), ``_LINK`` when one is a link or cannot be looked at, or ``path``
        lies outside the root or has an empty, ``.`` or ``..`` component (the slow way
        decides)."""
        seen, until, _ = self._walk(path)
        return seen, until

    def _walk(self, path: str) -> tuple[object, float, str]:
        """:meth:`_above`, and the directory it found missing (``""`` unless ``_MISSING``)."""
        if not path.startswith(self._prefix):
            return _LINK, 0.0, ""
        now = time.monotonic()
        parent, _, final = path.rpartition(os.sep)
        if final in ("", ".", ".."):
            return _LINK, 0.0, ""
        trusted = self._real_dirs.get(parent, 0.0)
        if trusted > now:
            # The common case: the directory was walked a moment ago (a trusted directory
            # never outlives its ancestors' trust, see below): only the last component is new.
            return _PLAIN, trusted, ""
        # Up to the nearest trusted directory (or the root), then down from there, looking at
        # each directory on the way. A directory is trusted no longer than the one above it,
        # so that a trusted directory vouches for the whole way down from the root.
        root, until = self._prefix[:-1], now + self.TRUSTED_FOR
        below: list[str] = []
        probe = parent
        while probe != root:
            known = self._real_dirs.get(probe, 0.0)
            if known > now:
                until = known
                break
            below.append(probe)
            probe, _, name = probe.rpartition(os.sep)
            if name in ("", ".", ".."):
                return _LINK, 0.0, ""
        for probe in reversed(below):
            seen = self._look(probe, until)
            if seen is not _PLAIN:
                return seen, 0.0, probe if seen is _MISSING else ""
        return _PLAIN, until, ""

    # The primitives below fold the look at the last component into the access itself, which
    # never follows a final link there (lstat, O_NOFOLLOW), and take the slow way when it
    # meets one: where the directory was walked a moment ago, one system call per access
    # where a check first cost two, and none on the path itself when a directory above it is
    # missing (a blob not there yet is asked for several times).

    def stat(self, path: str) -> os.stat_result | None:
        """``os.stat`` of ``path``, None when nothing is there; StoreEscapeError when it
        resolves through a link out of the root; OSError when it cannot be looked at."""
        seen, until = self._above(path)
        if seen is _MISSING or seen is _NOT_DIR:
            return None
        if seen is _PLAIN:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISLNK(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    self._trust(path, until)
                return st
        try:
            return os.stat(self.check(path))  # a link on the way: followed if it stays inside
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_read(self, path: str) -> int | None:
        """A read-only descriptor of the file at ``path``, None when nothing is there;
        StoreEscapeError when it resolves through a link out of the root, NotADirectoryError
        when a file stands where a directory of the path should be (a damaged store)."""
        seen, _ = self._above(path)
        if seen is _MISSING:
            return None
        flags = os.O_RDONLY | os.O_CLOEXEC
        try:
            if seen is _PLAIN:
                try:
                    return os.open(path, flags | os.O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno not in _FINAL_LINK_ERRNOS:
                        raise
            return os.open(self.check(path), flags)  # a link: followed if it stays inside
        except FileNotFoundError:
            return None

    def made(self, directory: str) -> None:
        """``directory`` was just created by ``mkdir`` (so it is no link): trusted as long as
        its parent is (the root, which may be a link, as long as a walk would trust it)."""
        parent, now = os.path.dirname(directory), time.monotonic()
        if parent == self._prefix[:-1]:
            self._trust(directory, now + self.TRUSTED_FOR)
            return
        trusted = self._real_dirs.get(parent, 0.0)
        if trusted > now:
            self._trust(directory, trusted)

    def _trust(self, directory: str, until: float) -> None:
        if len(self._real_dirs) >= 4096:  # a walk of a large store: start afresh
            self._real_dirs.clear()
        self._real_dirs[directory] = until

    def _look(self, probe: str, until: float) -> object:
        """lstat one component: _MISSING, _LINK (also when it cannot be looked at: the slow
        way decides) or _PLAIN; a directory is trusted until ``until``."""
        try:
            mode = os.lstat(probe).st_mode
        except FileNotFoundError:
            return _MISSING
        except NotADirectoryError:
            return _NOT_DIR
        except OSError:
            return _LINK  # (no permission to look, say)
        if stat.S_ISLNK(mode):
            return _LINK
        if stat.S_ISDIR(mode):
            self._trust(probe, until)
        return _PLAIN

    def check_parent(self, path: str) -> str:
        """``path`` if its directory stays inside the root (for a rename or unlink, which act
        on a final symbolic link itself, never on its target)."""
        self.check(os.path.dirname(path))
        return path

    def _escape(self, path: str) -> StoreEscapeError:
        # name the first link on the way whose target lies outside (the one to remove)
        relative = os.path.relpath(path, self.root)
        probe = self.root
        for part in relative.split(os.sep):
            probe = os.path.join(probe, part)
            if os.path.islink(probe) and not self.inside(os.path.realpath(probe)):
                return StoreEscapeError(path, probe, os.readlink(probe))
        return StoreEscapeError(path, path, os.path.realpath(path))  # pragma: no cover


def _within(path: str, directory: str) -> bool:
    """True if the real path ``path`` is ``directory`` or lies below it."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _link_text(link: str, target: str) -> str:
    """What the symbolic link ``link`` holds (its resolved ``target`` once it holds nothing)."""
    try:
        return os.readlink(link)
    except OSError:  # replaced meanwhile
        return target


def _first_link(base: str, path: str) -> str:
    """The first symbolic link on the way from ``base`` down to ``path`` (``path`` if none)."""
    probe = base
    for part in os.path.relpath(path, base).split(os.sep):
        probe = os.path.join(probe, part)
        if os.path.islink(probe):
            return probe
    return path


class _ConfinedFlockLocks(FlockLockManager):
    """flock lock files, refused where ``_regstore/locks`` would lead out of the root."""

    def __init__(self, directory: str, confinement: _Confinement) -> None:
        super().__init__(directory)
        self._confinement = confinement

    def _lock_path(self, key: str) -> str:
        path = super()._lock_path(key)
        self._confinement.check(path)
        return path


#: Writeback of a staging file is started every this many bytes (see _AppendFile).
WRITEBACK_WINDOW = 16 * 1024 * 1024


def _load_sync_file_range() -> Callable[[int, int, int, int], None] | None:
    """Linux's ``sync_file_range(2)`` through libc (CPython's os does not offer it), raising
    OSError like os functions do; None where there is no such call (the fsync on close then
    does all the writing, as everywhere else)."""
    import ctypes  # (start-up: loaded by the first staging file written, not by every command)

    signature = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return checked_linux_call("sync_file_range", signature)


_UNLOADED: Any = object()
#: sync_file_range once the first staging file is opened (None where there is none)
_sync_file_range: Callable[[int, int, int, int], None] | None = _UNLOADED
#: What sync_file_range answers where it cannot work (another kernel, a pipe, a filesystem
#: without it); every other error is a real write error of the staged file.
_WRITEBACK_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ESPIPE})
# sync_file_range's flags (linux/fs.h)
SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4


def _drop_pages(fd: int, offset: int, nbytes: int) -> None:
    """Let the kernel drop the (clean: written back and waited for) page-cache pages of a
    range, so that the next window's writes reuse them. Without it a large blob filled the
    page cache with pages the kernel had to find anew for each window: on a virtual machine
    a 1 GiB write so windowed took 3.1-3.4 s and as much CPU, with each window dropped
    0.6-0.8 s and 0.5 s of CPU (a plain fsync'd write: 4.0 s). Only advice: the kernel never
    drops a dirty page, and a failure changes nothing but the speed."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)


class _AppendFile:
    """Append-only staging file: O_APPEND, fsync on close; never through a final symlink.

    The disk writes while the blob downloads: every :data:`WRITEBACK_WINDOW` bytes the window
    just written is handed to writeback (``sync_file_range(WRITE)``, which does not wait) and
    the window before it is waited for. So at most two windows are dirty at any time and the
    fsync on close (still the durability guarantee, before the rename of commit) finds almost
    nothing left to write, instead of the whole blob: a 1 GiB pull no longer ends with seconds
    of fsync, and the kernel's dirty-page limits never stall the writer all at once. Each
    window waited for is then dropped from the page cache (:func:`_drop_pages`), so a blob of
    any size holds about two windows of it, whose pages the next windows reuse: a 1 GiB pull
    here fell from 3.5 s to 2.0 s (medians of four runs each; most of the difference was kernel
    time spent finding new pages). The price: a reader right after (a registry serving the
    store) reads such a blob from the disk, not from memory; ``drop_pages=False`` (the store's
    ``page_cache="keep"``) leaves every window in the page cache for such a reader.
    """

    def __init__(self, path: str, *, drop_pages: bool = True) -> None:
        self._fd: int | None = None  # for __del__ when the open fails (a missing directory)
        self._fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644
        )
        self._end = os.fstat(self._fd).st_size  #: where the next append lands
        self._started = self._end  #: bytes before this are handed to writeback
        self._waited = self._end  #: bytes before this are on the disk (but for metadata)
        global _sync_file_range
        if _sync_file_range is _UNLOADED:
            _sync_file_range = _load_sync_file_range()
        self._writeback = _sync_file_range
        self._drop = drop_pages

    def write(self, data: bytes | memoryview, /) -> int:
        if self._fd is None:
            raise ValueError("write to a closed staging file")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._end += len(data)
        if self._writeback is not None and self._end - self._started >= WRITEBACK_WINDOW:
            self._write_back(self._writeback, self._fd)
        return len(data)

    def _write_back(self, sync_range: Callable[[int, int, int, int], None], fd: int) -> None:
        """Start writing the newest window to disk, wait for the one before it, and drop that
        one from the page cache."""
        try:
            sync_range(fd, self._started, self._end - self._started, SYNC_FILE_RANGE_WRITE)
            if self._started > self._waited:
                sync_range(
                    fd,
                    self._waited,
                    self._started - self._waited,
                    SYNC_FILE_RANGE_WAIT_BEFORE
                    | SYNC_FILE_RANGE_WRITE
                    | SYNC_FILE_RANGE_WAIT_AFTER,
                )
        except OSError as error:
            if error.errno not in _WRITEBACK_UNSUPPORTED:
                # An I/O error or a full disk: sync_file_range has now reported the file's
                # writeback error, so the fsync on close would not see it again and a blob
                # whose pages never reached the disk would be published. Fail the write.
                raise
            self._writeback = None  # not supported here: the fsync on close does it all
            return
        if self._drop and self._started > self._waited:
            _drop_pages(fd, self._waited, self._started - self._waited)
        self._waited, self._started = self._started, self._end

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __del__(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class LocalStaging(FsspecStaging):
    """The local disk's staging part: ``O_APPEND`` + fsync on close, and an ``os.replace``
    onto the final path (atomic on one filesystem) whose directory entry is made durable with
    the next group (:mod:`~regstore.backends.durable`), before any manifest references it.
    """

    store: LocalBackend

    def append(self, digest: Digest) -> StagingStream:
        path = self.store.confinement.check(self.store.staging_path(digest))
        drop = self.store.page_cache == "drop"
        try:
            return _AppendFile(path, drop_pages=drop)
        except FileNotFoundError:  # its directory is made when missing, not asked for each time
            self.store.ensure_parent(path)
            return _AppendFile(path, drop_pages=drop)

    def seal(self, digest: Digest) -> None:
        # The bytes were fsynced on close; the new entries are made durable with the next
        # group (before any manifest that references the blob is written, or on close).
        with self.store.entries.deferring():
            final = self.store.final_blob_path(digest)
            # readers: none, then all
            self.store.rename_over(self.store.staging_path(digest), final)
            # a rename keeps the staged file's time, perhaps a day old (a resumed pull): gc
            # counts its grace from the commit
            os.utime(final)
            self.store.entries.changed(os.path.dirname(final))


class LocalBackend(FsspecBackend):
    """The fsspec backend on a local directory, with flock locks and fsync'd renames.

    ``page_cache``: ``"drop"`` (default) drops each written-back window of a large blob from
    the page cache as it is staged (see :class:`_AppendFile`); ``"keep"`` leaves the whole
    blob there, for a reader right after (a registry serving the store at once).
    """

    backend_name = "file"

    def __init__(
        self,
        root: str,
        *,
        layout: str = "distribution",
        url: str = "",
        page_cache: str = "drop",
    ) -> None:
        if page_cache not in PAGE_CACHE:
            raise StoreOptionError(
                f"unknown page_cache {page_cache!r} for file stores",
                hint="choose one of: drop (the default), keep",
            )
        self.page_cache = page_cache
        root = os.path.abspath(root)
        # Created by the first write (ensure_parent, the lock directory), never by opening.
        if os.path.lexists(root) and not os.path.isdir(root):
            raise StoreError(f"the store root {root} is not a directory")
        self.confinement = _Confinement(root)
        self.entries = EntrySync(root)
        super().__init__(
            None,  # made on first use (open_fs)
            root,
            layout=layout,
            locks=_ConfinedFlockLocks(os.path.join(root, "_regstore", "locks"), self.confinement),
            staging=LocalStaging(),
            url=url or f"file://{root}",
        )

    def open_fs(self) -> Any:
        import fsspec  # late: see FsspecBackend.open_fs

        return fsspec.filesystem("file")

    # Every primitive checks its path first (reads the whole path, renames and unlinks the
    # directory): the layouts and the staging code reach the disk only through these.

    def ensure_parent(self, path: str) -> None:
        directory = os.path.dirname(path)
        self.confinement.check(directory)
        _makedirs_durable(directory, self.entries.changed, self.confinement.made)

    def _make_dirs(self, missing: str, directory: str) -> None:
        """Make ``directory``, whose first missing directory is ``missing``, from the top
        down, each new entry made durable as :meth:`ensure_parent` does; when a directory
        above went missing meanwhile, the rest is left to :meth:`ensure_parent`."""
        levels = [missing]
        below = directory[len(missing) + 1 :]
        for name in below.split(os.sep) if below else []:
            levels.append(f"{levels[-1]}{os.sep}{name}")
        for level in levels:
            try:
                os.mkdir(level)
            except FileExistsError:  # made meanwhile by another writer
                continue
            except FileNotFoundError:  # a directory above removed meanwhile: the slow way
                self.ensure_parent(f"{directory}{os.sep}{_ANY_NAME}")
                return
            self.confinement.made(level)
            self.entries.changed(os.path.dirname(level))

    def read_file(self, path: str) -> bytes | None:
        # Plain system calls: fsspec's file object, or even open(), cost more than reading a
        # link or a manifest (a no-op sync reads a tag link, then its manifest, for every tag)
        fd = self.confinement.open_read(path)
        if fd is None:
            return None
        try:
            return _read_all(fd)
        except IsADirectoryError as exc:  # os.read's error names no path
            raise IsADirectoryError(exc.errno, exc.strerror, path) from None

    # The primitives of a sync's hot path are plain system calls: through fsspec, removing an
    # absent file (every manifest write clears a stale partial-index marker) cost two stats and
    # the Python around them, and a command that never lists needs no fsspec import at all.

    def exists(self, path: str) -> bool:
        try:
            return self.confinement.stat(path) is not None
        except OSError:  # as os.path.exists: a loop of links, no permission to look
            return False

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        found = []
        try:
            with os.scandir(self.confinement.check(path)) as entries:
                for entry in entries:
                    # a link is never a directory here (nor was it through fsspec): a walk
                    # asks follows_link whether to go into one
                    try:
                        found.append((entry.name, entry.is_dir(follow_symlinks=False)))
                    except OSError:  # gone meanwhile
                        continue
        except (FileNotFoundError, NotADirectoryError):
            return []
        return found

    def follows_link(self, path: str, start: str) -> bool:
        """Whether a walk of the tree under ``start`` goes into ``path``, an entry
        :meth:`list_dir` reported as no directory: True for a symbolic link to a directory
        inside the root (as docker-registry, which follows links, lists and serves a
        repository moved elsewhere and linked back), False for what is no link, for a link to
        a file or into a loop of links (no directory can be behind either), and for a link back
        up the walk (what it leads to is walked anyway).

        Raises, rather than pass over what a repository behind it refers to (gc would delete
        its blobs): StoreEscapeError for a link out of the root; StoreError for a link to
        nothing (a disk not mounted), for a link above ``start`` (to the root, say: the walk
        would take in the whole store), for a link met in a directory reached through a link
        (links are followed one deep: links among linked directories could make a walk
        endless or exponential; a chain of links, one to the next, is one link), and when
        where it leads cannot be looked at.
        """
        try:
            if not os.path.islink(path):
                return False
            found = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            # a repository moved to a disk that is not mounted now: passed over, gc deleted
            # its blobs (the registry, which answers 404 meanwhile, serves it again later)
            raise StoreError(
                f"the symbolic link {path} -> {_link_text(path, '?')} leads to nothing ({exc}): "
                "what a repository there refers to is unknown; mount what it leads to, or "
                "remove the link"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return False  # links leading to each other: nothing behind them
            raise StoreError(f"cannot tell where the symbolic link {path} leads: {exc}") from exc
        if not stat.S_ISDIR(found.st_mode):
            return False
        target = os.path.realpath(path)
        shown = _link_text(path, target)
        if not self.confinement.inside(target):
            raise StoreEscapeError(path, path, shown)
        directory = os.path.dirname(path)
        real_start = os.path.realpath(start)
        here = os.path.realpath(directory)
        refusal = f"refusing to walk {start}: the symbolic link {path} -> {shown}"
        if here != os.path.normpath(os.path.join(real_start, os.path.relpath(directory, start))):
            raise StoreError(
                f"{refusal} lies in {directory}, reached through the link "
                f"{_first_link(start, directory)}: links there are followed one link deep; "
                "replace one of the two with the directory it points at"
            )
        if _within(target, real_start):
            return not _within(here, target)
        if _within(real_start, target):
            raise StoreError(
                f"{refusal} leads above it, to {target}: what it holds cannot be told from the "
                "rest of the store; remove it, or link the repository it should lead to"
            )
        return True

    def remove(self, path: str, *, recursive: bool = False) -> None:
        # a final symlink is unlinked itself, never followed
        path = self.confinement.check_parent(path)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                if not recursive:
                    raise IsADirectoryError(errno.EISDIR, "a directory (not removed)", path)
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        stream = open(self.confinement.check(path), "rb")  # noqa: SIM115  # the caller closes
        if offset:
            stream.seek(offset)
        return stream

    def list_blobs(self) -> list[BlobInfo]:
        self.confinement.check(self.layout.blobs_root())
        blobs = super().list_blobs()
        for blob in blobs:  # a linked directory deeper down may have led the walk outside
            self.confinement.check(self.layout.blob_path(Digest(blob.digest)))
        return blobs

    def rename_over(self, source: str, path: str) -> None:
        """``os.replace(source, path)`` of a file (a blob, a manifest, a link), first removing a
        directory standing at ``path``: a damaged store, where that file read as absent, and
        nothing of the store lives below a file's path."""
        try:
            os.replace(source, path)
        except IsADirectoryError:
            log.warning("replacing the directory at %s with the file that belongs there", path)
            self.remove(path, recursive=True)  # (confined; a final symlink unlinked, not followed)
            os.replace(source, path)

    def write_file(self, path: str, data: bytes) -> None:
        tmp = self.temp_path()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        # The working directory is made only when the open finds it missing: asking first
        # cost a mkdir per write
        self.confinement.check(os.path.dirname(tmp))
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            self.ensure_parent(tmp)
            fd = os.open(tmp, flags, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # A directory found missing is made first (a first mirror's links are in new
            # directories: trying the rename first cost a failed rename, and lookups, each)
            directory = os.path.dirname(path)
            missing = self.confinement.first_missing(directory)
            if missing is not None:
                self._make_dirs(missing, directory)
            try:
                self.rename_over(tmp, path)
            except FileNotFoundError:  # removed meanwhile (gc of an empty directory)
                self.ensure_parent(path)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.entries.changed(os.path.dirname(path))

    def file_size(self, path: str) -> int | None:
        st = self.confinement.stat(path)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def walk_files(self, base: str) -> list[WalkedFile]:
        # os.scandir, not fsspec's find (the same answer: regular files by path, symbolic
        # links and what they lead to left out, a directory it may not read passed over): a
        # sync looks at the quarantine before it skips an unchanged image, and would import
        # fsspec for it
        root = self.confinement.check(base)
        walked: list[WalkedFile] = []
        pending = [""]
        while pending:
            relative = pending.pop()
            try:
                listing = os.scandir(os.path.join(root, relative) if relative else root)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with listing:
                for entry in listing:
                    name = f"{relative}/{entry.name}" if relative else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(name)
                        elif entry.is_file(follow_symlinks=False):
                            found = entry.stat(follow_symlinks=False)
                            walked.append((name, found.st_size, found.st_mtime))
                    except FileNotFoundError:  # removed while listed (a writer finished)
                        continue
        return sorted(walked)

    def stat_file(self, path: str) -> tuple[int, float] | None:
        return super().stat_file(self.confinement.check(path))

    def move_aside(self, source: str, target: str) -> None:
        self.confinement.check(source)
        self.ensure_parent(self.confinement.check_parent(target))
        os.replace(source, target)  # atomic: the blob is whole, then gone
        os.utime(target)  # dated by the quarantine, not by the commit
        fsync_dir(os.path.dirname(source))
        fsync_dir(os.path.dirname(target))

    def mark_blob_used(self, digest: Digest) -> None:
        # The blob's own modification time is the mark: gc lists blobs by it, so a reused blob
        # is young again from the listing on, and no marker file is written (nor fsynced). A
        # blob another user owns (a shared store) may not be touched: a marker then, as on an
        # object store (blob_used_at takes the later of the two). The time is given: the
        # kernel's own "now" lags the clock by up to a tick, and a delete keeps what was
        # claimed after the moment it decided (time.time()), milliseconds apart.
        now = time.time()
        try:
            os.utime(self.confinement.check(self.layout.blob_path(digest)), (now, now))
        except FileNotFoundError:
            raise BlobNotFoundError(None, str(digest)) from None
        except PermissionError:
            super().mark_blob_used(digest)

    def store_exists(self) -> bool:
        # An existing directory is no store by itself: a mistyped parent directory, or a store
        # of the other layout, read as empty (verify said OK to a store it never looked at)
        return os.path.isdir(self.root) and self.holds_layout()

    def deferred_durability(self) -> contextlib.AbstractContextManager[None]:
        return self._deferred()

    @contextlib.contextmanager
    def _deferred(self) -> Iterator[None]:
        with self.entries.deferring():
            yield
        self.entries.flush()  # not after an error: the operation failed, its writes may stay

    def make_durable(self) -> None:
        self.entries.flush(barrier=True)

    def close(self) -> None:
        try:
            self.entries.close()
        finally:
            super().close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "locks": "flock", "page_cache": self.page_cache}


def path_from_url(url: str) -> str:
    """The local path of ``file:///abs`` or a plain path (returned as given).

    A plain path is taken literally, so ``/srv/mirror?layout=oci`` would be a directory of
    that name: that mistake is refused with a pointer to the URL form, which takes options.
    """
    if "://" not in url:
        _, question, query = url.rpartition("?")
        if question and any(
            key in _OPTIONS for key, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)
        ):
            raise StoreError(
                f"options in a plain path are not parsed: write file://{os.path.abspath(url)} "
                "(a file:/// URL takes ?layout=... and ?page_cache=...) or pass them to "
                "open_store as keywords"
            )
        return url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "file":
        raise StoreError(f"not a file store URL: {url!r}")
    if parsed.netloc not in ("", "localhost"):
        raise StoreError(
            f"file URL {url!r} names host {parsed.netloc!r}: write file:///absolute/path "
            "(three slashes) or a plain path"
        )
    path = urllib.parse.unquote(parsed.path)
    if not path:
        raise StoreError(f"file URL {url!r} has no path")
    return path


_OPTIONS = ("layout", "page_cache")
#: the values of the ``page_cache`` option
PAGE_CACHE = ("drop", "keep")


def open_backend(url: str, **options: Any) -> LocalBackend:
    """The factory for ``file://`` URLs and plain paths. Options: ``layout``, ``page_cache``."""
    layout = options.pop("layout", "distribution")
    page_cache = options.pop("page_cache", "drop")
    if options:
        raise StoreOptionError(
            f"unknown option(s) for file stores: {', '.join(sorted(options))}",
            hint=f"known: {', '.join(_OPTIONS)}",
        )
    return LocalBackend(path_from_url(url), layout=str(layout), url=url, page_cache=str(page_cache))


@hookimpl
def regstore_register_backends(register: Register) -> None:
    """Register ``file://`` (plain paths map to it too)."""
    register("file", open_backend, "local directory (distribution or OCI layout, flock locks)")
