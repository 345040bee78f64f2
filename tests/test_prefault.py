"""The helper that faults a large buffer's pages in ahead of its writer (backends/prefault.py)."""

from __future__ import annotations

import mmap
import resource
import threading
import time

import pytest

from regstore.backends import prefault
from regstore.backends.prefault import AHEAD, Prefaulter

PAGE = mmap.PAGESIZE
MiB = 1 << 20


class _Recorder:
    """A populate call that records its ranges (and can refuse from the n-th call on)."""

    def __init__(self, refuse_from: int | None = None) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.refuse_from = refuse_from
        self.lock = threading.Lock()

    def __call__(self, address: int, length: int) -> bool:
        with self.lock:
            self.ranges.append((address, length))
            return self.refuse_from is None or len(self.ranges) < self.refuse_from

    def covered(self) -> int:
        with self.lock:
            return sum(length for _, length in self.ranges)


def _until(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return bool(condition())  # type: ignore[operator]


def _quiet(recorder: _Recorder) -> bool:
    """True once the recorder saw no call for a while (the helper waits for the writer)."""
    before = len(recorder.ranges)
    time.sleep(0.05)
    return len(recorder.ranges) == before


def test_every_call_is_page_aligned_and_stays_inside_the_buffer() -> None:
    """madvise refuses an unaligned start (EINVAL): an odd address and odd write sizes must
    still give whole pages, all within the buffer."""
    address, length = 0x10_0000_0030, 200 * MiB + 123
    recorder = _Recorder()
    helper = Prefaulter(address, length, recorder)
    written = 0
    for n in (3 * MiB + 7, 5 * MiB + 1, 100 * MiB + 11, 92 * MiB):
        written = min(written + n, length)
        helper.advance(written)
    first = -(-address // PAGE) * PAGE
    end = (address + length) // PAGE * PAGE
    assert _until(lambda: recorder.covered() >= end - first)
    helper.stop()
    assert not helper.running
    assert recorder.ranges[0][0] == first
    position = first
    for start, size in recorder.ranges:
        assert start % PAGE == 0 and size % PAGE == 0 and size > 0, (start, size)
        assert start == position, "ranges are contiguous, in order, none twice"
        position += size
    assert position == end


def test_the_helper_stays_a_bounded_distance_ahead_of_the_writer() -> None:
    """A declared size is not a promise: pages are made resident only AHEAD past what was
    written, however large the buffer claims to be."""
    address, length = 0x20_0000_0000, 1 << 40  # a 1 TiB claim: never populated whole
    recorder = _Recorder()
    helper = Prefaulter(address, length, recorder)
    try:
        assert _until(lambda: recorder.covered() >= AHEAD)
        assert _until(lambda: _quiet(recorder))
        assert recorder.covered() == AHEAD, "nothing written yet: only AHEAD populated"
        helper.advance(40 * MiB)
        assert _until(lambda: recorder.covered() >= 40 * MiB + AHEAD)
        assert _until(lambda: _quiet(recorder))
        assert recorder.covered() == 40 * MiB + AHEAD
    finally:
        helper.stop()
    assert not helper.running


def test_a_refusal_ends_the_helper_and_nothing_else() -> None:
    """Where the call is missing (an older kernel says EINVAL), the helper stops trying."""
    recorder = _Recorder(refuse_from=2)
    helper = Prefaulter(0x30_0000_0000, 512 * MiB, recorder)
    assert _until(lambda: not helper.running)
    helper.advance(300 * MiB)  # the writer goes on; nobody is there to tell
    time.sleep(0.05)
    assert len(recorder.ranges) == 2
    helper.stop()  # stopping an ended helper is fine


def test_stop_waits_for_the_helper_and_later_writes_start_nothing() -> None:
    recorder = _Recorder()
    helper = Prefaulter(0x40_0000_0000, 1 << 30, recorder)
    helper.stop()
    assert not helper.running
    calls = len(recorder.ranges)
    helper.advance(512 * MiB)
    time.sleep(0.05)
    assert len(recorder.ranges) == calls


def test_a_buffer_smaller_than_a_page_starts_no_helper() -> None:
    recorder = _Recorder()
    helper = Prefaulter(0x50_0000_0100, 1000, recorder)
    assert not helper.running
    helper.stop()
    assert recorder.ranges == []


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


@pytest.mark.skipif(prefault.populate_call() is None, reason="needs Linux")
def test_the_kernel_populates_a_real_buffer_ahead_of_its_writer() -> None:
    """The real call on a real anonymous mapping: the writer then meets no page fault in the
    populated range (where an unpopulated range of the same size costs one per page), and
    the bytes stay the zeros they were."""
    size = 2 * AHEAD
    buffer = mmap.mmap(-1, size)
    view = memoryview(buffer)
    try:
        helper = Prefaulter(prefault.buffer_address(view), size)
        view[:MiB] = b"\x01" * MiB
        helper.advance(MiB)
        # (a step at a time: one more MiB written asks for nothing yet)
        if not _until(lambda: helper.populated >= AHEAD or not helper.running):
            pytest.fail("the helper made no progress")
        helper.stop()
        if helper.populated == 0:
            pytest.skip("this kernel has no MADV_POPULATE_WRITE (Linux < 5.14)")
        assert helper.populated == AHEAD
        assert view[MiB:AHEAD] == bytes(AHEAD - MiB), "populating changed no byte"
        chunk = b"\x02" * MiB
        before = _minor_faults()
        for start in range(MiB, AHEAD, MiB):
            view[start : start + MiB] = chunk
        populated_faults = _minor_faults() - before
        before = _minor_faults()
        for start in range(AHEAD + MiB, 2 * AHEAD, MiB):
            view[start : start + MiB] = chunk
        fresh_faults = _minor_faults() - before
        assert fresh_faults >= (AHEAD - MiB) // PAGE // 2, "the control range faulted per page"
        assert populated_faults * 100 < fresh_faults, (populated_faults, fresh_faults)
        assert view[:MiB] == b"\x01" * MiB
    finally:
        view.release()
        buffer.close()
