"""Reading an index's child manifests ahead of the walk that plans them.

Each child read is a round trip to a registry: an index of ten platforms read one by one costs
ten of them. The walk (``transfer._add_manifest``) stays sequential and in order; through a
:class:`ManifestReads` it finds the next few reads of each index level already started on a
small process-wide pool, or makes a read itself.

Three rules keep this from costing more than it saves:

- a read is handed to the pool only when one of its threads is free, and one not yet running
  when the walk wants it is taken back and made by the walk itself: a walk never waits in a
  queue behind other images' reads (a stalled registry, an index of thousands of children),
  nor for a pool left without threads (after ``fork``);
- each index level keeps at most :data:`READS_AHEAD` reads started and not yet used, and
  drops the ones the walk has gone past, so a huge index or a failed plan leaves little
  reading behind;
- the pool's threads are daemons: Ctrl-C or the end of the program does not wait for a read
  in progress.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regstore.manifest import Manifest

    from .places import ImageSource

__all__ = ["READS_AHEAD", "ManifestLevel", "ManifestReads"]

#: Child manifests of one index level read ahead of the walk (and the pool's threads).
READS_AHEAD = 4


class _ReadPool:
    """A few daemon threads running calls into futures, taking a call only when one of them is
    free: the queue never holds more than the pool can start at once (a cancelled call is
    skipped)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0
        self._lock = threading.Lock()

    def try_submit(self, call: Callable[[], Any]) -> Future[Any] | None:
        """The future of ``call`` run by a free thread; None when every thread is busy."""
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self._size:
                try:
                    threading.Thread(
                        target=self._work, name=f"regstore-manifest-{self._threads}", daemon=True
                    ).start()
                except RuntimeError:  # no thread to be had (a process limit): read in the walk
                    return None
                self._threads += 1
            else:
                return None
            future: Future[Any] = Future()
            self._queue.put((future, call))
        return future

    def _work(self) -> None:
        while True:
            future, call = self._queue.get()
            if future.set_running_or_notify_cancel():  # else taken back by the walk, or dropped
                try:
                    future.set_result(call())
                except BaseException as exc:  # the walk raises it where it asks for the read
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1


_pool: _ReadPool | None = None
_pool_lock = threading.Lock()


def _read_pool() -> _ReadPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _ReadPool(READS_AHEAD)
        return _pool


def _forget_pool_after_fork() -> None:
    # a forked child has the pool's queue but none of its threads: it starts a pool of its own
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


class ManifestReads:
    """The child-manifest reads of one plan, shared by its index levels: a manifest that two
    levels list is read once, and none is read ahead once the walk has ``planned`` it (a level
    reaching a child that a nested index already planned starts no second read)."""

    def __init__(self, source: ImageSource, planned: Container[str]) -> None:
        self._source = source
        self._planned = planned  # the walk's own record, which it adds to as it goes
        self._started: dict[str, Future[Manifest]] = {}

    def level(self, digests: Sequence[str]) -> ManifestLevel:
        """The reads of one index level: ``digests`` in the order the walk will ask for them
        (left out: the children it will not read)."""
        return ManifestLevel(self, list(dict.fromkeys(digests)))

    def _start(self, digest: str) -> bool:
        """Start reading ``digest`` unless it was started or planned; False when the pool is
        busy (nothing started: the walk reads it itself, or a later top-up starts it)."""
        if digest in self._started or digest in self._planned:
            return True
        # in the walk's context, as if the walk read it (contextvars stay per read)
        context = contextvars.copy_context()
        started = _read_pool().try_submit(lambda: context.run(self._source.manifest, digest))
        if started is None:
            return False
        self._started[digest] = started
        return True

    def _take(self, digest: str) -> Manifest:
        started = self._started.pop(digest, None)
        if started is None or started.cancel():
            return self._source.manifest(digest)  # not running yet: read it here, now
        return started.result()

    def _drop(self, digest: str) -> None:
        started = self._started.pop(digest, None)
        if started is not None:
            started.cancel()  # a read already running ends in the background, unused


class ManifestLevel:
    """Reads of one index level's children, at most :data:`READS_AHEAD` ahead of the walk.

    Nothing starts before the walk asks for its first child (which it reads itself): the
    reads ahead are of the children after the one being read.
    """

    def __init__(self, reads: ManifestReads, order: list[str]) -> None:
        self._reads = reads
        self._order = order
        self._next = 0  # the walk has gone past every digest before this position
        self._ahead = 0  # offered to the pool: order[_next : _next + _ahead]

    def _top_up(self) -> None:
        while self._ahead < READS_AHEAD and self._next + self._ahead < len(self._order):
            if not self._reads._start(self._order[self._next + self._ahead]):
                return  # the pool is busy: the next top-up offers it again
            self._ahead += 1

    def get(self, digest: str) -> Manifest:
        """The manifest ``digest`` (a child of this level): the walk went past the ones listed
        before it, whose unused reads are dropped."""
        try:
            position = self._order.index(digest, self._next)
        except ValueError:  # not listed ahead: nothing was started for it here
            return self._reads._take(digest)
        for passed in self._order[self._next : min(position, self._next + self._ahead)]:
            self._reads._drop(passed)
        self._ahead = max(0, self._ahead - (position + 1 - self._next))
        self._next = position + 1
        self._top_up()  # the next ones read while this one is waited for
        return self._reads._take(digest)

    def close(self) -> None:
        """Drop the reads the walk did not use (a walk that ended early, or failed)."""
        for passed in self._order[self._next : self._next + self._ahead]:
            self._reads._drop(passed)
        self._next, self._ahead = len(self._order), 0
