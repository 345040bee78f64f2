"""The ``regstore`` command line: a composition root over the engine, the client and stores.

Modules: :mod:`.app` (the click group, global options, per-run state), :mod:`.transfer`
(``pull``, ``push``, ``copy``), :mod:`.synccmd` (``sync``), :mod:`.storecmds` (``ls``,
``inspect``, ``verify``, ``delete``, ``gc``, ``plugins``), :mod:`.login` (``login``, ``logout``),
:mod:`.completion` (``completion``), :mod:`.refs` (image references),
:mod:`.output` (results, errors, exit codes) and :mod:`.progress` (progress bars fed by
transfer events).

Exit codes: 0 success, 1 failure, 2 usage error. Nothing in the library imports this package.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import (  # noqa: F401  (registers commands)
    bundlecmd,
    completion,
    login,
    storecmds,
    synccmd,
    transfer,
)
from .app import cli
from .completion import COMPLETE_VAR, PROG_NAME

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run ``regstore`` with ``argv`` (default ``sys.argv[1:]``) and exit."""
    cli.main(
        args=list(argv) if argv is not None else None,
        prog_name=PROG_NAME,
        complete_var=COMPLETE_VAR,
    )
