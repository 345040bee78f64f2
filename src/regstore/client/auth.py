"""Registry authentication: Basic, and Bearer tokens from the registry's token server.

The flow (distribution's token spec, what docker does):

1. A request goes out without credentials (or with what is already known to work).
2. A 401 carries ``WWW-Authenticate``. ``Basic`` → from then on every request to this registry
   carries ``Authorization: Basic``. ``Bearer realm=,service=,scope=`` → ``GET realm?service=
   &scope=&scope=`` (with Basic credentials when there are any, anonymously otherwise) returns
   ``token`` or ``access_token``; the request is retried once with ``Authorization: Bearer``.
3. Tokens are cached per (realm, service, scope set) until ``expires_in`` (at least 60 s, as
   docker does) minus a margin, and sent proactively on later requests for the same scopes.
   A 401 despite a cached token fetches a new one once, merging the challenge's scopes.

With an identity token (docker's OAuth2 refresh token from ``docker login`` with some helpers),
the token is requested with the OAuth2 form POST (``grant_type=refresh_token``).
Credentials go only to the registry's own origin and its token realm; never into logs.
An HTTPS registry whose realm is plain ``http://`` is refused (InsecureRealmError) before any
token request: following it would put the Basic password, the refresh token or the token
itself on the wire in clear. Only a plain-HTTP registry, or a client that does not verify TLS
anyway (``verify=False``, the CLI's ``--insecure``), may use a plain-HTTP realm.

A token request follows redirects only on the realm's own origin (so never to another host,
nor from HTTPS to HTTP): its password or identity token must not travel with it elsewhere. It
carries Basic credentials encoded as UTF-8, as docker sends them and as the Basic path does,
and it is retried by the client's one retry policy (broken connections, 408/429/5xx,
``Retry-After`` capped) from the budget active in the caller's context; a refusal (401/403)
is not retried.

The realm is any URL the registry names, so its answers are read with a bound: a token answer
past :data:`MAX_TOKEN_BODY` bytes is a RegistryError, and the body of any other answer is read
only as far as an error message needs (``MAX_ERROR_BODY``). An ``expires_in`` that is not a
finite number (``NaN``, ``Infinity``, ``1e400``) counts as absent: the minimum lifetime.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import requests
import requests.auth

from regstore.client.challenge import Challenge, merge_scopes, parse_www_authenticate
from regstore.client.credentials import CredentialResolver, Credentials
from regstore.client.errors_map import (
    MAX_ERROR_BODY,
    Operation,
    auth_error,
    http_context,
    parse_retry_after,
    transport_error,
)
from regstore.client.reading import read_bounded
from regstore.client.urls import (
    Endpoint,
    no_proxy_for,
    redact_url,
    resolve_target,
    same_origin,
    url_problem,
)
from regstore.errors import (
    AuthenticationError,
    HTTPContext,
    InsecureRealmError,
    RegistryError,
    UnexpectedHTTPStatusError,
)
from regstore.retry import RetryBudget, RetryPolicy, active_budget, retryable_status

__all__ = [
    "MAX_TOKEN_BODY",
    "MIN_TOKEN_LIFETIME",
    "Authenticator",
    "Token",
    "basic_authorization",
]

log = logging.getLogger("regstore.client.auth")

#: Tokens live at least this long (docker raises shorter ``expires_in`` values to 60 s).
MIN_TOKEN_LIFETIME = 60.0
#: Tokens are renewed this long before they expire.
EXPIRY_MARGIN = 10.0
OAUTH_CLIENT_ID = "regstore"
#: Redirects one token request follows at most (on the realm's own origin only).
MAX_TOKEN_REDIRECTS = 5
#: Bytes of a token answer read at most: real ones are a few KiB (a JWT and its lifetime), and
#: the realm is whatever URL the registry names, so it must not choose how much we buffer.
MAX_TOKEN_BODY = 1 << 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Token:
    """A bearer token and when (``time.monotonic``) to stop using it. Its repr hides it."""

    value: str
    expires_at: float

    def valid(self, now: float | None = None) -> bool:
        """True until the renewal time."""
        return (time.monotonic() if now is None else now) < self.expires_at

    def __repr__(self) -> str:
        return f"Token(<hidden>, expires_at={self.expires_at:.0f})"


def basic_authorization(creds: Credentials) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


_TokenKey = tuple[str, str, frozenset[str]]


@dataclass(frozen=True)
class _TokenAsk:
    """One token request as it is sent, and sent again after a retry or a redirect."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    #: the OAuth2 form of an identity token (it holds the refresh token: kept out of reprs)
    form: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)
    authorization: str | None = field(default=None, repr=False)


