"""Pacing requests when a registry says its rate limit is nearly spent.

Docker Hub sends ``RateLimit-Limit: 100;w=21600`` and ``RateLimit-Remaining: 76;w=21600``
(IETF draft "RateLimit header fields": a quota, then ``w=`` the window in seconds). When the
remaining quota falls to the low-water mark, :class:`RateLimitPacer` spreads the requests that
are left over the window — ``window / remaining`` seconds apart, capped at ``max_delay`` so a
six-hour window never freezes a process — instead of running into 429 at full speed. When the
quota is gone the registry's own 429 + ``Retry-After`` takes over (see the transport).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

__all__ = ["RateLimitPacer", "RateLimitState", "parse_ratelimit"]

_FIELD_RE = re.compile(r"\s*(\d+)\s*(?:;(.*))?", re.ASCII)
_WINDOW_RE = re.compile(r"(?:^|;)\s*w\s*=\s*(\d+)", re.ASCII)


class RateLimitState(NamedTuple):
    """The quota a response announced: ``remaining`` of ``limit`` per ``window`` seconds."""

    remaining: int
    limit: int | None
    window: float | None


def _parse_field(value: str | None) -> tuple[int, float | None] | None:
    if not value:
        return None
    # Several policies may be listed ("100;w=21600, 10;w=60"): the first is the binding one
    # for Docker Hub; take it.
    match = _FIELD_RE.fullmatch(value.split(",")[0])
    if match is None:
        return None
    window = None
    if match.group(2):
        wmatch = _WINDOW_RE.search(match.group(2))
        if wmatch:
            window = float(wmatch.group(1))
    return int(match.group(1)), window


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitState | None:
    """Read ``RateLimit-Remaining`` (and ``RateLimit-Limit``) from response headers."""
    remaining = _parse_field(headers.get("RateLimit-Remaining"))
    if remaining is None:
        return None
    limit = _parse_field(headers.get("RateLimit-Limit"))
    window = remaining[1] if remaining[1] is not None else (limit[1] if limit else None)
    return RateLimitState(remaining[0], limit[0] if limit else None, window)


class RateLimitPacer:
    """Delays the next request to a registry while its announced quota is low. Thread-safe.

    ``low_water`` is the fraction of the limit (or, without a known limit, ``low_count``
    requests) below which pacing starts; ``max_delay`` caps one pause. ``sleep`` and ``clock``
    are injectable for tests.
    """

    def __init__(
        self,
        *,
        low_water: float = 0.1,
        low_count: int = 10,
        max_delay: float = 30.0,
        default_window: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.low_water = low_water
        self.low_count = low_count
        self.max_delay = max_delay
        self.default_window = default_window
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._delay = 0.0
        self._next = 0.0
        self.state: RateLimitState | None = None

    def delay_for(self, state: RateLimitState) -> float:
        """Seconds between requests that ``state`` calls for (0 when the quota is ample)."""
        threshold = max(1, int(state.limit * self.low_water)) if state.limit else self.low_count
        if state.remaining > threshold:
            return 0.0
        window = state.window if state.window else self.default_window
        return min(self.max_delay, window / max(state.remaining, 1))

    def observe(self, headers: Mapping[str, str]) -> float:
        """Record a response's rate-limit headers; returns the spacing now applied."""
        state = parse_ratelimit(headers)
        if state is None:
            return 0.0
        delay = self.delay_for(state)
        with self._lock:
            self.state = state
            self._delay = delay
            if delay:
                self._next = max(self._next, self._clock() + delay)
        return delay

    @property
    def pacing(self) -> bool:
        """True while the last announced quota calls for spacing requests."""
        with self._lock:
            return self._delay > 0

    def wait(self) -> float:
        """Sleep until the next request may go (spacing concurrent callers ``delay`` apart);
        returns the seconds slept."""
        with self._lock:
            if self._delay <= 0:
                return 0.0
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._delay
            pause = start - now
        if pause > 0:
            self._sleep(pause)
        return pause
