"""The ``regstore`` command line: a composition root over the engine, the client and stores.

Modules: :mod:`.app` (the click group, global options, per-run state), :mod:`.transfer`
(``pull``, ``push``, ``copy``), :mod:`.synccmd` (``sync``), :mod:`.storecmds` (``ls``,
``inspect``, ``verify``, ``delete``, ``gc``, ``plugins``), :mod:`.login` (``login``, ``logout``),
:mod:`.completion` (``completion``), :mod:`.refs` (image references),
:mod:`.output` (results, errors, exit codes) and :mod:`.progress` (progress bars fed by
transfer events).

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted, 141 output closed; a
SIGTERM ends the process by that signal once the command cleaned up. Nothing in the library
imports this package.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Sequence

from . import startup

# The package's own imports (click, the app) run with the collector paused, as a command's
# start-up imports do (:mod:`.startup`): 15 collections walked the modules imported so far
# while it loaded (measured on the benchmark's machine). What it builds is frozen with the
# command's own start-up, in the console script; an importer's own setting is left as it was.
with startup.paused():
    from .app import cli, die_if_terminated
    from .completion import COMPLETE_VAR, PROG_NAME

# The commands, imported when one is run (start-up time of `regstore --help`): name -> (the
# module that registers it, its short help as `regstore --help` lists it). A new command's
# module goes here; tests/test_cli_startup.py checks the table against the modules.
cli.lazy_commands.update(
    {
        "bundle": (
            "regstore.cli.bundlecmd",
            "Air-gap bundles: many images in one verifiable OCI-layout tar, and deltas.",
        ),
        "copy": (
            "regstore.cli.transfer",
            "Copy an image between registries and stores (any direction).",
        ),
        "delete": (
            "regstore.cli.storecmds",
            "Delete a tag (store:NAME:TAG) or a manifest and its tags (store:NAME@DIGEST).",
        ),
        "gc": (
            "regstore.cli.storecmds",
            "Remove blobs no manifest in the store references, and what interrupted"
            " writes left (staged bytes, incomplete multipart uploads, stale locks,"
            " quarantined blobs), when older than the grace period and not held by "
            "a live writer.",
        ),
        "inspect": (
            "regstore.cli.storecmds",
            "Describe an image: manifest digest, media type, platforms, layers and sizes.",
        ),
        "login": (
            "regstore.cli.login",
            "Log in to REGISTRY (HOST[:PORT]; docker.io for Docker Hub): check the "
            "credentials against it, then save them for docker, skopeo, crane, oras"
            " and regstore.",
        ),
        "logout": (
            "regstore.cli.login",
            "Remove the saved credentials of REGISTRY (HOST[:PORT]; docker.io for Docker Hub).",
        ),
        "ls": (
            "regstore.cli.storecmds",
            "List the store's repositories, or the tags of one (digest, type, size); or the "
            "tags of a registry's repository.",
        ),
        "plugins": (
            "regstore.cli.storecmds",
            "List the installed storage backends: URL scheme, distribution, version, entry point.",
        ),
        "pull": (
            "regstore.cli.transfer",
            "Pull an image from a registry into the store.",
        ),
        "push": (
            "regstore.cli.transfer",
            "Push an image of the store to a registry.",
        ),
        "sync": (
            "regstore.cli.synccmd",
            "Sync many repositories and tags as a sync file describes (incrementally).",
        ),
        "verify": (
            "regstore.cli.storecmds",
            "Re-hash every blob and check every manifest and reference of the store (or of NAME).",
        ),
    }
)

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run ``regstore`` with ``argv`` (default ``sys.argv[1:]``) and exit."""
    startup.begin()
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name=PROG_NAME,
            complete_var=COMPLETE_VAR,
        )
    except SystemExit as exc:
        if exc.code in (None, 0):
            _skip_the_final_collection()
        raise
    finally:
        startup.end()
        die_if_terminated()  # by the signal, once what the command started is cleaned up


_final_collection_skipped = False


def _skip_the_final_collection() -> None:
    """After a command that ended well, let the interpreter's teardown skip its collection of
    every object left (``gc.freeze`` at exit).

    That collection walks the objects of every module the command imported, and took ~45 ms of
    a ~0.25 s ``pull`` that had nothing to do (measured on the benchmark's machine); the command
    closed everything it opened on its way out, so it frees nothing that matters. After a
    failure the teardown stays whole: a writer or lock dropped by an exception is released by
    its finaliser there. Registered for the exit, not done now: a caller that runs :func:`main`
    in its own process and goes on keeps a heap the collector sees.
    """
    global _final_collection_skipped
    if not _final_collection_skipped:
        _final_collection_skipped = True
        atexit.register(gc.freeze)
