"""``memory://NAME``: a process-local store on fsspec's memory filesystem.

fsspec's memory filesystem is one class-level dict shared by the whole process, so each store
gets its own root, ``/regstore-<NAME>``: ``memory://a`` and ``memory://b`` never see each
other, while two ``open_store("memory://a")`` calls share content (and locks), as users
expect. Content lives until the process ends or :func:`remove_store` is called.

Staging: each blob being written is a private ``MemoryFile`` (fsspec's ``BytesIO``) kept in
this module, outside the filesystem's dict, with its size counted beside it: nothing but its
writer touches it (a ``getbuffer`` size query from a thread polling ``blob_status`` would make
a concurrent append fail), and promotion puts that very object into the filesystem's dict, one
atomic assignment. Every byte is copied once, into the file; there is no copy at commit (a
``bytes`` handed to fsspec would be copied again by the first size query, which "unshares"
it), and readers read the stored file through a view of its buffer instead of a copy
(:class:`_BlobView`). A large blob of declared size gets its whole buffer at once, and its
pages are faulted in ahead of the writer by a helper thread (:mod:`.prefault`): the kernel's
page faults were a third of a 1 GiB pull into this store.

Options: ``layout`` (``distribution`` or ``oci``), as for every fsspec backend.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

from regstore.errors import StoreError
from regstore.hookspecs import Register, hookimpl
from regstore.reference import Digest
from regstore.storetypes import StagingEntry

from . import housekeeping
from .fsspec_store import FsspecBackend, info_mtime
from .locks import ThreadLockManager
from .prefault import Prefaulter, buffer_address, populate_call
from .staging import AppendStaging, StagingHost, StagingStream

if TYPE_CHECKING:
    from fsspec.implementations.memory import MemoryFile

__all__ = ["MemoryBackend", "open_backend", "regstore_register_backends", "remove_store"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)

# Staged bytes of every memory store in this process, by (root, digest), and when they last
# grew (the age gc judges abandoned staging by).
_staging_guard = threading.Lock()
_staging: dict[tuple[str, str], _StagedBlob] = {}
_staged_at: dict[tuple[str, str], float] = {}


def _root(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise StoreError(
            f"invalid memory store name {name!r}: use 1-128 of [A-Za-z0-9._-], "
            "starting with a letter or digit (memory://NAME)"
        )
    return f"/regstore-{name}"


class _StagedBlob:
    """The staged bytes of one blob: a private ``MemoryFile`` and its size.

    Appends go after the staged bytes (``BytesIO`` grows its buffer geometrically, so a blob
    written in N chunks is copied once, not N times); the size is counted here so that asking
    for it never exports the file's buffer while its writer appends.

    A large blob whose size was declared (``reserve``) gets its whole buffer at once instead:
    untouched zero pages, which a :class:`~.prefault.Prefaulter` faults in a little ahead of
    the writer, on its own thread (the module docstring of :mod:`.prefault` says why). The
    file then holds ``reserved`` bytes, of which ``size`` are written; :meth:`settle` cuts it
    to its written bytes before it becomes the blob.
    """

    __slots__ = ("file", "prefault", "reserved", "size")

    def __init__(self, reserve: int = 0) -> None:
        # fsspec is imported on first use, not with the module (see FsspecBackend.open_fs)
        from fsspec.implementations.memory import MemoryFile

        self.file: MemoryFile = MemoryFile()
        self.size = 0
        self.reserved = 0
        self.prefault: Prefaulter | None = None
        if reserve > 0:
            # (a size no memory could hold, as a hostile manifest may declare: grow as written)
            with contextlib.suppress(MemoryError, OverflowError):
                # bytes(n) of this size is fresh zero pages from the kernel, nothing resident
                # until written; the file takes that very object over, without a copy, as
                # long as nothing else refers to it
                self.file = MemoryFile(None, None, bytes(reserve))
                self.reserved = reserve

    def append(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self.reserved:
            if self.size + n > self.reserved:
                self.stop_prefault()  # the buffer grows (and may move) past its reservation
            elif self.prefault is None and self.size == 0:
                self.prefault = _start_prefault(self.file, self.reserved)
        self.file.seek(self.size)
        self.size += self.file.write(data)
        prefault = self.prefault  # (remove_store may stop it from another thread)
        if prefault is not None:
            prefault.advance(self.size)

    def stop_prefault(self) -> None:
        prefault = self.prefault
        if prefault is not None:
            prefault.stop()  # joined before it is forgotten: the memory may go right after
            self.prefault = None

    def settle(self) -> None:
        """The file as the blob it becomes: no helper on its memory, no byte past the
        written ones (a reservation larger than what came)."""
        self.stop_prefault()
        if self.reserved > self.size:
            self.file.truncate(self.size)
            # truncate keeps a buffer it shrinks by less than half; getvalue() fits it to the
            # bytes (no copy: nothing else holds the buffer, and the value is let go at once)
            self.file.getvalue()
        self.reserved = 0

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        """The staged bytes from the start (copies of ``chunk_size``; the buffer is exported
        only while one chunk is copied, so a writer may append between chunks)."""
        for offset in range(0, self.size, chunk_size):
            with self.file.getbuffer() as view:
                # (bounded by the size: a reserved buffer goes on past the written bytes)
                chunk = bytes(view[offset : min(offset + chunk_size, self.size)])
            yield chunk


#: Declared sizes from which a blob's buffer is reserved whole and faulted in ahead.
RESERVE_MIN = 16 << 20


def _start_prefault(file: io.BytesIO, length: int) -> Prefaulter | None:
    """A helper faulting in the pages of ``file``'s reserved buffer, or None.

    The helper works on the buffer's raw address. Until it is stopped, nothing may make the
    file copy or move its buffer: no ``getvalue()`` and no other reference to its bytes (the
    next write would then copy them elsewhere), no write past the reservation, no truncate.
    ``_StagedBlob`` stops it before each of those.
    """
    if populate_call() is None:
        return None
    with file.getbuffer() as view:
        address = buffer_address(view)
    try:
        return Prefaulter(address, length)
    except RuntimeError:  # no thread to be had (a process limit): the writer faults its own
        return None


class _StagingBuffer:
    """A :class:`~regstore.backends.fsspec_store.StagingStream` appending to a staged blob."""

    def __init__(self, staged: _StagedBlob, key: tuple[str, str]) -> None:
        self._staged = staged
        self._key = key

    def write(self, data: bytes | memoryview, /) -> int:
        self._staged.append(data)
        _staged_at[self._key] = time.time()
        return len(data)

    def close(self) -> None:
        """Nothing to persist: the bytes are in place as soon as they are written."""
        self._staged.stop_prefault()


class _BlobView(io.RawIOBase):
    """A reader over a stored blob's ``MemoryFile`` through a view of its buffer: no copy of
    the blob per reader, and a position of its own (the stored file is shared).

    Stored blobs are never written again, so holding the view (which forbids resizing the
    file) until :meth:`close` is safe.
    """

    def __init__(self, file: io.BytesIO, offset: int) -> None:
        super().__init__()
        self._view: memoryview | None = file.getbuffer()
        self._pos = min(max(offset, 0), len(self._view))

    def _open_view(self) -> memoryview:
        if self._view is None:
            raise ValueError("I/O operation on a closed blob reader")
        return self._view

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = self._open_view()
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(view) - self._pos)
        target[:count] = view[self._pos : self._pos + count]
        self._pos += count
        return count

    def readall(self) -> bytes:
        view = self._open_view()
        data = bytes(view[self._pos :])
        self._pos = len(view)
        return data

    def close(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            view.release()
        super().close()


class MemoryStaging(AppendStaging):
    """The memory store's staging part: a ``MemoryFile`` per blob (reserved whole for a large
    blob of declared size), published by one assignment."""

    store: MemoryBackend

    def _key(self, digest: Digest) -> tuple[str, str]:
        return self.store.root, str(digest)

    def size(self, digest: Digest) -> int:
        with _staging_guard:
            staged = _staging.get(self._key(digest))
            return 0 if staged is None else staged.size

    def expect(self, digest: Digest, size: int) -> None:
        if size < RESERVE_MIN:
            return
        key = self._key(digest)
        with _staging_guard:
            if key in _staging:
                return  # a resumed blob keeps the buffer it has
        reserved = _StagedBlob(reserve=size)  # (allocated outside the process-wide lock)
        with _staging_guard:
            if _staging.setdefault(key, reserved) is reserved:
                _staged_at[key] = time.time()

    def append(self, digest: Digest) -> StagingStream:
        key = self._key(digest)
        with _staging_guard:
            staged = _staging.setdefault(key, _StagedBlob())
            _staged_at.setdefault(key, time.time())
        return _StagingBuffer(staged, key)

    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        with _staging_guard:
            staged = _staging.get(self._key(digest))
        if staged is not None:
            yield from staged.chunks(chunk_size)

    def seal(self, digest: Digest) -> None:
        with _staging_guard:
            staged = _staging.pop(self._key(digest), None) or _StagedBlob()
            _staged_at.pop(self._key(digest), None)
        staged.settle()
        # the staged file itself becomes the blob: one dict assignment, no copy
        path = self.store.fs._strip_protocol(self.store.final_blob_path(digest))
        staged.file.fs, staged.file.path = self.store.fs, path
        staged.file.seek(0)
        staged.file.commit()
        # the blob's time is its commit's (gc counts its grace from it), not the staging's
        staged.file.created = staged.file.modified

    def drop(self, digest: Digest) -> None:
        with _staging_guard:
            staged = _staging.pop(self._key(digest), None)
            _staged_at.pop(self._key(digest), None)
        if staged is not None:
            staged.stop_prefault()

    def _staged_files(self, only: Digest | None = None) -> list[tuple[str, int, float]]:
        root = self.store.root
        with _staging_guard:
            found = [
                (key[1], staged.size, _staged_at.get(key, 0.0))
                for key, staged in _staging.items()
                if key[0] == root and (only is None or key[1] == str(only))
            ]
        return [(digest.replace(":", "/", 1), size, mtime) for digest, size, mtime in found]

    def entries(self) -> list[StagingEntry]:
        base = self.store.work_path(housekeeping.UPLOADS_DIR)
        return housekeeping.group_uploads(self.store, self._staged_files(), base)

    def entry(self, digest: Digest) -> StagingEntry | None:
        base = self.store.work_path(housekeeping.UPLOADS_DIR)
        files = self._staged_files(digest)
        return next(iter(housekeeping.group_uploads(self.store, files, base)), None)

    def attach(self, store: StagingHost) -> None:
        if not isinstance(store, MemoryBackend):
            raise TypeError(f"MemoryStaging is a part of memory stores, not {store!r}")
        self.store = store


_T = TypeVar("_T")


def _snapshot_retried(listing: Callable[[], _T]) -> _T:
    """``listing()``, again when another thread changed the process-wide dict under it.

    fsspec's memory filesystem lists by copying its one dict of every path, and the copy can
    still meet a concurrent insert (a garbage collection in mid-copy lets another thread run):
    ``RuntimeError: dictionary changed size during iteration``. A listing changes nothing, so
    it is simply taken again.
    """
    for _ in range(20):
        try:
            return listing()
        except RuntimeError as exc:
            if "changed size during iteration" not in str(exc):
                raise
    return listing()


@functools.cache
def _memory_filesystem_class() -> type:
    from fsspec.implementations.memory import MemoryFileSystem

    class _MemoryFileSystem(MemoryFileSystem):  # type: ignore[misc]  # fsspec is untyped
        """The process-wide memory filesystem (the same dict of paths), whose listings and
        ``info`` are retried when a concurrent write changed it mid-copy (see
        ``_snapshot_retried``)."""

        def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
            return _snapshot_retried(
                lambda: super(_MemoryFileSystem, self).ls(path, detail, **kwargs)
            )

        def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
            return _snapshot_retried(
                lambda: super(_MemoryFileSystem, self).find(path, *args, **kwargs)
            )

        def info(self, path: str, **kwargs: Any) -> Any:
            # info() copies the dict too, to tell a directory (exists() swallows its error)
            return _snapshot_retried(lambda: super(_MemoryFileSystem, self).info(path, **kwargs))

    return _MemoryFileSystem


def _memory_filesystem() -> Any:
    """fsspec's process-wide memory filesystem, with listings retried (the class is made on
    first use: fsspec is not imported with this module)."""
    return _memory_filesystem_class()()


class MemoryBackend(FsspecBackend):
    """The fsspec backend on the process-wide memory filesystem, rooted per store name."""

    backend_name = "memory"

    def __init__(self, name: str = "default", *, layout: str = "distribution") -> None:
        root = _root(name)
        super().__init__(
            None,  # made on first use (open_fs)
            root,
            layout=layout,
            locks=ThreadLockManager(f"memory:{root}"),
            staging=MemoryStaging(),
            url=f"memory://{name}",
        )
        self.name = name

    def open_fs(self) -> Any:
        return _memory_filesystem()

    # Memory has no directories to create, and a put is one dict assignment (atomic).
    atomic_put = True

    def ensure_parent(self, path: str) -> None:
        pass

    # fsspec's memory filesystem answers info() (and so exists()) by first scanning every
    # path of the process for one below the asked one: each look at a file was a pass over
    # the whole dict, and a sync of many images into memory:// grew quadratic with the store.
    # A file is one lookup in the dict; what is not there is no file.

    def stat_file(self, path: str) -> tuple[int, float] | None:
        stored = self.fs.store.get(self.fs._strip_protocol(path))
        if stored is None:
            return None
        return int(stored.size), info_mtime({"created": getattr(stored, "created", None)})

    def exists(self, path: str) -> bool:
        return self.fs._strip_protocol(path) in self.fs.store or super().exists(path)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        stripped = self.fs._strip_protocol(path)
        if recursive or stripped in self.fs.pseudo_dirs:
            super().remove(path, recursive=recursive)
        elif stripped in self.fs.store:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: as wanted
                self.fs.rm_file(stripped)
        # else nothing: a missing path, or a directory that only exists through the files
        # below it, which fsspec's non-recursive rm leaves too (its rmdir finds no such
        # directory), after the same pass over every path

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        # fs.open() would hand out the stored BytesIO itself, one position for all readers;
        # cat_file() would copy the whole blob for each reader.
        try:
            stored = self.fs.store[self.fs._strip_protocol(path)]
        except KeyError as exc:
            raise FileNotFoundError(path) from exc
        return io.BufferedReader(_BlobView(stored, offset))

    def move_aside(self, source: str, target: str) -> None:
        # a fresh file dated now at the target, then the blob goes in one dict removal
        self.fs.pipe_file(target, self.fs.cat_file(source))
        self.fs.rm_file(source)

    def store_exists(self) -> bool:
        with _staging_guard:
            if any(key[0] == self.root for key in _staging):
                return True
        return bool(self.fs.exists(self.root))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "name": self.name}


def remove_store(name: str) -> None:
    """Delete every manifest, blob and staged byte of ``memory://NAME`` (tests, cleanup)."""
    root = _root(name)
    fs = _memory_filesystem()
    if fs.exists(root):
        fs.rm(root, recursive=True)
    with _staging_guard:
        dropped = [_staging.pop(k) for k in [k for k in _staging if k[0] == root]]
        for key in [k for k in _staged_at if k[0] == root]:
            del _staged_at[key]
    for staged in dropped:
        staged.stop_prefault()


def _name_from_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme and parsed.scheme.lower() != "memory":
        raise StoreError(f"not a memory store URL: {url!r}")
    name = (parsed.netloc + parsed.path).strip("/")
    return name or "default"


def open_backend(url: str, **options: Any) -> MemoryBackend:
    """The factory for ``memory://NAME`` (``memory://`` alone means ``default``).

    Options: ``layout``. Unknown options raise StoreError.
    """
    layout = options.pop("layout", "distribution")
    if options:
        raise StoreError(
            f"unknown option(s) for memory:// stores: {', '.join(sorted(options))} (known: layout)"
        )
    return MemoryBackend(_name_from_url(url), layout=str(layout))


@hookimpl
def regstore_register_backends(register: Register) -> None:
    """Register ``memory://``."""
    register("memory", open_backend, "in-process memory store (fsspec memory filesystem)")
