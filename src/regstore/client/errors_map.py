"""Registry answers and transport failures, translated once into regstore errors.

:class:`Operation` says what was being done to what ("fetching manifest library/alpine:3.19
from 127.0.0.1:5000"); :func:`error_for_status` picks the error class from the status and the
OCI error codes of the body; :func:`transport_error` turns a ``requests``/``urllib3`` exception
into :class:`~regstore.errors.TransportError` without leaking URLs' query strings. Every error
carries an :class:`~regstore.errors.HTTPContext` with the redacted URL, cut short (a registry
names any URL it likes: a ``Location`` of 60,000 characters would make a 60 KB error line).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import requests

from regstore.client.urls import redact_url, resolve_target, shown_url
from regstore.errors import (
    AuthenticationError,
    BlobNotFoundError,
    BlobUploadInvalidRangeError,
    BlobUploadNotFoundError,
    HTTPContext,
    ImageManifestNotFoundError,
    RegistryError,
    RegistryErrorDetail,
    RegstoreError,
    RepositoryNotFoundError,
    TransportError,
    UnexpectedHTTPStatusError,
)
from regstore.safetext import shortened

__all__ = [
    "MAX_ERROR_BODY",
    "Operation",
    "OperationKind",
    "SlowBodyError",
    "checked_target",
    "error_for_status",
    "http_context",
    "parse_error_body",
    "parse_retry_after",
    "transport_error",
]

#: Error bodies are read up to this size; the rest is ignored.
MAX_ERROR_BODY = 64 * 1024


class SlowBodyError(requests.exceptions.Timeout):
    """A body read whole did not arrive within its deadline (the transport raises it among
    the ``requests`` failures it retries; :func:`transport_error` turns it into a
    :class:`~regstore.errors.TransportError` whose message is this one's)."""

    def __init__(
        self, received: int, length: int | None, seconds: float, server: str = "registry"
    ) -> None:
        of = f" of {length}" if length is not None else " (of an unannounced length)"
        super().__init__(f"{server} too slow: {received}{of} bytes in {seconds:g} s")


OperationKind = Literal["manifest", "blob", "upload", "tags", "catalog", "ping"]


@dataclass(frozen=True)
class Operation:
    """What a request is for: ``kind`` picks the not-found error, ``what`` is the phrase
    that starts every message ("fetching manifest library/alpine:3.19 from 127.0.0.1:5000")."""

    kind: OperationKind
    what: str
    name: str = ""
    reference: str = ""
    location: str = ""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_error_body(body: bytes | None) -> tuple[RegistryErrorDetail, ...]:
    """The ``{"errors": [{"code", "message", "detail"}]}`` entries of a body; () otherwise.

    Bodies that are empty (HEAD), plain text, or not the OCI shape give ().
    """
    if not body:
        return ()
    text = body[:MAX_ERROR_BODY].strip()
    if not text.startswith(b"{"):
        return ()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return ()
    entries = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return ()
    out: list[RegistryErrorDetail] = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            message = entry.get("message")
            out.append(
                RegistryErrorDetail(
                    code=entry["code"].upper(),
                    message=message if isinstance(message, str) else "",
                    detail=entry.get("detail"),
                )
            )
    return tuple(out)


def http_context(
    method: str,
    url: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> HTTPContext:
    """Build the error context: redacted URL, OCI errors from the body, Retry-After."""
    retry_after = parse_retry_after(headers.get("Retry-After")) if headers else None
    return HTTPContext(
        method=method,
        url=shortened(redact_url(url)),
        status=status,
        errors=parse_error_body(body),
        retry_after=retry_after,
    )


def _with_note(exc: RegstoreError, op: Operation) -> RegstoreError:
    # The seed's messages stay as they were; what was being done goes into a note (3.11+)
    # that tracebacks show.
    if hasattr(exc, "add_note"):
        exc.add_note(f"while {op.what}")
    return exc


def error_for_status(
    op: Operation,
    method: str,
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    scopes: tuple[str, ...] = (),
) -> RegstoreError:
    """The regstore error for a failed answer to ``op``.

    404: ``BLOB_UNKNOWN`` → :class:`BlobNotFoundError`, ``MANIFEST_UNKNOWN`` →
    :class:`ImageManifestNotFoundError`, ``NAME_UNKNOWN`` → :class:`RepositoryNotFoundError`,
    ``BLOB_UPLOAD_UNKNOWN`` (or any 404 on an upload location) → :class:`BlobUploadNotFoundError`;
    a 404 without a code (HEAD, text bodies) is read by the kind of operation. 401/403 →
    :class:`AuthenticationError`. 416 on an upload → :class:`BlobUploadInvalidRangeError`
    (with unknown ranges; the client fills them in). Anything else →
    :class:`UnexpectedHTTPStatusError`.
    """
    ctx = http_context(method, url, status, headers, body)
    codes = set(ctx.codes)
    if "NAME_UNKNOWN" in codes and not _in_repository(url, op.name):
        # A redirect's target answered: its "name unknown" is about a path the registry chose,
        # not the repository asked for (which answered, with the redirect).
        codes.discard("NAME_UNKNOWN")
    if status == 404 or codes & {
        "BLOB_UNKNOWN",
        "MANIFEST_UNKNOWN",
        "NAME_UNKNOWN",
        "BLOB_UPLOAD_UNKNOWN",
    }:
        if (op.kind == "upload" and op.location) or "BLOB_UPLOAD_UNKNOWN" in codes:
            return _with_note(BlobUploadNotFoundError(op.location, http=ctx), op)
        if "NAME_UNKNOWN" in codes:
            return _with_note(RepositoryNotFoundError(op.name, http=ctx), op)
        if "BLOB_UNKNOWN" in codes and op.kind == "blob":
            return _with_note(BlobNotFoundError(op.name, op.reference, http=ctx), op)
        if "MANIFEST_UNKNOWN" in codes or (op.kind == "manifest" and not codes):
            return _with_note(ImageManifestNotFoundError(op.name, op.reference, http=ctx), op)
        if op.kind == "blob" and not codes:
            return _with_note(BlobNotFoundError(op.name, op.reference, http=ctx), op)
        if op.kind == "tags" and not codes:
            return _with_note(RepositoryNotFoundError(op.name, http=ctx), op)
    if status in (401, 403):
        return auth_error(op, ctx, scopes)
    if status == 416 and op.kind == "upload":
        return _with_note(BlobUploadInvalidRangeError(op.location, -1, 0, http=ctx), op)
    return UnexpectedHTTPStatusError(status, what=op.what, http=ctx)


def _in_repository(url: str, name: str) -> bool:
    """True if ``url`` is an API URL of repository ``name`` (or no repository is involved)."""
    if not name:
        return True
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    return path.startswith(f"/v2/{name}/")


def auth_error(
    op: Operation,
    ctx: HTTPContext,
    scopes: tuple[str, ...] = (),
    *,
    detail: str = "",
    registry: str = "",
) -> AuthenticationError:
    """A clear :class:`AuthenticationError`: which registry, which scope, what to check."""
    if not detail:
        detail = (
            "access denied (the credentials do not grant this)"
            if ctx.status == 403
            else "authentication failed or credentials are missing"
        )
    scope_text = f" (scope {' '.join(scopes)})" if scopes else ""
    where = f" for {registry}" if registry else ""
    message = (
        f"{op.what}: {detail}{where}{scope_text}; check the credentials given for it "
        "(`regstore login`, --username with --password-stdin, a sync file's username: and "
        "password_env:, or docker's config)"
    )
    return AuthenticationError(message, http=ctx)


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\"()]+)")


def _reason(exc: BaseException) -> str:
    """A short, URL-free reason for a transport failure."""
    names = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    text = str(exc)
    if isinstance(exc, SlowBodyError):  # its message is the reason, with how far it got
        return text
    match = _ERRNO_RE.search(text)
    if match:
        return match.group(1).strip().rstrip(".").lower()
    joined = " ".join(names) + " " + text
    if "SSL" in joined or "CERTIFICATE" in joined.upper():
        return "TLS handshake or certificate verification failed"
    if "ConnectTimeout" in joined:
        return "timed out while connecting"
    if "ReadTimeout" in joined or "timed out" in text:
        return "timed out waiting for the registry"
    if "RemoteDisconnected" in joined or "Connection aborted" in text:
        return "the registry closed the connection"
    if "IncompleteRead" in joined or "ChunkedEncodingError" in joined or "ProtocolError" in joined:
        return "the connection broke while reading the body"
    if "NameResolution" in joined or "getaddrinfo" in text:
        return "the host name could not be resolved"
    return type(exc).__name__


def transport_error(op: Operation, method: str, url: str, exc: BaseException) -> TransportError:
    """A :class:`TransportError` for a request that could not complete (chain ``exc``)."""
    ctx = HTTPContext(method=method, url=shortened(redact_url(url)))
    return TransportError(f"{op.what}: {_reason(exc)}", http=ctx)


def checked_target(base: str, location: str, what: str, ctx: HTTPContext) -> str:
    """``location`` (a URL a registry named: a redirect's, an upload's) resolved against
    ``base`` and checked as :func:`~regstore.client.urls.resolve_target` checks it. One the
    client must not request is a RegistryError: ``what`` (the sentence the location ends),
    the location, why, and the exchange ``ctx`` — not a bare ValueError later."""
    try:
        return resolve_target(base, location)
    except ValueError as exc:
        raise RegistryError(f"{what} '{shown_url(location.strip())}' ({exc})", http=ctx) from None
