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
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from regstore.client.challenge import Challenge, merge_scopes, parse_www_authenticate
from regstore.client.credentials import CredentialResolver, Credentials
from regstore.client.errors_map import Operation, auth_error, http_context, transport_error
from regstore.client.urls import Endpoint, no_proxy_for, redact_url
from regstore.errors import InsecureRealmError, UnexpectedHTTPStatusError

__all__ = ["MIN_TOKEN_LIFETIME", "Authenticator", "Token", "basic_authorization"]

log = logging.getLogger("regstore.client.auth")

#: Tokens live at least this long (docker raises shorter ``expires_in`` values to 60 s).
MIN_TOKEN_LIFETIME = 60.0
#: Tokens are renewed this long before they expire.
EXPIRY_MARGIN = 10.0
OAUTH_CLIENT_ID = "regstore"


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
    ) -> None:
        """``allow_plain_realm``: follow a plain-HTTP realm of an HTTPS registry (only for a
        client that does not verify TLS: it has given up the protection this keeps)."""
        self.endpoint = endpoint
        self.allow_plain_realm = allow_plain_realm
        self.credentials = credentials
        self._session = session
        self._timeout = timeout
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

    def _request_token(self, bearer: Challenge, scopes: tuple[str, ...], op: Operation) -> Token:
        realm = bearer.realm or ""
        if not realm.startswith(("https://", "http://")):
            raise auth_error(
                op,
                http_context("GET", redact_url(realm)),
                scopes,
                detail=f"the registry named an unusable token realm {realm!r}",
                registry=self.endpoint.registry,
            )
        self._refuse_downgrade(realm, op)
        creds = self.credentials.get()
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        method = "GET"
        try:
            if creds is not None and creds.identity_token:
                method = "POST"
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "service": bearer.service or "",
                    "client_id": OAUTH_CLIENT_ID,
                    "scope": " ".join(scopes),
                }
                resp = self._session.post(
                    realm,
                    data=form,
                    headers=headers,
                    timeout=self._timeout,
                    proxies=no_proxy_for(realm),
                )
            else:
                params: list[tuple[str, str]] = []
                if bearer.service:
                    params.append(("service", bearer.service))
                params.extend(("scope", s) for s in scopes)
                auth = (creds.username, creds.password) if creds is not None else None
                resp = self._session.get(
                    realm,
                    params=params,
                    auth=auth,
                    headers=headers,
                    timeout=self._timeout,
                    proxies=no_proxy_for(realm),
                )
            body = resp.content
        except requests.RequestException as exc:
            raise transport_error(op, method, realm, exc) from exc
        ctx = http_context(method, resp.url or realm, resp.status_code, resp.headers, body)
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
        try:
            doc = resp.json()
            value = doc.get("token") or doc.get("access_token")
            expires_in = float(doc.get("expires_in") or MIN_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value, expires_in = None, MIN_TOKEN_LIFETIME
        if not isinstance(value, str) or not value:
            raise UnexpectedHTTPStatusError(
                resp.status_code, what=f"{op.what}: the token server sent no token", http=ctx
            )
        lifetime = max(expires_in, MIN_TOKEN_LIFETIME)
        log.debug(
            "got a token from %s for %s (%d s)", redact_url(realm), " ".join(scopes), lifetime
        )
        return Token(value, time.monotonic() + lifetime - min(EXPIRY_MARGIN, lifetime / 5))
