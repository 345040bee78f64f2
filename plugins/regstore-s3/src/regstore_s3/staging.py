"""The S3 store's staging, and its ``staging=parts`` write handle: numbered part objects.

The default way of writing a blob (``staging=direct``) sends its parts straight into the
final upload (:mod:`regstore_s3.direct`, whose handle shares this one's part buffer). With
``staging=parts``, a blob being written lives under ``<root>/_regstore/uploads/<alg>/<hex>/``
as one object per multipart part::

    part-00001   part-00002   ...   part-NNNNN

Every part but the last is at least 5 MiB (S3's minimum multipart part), so the parts become,
by server-side ``UploadPartCopy``, the parts of one multipart upload on the final key
(:mod:`regstore_s3.promotion`). The copies start while the blob is still being written, as soon
as a second part shows that the blob needs an upload; the upload is completed only after the
facade verified the digest, which is the moment the blob appears, whole. A blob that fits in
one part is copied (or, if it never left memory, PUT) to its final key instead. Afterwards the
staging objects are deleted.

Why parts as objects rather than one long-lived multipart upload: the parts of an in-flight
upload cannot be read back, and a resumed write must re-hash what was staged before it
continues (:meth:`regstore.storetypes.BlobWriteHandle.staged`). Staged part objects can be read,
survive the writer's process, and are listed to learn ``current_size``.

Resume granularity: the bytes of the part being filled live in memory until the part is full
(or the writer is closed, which stores them as a short last part that the next writer takes
back into its buffer). A process that is killed loses at most that one part; everything before
it is resumed. Memory per writer: one part buffer, plus one copy of it while it is sent. The
copies made ahead by a writer that stops are lost with its upload: a later writer copies its
parts again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from regstore.backends.kit import BlobLock, FsspecStagingArea, StagingEntry, StagingKind
from regstore.digest import CHUNK_SIZE
from regstore.errors import RegstoreError, StoreError
from regstore.reference import Digest

from .client import ObjectInfo, PreconditionFailed
from .leftovers import abort_stale_uploads, drop_multipart, multipart_entries
from .locks import LeaseLostError, S3Lease
from .parts import MAX_PARTS, MIN_PART_SIZE, choose_part_size
from .promotion import Promotion

if TYPE_CHECKING:
    from .backend import S3Backend

__all__ = [
    "PART_PREFIX",
    "STAGING_MODES",
    "S3BlobWriter",
    "S3PartStaging",
    "part_name",
    "valid_parts",
]

log = logging.getLogger(__name__)

PART_PREFIX = "part-"
#: The ways a blob can be written (the store's ``staging`` option); the first is the default.
STAGING_MODES = ("direct", "parts")
#: The part buffer starts this small and doubles up to _MAX_GROWTH, then takes the part size.
_MIN_BUFFER = 64 * 1024
_MAX_GROWTH = 1024 * 1024
_PART = re.compile(r"part-(\d{5})")


def part_name(number: int) -> str:
    """The object name of part ``number`` (1-based) inside a blob's staging prefix."""
    if not 1 <= number <= MAX_PARTS:
        raise StoreError(f"a blob cannot be staged in more than {MAX_PARTS} parts")
    return f"{PART_PREFIX}{number:05d}"


def valid_parts(listed: list[ObjectInfo], prefix: str) -> tuple[list[ObjectInfo], list[str]]:
    """Split the objects listed under a staging prefix into the usable parts and the rest.

    Usable: ``part-00001`` ... ``part-N`` without a gap, each but the last at least 5 MiB.
    Anything after a gap or a short middle part (which no writer of this module leaves) and
    any foreign object are returned as keys to delete.
    """
    numbered: dict[int, ObjectInfo] = {}
    junk: list[str] = []
    for info in listed:
        match = _PART.fullmatch(info.key[len(prefix) :])
        if match is None:
            junk.append(info.key)
        else:
            numbered[int(match.group(1))] = info
    usable: list[ObjectInfo] = []
    number = 1
    while number in numbered:
        info = numbered.pop(number)
        usable.append(info)
        number += 1
        if info.size < MIN_PART_SIZE:
            break  # only the last part may be short
    junk.extend(info.key for info in numbered.values())
    return usable, junk


