"""``memory://NAME``: a process-local store on fsspec's memory filesystem.

fsspec's memory filesystem is one class-level dict shared by the whole process, so each store
gets its own root, ``/regstore-<NAME>``: ``memory://a`` and ``memory://b`` never see each
other, while two ``open_store("memory://a")`` calls share content (and locks), as users
expect. Content lives until the process ends or :func:`remove_store` is called.

Staging is a ``bytearray`` per blob in this module rather than a memory "file": fsspec's
``MemoryFile`` is one shared ``BytesIO``, whose size query (``getbuffer``) from a thread
polling ``blob_status`` can make a concurrent append fail. Promotion puts the whole blob in
one dict assignment, which is atomic.

Options: ``layout`` (``distribution`` or ``oci``), as for every fsspec backend.
"""

from __future__ import annotations

import io
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

import fsspec

from regstore.errors import StoreError
from regstore.hookspecs import Register, hookimpl
from regstore.reference import Digest
from regstore.storetypes import StagingEntry

from . import housekeeping
from .fsspec_store import FsspecBackend
from .locks import ThreadLockManager
from .staging import AppendStaging, StagingHost, StagingStream

__all__ = ["MemoryBackend", "open_backend", "regstore_register_backends", "remove_store"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)

# Staged bytes of every memory store in this process, by (root, digest), and when they last
# grew (the age gc judges abandoned staging by).
_staging_guard = threading.Lock()
_staging: dict[tuple[str, str], bytearray] = {}
_staged_at: dict[tuple[str, str], float] = {}


def _root(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise StoreError(
            f"invalid memory store name {name!r}: use 1-128 of [A-Za-z0-9._-], "
            "starting with a letter or digit (memory://NAME)"
        )
    return f"/regstore-{name}"


class _StagingBuffer:
    """A :class:`~regstore.backends.fsspec_store.StagingStream` appending to a bytearray."""

    def __init__(self, buffer: bytearray, key: tuple[str, str]) -> None:
        self._buffer = buffer
        self._key = key

    def write(self, data: bytes | memoryview, /) -> int:
        self._buffer += data
        _staged_at[self._key] = time.time()
        return len(data)

    def close(self) -> None:
        """Nothing to persist: the bytes are in place as soon as they are written."""


class MemoryStaging(AppendStaging):
    """The memory store's staging part: a bytearray per blob, published by one assignment."""

    store: MemoryBackend

    def _key(self, digest: Digest) -> tuple[str, str]:
        return self.store.root, str(digest)

    def size(self, digest: Digest) -> int:
        with _staging_guard:
            buffer = _staging.get(self._key(digest))
            return 0 if buffer is None else len(buffer)

    def append(self, digest: Digest) -> StagingStream:
        key = self._key(digest)
        with _staging_guard:
            buffer = _staging.setdefault(key, bytearray())
            _staged_at.setdefault(key, time.time())
        return _StagingBuffer(buffer, key)

    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        with _staging_guard:
            buffer = _staging.get(self._key(digest), bytearray())
        for offset in range(0, len(buffer), chunk_size):
            yield bytes(buffer[offset : offset + chunk_size])

    def seal(self, digest: Digest) -> None:
        with _staging_guard:
            buffer = _staging.pop(self._key(digest), bytearray())
            _staged_at.pop(self._key(digest), None)
        self.store.fs.pipe_file(self.store.final_blob_path(digest), bytes(buffer))

    def drop(self, digest: Digest) -> None:
        with _staging_guard:
            _staging.pop(self._key(digest), None)
            _staged_at.pop(self._key(digest), None)

    def _staged_files(self, only: Digest | None = None) -> list[tuple[str, int, float]]:
        root = self.store.root
        with _staging_guard:
            found = [
                (key[1], len(buffer), _staged_at.get(key, 0.0))
                for key, buffer in _staging.items()
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


class MemoryBackend(FsspecBackend):
    """The fsspec backend on the process-wide memory filesystem, rooted per store name."""

    backend_name = "memory"

    def __init__(self, name: str = "default", *, layout: str = "distribution") -> None:
        root = _root(name)
        super().__init__(
            fsspec.filesystem("memory"),
            root,
            layout=layout,
            locks=ThreadLockManager(f"memory:{root}"),
            staging=MemoryStaging(),
            url=f"memory://{name}",
        )
        self.name = name

    # Memory has no directories to create, and a put is one dict assignment (atomic).
    atomic_put = True

    def ensure_parent(self, path: str) -> None:
        pass

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        # fs.open() would hand out the stored BytesIO itself, one position for all readers.
        return io.BytesIO(self.fs.cat_file(path, start=offset or None))

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
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
    with _staging_guard:
        for key in [k for k in _staging if k[0] == root]:
            del _staging[key]
            _staged_at.pop(key, None)


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
