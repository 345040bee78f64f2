"""The whole conformance suite against the plugin guide's sqlite:// backend (tests/support).

The backend is written only from the public plugin kit (:mod:`regstore.backends.kit`), as a
third party would write it from docs/plugin-guide.md; this proves the guide's path works.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from regstore import open_store, plugins
from regstore.errors import StoreError, StoreOptionError
from regstore.testing.conformance import BackendConformance
from tests.support import sqlite_backend


@pytest.fixture(autouse=True)
def sqlite_plugin() -> Iterator[None]:
    plugins.reset_plugin_manager()
    plugins.register_plugin(sqlite_backend, name="sqlite-example")
    yield
    plugins.reset_plugin_manager()


class TestSqliteBackend(BackendConformance):
    large_blob_size = 2 * 1024 * 1024
    memory_check_blob_size = 32 * 1024 * 1024  # SQLite copies a blob twice: staged, sealed
    child_plugins = ("tests.support.sqlite_backend",)
    supports_manifests_as_blobs = False  # manifests live in their own table

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path}/store.db"


def test_the_factory_gets_the_path_with_every_slash(tmp_path: Path) -> None:
    # sqlite:///abs keeps its "//" (urlunsplit used to turn it into sqlite:/abs), and %xx
    # is decoded
    with open_store(f"sqlite://{tmp_path}/my%20store.db") as store:
        assert store.backend.path == f"{tmp_path}/my store.db"  # type: ignore[attr-defined]


def test_bad_options_are_store_option_errors_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(StoreOptionError, match="unknown option") as caught:
        open_store(f"sqlite://{tmp_path}/s.db?colour=blue")
    assert "timeout" in caught.value.hint
    with pytest.raises(StoreOptionError, match="timeout") as caught:
        open_store(f"sqlite://{tmp_path}/s.db", timeout="soon")
    with pytest.raises(StoreOptionError, match="absolute"):
        open_store("sqlite://relative/s.db")


def test_declared_error_types_become_store_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database, it only looks like a store" * 100)
    with open_store(f"sqlite://{path}") as store, pytest.raises(StoreError) as caught:
        store.repositories()
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_handles_created_at_once_on_a_new_file_all_write(tmp_path: Path) -> None:
    # Connections turning a new file into WAL at the same moment used to fail with "database is
    # locked" (SQLite gives up at once there, without its busy wait); 4 handles x 40 new files
    # failed about 1 time in 7 before the first setup was serialised.
    failures: list[BaseException] = []
    for attempt in range(40):
        path = str(tmp_path / f"s{attempt}.db")
        start = threading.Barrier(4)

        def write(i: int, path: str = path, start: threading.Barrier = start) -> None:
            handle = sqlite_backend.SqliteBackend(path, timeout=30)
            start.wait()
            try:
                handle.run("INSERT INTO tags VALUES (?, ?, ?)", "n", f"t{i}", "d")
            except sqlite3.Error as error:
                failures.append(error)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_the_store_lock_comes_from_the_kit_and_excludes_another_holder(tmp_path: Path) -> None:
    # the second store names the same database by another path text: only the backend's
    # flock lock (not the facade's in-process one, keyed by URL) can keep it out
    url, same = f"sqlite://{tmp_path}/locked.db", f"sqlite://{tmp_path}/./locked.db"
    with open_store(url) as store, open_store(same) as other:
        with store.lock("referrers/app/sha256-x") as across_processes:
            assert across_processes is True  # ComposedBlobs derives it from the flock part
            refused = pytest.raises(StoreError, match="store lock")
            with refused, other.lock("referrers/app/sha256-x", timeout=0.3):
                pass
        with other.lock("referrers/app/sha256-x", timeout=30):
            pass  # free again once released
