"""Publishing a blob's staged part objects as its final object, by server-side copies.

A blob of several parts becomes visible through one multipart upload on its final key: every
staged part object is copied into it (``UploadPartCopy``, the server's work) and the upload is
completed once the facade verified the digest. Nothing is visible before the completion, and
an aborted upload leaves nothing behind.

The copies need not wait for the commit: a writer hands each full part to its
:class:`Promotion` as soon as the part is staged, so the server copies while the rest of the
blob is still arriving, and a commit only copies what is left and completes. (A blob of one
part is not promoted: its writer copies that object with ``CopyObject``.) On the test
server a 1 GiB blob in 5 MiB parts waited ~3 s for its 205 copies after the last byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from regstore.errors import StoreError

from .client import ObjectInfo, S3Objects

__all__ = ["COPY_AHEAD", "COPY_CONCURRENCY", "Promotion", "completed_anyway"]

log = logging.getLogger(__name__)

#: ``UploadPartCopy`` requests in flight while a commit waits for its copies: a commit of a
#: 1 GiB blob in 5 MiB parts waited for 205 copies one after another (6 s on the test server,
#: more on S3's longer round trips).
COPY_CONCURRENCY = 8
#: Copies in flight per writer while its blob is still arriving: enough to keep up with the
#: staging PUTs, few enough that the store's shared connection pool (botocore's 10) keeps room
#: for the PUTs and lease renewals of every writer.
COPY_AHEAD = 2


class Promotion:
    """The multipart upload that makes the staged ``parts`` of one blob the object ``final_key``.

    :meth:`copy_ahead` starts copies of the parts staged so far (at most COPY_AHEAD in flight)
    and returns at once; :meth:`finish` copies whatever is missing, waits for every copy, and
    completes the upload; :meth:`abort` drops the upload and everything copied into it. The
    upload is created by the first copy. Each copy names the part's ETag
    (``x-amz-copy-source-if-match``), so a part changed after it was staged fails the commit
    instead of being published.

    Copying ahead is an optimisation only: when it fails (the upload cannot be created, a copy
    fails), it stops, and :meth:`finish` copies again what is missing or failed, once.

    Not thread-safe: one writer drives it.
    """

    def __init__(self, objects: S3Objects, final_key: str) -> None:
        self._objects = objects
        self.final_key = final_key
        self.upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._copies: list[Future[str]] = []  #: one per part, in part order
        self._ahead = True  #: copying ahead still worth it (nothing failed so far)
        self._closed = False

    @property
    def copied(self) -> int:
        """How many parts have a copy started (parts 1 to this)."""
        return len(self._copies)

    def _submit(self, number: int, part: ObjectInfo) -> Future[str]:
        if self._closed:
            raise StoreError(f"the multipart upload to {self.final_key} was aborted")
        if self.upload_id is None:
            self.upload_id = self._objects.create_multipart(self.final_key)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(COPY_CONCURRENCY, thread_name_prefix="regstore-s3-copy")
        return self._pool.submit(
            self._objects.copy_part,
            self.final_key,
            self.upload_id,
            number,
            part.key,
            if_match=part.etag or None,
        )

    def copy_ahead(self, parts: list[ObjectInfo]) -> None:
        """Start copying the next of ``parts`` (all full parts staged so far, in order) while
        fewer than COPY_AHEAD copies are in flight. Never raises a store error: a failure
        stops the copying ahead and is left for :meth:`finish`."""
        if not self._ahead:
            return
        try:
            if any(_failed(f) for f in self._copies[-COPY_AHEAD:]):
                self._ahead = False  # finish() copies the failed ones again
                return
            pending = sum(1 for f in self._copies[-COPY_AHEAD:] if not f.done())
            while pending < COPY_AHEAD and self.copied < len(parts):
                self._copies.append(self._submit(self.copied + 1, parts[self.copied]))
                pending += 1
        except StoreError as exc:
            log.info("copying the parts of %s ahead stopped: %s", self.final_key, exc)
            self._ahead = False

    def finish(self, parts: list[ObjectInfo], before_complete: Callable[[], None]) -> None:
        """Copy the parts not copied yet, wait for all, call ``before_complete`` (the writer
        checks its lease there), and complete: ``final_key`` appears.

        ``parts`` are all the blob's parts in order, the ones already copied first. A copy that
        failed is tried once more; on any other failure the upload is aborted (nothing becomes
        visible) and the error raised.
        """
        try:
            if len(parts) < self.copied:
                raise StoreError(f"{self.final_key} lost staged parts before its commit")
            for number in range(self.copied + 1, len(parts) + 1):
                self._copies.append(self._submit(number, parts[number - 1]))
            etags: list[str] = []
            for number, future in enumerate(self._copies, start=1):
                try:
                    etags.append(future.result())
                except StoreError as exc:
                    log.info("copying part %d of %s again: %s", number, self.final_key, exc)
                    etags.append(self._submit(number, parts[number - 1]).result())
            assert self.upload_id is not None  # _submit made it
            before_complete()
            try:
                self._objects.complete_multipart(self.final_key, self.upload_id, etags)
            except StoreError:
                size = sum(p.size for p in parts)
                if not completed_anyway(self._objects, self.final_key, size, len(parts)):
                    raise
                log.info(
                    "the completion of %s failed in answer only: the object is whole",
                    self.final_key,
                )
            self.upload_id = None  # completed: nothing to abort
        except BaseException:
            self.abort()
            raise
        finally:
            self._stop(wait=True)

    def abort(self) -> None:
        """Drop the upload and its copies (errors are logged: the caller's own error, if any,
        matters more, and ``gc`` finds the upload)."""
        self._closed = True
        self._stop(wait=True)
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        try:
            self._objects.abort_multipart(self.final_key, upload_id)
        except Exception as exc:
            log.warning("could not abort the multipart upload %s: %s", upload_id, exc)

    def drop(self) -> None:
        """Cancel the copies not started, without a request (for a finaliser); the upload is
        left for a later writer of the blob or ``gc`` to abort."""
        self._closed = True
        self._stop(wait=False)

    def _stop(self, *, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def _failed(future: Future[str]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def completed_anyway(objects: S3Objects, final_key: str, size: int, count: int) -> bool:
    """True if ``final_key`` holds the completed upload of ``count`` parts and ``size`` bytes
    although the completion answered with an error.

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
    return found.size == size and found.etag.strip('"').endswith(f"-{count}")
