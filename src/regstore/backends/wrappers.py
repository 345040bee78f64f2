"""Store wrappers: middleware plugins around a store's backend (``@hookimpl(wrapper=True)``).

Each open store has its own plugin manager holding one backend; a wrapper is another plugin in
that manager whose hookimpls are ``wrapper=True`` generators. pluggy calls a wrapper before the
backend, with the arguments it wants (any subset of the spec's); the wrapper may refuse (raise
before its ``yield``), observe (time the ``yield``), or look at the backend's answer (``result =
yield``) and return it. :meth:`regstore.store.ObjectStore.add_wrapper` registers one;
:func:`regstore.store.open_store` registers the two shipped here on request:

- :class:`ReadOnlyGuard` (``read_only=True``, ``?read_only=1``) refuses every change with
  :class:`~regstore.errors.StoreReadOnlyError` before the backend is asked;
- :class:`TracingWrapper` (``trace=True``, ``?trace=1``) counts and times every operation
  (:meth:`regstore.store.ObjectStore.metrics`).

The rules a wrapper keeps (the facade relies on them):

- **Never change bytes.** A wrapper returns the manifest bytes, blob handles and blob bytes it
  was given, unchanged: digests are of exact bytes, and a resumed write re-hashes the bytes the
  backend staged, so a wrapper that altered what is written or read would make every resume
  and every verification fail (or, worse, pass over altered content).
- **Answer with the spec's types**, and raise regstore errors (``StoreError`` and its kin); an
  exception from the backend passes through a wrapper unchanged unless it has a reason to
  translate it.
- **Be thread-safe and quick**: one store serves every thread of a transfer, and a wrapper runs
  on every call (never per chunk: bytes flow through the handles, not through hooks).
- **Wrap, do not answer**: a plain (non-wrapper) hookimpl would compete with the backend; the
  facade refuses such a plugin.

:class:`StoreWrapper` wraps every store operation the same way: subclass it and override
:meth:`StoreWrapper.around` (a context manager around each call), as :class:`TracingWrapper`
does. For a few operations, write only their hooks, as :class:`ReadOnlyGuard` does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from regstore.errors import StoreReadOnlyError
from regstore.hookspecs import (
    BlobInfo,
    BlobReadHandle,
    BlobStatus,
    BlobWriteHandle,
    StagingEntry,
    StoreLockHandle,
    hookimpl,
)

__all__ = [
    "READ_ONLY_GUARD",
    "TRACER",
    "OperationStats",
    "ReadOnlyGuard",
    "StoreWrapper",
    "TracingWrapper",
]

#: The names :func:`regstore.store.open_store` registers its wrappers under.
READ_ONLY_GUARD = "regstore.read-only"
TRACER = "regstore.trace"


class StoreWrapper:
    """A wrapper around every store operation: override :meth:`around`.

    The operations are named as the hooks without their ``regstore_store_`` prefix
    (``get_manifest``, ``blob_writer``, ``close``, ...). The base class passes everything
    through unchanged.
    """

    @contextlib.contextmanager
    def around(self, operation: str) -> Iterator[None]:
        """Runs around one call of ``operation``; an exception of the call is raised inside."""
        yield

    # -- manifests ---------------------------------------------------------------------------

    @hookimpl(wrapper=True)
    def regstore_store_get_manifest(self) -> Generator[None, tuple[bytes, str], tuple[bytes, str]]:
        with self.around("get_manifest"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_put_manifest(self) -> Generator[None, None, None]:
        with self.around("put_manifest"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_manifest_is_partial(self) -> Generator[None, bool, bool]:
        with self.around("manifest_is_partial"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_unlinked_blobs(self) -> Generator[None, dict[str, str], dict[str, str]]:
        with self.around("unlinked_blobs"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_outside_references(self) -> Generator[None, list[str], list[str]]:
        with self.around("outside_references"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_delete_manifest(self) -> Generator[None, None, None]:
        with self.around("delete_manifest"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_delete_tag(self) -> Generator[None, None, None]:
        with self.around("delete_tag"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_list_repositories(self) -> Generator[None, list[str], list[str]]:
        with self.around("list_repositories"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_list_tags(self) -> Generator[None, list[str], list[str]]:
        with self.around("list_tags"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_list_manifests(self) -> Generator[None, list[str], list[str]]:
        with self.around("list_manifests"):
            return (yield)

    # -- blobs -------------------------------------------------------------------------------

    @hookimpl(wrapper=True)
    def regstore_store_blob_status(self) -> Generator[None, BlobStatus, BlobStatus]:
        with self.around("blob_status"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_open_blob(self) -> Generator[None, BlobReadHandle, BlobReadHandle]:
        with self.around("open_blob"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_blob_writer(self) -> Generator[None, BlobWriteHandle, BlobWriteHandle]:
        with self.around("blob_writer"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_wait_blob(self) -> Generator[None, bool, bool]:
        with self.around("wait_blob"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_list_blobs(self) -> Generator[None, list[BlobInfo], list[BlobInfo]]:
        with self.around("list_blobs"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_delete_blob(self) -> Generator[None, None, None]:
        with self.around("delete_blob"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_mark_blob_used(self) -> Generator[None, None, None]:
        with self.around("mark_blob_used"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_blob_used_at(self) -> Generator[None, float | None, float | None]:
        with self.around("blob_used_at"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_quarantine_blob(self) -> Generator[None, str, str]:
        with self.around("quarantine_blob"):
            return (yield)

    # -- housekeeping and lifecycle ----------------------------------------------------------

    @hookimpl(wrapper=True)
    def regstore_store_list_staging(
        self,
    ) -> Generator[None, list[StagingEntry], list[StagingEntry]]:
        with self.around("list_staging"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_list_quarantined(self) -> Generator[None, list[str], list[str]]:
        with self.around("list_quarantined"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_drop_staging(self) -> Generator[None, bool, bool]:
        with self.around("drop_staging"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_lock(
        self,
    ) -> Generator[None, StoreLockHandle | None, StoreLockHandle | None]:
        with self.around("lock"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_exists(self) -> Generator[None, bool, bool]:
        with self.around("exists"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_describe(self) -> Generator[None, dict[str, Any], dict[str, Any]]:
        with self.around("describe"):
            return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_close(self) -> Generator[None, list[None], list[None]]:
        with self.around("close"):
            return (yield)


# -- the read-only guard -------------------------------------------------------------------


class ReadOnlyGuard:
    """Refuses every change to the store, before the backend sees it.

    Manifest and tag writes and deletions, taking a blob writer or a store lock, deleting,
    quarantining or marking a blob used and dropping staging leftovers raise
    :class:`~regstore.errors.StoreReadOnlyError`; reading, listing, waiting and ``describe``
    (which adds ``"read_only": True``) pass.
    ``url`` (already redacted) names the store in the error.
    """

    def __init__(self, url: str = "") -> None:
        self.url = url or "this store"

    def _refuse(self, operation: str) -> NoReturn:
        raise StoreReadOnlyError(self.url, operation)

    # Each hook refuses before its ``yield``: pluggy then never asks the backend. The
    # ``return (yield)`` after it is what makes the method the generator pluggy requires of a
    # wrapper; it is never reached.

    @hookimpl(wrapper=True)
    def regstore_store_put_manifest(
        self, name: str, tag: str | None, digest: str
    ) -> Generator[None, None, None]:
        self._refuse(f"write manifest {name}@{digest}" + (f" as {name}:{tag}" if tag else ""))
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_delete_manifest(self, name: str, digest: str) -> Generator[None, None, None]:
        self._refuse(f"delete manifest {name}@{digest}")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_delete_tag(self, name: str, tag: str) -> Generator[None, None, None]:
        self._refuse(f"delete tag {name}:{tag}")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_blob_writer(
        self, digest: str
    ) -> Generator[None, BlobWriteHandle, BlobWriteHandle]:
        self._refuse(f"write blob {digest}")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_delete_blob(self, digest: str) -> Generator[None, None, None]:
        self._refuse(f"delete blob {digest}")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_quarantine_blob(self, digest: str) -> Generator[None, str, str]:
        self._refuse(f"quarantine blob {digest}")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_mark_blob_used(self, digest: str) -> Generator[None, None, None]:
        self._refuse(f"mark blob {digest} used")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_drop_staging(self, entry: StagingEntry) -> Generator[None, bool, bool]:
        where = getattr(entry, "location", None) or "an entry"  # not validated yet: be lenient
        self._refuse(f"remove {where} from the staging area")
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_lock(
        self, key: str
    ) -> Generator[None, StoreLockHandle | None, StoreLockHandle | None]:
        self._refuse(f"take the store lock {key}")  # it is taken only to change the store
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_describe(self) -> Generator[None, dict[str, Any], dict[str, Any]]:
        info = yield
        return {**(info or {}), "read_only": True}


# -- tracing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperationStats:
    """Counts and timings of one store operation (as :class:`TracingWrapper` measured them).

    Times are wall-clock seconds of the hook call only: opening a blob handle is timed, the
    bytes streamed through it afterwards are not.
    """

    operation: str
    count: int = 0  #: calls, failed ones included
    errors: int = 0  #: calls that raised (absence answers such as "not found" included)
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    @property
    def mean_seconds(self) -> float:
        """Average time per call (0 when never called)."""
        return self.total_seconds / self.count if self.count else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "operation": self.operation,
            "count": self.count,
            "errors": self.errors,
            "total_seconds": self.total_seconds,
            "max_seconds": self.max_seconds,
        }


class TracingWrapper(StoreWrapper):
    """Counts and times every store operation; read them with :meth:`metrics`.

    Thread-safe. Registered by ``open_store(url, trace=True)`` (or ``?trace=1``) and read
    through :meth:`regstore.store.ObjectStore.metrics`; the CLI prints them with ``-vv``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, OperationStats] = {}

    @contextlib.contextmanager
    def around(self, operation: str) -> Iterator[None]:
        """Time the call and count it (as an error when it raises)."""
        start = time.perf_counter()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self._record(operation, time.perf_counter() - start, failed)

    def _record(self, operation: str, seconds: float, failed: bool) -> None:
        with self._lock:
            old = self._stats.get(operation) or OperationStats(operation)
            self._stats[operation] = OperationStats(
                operation,
                count=old.count + 1,
                errors=old.errors + int(failed),
                total_seconds=old.total_seconds + seconds,
                max_seconds=max(old.max_seconds, seconds),
            )

    def metrics(self) -> dict[str, OperationStats]:
        """A snapshot: operation name -> its stats, for every operation called so far."""
        with self._lock:
            return dict(sorted(self._stats.items()))

    def reset(self) -> None:
        """Forget what was measured (e.g. between benchmark rounds)."""
        with self._lock:
            self._stats.clear()
