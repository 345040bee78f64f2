"""An aggregated view of a transfer's events, like crane's ``WithProgress``: bytes and blobs
done out of the total, for the whole operation and per image.

Hand a :class:`Progress` to ``events=`` of ``pull``/``push``/``copy``/``transfer_many`` and
read :meth:`Progress.snapshot` from any thread (a progress bar's timer, a log line).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from regstore.events import EventKind, TransferEvent

__all__ = ["ImageProgress", "Progress", "ProgressSnapshot"]

#: The kinds that end a blob's transfer successfully: it is in the destination.
BLOB_DONE = frozenset({EventKind.VERIFIED, EventKind.SKIPPED, EventKind.MOUNTED})


@dataclass(frozen=True)
class ImageProgress:
    """One image's totals at the moment of a snapshot.

    ``blobs_total``/``bytes_total`` count every blob of the image's plan, known before the
    first one moves (the engine's ``planned`` events), so they grow only as images (and their
    referrers) are planned; a blob of unknown size counts 0 bytes until it starts.
    ``bytes_done`` counts the bytes of finished blobs (skipped and mounted ones too) plus the
    bytes moved so far of blobs in flight; ``bytes_failed`` the bytes of blobs whose last
    attempt failed (a display leaves them out of what remains to do).
    """

    blobs_done: int = 0
    blobs_total: int = 0
    blobs_failed: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    manifests: int = 0
    bytes_failed: int = 0


@dataclass(frozen=True)
class ProgressSnapshot(ImageProgress):
    """The whole operation's totals (the sum over images) and each image's, by reference."""

    images: Mapping[str, ImageProgress] = field(default_factory=dict)


class _ImageState:
    __slots__ = ("done", "failed", "manifests", "moved", "sizes")

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}  # every blob seen → its size (0 when unknown)
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.moved: dict[str, int] = {}  # blobs in flight → bytes moved so far
        self.manifests = 0

    def view(self) -> ImageProgress:
        done_bytes = sum(self.sizes[d] for d in self.done) + sum(self.moved.values())
        return ImageProgress(
            blobs_done=len(self.done),
            blobs_total=len(self.sizes),
            blobs_failed=len(self.failed),
            bytes_done=done_bytes,
            bytes_total=sum(self.sizes.values()),
            manifests=self.manifests,
            bytes_failed=sum(self.sizes[d] for d in self.failed),
        )


class Progress:
    """A thread-safe event sink that aggregates transfer events (pass it as ``events=``).

    The engine calls an event sink from its worker threads, several at once; this class takes
    its own lock, so a user needs none. ``then`` receives every event after it is counted (a
    logger, a display), on the same worker thread. Events of ``verify`` count too.
    """

    def __init__(self, then: Callable[[TransferEvent], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, _ImageState] = {}
        self._then = then

    def __call__(self, event: TransferEvent) -> None:
        with self._lock:
            self._count(event)
        if self._then is not None:
            self._then(event)

    def _count(self, event: TransferEvent) -> None:
        state = self._images.setdefault(event.image, _ImageState())
        kind, digest = event.kind, event.digest
        if kind is EventKind.MANIFEST:
            state.manifests += 1
            return
        if kind is EventKind.WARNING:
            return  # about a manifest or a referrer left out: no blob to count
        if event.total >= 0 or digest not in state.sizes:
            state.sizes[digest] = max(event.total, 0)
        if kind is EventKind.PLANNED:
            return  # counted in the totals above; done or failed only by what happens to it
        if kind is EventKind.STARTED:
            state.failed.discard(digest)  # a retried blob starts again
            state.moved[digest] = event.offset  # resumed bytes were moved before
        elif kind is EventKind.PROGRESS:
            state.moved[digest] = state.moved.get(digest, 0) + event.nbytes
        elif kind in BLOB_DONE:
            state.moved.pop(digest, None)
            state.done.add(digest)
        elif kind is EventKind.FAILED:
            state.moved.pop(digest, None)
            state.failed.add(digest)

    def snapshot(self) -> ProgressSnapshot:
        """The totals now, frozen: safe to keep and read while the transfer goes on."""
        with self._lock:
            images = {name: state.view() for name, state in self._images.items()}
        sums = {
            f: sum(getattr(i, f) for i in images.values())
            for f in ("blobs_done", "blobs_total", "blobs_failed", "bytes_done", "bytes_total",
                      "manifests", "bytes_failed")
        }  # fmt: skip
        return ProgressSnapshot(**sums, images=MappingProxyType(images))
