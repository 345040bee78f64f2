"""Reading a blob as one streamed GET.

s3fs's buffered files fetch ``block_size`` bytes per ranged GET: a 1 GiB blob read in 4 MiB
blocks is 256 requests (each billed on AWS, and each making moto's test server copy the whole
object: a push from moto took twice as long as s3fs's own 8 MiB-block download). A blob is
read front to back, once, so :class:`ObjectStream` sends one GET from the offset asked for and
hands its body over as it arrives, one buffer at a time: one request per blob and no memory
beyond the buffer being filled. A body cut short is resumed with a ranged GET of the same
version (``If-Match`` its ETag), a few times, before the failure is the caller's.

The GET goes as a presigned URL read straight into the caller's buffer where it can
(:mod:`regstore_s3.presigned`: a quarter of the CPU of aiobotocore's body), else through s3fs's
client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from regstore.errors import RegstoreError, StoreError

from .client import _client_error_code, is_not_found, translate_s3_errors
from .presigned import open_direct

__all__ = ["MAX_RESUMES", "ObjectStream"]

#: Ranged GETs one stream may send after its body was cut, before it gives up.
MAX_RESUMES = 3

_T = TypeVar("_T")


def _invalid_range(exc: BaseException) -> bool:
    return _client_error_code(exc) in {"InvalidRange", "416"}


class ObjectStream:
    """The bytes of ``s3://bucket/key`` from ``offset`` to the end, from one streamed GET.

    Raises FileNotFoundError when the object does not exist and StoreError for any other
    failure (of the GET, or of reading its body once the resumes are spent).
    """

    def __init__(self, fs: Any, bucket: str, key: str, offset: int = 0) -> None:
        self._fs = fs
        self._bucket = bucket
        self._key = key
        self._position = offset
        self._what = f"cannot read s3://{bucket}/{key}"
        self._body: Any = None
        self._direct = False  # the body is a DirectBody (presigned GET), not aiobotocore's
        self._etag: str | None = None
        self._ended = False
        self._closed = False
        self._resumes = 0
        self._open()

    def _open(self) -> None:
        from fsspec.asyn import sync

        direct = open_direct(self._fs, self._bucket, self._key, self._position, self._etag)
        if direct is not None:
            self._body, self._direct = direct, True
            self._etag = self._etag or direct.etag
            return
        self._direct = False

        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if self._position:
            kwargs["Range"] = f"bytes={self._position}-"
        if self._etag is not None:
            kwargs["IfMatch"] = self._etag

        async def _get() -> dict[str, Any]:
            response: dict[str, Any] = await self._fs._call_s3("get_object", **kwargs)
            return response

        try:
            with translate_s3_errors(self._what):
                try:
                    response = sync(self._fs.loop, _get)
                except TimeoutError as exc:  # fsspec's FSTimeoutError, aiohttp's: no answer
                    raise StoreError(f"{self._what}: no answer in time ({exc!r})") from exc
        except StoreError as exc:
            cause = exc.__cause__ or exc
            if is_not_found(cause):
                raise FileNotFoundError(f"s3://{self._bucket}/{self._key}") from exc
            if self._position and _invalid_range(cause):
                self._ended = True  # asked from the end of the object on: nothing to read
                return
            raise
        self._body = response["Body"]
        self._etag = self._etag or response.get("ETag")

    def _drain(self, wanted: int, take: Callable[[bytes, int], object]) -> int:
        """Hand ``take`` each chunk of the body (and where it starts) until ``wanted`` bytes
        came (fewer only at the end), in one trip to s3fs's loop; returns the count."""
        from fsspec.asyn import sync

        body = self._body

        async def _read() -> int:
            got = 0
            while got < wanted:
                chunk: bytes = await body.read(wanted - got)
                if not chunk:
                    break
                take(chunk, got)
                got += len(chunk)
            return got

        got: int = sync(self._fs.loop, _read)
        return got

    def _fill_direct(self, view: memoryview) -> int:
        """Fill ``view`` from a presigned GET's body, straight from its socket."""
        body, got = self._body, 0
        while got < len(view) and (n := body.readinto(view[got:])):
            got += n
        return got

    def _fill(self, wanted: int) -> bytes:
        """Up to ``wanted`` bytes (fewer only at the end)."""
        if self._direct:
            buffer = bytearray(wanted)
            with memoryview(buffer) as view:
                got = self._fill_direct(view)
            return bytes(buffer) if got == wanted else bytes(buffer[:got])
        parts: list[bytes] = []
        self._drain(wanted, lambda chunk, _: parts.append(chunk))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _fill_into(self, view: memoryview) -> int:
        """Fill ``view`` (fewer bytes only at the end), each chunk copied straight into it:
        no joined copy of the buffer to copy once more."""

        if self._direct:
            return self._fill_direct(view)

        def take(chunk: bytes, at: int) -> None:
            view[at : at + len(chunk)] = chunk

        return self._drain(len(view), take)

    def _next(self, fill: Callable[[], _T], count: Callable[[_T], int]) -> _T | None:
        """``fill()``'s result and the position moved by its count; a cut body resumed where
        it stopped (``fill`` starts over from the position); None at the end."""
        while not self._ended:
            try:
                result = fill()
            except Exception as exc:  # a cut body: resume where it stopped, or give up
                self._resume(exc)
                continue
            n = count(result)
            if not n:
                self._ended = True
                self._close_body()
            self._position += n
            return result
        return None

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (all that is left when ``n`` < 0); b"" at the end."""
        if n < 0:
            parts = []
            while chunk := self.read(8 << 20):
                parts.append(chunk)
            return b"".join(parts)
        if n == 0:
            return b""
        return self._next(lambda: self._fill(n), len) or b""

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """Read into ``buffer``; returns the count (0 at the end)."""
        with memoryview(buffer) as target, target.cast("B") as view:
            if not len(view):
                return 0
            return self._next(lambda: self._fill_into(view), int) or 0

    def _resume(self, exc: Exception) -> None:
        self._close_body()
        if self._closed:
            raise StoreError(f"{self._what}: the stream was closed") from exc
        if self._resumes >= MAX_RESUMES or isinstance(exc, RegstoreError):
            if isinstance(exc, RegstoreError):
                raise exc
            raise StoreError(f"{self._what}: {exc}") from exc
        self._resumes += 1
        self._open()

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None and self._direct:
            body.close()
        elif body is not None:
            # on s3fs's loop thread, which owns the connection (gone at interpreter exit)
            with contextlib.suppress(RuntimeError):
                self._fs.loop.call_soon_threadsafe(body.close)

    def seekable(self) -> bool:
        """False: the stream goes front to back."""
        return False

    def readable(self) -> bool:
        """True."""
        return True

    def close(self) -> None:
        """Release the connection (unread bytes of the body are dropped). A read under way
        in another thread then fails instead of sending another GET. (On a presigned GET the
        close waits for such a read to return: callers reading on a thread of their own, as
        the engine's read-ahead does, close only once it has.)"""
        self._closed = self._ended = True
        self._close_body()
