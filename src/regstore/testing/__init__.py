"""Test helpers for regstore and its plugins.

- :mod:`regstore.testing.conformance`: the backend conformance suite (subclass
  ``BackendConformance`` in a plugin's tests);
- :mod:`regstore.testing.builders`: small deterministic images of every manifest kind;
- :mod:`regstore.testing.processes`: child processes sharing a store: a writer held by another
  process (``hold_writer``), one killed with SIGKILL (``killed_writer``), ``ChildProcess``
  (also importable from ``regstore.testing`` itself);
- :mod:`regstore.testing.memory`: how much memory moving one large blob takes;
- :mod:`regstore.testing.pytest_plugin`: fixtures every pytest run gets once regstore is
  installed (``regstore_memory_url``, ``regstore_memory_store``).

Install it with ``pip install regstore[testing]`` (it needs pytest, nothing else). This
package imports nothing at import time, so loading the pytest plugin stays cheap and
assertion rewriting can still be registered for the suite's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .processes import ChildProcess, hold_writer, killed_writer, stream_writer

__all__ = ["ChildProcess", "hold_writer", "killed_writer", "stream_writer"]


def __getattr__(name: str) -> object:
    # Imported on first use (``from regstore.testing import killed_writer``), not with the
    # package: see the docstring.
    if name in __all__:
        return getattr(importlib.import_module("regstore.testing.processes"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
