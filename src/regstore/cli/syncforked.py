"""``regstore sync --processes N``: a large sync's images moved by a few forked processes.

The policy (how many, when) and what the CLI owns around the fork (its connections, its
stores, the progress display); the forking itself is :mod:`regstore.engine.forked`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from regstore import plugins
from regstore.engine.forked import Forked, can_fork, deal
from regstore.engine.model import BatchResult
from regstore.engine.sync import SyncPlan, run_sync, settle_unchanged
from regstore.errors import UnsupportedError

from . import startup
from .syncscale import SHARED_BACKENDS, shares_store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from regstore.client.early import EarlyHeads
    from regstore.engine.model import ImageOutcome
    from regstore.events import EventSink
    from regstore.store import ObjectStore

    from .app import AppState
    from .progress import ProgressDisplay

__all__ = [
    "AUTO_MIN_IMAGES",
    "AUTO_MOST",
    "SHARED_BACKENDS",
    "auto_processes",
    "default_processes",
    "quota_cpus",
    "run_here",
    "run_plan",
    "run_sync_forked",
    "shares_store",
]

log = logging.getLogger("regstore.cli")

#: A sync of fewer images than this stays in one process unless --processes says otherwise:
#: a second process pays for its own connections, tokens and look-ahead.
AUTO_MIN_IMAGES = 32
#: At most this many processes when their number is not given.
AUTO_MOST = 4


def _cpus() -> int:
    """The CPUs this process may use: its affinity, within the CPU quota of its cgroup (a
    container limited to one CPU on a large host)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = quota_cpus()
    return cpus if quota is None else min(cpus, quota)


