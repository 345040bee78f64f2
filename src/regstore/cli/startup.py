"""The console script's cyclic collector while a command starts.

A command's start-up imports what it runs on: its own module and the engine, the client's HTTP
stack, the store's plugins; some hundred and fifty modules whose objects live as long as the
process. With the collector on, each collection on the way walks all of them again: 8 of the
13 ms a no-op ``sync`` of 300 tags spent collecting, and 60 ms of the S3 stack's 0.3 s import
(measured on the benchmark's machine).

So while :func:`regstore.cli.main` runs (:func:`begin` to :func:`end`), those imports run with
the collector paused (:func:`imports`), and what they built is frozen (``gc.freeze``) when
they imported anything: later
collections pass over it, and the processes a sync forks share its pages instead of copying
each one the collector would touch. :func:`end` thaws it: a caller's own process (an in-process
``main``) gets its heap back collectable, and the teardown after a failure still collects
everything (regstore.cli freezes again at the exit of a command that ended well).
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

__all__ = ["begin", "end", "imports", "paused"]

_depth = 0  # begin() calls not yet ended (main run inside main, in one process)
_active = False
_froze = False


def begin() -> None:
    """The console script starts: :func:`imports` pauses the collector until the matching
    :func:`end`. Not when the caller paused it or froze objects of its own (they are not ours
    to thaw); a ``main`` run inside another only counts."""
    global _depth, _active
    _depth += 1
    if _depth == 1:
        _active = gc.isenabled() and gc.get_freeze_count() == 0


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Run the block with the collector paused, then set it back as it was (a caller's own
    setting is left alone). Unlike :func:`imports`, anywhere and without freezing: for the
    CLI package's own imports, which run before :func:`begin`."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def imports() -> Iterator[None]:
    """Run the block (start-up imports, opening a store) with the collector paused, and freeze
    what exists after it if the block imported anything; only between :func:`begin` and
    :func:`end`."""
    global _froze
    if not _active or not gc.isenabled():
        yield
        return
    loaded = len(sys.modules)
    with paused():
        try:
            yield
        finally:
            if len(sys.modules) != loaded:  # (a block that imported nothing froze nothing new)
                gc.freeze()
                _froze = True


def end() -> None:
    """The console script's command is over: what :func:`imports` froze is collectable again
    (at the end of the outermost ``main``)."""
    global _depth, _active, _froze
    _depth = max(0, _depth - 1)
    if _depth == 0 and _active:
        _active = False
        if _froze:
            _froze = False
            gc.unfreeze()