class S3PartStaging(FsspecStagingArea):
    """The S3 store's staging part: part objects under the blob's staging prefix, published by
    a :class:`~regstore_s3.promotion.Promotion`; its own write handle (:class:`S3BlobWriter`).
    Besides the staged parts it lists and aborts the incomplete multipart uploads a writer
    killed while writing or committing leaves (:mod:`regstore_s3.leftovers`).

    ``part_size`` is the multipart part size in bytes; None derives it per blob. ``mode`` is
    how blobs are written: ``"direct"`` (parts straight into the final upload,
    :class:`~regstore_s3.direct.S3DirectWriter`) or ``"parts"`` (part objects copied into it,
    :class:`S3BlobWriter`). Either reads what the other left: the bytes it can resume, the rest
    is deleted.
    """

    store: S3Backend

    def __init__(self, part_size: int | None = None, mode: str = "direct") -> None:
        if mode not in STAGING_MODES:
            raise ValueError(f"staging must be one of {', '.join(STAGING_MODES)}, not {mode!r}")
        self.part_size = part_size
        self.mode = mode

    def prefix(self, digest: Digest) -> str:
        """The key prefix (ending in ``/``) of a blob's staged parts."""
        return self.store.key_of(self.store.staging_path(digest)) + "/"

    def scan(self, digest: Digest) -> tuple[list[ObjectInfo], bool]:
        """The usable staged parts of ``digest``, in order (see :func:`valid_parts`), and
        whether anything at all was staged.

        Objects that cannot be resumed (after a gap, foreign names, what ``staging=direct``
        leaves) are deleted: only a writer, which holds the blob's lock, calls this.
        """
        prefix = self.prefix(digest)
        listed = self.store.objects.list_objects(prefix)
        usable, junk = valid_parts(listed, prefix)
        if junk:
            self.store.objects.delete_many(junk)
        return usable, bool(listed)

    def staged_size(self, digest: Digest) -> int:
        """The bytes a writer of ``digest`` would resume from (its ``current_size``)."""
        from .direct import RECORD_NAME, TAIL_NAME

        prefix = self.prefix(digest)
        listed = self.store.objects.list_objects(prefix)
        names = {info.key[len(prefix) :]: info for info in listed}
        if self.mode == "direct":
            # an upload's parts cannot be re-read: its writer starts again from 0
            tail = names.get(TAIL_NAME)
            return 0 if RECORD_NAME in names or tail is None else tail.size
        usable, _ = valid_parts(listed, prefix)
        return sum(p.size for p in usable)

    def writer(self, digest: Digest, lock: BlobLock) -> S3BlobWriter:
        if not isinstance(lock, S3Lease):
            raise StoreError(f"S3 blob writers need an S3 lease, not {lock!r}")
        if self.mode == "direct":
            from .direct import S3DirectWriter

            return S3DirectWriter(self, digest, lock)
        return S3BlobWriter(self, digest, lock)

    def discard(self, digest: Digest) -> None:
        keys = [info.key for info in self.store.objects.list_objects(self.prefix(digest))]
        self.store.objects.delete_many(keys)

    def entries(self) -> list[StagingEntry]:
        return [*super().entries(), *multipart_entries(self.store)]

    def drop_entry(self, entry: StagingEntry) -> bool:
        if entry.kind is StagingKind.MULTIPART:
            return drop_multipart(self.store, entry)
        return super().drop_entry(entry)


