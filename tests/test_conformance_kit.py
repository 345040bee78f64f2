"""The conformance kit checks what it promises.

- A minimal read/write-only backend (tests/support/minimal_backend.py, written from the kit)
  passes the whole suite, in-process and across processes, with its capability switches off:
  the tests of each switched-off capability assert UnsupportedError rather than skipping.
- The kit fails backends that break its promises (tests/support/broken_backends.py): one that
  holds whole blobs in memory, one that never frees a dead writer's lock, and a test class
  whose capability switches lie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regstore import open_store, plugins
from regstore.store import ObjectStore
from regstore.testing.conformance import BackendConformance, CrossProcessConformance
from tests.support import broken_backends, minimal_backend, sqlite_backend

_MIB = 1024 * 1024
Opener = Callable[[str], tuple[str, ObjectStore]]


@pytest.fixture(autouse=True)
def kit_plugins() -> Iterator[None]:
    plugins.reset_plugin_manager()
    plugins.register_plugin(minimal_backend, name="minimal-example")
    plugins.register_plugin(broken_backends, name="broken-examples")
    plugins.register_plugin(sqlite_backend, name="sqlite-example")
    yield
    plugins.reset_plugin_manager()


class TestMinimalBackend(BackendConformance, CrossProcessConformance):
    supports_delete = False
    supports_list_blobs = False
    supports_quarantine = False
    supports_list_staging = False
    supports_manifests_as_blobs = False
    child_plugins = ("tests.support.minimal_backend",)

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"minimal://{tmp_path}/store"


class _Suite(BackendConformance, CrossProcessConformance):
    """The kit's tests, called directly on a broken backend (not collected)."""

    __test__ = False
    child_plugins = ("tests.support.broken_backends", "tests.support.minimal_backend",
                     "tests.support.sqlite_backend")  # fmt: skip
    memory_check_blob_size = 32 * _MIB


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opener]:
    handles: list[ObjectStore] = []

    def open_url(scheme: str) -> tuple[str, ObjectStore]:
        url = f"{scheme}://{tmp_path}/{scheme}-store"
        handles.append(open_store(url))
        return url, handles[-1]

    yield open_url
    for handle in handles:
        handle.close()


def test_the_kit_fails_a_backend_that_holds_whole_blobs_in_memory(opened: Opener) -> None:
    url, store = opened("buffering")
    with pytest.raises(AssertionError, match="holds whole blobs in memory"):
        _Suite().test_a_large_blob_streams_through_bounded_memory(store, url)


def test_the_kit_passes_the_same_backend_streaming(opened: Opener) -> None:
    url, store = opened("minimal")
    _Suite().test_a_large_blob_streams_through_bounded_memory(store, url)


def test_the_kit_fails_a_backend_whose_dead_writers_lock_stays(
    opened: Opener, tmp_path: Path
) -> None:
    url, store = opened("stalelock")
    with pytest.raises(AssertionError, match="a dead writer's lock must not outlive it"):
        _Suite().test_a_killed_writers_lock_does_not_outlive_it(store, url, tmp_path)


def test_a_memory_check_too_small_to_tell_is_refused(opened: Opener) -> None:
    url, store = opened("minimal")
    suite = _Suite()
    suite.memory_check_blob_size = 4 * _MIB  # type: ignore[misc]
    with pytest.raises(AssertionError, match="at least 32 MiB"):
        suite.test_a_large_blob_streams_through_bounded_memory(store, url)


def test_capability_switches_that_lie_fail(opened: Opener) -> None:
    _, minimal = opened("minimal")
    with pytest.raises(AssertionError, match="set supports_"):
        _Suite().test_switched_off_capabilities_raise_unsupported_error(minimal)  # all True
    _, sqlite = opened("sqlite")
    modest = _Suite()
    modest.supports_delete = False  # type: ignore[misc]
    with pytest.raises(AssertionError, match="supports_delete is False but the backend did it"):
        modest.test_switched_off_capabilities_raise_unsupported_error(sqlite)


class _LibError(Exception):
    """An error of a backend's own library (not an OSError)."""


class _FailingStream:
    def write(self, data: bytes | memoryview, /) -> int:
        raise _LibError("the library failed to write")

    def read(self, n: int = -1, /) -> bytes:
        raise _LibError("the library failed to read")

    def close(self) -> None:
        pass


def test_error_types_become_store_errors_on_the_blob_paths_too(tmp_path: Path) -> None:
    # error_types turned a library's errors into StoreErrors in the core methods only: a write
    # to a staged blob or a read of a complete one let the raw library error through.
    from regstore.backends.kit import Digest
    from regstore.digest import digest_bytes
    from regstore.errors import StoreError

    class Staging(minimal_backend.FileStaging):
        def append(self, digest: Digest) -> _FailingStream:  # type: ignore[override]
            return _FailingStream()

    class Backend(minimal_backend.MinimalBackend):
        error_types = (_LibError,)

        def open_complete(self, digest: Digest, offset: int) -> _FailingStream:  # type: ignore[override]
            return _FailingStream()

    data = b"x" * 100
    digest = digest_bytes(data)
    good = minimal_backend.MinimalBackend(str(tmp_path))
    writer = good.blob_writer(Digest(digest))
    writer.write(data)
    writer.commit(len(data))
    backend = Backend(str(tmp_path))
    with pytest.raises(StoreError, match="cannot read blob") as read:
        backend.open_blob(Digest(digest), 0).read()
    assert isinstance(read.value.__cause__, _LibError)
    backend.staging = Staging()
    backend.staging.attach(backend)
    other = digest_bytes(b"y")
    writer = backend.blob_writer(Digest(other))
    with pytest.raises(StoreError, match="cannot write blob") as write:
        writer.write(b"y")
    assert isinstance(write.value.__cause__, _LibError)
    writer.close()
