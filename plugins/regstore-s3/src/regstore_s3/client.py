"""The few S3 calls regstore makes itself, on s3fs's client, with errors translated once.

:class:`S3Objects` speaks to one bucket through :meth:`s3fs.S3FileSystem.call_s3` (so it
shares s3fs's session, credentials, retries and connection pool) for what the fsspec API does
not offer: conditional writes (``If-None-Match: *``, ``If-Match: <etag>``), the server's clock,
and multipart uploads (``UploadPart``, and server-side ``UploadPartCopy``).

Every failure leaves this module as a :class:`regstore.errors.StoreError` chained to the
original, except a failed precondition, which is :class:`PreconditionFailed` (also a
StoreError) so callers can treat "someone else got there first" as an answer, not a fault.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from regstore.errors import RegstoreError, StoreError

__all__ = [
    "SLOW_OPERATIONS",
    "SLOW_READ_TIMEOUT",
    "MultipartUpload",
    "ObjectInfo",
    "PreconditionFailed",
    "S3Objects",
    "is_not_found",
    "translate_s3_errors",
]

#: Error codes meaning "a condition of this request did not hold" (412) or "another
#: conditional request on this key is in flight" (409, AWS asks to retry).
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchUpload", "NotFound", "404"}


class PreconditionFailed(StoreError):
    """A conditional S3 request lost: the object exists, or its ETag changed."""


def _client_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind ``exc`` (s3fs keeps botocore's ClientError as the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            code = error.get("Code")
            if code:
                return str(code)
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if status:
                return str(status)
        current = current.__cause__ or current.__context__
    return None


def is_not_found(exc: BaseException) -> bool:
    """True if ``exc`` says the object (or upload) does not exist."""
    if isinstance(exc, FileNotFoundError):
        return True
    return _client_error_code(exc) in _NOT_FOUND_CODES


def is_missing_bucket(exc: BaseException) -> bool:
    """True if ``exc`` says the bucket itself does not exist."""
    return _client_error_code(exc) == "NoSuchBucket"


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):  # s3fs: PreconditionFailed on If-None-Match
        return True
    return _client_error_code(exc) in _CONFLICT_CODES


def _error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError]
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError, ClientError

        types += [BotoCoreError, ClientError]
    with contextlib.suppress(ImportError):
        import aiohttp

        types.append(aiohttp.ClientError)
    return tuple(types)


_S3_ERRORS = _error_types()


@contextlib.contextmanager
def translate_s3_errors(what: str) -> Iterator[None]:
    """Turn S3, botocore, aiohttp and OS errors raised inside into a chained StoreError.

    Regstore errors and ``TimeoutError`` (an outcome of waits) pass through unchanged.
    """
    try:
        yield
    except (RegstoreError, TimeoutError):
        raise
    except _S3_ERRORS as exc:
        if _is_conflict(exc):
            raise PreconditionFailed(f"{what}: {exc}") from exc
        raise StoreError(f"{what}: {exc}") from exc


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD, GET or LIST says about one object."""

    key: str
    size: int
    etag: str
    mtime: float  #: LastModified, seconds since the epoch (server clock, 1 s resolution)


@dataclass(frozen=True)
class MultipartUpload:
    """An incomplete multipart upload, as ``ListMultipartUploads`` reports it."""

    key: str
    upload_id: str
    initiated: float  #: seconds since the epoch (server clock)


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return float(value.timestamp())
    if isinstance(value, str):
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(value).timestamp()
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()


def _server_time(response: dict[str, Any]) -> float:
    """The server's clock at the response (``Date`` header); the local clock if absent."""
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    date = headers.get("date")
    if isinstance(date, str):
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


#: Operations whose answer may legitimately take long: S3 documents that completing a
#: multipart upload "could take several minutes" (it keeps the connection alive with
#: whitespace; S3 clones such as moto send nothing until done) and a server-side copy is as
#: slow as the bytes it copies. They get this read timeout instead of the client's usual one,
#: because a timed-out completion that is retried is worse than a slow one: the retry finds the
#: upload gone (NoSuchUpload) or races the first attempt on the server.
SLOW_OPERATIONS = ("CompleteMultipartUpload", "UploadPartCopy", "CopyObject")
SLOW_READ_TIMEOUT = 900.0
_SLOW_HANDLER_ID = "regstore-s3-slow-read-timeout"


