"""Root test configuration: the real-server fixtures (tests/support) and store factories."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regstore import ObjectStore, open_store

pytest_plugins = ["tests.support.fixtures"]

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


#: The environment variable that also asks for the full size (tests/test_soak.py reads it).
LONG_ENV = "REGSTORE_LONG_TESTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--long``: the reliability runs at full size (the kill loops, the many writers, the
    fuzzers and the fault-proxy soak); ``REGSTORE_LONG_TESTS=1`` is the same."""
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the kill loops (>= 50 kills per store kind), the many writers, the fuzzers and "
        f"the soak at full size instead of their short default size (= {LONG_ENV}=1; nothing "
        "is skipped either way)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # One switch for every long test: the soak reads the variable when it is collected.
    if config.getoption("--long", default=False):
        os.environ[LONG_ENV] = "1"


def is_long(config: pytest.Config) -> bool:
    """True under ``pytest --long`` or ``REGSTORE_LONG_TESTS=1``."""
    return bool(config.getoption("--long", default=False)) or os.environ.get(LONG_ENV) == "1"


@pytest.fixture
def long_mode(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --long`` (or ``REGSTORE_LONG_TESTS=1``)."""
    return is_long(request.config)