class S3BlobWriter:
    """The :class:`~regstore.storetypes.BlobWriteHandle` of an S3 store.

    Holds the blob's lease from creation until commit, close or discard. ``set_size`` (called
    by a facade that knows the declared size) lets the part size be derived from the blob size;
    without it parts grow with the bytes written (see :mod:`regstore_s3.parts`).

    Memory: one part buffer, grown to the part size as bytes arrive and then reused for every
    part (it is streamed as the request body, without copies), plus small HTTP buffers. From
    the second part on, a :class:`~regstore_s3.promotion.Promotion` copies the staged parts
    into the final upload from a few threads of its own.
    """

    def __init__(self, staging: S3PartStaging, digest: Digest, lock: S3Lease) -> None:
        self._staging = staging
        self._backend = backend = staging.store
        self._objects = backend.objects
        self.digest = digest
        self._lock: S3Lease | None = lock
        self._prefix = staging.prefix(digest)
        parts, found = self._staged_parts()
        self._parts: list[ObjectInfo] = parts
        self._buffer = bytearray()  #: capacity of the part being filled
        self._filled = 0  #: bytes of it holding data
        self._adopted = False
        self._size: int | None = None
        #: staging objects may exist (resumed, or a part was sent): clean them up on the way out
        self._staging_used = bool(self._parts)
        #: an earlier writer staged something: it may have left an upload (see commit)
        self._resumed = found
        self._staged = sum(p.size for p in self._parts)  #: bytes in self._parts
        self.current_size: int = self._staged
        self._part_size = 0
        self._part_size_for: tuple[int | None, int] | None = None
        #: the final key's upload, copying full parts while the rest is written
        self._promotion: Promotion | None = None

    # -- helpers -----------------------------------------------------------------------------

    def _staged_parts(self) -> tuple[list[ObjectInfo], bool]:
        """The part objects an earlier writer staged, and whether it staged anything (read
        once, by the constructor)."""
        return self._staging.scan(self.digest)

    def _what(self, verb: str) -> str:
        return f"cannot {verb} blob {self.digest} in {self._backend.url}"

    def _held(self) -> S3Lease:
        lock = self._lock
        if lock is None:
            raise StoreError(f"blob {self.digest} is closed for writing")
        if lock.lost:
            lock.check()  # raises LeaseLostError
        return lock

    def _release(self) -> None:
        promotion, self._promotion = self._promotion, None
        try:
            if promotion is not None:
                promotion.abort()  # a finished one holds nothing
        finally:
            lock, self._lock = self._lock, None
            self._buffer, self._filled = bytearray(), 0
            if lock is not None:
                lock.release()

    @property
    def part_size(self) -> int:
        """The size of the part being filled (fixed per declared size and staged bytes)."""
        key = (self._size, self._staged)
        if self._part_size_for != key:
            self._part_size = choose_part_size(self._size, self._staging.part_size, self._staged)
            self._part_size_for = key
        return self._part_size

    def _make_room(self, needed: int) -> int:
        """Make room for up to ``needed`` more bytes in the part; returns how many fit.

        The buffer starts small and doubles up to the part size (a small blob never costs a
        whole part of memory); once a part has been sent at full size the buffer is reused.
        """
        part_size = max(self.part_size, self._filled)
        capacity = len(self._buffer)
        if capacity > part_size and self._filled == 0:
            self._buffer = bytearray(part_size)  # the part size changed (declared size)
            capacity = part_size
        wanted = min(part_size, self._filled + needed)
        if wanted > capacity:
            size = max(_MIN_BUFFER, capacity)
            while size < wanted:
                size *= 2
            if size > _MAX_GROWTH:  # past 1 MiB go straight to the part size: one more copy
                size = part_size
            size = min(size, part_size)
            buffer = bytearray(size)
            buffer[: self._filled] = memoryview(self._buffer)[: self._filled]
            self._buffer = buffer
            capacity = size
        return min(needed, part_size - self._filled, capacity - self._filled)

    @property
    def _part_full(self) -> bool:
        return self._filled >= self.part_size

    def _buffered(self) -> bytes | bytearray:
        """The buffered bytes as a request body: the buffer itself when it is exactly full."""
        if self._filled == len(self._buffer):
            return self._buffer
        return bytes(memoryview(self._buffer)[: self._filled])

    def _adopt_tail(self) -> None:
        """Take a short last part (left by ``close``) back into the buffer, once.

        Every part but the last must be at least 5 MiB; a short last part must therefore grow
        before another part follows it. Its object stays until it is overwritten by the full
        part of the same number, so a crash meanwhile loses nothing.
        """
        if self._adopted:
            return
        if not self._parts or self._parts[-1].size >= MIN_PART_SIZE:
            self._adopted = True
            return
        tail = self._parts[-1]
        data = self._objects.read_range(tail.key, 0, tail.size, if_match=tail.etag or None)
        if len(data) != tail.size:
            raise StoreError(f"staged part {tail.key} changed while resuming")
        self._adopted = True  # only now: after a failed read the tail is still to take back
        self._parts.pop()
        self._staged -= tail.size
        self._filled = 0
        self._make_room(len(data))
        self._buffer[: len(data)] = data
        self._filled = len(data)

    def _is_last_part(self) -> bool:
        """True when the declared size says the buffer ends the blob (commit sends it: as the
        whole blob in one PUT when nothing else was staged)."""
        if self._size is None:
            return False
        return self._staged + self._filled >= self._size

    def _send_buffer(self) -> None:
        """Store the buffered bytes as the next part; the buffer is then reused."""
        number = len(self._parts) + 1
        key = f"{self._prefix}{part_name(number)}"
        body = self._buffered()
        self._staging_used = True
        etag = self._objects.put(key, body)
        self._parts.append(ObjectInfo(key, len(body), etag, 0.0))
        self._staged += len(body)
        self._filled = 0

    def _next_part(self) -> None:
        """Send the full buffer as the next part (and start its copies), once the lease is
        checked: renewed first when half of it has passed. A writer that was frozen past its
        lease (a stopped process, a suspended machine) learns here that another writer took
        the blob, before it sends a part into staging or an upload that writer's commit
        discarded."""
        lock = self._held()
        if not lock.still_held():
            lock.check()  # raises LeaseLostError, saying why
        self._send_buffer()
        self._copy_ahead()

    def _final_key(self) -> str:
        return self._backend.key_of(self._backend.final_blob_path(self.digest))

    def _copy_ahead(self) -> None:
        """Start the server-side copies of the full parts staged so far.

        From the second part on the blob needs a multipart upload: its parts are copied into it
        while the rest of the blob arrives, and the commit only waits for the last ones.
        """
        if len(self._parts) < 2:
            return
        if self._promotion is None:
            self._promotion = Promotion(self._objects, self._final_key())
        self._promotion.copy_ahead(self._parts)

    def _check_parts_unchanged(self) -> None:
        """Refuse to publish parts that changed since this writer hashed or sent them.

        The copies also carry ``x-amz-copy-source-if-match``; this listing catches endpoints
        that ignore that header (moto, some S3 clones) at the cost of one request.
        """
        listed = {info.key: info for info in self._objects.list_objects(self._prefix)}
        for part in self._parts:
            found = listed.get(part.key)
            if (
                found is None
                or found.size != part.size
                or (part.etag and found.etag and found.etag != part.etag)
            ):
                raise StoreError(
                    f"{self._what('commit')}: staged part {part.key} changed behind the writer "
                    "(another writer after a lost lease?); the commit is refused"
                )

    def _cleanup_staging(self) -> None:
        if self._staging_used:
            self._staging.discard(self.digest)

    # -- the BlobWriteHandle protocol --------------------------------------------------------

    def set_size(self, size: int) -> None:
        """The declared full size of the blob (for the part size; the facade verifies it)."""
        self._size = size if size >= 0 else None

    def write(self, data: bytes | memoryview, /) -> int:
        self._held()
        view = memoryview(data).cast("B")
        try:
            self._adopt_tail()
            while view:
                if self._part_full:
                    self._next_part()
                count = self._make_room(len(view))
                self._buffer[self._filled : self._filled + count] = view[:count]
                self._filled += count
                view = view[count:]
                if self._part_full and not self._is_last_part():
                    self._next_part()
        except LeaseLostError:
            raise
        except RegstoreError as exc:
            # a part refused because the blob is another writer's now (its commit ended the
            # upload this one copied into) says so, not what the refusal looked like
            lock = self._lock
            if lock is not None and not lock.still_held():
                try:
                    lock.check()  # raises LeaseLostError, saying why
                except LeaseLostError as lost:
                    raise lost from exc
            raise
        except Exception as exc:  # pragma: no cover - S3Objects translates its own errors
            raise StoreError(f"{self._what('write')}: {exc}") from exc
        return len(data)

    def staged(self) -> Iterator[bytes]:
        """The bytes written so far, from the start: staged parts, then the buffer."""
        self._held()
        for part in list(self._parts):
            for start in range(0, part.size, CHUNK_SIZE):
                end = min(start + CHUNK_SIZE, part.size)
                try:
                    chunk = self._objects.read_range(
                        part.key, start, end, if_match=part.etag or None
                    )
                except PreconditionFailed as exc:
                    raise StoreError(
                        f"{self._what('resume')}: staged part {part.key} changed"
                    ) from exc
                yield chunk
        if self._filled:
            yield bytes(memoryview(self._buffer)[: self._filled])

    def commit(self, size: int) -> None:
        """Publish the verified blob atomically, then drop its staging and the lease.

        On failure the staged parts stay (a later writer resumes them), the lease is released
        and StoreError is raised; nothing is visible at the final key.
        """
        lock = self._held()
        try:
            self._adopt_tail()
            total = self._staged + self._filled
            if total != size:
                self._cleanup_staging()
                raise StoreError(f"{self._what('commit')}: {total} bytes were staged, not {size}")
            final_key = self._final_key()
            if not self._parts:
                # The whole blob is in memory (at most one part): one atomic PUT.
                lock.check()
                self._objects.put(final_key, self._buffered())
            else:
                if self._filled:
                    self._send_buffer()  # the last part may be short
                self._check_parts_unchanged()
                lock.check()
                if len(self._parts) == 1:
                    only = self._parts[0]
                    self._objects.copy(only.key, final_key, if_match=only.etag or None)
                else:
                    if self._promotion is None:  # nothing was copied ahead
                        self._promotion = Promotion(self._objects, final_key)
                    # the copies may take a while yet: the lease is checked again after them
                    self._promotion.finish(self._parts, before_complete=lock.check)
                    self._promotion = None
            self._after_publish(final_key)
        finally:
            self._release()

    def _after_publish(self, final_key: str) -> None:
        """Once the blob is visible: drop its staging, and the uploads earlier writers left."""
        try:
            self._cleanup_staging()
        except RegstoreError as exc:  # the blob is committed; leftovers are harmless
            log.warning("%s: %s", self._what("clean up the staging of"), exc)
        if self._resumed or self._went_multipart():
            # The writer whose staging we found may have died after starting its multipart
            # upload: nobody will ever complete it (we hold the lease), so the re-run aborts
            # it, and any other upload to this key. (A writer that staged nothing started none.)
            # So does a writer that completed an upload of its own: a CreateMultipartUpload
            # retried after a read timeout (a stalled server) may have created a second,
            # empty one, that nothing would ever complete or abort.
            # (a failure to list them is worth a warning only where a dead writer's are likely)
            abort_stale_uploads(self._objects, final_key, quiet=not self._resumed)

    def _went_multipart(self) -> bool:
        """Whether this writer's commit completed a multipart upload (of two parts or more:
        one part is copied, the whole blob in memory is put)."""
        return len(self._parts) >= 2

    def close(self) -> None:
        """Release the lease, keeping every written byte staged for a later writer.

        The buffer is stored as a (possibly short) last part; the next writer takes a short
        last part back into its buffer before adding to it.
        """
        try:
            # (a writer frozen past its lease must not overwrite the new writer's part)
            if self._lock is not None and self._filled and self._lock.still_held():
                self._send_buffer()
        finally:
            self._release()

    def discard(self) -> None:
        """Delete every staged part and release the lease."""
        try:
            self._filled = 0
            promotion, self._promotion = self._promotion, None
            if promotion is not None:
                promotion.abort()  # before its parts go
            if self._lock is not None and not self._lock.lost:
                self._staging.discard(self.digest)
        finally:
            self._release()

    def __del__(self) -> None:
        # Dropped without close(): stop renewing the lease so the blob frees itself, and stop
        # the copies not started (its upload is left for a later writer or gc to abort).
        promotion = getattr(self, "_promotion", None)
        if promotion is not None:
            self._promotion = None
            promotion.drop()
        lock = getattr(self, "_lock", None)
        if lock is not None:
            self._lock = None
            lock.abandon()  # no request from a finaliser: the lease just runs out

    def __repr__(self) -> str:
        return f"S3BlobWriter({self.digest}, parts={len(self._parts)}, buffered={self._filled})"
