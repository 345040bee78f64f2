"""Packages whose public names are imported on first use (PEP 562).

A package that imported all of its modules at once would make every user of one of them pay
for all: ``regstore --help`` for requests and the engine, a no-op re-sync for pull, push and
the dry-run preview, the HEADs a sync asks before it has finished starting
(:mod:`regstore.engine.early`) for ``requests``. Each such package names where each of its
public names lives, and finds them through :func:`lazy_exports`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any], *extra: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` (its ``globals()`` as
    ``namespace``). ``__getattr__``: a name of ``exports`` (name -> absolute module) is
    imported from its module, any other public name as a submodule of the package
    (``regstore.engine.sync`` after a bare ``import regstore.engine``, as when the package
    imported its modules at once); each is kept in ``namespace``: asked once, later lookups
    never reach this function. ``__dir__``: the namespace, ``__all__`` and ``extra``."""

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ()), *extra})

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif name.startswith("_"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        else:
            module = f"{package}.{name}"
            try:
                value = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise  # the submodule exists but something it imports does not
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        namespace[name] = value
        return value

    return __getattr__, __dir__
