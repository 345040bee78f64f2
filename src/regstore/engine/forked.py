"""Shares of a batch moved by forked child processes, their outcomes and events gathered here.

One Python process moving many small images is held to one core by the GIL, and its threads
spend much of it handing the GIL to each other around every system call: a first mirror of
300 small images here took 4.4 s in one process (0.85 of a core, the rest of the machine
idle or the registry's) and 3.2-3.5 s in two, with less CPU in all. So a large sync can run
its images in a few processes: :class:`Forked` forks one child per share of the batch's job
indexes; each runs its share (the caller's ``run``, as it would have in-process) and sends
its outcomes back through a pipe, with its transfer events as they happen, so that one
progress display and the plugin observers of this process see them all.

Forking, not spawning: a child starts with what this process has imported and planned (no
second start-up, nothing to pickle but results). The price is what fork demands:

- no other thread may be running when the children are forked (a lock held by one would
  stay held in the child forever): :meth:`Forked.start` refuses (``UnsupportedError``)
  rather than fork then;
- nothing a child uses may be shared with this process but files: the caller closes its
  pooled connections first (a child opens its own), and a child's store writes reach other
  processes through the filesystem (a memory store's would not: the caller keeps those in
  one process);
- a child leaves with ``os._exit``: it never runs this process's ``atexit`` work.

A child that dies without reporting (killed, out of memory) fails the images of its share
with a word on how it ended; what it wrote stays, whole or staged (the store's contract), for
the next run to skip or resume. An interrupt here stops every child (SIGTERM) and waits for
them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import signal
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from regstore.errors import UnsupportedError
from regstore.events import EventSink, TransferEvent

from .model import ImageOutcome

__all__ = ["Forked", "can_fork", "deal"]

log = logging.getLogger("regstore.engine")

#: The exit code of a child whose ``run`` raised (its traceback is on stderr).
CHILD_FAILED = 70
#: The exit code of a child interrupted (Ctrl-C reaches every process of the group).
INTERRUPTED = 130
_HEADER = struct.Struct("!I")

#: What a child runs: its share of job indexes and the sink for its events (None when nobody
#: listens here); returns one outcome per index, in the share's order.
ShareRun = Callable[[Sequence[int], EventSink | None], Sequence[ImageOutcome]]


def can_fork() -> bool:
    """Whether this platform forks the way :class:`Forked` needs (Linux; macOS's system
    libraries are not safe in a forked child of a process that used them)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def deal(count: int, shares: int) -> list[list[int]]:
    """The indexes ``0..count-1`` dealt into ``shares`` shares, round-robin (neighbouring jobs,
    often tags of one repository sharing layers, go to different processes at about the
    same time, and each share gets some of every part of the batch)."""
    shares = max(1, min(shares, count))
    return [list(range(k, count, shares)) for k in range(shares)]


