"""``regstore sync --processes N``: a large sync's images moved by a few forked processes.

The policy (how many, when) and what the CLI owns around the fork (its connections, its
stores, the progress display); the forking itself is :mod:`regstore.engine.forked`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from regstore import plugins
from regstore.engine.forked import Forked, can_fork, deal
from regstore.engine.sync import SyncPlan, run_sync
from regstore.errors import UnsupportedError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from regstore.engine.model import BatchResult, ImageOutcome
    from regstore.events import EventSink
    from regstore.store import ObjectStore

    from .app import AppState
    from .progress import ProgressDisplay

__all__ = [
    "AUTO_MIN_IMAGES",
    "AUTO_MOST",
    "auto_processes",
    "default_processes",
    "run_sync_forked",
    "shares_store",
]

log = logging.getLogger("regstore.cli")

#: A sync of fewer images than this stays in one process unless --processes says otherwise:
#: a second process pays for its own connections, tokens and look-ahead.
AUTO_MIN_IMAGES = 32
#: At most this many processes when their number is not given.
AUTO_MOST = 4
#: Store backends whose writes other processes see (through the filesystem).
SHARED_BACKENDS = frozenset({"file"})


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def shares_store(store: ObjectStore) -> bool:
    """Whether forked processes can write into ``store`` together: its writes reach the
    others through the filesystem (a memory store's would stay in the child that made them;
    an object store's client may hold a thread of its own, which forking cannot take along)."""
    return store.describe().get("backend") in SHARED_BACKENDS


def auto_processes(
    state: AppState, plan: SyncPlan, target_store: ObjectStore | None, *, keep_going: bool
) -> int:
    """How many processes a sync takes when ``--processes`` is not given: one per CPU (at
    most :data:`AUTO_MOST`) for at least :data:`AUTO_MIN_IMAGES` images into a registry or a
    directory store, when the blob concurrency is the default one (each process moves that
    many blobs: a ``--concurrency`` given is a bound on the whole run, kept by one process),
    images keep going after a failure (``--fail-fast`` stops at once, in one process) and no
    store is traced (``-vv`` prints one process's store metrics); else 1."""
    settings = state.settings
    if settings.concurrency is not None or not keep_going or settings.verbose >= 2:
        return 1
    if target_store is not None and not shares_store(target_store):
        return 1
    return default_processes(len(plan.jobs))


def default_processes(images: int) -> int:
    """The processes a sync of ``images`` images takes when nothing else rules it out: one
    per CPU, at most :data:`AUTO_MOST` and one per half of :data:`AUTO_MIN_IMAGES` images,
    where this platform forks; 1 below :data:`AUTO_MIN_IMAGES` images."""
    if not can_fork() or images < AUTO_MIN_IMAGES:
        return 1
    return max(1, min(_cpus(), AUTO_MOST, images // (AUTO_MIN_IMAGES // 2)))


def run_sync_forked(
    state: AppState,
    plan: SyncPlan,
    processes: int,
    display: ProgressDisplay,
    *,
    keep_going: bool,
    referrer_types: Sequence[str],
) -> BatchResult | None:
    """Run ``plan``'s images in ``processes`` forked processes (each with its share, dealt
    round-robin) and report them all here, through ``display``; None, having forked nothing,
    when forking is refused (another thread running): the caller runs the plan itself."""
    # No pooled connection may be shared with a child: each opens its own. (The stores stay
    # open: a directory store holds no connection, and is made durable by each child.)
    state.close_connections()
    sink: EventSink | None = display.sink
    if sink is None and plugins.has_event_observers():
        sink = plugins.emit_event  # observers of this process hear the children's events

    def run(share: Sequence[int], events: EventSink | None) -> list[ImageOutcome]:
        part = SyncPlan(jobs=[plan.jobs[i] for i in share], concurrency=plan.concurrency)
        try:
            batch = run_sync(
                part,
                concurrency=state.settings.concurrency,
                events=events,
                keep_going=keep_going,
                referrer_types=referrer_types,
                chunk_size=state.chunk_size,
                monolithic_threshold=state.monolithic_threshold,
            )
        finally:
            state.close()  # this child's stores durable, its connections closed
        return batch.outcomes

    try:
        children = Forked.start(deal(len(plan.jobs), processes), run, events=sink is not None)
    except UnsupportedError as exc:
        log.info("sync in one process: %s", exc)
        return None

    def describe(index: int) -> tuple[str, str]:
        job = plan.jobs[index]
        return str(job.source), str(job.destination)

    with display:
        found = children.gather(sink, describe)
    from regstore.engine.model import BatchResult

    return BatchResult(
        outcomes=[*plan.failures, *plan.skipped, *(found[i] for i in range(len(plan.jobs)))]
    )
