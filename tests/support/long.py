"""The long mode of the reliability runs: ``pytest --long`` or ``REGSTORE_LONG_TESTS=1``."""

from __future__ import annotations

import os

import pytest

#: The environment variable that also asks for the full size (tests/test_soak.py reads it).
LONG_ENV = "REGSTORE_LONG_TESTS"


def is_long(config: pytest.Config) -> bool:
    """True under ``pytest --long`` or ``REGSTORE_LONG_TESTS=1``."""
    return bool(config.getoption("--long", default=False)) or os.environ.get(LONG_ENV) == "1"
