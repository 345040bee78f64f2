"""Leftovers in a store's working area, and blobs moved aside: the housekeeping half of the
fsspec backend (:class:`~regstore.backends.fsspec_store.FsspecBackend` delegates here).

What a writer can leave under ``<root>/_regstore/`` when it dies (SIGKILL, power loss, a lost
lease) or a verify finds damage:

- ``uploads/<alg>/<hex>``: the staged bytes of a blob (one file on a disk, part objects under
  that prefix on S3), resumed by the next writer of the same digest, or else abandoned;
- ``locks/blob/<alg>/<hex>.lock``: a blob's lock file (flock: free once its process died) or
  lock object (S3: free once its lease ran out);
- ``tmp/<name>``: a temporary file of a small-file write (links, ``index.json``) that never
  got renamed into place;
- ``quarantine/<alg>/<hex>``: a blob whose bytes did not hash to its digest, moved out of the
  layout by :func:`quarantine_blob` so that the next pull fetches it again.

Neither a registry nor OCI tools look under ``_regstore``, so nothing here changes what the
layouts' readers see. The staging part lists and drops its own kind (``uploads/``, and S3's
multipart uploads: :meth:`~regstore.backends.staging.BlobStaging.entries`); the rest is here.
:func:`list_staging` lists all of it with sizes, ages and whether a live
writer holds it; :func:`drop_staging` removes one entry under the blob's write lock, and only if
it did not change since it was listed, so a writer that resumes meanwhile keeps its bytes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING

from regstore.errors import BlobNotFoundError, LayerLockedError
from regstore.reference import SUPPORTED_ALGORITHMS, Digest
from regstore.storetypes import StagingEntry, StagingKind

if TYPE_CHECKING:
    from .fsspec_store import FsspecBackend, WalkedFile

__all__ = [
    "LOCKS_DIR",
    "QUARANTINE_DIR",
    "TMP_DIR",
    "UPLOADS_DIR",
    "drop_staging",
    "group_uploads",
    "list_quarantined",
    "list_staging",
    "quarantine_blob",
]

#: The parts of ``<root>/_regstore`` (``WORK_DIR``) this module looks after.
UPLOADS_DIR = "uploads"
LOCKS_DIR = "locks"
TMP_DIR = "tmp"
QUARANTINE_DIR = "quarantine"
#: Lock keys of blob write locks start with this (see ``FsspecBackend.blob_lock_key``).
_BLOB_LOCKS = "blob"
_LOCK_SUFFIX = ".lock"


def _digest(algorithm: str, encoded: str) -> Digest | None:
    if algorithm not in SUPPORTED_ALGORITHMS:
        return None
    try:
        return Digest(f"{algorithm}:{encoded}")
    except ValueError:
        return None


def group_uploads(
    backend: FsspecBackend, files: Iterable[WalkedFile], base: str
) -> list[StagingEntry]:
    """One UPLOAD entry per digest from the files under ``uploads/`` (``relative`` is
    ``<alg>/<hex>`` for a staging file, ``<alg>/<hex>/<part>`` for staged part objects).
    """
    found: dict[Digest, tuple[int, float]] = {}
    for relative, size, mtime in files:
        parts = relative.split("/")
        digest = _digest(parts[0], parts[1]) if len(parts) >= 2 else None
        if digest is None:
            continue  # not ours: leave it alone
        total, newest = found.get(digest, (0, 0.0))
        found[digest] = (total + size, max(newest, mtime))
    entries = []
    for digest, (size, mtime) in sorted(found.items()):
        entries.append(
            StagingEntry(
                StagingKind.UPLOAD,
                str(digest),
                backend.location(posixpath.join(base, digest.algorithm, digest.hex)),
                size,
                mtime,
                digest=str(digest),
                active=backend.locks.is_held(backend.blob_lock_key(digest)),
            )
        )
    return entries


def _lock_entries(backend: FsspecBackend) -> list[StagingEntry]:
    base = backend.work_path(LOCKS_DIR, _BLOB_LOCKS)
    entries = []
    for relative, size, mtime in backend.walk_files(base):
        parts = relative.removesuffix(_LOCK_SUFFIX).split("/")
        if not relative.endswith(_LOCK_SUFFIX) or len(parts) != 2:
            continue
        digest = _digest(*parts)
        if digest is None:
            continue
        key = backend.blob_lock_key(digest)
        entries.append(
            StagingEntry(
                StagingKind.LOCK,
                key,
                backend.location(posixpath.join(base, relative)),
                size,
                mtime,
                digest=str(digest),
                active=backend.locks.is_held(key),
            )
        )
    return entries


def _plain_entries(backend: FsspecBackend, kind: StagingKind, directory: str) -> list[StagingEntry]:
    base = backend.work_path(directory)
    entries = []
    for relative, size, mtime in backend.walk_files(base):
        digest: Digest | None = None
        if kind is StagingKind.QUARANTINE:
            parts = relative.split("/")
            digest = _digest(*parts) if len(parts) == 2 else None
            if digest is None:
                continue
            key = str(digest)
        else:
            if "/" in relative:
                continue  # write_file's temporary files are flat
            key = relative
        entries.append(
            StagingEntry(
                kind,
                key,
                backend.location(posixpath.join(base, relative)),
                size,
                mtime,
                digest=None if digest is None else str(digest),
            )
        )
    return entries


def list_quarantined(backend: FsspecBackend) -> list[Digest]:
    """The digests of the blobs moved aside (``quarantine/<alg>/<hex>``): one listing of that
    directory alone."""
    entries = _plain_entries(backend, StagingKind.QUARANTINE, QUARANTINE_DIR)
    return [Digest(e.key) for e in entries]


def list_staging(backend: FsspecBackend) -> list[StagingEntry]:
    """Every leftover under the backend's working directory (see the module docstring)."""
    return [
        *backend.staging.entries(),
        *_lock_entries(backend),
        *_plain_entries(backend, StagingKind.TEMPORARY, TMP_DIR),
        *_plain_entries(backend, StagingKind.QUARANTINE, QUARANTINE_DIR),
    ]


