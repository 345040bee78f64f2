"""``FsspecBackend``: the whole store contract on any fsspec filesystem, in a chosen layout.

The backend stores bytes, locks and makes blobs visible; the :mod:`regstore.store` facade
hashes and verifies. Where things live is the layout's business
(:mod:`~regstore.backends.layout_distribution` by default, :mod:`~regstore.backends.layout_oci`
with ``layout="oci"``); this module does blob writes, reads, listing and the small-file
primitives the layouts build on.

Blob writes follow containerd's content store: a writer takes the blob's lock
(:class:`~regstore.backends.locks.LockManager`), appends to a *staging* object under
``<root>/_regstore/uploads/<alg>/<hex>`` (same filesystem as the blobs, so promotion is a
rename), and on commit the verified bytes are *promoted* to the layout's final path in one
atomic step. Closing without commit keeps the staged bytes for the next writer to resume; a
crashed writer leaves them too (its lock dies with it where the lock manager allows).

The store is composed of parts it is handed (DESIGN §7, "backends by composition"):

- a *staging part* (``staging=``, a :class:`~regstore.backends.staging.BlobStaging`): how a
  blob's bytes are staged, resumed and published; default :class:`FsspecStaging` (append,
  then ``fs.mv``); the local disk hands :class:`~regstore.backends.filesystem.LocalStaging`
  (``O_APPEND`` + fsync + ``os.replace``), memory a bytearray part, S3 part objects + a
  multipart copy;
- a *lock part* (``locks=``, a :class:`~regstore.backends.locks.LockManager`): flock,
  in-process, or S3 leases. ``blob_lock_key(digest)`` names a blob's lock.

What a medium may still adjust here is its small-file primitives (``write_file``,
``read_file``, ``file_size``, ``list_dir``, ``remove``, ``ensure_parent``; ``atomic_put``
says a put is atomic already), its durability points (``deferred_durability``,
``make_durable``: nothing to do where each write is durable when it returns, as on S3),
``open_blob_file`` (a reader over a complete blob) and what
housekeeping needs from it (``walk_files``, ``stat_file``, ``move_aside``, ``location``,
``store_exists``).

The promises a part or an override keeps: a blob appears at its final path only whole
(publishing is atomic); staged bytes survive ``close()`` and crashes, so the next writer
resumes them; a dead writer's lock does not outlive it for long; ``write_file`` replaces a
small file atomically.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import os
import posixpath
import re
import threading
from collections.abc import Iterator
from typing import IO, Any, ClassVar

from regstore.errors import (
    BlobNotFoundError,
    InvalidReferenceError,
    StoreError,
    StoreOptionError,
)
from regstore.manifest import Manifest
from regstore.reference import Digest
from regstore.storetypes import BlobInfo, StagingEntry

from . import housekeeping
from .composed import ComposedBlobs
from .layout_distribution import DistributionLayout
from .layout_oci import OciLayout
from .layouts import Layout
from .locks import LockManager, ThreadLockManager
from .staging import AppendStaging, BlobReader, BlobStaging, StagingHost, StagingStream

__all__ = [
    "LAYOUTS",
    "WORK_DIR",
    "BlobReader",
    "FsspecBackend",
    "FsspecStaging",
    "FsspecStagingArea",
    "WalkedFile",
    "check_layout",
    "info_mtime",
    "safe_join",
]

#: ``(path relative to the walked directory, size, mtime)`` of one file (see ``walk_files``).
WalkedFile = tuple[str, int, float]

#: Layouts by option value.
LAYOUTS: dict[str, type[Layout]] = {
    DistributionLayout.name: DistributionLayout,
    OciLayout.name: OciLayout,
}
#: regstore's own working directory under a store root (staging, temporary files, locks).
#: Neither the registry nor OCI tools look at it.
WORK_DIR = "_regstore"
#: Under WORK_DIR: one empty marker per blob a pull reused, dated by that reuse (gc's grace).
USED_DIR = "used"

# One part of a path we are willing to create: one or more components, each what validated
# names, tags and digests consist of, plus our fixed words, joined by single slashes. Never a
# ".", ".." or empty component, absolute, backslashes, NUL or non-ASCII.
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*", re.ASCII)


def safe_join(root: str, *parts: str) -> str:
    """The path of ``parts`` under ``root``: the one place store paths are built.

    Each part may hold several ``/``-separated components; every component must match a
    strict ASCII grammar, and the result must stay under ``root``. Raises
    InvalidReferenceError otherwise (a value that slipped past validation never touches I/O).
    """
    try:
        return _joined(root, parts)
    except TypeError:  # a part that is no string, nor hashable (a list, say)
        raise InvalidReferenceError("path component", parts, "must be non-empty strings") from None


# A sync of small images builds the same few paths of each blob a dozen times: the grammar
# is checked once per path (a failed check raises, and is not remembered), each part with one
# match (a first mirror builds thousands of new paths: a match per component cost it about
# 3 % of its Python time).
@functools.lru_cache(maxsize=4096)
def _joined(root: str, parts: tuple[str, ...]) -> str:
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidReferenceError("path component", part, "must be a non-empty string")
        if _PART.fullmatch(part) is None:
            raise InvalidReferenceError(
                "path component", part, "holds an empty, relative, absolute or odd component"
            )
    if not parts:
        return root
    relative = "/".join(parts)
    # Belt and braces: the grammar above already rules out every way of leaving the root.
    if "/." in f"/{relative}":
        raise InvalidReferenceError("path component", relative, "escapes the store root")
    return f"{root.rstrip('/')}/{relative}"


class _TempNames:
    """Names for temporary files, 32 hex digits as a uuid4's: a random prefix of this process
    (drawn again in a forked child) and a counter. One name costs no system call (a uuid4 is
    a ``getrandom`` each, and a first mirror writes thousands of small files)."""

    def __init__(self) -> None:
        self._reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()
        # (next() of a count is atomic under the GIL, not in a free-threaded build; a name
        # given twice would make an object store's put overwrite another writer's file)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            number = next(self._counter)
        return f"{self._prefix}{number & 0xFFFFFFFFFFFFFFFF:016x}"


_temp_names = _TempNames()


def check_layout(layout: str) -> str:
    """``layout`` if it names a layout (``distribution``, ``oci``); StoreOptionError if not."""
    if layout not in LAYOUTS:
        raise StoreOptionError(
            f"unknown store layout {layout!r}",
            hint=f"choose one of: {', '.join(sorted(LAYOUTS))}",
        )
    return layout


def info_mtime(info: dict[str, Any]) -> float:
    """The modification time (epoch seconds) an fsspec ``info`` dict gives, 0.0 if none."""
    for key in ("mtime", "LastModified", "last_modified", "modified", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
    return 0.0


class FsspecBackend(ComposedBlobs):
    """The store contract on an fsspec filesystem ``fs`` under ``root``, in ``layout``.

    Args:
        fs: any fsspec filesystem instance; or None from a subclass that makes it in
            :meth:`open_fs` on first use.
        root: the store's root path on ``fs`` (created on first write where that matters).
        layout: ``"distribution"`` (default) or ``"oci"``.
        locks: the lock part; default process-local (:class:`ThreadLockManager`), which
            is right only when no other process writes the same store.
        staging: the staging part; default :class:`FsspecStaging` (append to a file, then
            ``fs.mv`` it into place).
        url: the URL the store was opened with (for ``describe``).

    Raises StoreError for an unknown layout.
    """

    backend_name = "fsspec"
    #: True where one ``pipe_file`` replaces a file atomically (memory, object stores): small
    #: files are then written in place, without a temporary file and a move.
    atomic_put: ClassVar[bool] = False

    def __init__(
        self,
        fs: Any,
        root: str,
        *,
        layout: str = "distribution",
        locks: LockManager | None = None,
        staging: BlobStaging | None = None,
        url: str = "",
    ) -> None:
        layout_class = LAYOUTS[check_layout(layout)]
        self._filesystem = fs
        self.root = root.rstrip("/") or "/"
        self.url = url
        if locks is None:
            protocol = self.fs.protocol
            protocol = protocol if isinstance(protocol, str) else protocol[0]
            locks = ThreadLockManager(f"{protocol}:{self.root}")
        self.locks: LockManager = locks
        self.layout: Layout = layout_class(self)
        self.staging: BlobStaging = staging or FsspecStaging()
        self.staging.attach(self)
        self._prepared = False
        self._prepare_lock = threading.Lock()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made by :meth:`open_fs` on first use where none was given)."""
        fs = self._filesystem
        if fs is None:
            fs = self._filesystem = self.open_fs()
        return fs

    @fs.setter
    def fs(self, fs: Any) -> None:
        # a subclass may still set its filesystem itself, as before fs was made late
        self._filesystem = fs

    def open_fs(self) -> Any:
        """The filesystem of a backend constructed without one. The file and memory stores make
        theirs late: importing fsspec costs every CLI command ~50 ms of start-up, and a fresh
        pull or sync into a directory store never goes through it (its primitives are system
        calls; resuming a partly staged blob, a walk or gc do)."""
        raise StoreError(f"{type(self).__name__} was given no fsspec filesystem")

    # -- paths -------------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """The path of ``parts`` under the root (see :func:`safe_join`)."""
        return safe_join(self.root, *parts)

    def work_path(self, *parts: str) -> str:
        """A path in regstore's working directory (``<root>/_regstore/...``)."""
        return self.path(WORK_DIR, *parts)

    def temp_path(self) -> str:
        """A new path for a temporary file, in the working directory's ``tmp``."""
        return f"{self.work_path(housekeeping.TMP_DIR)}/{_temp_names.next()}"

    def prepare(self) -> None:
        """Create the layout's fixed files once per instance, before the first write."""
        if self._prepared:
            return
        with self._prepare_lock:
            if not self._prepared:
                self.layout.prepare()
                self._prepared = True

    # -- small files (the LayoutHost primitives) ---------------------------------------------

    def ensure_parent(self, path: str) -> None:
        """Create the directory that will hold ``path``. Object stores: nothing to do."""
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)

    def read_file(self, path: str) -> bytes | None:
        """Whole content of a small file, or None if it does not exist."""
        try:
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return data

    def write_file(self, path: str, data: bytes) -> None:
        """Replace a small file atomically: a temporary file in the working directory, then
        a move; one put where ``atomic_put`` says a put is atomic already (memory, S3).
        """
        if self.atomic_put:
            self.fs.pipe_file(path, bytes(data))
            return
        tmp = self.temp_path()
        self.ensure_parent(tmp)
        self.fs.pipe_file(tmp, data)
        try:
            self.ensure_parent(path)
            self.fs.mv(tmp, path)
        except BaseException:
            self.remove(tmp)
            raise

    def deferred_durability(self) -> contextlib.AbstractContextManager[None]:
        """A block whose writes this thread may make durable together, at the latest when
        the block ends (the local disk groups its directory fsyncs). Default: each write is
        durable when it returns, so there is nothing to defer."""
        return contextlib.nullcontext()

    def make_durable(self) -> None:
        """Return once every write made so far (by any thread or process) is durable: a
        layout calls it before it writes what references them. Default: nothing to do."""

    def exists(self, path: str) -> bool:
        """True if a file or directory exists at ``path``."""
        return bool(self.fs.exists(path))

    def file_size(self, path: str) -> int | None:
        """Size of the file at ``path``; None if there is no file there (from :meth:`stat_file`)."""
        found = self.stat_file(path)
        return None if found is None else found[0]

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        """``(name, is_directory)`` of the entries of ``path``; empty if it does not exist."""
        try:
            entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            name = posixpath.basename(str(entry["name"]).rstrip("/"))
            if name:
                found.append((name, entry.get("type") == "directory"))
        return found

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a tree with ``recursive``; a missing path is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=recursive)

    def mutex(self, key: str) -> contextlib.AbstractContextManager[None]:
        """The store-wide critical section ``key`` (from the lock manager)."""
        return self.locks.mutex(key)

    # -- blob staging (the staging part) -----------------------------------------------------

    def staging_path(self, digest: Digest) -> str:
        """Where a blob's bytes are staged: one place per digest (the lock makes it
        single-writer), on the same filesystem as the blobs so promotion can rename (a file on
        a disk, a prefix of part objects on S3).
        """
        return self.work_path("uploads", digest.algorithm, digest.hex)

    def final_blob_path(self, digest: Digest) -> str:
        """The layout's path of a complete blob, ready to be written: the layout's fixed files
        exist and the parent directory too (what a staging part calls before publishing).
        """
        self.prepare()
        final = self.layout.blob_path(digest)
        self.ensure_parent(final)
        return final

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        """A binary stream over the complete blob at ``path``, positioned at ``offset``.

        Raises FileNotFoundError if it is not there. Each call must give an independent stream.
        """
        stream: IO[bytes] = self.fs.open(path, "rb")
        if offset:
            stream.seek(offset)
        return stream

    # -- manifests (delegated to the layout) -------------------------------------------------

    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        return self.layout.get_manifest(name, reference)

    def put_manifest(
        self,
        name: str,
        tag: str | None,
        raw: bytes,
        media_type: str,
        digest: Digest,
        partial: bool,
    ) -> None:
        manifest = Manifest.parse(raw, media_type)
        self.prepare()
        # Durable together where the medium groups durability (the layout marks where what
        # it writes next must find what came before durable): all of it when this returns.
        with self.deferred_durability():
            self.layout.write_manifest_blob(digest, raw)
            self.layout.put_manifest(name, tag, manifest, digest, partial)

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        return self.layout.manifest_is_partial(name, digest)

    def unlinked_blobs(self, name: str, digests: list[Digest]) -> dict[Digest, str]:
        return self.layout.unlinked_blobs(name, digests)

    def outside_references(self) -> list[Digest]:
        return self.layout.outside_references()

    def delete_manifest(self, name: str, digest: Digest) -> None:
        self.layout.delete_manifest(name, digest)

    def delete_tag(self, name: str, tag: str) -> None:
        self.layout.delete_tag(name, tag)

    def list_repositories(self) -> list[str]:
        return self.layout.list_repositories()

    def list_tags(self, name: str) -> list[str]:
        return self.layout.list_tags(name)

    def list_manifests(self, name: str) -> list[str]:
        return self.layout.list_manifests(name)

    # -- blobs -------------------------------------------------------------------------------

    # blob_status, open_blob and blob_writer come from ComposedBlobs and the two parts

    def complete_size(self, digest: Digest) -> int | None:
        return self.file_size(self.layout.blob_path(digest))

    def open_complete(self, digest: Digest, offset: int) -> IO[bytes]:
        return self.open_blob_file(self.layout.blob_path(digest), offset)

    def list_blobs(self) -> list[BlobInfo]:
        root = self.layout.blobs_root()
        try:
            found = self.fs.find(root, detail=True)
        except FileNotFoundError:
            return []
        prefix = root.rstrip("/") + "/"
        blobs = []
        for path, info in found.items():
            path = str(path)
            if not path.startswith(prefix) or info.get("type") != "file":
                continue
            digest = self.layout.blob_digest_of(path[len(prefix) :])
            if digest is not None:
                blobs.append(BlobInfo(str(digest), int(info["size"]), info_mtime(info)))
        return blobs

    def delete_blob(self, digest: Digest) -> None:
        final = self.layout.blob_path(digest)
        if self.file_size(final) is None:
            raise BlobNotFoundError(None, str(digest))
        self.remove(self.layout.blob_removal_path(digest), recursive=True)
        self.remove(self.used_marker_path(digest))

    # -- reuse marks (gc's grace counts from a blob's last use) -------------------------------

    def used_marker_path(self, digest: Digest) -> str:
        """The marker dated by a blob's last reuse: ``<root>/_regstore/used/<alg>/<hex>``."""
        return self.work_path(USED_DIR, digest.algorithm, digest.hex)

    def mark_blob_used(self, digest: Digest) -> None:
        # an empty marker: its modification time, by the clock that dates the blobs (the
        # object store's, for S3 and Azure), is the mark
        self.write_file(self.used_marker_path(digest), b"")

    def blob_used_at(self, digest: Digest) -> float | None:
        blob = self.stat_file(self.layout.blob_path(digest))
        if blob is None:
            return None
        marker = self.stat_file(self.used_marker_path(digest))
        return blob[1] if marker is None else max(blob[1], marker[1])

    # -- housekeeping: staging leftovers and quarantine (see .housekeeping) -------------------

    def location(self, path: str) -> str:
        """``path`` as a URL people can read in a report (``file:///...``, ``s3://...``)."""
        return str(self.fs.unstrip_protocol(path))

    def walk_files(self, base: str) -> list[WalkedFile]:
        """Every file under the directory ``base``, recursively; empty if there is none."""
        try:
            found = self.fs.find(base, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        prefix = base.rstrip("/") + "/"
        walked = []
        for path, info in found.items():
            path = str(path)
            if path.startswith(prefix) and info.get("type") == "file":
                walked.append((path[len(prefix) :], int(info.get("size") or 0), info_mtime(info)))
        return walked

    def stat_file(self, path: str) -> tuple[int, float] | None:
        """``(size, mtime)`` of the file at ``path``, or None if there is no file there."""
        try:
            info = self.fs.info(path)
        except (FileNotFoundError, NotADirectoryError):  # a file where a parent should be
            return None
        if info.get("type") != "file":
            return None
        return int(info.get("size") or 0), info_mtime(info)

    def quarantine_path(self, digest: Digest) -> str:
        """Where a damaged blob is moved aside: ``<root>/_regstore/quarantine/<alg>/<hex>``."""
        return self.work_path(housekeeping.QUARANTINE_DIR, digest.algorithm, digest.hex)

    def move_aside(self, source: str, target: str) -> None:
        """Move the complete blob at ``source`` to ``target`` (replacing it), so that
        ``source`` goes from whole to absent at once; ``target`` is dated now (the grace of gc
        runs from the move). Called under the blob's write lock.
        """
        self.ensure_parent(target)
        self.fs.mv(source, target)
        with contextlib.suppress(NotImplementedError):  # a filesystem that cannot touch
            self.fs.touch(target, truncate=False)

    def quarantine_blob(self, digest: Digest) -> str:
        return housekeeping.quarantine_blob(self, digest)

    def list_staging(self) -> list[StagingEntry]:
        return housekeeping.list_staging(self)

    def list_quarantined(self) -> list[Digest]:
        return housekeeping.list_quarantined(self)

    def drop_staging(self, entry: StagingEntry) -> bool:
        return housekeeping.drop_staging(self, entry)

    def store_exists(self) -> bool:
        """True if the root exists on the filesystem (created by the first write) and holds a
        store of this layout (:meth:`holds_layout`): a parent directory, or a store of the
        other layout, read as an empty store."""
        return bool(self.fs.exists(self.root)) and self.holds_layout()

    def holds_layout(self) -> bool:
        """Whether the root holds a store of this layout (its files, or regstore's working
        area); StoreOptionError when it holds one of another layout instead."""
        if any(self.exists(self.path(*m)) for m in self.layout.markers):
            return True
        for name, layout in LAYOUTS.items():
            if name != self.layout.name and any(self.exists(self.path(*m)) for m in layout.markers):
                raise StoreOptionError(
                    f"{self.root} holds a store of the {name} layout, not of the "
                    f"{self.layout.name} layout",
                    hint=f"open it as {self.location(self.root)}?layout={name}",
                )
        return self.exists(self.path(WORK_DIR))  # (what writers left before any layout file)

    # -- lifecycle ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "root": self.root,
            **self.layout.describe(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, layout={self.layout.name!r})"


class FsspecStagingArea(BlobStaging):
    """The housekeeping half shared by staging parts of fsspec stores: staged bytes live at
    ``store.staging_path(digest)`` (a file, or a prefix of part objects) under
    ``<root>/_regstore/uploads/``, and are listed from there.
    """

    store: FsspecBackend

    def attach(self, store: StagingHost) -> None:
        if not isinstance(store, FsspecBackend):
            raise TypeError(f"{type(self).__name__} is a part of fsspec stores, not {store!r}")
        self.store = store

    def entries(self) -> list[StagingEntry]:
        base = self.store.work_path(housekeeping.UPLOADS_DIR)
        return housekeeping.group_uploads(self.store, self.store.walk_files(base), base)

    def entry(self, digest: Digest) -> StagingEntry | None:
        path = self.store.staging_path(digest)
        relative = f"{digest.algorithm}/{digest.hex}"
        found = self.store.stat_file(path)
        files = [(relative, *found)] if found is not None else []
        files += [(f"{relative}/{r}", size, m) for r, size, m in self.store.walk_files(path)]
        base = self.store.work_path(housekeeping.UPLOADS_DIR)
        return next(iter(housekeeping.group_uploads(self.store, files, base)), None)


class FsspecStaging(FsspecStagingArea, AppendStaging):
    """The default staging part: append to ``staging_path(digest)``, then ``fs.mv`` it onto
    the layout's blob path (atomic where the filesystem's move is a rename).
    """

    def size(self, digest: Digest) -> int:
        return self.store.file_size(self.store.staging_path(digest)) or 0

    def append(self, digest: Digest) -> StagingStream:
        path = self.store.staging_path(digest)
        self.store.ensure_parent(path)
        stream: StagingStream = self.store.fs.open(path, "ab")
        return stream

    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        path = self.store.staging_path(digest)
        size = self.size(digest)
        offset = 0
        while offset < size:
            end = min(offset + chunk_size, size)
            chunk: bytes = self.store.fs.cat_file(path, start=offset, end=end)
            if not chunk:
                break
            offset += len(chunk)
            yield chunk

    def seal(self, digest: Digest) -> None:
        final = self.store.final_blob_path(digest)
        fs = self.store.fs
        fs.mv(self.store.staging_path(digest), final)
        # A rename keeps the staged file's time, perhaps a day old (a resumed pull): gc counts
        # its grace from the commit. Object stores write a new object (dated now) and refuse
        # to touch one (ValueError, NotImplementedError): nothing to do there.
        with contextlib.suppress(NotImplementedError, ValueError):
            fs.touch(final, truncate=False)

    def drop(self, digest: Digest) -> None:
        self.store.remove(self.store.staging_path(digest))
