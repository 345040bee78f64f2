"""One registry's HTTP transport: pooled session, auth, retries, redirects, in-flight limit.

Retries follow one :class:`~regstore.client.retry.RetryPolicy` and are split by where each
kind of failure can be handled safely:

- **Here**, for every method: failures to *establish* a connection (refused, connect timeout,
  DNS) — nothing was sent, so even a PATCH may be repeated. (Not in the adapter: urllib3's
  own retries ran inside each of these, six times five attempts before a registry that was
  down failed.)
- **Here**, for requests safe to repeat (GET, HEAD, DELETE, manifest PUT, the empty POST that
  starts an upload): read errors after the request went out, and answers 408/429/5xx
  (``Retry-After`` honoured, capped), with exponential backoff and jitter. urllib3's status
  retries cannot be used for these: the same method (PUT) is safe to repeat for a manifest and
  not for a blob, a streamed body cannot be replayed, and a 401 must first go through the token
  dance. Each request spends from its own budget, or from the budget active in the caller's
  context (one blob's upload: see :mod:`regstore.client.retry`).
- **In the engine**, for the upload steps that are not safe to repeat (a chunk PATCH, the
  closing or monolithic PUT): the engine asks the upload's status (or HEADs the blob) and goes
  on from where the registry stands, spending from the blob's budget.

Redirects are followed here too (GET/HEAD), so that ``Authorization`` is dropped whenever the
target leaves the registry's origin (a presigned S3 URL rejects it) and ``Range`` is kept.
Origins are read as urllib3 (which sends) reads them, and a target no URL, not http(s), or
holding characters the parsers read differently (``http://other\\@registry/``) is refused
(:class:`~regstore.errors.RegistryError`): credentials never reach another host. So are a
``Location`` that is missing and a chain of more than ``MAX_REDIRECTS`` hops (a loop). Cookies
the registry sets are its credentials too: they are kept from the registry's own origin only
and sent back to it only (a cookie jar matches hosts, not ports: a token realm or a storage
server on another port of the same host would get them).

A body read whole (a manifest, a tag page, an error) must arrive within an overall deadline
(:attr:`TransportOptions.body_deadline`, looked at as each piece arrives: at most one socket
read timeout more): socket timeouts bound each wait, and a registry sending a byte now and
then would otherwise hold a request for ever. A blob's stream has none (a slow link is
legitimate there).
A semaphore bounds the requests in flight to the registry — held until a streamed body is
closed, given back while a retry waits — and :class:`~regstore.client.ratelimit.RateLimitPacer`
spaces requests when the registry announces a nearly spent quota.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import requests
import requests.auth
import requests.cookies
import requests.utils
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from regstore.client.auth import Authenticator
from regstore.client.bodies import UploadBody
from regstore.client.credentials import CredentialResolver
from regstore.client.errors_map import (
    MAX_ERROR_BODY,
    Operation,
    SlowBodyError,
    auth_error,
    checked_target,
    http_context,
    parse_retry_after,
    transport_error,
)
from regstore.client.heads import (
    HeadAnswer,
    HeadConnections,
    connector,
    many_heads,
    sendable,
    tls_context,
)
from regstore.client.ratelimit import RateLimitPacer
from regstore.client.reading import read_bounded
from regstore.client.urls import (
    Endpoint,
    no_proxy_for,
    redact_url,
    same_origin,
    shown_url,
    url_problem,
)
from regstore.errors import RegistryError, RegstoreError
from regstore.retry import RetryBudget, RetryPolicy, active_budget, retryable_status

if TYPE_CHECKING:
    from requests.sessions import _Settings

__all__ = ["IDEMPOTENT", "REDIRECTS", "Reply", "Transport", "TransportOptions"]

log = logging.getLogger("regstore.client.transport")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
#: Methods safe to repeat; ``PUT`` only when the caller says so (manifests, not blobs).
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})
#: Most of a redirect's body that is read to keep its connection
_REDIRECT_BODY = 64 * 1024


@dataclass
class TransportOptions:
    """Transport tuning; see :class:`~regstore.client.Client` for the meaning of each."""

    verify: bool | str = True
    timeout: tuple[float, float] = (10.0, 300.0)
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    max_in_flight: int = 8
    user_agent: str = "regstore"
    #: Seconds a body read whole (not a blob's stream) may take in all; None: the read
    #: timeout. A registry that cannot deliver a body of at most ``max_body`` (4 MiB for a
    #: manifest) in the time it may stay silent once is failing, not slow: the error is a
    #: TransportError the retry budget spends on.
    body_deadline: float | None = None

    @property
    def body_seconds(self) -> float:
        """The overall deadline of a body read whole, in seconds."""
        return self.timeout[1] if self.body_deadline is None else self.body_deadline

    def policy(self, sleep: Callable[[float], None] = time.sleep) -> RetryPolicy:
        """The retry policy these options describe."""
        return RetryPolicy(
            retries=self.retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            max_retry_after=self.max_retry_after,
            sleep=sleep,
        )


class _NoNetrcAuth(requests.auth.AuthBase):
    """Leaves requests untouched; the client sets ``Authorization`` itself."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


