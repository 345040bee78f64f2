"""Fixtures for the regstore-s3 tests: moto's S3 server and the registry, from tests/support.

These tests live outside the root ``tests`` package, so they load the shared fixtures
themselves. ``pytest_plugins`` is honoured here because pytest imports this conftest before
configuring (it is an *initial* conftest both for ``python -m pytest`` from the repository root,
whose ``testpaths`` name this directory, and for ``python -m pytest plugins/regstore-s3/tests``);
registering ``tests.support.fixtures`` twice is a no-op, so the whole suite shares one moto
server. The repository root goes on ``sys.path`` for runs that did not put it there (the
``pytest`` script instead of ``python -m pytest``).

This directory deliberately has no ``__init__.py``: as a package it would be named ``tests``
and shadow the repository's own ``tests`` package.
"""

from __future__ import annotations

import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[3]
if not (_REPO_ROOT / "tests" / "support" / "fixtures.py").is_file():  # pragma: no cover
    raise RuntimeError(f"regstore-s3 tests expect the regstore repository at {_REPO_ROOT}")
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

pytest_plugins = ["tests.support.fixtures"]

from regstore import ObjectStore, open_store  # noqa: E402

if TYPE_CHECKING:
    # imported by pytest_plugins above; importing it here first would stop pytest rewriting it
    from tests.support.fixtures import S3Bucket

#: Dummy credentials moto accepts (never the machine's own AWS settings).
CREDENTIALS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


@pytest.fixture
def s3_url_factory(s3_bucket: S3Bucket) -> Callable[..., str]:
    """``url(prefix=None, **options)``: a store URL in the test's bucket with the endpoint,
    test credentials and ``options`` in its query string (as a child process would get it).
    """

    def url(prefix: str | None = None, **options: Any) -> str:
        query = {"endpoint_url": s3_bucket.endpoint_url, **CREDENTIALS, **options}
        where = prefix or uuid.uuid4().hex[:8]
        return f"s3://{s3_bucket.bucket}/{where}?{urllib.parse.urlencode(query)}"

    return url


@pytest.fixture
def s3_store_factory(s3_bucket: S3Bucket) -> Iterator[Callable[..., ObjectStore]]:
    """``make(prefix=None, **options)``: open a store in the test's bucket (closed afterwards)."""
    opened: list[ObjectStore] = []

    def make(prefix: str | None = None, **options: Any) -> ObjectStore:
        store = open_store(
            f"s3://{s3_bucket.bucket}/{prefix or uuid.uuid4().hex[:8]}",
            endpoint_url=s3_bucket.endpoint_url,
            **CREDENTIALS,
            **options,
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
