"""Streaming digests: hash bytes while they pass, never holding a whole blob.

hashlib releases the GIL for updates larger than 2 KiB, so hashing big chunks in one thread
overlaps with network and disk I/O in others.
"""

from __future__ import annotations

import hashlib
from typing import IO, TYPE_CHECKING, Protocol

from regstore.errors import DigestMismatchError
from regstore.reference import SUPPORTED_ALGORITHMS, Digest

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CHUNK_SIZE",
    "Digester",
    "DigestingReader",
    "DigestingWriter",
    "digest_bytes",
    "digest_stream",
    "verify",
]

#: Chunk size for streaming copies: large enough that per-chunk Python overhead is negligible.
CHUNK_SIZE = 1 << 20


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


class Digester:
    """An incremental hasher for one algorithm that also counts bytes."""

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._hash: _Hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed more bytes."""
        self._hash.update(data)  # type: ignore[arg-type]
        # nbytes, not len(): a memoryview of a wider format (or several dimensions) has fewer
        # items than bytes, and hashlib hashes its bytes.
        self.size += data.nbytes if isinstance(data, memoryview) else len(data)

    def digest(self) -> Digest:
        """The digest of everything fed so far."""
        return Digest(f"{self.algorithm}:{self._hash.hexdigest()}")


def digest_bytes(data: bytes, algorithm: str = "sha256") -> Digest:
    """The digest of ``data``."""
    d = Digester(algorithm)
    d.update(data)
    return d.digest()


def digest_stream(
    stream: IO[bytes] | Iterable[bytes], algorithm: str = "sha256", chunk_size: int = CHUNK_SIZE
) -> tuple[Digest, int]:
    """Hash a file object or an iterable of chunks to its end; returns ``(digest, size)``."""
    d = Digester(algorithm)
    if hasattr(stream, "read"):
        read = stream.read
        while chunk := read(chunk_size):
            d.update(chunk)
    else:
        for chunk in stream:
            d.update(chunk)
    return d.digest(), d.size


def verify(
    subject: str,
    expected: Digest | str,
    actual: Digest | str,
    *,
    expected_size: int | None = None,
    actual_size: int | None = None,
) -> None:
    """Raise :class:`DigestMismatchError` unless digest (and size, when both given) match."""
    size_ok = expected_size is None or actual_size is None or expected_size == actual_size
    if str(expected) != str(actual) or not size_ok:
        raise DigestMismatchError(
            subject,
            expected=str(expected),
            actual=str(actual),
            expected_size=expected_size,
            actual_size=actual_size,
        )


class DigestingReader:
    """Wrap a readable file object; hash what is read. :meth:`verify` checks the result."""

    def __init__(
        self,
        raw: IO[bytes],
        expected: Digest | str,
        *,
        expected_size: int | None = None,
        subject: str = "blob",
    ) -> None:
        self._raw = raw
        self.expected = Digest(expected)
        self.expected_size = expected_size
        self.subject = subject
        self.digester = Digester(self.expected.algorithm)

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all remaining when ``n`` < 0) and hash them."""
        data = self._raw.read(n)
        if data:
            self.digester.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer``, hash what was read; returns the byte count (0 at the end)."""
        view = memoryview(buffer).cast("B")  # count and slice bytes, whatever the format
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        if n:
            self.digester.update(view[:n])
        return int(n or 0)

    def verify(self) -> Digest:
        """Check what was read so far against the expected digest and size."""
        verify(
            self.subject,
            self.expected,
            self.digester.digest(),
            expected_size=self.expected_size,
            actual_size=self.digester.size,
        )
        return self.expected

    def close(self) -> None:
        """Close the wrapped file object."""
        self._raw.close()


class DigestingWriter:
    """Wrap a writable file object; hash what is written."""

    def __init__(self, raw: IO[bytes], algorithm: str = "sha256") -> None:
        self._raw = raw
        self.digester = Digester(algorithm)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` to the wrapped file object and hash what it accepted.

        Returns the number of bytes written. Only those are hashed: when the raw object
        writes less (a raw, unbuffered stream may) or fails, the digest still describes
        exactly the bytes that reached it.
        """
        written = self._raw.write(data)
        view = memoryview(data).cast("B")
        count = len(view) if written is None else written
        self.digester.update(view if count == len(view) else view[:count])
        return count

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self.digester.size

    def digest(self) -> Digest:
        """The digest of what was written so far."""
        return self.digester.digest()

    def close(self) -> None:
        """Close the wrapped file object."""
        self._raw.close()
