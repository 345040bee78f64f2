"""Blob read endpoints: existence and size (``HEAD``), streaming ``GET`` from an offset.

A blob ``GET`` may be redirected (307) to another host — S3 presigned URLs, CDNs — and is
then followed without ``Authorization`` but with ``Range`` (see the transport). Blobs are
never buffered whole and never decompressed; the engine hashes them as it writes them.
:meth:`BlobsMixin.fetch_blob` is the exception for small blobs such as configs, and verifies.
"""

from __future__ import annotations

from regstore.client.core import ClientCore, delete_scope, pull_scope
from regstore.client.errors_map import Operation, http_context
from regstore.client.ranges import parse_content_range
from regstore.client.stream import BlobStream
from regstore.client.transport import Reply
from regstore.digest import Digester, verify
from regstore.errors import UnexpectedHTTPStatusError, UnsupportedError
from regstore.reference import Digest, validate_name

__all__ = ["BlobsMixin"]

#: ``fetch_blob`` refuses blobs larger than this by default (configs are a few KiB).
FETCH_BLOB_MAX = 32 * 1024 * 1024
_IDENTITY = {"Accept-Encoding": "identity"}


def _int_header(reply: Reply, name: str) -> int | None:
    value = reply.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


class BlobsMixin(ClientCore):
    """``blob_length``, ``head_blob``, ``blob_exists``, ``get_blob``, ``fetch_blob``,
    ``delete_blob``."""

    def _blob_op(self, verb: str, name: str, digest: str, preposition: str = "from") -> Operation:
        return Operation(
            "blob",
            f"{verb} blob {digest} of {name} {preposition} {self.registry}",
            name=name,
            reference=str(digest),
        )

    def head_blob(self, name: str, digest: str) -> int | None:
        """The blob's size in bytes, or None if the repository does not have it.

        A redirected ``HEAD`` is followed (without credentials); if the other host does not
        answer it usefully, the size is read from a one-byte ranged ``GET`` instead.
        """
        validate_name(name)
        digest = Digest(digest)
        op = self._blob_op("checking", name, digest, "on")
        url = self._endpoint.blob_url(name, digest)
        reply = self._transport.request("HEAD", url, op, scopes=pull_scope(name))
        if reply.status == 404:
            return None
        if reply.status == 200:
            size = _int_header(reply, "Content-Length")
            if size is not None:
                return size
        elif self._endpoint.owns(reply.url):
            self._call_failed(reply, op)
        # Redirected elsewhere and refused there, or no Content-Length: ask for one byte.
        with self.get_blob_range(name, digest, 0, 0) as stream:
            return stream.size

    def _call_failed(self, reply: Reply, op: Operation) -> None:
        raise UnexpectedHTTPStatusError(
            reply.status,
            what=op.what,
            http=http_context(reply.method, reply.url, reply.status, reply.headers, reply.body),
        )

    def blob_exists(self, name: str, digest: str) -> bool:
        """True if the repository has the blob."""
        return self.head_blob(name, digest) is not None

    def blob_length(self, name: str, digest: str) -> int:
        """The seed's ``BlobLength``: the blob's size, or -1 if it does not exist (no error)."""
        size = self.head_blob(name, digest)
        return -1 if size is None else size

    def _whole_blob(self, reply: Reply, name: str, digest: Digest, op: Operation) -> BlobStream:
        """A 200 answer: the whole blob from offset 0, as long as its ``Content-Length`` says
        (bounded by ``max_unknown_blob_size`` when it says nothing)."""
        length = _int_header(reply, "Content-Length")
        return BlobStream(
            reply,
            name=name,
            digest=digest,
            offset=0,
            length=length,
            size=length,
            op=op,
            max_unknown_size=self._limits.max_unknown_blob_size,
        )

    def get_blob_range(self, name: str, digest: str, start: int, end: int) -> BlobStream:
        """Stream bytes ``start``-``end`` (inclusive) of a blob; ``.size`` is the blob's size."""
        validate_name(name)
        digest = Digest(digest)
        op = self._blob_op("fetching", name, digest)
        headers = {**_IDENTITY, "Range": f"bytes={start}-{end}"}
        reply = self._call(
            "GET",
            self._endpoint.blob_url(name, digest),
            op,
            ok=(200, 206),
            scopes=pull_scope(name),
            headers=headers,
            stream=True,
        )
        if reply.status == 206:
            cr = parse_content_range(reply.headers.get("Content-Range"))
            if cr is not None and cr.start == start and cr.end is not None:
                return BlobStream(
                    reply,
                    name=name,
                    digest=digest,
                    offset=start,
                    length=cr.end - cr.start + 1,
                    size=cr.size,
                    op=op,
                )
        if reply.status == 200:
            return self._whole_blob(reply, name, digest, op)
        reply.close()
        raise UnexpectedHTTPStatusError(
            reply.status,
            what=f"{op.what}: unusable Content-Range for bytes {start}-{end}",
            http=http_context("GET", reply.url, reply.status),
        )

    def get_blob(self, name: str, digest: str, byte_offset: int = 0) -> BlobStream:
        """Stream the blob from ``byte_offset`` (the seed's ``GetBlob``); close the stream.

        ``Range: bytes=<offset>-`` is sent only when ``byte_offset`` > 0. The answer:

        - 206 whose ``Content-Range`` starts at ``byte_offset``: ``stream.offset`` is it;
        - 200 to a ranged request means the registry ignored ``Range`` and sends the whole
          blob: ``stream.offset`` is **0**, and the caller must restart from the beginning;
        - 416 with ``bytes */<size>`` where size equals ``byte_offset``: nothing is left to
          read; an empty stream at ``offset == size`` is returned.

        The digest is not verified here (the engine hashes while writing); a connection that
        breaks while reading raises :class:`~regstore.errors.TransportError`.

        Raises:
            BlobNotFoundError: the repository does not have the blob.
            UnexpectedHTTPStatusError: a range the registry cannot serve, or an inconsistent
                ``Content-Range``.
        """
        validate_name(name)
        digest = Digest(digest)
        if byte_offset < 0:
            raise ValueError(f"byte_offset must be >= 0, got {byte_offset}")
        op = self._blob_op("fetching", name, digest)
        headers = dict(_IDENTITY)
        if byte_offset > 0:
            headers["Range"] = f"bytes={byte_offset}-"
        url = self._endpoint.blob_url(name, digest)
        reply = self._call(
            "GET",
            url,
            op,
            ok=(200, 206, 416),
            scopes=pull_scope(name),
            headers=headers,
            stream=True,
        )
        content_range = reply.headers.get("Content-Range")
        cr = parse_content_range(content_range)
        if reply.status == 416:
            reply.close()
            if byte_offset > 0 and cr is not None and cr.size == byte_offset:
                return BlobStream(
                    None,
                    name=name,
                    digest=digest,
                    offset=byte_offset,
                    length=0,
                    size=byte_offset,
                    op=op,
                )
            size = f"{cr.size} bytes" if cr is not None and cr.size is not None else "unknown"
            raise UnexpectedHTTPStatusError(
                416,
                what=f"{op.what}: offset {byte_offset} is past the end (blob size {size})",
                http=http_context("GET", reply.url, 416, reply.headers),
            )
        if reply.status == 200:
            return self._whole_blob(reply, name, digest, op)
        if cr is None or cr.start != byte_offset or cr.end is None:
            reply.close()
            raise UnexpectedHTTPStatusError(
                206,
                what=f"{op.what}: asked for bytes from {byte_offset}, got Content-Range "
                f"{content_range!r}",
                http=http_context("GET", reply.url, 206, reply.headers),
            )
        return BlobStream(
            reply,
            name=name,
            digest=digest,
            offset=byte_offset,
            length=cr.end - cr.start + 1,
            size=cr.size,
            op=op,
        )

    def fetch_blob(self, name: str, digest: str, *, max_size: int = FETCH_BLOB_MAX) -> bytes:
        """The whole blob as bytes, verified against ``digest``: for small blobs (configs).

        Raises:
            BlobNotFoundError: absent.
            DigestMismatchError: the bytes do not hash to ``digest``.
            UnsupportedError: the blob is larger than ``max_size`` (stream it with get_blob).
        """
        digest = Digest(digest)
        digester = Digester(digest.algorithm)
        with self.get_blob(name, digest) as stream:
            if stream.length is not None and stream.length > max_size:
                raise UnsupportedError(
                    f"fetching blob {digest} of {name}: {stream.length} bytes is more than "
                    f"max_size={max_size}; stream it with get_blob()"
                )
            parts: list[bytes] = []
            for chunk in stream.iter_chunks():
                digester.update(chunk)
                parts.append(chunk)
                if digester.size > max_size:
                    raise UnsupportedError(
                        f"fetching blob {digest} of {name}: more than max_size={max_size} bytes"
                    )
        verify(
            f"fetching blob {digest} of {name} from {self.registry}",
            digest,
            digester.digest(),
            expected_size=stream.length,
            actual_size=digester.size,
        )
        return b"".join(parts)

    def delete_blob(self, name: str, digest: str) -> None:
        """Delete a blob from the repository (200/202/204 mean success).

        Raises:
            BlobNotFoundError: absent.
            UnexpectedHTTPStatusError: e.g. 405 when deletion is disabled.
        """
        validate_name(name)
        digest = Digest(digest)
        op = self._blob_op("deleting", name, digest)
        self._call(
            "DELETE",
            self._endpoint.blob_url(name, digest),
            op,
            ok=(200, 202, 204),
            scopes=delete_scope(name),
        )
