"""Publishing a blob's staged part objects as its final object, by server-side copies.

A blob of several parts becomes visible through one multipart upload on its final key: every
staged part object is copied into it (``UploadPartCopy``, the server's work) and the upload is
completed once the facade verified the digest. Nothing is visible before the completion, and
an aborted upload leaves nothing behind.

The copies need not wait for the commit: a writer hands each full part to its
:class:`Promotion` as soon as the part is staged, so the server copies while the rest of the
blob is still arriving, and a commit only copies the last part and completes. On the test
server a 1 GiB blob in 5 MiB parts waited ~3 s for its 205 copies after the last byte.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from regstore.errors import RegstoreError, StoreError

from .client import ObjectInfo, S3Objects

__all__ = ["COPY_CONCURRENCY", "Promotion", "promote_parts"]

log = logging.getLogger(__name__)

#: ``UploadPartCopy`` requests in flight: a commit of a 1 GiB blob in 5 MiB parts waited for
#: 205 copies one after another (6 s on the test server, more on S3's longer round trips).
COPY_CONCURRENCY = 8


class Promotion:
    """The multipart upload that makes the staged ``parts`` of one blob the object ``final_key``.

    :meth:`copy` starts the copy of part ``number`` (in order, from 1) and returns at once;
    :meth:`finish` copies whatever is missing, waits for every copy, and completes the upload;
    :meth:`abort` drops the upload and everything copied into it. The upload is created by the
    first copy. Each copy names the part's ETag (``x-amz-copy-source-if-match``), so a part
    changed after it was staged fails the commit instead of being published.

    Not thread-safe: one writer drives it.
    """

    def __init__(self, objects: S3Objects, final_key: str) -> None:
        self._objects = objects
        self.final_key = final_key
        self.upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._copies: list[Future[str]] = []  #: one per part, in part order

    @property
    def copied(self) -> int:
        """How many parts have a copy started (parts 1 to this)."""
        return len(self._copies)

    def copy(self, number: int, part: ObjectInfo) -> None:
        """Start copying the staged object ``part`` as part ``number`` (the next one)."""
        if number != len(self._copies) + 1:
            raise StoreError(f"part {number} of {self.final_key} is copied out of order")
        if self.upload_id is None:
            self.upload_id = self._objects.create_multipart(self.final_key)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(COPY_CONCURRENCY, thread_name_prefix="regstore-s3-copy")
        upload_id = self.upload_id
        self._copies.append(
            self._pool.submit(
                self._objects.copy_part,
                self.final_key,
                upload_id,
                number,
                part.key,
                if_match=part.etag or None,
            )
        )

    def finish(self, parts: list[ObjectInfo]) -> None:
        """Copy the parts not copied yet, wait for all, and complete: ``final_key`` appears.

        ``parts`` are all the blob's parts in order, the ones already handed to :meth:`copy`
        first. On any failure the upload is aborted (nothing becomes visible) and the error
        raised.
        """
        try:
            if len(parts) < self.copied:
                raise StoreError(f"{self.final_key} lost staged parts before its commit")
            for number in range(self.copied + 1, len(parts) + 1):
                self.copy(number, parts[number - 1])
            etags = [future.result() for future in self._copies]
            assert self.upload_id is not None  # copy() made it
            try:
                self._objects.complete_multipart(self.final_key, self.upload_id, etags)
            except StoreError:
                if not _completed_anyway(self._objects, parts, self.final_key):
                    raise
                log.info(
                    "the completion of %s failed in answer only: the object is whole",
                    self.final_key,
                )
        except BaseException:
            self.abort()
            raise
        self._stop(wait=True)

    def abort(self) -> None:
        """Drop the upload and its copies (errors are logged: the caller's own error, if any,
        matters more, and ``gc`` finds the upload)."""
        self._stop(wait=True)
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        try:
            self._objects.abort_multipart(self.final_key, upload_id)
        except RegstoreError as exc:
            log.warning("could not abort the multipart upload %s: %s", upload_id, exc)

    def _stop(self, *, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def promote_parts(objects: S3Objects, parts: list[ObjectInfo], final_key: str) -> None:
    """Make the staged ``parts`` the object ``final_key``, atomically, by server-side copies.

    One part: ``CopyObject``. Several: a :class:`Promotion` copies them all and completes.
    """
    if len(parts) == 1:
        objects.copy(parts[0].key, final_key, if_match=parts[0].etag or None)
        return
    Promotion(objects, final_key).finish(parts)


def _completed_anyway(objects: S3Objects, parts: list[ObjectInfo], final_key: str) -> bool:
    """True if ``final_key`` holds the completed upload of ``parts`` although the completion
    answered with an error.

    S3 completes an upload once: when the answer is lost (a timeout, a cut connection, a 5xx
    after the work was done), the client's retry finds the upload gone (``NoSuchUpload``).
    The object is then there, with the multipart ETag ``"<md5>-N"`` of N parts and the staged
    size. Blobs are content-addressed and written under the blob's lease, so such an object is
    the blob this writer verified.
    """
    try:
        found = objects.head(final_key)
    except StoreError:
        return False
    if found is None:
        return False
    return found.size == sum(p.size for p in parts) and found.etag.strip('"').endswith(
        f"-{len(parts)}"
    )
