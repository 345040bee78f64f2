"""Running a sync plan on a Dask cluster: start or reach the cluster, plan locally, submit one
task per image, gather the outcomes in plan order.

The submitting process does what is cheap and needs no bytes moved: it lists tags and applies
filters (:func:`regstore.engine.sync.plan_sync`, before this module is called), checks which
destination tags already point at the source's manifest (one HEAD on each side; those images
are reported ``skipped`` and never submitted), and reads the manifests of the others to learn
their size. Then each image is a task (:func:`regstore.cluster.tasks.run_image_task`), spread
over the workers by bytes (:mod:`regstore.cluster.balance`). Workers open their own clients and
store and stream registry → store directly; many workers writing one store rely on its blob
locks (each blob written once; a worker wanting a blob another holds waits for it).

A task whose worker dies is run again by Dask on another worker (the scheduler's
``allowed-failures``, 3 by default, then the image fails with the scheduler's ``KilledWorker``
text). ``keep_going=False`` (``--fail-fast``) cancels every task not finished when one image
fails; tasks already running on a worker cannot be interrupted by Dask and finish there (the
store's contract keeps what they write whole), but are reported ``cancelled``. An interrupt
(Ctrl-C) cancels every task and closes the client, and a local cluster with its worker
processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regstore.engine.blobs import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD
from regstore.engine.model import (
    BatchResult,
    ImageOutcome,
    RegistryImage,
    StoreImage,
)
from regstore.engine.options import TransferOptions
from regstore.engine.sync import settle_unchanged
from regstore.engine.transfer import CANCELLED, plan_image
from regstore.errors import ClusterError, RegstoreError, UsageError
from regstore.safetext import redact_store_url, store_url_secrets

from .balance import assign_by_bytes
from .tasks import ImageTask, RegistryAccess, event_from_message, run_image_task

if TYPE_CHECKING:
    from regstore.engine.model import RegistryClient
    from regstore.engine.sync import PlannedJob, SyncPlan
    from regstore.events import EventSink

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "IMAGES_PER_WORKER",
    "SCHEDULER_ENV",
    "ClusterOptions",
    "check_store_url",
    "open_cluster",
    "require_distributed",
    "run_sync_on_cluster",
]

log = logging.getLogger("regstore.cluster")

#: Seconds to wait for a scheduler to answer (and for its first worker to be there).
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds a local cluster's worker processes may take to start (a loaded machine is slow).
LOCAL_START_TIMEOUT = 180.0
#: Images a local cluster's worker process moves at once (its threads).
IMAGES_PER_WORKER = 2
#: Times Dask runs a task again after it raised (a worker's death is counted apart, by the
#: scheduler's ``allowed-failures``); run_image_task reports an image's failure instead of
#: raising, so this covers only the unexpected.
TASK_RETRIES = 2
#: The environment variable (Dask's own) naming an existing scheduler.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

INSTALL_HINT = "pip install 'regstore[dask]'"
_ANY_PORT = "127.0.0.1:0"


def require_distributed() -> Any:
    """The ``distributed`` module, or ClusterError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(
            f"running on a Dask cluster needs the 'distributed' package: {INSTALL_HINT}"
        ) from exc
    return distributed


@dataclass(frozen=True)
class ClusterOptions:
    """Where tasks run: a new local cluster of ``workers`` processes on 127.0.0.1, or the
    existing scheduler at ``scheduler`` (``tcp://HOST:8786``)."""

    workers: int | None = None
    scheduler: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    images_per_worker: int = IMAGES_PER_WORKER

    def __post_init__(self) -> None:
        if (self.workers is None) == (self.scheduler is None):
            raise UsageError("give either a number of local workers or a scheduler address")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"the number of workers must be at least 1, not {self.workers}")


