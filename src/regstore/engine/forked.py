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

A child whose work raises fails the images of its share with the error's text (its traceback
is logged, at INFO); one that dies without reporting (killed, out of memory) fails them with a
word on how it ended. What it wrote stays, whole or staged (the store's contract), for the
next run to skip or resume. An interrupt here stops every child (SIGTERM) and waits for them;
a child whose parent dies, however, is ended by the kernel (``PR_SET_PDEATHSIG``), so nothing
goes on writing behind the back of whoever stopped the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable, Sequence

from regstore.errors import RegstoreError, UnsupportedError
from regstore.events import EventSink, TransferEvent

from .model import ImageOutcome

__all__ = ["CHILD_FAILED", "INTERRUPTED", "Forked", "ShareRun", "can_fork", "deal"]

log = logging.getLogger("regstore.engine")

#: The exit code of a child whose ``run`` raised (its error's text reaches the parent; its
#: traceback is logged, at INFO).
CHILD_FAILED = 70
#: The exit code of a child interrupted (Ctrl-C reaches every process of the group), or
#: whose parent is gone.
INTERRUPTED = 130
_HEADER = struct.Struct("!I")
#: prctl(2): the signal a child gets when its parent dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1

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
    return [list(range(k, count, shares)) for k in range(shares)] if count else []


def _portable(outcome: ImageOutcome) -> ImageOutcome:
    """The outcome as it can cross a pipe: without its exception object when that one does
    not survive pickling (the error text stays)."""
    import pickle  # (start-up: loaded where processes are forked, not by every sync)

    try:
        pickle.loads(pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return dataclasses.replace(outcome, exception=None)
    return outcome


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with(parent: int) -> None:
    """Have the kernel end this child (SIGTERM) when its parent dies, and end it now if the
    parent died already (before the request was made)."""
    # SIGTERM ends a child on the spot, whatever handler the parent had (the command line
    # stops its own work on one as on Ctrl-C, but a child is stopped by its parent or the
    # kernel: its threads must not go on writing meanwhile)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):  # without it, a child notices at its next write
        import ctypes  # (here: a Python built without ctypes still syncs)

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(INTERRUPTED)


def _child(share: Sequence[int], run: ShareRun, fd: int, events: bool) -> int:
    """A child's whole life but its exit: run the share, send events and outcomes."""
    lock = threading.Lock()

    import pickle

    def send(message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with lock:  # the share's threads send events at once: one whole frame at a time
            _write_all(fd, _HEADER.pack(len(data)) + data)

    def forward(event: TransferEvent) -> None:
        send(("event", event))

    try:
        outcomes = list(run(share, forward if events else None))
        if len(outcomes) != len(share):
            raise RegstoreError(f"{len(outcomes)} outcomes for a share of {len(share)} images")
        send(("outcomes", [_portable(o) for o in outcomes]))
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C reached the whole group, or the
        return INTERRUPTED  # parent is gone: nobody to tell
    except BaseException as exc:  # the share fails with the error's text, said by the parent
        log.info("a worker process failed", exc_info=True)  # (with -v: the CLI masks secrets)
        with contextlib.suppress(Exception):
            send(("failed", " ".join(f"{type(exc).__name__}: {exc}".split())))
        return CHILD_FAILED
    return 0


@dataclasses.dataclass
class _Child:
    pid: int
    fd: int
    share: list[int]
    outcomes: list[ImageOutcome] | None = None
    failure: str | None = None  #: the error its work raised, when it said
    status: int | None = None
    reading: bool = True  #: ``fd`` is still open here

    def close(self) -> None:
        if self.reading:
            self.reading = False
            with contextlib.suppress(OSError):
                os.close(self.fd)


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
            UnsupportedError: this platform cannot fork, another thread is running, or the
                system refused a fork (no child is left running then).
        """
        if not can_fork():
            raise UnsupportedError("forking worker processes needs Linux")
        if threading.active_count() > 1:
            raise UnsupportedError(
                f"{threading.active_count() - 1} other thread(s) running: forking now could "
                "leave a child waiting forever on a lock one of them held"
            )
        children: list[_Child] = []
        parent = os.getpid()
        # Ctrl-C is held back while forking: one landing in a new child before it is ready
        # would run this process's clean-up (and the CLI's error path) in the child.
        # (SIGTERM too: the command line turns it into an interrupt, which here would leave
        # a child forked and neither stopped nor waited for)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for share in shares:
                try:
                    read_fd, write_fd = os.pipe()
                except OSError as exc:  # EMFILE: the caller runs the batch itself
                    raise UnsupportedError(f"cannot open a worker's pipe: {exc}") from exc
                sys.stdout.flush()  # nothing buffered here is written twice
                sys.stderr.flush()
                try:
                    pid = os.fork()
                except OSError as exc:  # EAGAIN, ENOMEM: the caller runs the batch itself
                    os.close(read_fd)
                    os.close(write_fd)
                    raise UnsupportedError(f"cannot fork a worker process: {exc}") from exc
                if pid == 0:  # the child: never returns
                    code = CHILD_FAILED
                    try:
                        os.close(read_fd)
                        for earlier in children:
                            os.close(earlier.fd)
                        _die_with(parent)
                        signal.pthread_sigmask(signal.SIG_SETMASK, held)
                        code = _child(list(share), run, write_fd, events)
                    except KeyboardInterrupt:
                        code = INTERRUPTED
                    finally:
                        with contextlib.suppress(Exception):
                            sys.stdout.flush()
                            sys.stderr.flush()
                        os._exit(code)
                os.close(write_fd)
                children.append(_Child(pid, read_fd, list(share)))
        except BaseException:
            forked = cls(children)
            forked.stop()
            forked.close()
            # last: a Ctrl-C held back meanwhile is raised here, with no child left behind
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        forked = cls(children)
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a Ctrl-C held back: raised now
        except BaseException:
            forked.stop()
            forked.close()
            raise
        return forked

    def gather(
        self, events: EventSink | None, describe: Callable[[int], tuple[str, str]]
    ) -> dict[int, ImageOutcome]:
        """Every child's outcomes by job index, once all have ended; its events go to
        ``events`` meanwhile (from one thread per child). The images of a child that ended
        without reporting are failed; ``describe`` names job ``i``'s source and destination
        for those outcomes. An interrupt stops the children and is raised."""
        readers = [
            threading.Thread(
                target=self._read,
                args=(child, events),
                name=f"regstore-share-{child.pid}",
                daemon=True,  # an interrupted run does not wait for them to drain
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
            if child.failure is not None:
                error = f"the worker process moving it failed: {child.failure}"
            else:
                how = _ended(child.status)
                error = f"the worker process moving it ended without a report ({how})"
            for index in child.share:
                source, destination = describe(index)
                found[index] = ImageOutcome(
                    source,
                    destination,
                    "failed",
                    error=f"{error}; what it wrote is whole or staged for the next run",
                )
        return found

    def _read(self, child: _Child, events: EventSink | None) -> None:
        import pickle

        child.reading = False  # the stream below closes the descriptor
        with os.fdopen(child.fd, "rb") as stream:
            while True:
                header = stream.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return  # the child is gone (a report, if any, came before)
                (size,) = _HEADER.unpack(header)
                body = stream.read(size)
                if len(body) < size:
                    return
                try:
                    kind, value = pickle.loads(body)
                except Exception as exc:  # a message that cannot be read: the rest still can
                    log.debug("an unreadable message from worker %d: %s", child.pid, exc)
                    continue
                if kind == "outcomes":
                    child.outcomes = value
                elif kind == "failed":
                    child.failure = str(value)
                elif kind == "event" and events is not None:
                    try:
                        events(value)
                    except Exception as exc:  # a display's failure never loses the outcomes
                        log.debug("forwarding an event failed: %s", exc)

    def close(self) -> None:
        """Close the pipes not being read (children stopped without :meth:`gather`)."""
        for child in self._children:
            child.close()

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
    if code == INTERRUPTED:
        return "interrupted"
    return f"exit code {code}"
