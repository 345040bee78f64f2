"""regstore's pytest plugin (entry point ``pytest11: regstore``): fixtures, nothing else.

Loaded by every pytest run in an environment where regstore is installed, so it stays light:
it imports no regstore module until a fixture is used, registers no hooks that change
collection, and only asks pytest to rewrite assertions in the conformance suite's modules
(for readable failure messages in a plugin author's test run).

Fixtures:

``regstore_memory_url``
    The URL of a fresh ``memory://`` store, deleted after the test.
``regstore_memory_store``
    An open :class:`regstore.store.ObjectStore` on that URL, closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from regstore.store import ObjectStore

# Must happen before those modules are first imported (by a test module).
pytest.register_assert_rewrite(
    "regstore.testing.conformance",
    "regstore.testing._suite",
    "regstore.testing._kit_tests",
    "regstore.testing.memory",
    "regstore.testing.processes",
    "regstore.testing._manifest_tests",
    "regstore.testing._blob_tests",
    "regstore.testing._safety_tests",
    "regstore.testing._process_tests",
    "regstore.testing._wrapper_tests",
)


@pytest.fixture
def regstore_memory_url() -> Iterator[str]:
    """A fresh ``memory://`` store URL; the store's content is dropped after the test."""
    from regstore.backends.memory import remove_store

    name = f"pytest-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    remove_store(name)


@pytest.fixture
def regstore_memory_store(regstore_memory_url: str) -> Iterator[ObjectStore]:
    """An open, empty memory store, closed after the test."""
    from regstore.store import open_store

    store = open_store(regstore_memory_url)
    yield store
    store.close()
