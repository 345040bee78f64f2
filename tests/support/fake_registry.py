"""A scripted fake registry in the spirit of the seed's Go test harness (``testutil.NewHandler``).

Behaviour is a map from request key to a FIFO queue of responses::

    fake.expect("GET", "/v2/hello/world/manifests/sometag", status=200,
                headers={"Content-Type": DOCKER_MANIFEST}, body=manifest_bytes)

- The key is the method, the (percent-decoded) path and the query as a sorted list of
  ``(name, value)`` pairs; request headers and bodies are recorded but are not part of the key.
- Each request pops one response from its key's queue; no match or an empty queue gives Go's
  ``http.NotFound``: 404 ``text/plain`` "404 page not found".
- ``{base}`` in a response header value becomes the server's base URL (``http://127.0.0.1:PORT``),
  e.g. ``headers={"Location": "{base}/v2/hello/world/blobs/uploads/test-uuid"}``.
- A body may be bytes/str, or a callable ``(FakeRequest) -> (status, headers, body)`` for dynamic
  answers.
- A "broken body" declares a larger ``Content-Length`` than it sends and then closes the
  connection (``expect_broken``), as the Go resume test did; ``requests`` then raises
  ``ChunkedEncodingError``.
- Two instances on different ports model a redirect to another host: ``expect_redirect`` on one,
  the blob on the other, and the second one's :attr:`FakeRegistry.requests` show whether an
  ``Authorization`` header crossed hosts.

Unlike the Go original, the map is protected by a lock (requests are served concurrently) and
query *names* are part of the key (Go kept only the values).
"""

from __future__ import annotations

import json as _json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from .ports import LoopbackHTTPServer, QuietHandler, read_request_body

__all__ = ["ANY_QUERY", "FakeRegistry", "FakeRequest", "FakeResponse", "Responder"]


class _AnyQuery:
    def __repr__(self) -> str:
        return "ANY_QUERY"


#: Pass as ``query=`` to match a method+path whatever its query string (exact keys win).
ANY_QUERY: Any = _AnyQuery()

NOT_FOUND_BODY = b"404 page not found\n"


@dataclass
class FakeRequest:
    """A request as the fake registry saw it."""

    method: str
    path: str
    query: str
    headers: Message
    body: bytes
    matched: bool = False

    @property
    def params(self) -> dict[str, list[str]]:
        """The query string parsed into lists of values."""
        return parse_qs(self.query, keep_blank_values=True)


HeaderSpec = Mapping[str, str] | Iterable[tuple[str, str]] | None
Responder = Callable[[FakeRequest], tuple[int, HeaderSpec, bytes | str]]
QuerySpec = str | Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]] | None
_Key = tuple[str, str, Any]


