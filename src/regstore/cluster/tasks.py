"""What crosses the wire to a Dask worker, and what the worker does with it.

A task is an :class:`ImageTask`: plain strings and numbers naming the source image, the
destination (a store URL or a registry) and the options. It carries **no credentials**: a
registry password is named by the environment variable that holds it (``password_env`` of the
sync file), read by the worker from *its* environment; otherwise the worker's docker config,
credential helpers and credential plugins answer, as they would for a local ``regstore``.
A store URL with secrets in it is refused before anything is submitted (see
:func:`regstore.cluster.runner.check_store_url`); the store's backend finds its credentials in
the worker's environment (``AWS_ACCESS_KEY_ID`` ... for S3).

The worker opens its own registry clients and store (once per worker process and setting,
shared by the images it moves), streams registry → store directly, and returns the image's
:class:`~regstore.engine.model.ImageOutcome` naming itself as ``worker``. Transfer events go
back to the submitting process as Dask structured events on the run's topic (progress bytes
batched, a few messages a second per blob).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regstore import plugins
from regstore.engine.blobs import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD
from regstore.engine.model import ImageOutcome, RegistryImage, StoreImage, image_text
from regstore.engine.transfer import transfer_many
from regstore.events import EventKind, TransferEvent
from regstore.store import open_store

if TYPE_CHECKING:
    from regstore.client import Client
    from regstore.store import ObjectStore

__all__ = ["ImageTask", "RegistryAccess", "event_from_message", "run_image_task"]

log = logging.getLogger("regstore.cluster")

#: How often a worker sends the bytes moved of a blob in flight (seconds).
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class RegistryAccess:
    """How a worker reaches a registry: the same settings as a sync file's connection keys
    (plus the command line's global ones), with the password *named*, never included."""

    registry: str
    plain_http: bool | None = None
    #: True (verify with the system CAs), False (``--insecure``) or a CA bundle path
    verify: bool | str = True
    username: str | None = None
    password_env: str | None = None
    retries: int | None = None

    def open(self) -> Client:
        """A registry client for this access, its password read from the environment now."""
        from regstore.client import Client
        from regstore.engine.syncfile import ConnectionSpec

        password = None
        if self.password_env is not None:
            # ConnectionSpec.password() names the variable and the registry when it is unset
            password = ConnectionSpec(
                self.registry, username=self.username, password_env=self.password_env
            ).password()
        options: dict[str, Any] = {}
        if self.retries is not None:
            options["retries"] = self.retries
        return Client(
            self.registry,
            plain_http=self.plain_http,
            verify=self.verify,
            username=self.username,
            password=password,
            credentials=plugins.credentials_for,
            **options,
        )


@dataclass(frozen=True)
class ImageTask:
    """One image to move on a worker (picklable, secret-free: see the module docstring)."""

    source: RegistryAccess
    source_name: str
    source_reference: str
    dest_name: str
    dest_reference: str | None = None
    #: the destination store's URL (without secrets), or None for a registry target
    store_url: str | None = None
    target: RegistryAccess | None = None
    platforms: tuple[str, ...] | None = None
    concurrency: int = 4
    skip_unchanged: bool = True
    #: the PATCH size of a chunked push into a registry target, and the largest monolithic PUT
    chunk_size: int = DEFAULT_CHUNK_SIZE
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD
    #: move the image's referrers too (signatures, SBOMs...), of these artifact types (all: ())
    referrers: bool = False
    referrer_types: tuple[str, ...] = ()
    #: the run's Dask event topic for transfer events ("" sends none)
    topic: str = ""


# -- on the worker -----------------------------------------------------------------------------

_opened_lock = threading.Lock()
_clients: dict[RegistryAccess, Client] = {}
_stores: dict[str, ObjectStore] = {}


def _client(access: RegistryAccess) -> Client:
    with _opened_lock:
        client = _clients.get(access)
        if client is None:
            client = _clients[access] = access.open()
        return client


def _store(url: str) -> ObjectStore:
    with _opened_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store


def _worker() -> Any | None:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not on a Dask worker (a test calling it directly)
        return None


class _EventForwarder:
    """An engine event sink sending each event to the submitting process as a Dask event.

    ``progress`` events are summed per blob and sent at most every PROGRESS_INTERVAL seconds
    (and before the blob's next event of another kind), so a fast transfer does not flood the
    scheduler with one message per chunk.
    """

    def __init__(self, worker: Any, topic: str) -> None:
        self._worker = worker
        self._topic = topic
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], list[Any]] = {}  # (image, digest) -> [event, n, t]

    def _send(self, event: TransferEvent, nbytes: int | None = None) -> None:
        msg = {
            "kind": event.kind.value,
            "operation": event.operation,
            "image": event.image,
            "digest": event.digest,
            "total": event.total,
            "offset": event.offset,
            "nbytes": event.nbytes if nbytes is None else nbytes,
            "media_type": event.media_type,
            "tag": event.tag,
            "error": event.error,
        }
        try:
            self._worker.log_event(self._topic, msg)
        except Exception:  # progress is a nicety: it never fails a transfer
            log.debug("cannot send a transfer event", exc_info=True)

    def __call__(self, event: TransferEvent) -> None:
        key = (event.image, event.digest)
        now = time.monotonic()
        with self._lock:
            pending = self._pending.pop(key, None)
            if event.kind is EventKind.PROGRESS:
                if pending is None:
                    self._pending[key] = [event, event.nbytes, now]
                    return
                pending[1] += event.nbytes
                pending[0] = event
                if now - pending[2] < PROGRESS_INTERVAL:
                    self._pending[key] = pending
                    return
                self._pending[key] = [event, 0, now]
                flush: tuple[TransferEvent, int] | None = (pending[0], pending[1])
            else:
                flush = (pending[0], pending[1]) if pending is not None and pending[1] else None
        if flush is not None:
            self._send(*flush)
        if event.kind is not EventKind.PROGRESS:
            self._send(event)


