"""Settings and helpers shared by the conformance test mixins (see :mod:`.conformance`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ClassVar, TypeVar

__all__ = ["SuiteSettings", "in_thread"]

T = TypeVar("T")


class SuiteSettings:
    """Knobs a backend's test class may override (class attributes)."""

    #: Size of the blob streamed by the large-blob test (shrink it for slow media).
    large_blob_size: ClassVar[int] = 8 * 1024 * 1024
    #: Chunk size used for writing and reading the large blob.
    chunk_size: ClassVar[int] = 1024 * 1024
    #: Seconds a concurrency test waits for a thread before failing.
    thread_timeout: ClassVar[float] = 20.0
    #: Seconds a cross-process test waits for a child process.
    process_timeout: ClassVar[float] = 60.0


def in_thread(function: Callable[[], T]) -> Future[T]:
    """Run ``function`` in a fresh daemon-like thread; its result or exception in a Future."""
    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future


def barrier(parties: int) -> threading.Barrier:
    """A barrier that fails instead of hanging forever."""
    return threading.Barrier(parties, timeout=20)
