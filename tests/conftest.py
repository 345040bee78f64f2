"""Root test configuration: loads the fixtures of tests/support (real servers, store factories).

Helpers live in ``tests/support``; tests import them from there, never from this file.
"""

from __future__ import annotations

from typing import Any

pytest_plugins = ["tests.support.fixtures", "tests.support.stores"]


def __getattr__(name: str) -> Any:
    # older branches import STORE_KINDS from here; importing tests.support.stores at the top
    # would load it before pytest can rewrite its asserts as a plugin
    if name == "STORE_KINDS":
        from tests.support.stores import STORE_KINDS

        return STORE_KINDS
    raise AttributeError(name)
