"""Stores of every kind the engine must serve, for tests parametrised over them.

- :data:`STORE_KINDS`: the kinds (S3 through moto's server, via the regstore-s3 plugin);
- ``store_factory`` (fixture): ``make(kind)`` opens a fresh, empty store of that kind; all are
  closed afterwards.

Loaded by ``tests/conftest.py`` (``pytest_plugins``); import :data:`STORE_KINDS` from here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regstore import ObjectStore, open_store

__all__ = ["STORE_KINDS", "store_factory"]

#: Every store kind the engine must serve (S3 through moto's server, via the regstore-s3 plugin).
STORE_KINDS = ("memory", "file-distribution", "file-oci", "s3-distribution", "s3-oci")


@pytest.fixture
def store_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], ObjectStore]]:
    """``make(kind)`` opens a fresh, empty store of that kind; all are closed afterwards."""
    opened: list[ObjectStore] = []

    def make(kind: str) -> ObjectStore:
        if kind == "memory":
            store = open_store(f"memory://test-{uuid.uuid4().hex}")
        elif kind.startswith("file-"):
            root = tmp_path / f"store-{uuid.uuid4().hex[:8]}"
            store = open_store(str(root), layout=kind.split("-", 1)[1])
        elif kind.startswith("s3-"):
            bucket = request.getfixturevalue("s3_bucket")
            store = open_store(
                f"s3://{bucket.bucket}/{uuid.uuid4().hex[:8]}",
                endpoint_url=bucket.endpoint_url,
                key="testing",
                secret="testing",
                layout=kind.split("-", 1)[1],
            )
        else:
            raise ValueError(kind)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
