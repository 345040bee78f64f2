"""Upload bodies of a declared length, streamed in large chunks.

``requests`` sends a body that has ``__len__`` and ``__iter__`` (and no ``read``) with a real
``Content-Length`` and hands urllib3 our chunks as they are — one ``sendall`` per MiB instead
of http.client's 8 KiB reads of a file object, and never the whole blob in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import IO, Any

from regstore.digest import CHUNK_SIZE
from regstore.errors import StoreError, UploadLengthError
from regstore.wire import BlobData, UploadSource

__all__ = ["BlobData", "UploadBody", "UploadLengthError"]


class UploadBody:
    """Exactly ``length`` bytes from ``data``, iterated in chunks of ``chunk_size``.

    Raises :class:`UploadLengthError` (while being sent) when the source does not hold exactly
    ``length`` bytes; an ``OSError`` reading a file becomes :class:`StoreError`.
    """

    def __init__(self, data: BlobData, length: int, chunk_size: int = CHUNK_SIZE) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length = length
        self.chunk_size = chunk_size
        self.sent = 0
        self._data = data
        self._start: int | None = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            if len(data) != length:
                raise UploadLengthError(f"got {len(data)} bytes of data for a length of {length}")
        elif hasattr(data, "read"):
            file: Any = data
            try:
                if file.seekable():
                    self._start = file.tell()
            except (OSError, AttributeError, ValueError):
                self._start = None
        elif not isinstance(data, Iterable):
            raise TypeError(f"cannot upload a {type(data).__name__}: give bytes, a file or chunks")
        self._started = False

    def __len__(self) -> int:
        return self.length

    @property
    def replayable(self) -> bool:
        """True if the body can be sent again (bytes, or a seekable file)."""
        return isinstance(self._data, (bytes, bytearray, memoryview)) or self._start is not None

    def rewind(self) -> bool:
        """Prepare to send again; False if the source cannot be replayed."""
        if not self._started:
            return True
        if isinstance(self._data, (bytes, bytearray, memoryview)):
            self._started, self.sent = False, 0
            return True
        if self._start is not None:
            file: Any = self._data
            try:
                file.seek(self._start)
            except (OSError, AttributeError, ValueError):
                return False
            self._started, self.sent = False, 0
            return True
        return False

    def __iter__(self) -> Iterator[bytes]:
        self._started = True
        self.sent = 0
        data = self._data
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data)
            for pos in range(0, self.length, self.chunk_size):
                part = bytes(view[pos : pos + self.chunk_size])
                self.sent += len(part)
                yield part
            return
        if hasattr(data, "read"):
            yield from self._iter_file(data)  # type: ignore[arg-type]  # hasattr narrows no union
            return
        for piece in data:
            chunk = bytes(piece)
            if not chunk:
                continue
            if self.sent + len(chunk) > self.length:
                raise UploadLengthError(
                    f"the data holds more than the declared {self.length} bytes"
                )
            self.sent += len(chunk)
            yield chunk
        if self.sent != self.length:
            raise UploadLengthError(f"the data ended after {self.sent} of {self.length} bytes")

    def _iter_file(self, file: IO[bytes] | UploadSource) -> Iterator[bytes]:
        remaining = self.length
        while remaining > 0:
            try:
                chunk = file.read(min(self.chunk_size, remaining))
            except OSError as exc:
                raise StoreError(f"reading the data to upload failed: {exc}") from exc
            except io.UnsupportedOperation as exc:  # pragma: no cover - odd file objects
                raise StoreError(f"the data to upload is not readable: {exc}") from exc
            if not chunk:
                raise UploadLengthError(f"the data ended after {self.sent} of {self.length} bytes")
            remaining -= len(chunk)
            self.sent += len(chunk)
            yield chunk
