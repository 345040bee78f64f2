"""Fault in the pages of a large in-memory buffer ahead of its writer, from a thread of its own.

Keeping a blob in the process costs the kernel a page fault and a zeroed page per 4 KiB the
first time each page is written: for 1 GiB, about 0.4 s of system time on the writer's own
thread, on top of the copy (benchmarks/RESULTS.md, the pull into ``memory://``). Linux can
populate a whole range in one call, ``madvise(MADV_POPULATE_WRITE)`` (5.14+), and ctypes lets
go of the GIL around it; so a helper thread populates the next pages while the writer copies
into the ones before, and the writer finds them ready.

The helper stays a bounded distance (:data:`AHEAD`) in front of what was written: the size a
buffer is reserved for is only declared, and a source that lies about it must not make the
process resident in memory it never fills. Populating changes no byte (the pages are the
private zero pages a write would fault in), so it is safe beside the writer's copies. Where
the call is missing (another OS, an older kernel) the helper stops at its first refusal and
the writer faults its pages in itself, as without it.
"""

from __future__ import annotations

import functools
import mmap
import sys
import threading
from collections.abc import Callable

from .libc import linux_function

__all__ = ["AHEAD", "Prefaulter", "buffer_address", "populate_call"]

#: How far in front of the writer pages are populated.
AHEAD = 64 << 20
#: Pages populated per call (the helper looks at the writer's progress between calls).
_STEP = 8 << 20
_PAGE = mmap.PAGESIZE
_MADV_POPULATE_WRITE = 23
#: An idle helper whose writer went away (closed without a word) ends after this many seconds.
_IDLE_SECONDS = 60.0


@functools.cache
def populate_call() -> Callable[[int, int], bool] | None:
    """``populate(address, length) -> ok`` on this platform, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # imported here: only a store that reserves large buffers pays for it

    signature = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise = linux_function("madvise", signature, ctypes.c_int)
    if madvise is None:
        return None

    def populate(address: int, length: int) -> bool:
        return bool(madvise(address, length, _MADV_POPULATE_WRITE) == 0)

    return populate


def buffer_address(buffer: memoryview) -> int:
    """The address of a writable buffer's first byte (the view is not kept)."""
    import ctypes

    anchor = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # holds an export of the buffer: drop it before the owner is written again


class Prefaulter:
    """Populates ``[address, address + length)`` up to :data:`AHEAD` bytes past what
    :meth:`advance` says is written.

    The owner of the memory must call :meth:`stop` before it frees, shrinks or moves it: the
    helper works on the raw address. ``populate`` is :func:`populate_call`'s (a parameter for
    tests).
    """

    def __init__(
        self, address: int, length: int, populate: Callable[[int, int], bool] | None = None
    ) -> None:
        self._populate = populate or populate_call()
        # only whole pages inside the buffer: madvise wants an aligned start
        self._start = -(-address // _PAGE) * _PAGE
        self._end = max(self._start, (address + length) // _PAGE * _PAGE)
        self._address = address
        self._done = self._start
        self._wanted = min(self._start + AHEAD, self._end)
        self._stopped = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        if self._populate is not None and self._start < self._end:
            self._thread = threading.Thread(target=self._run, name="regstore-prefault", daemon=True)
            self._thread.start()

    @property
    def populated(self) -> int:
        """Bytes from the buffer's start populated so far (for tests and diagnostics)."""
        return max(0, self._done - self._address)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def advance(self, written: int) -> None:
        """``written`` bytes from the start are in: populate up to :data:`AHEAD` past them."""
        target = min((self._address + written + AHEAD) // _PAGE * _PAGE, self._end)
        # tell the helper only once it can do a whole step more (a write is often 1-2 MiB)
        if target >= self._wanted + _STEP or (target == self._end > self._wanted):
            with self._changed:
                self._wanted = max(self._wanted, target)
                self._changed.notify()

    def stop(self) -> None:
        """End the helper and wait for it (at most one step's call): the memory may go then."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        populate = self._populate
        assert populate is not None
        while True:
            with self._changed:
                if self._done >= self._end:
                    return  # the whole buffer is populated
                if not self._stopped and self._done >= self._wanted:
                    self._changed.wait(_IDLE_SECONDS)
                    if not self._stopped and self._done >= self._wanted:
                        return  # nobody wrote for a minute: the writer is gone
                if self._stopped:
                    return
                start, end = self._done, min(self._wanted, self._done + _STEP)
            if not populate(start, end - start):
                return  # not supported here: the writer faults its pages in itself
            self._done = end