def _slow_read_timeout(context: dict[str, Any], **_: Any) -> None:
    """botocore ``before-call`` handler: a long read timeout for this one request."""
    context["read_timeout"] = max(SLOW_READ_TIMEOUT, context.get("read_timeout") or 0)


#: Bodies at least this large are sent as a stream over the caller's buffer: aiohttp copies a
#: bytes body twice on its way to the socket (a slice, then a join with the headers), a
#: stream goes out in 64 KiB reads.
_STREAM_THRESHOLD = 256 * 1024


class _BufferStream(io.RawIOBase):
    """A seekable, read-only file over a bytes-like buffer, without copying it."""

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = min(max(base + offset, 0), len(self._view))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._view) - self._pos)
        target[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count

    def read(self, size: int = -1) -> bytes:
        end = (
            len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        )
        data = bytes(self._view[self._pos : end])
        self._pos = end
        return data

    def __len__(self) -> int:
        return len(self._view)


class S3Objects:
    """Single-object S3 requests on one bucket, through an ``S3FileSystem``'s client.

    Keys are full object keys inside ``bucket`` (no bucket, no leading slash). Thread-safe:
    s3fs runs every call on its own event-loop thread.
    """

    def __init__(self, fs: Any, bucket: str) -> None:
        self.fs = fs
        self.bucket = bucket

    def _call(self, what: str, method: str, **kwargs: Any) -> dict[str, Any]:
        with translate_s3_errors(what):
            result: dict[str, Any] = self.fs.call_s3(method, Bucket=self.bucket, **kwargs)
            return result

    def _get_object(self, what: str, **kwargs: Any) -> tuple[dict[str, Any], bytes]:
        """GET an object and read its body, in one trip to s3fs's event loop."""
        from fsspec.asyn import sync

        async def _get() -> tuple[dict[str, Any], bytes]:
            response: dict[str, Any] = await self.fs._call_s3(
                "get_object", Bucket=self.bucket, **kwargs
            )
            async with response["Body"] as body:
                data: bytes = await body.read()
            return response, data

        with translate_s3_errors(what):
            result: tuple[dict[str, Any], bytes] = sync(self.fs.loop, _get)
            return result

    # -- single objects ----------------------------------------------------------------------

    def put(
        self,
        key: str,
        body: bytes | bytearray,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """PUT an object (atomically visible); returns its ETag.

        ``if_none_match``: create only (PreconditionFailed if it exists). ``if_match``:
        replace only the version with this ETag (PreconditionFailed otherwise).
        """
        payload: Any = body if len(body) < _STREAM_THRESHOLD else _BufferStream(body)
        kwargs: dict[str, Any] = {"Key": key, "Body": payload}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        response = self._call(f"cannot write s3://{self.bucket}/{key}", "put_object", **kwargs)
        return str(response.get("ETag", ""))

    def get(self, key: str) -> tuple[bytes, ObjectInfo, float] | None:
        """``(body, info, server time)`` of a small object, or None if it does not exist."""
        what = f"cannot read s3://{self.bucket}/{key}"
        try:
            response, body = self._get_object(what, Key=key)
        except StoreError as exc:
            if is_not_found(exc):
                return None
            raise
        info = ObjectInfo(
            key,
            int(response.get("ContentLength", len(body))),
            str(response.get("ETag", "")),
            _timestamp(response.get("LastModified")),
        )
        return body, info, _server_time(response)

    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and mtime of an object, or None if it does not exist."""
        try:
            response = self._call(f"cannot stat s3://{self.bucket}/{key}", "head_object", Key=key)
        except StoreError as exc:
            if is_not_found(exc):
                return None
            raise
        return ObjectInfo(
            key,
            int(response.get("ContentLength", 0)),
            str(response.get("ETag", "")),
            _timestamp(response.get("LastModified")),
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete an object (no error if absent).

        With ``if_match``, only the version with that ETag; PreconditionFailed if it changed.
        Where the endpoint does not implement conditional deletes (it answers NotImplemented),
        the ETag is compared with a HEAD first instead (a small race, documented).
        """
        what = f"cannot delete s3://{self.bucket}/{key}"
        kwargs: dict[str, Any] = {"Key": key}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            self._call(what, "delete_object", **kwargs)
        except PreconditionFailed:
            raise
        except StoreError as exc:
            if is_not_found(exc):
                return
            if if_match is None or _client_error_code(exc) not in ("NotImplemented", "501"):
                raise
            current = self.head(key)
            if current is None:
                return
            if current.etag != if_match:
                raise PreconditionFailed(f"{what}: it changed (ETag {current.etag})") from exc
            self._call(what, "delete_object", Key=key)

    def delete_many(self, keys: list[str]) -> None:
        """Delete objects in batches of 1000 (absent ones are fine)."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            response = self._call(
                f"cannot delete {len(batch)} objects in s3://{self.bucket}",
                "delete_objects",
                Delete={"Objects": batch, "Quiet": True},
            )
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise StoreError(
                    f"cannot delete s3://{self.bucket}/{first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                )

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (no delimiter), in key order."""
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            response = self._call(
                f"cannot list s3://{self.bucket}/{prefix}", "list_objects_v2", **kwargs
            )
            for item in response.get("Contents", []) or []:
                found.append(
                    ObjectInfo(
                        str(item["Key"]),
                        int(item.get("Size", 0)),
                        str(item.get("ETag", "")),
                        _timestamp(item.get("LastModified")),
                    )
                )
            if not response.get("IsTruncated"):
                break
            token = response.get("NextContinuationToken")
            if not token:
                break
        found.sort(key=lambda info: info.key)
        return found

    def list_children(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        """One level under ``prefix`` (ending in ``/``): ``(objects, sub-prefixes)``."""
        files: list[ObjectInfo] = []
        folders: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            response = self._call(
                f"cannot list s3://{self.bucket}/{prefix}", "list_objects_v2", **kwargs
            )
            for item in response.get("Contents", []) or []:
                files.append(
                    ObjectInfo(
                        str(item["Key"]),
                        int(item.get("Size", 0)),
                        str(item.get("ETag", "")),
                        _timestamp(item.get("LastModified")),
                    )
                )
            folders.extend(str(p["Prefix"]) for p in response.get("CommonPrefixes", []) or [])
            if not response.get("IsTruncated"):
                break
            token = response.get("NextContinuationToken")
            if not token:
                break
        return files, folders

    def has_prefix(self, prefix: str) -> bool:
        """True if at least one object's key starts with ``prefix``."""
        response = self._call(
            f"cannot list s3://{self.bucket}/{prefix}",
            "list_objects_v2",
            Prefix=prefix,
            MaxKeys=1,
        )
        return bool(response.get("Contents"))

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        """Bytes ``[start, end)`` of an object (of the version with ETag ``if_match``)."""
        if end <= start:
            return b""
        kwargs: dict[str, Any] = {"Key": key, "Range": f"bytes={start}-{end - 1}"}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        _, data = self._get_object(f"cannot read s3://{self.bucket}/{key}", **kwargs)
        return data

    def copy(self, source: str, destination: str, *, if_match: str | None = None) -> None:
        """Server-side copy of one object (up to 5 GiB) within the bucket.

        With ``if_match``, only the source version with that ETag (PreconditionFailed if it
        changed since).
        """
        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs["CopySourceIfMatch"] = if_match
        self._allow_slow_answers()
        self._call(
            f"cannot copy s3://{self.bucket}/{source} to {destination}",
            "copy_object",
            Key=destination,
            CopySource={"Bucket": self.bucket, "Key": source},
            **kwargs,
        )

    def _allow_slow_answers(self) -> None:
        """Give the :data:`SLOW_OPERATIONS` their long read timeout on the current client.

        Registered on each call (s3fs may have replaced its client since, e.g. after a fork);
        botocore keeps one registration per ``unique_id``, so repeating it costs a lookup.
        """
        with translate_s3_errors(f"cannot set up the S3 client for s3://{self.bucket}"):
            events = self.fs.s3.meta.events
        for operation in SLOW_OPERATIONS:
            events.register(
                f"before-call.s3.{operation}",
                _slow_read_timeout,
                unique_id=f"{_SLOW_HANDLER_ID}-{operation}",
            )

    # -- multipart ---------------------------------------------------------------------------

    def create_multipart(self, key: str) -> str:
        """Start a multipart upload on ``key``; returns its upload id."""
        response = self._call(
            f"cannot start a multipart upload to s3://{self.bucket}/{key}",
            "create_multipart_upload",
            Key=key,
        )
        return str(response["UploadId"])

    def copy_part(
        self, key: str, upload_id: str, number: int, source: str, *, if_match: str | None = None
    ) -> str:
        """``UploadPartCopy`` the whole object ``source`` as part ``number``; returns its ETag.

        With ``if_match``, only the source version with that ETag.
        """
        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs["CopySourceIfMatch"] = if_match
        self._allow_slow_answers()
        response = self._call(
            f"cannot copy s3://{self.bucket}/{source} into part {number} of {key}",
            "upload_part_copy",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": source},
            **kwargs,
        )
        return str(response["CopyPartResult"]["ETag"])

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes | bytearray) -> str:
        """``UploadPart``: ``body`` becomes part ``number`` of the upload (replacing an earlier
        part of that number); returns its ETag."""
        payload: Any = body if len(body) < _STREAM_THRESHOLD else _BufferStream(body)
        response = self._call(
            f"cannot upload part {number} of s3://{self.bucket}/{key}",
            "upload_part",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=payload,
        )
        return str(response.get("ETag", ""))

    def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        """Complete the upload: the object appears atomically, whole."""
        parts = [{"PartNumber": i, "ETag": etag} for i, etag in enumerate(etags, start=1)]
        self._allow_slow_answers()
        self._call(
            f"cannot complete the multipart upload to s3://{self.bucket}/{key}",
            "complete_multipart_upload",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    def list_multipart(self, prefix: str) -> list[MultipartUpload]:
        """Every incomplete multipart upload to a key starting with ``prefix``, in key order."""
        found: list[MultipartUpload] = []
        markers: dict[str, Any] = {}
        while True:
            response = self._call(
                f"cannot list the multipart uploads of s3://{self.bucket}/{prefix}",
                "list_multipart_uploads",
                Prefix=prefix,
                **markers,
            )
            for item in response.get("Uploads", []) or []:
                found.append(
                    MultipartUpload(
                        str(item["Key"]),
                        str(item["UploadId"]),
                        _timestamp(item.get("Initiated")),
                    )
                )
            if not response.get("IsTruncated"):
                break
            key_marker = response.get("NextKeyMarker")
            id_marker = response.get("NextUploadIdMarker")
            if not key_marker and not id_marker:
                break
            markers = {"KeyMarker": key_marker or "", "UploadIdMarker": id_marker or ""}
        found.sort(key=lambda upload: (upload.key, upload.initiated))
        return found

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
        """The parts uploaded so far to an incomplete multipart upload, as ``{number: (size,
        ETag)}``; None if the upload is gone (completed or aborted)."""
        parts: dict[int, tuple[int, str]] = {}
        marker: dict[str, Any] = {}
        while True:
            try:
                response = self._call(
                    f"cannot list the parts of the multipart upload to s3://{self.bucket}/{key}",
                    "list_parts",
                    Key=key,
                    UploadId=upload_id,
                    **marker,
                )
            except StoreError as exc:
                if is_not_found(exc):
                    return None
                raise
            for part in response.get("Parts", []) or []:
                parts[int(part["PartNumber"])] = (
                    int(part.get("Size", 0)),
                    str(part.get("ETag", "")),
                )
            following = response.get("NextPartNumberMarker")
            if not response.get("IsTruncated") or not following:
                return parts
            marker = {"PartNumberMarker": following}

    def multipart_size(self, key: str, upload_id: str) -> int:
        """Bytes uploaded so far to an incomplete multipart upload (0 if it is gone)."""
        parts = self.list_parts(key, upload_id)
        return sum(size for size, _ in (parts or {}).values())

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload (its parts are dropped; nothing becomes visible)."""
        try:
            self._call(
                f"cannot abort the multipart upload to s3://{self.bucket}/{key}",
                "abort_multipart_upload",
                Key=key,
                UploadId=upload_id,
            )
        except StoreError as exc:
            if not is_not_found(exc):
                raise
