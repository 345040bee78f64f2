"""The direct write handle: a blob's parts go straight into the multipart upload of its key.

The S3 store's default way to write a blob (``staging=direct``). Each full part is sent once,
with ``UploadPart``, into one multipart upload on the blob's final key, and the commit
completes that upload after the facade verified the digest: the server takes every byte twice
(the part, then the completion). The other way (``staging=parts``, :mod:`regstore_s3.staging`)
stores each part as an object first and copies it into the upload, a third pass over every
byte; on a single-process S3 server (moto) each pass costs about the same (measured outside
the test suite: a 200 MiB blob took moto 3.4 CPU s that way and 2.0 this way).

What the staging prefix ``<root>/_regstore/uploads/<alg>/<hex>/`` holds meanwhile:

- ``upload``: a small JSON record of the upload (its id, and the number, size, ETag and
  SHA-256 of each part sent), written when the upload starts and again after every
  :data:`RECORD_EVERY` bytes of parts and on ``close``;
- ``tail``: the bytes of a blob closed before its first part was full (the whole blob is then
  still in one buffer), which the next writer takes back.

Resume. The parts of an incomplete upload cannot be read back, so a resumed write cannot
re-hash them: a writer that finds an upload reports ``current_size`` 0 and the bytes are sent
again from the start. The parts are not: a part whose bytes have the SHA-256 recorded for it,
and whose size and ETag the upload still lists, is kept as it is; any other part is uploaded
again under its number (which replaces it). So a resumed blob is read from its source again
but uploaded only where it is missing. A writer killed between two records loses the record
of up to :data:`RECORD_EVERY` bytes of parts plus one part (sent again), and the part being
filled; one killed between starting the upload and recording it leaves an upload that only
``gc`` finds.

Memory per writer: one part buffer, as with ``staging=parts``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

from regstore.errors import RegstoreError, StoreError

from .client import ObjectInfo
from .parts import MAX_PARTS
from .promotion import completed_anyway
from .staging import S3BlobWriter

if TYPE_CHECKING:
    from regstore.reference import Digest

    from .locks import S3Lease
    from .staging import S3PartStaging

__all__ = ["RECORD_EVERY", "RECORD_NAME", "TAIL_NAME", "S3DirectWriter", "SentPart"]

log = logging.getLogger(__name__)

RECORD_NAME = "upload"
TAIL_NAME = "tail"
#: The upload's record is written again once this many bytes of parts were sent since the
#: last time: about one small PUT per 64 MiB.
RECORD_EVERY = 64 * 1024 * 1024


@dataclass(frozen=True)
class SentPart:
    """One part in the blob's multipart upload, as its writer recorded it."""

    number: int
    size: int
    etag: str
    sha256: str  #: hex SHA-256 of the part's bytes


def _same_part(listed: tuple[int, str], recorded: SentPart) -> bool:
    """True if the upload lists ``recorded`` as it was sent (size, and ETag quotes aside)."""
    size, etag = listed
    return size == recorded.size and etag.strip('"') == recorded.etag.strip('"')


