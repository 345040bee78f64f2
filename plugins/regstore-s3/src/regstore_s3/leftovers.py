"""Incomplete multipart uploads: the S3 leftover a filesystem does not have.

A blob of several parts becomes visible through a multipart upload on its final key, which
its writer starts once it has sent a part into it (:mod:`regstore_s3.direct`) or staged two
part objects (:mod:`regstore_s3.promotion`). A writer
killed between ``CreateMultipartUpload`` and ``CompleteMultipartUpload`` leaves that upload
behind: S3 keeps (and bills) its parts until someone aborts it, and no listing of objects
shows it. Here:

- :func:`multipart_entries` lists the incomplete uploads of this store (to blob keys and under
  ``_regstore/``; a registry's own uploads elsewhere under the prefix are not ours) as staging
  entries, each active while the blob's lease is held by a live writer;
- :func:`drop_multipart` aborts one under the blob's lease (a writer that took the blob up
  again keeps its upload);
- :func:`abort_stale_uploads` is what a committing writer calls once its blob is visible:
  every other upload to the same key belonged to a writer that lost the blob before (the
  committing writer holds the lease), so the re-run cleans up what it replaced.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from regstore.errors import RegstoreError
from regstore.reference import Digest
from regstore.storetypes import StagingEntry, StagingKind

from .client import MultipartUpload, S3Objects

if TYPE_CHECKING:
    from .backend import S3Backend

__all__ = ["abort_stale_uploads", "drop_multipart", "multipart_entries"]

log = logging.getLogger(__name__)


def _blob_of(backend: S3Backend, key: str) -> Digest | None:
    """The digest whose final key ``key`` is, or None for any other key."""
    root = backend.key_of(backend.layout.blobs_root()).rstrip("/") + "/"
    if not key.startswith(root):
        return None
    return backend.layout.blob_digest_of(key[len(root) :])


def _ours(backend: S3Backend, upload: MultipartUpload) -> bool:
    work = backend.key_of(backend.work_path()) + "/"  # "<prefix>/_regstore/"
    return upload.key.startswith(work) or _blob_of(backend, upload.key) is not None


def _entry(backend: S3Backend, upload: MultipartUpload) -> StagingEntry:
    digest = _blob_of(backend, upload.key)
    active = digest is not None and backend.locks.is_held(backend.blob_lock_key(digest))
    return StagingEntry(
        StagingKind.MULTIPART,
        json.dumps([upload.key, upload.upload_id]),
        f"s3://{backend.bucket}/{upload.key} (multipart upload {upload.upload_id})",
        backend.objects.multipart_size(upload.key, upload.upload_id),
        upload.initiated,
        digest=None if digest is None else str(digest),
        active=active,
    )


def multipart_entries(backend: S3Backend) -> list[StagingEntry]:
    """The incomplete multipart uploads of this store, as staging entries."""
    prefix = f"{backend.prefix}/" if backend.prefix else ""
    uploads = backend.objects.list_multipart(prefix)
    return [_entry(backend, upload) for upload in uploads if _ours(backend, upload)]


def drop_multipart(backend: S3Backend, entry: StagingEntry) -> bool:
    """Abort the upload of ``entry`` unless a live writer holds its blob."""
    try:
        key, upload_id = json.loads(entry.key)
    except (ValueError, TypeError):
        raise ValueError(f"not a multipart upload entry: {entry.key!r}") from None
    if not isinstance(key, str) or not isinstance(upload_id, str):
        raise ValueError(f"not a multipart upload entry: {entry.key!r}")
    upload = MultipartUpload(key, upload_id, entry.mtime)
    if not _ours(backend, upload):
        raise ValueError(f"the multipart upload to {key} is not this store's")
    digest = _blob_of(backend, key)
    lock = None
    if digest is not None:
        lock = backend.locks.try_acquire(backend.blob_lock_key(digest))
        if lock is None:
            return False  # a writer is writing that blob right now
    try:
        backend.objects.abort_multipart(key, upload_id)  # gone already is fine
    finally:
        if lock is not None:
            lock.release()
    return True


def abort_stale_uploads(objects: S3Objects, final_key: str, *, quiet: bool = False) -> int:
    """Abort every incomplete multipart upload to ``final_key``; returns how many.

    Called by the writer that just made the blob at ``final_key`` visible, holding its lease:
    the uploads left are those of earlier writers that died while writing or committing, or
    a second one a retried CreateMultipartUpload made. Failures are logged (at debug level
    when ``quiet``: a writer that resumed nothing, whose listing mostly finds nothing and
    whose credentials may not allow it), not raised (the blob is committed; ``gc`` collects
    what is left).
    """
    aborted = 0
    try:
        for upload in objects.list_multipart(final_key):
            if upload.key == final_key:
                objects.abort_multipart(upload.key, upload.upload_id)
                aborted += 1
    except RegstoreError as exc:
        (log.debug if quiet else log.warning)(
            "could not abort stale multipart uploads to %s: %s", final_key, exc
        )
    if aborted:
        log.info("aborted %d stale multipart upload(s) to %s", aborted, final_key)
    return aborted
