"""A wrapper that changes nothing and remembers every call: for running the conformance suite
with a wrapper around a backend (:class:`regstore.testing.conformance.WrappedConformance`).

A backend that passes the suite with it proves that wrappers may sit around it (a backend that
relied on being the only plugin, or on pluggy internals, would not); the suite's results prove
that a wrapper which keeps the rules (:mod:`regstore.backends.wrappers`) changes nothing a
caller can see.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from regstore.store import StoreWrapper

__all__ = ["PASS_THROUGH", "PassThroughWrapper"]

#: The name :class:`~regstore.testing.conformance.WrappedConformance` registers it under.
PASS_THROUGH = "regstore.testing.pass-through"


class PassThroughWrapper(StoreWrapper):
    """Passes every store call through unchanged and records ``(operation, outcome)``.

    ``outcome`` is None for an answer, or the class name of the exception the call raised.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str | None]] = []

    @contextlib.contextmanager
    def around(self, operation: str) -> Iterator[None]:
        """Record the call and how it ended; let everything through."""
        outcome: str | None = None
        try:
            yield
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            with self._lock:
                self.calls.append((operation, outcome))
