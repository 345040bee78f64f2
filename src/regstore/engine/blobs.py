"""Moving one blob: into a store (verified, resumable) or up to a registry (resumable).

Sources are *openers*: ``opener(offset)`` returns a stream starting at ``offset`` (or earlier,
when a server ignored the Range header; its ``offset`` attribute tells). Both a registry blob
GET and a store layer reader are sources, so the same two functions serve pull, push and copy.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

from regstore.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    BlobUploadInvalidRangeError,
    BlobUploadNotFoundError,
    DigestMismatchError,
    InterruptedTransferError,
    LayerAlreadyExistsError,
    LayerLockedError,
    RegistryError,
    StoreError,
    TransportError,
    UnexpectedHTTPStatusError,
    UnsupportedError,
)
from regstore.events import EventKind
from regstore.reference import Digest
from regstore.retry import RetryBudget, RetryPolicy, is_transient
from regstore.store import LayerWriter, ObjectStore
from regstore.wire import BlobSource, UploadSession

from . import interrupt
from .model import RegistryClient
from .options import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD
from .reporting import Reporter

__all__ = [
    "BUFFER_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MONOLITHIC_THRESHOLD",
    "BlobMove",
    "Opener",
    "pull_budget",
    "retried",
    "store_blob",
    "upload_blob",
]

log = logging.getLogger("regstore.engine")

Opener = Callable[[int], BlobSource]
#: Bytes read per call on the hot path: large, so per-chunk Python costs vanish.
BUFFER_SIZE = 4 << 20
#: Blobs (or remainders) this large are read ahead by a thread of their own (``_ReadAhead``).
PIPELINE_THRESHOLD = 16 << 20
#: Buffers of a read-ahead thread (of BUFFER_SIZE / PIPELINE_DEPTH bytes for a pull): one
#: being filled while the caller hashes and writes the other (a third bought nothing
#: measurable; RSS is bounded to 100 MiB even into S3, whose client alone takes ~65 MiB).
PIPELINE_DEPTH = 2
#: Uploads of at least this many bytes (left) read their source ahead (``_ReadAhead``), in
#: PIPELINE_DEPTH buffers of READ_AHEAD_BUFFER bytes (a body is sent in 1 MiB pieces): small
#: blobs need no thread, and a 10 MiB layer already costs what a 1 GiB one does.
READ_AHEAD_THRESHOLD = 8 << 20
READ_AHEAD_BUFFER = 1 << 20
#: A download's retry budget grows by two per this many bytes of the blob.
RETRY_SPAN = 32 << 20
#: A chunked push's budget grows by two per chunk after the first, or per this many bytes of
#: a larger chunk: the budget a 1 GiB push had in 128 MiB chunks, whatever the chunk size.
PUSH_RETRY_SPAN = 128 << 20


@dataclass(frozen=True)
class BlobMove:
    """What happened to one blob: how it was handled and how many bytes crossed."""

    digest: str
    status: Literal["transferred", "skipped", "mounted"]
    nbytes: int = 0


def _skip_bytes(source: BlobSource, count: int, buffer: bytearray) -> None:
    """Read and drop ``count`` bytes (a server that ignored our Range header)."""
    view = memoryview(buffer)
    while count > 0:
        n = source.readinto(view[: min(count, len(view))])
        if n == 0:
            raise TransportError("blob stream ended while skipping already-stored bytes")
        count -= n


class _Scratch:
    """A read buffer allocated on first use: a pipelined blob reads into its reader thread's
    own buffers and never needs this one (BUFFER_SIZE less memory per blob in flight)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffer: bytearray | None = None

    def get(self) -> bytearray:
        if self._buffer is None:
            self._buffer = bytearray(self.size)
        return self._buffer


def check_stated_size(source: BlobSource, digest: str, size: int) -> None:
    """Raise DigestMismatchError when ``source`` states a whole size other than ``size`` (its
    descriptor's, -1: unknown): a registry whose blob is shorter than the manifest says, or
    that sends it encoded, answers alike however often it is asked, so this is no transient
    failure to retry."""
    stated = source.size
    if size >= 0 and stated is not None and stated >= 0 and stated != size:
        raise DigestMismatchError(
            f"blob {digest} as its source serves it",
            expected=str(digest),
            expected_size=size,
            actual_size=stated,
        )


