"""How much memory a store needs to move one large blob: the kit's check that a backend
streams blobs instead of holding them whole.

:func:`stream_blob_through` writes a generated blob of ``size`` bytes through
``store.layer(digest).writer()`` in ``chunk_size`` chunks, commits it, reads it back through
the reader in chunks and checks its digest, holding at most one chunk itself (after a small
blob through the same path, so that one-time set-up is not counted); it reports the process's
resident memory before and at its peak (Linux: ``VmHWM`` of ``/proc/self/status``,
reset through ``/proc/self/clear_refs`` first). Run it in a fresh process
(:data:`regstore.testing.processes.CHILD_SCRIPT` mode ``memory``), where nothing else
allocates; the conformance suite does (``BackendConformance``,
``test_a_large_blob_streams_through_bounded_memory``).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from regstore.store import ObjectStore

__all__ = ["MemoryReport", "generated_chunks", "peak_memory", "reset_peak_memory",
           "stream_blob_through"]  # fmt: skip

_STATUS = "/proc/self/status"


@dataclass(frozen=True)
class MemoryReport:
    """Resident memory of a process, in bytes: before a blob went through, and at the peak."""

    baseline: int
    peak: int

    @property
    def growth(self) -> int:
        """How far the peak rose above the baseline."""
        return max(0, self.peak - self.baseline)


def _status(field: str) -> int:
    with open(_STATUS) as status:
        found = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M)
    if found is None:
        raise OSError(f"{_STATUS} has no {field} (not Linux?)")
    return int(found.group(1)) * 1024


def reset_peak_memory() -> int:
    """Reset the process's peak resident memory to its current one (Linux ``clear_refs``);
    returns the current resident memory. Where the reset is refused, the peak so far stays
    (the baseline is then that peak, which only makes a check more lenient)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return _status("VmHWM")
    return _status("VmRSS")


def peak_memory() -> int:
    """The process's peak resident memory since its start or the last reset, in bytes."""
    return _status("VmHWM")


def generated_chunks(size: int, chunk_size: int, seed: int) -> Iterator[bytes]:
    """The same pseudo-random ``size`` bytes for the same seed, ``chunk_size`` at a time
    (never all at once)."""
    rng = random.Random(seed)
    for offset in range(0, size, chunk_size):
        yield rng.randbytes(min(chunk_size, size - offset))


def stream_blob_through(store: ObjectStore, size: int, chunk_size: int, seed: int) -> MemoryReport:
    """Write a generated blob of ``size`` bytes into ``store`` and read it back, both through
    the public writer and reader in ``chunk_size`` chunks; the memory it took.

    Raises AssertionError when the bytes read back are not the bytes written.
    """
    # A small blob first, through the same path: what a backend sets up once (clients,
    # connection pools, modules imported on first use) is not what a blob's size costs.
    _write_and_read(store, min(size, 2 * chunk_size), chunk_size, seed + 1)
    baseline = reset_peak_memory()
    _write_and_read(store, size, chunk_size, seed)
    return MemoryReport(baseline, peak_memory())


def _write_and_read(store: ObjectStore, size: int, chunk_size: int, seed: int) -> None:
    hasher = hashlib.sha256()
    for chunk in generated_chunks(size, chunk_size, seed):
        hasher.update(chunk)
    digest = f"sha256:{hasher.hexdigest()}"
    writer = store.layer(digest).writer()
    writer.set_size(size)
    for chunk in generated_chunks(size, chunk_size, seed):
        writer.write(chunk)
        del chunk
    writer.commit()
    check = hashlib.sha256()
    read = 0
    with store.layer(digest).reader() as reader:
        for chunk in reader.chunks(chunk_size):
            check.update(chunk)
            read += len(chunk)
    assert read == size, f"read {read} bytes of a {size}-byte blob"
    assert f"sha256:{check.hexdigest()}" == digest, "the blob read back is not the blob written"