@contextlib.contextmanager
def open_cluster(options: ClusterOptions) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster ``options`` names, closed afterwards (a local
    cluster too: its worker processes end with it). ClusterError when the cluster cannot be
    started or reached within ``options.connect_timeout`` seconds."""
    distributed = require_distributed()
    cluster = None
    try:
        if options.scheduler is not None:
            client = _connect(distributed, options)
        else:
            log.info("starting a local Dask cluster of %s worker process(es)", options.workers)
            try:
                with _workers_ignore_interrupts():
                    cluster = distributed.LocalCluster(
                        n_workers=options.workers,
                        processes=True,
                        threads_per_worker=options.images_per_worker,
                        host="127.0.0.1",
                        scheduler_port=0,
                        dashboard_address=None,
                        worker_dashboard_address=None,
                        # no dashboard; the scheduler's small HTTP server (health, metrics)
                        # would otherwise take the fixed port 8787 on every interface
                        scheduler_kwargs={"dashboard": False, "dashboard_address": _ANY_PORT},
                        silence_logs=logging.CRITICAL,
                    )
                client = distributed.Client(cluster, set_as_default=False)
                # every worker in before the images are spread over them
                client.wait_for_workers(options.workers, timeout=LOCAL_START_TIMEOUT)
            except (OSError, TimeoutError, RuntimeError) as exc:
                raise ClusterError(f"cannot start a local Dask cluster: {exc}") from exc
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close()
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


async def _probe(address: str, timeout: float) -> object:
    connect: Any = require_distributed().comm.connect
    comm = await connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity"})
        return await comm.read()
    finally:
        comm.abort()


@contextlib.contextmanager
def _workers_ignore_interrupts() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (a disposition they inherit).

    Ctrl-C on a terminal goes to the whole foreground process group, local workers included;
    the submitting process alone should handle it (cancel the tasks, close the cluster, which
    ends the workers), not every worker printing its own KeyboardInterrupt traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _connect(distributed: Any, options: ClusterOptions) -> Any:
    address = options.scheduler
    assert address is not None
    timeout = options.connect_timeout
    log.info("connecting to the Dask scheduler at %s", address)
    # A peer that accepts the connection and never answers keeps distributed.Client waiting
    # far beyond its own timeout: ask for the scheduler's identity first, bounded from here.
    try:
        asyncio.run(asyncio.wait_for(_probe(address, timeout), timeout))
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, asyncio.TimeoutError, ValueError) as exc:
        reason = str(exc) or "no answer"
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: {reason}"
        ) from exc
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            client.close()
        raise ClusterError(
            f"the Dask scheduler at {address} has no worker (waited {timeout:g} s)"
        ) from exc
    return client


def check_store_url(url: str) -> None:
    """Refuse a store URL the workers cannot share: one with credentials in it (it would travel
    in every task; the workers' backends find credentials in their own environment,
    ``AWS_ACCESS_KEY_ID`` ... for S3), ``memory://`` (each worker process would fill its own
    and lose it when the cluster closes) and a relative path (each worker would resolve it in
    its own working directory)."""
    scheme, _, rest = url.partition("://") if "://" in url else ("", "", url)
    if scheme == "memory":
        raise UsageError(
            f"the store {redact_store_url(url)} lives in one process: every cluster worker "
            "would fill its own and lose it; sync into a file://, s3:// or az:// store"
        )
    if scheme in ("", "file") and not rest.startswith("/"):
        raise UsageError(
            f"the store path {redact_store_url(url)} is relative: every cluster worker would "
            "resolve it in its own working directory; give an absolute path"
        )
    if store_url_secrets(url):
        raise UsageError(
            f"the store URL {redact_store_url(url)} carries credentials, which would be sent to "
            "every cluster worker: leave them out and give the workers the backend's usual "
            "environment variables (e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3://)"
        )


# -- planning on the submitting side -----------------------------------------------------------


@dataclass
class _Prepared:
    index: int
    task: ImageTask
    size: int = 0


def _prepare(i: int, job: PlannedJob, task: ImageTask) -> _Prepared:
    """The task of a job to submit, with its size (for the balance across workers)."""
    size = 0
    try:
        planned = plan_image(job.source, TransferOptions.build(job.platforms))
        size = sum(max(d.size, 0) for d in planned.blobs.values())
    except (RegstoreError, ValueError) as exc:
        log.debug("sizing %s here failed: %s", job.source, exc)
    return _Prepared(i, task=task, size=size)


def _task_for(
    job: PlannedJob,
    access_for: Callable[[RegistryClient], RegistryAccess],
    store_url: str | None,
    tuning: dict[str, Any],
    topic: str,
    referrer_types: Sequence[str],
) -> ImageTask:
    """The task of one job; ``tuning`` holds the ImageTask fields every task shares
    (concurrency, skip_unchanged, chunk_size, monolithic_threshold)."""
    source, dest = job.source, job.destination
    if source.reference is None:
        raise ValueError(f"the source {source} needs a tag or digest")
    common: dict[str, Any] = {
        "source": access_for(source.client),
        "source_name": source.name,
        "source_reference": source.reference,
        "dest_name": dest.name,
        "dest_reference": dest.reference,
        "platforms": job.platforms,
        **tuning,
        "topic": topic,
        "referrers": job.referrers,
        "referrer_types": tuple(referrer_types),
    }
    if isinstance(dest, StoreImage):
        if store_url is None:
            raise ValueError("a store destination needs the store's URL")
        return ImageTask(store_url=store_url, **common)
    assert isinstance(dest, RegistryImage)
    return ImageTask(target=access_for(dest.client), **common)


# -- running -----------------------------------------------------------------------------------


def run_sync_on_cluster(
    plan: SyncPlan,
    client: Any,
    *,
    access_for: Callable[[RegistryClient], RegistryAccess],
    store_url: str | None = None,
    concurrency: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
    events: EventSink | None = None,
    skip_unchanged: bool = True,
    keep_going: bool = True,
    on_outcome: Callable[[ImageOutcome, int, int], None] | None = None,
    referrer_types: Sequence[str] = (),
) -> BatchResult:
    """Run ``plan``'s jobs as tasks on the cluster of ``client`` (a ``distributed.Client``,
    or a callable returning one, called only when some image is to be moved: a no-op resync
    then starts no cluster); the report has the shape of
    :func:`regstore.engine.sync.run_sync`'s, each moved image naming its ``worker``.

    ``access_for`` says how a worker reaches the registry of a client of the plan (no secrets:
    see :class:`~regstore.cluster.tasks.RegistryAccess`); ``store_url`` is the URL of the
    plan's destination store (checked by :func:`check_store_url`). ``concurrency`` is the
    blobs each image moves at once on its worker (None: the sync file's, else 4, as a local
    sync's); ``chunk_size`` and ``monolithic_threshold``
    shape its uploads into a registry target (see :func:`regstore.engine.sync.run_sync`).
    ``events`` receives the workers' transfer events (on a thread of the Dask client);
    ``on_outcome(outcome, done, total)`` is called on this thread as each image finishes.
    Jobs planned with ``referrers`` move their images' referrers too (of ``referrer_types``;
    all when empty), as a local sync's do.
    """
    if store_url is not None:
        check_store_url(store_url)
    require_distributed()
    concurrency = concurrency or plan.concurrency or 4
    total = len(plan.jobs)
    outcomes: list[ImageOutcome | None] = [None] * total
    if plan.failures and not keep_going:
        cancelled = [
            ImageOutcome(str(j.source), str(j.destination), "cancelled", error=CANCELLED)
            for j in plan.jobs
        ]
        return BatchResult([*plan.failures, *plan.skipped, *cancelled])

    topic = f"regstore-sync-{uuid.uuid4().hex}" if events is not None else ""
    tuning = {
        "concurrency": concurrency,
        "skip_unchanged": skip_unchanged,
        "chunk_size": chunk_size,
        "monolithic_threshold": monolithic_threshold,
    }
    tasks = [
        _task_for(job, access_for, store_url, tuning, topic, referrer_types) for job in plan.jobs
    ]
    # the unchanged images are settled here (both ends learned in bulk): no task, no cluster
    settled = settle_unchanged(plan) if skip_unchanged else {}
    done = 0
    for i, outcome in settled.items():
        outcomes[i] = outcome
        done += 1
        if on_outcome is not None:
            on_outcome(outcome, done, total)
    rest = [i for i in range(total) if i not in settled]
    with ThreadPoolExecutor(max(1, min(concurrency, len(rest) or 1))) as pool:
        to_run = list(pool.map(lambda i: _prepare(i, plan.jobs[i], tasks[i]), rest))

    if to_run:
        if callable(client) and not hasattr(client, "submit"):
            client = client()
        _run_tasks(client, to_run, outcomes, plan, events, topic, keep_going, on_outcome, done)
    finished = [o for o in outcomes if o is not None]
    return BatchResult([*plan.failures, *plan.skipped, *finished])


def _run_tasks(
    client: Any,
    to_run: Sequence[_Prepared],
    outcomes: list[ImageOutcome | None],
    plan: SyncPlan,
    events: EventSink | None,
    topic: str,
    keep_going: bool,
    on_outcome: Callable[[ImageOutcome, int, int], None] | None,
    done: int,
) -> None:
    as_completed = require_distributed().as_completed
    workers = sorted(client.ncores())  # asked of the scheduler now, not a cached view
    if not workers:
        raise ClusterError("the Dask cluster has no worker")
    chosen = assign_by_bytes([p.size for p in to_run], workers)
    run_id = uuid.uuid4().hex[:12]
    if events is not None:

        def handler(event: tuple[float, dict[str, Any]]) -> None:
            try:
                events(event_from_message(event[1]))
            except Exception:  # a display's failure never stops the run
                log.debug("transfer event handler failed", exc_info=True)

        client.subscribe_topic(topic, handler)
    futures: dict[Any, int] = {}
    order = sorted(range(len(to_run)), key=lambda k: -to_run[k].size)
    try:
        for rank, k in enumerate(order):
            p = to_run[k]
            future = client.submit(
                run_image_task,
                p.task,
                key=f"regstore-image-{run_id}-{p.index}",
                workers=[chosen[k]],
                allow_other_workers=True,
                priority=len(order) - rank,  # the largest first (LPT)
                retries=TASK_RETRIES,
                pure=False,
            )
            futures[future] = p.index
        total = len(plan.jobs)
        stopped = threading.Event()
        for future in as_completed(list(futures), loop=client.loop):
            i = futures.pop(future)
            outcome = outcomes[i] = _outcome_of(future, plan.jobs[i])
            done += 1
            if on_outcome is not None:
                on_outcome(outcome, done, total)
            if outcome.status == "failed" and not keep_going:
                stopped.set()
                break
        if stopped.is_set() and futures:
            # what finished meanwhile keeps its outcome; a task a worker runs may still
            # finish after its cancellation (its thread is not stopped): not "not attempted"
            # (a task that raised, KilledWorker, has its outcome too: failed)
            finished = {f: i for f, i in futures.items() if f.status in ("finished", "error")}
            client.cancel([f for f in futures if f not in finished])
            for future, i in futures.items():
                job = plan.jobs[i]
                outcomes[i] = (
                    _outcome_of(future, job)
                    if future in finished
                    else ImageOutcome(
                        str(job.source), str(job.destination), "cancelled", error=CANCELLED_HERE
                    )
                )
            futures.clear()
    except BaseException:  # Ctrl-C, a lost scheduler: nothing of this run goes on
        with contextlib.suppress(Exception):
            client.cancel(list(futures), force=True)
        raise
    finally:
        if events is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)


#: A cluster's fail-fast cannot tell a task a worker had started from one still queued
CANCELLED_HERE = (
    "cancelled: an earlier image failed (fail-fast); a worker may have moved it already"
)


def _outcome_of(future: Any, job: PlannedJob) -> ImageOutcome:
    """The outcome a finished task reports; a task that raised failed its image."""
    try:
        outcome: ImageOutcome = future.result()
    except Exception as exc:  # KilledWorker, a lost scheduler: this image failed
        outcome = ImageOutcome(
            str(job.source), str(job.destination), "failed", error=_task_error(exc)
        )
    return outcome


def _task_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"the cluster could not run this image: {type(exc).__name__}: {text}"