def _anywhere(url: str) -> bool:
    return True


class _RegistryCookies(requests.cookies.RequestsCookieJar):
    """A cookie jar that keeps only cookies set by the registry's own origin: a token realm or
    a storage server (another origin, maybe the same host) cannot plant one the registry would
    then be sent."""

    def __init__(self, owns: Callable[[str], bool]) -> None:
        super().__init__()
        self._owns = owns

    def extract_cookies(self, response: Any, request: Any) -> None:
        if self._owns(request.get_full_url()):
            super().extract_cookies(response, request)


class _Session(requests.Session):
    """A ``requests.Session`` that reads the environment's settings (proxies, ``NO_PROXY``,
    ``REQUESTS_CA_BUNDLE``) once per origin instead of on every request: a sync of a few
    hundred tags spent a quarter of its CPU re-reading ``os.environ`` for each HEAD.

    Its cookies are the registry's (``owns`` tells its URLs): kept from its answers only, and
    sent on its requests only (a cookie jar matches hosts, not ports). Without ``owns`` (a
    session for no registry in particular) every URL is taken as the registry's."""

    def __init__(self, owns: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self._environment: dict[tuple[object, ...], _Settings] = {}
        self._owns: Callable[[str], bool] = owns if owns is not None else _anywhere
        self.cookies = _RegistryCookies(self._owns)

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """As requests prepares it, without a ``Cookie`` for another origin (the token
        requests of :class:`~regstore.client.auth.Authenticator` come this way)."""
        prepared = super().prepare_request(request)
        if not self._owns(prepared.url or ""):
            prepared.headers.pop("Cookie", None)
        return prepared

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        parts = urlsplit(url)
        key = (
            parts.scheme,
            parts.netloc,
            tuple(sorted((proxies or {}).items())),
            stream,
            verify,
            cert,
            self.trust_env,
        )
        merged = self._environment.get(key)
        if merged is None:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._environment) >= 64:  # many origins (redirects to a CDN): start afresh
                self._environment.clear()
            self._environment[key] = merged
        return cast("_Settings", {**merged, "proxies": dict(merged["proxies"])})

    def send_direct(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Any,
        *,
        timeout: tuple[float, float],
        verify: bool | str,
        proxies: dict[str, str] | None,
    ) -> requests.Response:
        """What ``request(..., stream=True, allow_redirects=False)`` does for this session,
        without the general machinery regstore never uses (hooks, per-request auth and
        cookies, redirect bookkeeping): a fifth of the CPU of a manifest HEAD (0.51 ms became
        0.41 ms here), and a sync of small images sends thousands. Session headers apply, and
        cookies set by the registry are kept (a load balancer's affinity) and sent back to it
        (to its origin only: never to a redirect's target elsewhere)."""
        settings = self.merge_environment_settings(url, dict(proxies or {}), True, verify, None)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.prepare_url(url, None)
        prepared.prepare_headers({**self.headers, **headers})
        if self.cookies and self._owns(url):
            prepared.prepare_cookies(self.cookies)
        prepared.prepare_body(body or None, None)  # no body: Content-Length 0, not chunked
        response = self.get_adapter(url).send(
            prepared,
            stream=True,
            timeout=timeout,
            verify=verify if settings["verify"] is None else settings["verify"],
            cert=settings["cert"],
            proxies=settings["proxies"],
        )
        if "Set-Cookie" in response.headers and self._owns(url):
            jar = requests.cookies.extract_cookies_to_jar  # untyped in requests' stubs
            cast("Callable[..., None]", jar)(self.cookies, prepared, response.raw)
        return response


