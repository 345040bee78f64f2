"""One retry policy for every request to a registry, and the budget of tries a piece of work gets.

A leaf (standard library and :mod:`regstore.errors` only): the client's transport spends from
these budgets and the engine opens one per blob, so both import it and neither imports the
other for it. :mod:`regstore.client.retry` re-exports it under its old name.

:class:`RetryPolicy` says what is worth trying again — a connection that failed or broke, a
body cut short, ``408``, ``429`` and the 5xx answers but ``501``/``505`` — and how long to wait:
``Retry-After`` when the registry sent one (capped by ``max_retry_after``), otherwise
exponential backoff with jitter.

:class:`RetryBudget` counts the retries one piece of work may spend. The transport gives every
request a budget of its own (``retries`` retries), unless a budget is *active* in the current
context (``with budget: ...``): then every request made there spends from it. The engine
activates one budget per blob it uploads or downloads, so the POST, the chunk PATCHes, the
status GETs, the HEAD checks and the closing PUT of an upload — or the GETs of a download and
the ranged resumes of its cut body — share one bound: retries are counted per blob,
not per request, and the final error names the blob, the last request and its answer
(:class:`~regstore.errors.RetriesExhaustedError`).
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from regstore.errors import RegistryError, RegstoreError, RetriesExhaustedError, TransportError

__all__ = [
    "RetryBudget",
    "RetryPolicy",
    "active_budget",
    "is_transient",
    "retryable_status",
]

log = logging.getLogger("regstore.client.retry")  # its old name: logging setups use it

_ACTIVE: contextvars.ContextVar[RetryBudget | None] = contextvars.ContextVar(
    "regstore_retry_budget", default=None
)


def retryable_status(status: int) -> bool:
    """True for answers that may succeed when asked again: 408, 429 and 5xx but 501/505."""
    return status in (408, 429) or (500 <= status < 600 and status not in (501, 505))


def is_transient(exc: BaseException) -> bool:
    """True for a failure worth retrying: a broken or failed connection (:class:`TransportError`)
    or a registry answer with a retryable status (5xx, 429, 408)."""
    return isinstance(exc, (TransportError, RegistryError)) and exc.retryable


def active_budget() -> RetryBudget | None:
    """The budget requests made in this context spend from, if one is active."""
    return _ACTIVE.get()


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry and how long to wait; one per client, shared by the transport and engine.

    ``retries`` is how many retries one request gets (and the base of a blob's budget);
    ``backoff`` the first pause in seconds, doubled on each consecutive failure up to
    ``max_backoff``, with jitter; ``max_retry_after`` caps a registry's ``Retry-After``;
    ``sleep`` waits (injectable for tests).
    """

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")

    def delay(self, streak: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``streak``-th failure in a row (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.max_backoff, self.backoff * 2 ** max(streak - 1, 0))
        return float(base * (0.5 + random.random() / 2))

    def budget(self, subject: str, retries: int | None = None) -> RetryBudget:
        """A budget of ``retries`` (default: the policy's) for the work called ``subject``."""
        return RetryBudget(self, subject, self.retries if retries is None else retries)


class RetryBudget:
    """The retries left to one piece of work (one request, or one blob's whole upload).

    :meth:`try_again` records a failure and, if a retry is left, waits and says so;
    :meth:`retry_or_raise` does the same for a regstore error and raises
    :class:`~regstore.errors.RetriesExhaustedError` when none is left. :meth:`progress` marks
    headway (a chunk accepted): the backoff starts small again, the budget does not refill.
    Used as a context manager, the budget is active for the requests made inside.
    Thread-safe.
    """

    def __init__(self, policy: RetryPolicy, subject: str, retries: int) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.policy = policy
        self.subject = subject
        self.retries = retries
        self.used = 0
        self.last = ""
        self._streak = 0
        self._lock = threading.Lock()
        self._tokens: list[contextvars.Token[RetryBudget | None]] = []

    @property
    def left(self) -> int:
        """Retries not yet spent."""
        return self.retries - self.used

    def try_again(self, reason: str, retry_after: float | None = None) -> bool:
        """After a failure described by ``reason``: wait and return True if a retry is left,
        else return False at once."""
        with self._lock:
            self.last = reason
            if self.used >= self.retries:
                return False
            self.used += 1
            self._streak += 1
            used, streak = self.used, self._streak
        delay = self.policy.delay(streak, retry_after)
        log.info(
            "%s: %s; retry %d of %d in %.2f s", self.subject, reason, used, self.retries, delay
        )
        self.policy.sleep(delay)
        return True

    def retry_or_raise(self, exc: RegstoreError) -> None:
        """After the transient failure ``exc``: wait and return if a retry is left, else raise
        :class:`~regstore.errors.RetriesExhaustedError` (chained to ``exc``)."""
        retry_after = exc.http.retry_after if exc.http is not None else None
        if not self.try_again(str(exc), retry_after):
            raise RetriesExhaustedError(self.subject, self.used, exc) from exc

    def progress(self) -> None:
        """The work moved forward: the next failure waits the shortest backoff again."""
        with self._lock:
            self._streak = 0

    def __enter__(self) -> RetryBudget:
        self._tokens.append(_ACTIVE.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.reset(self._tokens.pop())

    def __repr__(self) -> str:
        return f"<RetryBudget {self.subject!r} {self.used}/{self.retries}>"