def _drop_lock(backend: FsspecBackend, entry: StagingEntry) -> bool:
    parts = entry.key.split("/")
    if len(parts) != 3 or parts[0] != _BLOB_LOCKS or _digest(parts[1], parts[2]) is None:
        raise ValueError(f"not a blob lock key: {entry.key!r}")
    # Taking a free lock and releasing it removes its file (flock) or object (a lease whose
    # holder is gone is broken first); a held one is refused.
    lock = backend.locks.try_acquire(entry.key)
    if lock is None:
        return False
    lock.release()
    return True


def _drop_file(backend: FsspecBackend, entry: StagingEntry, path: str) -> bool:
    now = backend.stat_file(path)
    if now is None:
        return True
    size, mtime = now
    if size != entry.size or mtime > entry.mtime:
        return False
    backend.remove(path)
    return True


def drop_staging(backend: FsspecBackend, entry: StagingEntry) -> bool:
    """Remove one listed entry unless it is held or changed since (see the hookspec)."""
    if entry.active:
        return False
    if entry.kind is StagingKind.LOCK:
        return _drop_lock(backend, entry)
    if entry.kind is StagingKind.TEMPORARY:
        return _drop_file(backend, entry, backend.work_path(TMP_DIR, entry.key))
    if entry.kind is StagingKind.QUARANTINE:
        return _drop_file(backend, entry, backend.quarantine_path(Digest(entry.key)))
    # staged bytes (and, on object stores, incomplete multipart uploads): the staging part's
    return backend.staging.drop_entry(entry)


def quarantine_blob(backend: FsspecBackend, digest: Digest) -> str:
    """Move the complete blob ``digest`` to ``_regstore/quarantine/<alg>/<hex>``, under its
    write lock; returns the new location. The blob is complete, then absent: never partial.
    """
    lock = backend.locks.try_acquire(backend.blob_lock_key(digest))
    if lock is None:
        raise LayerLockedError(str(digest))
    try:
        final = backend.layout.blob_path(digest)
        if backend.file_size(final) is None:
            raise BlobNotFoundError(None, str(digest))
        target = backend.quarantine_path(digest)
        backend.move_aside(final, target)
        removal = backend.layout.blob_removal_path(digest)
        if removal != final:  # the blob's own directory (distribution): now empty
            backend.remove(removal, recursive=True)
        backend.remove(backend.used_marker_path(digest))  # the next write dates it afresh
    finally:
        lock.release()
    return backend.location(target)