def _open_at(opener: Opener, offset: int, skip_buffer: Callable[[], bytearray]) -> BlobSource:
    source = opener(offset)
    start = source.offset
    if start > offset:
        source.close()
        raise TransportError(f"source stream starts at {start}, after the wanted offset {offset}")
    if start < offset:
        _skip_bytes(source, offset - start, skip_buffer())
    return source


@dataclass
class _Fill:
    """How one writer was filled: bytes moved, and whether any source started mid-blob."""

    moved: int = 0
    resumed: bool = False


def _fill(
    writer: LayerWriter,
    digest: str,
    size: int,
    opener: Opener,
    reporter: Reporter,
    media_type: str,
    fill: _Fill,
    budget: RetryBudget,
) -> None:
    """Stream into ``writer`` until ``size`` bytes are stored (``size`` -1: until the source
    ends), then commit; ``fill`` counts what happened, also when this raises.

    A transient failure (a body cut short, a broken connection, a 5xx/429 the transport's
    retries did not outlast) spends a retry of ``budget`` and the source is reopened where
    the staged bytes end; when none is left, RetriesExhaustedError."""
    # A small blob (a config, a manifest) gets a buffer of its own size: a whole BUFFER_SIZE,
    # zeroed by bytearray, cost more than the blob (a sync of small images moves hundreds).
    scratch = _Scratch(BUFFER_SIZE if size < 0 else min(BUFFER_SIZE, max(size, 1)))
    reporter.emit(
        EventKind.STARTED, digest, total=size, offset=writer.current_size, media_type=media_type
    )
    while size < 0 or writer.current_size < size:
        source: BlobSource | None = None
        moved_before = fill.moved
        try:
            fill.resumed = fill.resumed or writer.current_size > 0
            source = _open_at(opener, writer.current_size, scratch.get)
            check_stated_size(source, digest, size)
            if size < 0:
                size = _learn_size(source, writer)
            if size < 0 or size - writer.current_size >= PIPELINE_THRESHOLD:
                # The ring holds as many bytes as the scratch buffer of an unpipelined blob,
                # so a blob's memory does not depend on its size (a 1 GiB pull peaks where a
                # 10 MiB one does). Its buffers are handed over themselves, no copy.
                ahead = _ReadAhead(source, max(1, scratch.size // PIPELINE_DEPTH))
                source, chunks = ahead, ahead.views()
            else:
                chunks = _read_chunks(source, scratch)
            for chunk in chunks:
                interrupt.check()  # (what is staged stays for the next run)
                writer.write(chunk)
                n = len(chunk)
                fill.moved += n
                if reporter.active:
                    reporter.emit(
                        EventKind.PROGRESS, digest, total=size, offset=writer.current_size, nbytes=n
                    )
            if size >= 0 and writer.current_size < size:
                raise TransportError(
                    f"blob {digest} ended after {writer.current_size} of {size} bytes"
                )
            break
        except (TransportError, RegistryError) as exc:
            if not is_transient(exc):
                raise
            if fill.moved > moved_before:
                budget.progress()  # bytes arrived: the next pause starts short again
            budget.retry_or_raise(exc)
            log.info(
                "blob %s interrupted at %d bytes (%s); resuming", digest, writer.current_size, exc
            )
        finally:
            if source is not None:
                source.close()
    if size < 0:
        # Nobody announced the size (schema1 served chunked): the source's end is the blob's
        # end, and the digest check of commit decides whether that end was genuine. (A source
        # without an end stops at the client's max_unknown_blob_size.)
        size = writer.current_size
    writer.commit(size)


def _read_chunks(source: BlobSource, scratch: _Scratch) -> Iterator[memoryview]:
    """The source's bytes as views of the scratch buffer, until its end; a view is valid
    until the next one is asked for."""
    view = memoryview(scratch.get())
    while n := source.readinto(view):
        yield view[:n]


def _learn_size(source: BlobSource, writer: LayerWriter) -> int:
    size = source.size
    if size is not None and size >= 0:
        writer.set_size(size)
        return size
    return -1


def _spoils_staging(exc: BaseException, staged: int) -> bool:
    """True if ``exc`` shows that the bytes staged so far cannot become the blob."""
    if isinstance(exc, (DigestMismatchError, BlobTooLargeError)):
        return True
    # The source refuses to serve from our offset: more is staged than the blob has.
    return isinstance(exc, UnexpectedHTTPStatusError) and exc.status == 416 and staged > 0


def _blob_retries(policy: RetryPolicy, size: int, chunk_size: int) -> int:
    """Retries one blob may spend: the policy's, plus two per ``chunk_size`` after the first,
    since a large blob on a flaky path meets more failures (none when the policy has none)."""
    if not policy.retries:
        return 0
    chunks = max(1, -(-size // chunk_size))
    return policy.retries + 2 * (chunks - 1)


def _push_retries(policy: RetryPolicy, size: int, chunk_size: int | None) -> int:
    """Retries one pushed blob may spend (``chunk_size`` None: one monolithic PUT): per blob,
    not per request, with room for a couple of failures per chunk, or per PUSH_RETRY_SPAN of a
    larger one, since a large blob on a flaky path meets more of them (and a forced restart
    sends its chunks again)."""
    if chunk_size is None:
        return policy.retries
    return _blob_retries(policy, size, min(chunk_size, PUSH_RETRY_SPAN))


def pull_budget(client: RegistryClient, name: str, digest: str, size: int) -> RetryBudget:
    """The retry budget of fetching one blob from repository ``name`` of ``client``'s registry,
    under the client's retry policy."""
    policy = client.retry_policy
    known = f"{size} bytes" if size >= 0 else "size unknown"
    return policy.budget(
        f"pulling blob {digest} ({known}) from {name} on {client.registry}",
        _blob_retries(policy, size, RETRY_SPAN),
    )


def store_blob(
    store: ObjectStore,
    digest: str,
    size: int,
    opener: Opener,
    reporter: Reporter,
    *,
    media_type: str = "",
    budget: RetryBudget | None = None,
) -> BlobMove:
    """Write the blob ``digest`` into ``store`` from ``opener`` unless it is already there.

    Resumes bytes an interrupted writer left; waits for a concurrent writer instead of writing
    twice; verifies size and digest before the blob becomes visible. ``size`` -1 means unknown
    (schema1): it is learnt from the source, or is wherever the source ends (a chunked body),
    the digest deciding whether that end is genuine.

    A resumed write whose bytes turn out unusable (the digest does not match, more bytes are
    staged than the blob has) is discarded and fetched once more from offset 0 in the same
    call: a prefix left by a misbehaving source must not fail the next, genuine one.

    Transient failures of the source (a body cut short, a broken connection, 5xx, 429) are
    retried under ``budget`` — one per blob, from :func:`pull_budget` for a registry source
    (default: the default policy's): it is active while the blob moves, so the source's
    requests spend from it too, and the resumes of a cut body and the retries of each GET
    share one bound. When it is spent, RetriesExhaustedError names the blob, the last request
    and its answer.

    Raises DigestMismatchError and BlobTooLargeError (nothing visible, nothing left staged),
    RetriesExhaustedError (the bytes so far stay staged for the next attempt), and the
    source's other errors.
    """
    if budget is None:
        budget = RetryPolicy().budget(f"storing blob {digest}")
    with budget:
        return _store_blob(store, digest, size, opener, reporter, media_type, budget)


def _moved_aside(store: ObjectStore, digest: str, have: int, size: int, reporter: Reporter) -> bool:
    """The stored blob ``digest`` has ``have`` bytes where the descriptor says ``size``: True
    when its bytes do not hash to it (moved aside, as ``pull --repair`` does, to be fetched
    again); False when they do (the descriptor is what is wrong, and the manifest's write says
    so). The pull skipped it, and failed at the manifest with no way out but ``--repair``."""
    from .verify import hash_stored_blob  # (start-up: only when a stored size is wrong)

    try:
        actual, _ = hash_stored_blob(store, Digest(digest))
        if actual == digest:
            return False
        if store.blob_size(digest) != have:
            return True  # replaced meanwhile (another pull, a repair): looked at again
        where = store.set_aside(digest)
    except BlobNotFoundError:
        return True  # gone meanwhile: fetched
    except (UnsupportedError, LayerLockedError) as exc:
        raise StoreError(
            f"blob {digest} is stored with {have} bytes, not {size}, and cannot be moved "
            f"aside: {exc}"
        ) from exc
    message = f"stored blob {digest} was damaged ({have} bytes, not {size}); moved to {where}"
    log.warning("%s", message)
    reporter.emit(EventKind.WARNING, digest, error=message)
    return True


def _store_blob(
    store: ObjectStore,
    digest: str,
    size: int,
    opener: Opener,
    reporter: Reporter,
    media_type: str,
    budget: RetryBudget,
) -> BlobMove:
    layer = store.layer(digest)
    restarted = False
    vanished = 0
    while True:
        try:
            writer = layer.writer()
        except (LayerAlreadyExistsError, LayerLockedError) as exc:
            present = not isinstance(exc, LayerLockedError) or layer.wait()
            # Claimed before it is reused: gc either deleted it first (fetch it after all) or
            # keeps it for its grace period from now (ObjectStore.claim_blob).
            have = store.claim_blob(digest) if present else None
            if have is not None:
                if 0 <= size != have and _moved_aside(store, digest, have, size, reporter):
                    continue  # damaged (cut short, say): fetched again
                reporter.emit(EventKind.SKIPPED, digest, total=size, media_type=media_type)
                return BlobMove(digest, "skipped")
            vanished += present
            if vanished > 3:  # a backend whose writer and status disagree: never loop forever
                raise StoreError(f"blob {digest} is reported complete but cannot be found") from exc
            continue  # gone, or the other writer gave up: take over (its bytes are resumed)
        fill = _Fill(resumed=writer.current_size > 0)
        try:
            if 0 <= size < writer.current_size:
                raise DigestMismatchError(
                    f"bytes staged for blob {digest}",
                    expected=digest,
                    expected_size=size,
                    actual_size=writer.current_size,
                )
            if size >= 0:
                writer.set_size(size)
            _fill(writer, digest, size, opener, reporter, media_type, fill, budget)
        except BaseException as exc:
            if not _spoils_staging(exc, writer.current_size):
                writer.close()  # keep the staged bytes: a later run resumes from them
                reporter.emit(EventKind.FAILED, digest, total=size, error=str(exc))
                raise
            writer.discard()  # bytes that cannot become the blob help no later run
            if fill.resumed and not restarted and not isinstance(exc, BlobTooLargeError):
                # Bytes staged earlier (perhaps from a misbehaving source, in another run) or
                # fetched by a ranged request were wrong: once, start over from zero.
                restarted = True
                log.warning("blob %s: resumed bytes were unusable (%s); refetching it", digest, exc)
                continue
            reporter.emit(EventKind.FAILED, digest, total=size, error=str(exc))
            raise
        reporter.emit(EventKind.VERIFIED, digest, total=size, media_type=media_type)
        return BlobMove(digest, "transferred", fill.moved)


class _Limited:
    """A file-like view of the next ``length`` bytes of a source (a chunk's request body).

    ``read(n)`` gives up to ``n`` next bytes of the source as one object (empty at its end).
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        length: int,
        on_bytes: Callable[[int], None],
    ) -> None:
        self._read = read
        self._left = length
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._read(min(want, BUFFER_SIZE))
        if not data:
            raise TransportError(f"source stream ended with {self._left} bytes of a chunk unread")
        self._left -= len(data)
        self._on_bytes(len(data))
        return data

    def __len__(self) -> int:
        return self._left


class _ReadAhead:
    """A source read ahead by a thread of its own while the caller uses what it already has.

    Reading and using otherwise take turns: a pull would wait for each socket read before
    hashing and writing it, a push from S3 or a copy from another registry for each read before
    sending it. Through this, the source is read into a ring of PIPELINE_DEPTH buffers of
    ``buffer_size`` bytes (socket reads, sha256, file writes and sends all release the GIL, so
    they overlap). :meth:`views` hands the ring's buffers over themselves; :meth:`readinto`
    copies from them, for callers that need a file-like source. A failure of the source
    surfaces at the position where it happened, after the bytes read before it, in the
    caller's thread. Closing never waits for the reader: a source is not closed under a read
    in progress (an HTTP response would make the closer wait for its stalled ``recv``), so
    whichever of the two finishes last closes it.
    """

    def __init__(self, source: BlobSource, buffer_size: int = READ_AHEAD_BUFFER) -> None:
        self._source = source
        self.offset = source.offset
        self.size = source.size
        self._free: queue.Queue[bytearray | None] = queue.Queue()
        self._filled: queue.Queue[tuple[bytearray, int | BaseException]] = queue.Queue()
        for _ in range(PIPELINE_DEPTH):
            self._free.put(bytearray(buffer_size))
        self._lock = threading.Lock()
        self._closed = False
        self._pumping = False
        self.thread: threading.Thread | None = None
        self._held: bytearray | None = None  # the filled buffer being handed over
        self._view = memoryview(b"")

    def _pump(self) -> None:
        try:
            while not self._closed and (buffer := self._free.get()) is not None:
                try:
                    n = self._source.readinto(buffer)
                except BaseException as exc:  # handed to the consumer, which decides
                    self._filled.put((buffer, exc))
                    return
                self._filled.put((buffer, n))
                if n == 0:
                    return
        finally:
            with self._lock:
                self._pumping = False
                close = self._closed
            if close:
                self._source.close()

    def _next(self) -> memoryview:
        """The next filled buffer's bytes (empty at the end); the one handed over before goes
        back to the reader."""
        if self._closed:
            raise ValueError("read of a closed read-ahead source")
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        if self.thread is None:
            self._pumping = True
            self.thread = threading.Thread(
                target=self._pump, name="regstore-read-ahead", daemon=True
            )
            self.thread.start()
        filled, result = self._filled.get()
        if isinstance(result, BaseException):
            raise result
        if result == 0:
            return memoryview(b"")
        self._held = filled
        return memoryview(filled)[:result]

    def views(self) -> Iterator[memoryview]:
        """The bytes as views of the ring's buffers, until the end; a view is valid until the
        next one is asked for."""
        while view := self._next():
            yield view

    def _current(self) -> memoryview:
        """The unread rest of the filled buffer at hand (the next one once it is used up;
        empty at the end)."""
        if not self._view:
            self._view = self._next()
        return self._view

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        view = self._current()
        n = min(len(buffer), len(view))
        memoryview(buffer)[:n] = view[:n]
        self._view = view[n:]
        return n

    def take(self, n: int) -> bytes:
        """Up to ``n`` next bytes as one object, copied once from the ring (b"" at the end)."""
        view = self._current()
        data = bytes(view[:n])
        self._view = view[len(data) :]
        return data

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pumping = self._pumping
        self._view, self._held = memoryview(b""), None
        self._free.put(None)  # a reader waiting for a buffer stops
        if not pumping:
            self._source.close()


def _upload_location(session: UploadSession) -> str:
    """Where a session that did not mount its blob takes the bytes."""
    if session.location is None:
        # The client never answers so (a 201 to a plain POST is its RegistryError), but a
        # client standing in for it might: say so rather than send bytes nowhere.
        raise RegistryError(f"upload session {session} has no location and mounted nothing")
    return session.location


def upload_blob(
    client: RegistryClient,
    name: str,
    digest: str,
    size: int,
    opener: Opener,
    reporter: Reporter,
    *,
    media_type: str = "",
    mount_from: Sequence[str] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
    read_again: bool = False,
) -> BlobMove:
    """Make the blob ``digest`` exist in repository ``name`` of the registry.

    Skipped when the registry has it (HEAD); mounted when a ``mount_from`` repository has it;
    else uploaded: monolithic up to ``monolithic_threshold``, chunked above.

    Every request of the blob's upload spends from one retry budget — the client's
    ``retries`` plus two per chunk after the first, or per PUSH_RETRY_SPAN of larger chunks —
    under the client's retry policy
    (backoff with jitter, ``Retry-After`` honoured up to a cap). A transient failure (broken
    connection, 5xx, 429) of a request safe to repeat (HEAD, POST, status GET) is retried by the
    client. After a failed chunk PATCH the registry is asked where the upload stands and the
    upload goes on from its offset, the source re-read from there; after a failed PUT a HEAD
    tells whether the blob landed before anything is sent again; an upload session the
    registry lost (404) restarts this blob only — as does, on distribution, a chunk that landed
    but whose answer was lost: the registry refuses the only location the client then has
    (its ``_state`` is stale). When the budget is spent,
    :class:`~regstore.errors.RetriesExhaustedError` names the blob, the last request and the
    registry's last answer.

    ``read_again``, for a source whose bytes are not checked on the way (a registry's: the
    destination checks them): bytes the registry refuses as not matching the digest
    (``DIGEST_INVALID``) are read from the source once more; refused twice, a
    DigestMismatchError says so.
    """
    policy = client.retry_policy
    monolithic = size <= monolithic_threshold
    budget = policy.budget(
        f"pushing blob {digest} ({size} bytes) to {name} on {client.registry}",
        _push_retries(policy, size, None if monolithic else chunk_size),
    )
    for attempt in (1, 2) if read_again else (2,):
        upload = _Upload(
            client,
            name,
            digest,
            size,
            opener,
            reporter,
            budget,
            media_type,
            refusal_retried=attempt == 1,
        )
        try:
            with budget:
                return upload.run(mount_from, None if monolithic else chunk_size)
        except RegistryError as exc:
            if not (read_again and _digest_refused(exc)):
                raise
            if attempt == 2:
                raise DigestMismatchError(
                    f"blob {digest} ({size} bytes), read twice from its source for {name} on "
                    f"{client.registry}: the registry found other bytes each time (the source "
                    "serves damaged bytes, something on the way alters them, or the registry "
                    "takes no digest of this kind)",
                    expected=digest,
                ) from exc
            # a registry source's bytes are not hashed on the way (the registry does): bytes
            # damaged once, on the way or at the source, are read again
            log.warning(
                "blob %s: the registry refused the bytes read (%s); reading them again", digest, exc
            )
    raise AssertionError("unreachable")


def retried(budget: RetryBudget, call: Callable[[], _T]) -> _T:
    """``call()``, tried again after transient failures (broken connections, 5xx, 429) while
    ``budget`` lasts; RetriesExhaustedError when it is spent."""
    while True:
        try:
            return call()
        except (TransportError, RegistryError) as exc:
            if not is_transient(exc):
                raise
            budget.retry_or_raise(exc)


def _digest_refused(exc: RegistryError) -> bool:
    """True when the registry refused an upload's bytes as not matching its digest."""
    return exc.http is not None and "DIGEST_INVALID" in exc.http.codes


def _cancel_quietly(client: RegistryClient, location: str) -> None:
    # One attempt, without retries: an abandoned session expires on its own anyway.
    try:
        with RetryPolicy().budget(f"cancelling upload {location}", retries=0):
            client.cancel_blob_upload(location)
    except Exception as exc:
        log.debug("cancelling upload %s failed: %s", location, exc)


def _cancel_behind(client: RegistryClient, location: str) -> None:
    """:func:`_cancel_quietly` in a thread of its own, not waited for: a run stopping
    (Ctrl-C, often because the registry stopped answering) must not wait out the socket
    timeouts of a DELETE; a process ending first leaves the session to expire."""
    threading.Thread(
        target=_cancel_quietly, args=(client, location), name="regstore-cancel", daemon=True
    ).start()


_T = TypeVar("_T")


class _Upload:
    """The push of one blob, and where the registry stands with it after a failure.

    ``location``/``offset`` are the session and the bytes the registry holds (None/0 before a
    session exists); ``step`` the request last tried (``start``: the POST, ``patch``: a chunk,
    ``put``: the closing or monolithic PUT); ``stale`` that a failure happened and the
    registry must be asked before going on.
    """

    def __init__(
        self,
        client: RegistryClient,
        name: str,
        digest: str,
        size: int,
        opener: Opener,
        reporter: Reporter,
        budget: RetryBudget,
        media_type: str,
        *,
        refusal_retried: bool = False,
    ) -> None:
        self.client = client
        self.name = name
        self.digest = digest
        self.size = size
        self.opener = opener
        self.reporter = reporter
        self.budget = budget
        self.media_type = media_type
        self.location: str | None = None
        self.offset = 0
        self.step: Literal["start", "patch", "put"] = "start"
        self.stale = False
        self.landed = False
        #: a refusal of the bytes (DIGEST_INVALID) is read again, not reported as a failure
        self.refusal_retried = refusal_retried
        self._source: BlobSource | None = None
        self._position = 0  # of the next byte read from the source
        self._sent = 0
        self._skip = _Scratch(min(BUFFER_SIZE, max(size, 1)))  # only a server ignoring Range

    # -- the steps ---------------------------------------------------------------------------
    def run(self, mount_from: Sequence[str], chunk_size: int | None) -> BlobMove:
        """Skip, mount or upload (monolithic when ``chunk_size`` is None)."""
        client, name, digest, size = self.client, self.name, self.digest, self.size
        if self._retried(lambda: client.blob_length(name, digest)) >= 0:
            self.reporter.emit(EventKind.SKIPPED, digest, total=size, media_type=self.media_type)
            return BlobMove(digest, "skipped")
        for source_repo in mount_from:
            if source_repo == name:
                continue
            answer = self._retried(
                partial(client.initiate_blob_upload, name, mount=digest, from_=source_repo)
            )
            if answer.mounted:
                if self.location is not None:
                    _cancel_quietly(client, self.location)
                self.reporter.emit(
                    EventKind.MOUNTED, digest, total=size, media_type=self.media_type
                )
                return BlobMove(digest, "mounted")
            if self.location is not None:
                _cancel_quietly(client, self.location)
            self.location = _upload_location(answer)
        self.reporter.emit(
            EventKind.STARTED, digest, total=size, offset=0, media_type=self.media_type
        )
        try:
            self._push(chunk_size)
        except BaseException as exc:
            if self.location and not self.landed:
                # The session can never complete (a damaged source, an interrupt, retries
                # spent: no later run resumes another's session): cancelled, or the registry
                # keeps the bytes sent until it purges old uploads (a week, by default).
                if isinstance(exc, InterruptedTransferError | KeyboardInterrupt):
                    _cancel_behind(client, self.location)
                else:
                    _cancel_quietly(client, self.location)
            if not (
                self.refusal_retried and isinstance(exc, RegistryError) and _digest_refused(exc)
            ):
                self.reporter.emit(EventKind.FAILED, digest, total=size, error=str(exc))
            raise
        finally:
            self._close_source()
        self.reporter.emit(EventKind.VERIFIED, digest, total=size, media_type=self.media_type)
        return BlobMove(digest, "transferred", size)

    def _push(self, chunk_size: int | None) -> None:
        while True:
            try:
                if self.stale:
                    self._reconcile(monolithic=chunk_size is None)
                    self.stale = False
                if self.landed:
                    return
                if self.location is None:
                    self.step = "start"
                    self.location = _upload_location(self.client.initiate_blob_upload(self.name))
                    self._seek(0)
                if chunk_size is None:
                    self._put_whole()
                else:
                    self._send_chunks(chunk_size)
                    self._finish()
                return
            except BlobUploadInvalidRangeError as exc:
                # The registry said where it stands (a 416 carries its offset): go on there.
                self.budget.retry_or_raise(exc)
                self.location = exc.location or self.location
                self._seek(max(exc.blob_size, 0))
            except BlobUploadNotFoundError as exc:
                # The session is gone: start this blob again — unless a lost answer to the
                # closing PUT is why, which the HEAD of the reconciliation tells.
                self.budget.retry_or_raise(exc)
                if self.step != "put":
                    self._restart()
                self.stale = True
            except (TransportError, RegistryError) as exc:
                if not is_transient(exc):
                    raise
                self.budget.retry_or_raise(exc)
                self.stale = True

    def _reconcile(self, *, monolithic: bool) -> None:
        """After a failure: learn from the registry where the upload stands, and go on there."""
        self._close_source()
        if self.step == "put":
            # The PUT may have completed and only its answer been lost: the digest tells.
            if self.client.blob_length(self.name, self.digest) >= 0:
                self.landed = True
                return
            if monolithic:
                self._restart()  # a PUT that failed half-way cannot be resumed
                return
        if self.location is None:
            return  # no session yet (or it was lost): the loop starts one
        try:
            status = self.client.get_blob_upload_status(self.location)
        except BlobUploadNotFoundError:
            self._restart()
            return
        offset = status.offset
        self.location = status.location or self.location
        if offset > self.size:
            self._restart()  # not our bytes: this session is spoilt
            return
        if offset != self.offset:
            log.info("upload of %s: the registry holds %d bytes; going on", self.digest, offset)
        self._seek(offset)

    def _send_chunks(self, chunk_size: int) -> None:
        while self.offset < self.size:
            assert self.location is not None
            interrupt.check()
            self.step = "patch"
            length = min(chunk_size, self.size - self.offset)
            self._open()  # a source that cannot be opened fails before the request goes
            self.location = self.client.upload_blob_chunk(
                self.location,
                _Limited(self._read_bytes, length, self._on_bytes),
                length,
                self.offset,
            )
            self.offset += length
            self.budget.progress()

    def _finish(self) -> None:
        assert self.location is not None
        self.step = "put"
        self.client.finish_chunked_blob_upload(self.location, self.size, self.digest)
        self.landed = True

    def _put_whole(self) -> None:
        assert self.location is not None
        self.step = "put"
        self._seek(0)
        self._open()
        body = _Limited(self._read_bytes, self.size, self._on_bytes)
        self.client.upload_blob(self.location, body, self.size, self.digest)
        self.landed = True

    # -- helpers -----------------------------------------------------------------------------
    def _retried(self, call: Callable[[], _T]) -> _T:
        """``call()``, tried again after transient failures while the budget lasts."""
        return retried(self.budget, call)

    def _restart(self) -> None:
        log.info("upload of %s: the session is gone; starting the blob again", self.digest)
        self.location = None
        self._seek(0)

    def _seek(self, offset: int) -> None:
        """Go on from ``offset``: the source is reopened there for the next request."""
        self._close_source()
        self.offset = offset
        self._position = offset
        self._sent = offset

    def _open(self) -> BlobSource:
        if self._source is None:
            source = _open_at(self.opener, self._position, self._skip.get)
            if self.size - self._position >= READ_AHEAD_THRESHOLD:
                source = _ReadAhead(source)
            self._source = source
        return self._source

    def _read_bytes(self, n: int) -> bytes:
        """Up to ``n`` next source bytes, for a request body being sent: copied once from a
        read-ahead ring, else read through a buffer of their own.

        A source that breaks (a registry's GET cut short, in a copy) is reopened where it broke
        and the body goes on: the request under way never notices. Were it cut instead, the
        registry would keep the bytes it got and the client only have the location from
        before them — which distribution refuses, forcing the whole blob to start again.
        """
        interrupt.check()  # (a monolithic body is cut: the registry never commits it)
        while True:
            try:
                source = self._open()
                if isinstance(source, _ReadAhead):
                    data = source.take(n)
                else:
                    buffer = bytearray(n)
                    got = source.readinto(buffer)
                    data = bytes(buffer) if got == n else bytes(buffer[:got])
            except (TransportError, RegistryError) as exc:
                if not is_transient(exc):
                    raise
                self._close_source()
                self.budget.retry_or_raise(exc)
                continue
            self._position += len(data)
            return data

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()

    def _on_bytes(self, n: int) -> None:
        self._sent += n
        if self.reporter.active:
            self.reporter.emit(
                EventKind.PROGRESS, self.digest, total=self.size, offset=self._sent, nbytes=n
            )