@dataclass
class _Counters:
    requests: int = 0
    retries: int = 0
    redirects: int = 0


class _Slot:
    """One permit of the in-flight semaphore; released at most once per acquisition."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()

    def reacquire(self) -> None:
        """Take the permit back after a :meth:`release` (blocks until one is free)."""
        if not self._held:
            self._semaphore.acquire()
            self._held = True


@dataclass
class Reply:
    """An answer to one logical request (after redirects, auth and retries).

    Internal to the client: public methods turn it into regstore values. For streamed
    requests ``response`` is open and the in-flight slot is held until :meth:`close`.
    """

    method: str
    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    response: requests.Response | None = None
    truncated: bool = False
    #: Retries spent on this request before this answer.
    retries: int = 0
    #: Seconds :meth:`read_error_body` may take in all (None: no deadline).
    body_deadline: float | None = None
    _slot: _Slot | None = field(default=None, repr=False)

    def close(self) -> None:
        """Release the connection and the in-flight slot (idempotent)."""
        resp, self.response = self.response, None
        if resp is not None:
            resp.close()
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    def read_error_body(self) -> bytes:
        """For a streamed reply with a failure status: read a bounded body, then close.

        Never reads the body of HEAD or of a 416 (registry 2.8 announces the blob's length for
        its short 416 text, so reading it would only end in a broken-connection error).
        """
        try:
            resp = self.response
            if resp is not None and self.method != "HEAD" and self.status != 416:
                try:
                    body = read_bounded(resp, MAX_ERROR_BODY, self.body_deadline)[0]
                    self.body = body[:MAX_ERROR_BODY]
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
                    self.body = b""
            return self.body
        finally:
            self.close()


class Transport:
    """Sends requests to one registry. Thread-safe; share one per registry."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: CredentialResolver,
        options: TransportOptions,
        *,
        session: requests.Session | None = None,
        pacer: RateLimitPacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if options.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if options.retries < 0:
            raise ValueError("retries must be >= 0")
        self.endpoint = endpoint
        self.options = options
        self.owns_session = session is None
        self.session = session if session is not None else self._new_session(options, endpoint)
        self.pacer = pacer if pacer is not None else RateLimitPacer()
        self.policy = options.policy(sleep)
        self.auth = Authenticator(
            endpoint,
            credentials,
            self.session,
            timeout=options.timeout,
            user_agent=options.user_agent,
            # without TLS verification a plain-HTTP realm loses nothing more
            allow_plain_realm=options.verify is False,
            verify=options.verify,
            # token requests are requests too: the same policy, the same failures retried
            policy=self.policy,
            worth_retrying=self.worth_retrying,
            body_seconds=lambda: self.options.body_seconds,
        )
        self.counters = _Counters()
        self._semaphore = threading.BoundedSemaphore(options.max_in_flight)
        #: the bulk HEADs' own connections, kept between batches (by TLS trust)
        self._heads: dict[bool | str | None, HeadConnections] = {}
        self._heads_lock = threading.Lock()

    @staticmethod
    def _new_session(options: TransportOptions, endpoint: Endpoint) -> requests.Session:
        session = _Session(endpoint.owns)
        # A session-level auth, even a no-op one, stops requests from adding ~/.netrc
        # credentials, which would replace the client's own Authorization header.
        session.auth = _NoNetrcAuth()
        # No retries in urllib3: each failed request is retried here (idempotent ones) or by
        # the engine's budget for the blob (an upload's steps), never both. urllib3's own
        # connect retries ran inside each of those: six times five attempts, with backoff,
        # before a push to a registry that is down (or a mistyped host) failed: 108 s.
        retry = Retry(0, read=False, redirect=False, raise_on_status=False)
        pool = max(options.max_in_flight, 10)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=retry)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self) -> None:
        """Close the pooled connections (only when the session is ours)."""
        with self._heads_lock:
            heads, self._heads = list(self._heads.values()), {}
        for kept in heads:
            kept.close()
        if self.owns_session:
            self.session.close()

    # -- helpers ---------------------------------------------------------------------------------
    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return self.policy.delay(attempt, retry_after)

    @staticmethod
    def _never_sent(exc: BaseException) -> bool:
        """True if no connection could be made (refused, timed out connecting): nothing was
        sent, so any request, even an upload's POST, may be sent again."""
        reason = exc.args[0] if exc.args else None
        return isinstance(reason, urllib3.exceptions.MaxRetryError) and isinstance(
            reason.reason,
            (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
            ),
        )

    @classmethod
    def worth_retrying(cls, exc: requests.RequestException) -> bool:
        """True for a failed exchange a retry may mend: not a TLS refusal (it would fail the
        same way)."""
        return not isinstance(exc, requests.exceptions.SSLError)

    def _check_target(self, method: str, url: str, op: Operation) -> None:
        """Refuse a URL that is no http(s) URL or could reach another host than it names."""
        if self.endpoint.owns(url):  # the registry's own (the common case, and cheap to tell)
            return
        problem = url_problem(url)
        if problem is not None:
            raise RegistryError(
                f"{op.what}: refusing to request '{shown_url(url)}': {problem}",
                http=http_context(method, url),
            )

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | UploadBody | None,
        follow: bool,
        op: Operation,
    ) -> tuple[requests.Response, str]:
        """Send once, following redirects for GET/HEAD; returns the response and its URL."""
        current, hops = url, 0
        while True:
            self.counters.requests += 1
            if isinstance(self.session, _Session):
                resp = self.session.send_direct(
                    method,
                    current,
                    headers,
                    body,
                    timeout=self.options.timeout,
                    verify=self.options.verify,
                    proxies=no_proxy_for(current),
                )
            else:  # a session of the caller's: its hooks and auth apply
                resp = self._send_through(method, current, headers, body)
            log.debug("%s %s -> %d", method, redact_url(current), resp.status_code)
            if not (follow and resp.status_code in REDIRECTS):
                return resp, current
            location = (resp.headers.get("Location") or "").strip()
            # A redirect's short body is read, so that its connection goes back to the pool (a
            # registry that redirects every blob GET to its storage would otherwise cost a new
            # connection per blob); a long one is dropped with its connection.
            with contextlib.suppress(requests.RequestException):
                self._read_body(resp, _REDIRECT_BODY)
            resp.close()
            self._check_redirect(method, current, resp.status_code, location, hops, op)
            target = checked_target(
                current,
                location,
                f"{op.what}: the registry redirected to an unusable Location",
                http_context(method, current, resp.status_code),
            )
            if not same_origin(target, self.endpoint.base_url):
                # Never send the registry's credentials elsewhere (presigned URLs refuse them).
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            hops += 1
            self.counters.redirects += 1
            current = target

    @staticmethod
    def _check_redirect(
        method: str, url: str, status: int, location: str, hops: int, op: Operation
    ) -> None:
        """Refuse a redirect that cannot be followed: no Location, or one hop too many."""
        ctx = http_context(method, url, status)
        if not location:
            raise RegistryError(
                f"{op.what}: the registry answered {status} without a Location", http=ctx
            )
        if hops >= MAX_REDIRECTS:
            raise RegistryError(
                f"{op.what}: the registry redirected more than {MAX_REDIRECTS} times (a loop?); "
                f"the last Location was '{shown_url(location)}'",
                http=ctx,
            )

    def _send_through(
        self, method: str, url: str, headers: dict[str, str], body: bytes | UploadBody | None
    ) -> requests.Response:
        """Send once through a session of the caller's (its hooks, auth and adapters apply),
        as ``session.request`` would, but with no ``Cookie`` for another origin than the
        registry's: the caller's cookie jar matches hosts, not ports."""
        session = self.session
        prepared = session.prepare_request(
            requests.Request(method, url, headers=headers, data=body)
        )
        if not self.endpoint.owns(url):
            prepared.headers.pop("Cookie", None)
        settings = session.merge_environment_settings(
            prepared.url, no_proxy_for(url) or {}, True, self.options.verify, None
        )
        return session.send(
            prepared, allow_redirects=False, timeout=self.options.timeout, **settings
        )

    def _read_body(self, resp: requests.Response, limit: int) -> tuple[bytes, bool]:
        """Read at most ``limit`` bytes (+1 to detect more) within the body deadline
        (:attr:`TransportOptions.body_seconds`); returns (body, truncated). Raises
        :class:`~regstore.client.errors_map.SlowBodyError` (a ``requests`` failure, retried
        as a broken connection is) when the deadline passes first."""
        return read_bounded(resp, limit, self.options.body_seconds)

    # -- many HEADs at once --------------------------------------------------------------------
    #: Connections one batch of HEADs uses at most (within ``max_in_flight``).
    HEAD_CONNECTIONS = 8

    def head_many(
        self,
        urls: Sequence[str],
        op: Operation,
        *,
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> list[HeadAnswer | None] | None:
        """HEAD every URL of ``urls`` (all the registry's own) over a few kept-alive
        connections of its own (:mod:`regstore.client.heads`); each answer, or None where none
        came.

        Nothing is retried, followed or re-authenticated here: a caller asks the URLs without
        a 200 or 404 again through :meth:`request`. Returns None, having sent no HEAD, when
        this transport cannot take the shortcut: a session of the caller's (its hooks and
        adapters would be bypassed), cookies or a client certificate to send, a proxy on the
        way, a registry asking for pacing, credentials that cannot be had (a token fetch that
        failed) or that cannot go on the wire as they are. Never raises a regstore error.
        """
        if not urls:
            return []
        first = urls[0]
        session = self.session
        if (
            not isinstance(session, _Session)
            or session.cookies
            or session.cert
            or not all(self.endpoint.owns(url) for url in urls)
            or self.pacer.pacing
        ):
            return None
        settings = session.merge_environment_settings(
            first, dict(no_proxy_for(first) or {}), True, self.options.verify, None
        )
        if requests.utils.select_proxy(first, settings["proxies"]) is not None:
            return None
        # what the ordinary path sends: the session's headers, then the request's own
        send_headers = {
            **{k: v for k, v in session.headers.items() if isinstance(v, str)},
            "User-Agent": self.options.user_agent,
            **(headers or {}),
        }
        try:
            authorization = self.auth.authorization(tuple(scopes), op)
        except RegstoreError as exc:
            log.debug("no HEADs at once: %s", exc)
            return None
        if authorization:
            send_headers["Authorization"] = authorization
        if not sendable(send_headers):
            return None
        trust: bool | str | None = None  # plain HTTP
        if urlsplit(first).scheme == "https":
            trust = self.options.verify if settings["verify"] is None else settings["verify"]
        with self._heads_lock:
            kept = self._heads.get(trust)
            if kept is None:
                tls = (
                    None
                    if trust is None
                    else tls_context(trust, requests.utils.DEFAULT_CA_BUNDLE_PATH)
                )
                kept = self._heads[trust] = HeadConnections(
                    connector(first, timeout=self.options.timeout, tls=tls),
                    self.HEAD_CONNECTIONS,
                )
        # The in-flight bound holds: one permit is waited for, more only if free at once
        # (waiting for several could deadlock two batches holding half each).
        self._semaphore.acquire()
        held = 1
        while held < self.HEAD_CONNECTIONS and self._semaphore.acquire(blocking=False):
            held += 1
        try:

            def seen(answer: HeadAnswer) -> bool:
                self.pacer.observe(answer.headers)
                # a refusal, a quota or a failing registry: the ordinary path handles the rest
                return (answer.status < 400 or answer.status == 404) and not self.pacer.pacing

            answers, sent = many_heads(
                urls,
                send_headers,
                connections=held,
                connect=kept,
                on_answer=seen,
            )
        finally:
            for _ in range(held):
                self._semaphore.release()
        self.counters.requests += sent
        log.debug("%d HEADs at once, %d answered", sent, sum(a is not None for a in answers))
        return answers

    # -- the request loop ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        op: Operation,
        *,
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes | UploadBody | None = None,
        idempotent: bool | None = None,
        stream: bool = False,
        follow_redirects: bool | None = None,
        max_body: int = 64 * 1024 * 1024,
    ) -> Reply:
        """Send a request to the registry and return its final answer.

        Handles auth challenges (one retry with fresh credentials), retries any request whose
        connection could not be made, and requests that are ``idempotent`` (default: GET,
        HEAD, DELETE) on read errors and retryable answers,
        spending from the budget active in this context or from one of the request's own,
        follows redirects for GET/HEAD. Raises :class:`AuthenticationError` for a final
        401/403 from the registry and :class:`TransportError` when it cannot be reached or the
        connection breaks; any other status is returned for the caller to map (after the
        retries, when it is retryable). With ``stream`` the caller must :meth:`Reply.close` the
        reply.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT
        follow = method in ("GET", "HEAD") if follow_redirects is None else follow_redirects
        scopes = tuple(scopes)
        base_headers = {"User-Agent": self.options.user_agent, **(headers or {})}
        budget: RetryBudget | None = None
        retries = 0
        auth_override: str | None = None
        auth_retried = False
        self._check_target(method, url, op)
        self._semaphore.acquire()
        slot = _Slot(self._semaphore)

        def try_again(
            reason: str, retry_after: float | None = None, *, unsent: bool = False
        ) -> bool:
            nonlocal budget, retries
            if not (idempotent or unsent):
                return False
            if budget is None:
                budget = active_budget() or self.policy.budget(op.what)
            # The wait (up to max_retry_after) gives the in-flight slot back: a storm of 429s
            # must not fill every slot with sleepers and stall requests that would succeed.
            slot.release()
            again = budget.try_again(f"{op.what}: {reason}", retry_after)
            slot.reacquire()
            if not again:
                return False
            retries += 1
            self.counters.retries += 1
            return True

        try:
            while True:
                self.pacer.wait()
                send_headers = dict(base_headers)
                if self.endpoint.owns(url):
                    authorization = auth_override or self.auth.authorization(scopes, op)
                    if authorization:
                        send_headers["Authorization"] = authorization
                if isinstance(body, UploadBody) and not body.rewind():
                    raise transport_error(op, method, url, RuntimeError("body cannot be resent"))
                try:
                    resp, final_url = self._send(method, url, send_headers, body, follow, op)
                    if (stream and resp.status_code < 300) or resp.status_code == 416:
                        # 416 bodies are not read: registry 2.8 announces a Content-Length
                        # its short text never fills.
                        data, truncated = b"", False
                    else:
                        data, truncated = self._read_body(resp, max_body)
                except requests.RequestException as exc:
                    reason = str(exc) if isinstance(exc, SlowBodyError) else type(exc).__name__
                    if self.worth_retrying(exc) and try_again(reason, unsent=self._never_sent(exc)):
                        continue
                    raise transport_error(op, method, url, exc) from exc
                status = resp.status_code
                from_registry = self.endpoint.owns(final_url)
                if from_registry:
                    self.pacer.observe(resp.headers)
                if status == 401 and from_registry and not auth_retried:
                    auth_retried = True
                    new_auth = self.auth.on_unauthorized(
                        resp.headers.get("WWW-Authenticate"), scopes, op
                    )
                    if new_auth is not None and (
                        not isinstance(body, UploadBody) or body.replayable
                    ):
                        resp.close()
                        auth_override = new_auth
                        continue
                    renewed = new_auth is not None
                else:
                    renewed = False
                if status in (401, 403) and from_registry:
                    resp.close()
                    ctx = http_context(method, final_url, status, resp.headers, data)
                    refused = auth_error(op, ctx, scopes, registry=self.endpoint.registry)
                    # A token renewed for a body that cannot be sent again from here (a chunk
                    # streamed from its source): the upload's owner asks where the registry
                    # stands and sends the rest with the new token, as after a cut.
                    refused.retryable = renewed
                    raise refused
                if retryable_status(status):
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    # Closed first: the pause must not hold a pooled connection.
                    resp.close()
                    if try_again(f"HTTP {status}", retry_after):
                        continue
                reply = Reply(
                    method,
                    final_url,
                    status,
                    resp.headers,
                    data,
                    truncated=truncated,
                    retries=retries,
                    body_deadline=self.options.body_seconds,
                )
                if stream and status < 300:
                    reply.response = resp
                    reply._slot = slot
                    # Release the slot even if the caller forgets to close the stream.
                    weakref.finalize(reply, slot.release)
                else:
                    resp.close()
                    slot.release()
                return reply
        except BaseException:
            slot.release()
            raise