def _parse_record(data: bytes) -> tuple[str, dict[int, SentPart]]:
    """``(upload id, {number: part})`` of an ``upload`` record; ValueError if malformed."""
    record = json.loads(data)
    upload_id = record["upload_id"]
    if not isinstance(upload_id, str) or not upload_id:
        raise ValueError("no upload id")
    parts: dict[int, SentPart] = {}
    for item in record.get("parts", []):
        number, size, etag, digest = item
        if not (isinstance(number, int) and isinstance(size, int) and isinstance(etag, str)):
            raise ValueError(f"a malformed part: {item!r}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"a malformed part: {item!r}")
        parts[number] = SentPart(number, size, etag, digest)
    return upload_id, parts


class S3DirectWriter(S3BlobWriter):
    """The :class:`~regstore.storetypes.BlobWriteHandle` of ``staging=direct`` (see above).

    Shares the part buffer and sizing of :class:`~regstore_s3.staging.S3BlobWriter`; what
    differs is where a full part goes, how a write resumes and how the blob is committed.
    """

    def __init__(self, staging: S3PartStaging, digest: Digest, lock: S3Lease) -> None:
        super().__init__(staging, digest, lock)
        self._record_key = f"{self._prefix}{RECORD_NAME}"
        self._tail_key = f"{self._prefix}{TAIL_NAME}"
        self._upload_id: str | None = None
        self._has_tail = False  #: the staged tail object exists (taken back into the buffer)
        self._sent: list[SentPart] = []  #: the blob's parts so far, in order
        self._known: dict[int, SentPart] = {}  #: parts an earlier writer left in the upload
        self._recorded_at = 0  #: bytes of parts at the last record
        self._resume()
        self.current_size = self._filled

    # -- resuming ----------------------------------------------------------------------------

    def _staged_parts(self) -> tuple[list[ObjectInfo], bool]:
        return [], False  # no part objects: parts live in the upload; _resume reads the rest

    def _resume(self) -> None:
        """Take up what an earlier writer of the blob left: its upload, or its tail."""
        listed = {info.key: info for info in self._objects.list_objects(self._prefix)}
        if not listed:
            return
        # An earlier writer staged something, and may have started an upload to the blob's
        # key (this way or the other): the commit aborts whatever upload it does not take up.
        self._staging_used = self._resumed = True
        junk = [key for key in listed if key not in (self._record_key, self._tail_key)]
        if junk:  # staged by the other way of writing (staging=parts): not resumable here
            self._objects.delete_many(junk)
        if self._record_key in listed:
            # an upload supersedes a tail (the tail is what its writer had before it)
            if self._tail_key in listed:
                self._objects.delete(self._tail_key)
            self._take_upload()
            return
        tail = listed.get(self._tail_key)
        if tail is not None and tail.size:
            data = self._objects.read_range(tail.key, 0, tail.size, if_match=tail.etag or None)
            if len(data) != tail.size:
                raise StoreError(f"{self._what('resume')}: its staged tail changed")
            self._make_room(len(data))
            self._buffer[: len(data)] = data
            self._filled = len(data)
            self._has_tail = True

    def _take_upload(self) -> None:
        """Adopt the upload named by the record, keeping the parts it still holds as recorded;
        delete the record if there is none to adopt (the commit aborts whatever it named)."""
        found = self._objects.get(self._record_key)
        if found is not None:
            try:
                upload_id, recorded = _parse_record(found[0])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: ignoring its damaged upload record: %s", self._what("resume"), exc)
            else:
                listed = self._objects.list_parts(self._final_key(), upload_id)
                if listed is not None:
                    self._upload_id = upload_id
                    self._known = {
                        n: part
                        for n, part in recorded.items()
                        if n in listed and _same_part(listed[n], part)
                    }
                    return
        self._objects.delete(self._record_key)

    # -- writing -----------------------------------------------------------------------------

    def _copy_ahead(self) -> None:
        pass  # parts go straight into the upload: nothing to copy

    def _send_buffer(self) -> None:
        """Send the buffered bytes as the next part of the upload, unless the upload already
        holds exactly these bytes under that number (a resumed write)."""
        number = len(self._sent) + 1
        if number > MAX_PARTS:
            raise StoreError(f"{self._what('write')}: more than {MAX_PARTS} parts")
        body = self._buffered()
        digest = hashlib.sha256(body).hexdigest()
        known = self._known.pop(number, None)
        if known is not None and known.size == len(body) and known.sha256 == digest:
            sent = known
        else:
            if self._upload_id is None:
                self._start_upload()
            assert self._upload_id is not None
            etag = self._objects.upload_part(self._final_key(), self._upload_id, number, body)
            sent = SentPart(number, len(body), etag, digest)
        self._sent.append(sent)
        self._staged += sent.size
        self._filled = 0
        if self._staged - self._recorded_at >= RECORD_EVERY:
            self._record()

    def _start_upload(self) -> None:
        self._upload_id = self._objects.create_multipart(self._final_key())
        self._staging_used = True
        self._record()  # from now on a later writer finds the upload
        if self._has_tail:  # taken back into the buffer, now in the upload's first part
            self._objects.delete(self._tail_key)
            self._has_tail = False

    def _record(self) -> None:
        if self._lock is None or self._lock.lost:
            return  # the blob may be another writer's now: its record is not ours to replace
        # parts an earlier writer sent further on stay recorded until they are sent again
        ahead = [part for number, part in sorted(self._known.items()) if number > len(self._sent)]
        record = {
            "upload_id": self._upload_id,
            "parts": [list(astuple(part)) for part in [*self._sent, *ahead]],
        }
        self._objects.put(self._record_key, json.dumps(record).encode())
        self._recorded_at = self._staged

    # -- the BlobWriteHandle protocol --------------------------------------------------------

    def commit(self, size: int) -> None:
        """Complete the upload (or PUT a blob that never left the buffer): the verified blob
        appears whole; then drop the record and the tail, and the lease.

        On failure the upload and its record stay for a later writer, the lease is released
        and StoreError is raised; nothing is visible at the final key.
        """
        lock = self._held()
        try:
            total = self._staged + self._filled
            if total != size:
                self._abort_upload()
                self._cleanup_staging()
                raise StoreError(f"{self._what('commit')}: {total} bytes were staged, not {size}")
            final_key = self._final_key()
            if self._upload_id is None:
                lock.check()  # the whole blob is in memory (at most one part): one atomic PUT
                self._objects.put(final_key, self._buffered())
            else:
                try:
                    if self._filled or not self._sent:
                        self._send_buffer()  # the last part may be short
                    lock.check()
                    self._complete(final_key)
                except BaseException:
                    self._record_quietly()  # what was sent, for a later writer
                    raise
            self._after_publish(final_key)
        finally:
            self._release()

    def _went_multipart(self) -> bool:
        return bool(self._sent)  # parts were sent: an upload was created (and completed)

    def _complete(self, final_key: str) -> None:
        assert self._upload_id is not None
        try:
            self._objects.complete_multipart(
                final_key, self._upload_id, [part.etag for part in self._sent]
            )
        except StoreError:
            size = sum(part.size for part in self._sent)
            if not completed_anyway(self._objects, final_key, size, len(self._sent)):
                raise
            log.info("the completion of %s failed in answer only: the object is whole", final_key)
        self._upload_id = None

    def _record_quietly(self) -> None:
        """Record the parts sent for a later writer; a failure here must not hide the caller's."""
        if self._upload_id is None:
            return
        try:
            self._record()
        except RegstoreError as exc:
            log.warning("%s: %s", self._what("record the upload of"), exc)

    def close(self) -> None:
        """Release the lease, keeping what was sent for a later writer: the upload and its
        record, or (when the blob never filled a part) the buffer as the staged tail."""
        try:
            # (a writer frozen past its lease must not replace the new writer's record or tail)
            if self._lock is not None and self._lock.still_held():
                if self._upload_id is not None:
                    self._record()  # the part being filled is lost: it is sent again
                elif self._filled:
                    self._objects.put(self._tail_key, self._buffered())
                    self._staging_used = True
        finally:
            self._release()

    def discard(self) -> None:
        """Abort the upload, delete the record and the tail, and release the lease."""
        try:
            self._filled = 0
            if self._lock is not None and not self._lock.lost:
                self._abort_upload()
                self._staging.discard(self.digest)
        finally:
            self._release()

    def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            self._objects.abort_multipart(self._final_key(), upload_id)

    def __repr__(self) -> str:
        return (
            f"S3DirectWriter({self.digest}, upload={self._upload_id}, parts={len(self._sent)}, "
            f"buffered={self._filled})"
        )
