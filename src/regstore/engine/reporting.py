"""Sending transfer events to an observer: a callback, or the plugin hook by default."""

from __future__ import annotations

import logging

from regstore import plugins
from regstore.events import EventKind, EventSink, Operation, TransferEvent

__all__ = ["EventSink", "Reporter"]

log = logging.getLogger("regstore.engine")


def _plugin_sink() -> EventSink | None:
    return plugins.emit_event if plugins.has_event_observers() else None


class Reporter:
    """Builds and sends events for one operation on one image.

    ``sink`` None sends to the ``regstore_transfer_event`` hook (when anyone listens); events
    are built only when someone receives them, so an unobserved transfer pays nothing.
    """

    def __init__(self, operation: Operation, image: str, sink: EventSink | None = None) -> None:
        self.operation = operation
        self.image = image
        self._sink = sink if sink is not None else _plugin_sink()

    def for_image(self, image: str) -> Reporter:
        """The same sink for another image of the same operation."""
        clone = Reporter(self.operation, image)
        clone._sink = self._sink
        return clone

    @property
    def active(self) -> bool:
        """True if events reach anyone."""
        return self._sink is not None

    def emit(self, kind: EventKind, digest: str, **fields: object) -> None:
        """Send one event; an observer's failure is logged, never breaks the transfer."""
        if self._sink is None:
            return
        event = TransferEvent(kind, self.operation, self.image, str(digest), **fields)  # type: ignore[arg-type]
        try:
            self._sink(event)
        except Exception:  # an observer must not break a transfer
            log.exception("transfer event observer failed on %s", event)