def event_from_message(msg: dict[str, Any]) -> TransferEvent:
    """The TransferEvent a worker sent as a Dask event message."""
    return TransferEvent(
        EventKind(msg["kind"]),
        msg["operation"],
        msg["image"],
        msg["digest"],
        total=int(msg["total"]),
        offset=int(msg["offset"]),
        nbytes=int(msg["nbytes"]),
        media_type=str(msg.get("media_type") or ""),
        tag=msg.get("tag"),
        error=msg.get("error"),
    )


def run_image_task(task: ImageTask) -> ImageOutcome:
    """Move one image on this worker and report it (the function each Dask task runs).

    Never raises for a failed image: the outcome says ``failed`` and why, as a local sync's
    does (the exception itself stays here; only its text travels). The destination tag is
    written last, after every blob and child manifest, so a worker killed at any point leaves
    no tag naming incomplete content; its staged bytes are resumed by whichever worker the
    scheduler gives the task to next.
    """
    worker = _worker()
    name = str(worker.address) if worker is not None else None
    try:
        source = RegistryImage(_client(task.source), task.source_name, task.source_reference)
        dest: RegistryImage | StoreImage
        if task.store_url is not None:
            dest = StoreImage(_store(task.store_url), task.dest_name, task.dest_reference)
        elif task.target is not None:
            dest = RegistryImage(_client(task.target), task.dest_name, task.dest_reference)
        else:
            raise ValueError("an image task needs a store URL or a target registry")
        events = _EventForwarder(worker, task.topic) if worker is not None and task.topic else None
        batch = transfer_many(
            [(source, dest)],
            platforms=list(task.platforms) if task.platforms else None,
            concurrency=task.concurrency,
            chunk_size=task.chunk_size,
            monolithic_threshold=task.monolithic_threshold,
            events=events,
            skip_unchanged=task.skip_unchanged,
            referrers=task.referrers,
            referrer_types=task.referrer_types,
        )
        outcome = batch.outcomes[0]
    except Exception as exc:  # a client or store that cannot be opened here fails this image
        source_text = image_text(
            f"{task.source.registry}/{task.source_name}", task.source_reference
        )
        outcome = ImageOutcome(source_text, _destination_text(task), "failed", error=str(exc))
    outcome.exception = None  # an exception may not survive pickling; its text is the report
    outcome.worker = name
    return outcome


def _destination_text(task: ImageTask) -> str:
    """The destination as a local sync's outcome writes it (``store:name:tag``, ``host/name``
    with its tag): tooling matches ``--json`` entries by it."""
    if task.store_url is not None:
        base = f"store:{task.dest_name}"
    elif task.target is not None:
        base = f"{task.target.registry}/{task.dest_name}"
    else:
        base = task.dest_name
    return image_text(base, task.dest_reference)
