"""A fault-injecting HTTP/1.1 reverse proxy in front of one upstream server on 127.0.0.1.

Requests are forwarded as they come (method, path, query, headers including ``Range`` and
``Authorization``, bodies streamed by ``Content-Length`` or chunked), responses stream back
with their status and headers. Absolute ``Location`` (and ``Link``) values that point at the
upstream are rewritten to point at the proxy, so clients stay behind it.

By default the ``Host`` header sent upstream is the upstream's own address (as a naive
reverse proxy would); the registry then builds absolute ``Location`` URLs for itself and the
rewriting is what keeps the client on the proxy. ``preserve_host=True`` forwards the client's
``Host`` instead.

Faults are configured at runtime and each fires for the first ``times`` matching requests
(``times=None``: forever). Paths are matched with ``re.search`` against the path only.
Response faults (cut, corrupt) only count 2xx answers by default, so a 401 before a token or a
404 does not use them up:

- :meth:`FaultProxy.cut_response` — send upstream status and headers (full
  ``Content-Length``) but only the first K body bytes, then close the connection.
- :meth:`FaultProxy.cut_request` — read K bytes of a PATCH/PUT body, then drop the
  connection without forwarding anything (the upstream never sees the request).
- :meth:`FaultProxy.override_status` — answer a given status (e.g. 500, 503, 429 with
  ``Retry-After``) without forwarding (or after forwarding, with ``forward=True``).
- :meth:`FaultProxy.corrupt_response` — flip one byte of the response body.
- :meth:`FaultProxy.drop_connection` — read the request, then close without any response.
- :meth:`FaultProxy.delay` — sleep before forwarding.

Besides these scripted faults, :meth:`FaultProxy.random_faults` injects seeded random faults
into any share of all requests (5xx, 429, cut bodies, dropped answers, a slow drip, a stall
beyond the client's read timeout; see :mod:`tests.support.random_faults`); scripted faults
win over random ones.

Every request is recorded (:attr:`FaultProxy.records`) with its headers, the status sent, the
number of body bytes received from and sent to the client, and the fault injected;
:meth:`FaultProxy.bytes_sent`, :meth:`FaultProxy.count` and :meth:`FaultProxy.injected`
summarise them.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote, urlsplit

from .ports import LoopbackHTTPServer, QuietHandler, iter_request_body
from .random_faults import Fault, RandomFaults

__all__ = ["FaultProxy", "FaultRule", "ProxyRecord", "RandomFaults"]

# Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded; Expect is handled by http.server
# itself, and Content-Length/Transfer-Encoding of responses are set by the proxy.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}

_CHUNK = 65536


@dataclass
class FaultRule:
    """One configured fault; ``remaining`` counts down (``None`` = unlimited)."""

    kind: str
    methods: frozenset[str] | None
    pattern: re.Pattern[str]
    remaining: int | None
    after_bytes: int = 0
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    forward: bool = False
    offset: int | None = None
    seconds: float = 0.0
    #: Response faults (cut, corrupt) skip non-2xx answers: a 401 before a token or a 307
    #: must not use up a fault meant for the blob body.
    only_success: bool = True
    #: Matching requests to let through untouched before the fault starts firing.
    skip: int = 0
    #: Also matched (``re.search``) against the URL-decoded query string, when set.
    query: re.Pattern[str] | None = None
    hits: int = 0

    def matches(self, method: str, path: str, query: str = "") -> bool:
        """Does this rule apply (and still have uses left) for ``method path?query``?"""
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if self.query is not None and self.query.search(unquote(query)) is None:
            return False
        return self.pattern.search(path) is not None


@dataclass
class ProxyRecord:
    """One request seen by the proxy and what the client got back."""

    method: str
    path: str
    query: str
    headers: Message
    status: int | None = None
    bytes_sent: int = 0
    request_bytes: int = 0
    fault: str | None = None
    #: The random fault injected (``500``, ``429``, ``cut_request``, ``cut_response``,
    #: ``dropped_answer``, ``drip``, ``stall`` ...), None for scripted faults and clean requests.
    injected: str | None = None


def _methods(method: str | Iterable[str] | None) -> frozenset[str] | None:
    if method is None:
        return None
    if isinstance(method, str):
        return frozenset({method.upper()})
    return frozenset(m.upper() for m in method)


class _ProxyHandler(QuietHandler):
    server: FaultProxy

    def _dispatch(self) -> None:
        self.server._handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class FaultProxy(LoopbackHTTPServer):
    """Reverse proxy on 127.0.0.1:<free port> for ``upstream`` (``http://127.0.0.1:PORT``).

    Attributes: :attr:`url`, :attr:`host`, :attr:`port` (of the proxy), :attr:`upstream_url`,
    :attr:`records`, :attr:`rules`.
    """

    def __init__(
        self, upstream: str, *, preserve_host: bool = False, rewrite_locations: bool = True
    ) -> None:
        super().__init__(_ProxyHandler)
        parts = urlsplit(upstream.rstrip("/"))
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_url = f"http://{parts.netloc}"
        self.upstream_netloc = parts.netloc
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self.preserve_host = preserve_host
        self.rewrite_locations = rewrite_locations
        self.rules: list[FaultRule] = []
        self.records: list[ProxyRecord] = []
        self.random: RandomFaults | None = None
        self._lock = threading.Lock()

    # -- configuring faults --------------------------------------------------------------------
    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def cut_response(
        self,
        path_regex: str,
        after_bytes: int,
        times: int | None = 1,
        method: str | Iterable[str] | None = "GET",
        *,
        only_success: bool = True,
    ) -> FaultRule:
        """Send status, headers and only ``after_bytes`` body bytes of matching answers; close.

        Only 2xx answers count unless ``only_success=False``.
        """
        return self._add(
            FaultRule(
                "cut_response",
                _methods(method),
                re.compile(path_regex),
                times,
                after_bytes=after_bytes,
                only_success=only_success,
            )
        )

    def cut_request(
        self,
        path_regex: str,
        after_bytes: int,
        times: int | None = 1,
        method: str | Iterable[str] | None = ("PATCH", "PUT"),
    ) -> FaultRule:
        """Read ``after_bytes`` of a matching request body, then drop the connection unforwarded."""
        return self._add(
            FaultRule(
                "cut_request",
                _methods(method),
                re.compile(path_regex),
                times,
                after_bytes=after_bytes,
            )
        )

    def override_status(
        self,
        method: str | Iterable[str] | None,
        path_regex: str,
        status: int,
        times: int | None = 1,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | str = b"",
        forward: bool = False,
        skip: int = 0,
        query_regex: str | None = None,
    ) -> FaultRule:
        """Answer ``status`` (with ``headers``/``body``) to matching requests.

        The request is not forwarded unless ``forward=True`` (then the upstream handles it and
        its answer is replaced: "the request worked but the response was lost").
        A ``body`` string is UTF-8 encoded; give ``headers={"Retry-After": "1"}`` for 429/503.
        The first ``skip`` matching requests pass untouched; ``query_regex`` narrows the match
        to requests whose (URL-decoded) query string it finds (e.g. one blob's closing PUT).
        """
        data = body.encode() if isinstance(body, str) else body
        return self._add(
            FaultRule(
                "status",
                _methods(method),
                re.compile(path_regex),
                times,
                status=status,
                headers=dict(headers or {}),
                body=data,
                forward=forward,
                skip=skip,
                query=re.compile(query_regex) if query_regex is not None else None,
            )
        )

    def rate_limit(
        self,
        method: str | Iterable[str] | None,
        path_regex: str,
        times: int | None = 1,
        retry_after: int | str = 1,
        *,
        skip: int = 0,
        query_regex: str | None = None,
    ) -> FaultRule:
        """Shortcut: 429 TOOMANYREQUESTS with ``Retry-After``."""
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"injected rate limit"}]}'
        return self.override_status(
            method,
            path_regex,
            429,
            times,
            headers={"Retry-After": str(retry_after), "Content-Type": "application/json"},
            body=body,
            skip=skip,
            query_regex=query_regex,
        )

    def corrupt_response(
        self,
        path_regex: str,
        times: int | None = 1,
        offset: int | None = None,
        method: str | Iterable[str] | None = "GET",
        *,
        only_success: bool = True,
    ) -> FaultRule:
        """Flip (XOR 0xFF) the byte at ``offset`` of matching bodies (default: the middle one).

        Only 2xx answers count unless ``only_success=False``.
        """
        return self._add(
            FaultRule(
                "corrupt",
                _methods(method),
                re.compile(path_regex),
                times,
                offset=offset,
                only_success=only_success,
            )
        )

    def drop_connection(
        self, method: str | Iterable[str] | None, path_regex: str, times: int | None = 1
    ) -> FaultRule:
        """Read the whole request, then close the connection without any response."""
        return self._add(FaultRule("drop", _methods(method), re.compile(path_regex), times))

    def delay(
        self,
        method: str | Iterable[str] | None,
        path_regex: str,
        seconds: float,
        times: int | None = None,
        *,
        query_regex: str | None = None,
    ) -> FaultRule:
        """Sleep ``seconds`` before handling matching requests (``query_regex`` narrows the
        match to requests whose URL-decoded query string it finds)."""
        query = re.compile(query_regex) if query_regex is not None else None
        return self._add(
            FaultRule(
                "delay",
                _methods(method),
                re.compile(path_regex),
                times,
                seconds=seconds,
                query=query,
            )
        )

    def random_faults(self, seed: int, rate: float, **options: object) -> RandomFaults:
        """Inject seeded random faults into ``rate`` of all requests (see
        :class:`~tests.support.random_faults.RandomFaults` for ``options``)."""
        plan = RandomFaults(seed, rate, **options)  # type: ignore[arg-type]
        self.random = plan
        return plan

    def clear_faults(self) -> None:
        """Remove every configured fault (scripted and random)."""
        with self._lock:
            self.rules.clear()
            self.random = None

    # -- inspecting traffic --------------------------------------------------------------------
    def requests_matching(
        self, method: str | None = None, path_regex: str | None = None
    ) -> list[ProxyRecord]:
        """Records with ``method`` (any if ``None``) whose path matches ``path_regex`` (search)."""
        pattern = re.compile(path_regex) if path_regex is not None else None
        with self._lock:
            records = list(self.records)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
        ]

    def count(self, method: str | None = None, path_regex: str | None = None) -> int:
        """Number of matching requests seen."""
        return len(self.requests_matching(method, path_regex))

    def bytes_sent(self, path_regex: str = "", method: str | None = None) -> int:
        """Total response body bytes sent to clients for requests whose path matches."""
        return sum(r.bytes_sent for r in self.requests_matching(method, path_regex))

    def injected(self) -> dict[str, int]:
        """How many random faults of each kind were injected."""
        counts: dict[str, int] = {}
        for record in self.requests_matching():
            if record.injected is not None:
                counts[record.injected] = counts.get(record.injected, 0) + 1
        return dict(sorted(counts.items()))

    def request_bytes(self, path_regex: str = "", method: str | None = None) -> int:
        """Total request body bytes received from clients for requests whose path matches."""
        return sum(r.request_bytes for r in self.requests_matching(method, path_regex))

    def clear_records(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self.records.clear()

    # -- request handling ----------------------------------------------------------------------
    def _take(
        self,
        kinds: tuple[str, ...],
        method: str,
        path: str,
        status: int | None = None,
        query: str = "",
    ) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if status is not None and rule.only_success and not 200 <= status < 300:
                    continue
                if rule.kind in kinds and rule.matches(method, path, query):
                    if rule.skip > 0:
                        rule.skip -= 1
                        continue
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    rule.hits += 1
                    return rule
        return None

    def _rewrite(self, name: str, value: str) -> str:
        if self.rewrite_locations and name.lower() in ("location", "link", "content-location"):
            return value.replace(self.upstream_url, self.url)
        return value

    def _handle(self, h: _ProxyHandler) -> None:
        parts = urlsplit(h.path)
        method = h.command
        record = ProxyRecord(method, parts.path, parts.query, h.headers)
        with self._lock:
            self.records.append(record)

        delay = self._take(("delay",), method, parts.path, query=parts.query)
        if delay is not None:
            time.sleep(delay.seconds)

        pre = self._take(("cut_request", "status", "drop"), method, parts.path, query=parts.query)
        chance: Fault | None = None
        plan = self.random
        if pre is None and plan is not None:
            chance = plan.decide(method, parts.path, parts.query, h.headers)
            if chance is not None:
                pre = self._random_rule(chance, plan, h, record)
        if pre is not None and pre.kind == "cut_request":
            record.fault = "cut_request"
            got = 0
            try:
                for chunk in iter_request_body(h):
                    got += len(chunk)
                    if got >= pre.after_bytes:
                        break
            except (OSError, ConnectionError):
                pass
            record.request_bytes = got
            h.abort_connection()
            return
        if pre is not None and pre.kind == "drop":
            record.fault = "drop"
            record.request_bytes = self._drain(h)
            h.abort_connection()
            return
        if pre is not None and pre.kind == "status" and not pre.forward:
            record.fault = f"status {pre.status}"
            record.request_bytes = self._drain(h)
            self._send_override(h, pre, record)
            return

        try:
            conn, resp = self._forward(h, record)
        except (OSError, http.client.HTTPException) as exc:
            record.fault = "upstream error"
            if h.close_connection:  # the client itself went away
                return
            # Part of the request body may still be unread: answer, then close the connection.
            body = f"proxy: upstream unreachable: {exc}\n".encode()
            record.status = 502
            record.bytes_sent = len(body)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.send_simple(502, body, {"Content-Type": "text/plain", "Connection": "close"})
            return
        try:
            if pre is not None:  # a status override after forwarding: discard the real answer
                resp.read()
                record.fault = f"status {pre.status} (forwarded)"
                self._send_override(h, pre, record)
                return
            self._relay(h, resp, record, chance)
        finally:
            conn.close()

    @staticmethod
    def _random_rule(
        chance: Fault, plan: RandomFaults, h: _ProxyHandler, record: ProxyRecord
    ) -> FaultRule | None:
        """The scripted-fault form of a random fault acting before the response (else None)."""
        anything = re.compile("")
        if chance.status == 429:
            record.injected = "429"
            body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"injected rate limit"}]}'
            headers = {"Retry-After": str(plan.retry_after), "Content-Type": "application/json"}
            return FaultRule("status", None, anything, None, status=429, headers=headers, body=body)
        if chance.status:
            record.injected = f"{chance.status}{' (forwarded)' if chance.forward else ''}"
            body = b'{"errors":[{"code":"UNKNOWN","message":"injected server error"}]}'
            return FaultRule(
                "status",
                None,
                anything,
                None,
                status=chance.status,
                headers={"Content-Type": "application/json"},
                body=body,
                forward=chance.forward,
            )
        if chance.kind == "cut":
            length = int(h.headers.get("Content-Length") or 0)
            chunked = "chunked" in (h.headers.get("Transfer-Encoding") or "").lower()
            if length > 0 or chunked:
                record.injected = "cut_request"
                after = int(chance.fraction * (length if length else 1 << 20))
                return FaultRule("cut_request", None, anything, None, after_bytes=after)
        return None  # cut of the response, drip, stall: applied while relaying

    def _drain(self, h: _ProxyHandler) -> int:
        n = 0
        try:
            for chunk in iter_request_body(h):
                n += len(chunk)
        except (OSError, ConnectionError):
            h.close_connection = True
        return n

    def _send_override(self, h: _ProxyHandler, rule: FaultRule, record: ProxyRecord) -> None:
        headers = dict(rule.headers)
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        record.status = rule.status
        record.bytes_sent = 0 if h.command == "HEAD" else len(rule.body)
        try:
            h.send_simple(rule.status, rule.body, headers)
        except OSError:
            h.close_connection = True

    def _forward(
        self, h: _ProxyHandler, record: ProxyRecord
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=120)
        conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
        chunked = "chunked" in (h.headers.get("Transfer-Encoding") or "").lower()
        for name, value in h.headers.items():
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                continue
            if lname == "host" and not self.preserve_host:
                value = self.upstream_netloc
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        received = 0
        upstream_open = True
        body = iter_request_body(h)
        while True:
            try:
                chunk = next(body)
            except StopIteration:
                break
            except ConnectionError:
                # The client went away mid-body: the upstream gets a truncated request, as it
                # would behind any real proxy; the client needs no answer.
                record.request_bytes = received
                h.close_connection = True
                conn.close()
                raise
            received += len(chunk)
            record.request_bytes = received  # live, so a test can act on upload progress
            if not upstream_open:
                continue  # keep reading so the client connection stays in sync
            try:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            except OSError:
                # The upstream answered early and closed (e.g. 401 before the body); its
                # response may still be readable below.
                upstream_open = False
        if chunked and upstream_open:
            with contextlib.suppress(OSError):
                conn.send(b"0\r\n\r\n")
        record.request_bytes = received
        return conn, conn.getresponse()

    def _relay(
        self,
        h: _ProxyHandler,
        resp: http.client.HTTPResponse,
        record: ProxyRecord,
        chance: Fault | None = None,
    ) -> None:
        method = h.command
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        no_body = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        buffered: bytes | None = None
        if not no_body and not has_length:
            # Unknown length (upstream chunked): buffer so the client gets a Content-Length and
            # the connection can stay alive. Only small bodies (errors, JSON) arrive this way.
            buffered = resp.read()
            headers.append(("Content-Length", str(len(buffered))))
        declared = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)

        status = resp.status
        cut = None if no_body else self._take(("cut_response",), method, record.path, status)
        corrupt = None if no_body else self._take(("corrupt",), method, record.path, status)
        plan = self.random
        if chance is not None and cut is None and corrupt is None and plan is not None:
            if self._random_without_body(h, record, chance, plan, no_body or declared == 0):
                return
            if chance.kind == "cut":
                record.injected = "cut_response"
                cut = FaultRule(
                    "cut_response",
                    None,
                    re.compile(""),
                    None,
                    after_bytes=int(chance.fraction * declared),
                )
        if cut is not None:
            record.fault = "cut_response"
        if corrupt is not None:
            record.fault = (record.fault + "+corrupt") if record.fault else "corrupt"
        flip_at = (
            (corrupt.offset if corrupt.offset is not None else declared // 2)
            if corrupt is not None
            else None
        )

        record.status = resp.status
        try:
            h.send_response_only(resp.status, resp.reason)
            for name, value in headers:
                h.send_header(name, self._rewrite(name, value))
            h.end_headers()
            if no_body:
                return
            position = 0
            body = self._body_chunks(resp, buffered)
            if chance is not None and plan is not None and chance.kind in ("drip", "stall"):
                body = self._random_body(h, record, chance, plan, body, declared)
            for chunk in body:
                if flip_at is not None and position <= flip_at < position + len(chunk):
                    i = flip_at - position
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if cut is not None and position + len(chunk) >= cut.after_bytes:
                    part = chunk[: max(cut.after_bytes - position, 0)]
                    h.wfile.write(part)
                    record.bytes_sent += len(part)
                    h.abort_connection()
                    return
                h.wfile.write(chunk)
                position += len(chunk)
                record.bytes_sent += len(chunk)
            if cut is not None:  # the body was shorter than the cut point: still close
                h.abort_connection()
        except (OSError, http.client.HTTPException):
            # The client went away, or the upstream broke its own body: pass the break on.
            h.abort_connection()

    @staticmethod
    def _random_without_body(
        h: _ProxyHandler, record: ProxyRecord, chance: Fault, plan: RandomFaults, empty: bool
    ) -> bool:
        """Apply a random fault to an answer without a body; True if the exchange is over."""
        if not empty:
            return False
        if chance.kind == "cut":
            record.injected = "dropped_answer"
            h.abort_connection()
            return True
        if chance.kind == "stall":
            record.injected = "stall"
            time.sleep(plan.stall_seconds)
            h.abort_connection()
            return True
        if chance.kind == "drip":
            record.injected = "drip"
            time.sleep(plan.drip_pause * (plan.drip_bytes // plan.drip_step))
        return False

    @staticmethod
    def _random_body(
        h: _ProxyHandler,
        record: ProxyRecord,
        chance: Fault,
        plan: RandomFaults,
        body: Iterator[bytes],
        declared: int,
    ) -> Iterator[bytes]:
        """The body with a random drip or stall applied (a stall ends in a closed connection)."""
        record.injected = chance.kind
        if chance.kind == "stall":
            stop_at = int(chance.fraction * declared)
            position = 0
            for chunk in body:
                if position + len(chunk) >= stop_at:
                    yield chunk[: stop_at - position]
                    h.wfile.flush()
                    time.sleep(plan.stall_seconds)
                    raise ConnectionAbortedError("stalled")
                position += len(chunk)
                yield chunk
            return
        dripped = 0
        for chunk in body:
            view = memoryview(chunk)
            while dripped < plan.drip_bytes and len(view):
                piece = bytes(view[: plan.drip_step])
                view = view[len(piece) :]
                dripped += len(piece)
                yield piece
                h.wfile.flush()
                time.sleep(plan.drip_pause)
            if len(view):
                yield bytes(view)

    @staticmethod
    def _body_chunks(resp: http.client.HTTPResponse, buffered: bytes | None) -> Iterator[bytes]:
        if buffered is not None:
            for i in range(0, len(buffered), _CHUNK):
                yield buffered[i : i + _CHUNK]
            return
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                return
            yield chunk

    def __repr__(self) -> str:
        return f"<FaultProxy {self.url} -> {self.upstream_url}>"
