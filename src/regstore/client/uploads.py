"""Blob upload endpoints: initiate (and cross-repository mount), status, monolithic PUT,
chunked PATCH, finish, cancel.

An upload *location* is opaque and moves: every answer may carry a new ``Location`` (with
state in its query, e.g. distribution's ``_state``), and the latest must be used next. Methods
accept locations as returned (absolute), or relative ones, resolved against the registry.

Only the requests safe to repeat are retried by the transport: the status GET, the DELETE, and
the empty POST that starts an upload (repeated, it at worst leaves an unused session that the
registry expires). A chunk PATCH or a PUT is never re-sent after it went out — a half-sent body
must not be replayed blindly: after a failure, ask :meth:`UploadsMixin.get_blob_upload_status`
(or whether the blob exists) and go on from the registry's ``offset`` (the engine does).

About ``Range: 0-0``: the inclusive form cannot say "nothing", and distribution answers ``0-0``
for an empty upload and for one holding one byte. The client remembers how many bytes it sent
to each location it handed out; ``0-0`` is read as 1 only when it knows it sent exactly one
byte there, and as 0 otherwise (the common case: right after ``initiate_blob_upload``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from urllib.parse import unquote, urlsplit

from regstore.client.bodies import BlobData, UploadBody
from regstore.client.challenge import merge_scopes
from regstore.client.core import ClientCore, delete_scope, pull_scope, push_scope
from regstore.client.errors_map import (
    Operation,
    checked_target,
    error_for_status,
    http_context,
)
from regstore.client.ranges import UploadRange, chunk_content_range, parse_upload_range
from regstore.client.transport import Reply
from regstore.client.urls import add_query
from regstore.errors import (
    BlobUploadInvalidRangeError,
    DigestMismatchError,
    InvalidReferenceError,
    RegistryError,
)
from regstore.reference import Digest, validate_name
from regstore.wire import UploadSession, UploadStatus

__all__ = ["UploadsMixin"]

_UPLOAD_PATH_RE = re.compile(r"/v2/(.+?)/blobs/uploads(?:/|$)")
_OCTET = "application/octet-stream"
_TRACKED_LOCATIONS = 4096


class UploadsMixin(ClientCore):
    """``initiate_blob_upload`` ... ``cancel_blob_upload``."""

    _offsets: OrderedDict[str, int]
    _offsets_lock: threading.Lock

    # -- helpers ---------------------------------------------------------------------------------
    def _track(self, location: str, offset: int) -> None:
        with self._offsets_lock:
            self._offsets[location] = offset
            self._offsets.move_to_end(location)
            while len(self._offsets) > _TRACKED_LOCATIONS:
                self._offsets.popitem(last=False)

    def _forget(self, location: str) -> None:
        with self._offsets_lock:
            self._offsets.pop(location, None)

    def _held(self, location: str, rng: UploadRange | None) -> int:
        """Bytes the registry holds according to ``rng`` (see the module docstring)."""
        if rng is None:
            return 0
        if rng.ambiguous:
            with self._offsets_lock:
                known = self._offsets.get(location)
            return 1 if known == 1 else 0
        return rng.size

    def _location(self, location: str, method: str) -> tuple[str, str]:
        """The absolute location and the repository name it belongs to.

        Raises:
            ValueError: no location was given.
            RegistryError: the location is no http(s) URL, or one whose host the URL parsers
                read differently (only a registry hands such a location out).
        """
        if not isinstance(location, str) or not location:
            raise ValueError("an upload location is required")
        absolute = checked_target(
            self._endpoint.base_url + "/",
            location,
            f"{method} of an upload on {self.registry}: unusable upload location",
            http_context(method, location),
        )
        match = _UPLOAD_PATH_RE.search(urlsplit(absolute).path)
        name = unquote(match.group(1)) if match else ""
        return absolute, name

    def _scopes(self, name: str) -> tuple[str, ...]:
        return push_scope(name) if name else ()

    @staticmethod
    def _registry_location(reply: Reply, location: str, op: Operation) -> str:
        """The ``Location`` the registry answered ``reply`` with, resolved and checked."""
        return checked_target(
            reply.url,
            location,
            f"{op.what}: the registry sent an unusable upload Location",
            http_context(reply.method, reply.url, reply.status),
        )

    def _next_location(self, reply: Reply, current: str, op: Operation) -> str:
        location = reply.headers.get("Location")
        return self._registry_location(reply, location, op) if location else current

    def _check_stored_digest(self, reply: Reply, digest: Digest, op: Operation) -> None:
        value = reply.headers.get("Docker-Content-Digest")
        if not value:
            return
        try:
            announced = Digest(value.strip())
        except InvalidReferenceError:
            return
        if announced.algorithm == digest.algorithm and announced != digest:
            raise DigestMismatchError(
                f"{op.what}: the registry stored a blob with another digest",
                expected=digest,
                actual=announced,
            )

    # -- endpoints -------------------------------------------------------------------------------
    def initiate_blob_upload(
        self, name: str, *, mount: str | None = None, from_: str | None = None
    ) -> UploadSession:
        """Start an upload into repository ``name`` (the seed's ``InitiateBlobUpload``).

        With ``mount`` (a digest) and ``from_`` (another repository of this registry), ask for a
        cross-repository mount first: 201 → ``UploadSession(mounted=True, location=None)``,
        nothing to upload; 202 → not mounted, a normal upload session. The token, if any,
        covers push on ``name`` and pull on ``from_``.
        """
        validate_name(name)
        query: dict[str, str] = {}
        if from_ is not None and mount is None:
            raise ValueError("from_ needs mount (the digest of the blob to mount)")
        scopes = push_scope(name)
        if mount is not None:
            query["mount"] = str(Digest(mount))
            if from_ is not None:
                validate_name(from_)
                query["from"] = from_
                scopes = scopes + pull_scope(from_)
            what = f"mounting blob {mount} from {from_} into {name} on {self.registry}"
        else:
            what = f"starting a blob upload to {name} on {self.registry}"
        op = Operation("upload", what, name=name)
        url = self._endpoint.uploads_url(name, query or None)
        # An empty POST is safe to repeat: a session it opened and nobody uses expires.
        reply = self._call("POST", url, op, ok=(201, 202), scopes=scopes, body=b"", idempotent=True)
        if reply.status == 201:
            if mount is None:
                raise RegistryError(
                    f"{op.what}: the registry answered 201 to an empty POST",
                    http=http_context("POST", reply.url, 201),
                )
            return UploadSession(name=name, location=None, mounted=True, digest=Digest(mount))
        location = reply.headers.get("Location")
        if not location:
            raise RegistryError(
                f"{op.what}: the registry sent no upload Location",
                http=http_context("POST", reply.url, reply.status),
            )
        absolute = self._registry_location(reply, location, op)
        self._track(absolute, 0)
        min_length = reply.headers.get("OCI-Chunk-Min-Length", "").strip()
        return UploadSession(
            name=name,
            location=absolute,
            chunk_min_length=int(min_length) if min_length.isdigit() else None,
        )

    def get_blob_upload_status(self, location: str) -> UploadStatus:
        """Where the upload stands: ``offset`` = bytes the registry holds (resume there),
        ``length`` = total size if the registry said, ``location`` = the URL to use next.

        Parses ``Range: 0-<last>`` and the lenient ``bytes=0-<last>`` and ``bytes=0-<last>/<size>``.

        Raises:
            BlobUploadNotFoundError: the upload is unknown (cancelled, finished, expired).
        """
        absolute, name = self._location(location, "GET")
        op = Operation(
            "upload",
            f"reading the status of an upload to {name or '?'} on {self.registry}",
            name=name,
            location=absolute,
        )
        reply = self._call("GET", absolute, op, ok=(200, 204), scopes=self._scopes(name))
        header = reply.headers.get("Range")
        rng = parse_upload_range(header)
        if header and rng is None:
            raise RegistryError(
                f"{op.what}: unreadable Range header {header!r}",
                http=http_context("GET", reply.url, reply.status),
            )
        offset = self._held(absolute, rng)
        following = self._next_location(reply, absolute, op)
        self._track(following, offset)
        return UploadStatus(offset=offset, length=rng.total if rng else None, location=following)

    def upload_blob(self, location: str, data: BlobData, length: int, digest: str) -> Digest:
        """Upload a whole blob in one ``PUT <location>&digest=`` (the seed's ``UploadBlob``).

        ``data`` is bytes, a binary file object (read ``length`` bytes from its current
        position, streamed in 1 MiB chunks) or an iterable of chunks; a real
        ``Content-Length`` is sent. Returns the digest, checked against the registry's.

        Raises:
            BlobUploadNotFoundError: the location is unknown.
            UnexpectedHTTPStatusError: e.g. 400 ``DIGEST_INVALID`` when the bytes do not match.
            UploadLengthError (a ValueError): ``data`` does not hold exactly ``length`` bytes.
        """
        absolute, name = self._location(location, "PUT")
        digest = Digest(digest)
        op = Operation(
            "upload",
            f"uploading blob {digest} ({length} bytes) to {name or '?'} on {self.registry}",
            name=name,
            reference=digest,
            location=absolute,
        )
        body: bytes | UploadBody = UploadBody(data, length)
        if length == 0:
            body = b""
        reply = self._call(
            "PUT",
            add_query(absolute, digest=str(digest)),
            op,
            ok=(200, 201, 204),
            scopes=self._scopes(name),
            headers={"Content-Type": _OCTET},
            body=body,
            idempotent=False,
        )
        self._forget(absolute)
        self._check_stored_digest(reply, digest, op)
        return digest

    def upload_blob_chunk(
        self, location: str, chunk: BlobData, length: int, start_byte: int
    ) -> str:
        """Send bytes ``start_byte`` .. ``start_byte + length - 1`` with ``PATCH`` (the seed's
        ``UploadBlobChunk``); returns the location for the next request.

        ``Content-Range`` is inclusive (``start-end``). Finish with
        :meth:`finish_chunked_blob_upload`.

        Raises:
            BlobUploadInvalidRangeError: 416, the chunk is out of order; ``blob_size`` is where
                to resume, ``location`` the location to resume at (``last_valid_range`` is -1
                when the registry holds nothing).
            BlobUploadNotFoundError: the location is unknown.
            RegistryError: the registry ignored ``Content-Range`` and appended the chunk at the
                wrong place (registry 2.8 does this); the upload is spoilt, start again.
        """
        absolute, name = self._location(location, "PATCH")
        content_range = chunk_content_range(start_byte, length)
        op = Operation(
            "upload",
            f"uploading bytes {content_range} of a blob to {name or '?'} on {self.registry}",
            name=name,
            location=absolute,
        )
        headers = {"Content-Type": _OCTET, "Content-Range": content_range}
        scopes = self._scopes(name)
        reply = self._transport.request(
            "PATCH",
            absolute,
            op,
            scopes=scopes,
            headers=headers,
            body=UploadBody(chunk, length),
            idempotent=False,
        )
        if reply.status == 416:
            raise self._invalid_range(reply, absolute, op)
        if reply.status not in (202, 204):
            raise error_for_status(
                op, "PATCH", reply.url, reply.status, reply.headers, reply.body, scopes=scopes
            )
        following = self._next_location(reply, absolute, op)
        expected = start_byte + length
        rng = parse_upload_range(reply.headers.get("Range"))
        if rng is not None and not (rng.ambiguous and expected == 1) and rng.size != expected:
            raise RegistryError(
                f"{op.what}: the registry now holds {rng.size} bytes instead of {expected}; "
                "it did not honour Content-Range, so this upload must start again",
                http=http_context("PATCH", reply.url, reply.status, reply.headers),
            )
        self._forget(absolute)
        self._track(following, expected)
        return following

    def _invalid_range(
        self, reply: Reply, location: str, op: Operation
    ) -> BlobUploadInvalidRangeError:
        ctx = http_context("PATCH", reply.url, 416, reply.headers, reply.body)
        rng = parse_upload_range(reply.headers.get("Range"))
        resume_at = self._next_location(reply, location, op)
        if rng is not None:
            held = self._held(location, rng)
        else:
            status = self.get_blob_upload_status(resume_at)
            held, resume_at = status.offset, status.location
        err = BlobUploadInvalidRangeError(resume_at, held - 1, held, http=ctx)
        if hasattr(err, "add_note"):
            err.add_note(f"while {op.what}")
        return err

    def finish_chunked_blob_upload(self, location: str, length: int, digest: str) -> Digest:
        """Complete a chunked upload with an empty ``PUT <location>&digest=`` (the seed's
        ``FinishChunkedBlobUpload``); ``length`` is the blob's total size (for messages; the
        registry checks size and digest). Returns the digest, checked against the registry's.

        Raises:
            BlobUploadNotFoundError: the location is unknown.
            UnexpectedHTTPStatusError: e.g. 400 ``DIGEST_INVALID`` when the bytes do not match.
        """
        absolute, name = self._location(location, "PUT")
        digest = Digest(digest)
        op = Operation(
            "upload",
            f"finishing the upload of blob {digest} ({length} bytes) to "
            f"{name or '?'} on {self.registry}",
            name=name,
            reference=digest,
            location=absolute,
        )
        reply = self._call(
            "PUT",
            add_query(absolute, digest=str(digest)),
            op,
            ok=(200, 201, 204),
            scopes=self._scopes(name),
            headers={"Content-Type": _OCTET},
            body=b"",
            idempotent=False,
        )
        self._forget(absolute)
        self._check_stored_digest(reply, digest, op)
        return digest

    def cancel_blob_upload(self, location: str) -> None:
        """Abandon an upload (the seed's ``CancelBlobUpload``); 200/202/204 mean done.

        Raises:
            BlobUploadNotFoundError: the upload is unknown (already finished, cancelled or
                expired); callers aborting anyway may ignore it.
        """
        absolute, name = self._location(location, "DELETE")
        op = Operation(
            "upload",
            f"cancelling an upload to {name or '?'} on {self.registry}",
            name=name,
            location=absolute,
        )
        scopes = merge_scopes(push_scope(name), delete_scope(name)) if name else ()
        self._call("DELETE", absolute, op, ok=(200, 202, 204), scopes=scopes)
        self._forget(absolute)
