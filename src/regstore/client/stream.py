""":class:`BlobStream`: a blob's bytes as they arrive, never buffered whole.

The bytes are read straight from the connection (``urllib3``'s ``read(..., decode_content=
False)``): a blob is usually gzip and must reach the caller exactly as stored, whatever
``Content-Encoding`` a proxy claims. A broken connection surfaces as
:class:`~regstore.errors.TransportError` carrying how far the stream got, so the engine can
resume with ``get_blob(name, digest, byte_offset=...)``.

A body whose length nobody announced (chunked transfer encoding, no ``Content-Range``) is cut
off one byte past ``max_unknown_size`` with :class:`~regstore.errors.BlobTooLargeError`, so an
endless stream cannot fill a disk; the caller verifies the digest of what ends in time.
"""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

import requests
import urllib3

from regstore.client.errors_map import Operation, http_context, transport_error
from regstore.client.limits import how_to_raise
from regstore.digest import CHUNK_SIZE
from regstore.errors import BlobTooLargeError, TransportError
from regstore.reference import Digest

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from regstore.client.transport import Reply

__all__ = ["BlobStream"]

_READ_ERRORS = (
    urllib3.exceptions.HTTPError,
    requests.RequestException,
    http.client.HTTPException,
    OSError,
)


class BlobStream(io.RawIOBase):
    """A readable, streaming view of (part of) a blob; use it as a context manager.

    Attributes:
        name, digest: what is being read.
        offset: where in the blob this stream starts. It is 0 when the registry ignored a
            ranged request and sent the whole blob: the caller must then restart from 0.
        length: bytes this response carries (None if the registry did not say).
        size: the whole blob's size when known (from ``Content-Range`` or ``Content-Length``).
        max_unknown_size: when neither ``length`` nor ``size`` is known, reading past this
            position in the blob raises BlobTooLargeError (None: no bound).

    ``read``/``readinto`` return the next bytes; :meth:`iter_chunks` yields large chunks.
    The connection (and the client's in-flight slot) is released at the end of the body, on
    :meth:`close`, or when the stream is garbage-collected.
    """

    def __init__(
        self,
        reply: Reply | None,
        *,
        name: str,
        digest: Digest,
        offset: int,
        length: int | None,
        size: int | None,
        op: Operation,
        max_unknown_size: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.digest = digest
        self.offset = offset
        self.length = length
        self.size = size
        # The bound only matters when nothing else ends the body.
        self._bound = max_unknown_size if length is None and size is None else None
        self._reply = reply
        self._op = op
        self._pos = 0
        self._eof = reply is None or reply.response is None

    # -- io.RawIOBase -------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """The position in the blob: ``offset`` plus the bytes read so far."""
        return self.offset + self._pos

    @property
    def bytes_read(self) -> int:
        """Bytes read from this response so far."""
        return self._pos

    def _fail(self, exc: BaseException) -> TransportError:
        url = self._reply.url if self._reply is not None else ""
        method = self._reply.method if self._reply is not None else "GET"
        self._release()
        err = transport_error(self._op, method, url, exc)
        err.message += f" (after {self._pos} bytes of the body, at blob offset {self.tell()})"
        return err

    def _read_raw(self, n: int) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on a closed blob stream")
        if self._eof or n == 0:
            return b""
        reply = self._reply
        assert reply is not None and reply.response is not None
        if self.length is not None:
            n = min(n, self.length - self._pos)
            if n <= 0:
                self._finish()
                return b""
        n = self._within_bound(n)
        try:
            data = reply.response.raw.read(n, decode_content=False)
        except _READ_ERRORS as exc:
            raise self._fail(exc) from exc
        if not data:
            if self.length is not None and self._pos < self.length:
                raise self._fail(ConnectionError("IncompleteRead: body ended early"))
            self._finish()
            return b""
        self._check_bound(len(data))
        self._pos += len(data)
        if self.length is not None and self._pos >= self.length:
            self._finish()
        return bytes(data)

    def read(self, size: int | None = -1, /) -> bytes:
        """Read up to ``size`` bytes (all the rest when negative: only for small blobs)."""
        if size is None or size < 0:
            parts = []
            while chunk := self._read_raw(CHUNK_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        return self._read_raw(size)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        direct = self._direct_body()
        if direct is None:
            data = self._read_raw(len(view))
            view[: len(data)] = data
            return len(data)
        return self._readinto_direct(direct, view)

    def _direct_body(self) -> http.client.HTTPResponse | None:
        """The http.client response under urllib3's, when bytes can go straight into a buffer.

        urllib3's ``read(amt)`` allocates a fresh ``amt``-byte object per call (and http.client
        a second one); for multi-megabyte reads that doubles the copying and, through malloc's
        adaptive mmap threshold, inflates the peak memory of a long pull. With content decoding
        off, urllib3 adds nothing to the raw bytes, so reading the underlying response into the
        caller's buffer is the same stream without the copies.
        """
        if self._eof or self.closed or self._reply is None or self._reply.response is None:
            return None
        fp = getattr(self._reply.response.raw, "_fp", None)
        return fp if isinstance(fp, http.client.HTTPResponse) else None

    def _readinto_direct(self, fp: http.client.HTTPResponse, view: memoryview) -> int:
        want = len(view)
        if self.length is not None:
            want = min(want, self.length - self._pos)
            if want <= 0:
                self._finish()
                return 0
        if want == 0:
            return 0
        want = self._within_bound(want)
        try:
            n = fp.readinto(view[:want])
        except _READ_ERRORS as exc:
            raise self._fail(exc) from exc
        if not n:
            if self.length is not None and self._pos < self.length:
                raise self._fail(ConnectionError("IncompleteRead: body ended early"))
            self._finish()
            return 0
        self._check_bound(n)
        self._pos += n
        if self.length is not None and self._pos >= self.length:
            self._finish()
        return n

    def _within_bound(self, n: int) -> int:
        """Read up to the bound; there, one byte more tells whether the body goes on."""
        if self._bound is None:
            return n
        room = self._bound - self.tell()
        return min(n, room) if room > 0 else 1

    def _check_bound(self, got: int) -> None:
        if self._bound is None or self.tell() + got <= self._bound:
            return
        reply = self._reply
        self._release()
        raise BlobTooLargeError(
            f"{self._op.what}: the registry sent more than {self._bound} bytes of a blob whose "
            "length nobody announced (no size in the manifest, no Content-Length); stopped. "
            f"If the blob really is that large, {how_to_raise('max_unknown_blob_size')}",
            digest=str(self.digest),
            limit=self._bound,
            http=None if reply is None else http_context(reply.method, reply.url, reply.status),
        )

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the body in chunks of up to ``chunk_size`` bytes (1 MiB by default)."""
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        while chunk := self._read_raw(chunk_size):
            yield chunk

    # -- release ------------------------------------------------------------------------------
    def _finish(self) -> None:
        """End of body: give the connection back to the pool."""
        self._eof = True
        # Read straight from http.client, the body's end is news to urllib3, whose close()
        # would shut a connection with nothing left on it: hand it back for the next request
        # instead (a mirror of small images opened a connection per blob).
        reply = self._reply
        raw = getattr(reply.response, "raw", None) if reply is not None else None
        fp = getattr(raw, "_fp", None)
        if isinstance(fp, http.client.HTTPResponse) and fp.isclosed():
            release = getattr(raw, "release_conn", None)
            if release is not None:
                release()
        self._release()

    def _release(self) -> None:
        self._eof = True
        if self._reply is not None:
            self._reply.close()

    def close(self) -> None:
        """Release the connection; reading afterwards raises ValueError."""
        if not self.closed:
            self._release()
        super().close()

    def __repr__(self) -> str:
        return (
            f"BlobStream({self.name!r}, {self.digest}, offset={self.offset}, "
            f"length={self.length}, size={self.size})"
        )
