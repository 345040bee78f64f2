"""Progress display driven by the engine's transfer events.

Three modes, chosen by :func:`make_progress`:

- ``bars`` when stderr is a terminal: live rich progress bars, one per blob in flight and one
  overall (bytes, rate, ETA); each finished blob leaves a line above the bars;
- ``lines`` when stderr is not a terminal: one plain line per finished blob or manifest
  (``pulled sha256:0123456789ab 12.3 MiB``);
- ``off`` with ``--json`` or ``--quiet``: nothing.

Progress goes to stderr, so stdout holds only the result. Events still reach plugin observers
(the ``regstore_transfer_event`` hook) while the display is on. A line may carry a failure's
text (a registry's message): it is cleaned like every other printed line (secrets masked,
control characters escaped).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported when bars are shown (start-up time of quiet runs)
    from rich.progress import Progress, TaskID

from regstore import plugins
from regstore.engine.progress import Progress as Totals
from regstore.events import EventKind, TransferEvent
from regstore.safetext import printable

from .output import format_size, short_digest

__all__ = ["ProgressDisplay", "make_progress"]

_DONE_VERB = {"pull": "pulled", "push": "pushed", "copy": "copied", "verify": "verified"}


#: the displays drawing bars now: a warning is printed through the newest (above its bars)
live: list[ProgressDisplay] = []


class ProgressDisplay:
    """A callable event sink; use as a context manager around the operation."""

    def __init__(
        self,
        mode: str,
        stream: IO[str] | None = None,
        clean: Callable[[str], str] = printable,
    ) -> None:
        if mode not in ("bars", "lines", "off"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.clean = clean
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._tasks: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._forward = plugins.has_event_observers()
        #: the one aggregation of the run's events (the overall bar reads it)
        self.totals = Totals()

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        if self.mode == "bars":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            console = Console(file=self.stream, highlight=False)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                TaskProgressColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                refresh_per_second=8,
            )
            self._progress.start()
            self._overall = self._progress.add_task("[bold]total[/]", total=0)
            live.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self in live:
            live.remove(self)
        if self._progress is not None:
            if self._overall is not None:
                task = self._progress.tasks[self._overall]
                if not task.total:
                    # nothing moved: show a full bar rather than an empty one
                    self._progress.update(self._overall, total=1, completed=1)
            self._progress.stop()

    @property
    def sink(self) -> ProgressDisplay | None:
        """What to hand the engine as ``events``: None when off (the engine then informs plugin
        observers itself, and builds no events when nobody listens)."""
        return None if self.mode == "off" else self

    def note(self, text: str) -> None:
        """Print one line among the finished ones (nothing when off), e.g. an image done."""
        if self.mode == "off":
            return
        text = self.clean(text)
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    # -- events ---------------------------------------------------------------------------------

    def __call__(self, event: TransferEvent) -> None:
        if self._forward:
            plugins.emit_event(event)
        if self.mode == "off":
            return
        self.totals(event)
        with self._lock:
            if self.mode == "bars":
                self._bars(event)
            else:
                self._lines(event)

    def _finished_text(self, event: TransferEvent) -> str | None:
        digest = short_digest(event.digest)
        kind = event.kind
        if kind is EventKind.VERIFIED:
            size = event.total if event.total >= 0 else self._sizes.get(event.digest, -1)
            verb = _DONE_VERB.get(event.operation, event.operation)
            return f"{verb} {digest} {format_size(size)}"
        if kind is EventKind.SKIPPED:
            return f"exists {digest} (skipped)"
        if kind is EventKind.MOUNTED:
            return f"mounted {digest}"
        if kind is EventKind.FAILED:
            return self.clean(f"failed {digest}: {event.error or 'unknown error'}")
        if kind is EventKind.MANIFEST:
            tag = f" (tag {event.tag})" if event.tag else ""
            return self.clean(f"wrote manifest {digest}{tag}")
        return None

    def _lines(self, event: TransferEvent) -> None:
        if event.kind is EventKind.STARTED:
            self._sizes[event.digest] = event.total
            return
        text = self._finished_text(event)
        if text is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def overall(self) -> tuple[int, int]:
        """The overall bar's ``(done, total)`` bytes now: every blob of the images planned so
        far (the engine announces a plan before its first blob moves), blobs that failed left
        out of the total, so that it reaches 100 % only once everything is done."""
        snap = self.totals.snapshot()
        return max(0, snap.bytes_done), max(0, snap.bytes_total - snap.bytes_failed)

    def _bars(self, event: TransferEvent) -> None:
        progress, overall = self._progress, self._overall
        assert progress is not None and overall is not None
        digest = event.digest
        if event.kind in (EventKind.PLANNED, EventKind.WARNING):
            pass  # no blob of its own moves: only the overall bar changes
        elif event.kind is EventKind.STARTED:
            total = event.total if event.total >= 0 else None
            self._sizes[digest] = event.total
            if digest not in self._tasks:
                self._tasks[digest] = progress.add_task(
                    short_digest(digest), total=total, completed=event.offset
                )
        elif event.kind is EventKind.PROGRESS:
            task = self._tasks.get(digest)
            if task is not None:
                progress.update(task, advance=event.nbytes)
        else:
            task = self._tasks.pop(digest, None)
            if task is not None:
                progress.remove_task(task)
        done, total = self.overall()
        progress.update(overall, total=total, completed=done)
        if event.kind in (EventKind.STARTED, EventKind.PROGRESS, EventKind.PLANNED):
            return
        text = self._finished_text(event)
        if text is not None:
            progress.console.print(text, markup=False, highlight=False)


def make_progress(
    *,
    json_mode: bool,
    quiet: bool,
    stream: IO[str] | None = None,
    clean: Callable[[str], str] = printable,
) -> ProgressDisplay:
    """The display for this run: ``off`` with --json/--quiet, bars on a terminal, else lines.
    ``clean`` makes a line safe to print (the run's Output.shown: secrets masked too)."""
    stream = stream if stream is not None else sys.stderr
    if json_mode or quiet:
        return ProgressDisplay("off", stream, clean)
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return ProgressDisplay("bars" if is_tty else "lines", stream, clean)
