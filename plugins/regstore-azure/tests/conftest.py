"""Fixtures for the regstore-azure tests: Azurite (from npm), plus the shared fixtures of the
regstore repository (moto's S3 server, the registry) from tests/support.

Like the S3 plugin's tests, these live outside the root ``tests`` package and load the shared
fixtures themselves (``pytest_plugins``; the repository root goes on ``sys.path``). This
directory has no ``__init__.py`` (it would be a second package named ``tests``), so its module
names are unique across the repository: ``test_azure_*``.

- ``azurite`` (session, per xdist worker) → :class:`AzuriteServer`;
- ``azure_container`` → the name of a fresh container, deleted afterwards;
- ``azure_url_factory(prefix=None, **options)`` → a store URL in that container carrying the
  connection string in its query (so child processes open the very same store);
- ``azure_store_factory(prefix=None, **options)`` → an open store there (closed afterwards).
"""

from __future__ import annotations

import contextlib
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[3]
if not (_REPO_ROOT / "tests" / "support" / "fixtures.py").is_file():  # pragma: no cover
    raise RuntimeError(f"regstore-azure tests expect the regstore repository at {_REPO_ROOT}")
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

pytest_plugins = ["tests.support.fixtures"]

from regstore import ObjectStore, open_store  # noqa: E402

from azurite_server import AzuriteServer  # noqa: E402


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """One Azurite Blob service for the session (per xdist worker)."""
    server = AzuriteServer(tmp_path_factory.mktemp("azurite")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azure_container(azurite: AzuriteServer) -> Iterator[str]:
    """A new, uniquely named container; deleted (with its blobs) after the test."""
    name = f"regstore-{uuid.uuid4().hex[:16]}"
    service = azurite.service()
    service.create_container(name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            service.delete_container(name)


@pytest.fixture
def azure_url_factory(azurite: AzuriteServer, azure_container: str) -> Callable[..., str]:
    """``url(prefix=None, **options)``: an ``az://`` URL in the test's container with the
    connection string and ``options`` in its query string."""

    def url(prefix: str | None = None, **options: Any) -> str:
        query = {"connection_string": azurite.connection_string, **options}
        where = prefix or uuid.uuid4().hex[:8]
        return f"az://{azure_container}/{where}?{urllib.parse.urlencode(query)}"

    return url


@pytest.fixture
def azure_store_factory(
    azure_url_factory: Callable[..., str],
) -> Iterator[Callable[..., ObjectStore]]:
    """``make(prefix=None, **options)``: open a store in the test's container."""
    opened: list[ObjectStore] = []

    def make(prefix: str | None = None, **options: Any) -> ObjectStore:
        store = open_store(azure_url_factory(prefix, **options))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