def _portable(outcome: ImageOutcome) -> ImageOutcome:
    """The outcome as it can cross a pipe: without its exception object when that one does
    not survive pickling (the error text stays)."""
    try:
        pickle.loads(pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return dataclasses.replace(outcome, exception=None)
    return outcome


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child(share: Sequence[int], run: ShareRun, fd: int, events: bool) -> int:
    """A child's whole life but its exit: run the share, send events and outcomes."""
    lock = threading.Lock()

    def send(message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with lock:  # the share's threads send events at once: one whole frame at a time
            _write_all(fd, _HEADER.pack(len(data)) + data)

    def forward(event: TransferEvent) -> None:
        send(("event", event))

    try:
        outcomes = list(run(share, forward if events else None))
        if len(outcomes) != len(share):
            raise RuntimeError(f"{len(outcomes)} outcomes for a share of {len(share)} images")
        send(("outcomes", [_portable(o) for o in outcomes]))
    except KeyboardInterrupt:  # Ctrl-C reached the whole process group: no traceback each
        return INTERRUPTED
    except BaseException:  # reported by the parent as the share's failure; details here
        traceback.print_exc()
        return CHILD_FAILED
    return 0


@dataclasses.dataclass
class _Child:
    pid: int
    fd: int
    share: list[int]
    outcomes: list[ImageOutcome] | None = None
    status: int | None = None


class Forked:
    """Children moving shares of a batch: forked by :meth:`start`, gathered by :meth:`gather`
    (start whatever needs threads, a progress display, in between)."""

    def __init__(self, children: list[_Child]) -> None:
        self._children = children

    @classmethod
    def start(cls, shares: Sequence[Sequence[int]], run: ShareRun, *, events: bool) -> Forked:
        """Fork one child per share, each calling ``run`` on its share (with a sink that
        forwards its events here when ``events``).

        Raises:
            UnsupportedError: this platform cannot fork, or another thread is running.
        """
        if not can_fork():
            raise UnsupportedError("forking worker processes needs Linux")
        if threading.active_count() > 1:
            raise UnsupportedError(
                f"{threading.active_count() - 1} other thread(s) running: forking now could "
                "leave a child waiting forever on a lock one of them held"
            )
        children: list[_Child] = []
        try:
            for share in shares:
                read_fd, write_fd = os.pipe()
                sys.stdout.flush()  # nothing buffered here is written twice
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the child: never returns
                    code = CHILD_FAILED
                    try:
                        os.close(read_fd)
                        for earlier in children:
                            os.close(earlier.fd)
                        code = _child(list(share), run, write_fd, events)
                    finally:
                        with contextlib.suppress(Exception):
                            sys.stdout.flush()
                            sys.stderr.flush()
                        os._exit(code)
                os.close(write_fd)
                children.append(_Child(pid, read_fd, list(share)))
        except BaseException:
            cls(children).stop()
            raise
        return cls(children)

    def gather(
        self, events: EventSink | None, describe: Callable[[int], tuple[str, str]]
    ) -> dict[int, ImageOutcome]:
        """Every child's outcomes by job index, once all have ended; its events go to
        ``events`` meanwhile (from one thread per child). The images of a child that ended
        without reporting are failed; ``describe`` names job ``i``'s source and destination
        for those outcomes. An interrupt stops the children and is raised."""
        readers = [
            threading.Thread(
                target=self._read, args=(child, events), name=f"regstore-share-{child.pid}"
            )
            for child in self._children
        ]
        try:
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join()
            for child in self._children:
                if child.status is None:  # (not when stop() reaped it already)
                    child.status = os.waitpid(child.pid, 0)[1]
        except BaseException:
            self.stop()
            raise
        found: dict[int, ImageOutcome] = {}
        for child in self._children:
            if child.outcomes is not None:
                found.update(zip(child.share, child.outcomes, strict=True))
                continue
            why = _ended(child.status)
            for index in child.share:
                source, destination = describe(index)
                found[index] = ImageOutcome(
                    source,
                    destination,
                    "failed",
                    error=f"the worker process moving it ended without a report ({why}); what "
                    "it wrote is whole or staged for the next run",
                )
        return found

    def _read(self, child: _Child, events: EventSink | None) -> None:
        with os.fdopen(child.fd, "rb") as stream:
            while True:
                header = stream.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return  # the child is gone (a report, if any, came before)
                (size,) = _HEADER.unpack(header)
                body = stream.read(size)
                if len(body) < size:
                    return
                kind, value = pickle.loads(body)
                if kind == "outcomes":
                    child.outcomes = value
                elif kind == "event" and events is not None:
                    try:
                        events(value)
                    except Exception as exc:  # a display's failure never loses the outcomes
                        log.debug("forwarding an event failed: %s", exc)

    def stop(self) -> None:
        """End every child still running (SIGTERM) and wait for it."""
        for child in self._children:
            if child.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        for child in self._children:
            if child.status is None:
                with contextlib.suppress(ChildProcessError):
                    child.status = os.waitpid(child.pid, 0)[1]


def _ended(status: int | None) -> str:
    if status is None:
        return "not waited for"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(number).name}"
        return f"killed by signal {number}"
    code = os.waitstatus_to_exitcode(status)
    if code == CHILD_FAILED:
        return "its work raised an error, shown on stderr"
    if code == INTERRUPTED:
        return "interrupted"
    return f"exit code {code}"
