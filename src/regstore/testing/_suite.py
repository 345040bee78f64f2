"""Settings and helpers shared by the conformance test mixins (see :mod:`.conformance`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ClassVar, TypeVar

import pytest

from regstore.errors import UnsupportedError

__all__ = ["CAPABILITIES", "SuiteSettings", "assert_unsupported", "in_thread"]

T = TypeVar("T")

#: The capability switches of :class:`SuiteSettings`, and what each one covers.
CAPABILITIES = {
    "supports_delete": "delete_manifest, delete_tag, delete_blob",
    "supports_list_blobs": "list_blobs (store.blobs())",
    "supports_quarantine": "quarantine_blob",
    "supports_list_staging": "list_staging, drop_staging (store.staging(), drop_staging)",
    "supports_manifests_as_blobs": "a manifest's bytes are also a blob of its digest",
}


class SuiteSettings:
    """Knobs a backend's test class may override (class attributes).

    **Capability switches** (``supports_*``, all True by default; see :data:`CAPABILITIES`).
    A backend that does not implement an optional operation switches it off; the tests of that
    capability then assert that the operation raises
    :class:`~regstore.errors.UnsupportedError` (they still run and still check something:
    a switched-off capability is never a skipped test), and the other tests stay away from it.

    **What the kit checks of every backend**: a blob of ``memory_check_blob_size`` bytes is
    written and read in a fresh process whose peak memory must stay below half the blob's size
    above ``blob_copies_in_memory`` whole copies; and (``CrossProcessConformance``) the lock of
    a writer killed with SIGKILL must be free within ``lock_expiry_seconds`` (plus a few
    seconds of grace).
    """

    #: Size of the blob streamed by the large-blob test (shrink it for slow media).
    large_blob_size: ClassVar[int] = 8 * 1024 * 1024
    #: Chunk size used for writing and reading the large blob.
    chunk_size: ClassVar[int] = 1024 * 1024
    #: Seconds a concurrency test waits for a thread before failing.
    thread_timeout: ClassVar[float] = 20.0
    #: Seconds a cross-process test waits for a child process.
    process_timeout: ClassVar[float] = 60.0
    #: Child processes, and referrers each writes, in the cross-process referrers-index test.
    referrer_processes: ClassVar[int] = 3
    referrers_per_process: ClassVar[int] = 5

    # -- capability switches ------------------------------------------------------------------
    #: delete_manifest, delete_tag and delete_blob work (False: they raise UnsupportedError).
    supports_delete: ClassVar[bool] = True
    #: list_blobs works (False: it raises UnsupportedError).
    supports_list_blobs: ClassVar[bool] = True
    #: quarantine_blob works (False: it raises UnsupportedError).
    supports_quarantine: ClassVar[bool] = True
    #: list_staging and drop_staging work (False: they raise UnsupportedError).
    supports_list_staging: ClassVar[bool] = True
    #: A stored manifest is also a complete blob of its digest (False: it is not a blob, and
    #: quarantining its digest finds no blob).
    supports_manifests_as_blobs: ClassVar[bool] = True
    #: store_exists tells a location that holds no store yet (False: the backend cannot tell
    #: and answers True, so ``ls``, ``verify`` and ``gc`` of a mistyped URL see an empty store
    #: instead of saying there is none).
    supports_store_exists: ClassVar[bool] = True

    # -- what the kit checks of every backend -------------------------------------------------
    #: Size of the blob the bounded-memory test streams through a fresh process. Lower it for
    #: slow media, but not below :data:`MIN_MEMORY_CHECK_SIZE` (the test fails if it is).
    memory_check_blob_size: ClassVar[int] = 64 * 1024 * 1024
    #: Whole copies of a blob the backend may hold in memory: 0 for every store that keeps
    #: blobs elsewhere; only a store that lives in memory (``memory://``) may say more.
    blob_copies_in_memory: ClassVar[int] = 0
    #: Seconds after which the lock of a dead writer (killed with SIGKILL) is free: 0 for
    #: kernel locks (flock), the lease for lease locks.
    lock_expiry_seconds: ClassVar[float] = 0.0
    #: Modules child processes register as regstore plugins before opening ``store_url`` (for
    #: a backend not installed as a distribution, e.g. in its own repository's tests).
    child_plugins: ClassVar[tuple[str, ...]] = ()


#: The smallest ``memory_check_blob_size`` that still tells a streaming backend from one that
#: buffers (the interpreter and the libraries move by a few MiB on their own).
MIN_MEMORY_CHECK_SIZE = 32 * 1024 * 1024


def assert_unsupported(*operations: Callable[[], object]) -> None:
    """Each operation raises UnsupportedError (a capability switched off)."""
    for operation in operations:
        with pytest.raises(UnsupportedError):
            operation()


def in_thread(function: Callable[[], T]) -> Future[T]:
    """Run ``function`` in a fresh daemon-like thread; its result or exception in a Future."""
    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future


def barrier(parties: int) -> threading.Barrier:
    """A barrier that fails instead of hanging forever."""
    return threading.Barrier(parties, timeout=20)
