"""Sending transfer events to an observer: a callback, or the plugin hook by default."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from regstore import plugins
from regstore.events import EventKind, EventSink, Operation, TransferEvent

if TYPE_CHECKING:
    from regstore.manifest import Descriptor

__all__ = ["EventSink", "Reporter"]

log = logging.getLogger("regstore.engine")


def _plugin_sink() -> EventSink | None:
    return plugins.emit_event if plugins.has_event_observers() else None


class _Failures:
    """How often one operation's observer raised: the first is logged with its traceback, the
    rest only at debug level (a broken callback would otherwise log once per blob event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def record(self) -> bool:
        """Count one failure; True for the first."""
        with self._lock:
            self.count += 1
            return self.count == 1


class Reporter:
    """Builds and sends events for one operation on one image.

    ``sink`` None sends to the ``regstore_transfer_event`` hook (when anyone listens); events
    are built only when someone receives them, so an unobserved transfer pays nothing.

    The sink is called on the engine's worker threads, several at once: it must be thread-safe
    (take a lock, or use :class:`regstore.engine.progress.Progress`) and quick. A sink that
    raises never breaks the transfer: its first failure is logged with the traceback, the
    others of the same operation at debug level (``callback_failures`` counts them all).
    """

    def __init__(self, operation: Operation, image: str, sink: EventSink | None = None) -> None:
        self.operation = operation
        self.image = image
        self._sink = sink if sink is not None else _plugin_sink()
        self._failures = _Failures()

    def for_image(self, image: str) -> Reporter:
        """The same sink for another image of the same operation."""
        clone = Reporter(self.operation, image)
        clone._sink = self._sink
        clone._failures = self._failures  # one "logged once" for the whole operation
        return clone

    @property
    def callback_failures(self) -> int:
        """How many times the sink raised during this operation."""
        return self._failures.count

    @property
    def active(self) -> bool:
        """True if events reach anyone."""
        return self._sink is not None

    def planned(self, blobs: Iterable[Descriptor]) -> None:
        """Announce every blob of a plan (``planned`` events) before the first one moves, so
        that an observer's total is known up front and 100 % means done."""
        if self._sink is None:
            return
        for desc in blobs:
            self.emit(EventKind.PLANNED, desc.digest, total=desc.size, media_type=desc.media_type)

    def emit(self, kind: EventKind, digest: str, **fields: object) -> None:
        """Send one event; an observer's failure is logged, never breaks the transfer."""
        if self._sink is None:
            return
        event = TransferEvent(kind, self.operation, self.image, str(digest), **fields)  # type: ignore[arg-type]
        try:
            self._sink(event)
        except Exception:  # an observer must not break a transfer
            if self._failures.record():
                log.exception(
                    "transfer event observer failed on %s (further failures of this %s are "
                    "logged at debug level only)",
                    event,
                    self.operation,
                )
            else:
                log.debug("transfer event observer failed again on %s", event, exc_info=True)