@dataclass
class FakeResponse:
    """One queued answer; ``remaining=None`` means it is never used up."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | Responder
    remaining: int | None = 1


def _header_list(headers: HeaderSpec) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _normalise_query(query: QuerySpec) -> tuple[tuple[str, str], ...]:
    if query is None:
        return ()
    if isinstance(query, str):
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    elif isinstance(query, Mapping):
        pairs = []
        for name, value in query.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs.extend((name, v) for v in value)
    else:
        pairs = [(str(k), str(v)) for k, v in query]
    return tuple(sorted(pairs))


class _FakeHandler(QuietHandler):
    server: FakeRegistry

    def _dispatch(self) -> None:
        self.server._handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class FakeRegistry(LoopbackHTTPServer):
    """Scripted HTTP server on 127.0.0.1:<free port>; see the module docstring.

    Attributes: :attr:`url` (== :attr:`base_url`), :attr:`host`, :attr:`port`,
    :attr:`requests` (every request, in arrival order), :attr:`fallback` (an optional
    :data:`Responder` for unmatched requests instead of 404).
    """

    def __init__(self) -> None:
        super().__init__(_FakeHandler)
        self._lock = threading.Lock()
        self._queues: dict[_Key, list[FakeResponse]] = {}
        self.requests: list[FakeRequest] = []
        self.fallback: Responder | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, what ``{base}`` expands to."""
        return self.url

    # -- scripting -----------------------------------------------------------------------------
    @staticmethod
    def _key(method: str, path: str, query: QuerySpec) -> _Key:
        q = ANY_QUERY if query is ANY_QUERY else _normalise_query(query)
        return (method.upper(), unquote(path), q)

    def expect(
        self,
        method: str,
        path: str,
        query: QuerySpec = None,
        status: int = 200,
        headers: HeaderSpec = None,
        body: bytes | str | Responder = b"",
        *,
        json: Any = None,
        times: int | None = 1,
        content_length: int | None = None,
    ) -> FakeResponse:
        """Queue a response for ``method path?query``.

        ``json`` (instead of ``body``) serialises an object and sets ``Content-Type:
        application/json``. ``times`` queues the same answer that many times (``None``: it
        stays at the head of its queue forever). ``content_length`` declares a length other than
        the body's (larger → the body is sent and the connection closed: a broken transfer).
        """
        header_list = _header_list(headers)
        if json is not None:
            body = _json.dumps(json).encode()
            if not any(k.lower() == "content-type" for k, _ in header_list):
                header_list.append(("Content-Type", "application/json"))
        if isinstance(body, str):
            body = body.encode()
        if content_length is not None:
            header_list = [(k, v) for k, v in header_list if k.lower() != "content-length"]
            header_list.append(("Content-Length", str(content_length)))
        response = FakeResponse(status, header_list, body, times)
        with self._lock:
            self._queues.setdefault(self._key(method, path, query), []).append(response)
        return response

    def expect_broken(
        self,
        method: str,
        path: str,
        full_body: bytes,
        cut_at: int,
        query: QuerySpec = None,
        status: int = 200,
        headers: HeaderSpec = None,
    ) -> FakeResponse:
        """Queue a response declaring ``len(full_body)`` but sending only ``full_body[:cut_at]``."""
        return self.expect(
            method, path, query, status, headers, full_body[:cut_at], content_length=len(full_body)
        )

    def expect_redirect(
        self,
        method: str,
        path: str,
        location: str,
        query: QuerySpec = None,
        status: int = 307,
        headers: HeaderSpec = None,
    ) -> FakeResponse:
        """Queue a redirect to ``location`` (may use ``{base}``, or another fake's URL)."""
        return self.expect(
            method, path, query, status, [*_header_list(headers), ("Location", location)]
        )

    def pending(self) -> dict[str, int]:
        """Unserved responses as ``"METHOD path?query" -> count`` (``-1``: served forever)."""
        out: dict[str, int] = {}
        with self._lock:
            for (method, path, query), queue in self._queues.items():
                if not queue:
                    continue
                q = "?*" if query is ANY_QUERY else ("?" + urlencode(query) if query else "")
                out[f"{method} {path}{q}"] = (
                    -1
                    if any(r.remaining is None for r in queue)
                    else sum(r.remaining or 0 for r in queue)
                )
        return out

    @property
    def unmatched(self) -> list[FakeRequest]:
        """Requests that got no scripted response."""
        with self._lock:
            return [r for r in self.requests if not r.matched]

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[FakeRequest]:
        """Recorded requests filtered by method and exact (decoded) path."""
        with self._lock:
            records = list(self.requests)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (path is None or r.path == unquote(path))
        ]

    def reset(self) -> None:
        """Forget every queued response and recorded request."""
        with self._lock:
            self._queues.clear()
            self.requests.clear()

    # -- serving -------------------------------------------------------------------------------
    def _pop(self, request: FakeRequest) -> FakeResponse | None:
        exact = (request.method, request.path, _normalise_query(request.query))
        loose = (request.method, request.path, ANY_QUERY)
        with self._lock:
            for key in (exact, loose):
                queue = self._queues.get(key)
                if not queue:
                    continue
                response = queue[0]
                if response.remaining is not None:
                    response.remaining -= 1
                    if response.remaining <= 0:
                        queue.pop(0)
                return response
        return None

    def _handle(self, h: _FakeHandler) -> None:
        parts = urlsplit(h.path)
        try:
            body = read_request_body(h)
        except ConnectionError:
            h.close_connection = True
            return
        request = FakeRequest(h.command, unquote(parts.path), parts.query, h.headers, body)
        with self._lock:
            self.requests.append(request)
        response = self._pop(request)
        if response is not None:
            request.matched = True
            if callable(response.body):
                status, headers, payload = response.body(request)
                self._send(h, status, _header_list(headers), payload)
            else:
                self._send(h, response.status, response.headers, response.body)
            return
        if self.fallback is not None:
            request.matched = True
            status, headers, payload = self.fallback(request)
            self._send(h, status, _header_list(headers), payload)
            return
        self._send(
            h,
            404,
            [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
            NOT_FOUND_BODY,
        )

    def _send(
        self, h: _FakeHandler, status: int, headers: list[tuple[str, str]], body: bytes | str
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        declared: int | None = None
        try:
            h.send_response_only(status)
            for name, value in headers:
                value = value.replace("{base}", self.url)
                if name.lower() == "content-length":
                    declared = int(value)
                h.send_header(name, value)
            if declared is None:
                declared = len(data)
                h.send_header("Content-Length", str(declared))
            h.end_headers()
            if h.command == "HEAD":
                return
            h.wfile.write(data[:declared])
            if declared > len(data):
                # The broken-body trick: promise more than we send, then hang up.
                h.abort_connection()
        except OSError:
            h.close_connection = True

    def __repr__(self) -> str:
        return f"<FakeRegistry {self.url}>"
