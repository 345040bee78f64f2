"""The console script's cyclic collector while a command starts.

A command's start-up imports what it runs on: its own module and the engine, the client's HTTP
stack, the store's plugins; some hundred and fifty modules whose objects live as long as the
process. With the collector on, each collection on the way walks all of them again, about
15 ms of a no-op ``sync`` of 300 tags (0.43 s; measured on the benchmark's machine).

So while :func:`regstore.cli.main` runs (:func:`begin` to :func:`end`), those imports run with
the collector paused (:func:`imports`), and what they built is frozen (``gc.freeze``): later
collections pass over it, and the processes a sync forks share its pages instead of copying
each one the collector would touch. :func:`end` thaws it: a caller's own process (an in-process
``main``) gets its heap back collectable, and the teardown after a failure still collects
everything (regstore.cli freezes again at the exit of a command that ended well).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["begin", "end", "imports"]

_active = False


def begin() -> None:
    """The console script starts: :func:`imports` pauses the collector until :func:`end`.
    Not when the caller paused it or froze objects of its own (they are not ours to thaw)."""
    global _active
    _active = gc.isenabled() and gc.get_freeze_count() == 0


@contextlib.contextmanager
def imports() -> Iterator[None]:
    """Run the block (start-up imports, opening a store) with the collector paused, and freeze
    what exists after it; only between :func:`begin` and :func:`end`."""
    if not _active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def end() -> None:
    """The console script's command is over: what :func:`imports` froze is collectable again."""
    global _active
    if _active:
        _active = False
        gc.unfreeze()