class _SetAuthorization(requests.auth.AuthBase):
    """Puts the token request's own ``Authorization`` on it. As the request's auth it also
    keeps a session's auth or ``~/.netrc`` from replacing it, as ``auth=`` did."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self.value
        return r


def _not_tls_failure(exc: requests.RequestException) -> bool:
    """The default test of a failed token request worth retrying: all but a TLS refusal."""
    return not isinstance(exc, requests.exceptions.SSLError)


class Authenticator:
    """Authentication state for one registry; shared by all threads using a client."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: CredentialResolver,
        session: requests.Session,
        *,
        timeout: tuple[float, float],
        user_agent: str,
        allow_plain_realm: bool = False,
        verify: bool | str = True,
        policy: RetryPolicy | None = None,
        worth_retrying: Callable[[requests.RequestException], bool] = _not_tls_failure,
        body_seconds: Callable[[], float] | None = None,
    ) -> None:
        """``allow_plain_realm``: follow a plain-HTTP realm of an HTTPS registry (only for a
        client that does not verify TLS: it has given up the protection this keeps).
        ``verify`` is the client's TLS trust, for the realm as for the registry.
        ``policy`` retries token requests (the client's, so that one policy covers every
        request); ``worth_retrying`` says which failed exchanges it may retry (the
        transport's test: not one the connection pool has already retried).
        ``body_seconds`` gives the overall deadline of a token answer's body, asked at each
        token request (the transport's, which may change); by default the read timeout: a
        token server sending a byte now and then must not hold a request for ever."""
        self.endpoint = endpoint
        self._verify = verify
        self._policy = policy if policy is not None else RetryPolicy()
        self._worth_retrying = worth_retrying
        self.allow_plain_realm = allow_plain_realm
        self.credentials = credentials
        self._session = session
        self._timeout = timeout
        self._body_seconds = body_seconds or (lambda: timeout[1])
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._scheme: str | None = None
        self._bearer: Challenge | None = None
        self._tokens: dict[_TokenKey, Token] = {}
        #: Number of tokens fetched (for tests and diagnostics).
        self.token_fetches = 0

    @property
    def scheme(self) -> str | None:
        """``"basic"``, ``"bearer"`` or None while no challenge was seen."""
        return self._scheme

    def _key(self, scopes: Sequence[str]) -> _TokenKey | None:
        bearer = self._bearer
        if bearer is None or not bearer.realm:
            return None
        return (bearer.realm, bearer.service or "", frozenset(scopes))

    def authorization(self, scopes: Sequence[str], op: Operation) -> str | None:
        """The ``Authorization`` value to send proactively for a request needing ``scopes``."""
        scheme = self._scheme
        if scheme == "basic":
            creds = self.credentials.get()
            return basic_authorization(creds) if creds is not None else None
        if scheme == "bearer":
            key = self._key(scopes)
            if key is None:
                return None
            with self._lock:
                token = self._tokens.get(key)
            if token is None or not token.valid():
                token = self._fetch(tuple(scopes), op, cache_as=(key,))
            return f"Bearer {token.value}"
        return None

    def on_unauthorized(
        self, header: str | None, scopes: Sequence[str], op: Operation
    ) -> str | None:
        """React to a 401: learn the challenge, get fresh credentials, and return the
        ``Authorization`` value to retry with — or None when retrying cannot help."""
        challenges = parse_www_authenticate(header)
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            with self._lock:
                self._scheme = "bearer"
                self._bearer = bearer
            merged = merge_scopes(scopes, bearer.scopes)
            keys = tuple(k for k in (self._key(scopes), self._key(merged)) if k is not None)
            token = self._fetch(merged, op, cache_as=keys, force=True)
            return f"Bearer {token.value}"
        if basic is not None:
            creds = self.credentials.get()
            if creds is None or creds.identity_token:
                return None
            with self._lock:
                self._scheme = "basic"
            return basic_authorization(creds)
        return None

    def _fetch(
        self,
        scopes: tuple[str, ...],
        op: Operation,
        *,
        cache_as: tuple[_TokenKey, ...],
        force: bool = False,
    ) -> Token:
        """Get a token from the realm and cache it under ``cache_as``. Without ``force``, a
        valid token another thread fetched meanwhile is reused."""
        bearer = self._bearer
        assert bearer is not None and bearer.realm
        with self._fetch_lock:
            if not force and cache_as:
                with self._lock:
                    cached = self._tokens.get(cache_as[0])
                if cached is not None and cached.valid():
                    return cached
            token = self._request_token(bearer, scopes, op)
            with self._lock:
                for key in cache_as:
                    self._tokens[key] = token
                self.token_fetches += 1
            return token

    def _refuse_downgrade(self, realm: str, op: Operation) -> None:
        """Raise InsecureRealmError when an HTTPS registry names a plain-HTTP realm."""
        if self.allow_plain_realm or self.endpoint.scheme != "https":
            return
        if urlsplit(realm).scheme.lower() != "https":
            raise InsecureRealmError(
                f"{op.what}: the HTTPS registry {self.endpoint.registry} names the plain-HTTP "
                f"token realm {redact_url(realm)}; refusing to send credentials or tokens "
                "over it unencrypted"
            )

    def _usable_realm(self, bearer: Challenge, scopes: tuple[str, ...], op: Operation) -> str:
        """The realm to ask, checked: an http(s) URL every parser reads alike, and not a
        plain-HTTP one for an HTTPS registry."""
        realm = bearer.realm or ""
        if not realm.startswith(("https://", "http://")) or url_problem(realm) is not None:
            raise auth_error(
                op,
                http_context("GET", redact_url(realm)),
                scopes,
                detail=f"the registry named an unusable token realm {realm!r}",
                registry=self.endpoint.registry,
            )
        self._refuse_downgrade(realm, op)
        return realm

    @staticmethod
    def _token_ask(
        realm: str, bearer: Challenge, scopes: tuple[str, ...], creds: Credentials | None
    ) -> _TokenAsk:
        """The OAuth2 form POST for an identity token, else the GET (Basic when there are
        credentials, anonymous otherwise)."""
        if creds is not None and creds.identity_token:
            form = (
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("service", bearer.service or ""),
                ("client_id", OAUTH_CLIENT_ID),
                ("scope", " ".join(scopes)),
            )
            return _TokenAsk("POST", realm, form=form)
        params = [("service", bearer.service)] if bearer.service else []
        params.extend(("scope", s) for s in scopes)
        # UTF-8, as docker sends it: requests' auth=(user, password) encodes Latin-1, which
        # fails on "пароль" and garbles "pässwörd"
        authorization = basic_authorization(creds) if creds is not None else None
        return _TokenAsk("GET", realm, params=tuple(params), authorization=authorization)

    def _request_token(self, bearer: Challenge, scopes: tuple[str, ...], op: Operation) -> Token:
        realm = self._usable_realm(bearer, scopes, op)
        creds = self.credentials.get()
        ask = self._token_ask(realm, bearer, scopes, creds)
        resp, body = self._exchange(ask, op)
        ctx = http_context(ask.method, resp.url or realm, resp.status_code, resp.headers, body)
        if resp.status_code in (401, 403):
            who = (
                f"user {creds.username!r}"
                if creds is not None and creds.username
                else ("the identity token" if creds is not None else "anonymous access")
            )
            raise auth_error(
                op,
                ctx,
                scopes,
                detail=f"the token server {redact_url(realm)} refused {who}",
                registry=self.endpoint.registry,
            )
        if resp.status_code != 200:
            raise UnexpectedHTTPStatusError(
                resp.status_code, what=f"{op.what}: requesting a token", http=ctx
            )
        return self._read_token(resp.status_code, body, ctx, realm, scopes, op)

    def _exchange(self, ask: _TokenAsk, op: Operation) -> tuple[requests.Response, bytes]:
        """Send ``ask`` and return the answer and its body, retrying broken exchanges and
        retryable answers (408/429/5xx) as the client's policy says, spending from the budget
        active in this context (one blob's) or from one of its own. A 401/403 is returned at
        once: asking again with the same credentials cannot help."""
        budget: RetryBudget | None = None

        def try_again(reason: str, retry_after: float | None = None) -> bool:
            nonlocal budget
            if budget is None:
                budget = active_budget() or self._policy.budget(f"{op.what}: requesting a token")
            return budget.try_again(f"{op.what}: the token request {reason}", retry_after)

        while True:
            try:
                resp, body = self._follow(ask, op)
            except requests.RequestException as exc:
                if self._worth_retrying(exc) and try_again(f"failed ({type(exc).__name__})"):
                    continue
                raise transport_error(op, ask.method, ask.url, exc) from exc
            status = resp.status_code
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retryable_status(status) and try_again(f"got HTTP {status}", retry_after):
                continue
            return resp, body

    def _follow(self, ask: _TokenAsk, op: Operation) -> tuple[requests.Response, bytes]:
        """Send ``ask``, following redirects on the realm's own origin only (requests would
        follow any, taking the form's refresh token along)."""
        hops = 0
        while True:
            resp = self._send_token_request(ask)
            body = self._read_answer(resp, ask, op, self._body_seconds())
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location or hops >= MAX_TOKEN_REDIRECTS:
                return resp, body  # a redirect left unfollowed is an unexpected status
            ask = self._redirected(ask, resp.status_code, location, op)
            hops += 1

    @staticmethod
    def _read_answer(
        resp: requests.Response, ask: _TokenAsk, op: Operation, seconds: float
    ) -> bytes:
        """The body of a (streamed) token-server answer, read with a bound and within
        ``seconds`` (else SlowBodyError, retried as a broken exchange), then closed: a 200
        past MAX_TOKEN_BODY is a RegistryError; other answers are only read as far as their
        error message needs (MAX_ERROR_BODY), the rest is dropped."""
        limit = MAX_TOKEN_BODY if resp.status_code == 200 else MAX_ERROR_BODY
        try:
            body, truncated = read_bounded(resp, limit, seconds, "token server")
        finally:  # (the connection dropped when the body was not read to its end)
            resp.close()
        body = body[:limit]
        if truncated and resp.status_code == 200:
            raise RegistryError(
                f"{op.what}: the token server {redact_url(ask.url)} sent an answer larger than "
                f"{MAX_TOKEN_BODY} bytes (a token answer is a few KiB); stopped reading it",
                http=http_context(ask.method, resp.url or ask.url, resp.status_code),
            )
        return body

    def _redirected(self, ask: _TokenAsk, status: int, location: str, op: Operation) -> _TokenAsk:
        """The request to send where the token server redirected ``ask``; AuthenticationError
        for a target off the realm's origin (another host, port or scheme: no HTTPS→HTTP)."""
        ctx = http_context(ask.method, ask.url, status)
        realm = redact_url(ask.url)
        try:
            target = resolve_target(ask.url, location)
        except ValueError as exc:
            raise AuthenticationError(
                f"{op.what}: the token server {realm} redirected to an unusable Location "
                f"({exc}); not following it",
                http=ctx,
            ) from None
        if not same_origin(target, ask.url):
            raise AuthenticationError(
                f"{op.what}: the token server {realm} redirected to {redact_url(target)}, "
                f"off its own origin; not sending the credentials for "
                f"{self.endpoint.registry} there",
                http=ctx,
            )
        # the target carries its own query; 307/308 keep the method and body, the others
        # turn into a plain GET (RFC 9110 15.4)
        if status in (307, 308):
            return replace(ask, url=target, params=())
        return replace(ask, method="GET", url=target, params=(), form=None)

    def _send_token_request(self, ask: _TokenAsk) -> requests.Response:
        return self._session.request(
            ask.method,
            ask.url,
            params=list(ask.params) or None,
            data=dict(ask.form) if ask.form is not None else None,
            headers={"User-Agent": self._user_agent, "Accept": "application/json"},
            auth=_SetAuthorization(ask.authorization) if ask.authorization else None,
            allow_redirects=False,
            # streamed, so that _read_answer decides how much of the answer to read
            stream=True,
            timeout=self._timeout,
            verify=self._verify,
            proxies=no_proxy_for(ask.url),
        )

    @staticmethod
    def _read_token(
        status: int,
        body: bytes,
        ctx: HTTPContext,
        realm: str,
        scopes: tuple[str, ...],
        op: Operation,
    ) -> Token:
        """The token of a 200 answer's ``body`` (UnexpectedHTTPStatusError when it holds
        none)."""
        try:
            doc = json.loads(body)
            value = doc.get("token") or doc.get("access_token")
            expires_in = _lifetime(doc.get("expires_in"))
        except (ValueError, AttributeError, TypeError, RecursionError):
            value, expires_in = None, MIN_TOKEN_LIFETIME
        if not isinstance(value, str) or not value:
            raise UnexpectedHTTPStatusError(
                status, what=f"{op.what}: the token server sent no token", http=ctx
            )
        lifetime = max(expires_in, MIN_TOKEN_LIFETIME)
        log.debug(
            "got a token from %s for %s (%d s)", redact_url(realm), " ".join(scopes), lifetime
        )
        return Token(value, time.monotonic() + lifetime - min(EXPIRY_MARGIN, lifetime / 5))


def _lifetime(expires_in: object) -> float:
    """``expires_in`` in seconds; MIN_TOKEN_LIFETIME when absent or not a finite number.

    Not-a-number must not pass: ``max(nan, 60.0)`` is nan, a token never valid, so every
    request would fetch one. A lifetime that cannot be read costs only the minimum lifetime,
    not the token it came with.
    """
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return MIN_TOKEN_LIFETIME
    try:
        seconds = float(expires_in)
    except (ValueError, OverflowError):  # "soon", or an integer past float's range
        return MIN_TOKEN_LIFETIME
    return seconds if math.isfinite(seconds) else MIN_TOKEN_LIFETIME