def quota_cpus(
    root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The CPUs the cgroup v2 quotas (``cpu.max``) of this process's cgroup and of those above
    it allow, rounded up; None without any (no quota, cgroup v1, no cgroup filesystem)."""
    try:
        lines = own.read_text().splitlines()
        relative = next(line[3:] for line in lines if line.startswith("0::"))
    except (OSError, StopIteration):
        relative = "/"
    path = (root / relative.strip().lstrip("/")).resolve()
    allowed: int | None = None
    while True:
        try:
            quota, period = (path / "cpu.max").read_text().split()[:2]
            if quota != "max":
                cpus = max(1, -(-int(quota) // int(period)))
                allowed = cpus if allowed is None else min(allowed, cpus)
        except (OSError, ValueError):
            pass  # no quota file here (the root has none): the ones above still count
        if path == root.resolve() or path.parent == path:
            return allowed
        path = path.parent


def auto_processes(
    state: AppState, plan: SyncPlan, target_store: ObjectStore | None, *, keep_going: bool
) -> int:
    """How many processes a sync takes when ``--processes`` is not given: for at least
    :data:`AUTO_MIN_IMAGES` images into a directory store, :func:`default_processes`, when
    the blob concurrency is the default one (each process moves that many blobs: one given,
    by ``--concurrency`` or the sync file, bounds the whole run, kept by one process), images
    keep going after a failure (``--fail-fast`` stops at once, in one process) and no store is
    traced (``-vv`` prints one process's store metrics); else 1. A registry target stays in
    one process: processes pushing a blob their shares share into one registry can race."""
    settings = state.settings
    if (
        settings.concurrency is not None
        or plan.concurrency is not None
        or not keep_going
        or settings.verbose >= 2
    ):
        return 1
    if target_store is None or not shares_store(target_store):
        return 1
    return default_processes(len(plan.jobs))


def default_processes(images: int) -> int:
    """The processes a sync of ``images`` images takes when nothing else rules it out: one
    per CPU, at most :data:`AUTO_MOST` and one per half of :data:`AUTO_MIN_IMAGES` images,
    where this platform forks; 1 below :data:`AUTO_MIN_IMAGES` images."""
    if not can_fork() or images < AUTO_MIN_IMAGES:
        return 1
    return max(1, min(_cpus(), AUTO_MOST, images // (AUTO_MIN_IMAGES // 2)))


def run_plan(
    state: AppState,
    plan: SyncPlan,
    events: EventSink | None,
    *,
    keep_going: bool,
    referrer_types: Sequence[str],
) -> BatchResult:
    """Run ``plan`` in this process with the run's settings (concurrency, chunking)."""
    return run_sync(
        plan,
        concurrency=state.settings.concurrency,
        events=events,
        keep_going=keep_going,
        referrer_types=referrer_types,
        chunk_size=state.chunk_size,
        monolithic_threshold=state.monolithic_threshold,
    )


def run_here(
    state: AppState,
    plan: SyncPlan,
    processes: int,
    display: ProgressDisplay,
    *,
    asked: bool,
    keep_going: bool,
    referrer_types: Sequence[str],
    early: EarlyHeads | None = None,
) -> tuple[BatchResult, int]:
    """Run ``plan`` on this machine, in ``processes`` forked processes when more than one, and
    report it through ``display``: the batch (in plan order) and the processes it took.

    Before forking, the unchanged images are settled here (:func:`settle_unchanged`: their
    digests learned in bulk, as one process would), and only the rest is shared out; its
    number of processes is decided again for what is left unless ``asked`` (``--processes``).
    A re-sync with nothing or little to move then forks nothing, and each child gets a share
    of real work. Forking refused, the plan runs in this process (and, when ``asked``, a
    warning says so). With source digests asked ``early``, the unchanged are settled so in
    one process too; its threads are done before anything forks.
    """
    settled: dict[int, ImageOutcome] = {}
    rest = plan
    several = min(processes, len(plan.jobs)) > 1
    # In one process too, when digests were asked early: not after a failure with --fail-fast
    # (what it did not start is reported cancelled), nor where nothing would be learned.
    alone = early is not None and early.asked_digests and (keep_going or not plan.failures)
    if several or alone:
        settled = settle_unchanged(plan, early)
        if settled:
            left = [i for i in range(len(plan.jobs)) if i not in settled]
            rest = SyncPlan(jobs=[plan.jobs[i] for i in left], concurrency=plan.concurrency)
            if several and not asked:  # (one process stays one: --fail-fast, a store, ...)
                processes = default_processes(len(left))
    if early is not None:
        early.close()  # (nothing left running: a fork may follow)
    if rest.jobs:
        # What moves blobs and the HTTP client, loaded as the rest of the start-up (collector
        # paused) and before any fork (each child would load its own: requests and ssl cost a
        # child 60-80 ms and thousands of page faults): a sync that settled everything never does.
        with startup.imports():
            import regstore.client.client
            import regstore.engine.transfer  # noqa: F401
    forked: tuple[BatchResult, int] | None = None
    if min(processes, len(rest.jobs)) > 1:
        forked = run_sync_forked(
            state, rest, processes, display, keep_going=keep_going, referrer_types=referrer_types
        )
        if forked is None and asked:
            state.output.warning("the images are moved in one process (-v says why)")
    if forked is not None:
        batch, processes = forked
    else:
        processes = 1  # (also when forking was refused)
        with display:
            batch = run_plan(
                state, rest, display.sink, keep_going=keep_going, referrer_types=referrer_types
            )
    if rest is plan:
        return batch, processes
    ran = iter(batch.outcomes)  # the rest's own, in its order: it has no failures nor skipped
    jobs = [settled[i] if i in settled else next(ran) for i in range(len(plan.jobs))]
    return BatchResult([*plan.failures, *plan.skipped, *jobs]), processes


def run_sync_forked(
    state: AppState,
    plan: SyncPlan,
    processes: int,
    display: ProgressDisplay,
    *,
    keep_going: bool,
    referrer_types: Sequence[str],
) -> tuple[BatchResult, int] | None:
    """Run ``plan``'s images in up to ``processes`` forked processes (each with its share,
    dealt round-robin) and report them all here, through ``display``: the batch and the
    number of processes forked. None, having forked nothing, when forking is refused (another
    thread running, the system out of processes): the caller runs the plan itself."""
    # No pooled connection may be shared with a child: each opens its own. (The stores stay
    # open: a directory store holds no connection, and is made durable by each child.)
    state.close_connections()
    sink: EventSink | None = display.sink
    if sink is None and plugins.has_event_observers():
        sink = plugins.emit_event  # observers of this process hear the children's events

    def run(share: Sequence[int], events: EventSink | None) -> list[ImageOutcome]:
        part = SyncPlan(jobs=[plan.jobs[i] for i in share], concurrency=plan.concurrency)
        try:
            batch = run_plan(
                state, part, events, keep_going=keep_going, referrer_types=referrer_types
            )
        finally:
            state.close()  # this child's stores durable, its connections closed
        return batch.outcomes

    shares = deal(len(plan.jobs), processes)
    try:
        children = Forked.start(shares, run, events=sink is not None)
    except UnsupportedError as exc:
        log.info("sync in one process: %s", exc)
        return None

    def describe(index: int) -> tuple[str, str]:
        job = plan.jobs[index]
        return str(job.source), str(job.destination)

    try:
        with display:
            found = children.gather(sink, describe)
    finally:  # (nothing left to do after a gather; a display that failed to start left them)
        children.stop()
        children.close()
    outcomes = [*plan.failures, *plan.skipped, *(found[i] for i in range(len(plan.jobs)))]
    return BatchResult(outcomes=outcomes), len(shares)
