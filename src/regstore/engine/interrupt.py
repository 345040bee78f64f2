"""Blob moves that stop at their next chunk once their batch is interrupted.

An interrupted batch (Ctrl-C, SIGTERM, the caller's own exception) cancels the moves not yet
started and waits for those running. A move of a large blob could run for minutes more: a
chunked push sent every remaining chunk, and then committed the blob. The pool runs each move
with its batch's stop event (:func:`run_stoppable`), and the loops that move bytes ask
:func:`check` before each buffer: a pull stops writing (what it staged stays for the next
run), a push cuts the request body it is sending and cancels its upload session (the
registry never commits the blob, nor keeps the bytes sent).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from regstore.errors import InterruptedTransferError

__all__ = ["check", "run_stoppable"]

_T = TypeVar("_T")
_local = threading.local()


def run_stoppable(stop: threading.Event, call: Callable[[], _T]) -> _T:
    """``call()`` in this thread, which :func:`check` stops once ``stop`` is set."""
    _local.stop = stop
    try:
        return call()
    finally:
        _local.stop = None


def check() -> None:
    """Raise InterruptedTransferError when this thread's batch was interrupted."""
    stop: threading.Event | None = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise InterruptedTransferError("interrupted: no more chunks are moved")
