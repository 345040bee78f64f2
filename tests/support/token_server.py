"""A small Docker token-auth server (the ``auth.token.realm`` of a test registry).

Flow implemented (Docker "token authentication specification", GET form only)::

    GET /token?service=<svc>&scope=repository:<name>:pull,push&scope=...
        [Authorization: Basic base64(user:pass)]

- Valid credentials: every requested action of every requested scope is granted (a custom
  ``grant`` policy can restrict that).
- Wrong credentials (unknown user, bad password, or a non-Basic scheme): 401.
- No credentials: an anonymous token, which grants only ``pull`` on repository scopes when
  ``anonymous_pull`` is true, and no access at all otherwise (the registry then refuses it).

Tokens are ES256 JWTs signed with a key whose self-signed certificate is written to
:attr:`TokenServer.cert_path` (the registry's ``rootcertbundle``) and carried in the JWT
header as ``x5c``; docker-registry 2.8 accepts such a token when that certificate is in its
root bundle. The response is ``{"token", "access_token", "expires_in", "issued_at"}``.

Every request is logged in :attr:`TokenServer.requests` so tests can count token fetches.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .ports import LoopbackHTTPServer, QuietHandler, read_request_body

__all__ = ["GrantPolicy", "Scope", "TokenRequest", "TokenServer", "parse_scope"]

DEFAULT_SERVICE = "regstore-test-registry"
DEFAULT_ISSUER = "regstore-test-issuer"


@dataclass(frozen=True)
class Scope:
    """One requested resource scope: ``type:name:action[,action]``."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scope(text: str) -> Scope | None:
    """Parse one scope; ``None`` when it is malformed.

    The resource name may itself contain one ``:`` (a registry host:port), so the type is cut
    at the first colon and the actions at the last one.
    """
    first = text.find(":")
    last = text.rfind(":")
    if first <= 0 or last == first:
        return None
    actions = tuple(a for a in text[last + 1 :].split(",") if a)
    return Scope(text[:first], text[first + 1 : last], actions)


class TokenRequest(NamedTuple):
    """One request seen by the token server: ``(path, query, had_auth)``."""

    path: str
    query: str
    had_auth: bool

    @property
    def params(self) -> dict[str, list[str]]:
        """The query string parsed into lists of values."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def scopes(self) -> list[str]:
        """The requested scopes, one string each (space-joined scope values split apart)."""
        return [s for value in self.params.get("scope", []) for s in value.split()]


#: ``grant(username_or_None, scope) -> granted actions``; ``None`` user means anonymous.
GrantPolicy = Callable[[str | None, Scope], Sequence[str]]


class _TokenHandler(QuietHandler):
    server: TokenServer

    def do_GET(self) -> None:
        self.server._handle(self)

    def do_POST(self) -> None:
        # The OAuth2 POST form is not implemented: 404 is what a GET-only token server answers,
        # and clients are expected to fall back to GET.
        read_request_body(self)
        self.server._record(self)
        self.send_simple(
            404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"}
        )

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_POST


class TokenServer(LoopbackHTTPServer):
    """Threaded token server on 127.0.0.1; start with :meth:`start` (or ``with``).

    Attributes tests use: :attr:`realm` (the token URL), :attr:`service`, :attr:`issuer`,
    :attr:`cert_path`, :attr:`users` (mutable), :attr:`anonymous_pull`, :attr:`expires_in`
    (both mutable at runtime), :attr:`requests` (the request log) and :attr:`token_count`.
    """

    def __init__(
        self,
        workdir: str | Path,
        users: dict[str, str] | None = None,
        *,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        anonymous_pull: bool = False,
        expires_in: int = 300,
        grant: GrantPolicy | None = None,
        path: str = "/token",
    ) -> None:
        super().__init__(_TokenHandler)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users: dict[str, str] = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.anonymous_pull = anonymous_pull
        self.expires_in = expires_in
        self.grant = grant
        self.token_path = path
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = self._self_signed_certificate()
        self.cert_path = self.workdir / "token-cert.pem"
        self.cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(
            self.certificate.public_bytes(serialization.Encoding.DER)
        ).decode()

    # -- public API ----------------------------------------------------------------------------
    @property
    def realm(self) -> str:
        """The token endpoint URL (``auth.token.realm`` of the registry)."""
        return f"{self.url}{self.token_path}"

    @property
    def token_count(self) -> int:
        """How many GET requests reached the token endpoint."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == self.token_path)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` token requests with ``status`` (no token)."""
        with self._lock:
            self._failures.extend([status] * count)

    def mint_token(
        self,
        access: Sequence[dict[str, Any]],
        *,
        subject: str = "",
        audience: str | None = None,
        expires_in: int | None = None,
        issuer: str | None = None,
        not_before: int | None = None,
    ) -> str:
        """Sign a token directly (for tests that need expired, foreign or odd tokens)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience or self.service,
            "exp": now + (self.expires_in if expires_in is None else expires_in),
            "nbf": now - 1 if not_before is None else not_before,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [dict(a) for a in access],
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})

    # -- internals -----------------------------------------------------------------------------
    def _self_signed_certificate(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regstore test token issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def _record(self, handler: QuietHandler) -> None:
        parts = urlsplit(handler.path)
        with self._lock:
            self.requests.append(
                TokenRequest(
                    parts.path, parts.query, handler.headers.get("Authorization") is not None
                )
            )

    def _granted(self, user: str | None, scope: Scope) -> list[str]:
        if self.grant is not None:
            return list(self.grant(user, scope))
        if user is not None:
            return list(scope.actions)
        if self.anonymous_pull and scope.type == "repository" and "pull" in scope.actions:
            return ["pull"]
        return []

    def _authenticate(self, header: str | None) -> tuple[bool, str | None]:
        """Return (ok, username); username ``None`` means anonymous."""
        if header is None:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return False, None
        if not sep or self.users.get(user) != password:
            return False, None
        return True, user

    def _handle(self, handler: _TokenHandler) -> None:
        self._record(handler)
        parts = urlsplit(handler.path)
        if parts.path != self.token_path:
            handler.send_simple(
                404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"}
            )
            return
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            body = json.dumps(
                {"errors": [{"code": "UNAVAILABLE", "message": "injected failure"}]}
            ).encode()
            handler.send_simple(failure, body, {"Content-Type": "application/json"})
            return
        ok, user = self._authenticate(handler.headers.get("Authorization"))
        if not ok:
            body = json.dumps({"details": "incorrect username or password"}).encode()
            handler.send_simple(
                401,
                body,
                {
                    "Content-Type": "application/json",
                    "WWW-Authenticate": f'Basic realm="{self.realm}"',
                },
            )
            return
        params = parse_qs(parts.query, keep_blank_values=True)
        service = (params.get("service") or [self.service])[0]
        access: list[dict[str, Any]] = []
        for value in params.get("scope", []):
            for text in value.split():
                scope = parse_scope(text)
                if scope is None:
                    continue
                actions = self._granted(user, scope)
                if actions:  # like Docker's auth server: scopes with nothing granted are left out
                    access.append({"type": scope.type, "name": scope.name, "actions": actions})
        token = self.mint_token(access, subject=user or "", audience=service)
        issued = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps(
            {
                "token": token,
                "access_token": token,
                "expires_in": self.expires_in,
                "issued_at": issued,
            }
        ).encode()
        handler.send_simple(200, body, {"Content-Type": "application/json"})
