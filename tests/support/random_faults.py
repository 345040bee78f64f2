"""Seeded, per-request random faults for :class:`~tests.support.proxy.FaultProxy` (soak tests).

:class:`RandomFaults` decides, for each request, whether it gets a fault and which one. The
decision is a pure function of the seed and of the request's *identity* — method, path with
the upload session id blanked out, ``Range``/``Content-Range``, the ``digest`` query
parameter — and of how many times that identity was seen before, so the same seed picks the
same faults for the same requests however concurrent requests interleave.

Kinds (weights choose among them; ``rate`` is the share of requests that get one):

- ``500``, ``502``, ``503``: answered by the proxy. Half of them (``forward_share``) only
  after the upstream handled the request: "it worked, but the answer was lost".
- ``429``: answered at once with ``Retry-After: <retry_after>``.
- ``cut``: a request body is cut after some bytes and the connection dropped (nothing
  reaches the upstream); else the response body is cut after some bytes; an answer without a
  body is dropped whole after the upstream handled the request.
- ``drip``: the first ``drip_bytes`` of the response body trickle out in small pieces.
- ``stall``: the response stops (after its headers and part of its body, or before anything)
  for ``stall_seconds`` — longer than the client's read timeout — then the connection closes.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import parse_qs

__all__ = ["DEFAULT_WEIGHTS", "Fault", "RandomFaults"]

#: Relative weights of the fault kinds.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "500": 1.0,
    "502": 1.0,
    "503": 1.0,
    "429": 1.0,
    "cut": 2.0,
    "drip": 1.0,
    "stall": 0.5,
}

_SESSION_RE = re.compile(r"(/blobs/uploads/)[^/]+")


@dataclass(frozen=True)
class Fault:
    """One decision: ``kind`` (a key of the weights), ``forward`` (5xx after the upstream
    handled the request), ``fraction`` (where in a body a cut or a stall happens, 0..1)."""

    kind: str
    forward: bool = False
    fraction: float = 0.5

    @property
    def status(self) -> int:
        """The status a ``500``/``502``/``503``/``429`` fault answers (0 for the others)."""
        return int(self.kind) if self.kind.isdigit() else 0


@dataclass
class RandomFaults:
    """A seeded plan of random faults; see the module docstring. Thread-safe."""

    seed: int
    rate: float
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    retry_after: int = 1
    stall_seconds: float = 5.0
    drip_bytes: int = 256 * 1024
    drip_step: int = 8 * 1024
    drip_pause: float = 0.01
    forward_share: float = 0.5
    _seen: Counter[str] = field(default_factory=Counter, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")

    @staticmethod
    def identity(method: str, path: str, query: str, headers: Message) -> str:
        """What makes two requests "the same request" across runs."""
        digest = parse_qs(query).get("digest", [""])[0]
        return "|".join(
            (
                method,
                _SESSION_RE.sub(r"\1-", path),
                headers.get("Range") or "",
                headers.get("Content-Range") or "",
                digest,
            )
        )

    def decide(self, method: str, path: str, query: str, headers: Message) -> Fault | None:
        """The fault for this request, or None."""
        key = self.identity(method, path, query, headers)
        with self._lock:
            seen = self._seen[key]
            self._seen[key] += 1
        rng = random.Random(f"{self.seed}|{key}|{seen}")
        if rng.random() >= self.rate:
            return None
        kinds = list(self.weights)
        kind = rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
        forward = kind in ("500", "502", "503") and rng.random() < self.forward_share
        return Fault(kind, forward=forward, fraction=rng.random())
