"""Root test configuration: loads the fixtures of tests/support (real servers, store factories).

Helpers live in ``tests/support``; tests import them from there, never from this file.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.support.long import LONG_ENV, is_long

pytest_plugins = ["tests.support.fixtures", "tests.support.stores"]


def __getattr__(name: str) -> Any:
    # older branches import STORE_KINDS from here; importing tests.support.stores at the top
    # would load it before pytest can rewrite its asserts as a plugin
    if name == "STORE_KINDS":
        from tests.support.stores import STORE_KINDS

        return STORE_KINDS
    raise AttributeError(name)


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


@pytest.fixture
def long_mode(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --long`` (or ``REGSTORE_LONG_TESTS=1``)."""
    return is_long(request.config)
