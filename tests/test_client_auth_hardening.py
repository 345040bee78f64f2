"""Credentials stay with the registry, and token requests are as sturdy as the rest.

Against real registries (docker-registry, with htpasswd or token auth) behind the fault proxy,
and small servers of this file for the hostile answers (a sink that records what reaches it, a
token realm that redirects, an HTTPS registry front):

- a ``Location`` or ``Link`` with a backslash (``http://other:P\\@registry/...``), which
  urlsplit reads as the registry and urllib3 (which sends) as ``other``, is never requested
  with the registry's credentials;
- a token realm's redirect to another origin (or from HTTPS to HTTP) is not followed;
- non-ASCII passwords get tokens (Basic in UTF-8, as docker sends it);
- token-server failures (503 with ``Retry-After``, 429, a dropped connection) are retried by
  the client's retry policy, bounded and capped; a refusal (401) is not;
- a malformed ``Location`` is a RegistryError naming the request, never a bare ValueError.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regstore.client import Client
from regstore.client.urls import same_origin
from regstore.digest import digest_bytes
from regstore.errors import (
    AuthenticationError,
    PagingError,
    RegistryError,
    UnexpectedHTTPStatusError,
)
from regstore.testing.builders import random_blob
from tests.support.ports import LoopbackHTTPServer, QuietHandler, read_request_body
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.support.token_server import TokenServer
from tests.test_client_registry import upload

# -- small servers of our own ------------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Seen:
    """One request a :class:`Hostile` server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(QuietHandler):
    server: Hostile

    def _any(self) -> None:
        seen = Seen(self.command, self.path, dict(self.headers.items()), read_request_body(self))
        self.server.seen.append(seen)
        status, headers, body = self.server.answer(seen)
        self.send_simple(status, body, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any


class Hostile(LoopbackHTTPServer):
    """Records every request and answers it with ``answer(seen)``."""

    def __init__(self, answer: Callable[[Seen], Answer]) -> None:
        super().__init__(_Handler)
        self.answer = answer
        self.seen: list[Seen] = []


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    """Start :class:`Hostile` servers: ``hostile(answer, tls=None)``; stopped afterwards."""
    servers: list[Hostile] = []

    def start(
        answer: Callable[[Seen], Answer] = lambda seen: (500, {}, b""),
        tls: ssl.SSLContext | None = None,
    ) -> Hostile:
        server = Hostile(answer)
        if tls is not None:  # the handshake happens on accept, in the server's thread
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        servers.append(server.start())
        return server

    yield start
    for server in reversed(servers):
        server.stop()


def _self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 (its own CA) and a server context serving it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def _backslash_url(sink: Hostile, registry_host: str, path: str) -> str:
    """urlsplit reads ``registry_host`` here; urllib3 (which sends) reads the sink."""
    return f"http://{sink.host}\\@{registry_host}{path}"


def _docker_config(directory: Path, registry: str, entry: dict[str, str]) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": {registry: entry}}))
    return path


def _token_registry(
    registry_factory: Callable[..., RegistryServer], token_server: TokenServer, realm: str
) -> RegistryServer:
    """A token-auth registry whose challenge names ``realm`` (tokens from ``token_server``)."""
    return registry_factory(
        auth="token",
        token_server=token_server,
        extra_config={"auth": {"token": {"realm": realm}}},
    )


# -- 1. a backslash never steers credentials to another host ---------------------------------


def test_same_origin_reads_hosts_as_the_sending_library_does() -> None:
    registry = "http://127.0.0.1:5000"
    assert not same_origin("http://127.0.0.1:81\\@127.0.0.1:5000/v2/x", registry)
    assert not same_origin("http://127.0.0.1:5000\t@127.0.0.1:5000/v2/x", registry)
    assert same_origin("http://127.0.0.1:5000/v2/x?last=a", registry)
    assert same_origin("http://[::1]:80/v2/", "http://[::1]/")


def test_blob_redirect_through_a_backslash_sends_no_credentials_elsewhere(
    basic_registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    hostile: Callable[..., Hostile],
) -> None:
    sink = hostile()
    user, password = basic_registry.username, basic_registry.password
    data = random_blob(10_000, seed=901)
    digest = upload(
        Client(basic_registry.host, username=user, password=password, use_docker_config=False),
        "hb/app",
        data,
    )
    proxy = fault_proxy_factory(basic_registry)
    client = Client(proxy.host, username=user, password=password, use_docker_config=False)
    client.ping()  # Basic is known from here on: the blob GET carries it
    location = _backslash_url(sink, proxy.host, f"/v2/hb/app/blobs/{digest}")
    proxy.override_status("GET", r"/blobs/sha256:", 307, times=None, headers={"Location": location})
    with pytest.raises(RegistryError) as info:
        client.fetch_blob("hb/app", digest)
    assert sink.seen == []
    assert "redirected" in str(info.value) and "backslash" in str(info.value)
    assert info.value.http is not None and info.value.http.method == "GET"
    assert info.value.http.status == 307


def test_upload_location_through_a_backslash_sends_no_token_or_bytes_elsewhere(
    token_registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    hostile: Callable[..., Hostile],
) -> None:
    sink = hostile()
    proxy = fault_proxy_factory(token_registry)
    client = Client(
        proxy.host,
        username=token_registry.username,
        password=token_registry.password,
        use_docker_config=False,
    )
    client.ping()  # Bearer is known from here on: the POST and what follows carry a token
    location = _backslash_url(sink, proxy.host, "/v2/hu/app/blobs/uploads/u1?_state=s")
    proxy.override_status("POST", r"/blobs/uploads/", 202, headers={"Location": location})
    data = random_blob(5_000, seed=902)
    with pytest.raises(RegistryError) as info:
        session = client.initiate_blob_upload("hu/app")
        assert session.location is not None
        client.upload_blob(session.location, data, len(data), digest_bytes(data))
    assert sink.seen == []
    assert "upload Location" in str(info.value)
    assert info.value.http is not None and info.value.http.method == "POST"


def test_next_page_link_through_a_backslash_is_not_followed(
    basic_registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    hostile: Callable[..., Hostile],
) -> None:
    sink = hostile()
    proxy = fault_proxy_factory(basic_registry)
    client = Client(
        proxy.host,
        username=basic_registry.username,
        password=basic_registry.password,
        use_docker_config=False,
    )
    client.ping()
    link = _backslash_url(sink, proxy.host, "/v2/hl/app/tags/list?last=a&n=1")
    proxy.override_status(
        "GET",
        r"/tags/list$",
        200,
        times=2,
        headers={"Content-Type": "application/json", "Link": f'<{link}>; rel="next"'},
        body=json.dumps({"name": "hl/app", "tags": ["a"]}),
    )
    try:
        tags = client.list_image_tags("hl/app")
        # a caller that deletes what the list lacks (sync's prune) is told it was cut short
        with pytest.raises(PagingError, match=r"another origin.*may lack names after the 1 read"):
            client.list_image_tags("hl/app", complete=True)
    finally:
        assert sink.seen == []
    assert tags == ["a"]


# -- 2. a token realm's redirect stays on the realm's origin ------------------------------------


def test_identity_token_does_not_follow_a_realm_redirect_to_another_origin(
    token_server: TokenServer,
    registry_factory: Callable[..., RegistryServer],
    hostile: Callable[..., Hostile],
    tmp_path: Path,
) -> None:
    other = hostile(lambda seen: (401, {}, b"{}"))
    realm = hostile(lambda seen: (307, {"Location": f"{other.url}/token"}, b""))
    registry = _token_registry(registry_factory, token_server, f"{realm.url}/token")
    config = _docker_config(tmp_path, registry.host, {"identitytoken": "REFRESH-SECRET-1"})
    client = Client(registry.host, docker_config=config, retries=0)
    with pytest.raises(AuthenticationError) as info:
        client.ping()
    assert other.seen == []
    assert [s.method for s in realm.seen] == ["POST"]
    assert b"REFRESH-SECRET-1" in realm.seen[0].body
    assert "off its own origin" in str(info.value)


def _https_registry(
    hostile: Callable[..., Hostile], tls: ssl.SSLContext, token: Callable[[Seen], Answer]
) -> Hostile:
    """One HTTPS server that is both a registry (``/v2/``: 200 with the Bearer token ``T``,
    else its challenge) and that registry's token realm (``/token``: ``token(seen)``)."""
    realm: list[str] = []

    def answer(seen: Seen) -> Answer:
        if seen.path.startswith("/v2/"):
            if seen.headers.get("Authorization") == "Bearer T":
                return 200, {"Content-Type": "application/json"}, b"{}"
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm[0]}",service="svc"'}, b""
        return token(seen)

    server = hostile(answer, tls=tls)
    realm.append(f"https://{server.host}/token")
    return server


def test_identity_token_does_not_follow_a_realm_redirect_from_https_to_http(
    hostile: Callable[..., Hostile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, tls = _self_signed(tmp_path)
    # trusted the way every request trusts it, before and after the fix
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    plain = hostile(lambda seen: (401, {}, b"{}"))
    # the same host and path, but plain HTTP (on another port)
    moved = (307, {"Location": f"http://127.0.0.1:{plain.port}/token"}, b"")
    server = _https_registry(hostile, tls, lambda seen: moved)
    config = _docker_config(tmp_path, server.host, {"identitytoken": "REFRESH-SECRET-2"})
    client = Client(server.host, plain_http=False, docker_config=config, retries=0)
    with pytest.raises(AuthenticationError):
        client.ping()
    assert plain.seen == []
    assert [s.path for s in server.seen] == ["/v2/", "/token"]


def test_the_token_realm_is_trusted_as_the_registry_is(
    hostile: Callable[..., Hostile], tmp_path: Path
) -> None:
    cert, tls = _self_signed(tmp_path)
    token = (200, {"Content-Type": "application/json"}, b'{"token": "T"}')
    server = _https_registry(hostile, tls, lambda seen: token)
    client = Client(
        server.host, plain_http=False, verify=str(cert), use_docker_config=False, retries=0
    )
    client.ping()
    assert [s.path for s in server.seen] == ["/v2/", "/token?service=svc", "/v2/"]


def test_a_realm_redirect_on_its_own_origin_is_followed(
    token_server: TokenServer,
    registry_factory: Callable[..., RegistryServer],
    hostile: Callable[..., Hostile],
) -> None:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def realm(seen: Seen) -> Answer:
        path, _, query = seen.path.partition("?")
        if path == "/token":  # moved: ask the same server elsewhere, keeping the query
            return 307, {"Location": f"/moved?{query}"}, b""
        headers = {"Authorization": seen.headers.get("Authorization", "")}
        ask = urllib.request.Request(f"{token_server.realm}?{query}", headers=headers)
        with direct.open(ask, timeout=10) as resp:
            return resp.status, {"Content-Type": "application/json"}, resp.read()

    front = hostile(realm)
    registry = _token_registry(registry_factory, token_server, f"{front.url}/token")
    client = Client(
        registry.host,
        username=registry.username,
        password=registry.password,
        use_docker_config=False,
    )
    data = random_blob(3_000, seed=903)
    assert client.fetch_blob("hr/app", upload(client, "hr/app", data)) == data
    paths = [s.path.partition("?")[0] for s in front.seen]
    assert "/moved" in paths and paths.count("/token") == paths.count("/moved")
    assert all("Authorization" in s.headers for s in front.seen)


# -- 3. non-ASCII passwords ----------------------------------------------------------------------


# Cyrillic on purpose: Latin-1 cannot encode it (requests' auth= raised UnicodeEncodeError)
PASSWORDS = [("olga", "пароль123"), ("jens", "pässwörd")]  # noqa: RUF001


@pytest.mark.parametrize(("user", "password"), PASSWORDS)
def test_non_ascii_passwords_get_tokens(
    token_server_factory: Callable[..., TokenServer],
    registry_factory: Callable[..., RegistryServer],
    user: str,
    password: str,
) -> None:
    tokens = token_server_factory(users={user: password})
    registry = registry_factory(auth="token", token_server=tokens)
    client = Client(registry.host, username=user, password=password, use_docker_config=False)
    data = random_blob(2_000, seed=904)
    assert client.fetch_blob("na/app", upload(client, "na/app", data)) == data


# -- 4. token-server failures go through the retry policy ----------------------------------------


@pytest.fixture
def token_proxy(
    token_server: TokenServer,
    registry_factory: Callable[..., RegistryServer],
    fault_proxy_factory: Callable[..., FaultProxy],
) -> tuple[RegistryServer, FaultProxy]:
    """A token-auth registry whose realm is behind a fault proxy: (registry, proxy)."""
    proxy = fault_proxy_factory(token_server)
    return _token_registry(registry_factory, token_server, f"{proxy.url}/token"), proxy


def _client(registry: RegistryServer, sleeps: list[float], **options: object) -> Client:
    return Client(
        registry.host,
        username=registry.username,
        password=registry.password,
        use_docker_config=False,
        backoff=0.01,
        sleep=sleeps.append,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("fault", ["503", "429", "drop"])
def test_a_failing_token_request_is_retried(
    token_proxy: tuple[RegistryServer, FaultProxy], fault: str
) -> None:
    registry, proxy = token_proxy
    if fault == "503":
        proxy.override_status("GET", r"^/token$", 503, headers={"Retry-After": "1"})
    elif fault == "429":
        proxy.rate_limit("GET", r"^/token$", retry_after=1)
    else:
        proxy.drop_connection("GET", r"^/token$")
    sleeps: list[float] = []
    client = _client(registry, sleeps)
    data = random_blob(2_000, seed=905)
    assert client.fetch_blob("tr/app", upload(client, "tr/app", data)) == data
    assert proxy.count("GET", r"^/token$") >= 3  # the failed one, its retry, the pull token
    assert len(sleeps) == 1
    if fault != "drop":
        assert sleeps == [1.0]  # Retry-After honoured


def test_token_retries_are_bounded_and_retry_after_capped(
    token_proxy: tuple[RegistryServer, FaultProxy],
) -> None:
    registry, proxy = token_proxy
    proxy.override_status("GET", r"^/token$", 503, times=None, headers={"Retry-After": "3600"})
    sleeps: list[float] = []
    client = _client(registry, sleeps, retries=2, max_retry_after=1.5)
    with pytest.raises(UnexpectedHTTPStatusError) as info:
        client.ping()
    assert info.value.status == 503 and "requesting a token" in str(info.value)
    assert proxy.count("GET", r"^/token$") == 3
    assert sleeps == [1.5, 1.5]


def test_a_refused_token_request_is_not_retried(
    token_proxy: tuple[RegistryServer, FaultProxy],
) -> None:
    registry, proxy = token_proxy
    sleeps: list[float] = []
    client = Client(
        registry.host,
        username=registry.username,
        password="not-the-password",
        use_docker_config=False,
        sleep=sleeps.append,
    )
    with pytest.raises(AuthenticationError):
        client.ping()
    assert proxy.count("GET", r"^/token$") == 1 and sleeps == []


# -- 5. a malformed Location is a RegistryError with its request ---------------------------------


def test_a_malformed_redirect_location_is_a_registry_error(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    data = random_blob(1_000, seed=906)
    digest = upload(Client(registry.host, use_docker_config=False), "ml/app", data)
    proxy = fault_proxy_factory(registry)
    proxy.override_status("GET", r"/blobs/sha256:", 307, headers={"Location": "http://[::1"})
    client = Client(proxy.host, use_docker_config=False)
    with pytest.raises(RegistryError) as info:
        client.fetch_blob("ml/app", digest)
    assert info.value.http is not None and info.value.http.method == "GET"
    assert f"{proxy.host}/v2/ml/app/blobs/{digest}" in info.value.http.url
    assert proxy.host in str(info.value)


@pytest.mark.parametrize(
    "location", ["http://[oops/x", "ftp://127.0.0.1/v2/ml/app/blobs/uploads/1"]
)
def test_a_malformed_upload_location_is_a_registry_error(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy], location: str
) -> None:
    proxy = fault_proxy_factory(registry)
    proxy.override_status("POST", r"/blobs/uploads/", 202, headers={"Location": location})
    client = Client(proxy.host, use_docker_config=False)
    with pytest.raises(RegistryError) as info:
        client.initiate_blob_upload("ml/app")
    assert info.value.http is not None and info.value.http.method == "POST"
    assert proxy.host in str(info.value)


def test_a_malformed_location_after_a_chunk_is_a_registry_error(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(registry)
    client = Client(proxy.host, use_docker_config=False)
    session = client.initiate_blob_upload("ml/app")
    assert session.location is not None
    proxy.override_status(
        "PATCH", r"/blobs/uploads/", 202, headers={"Location": "http://[oops", "Range": "0-9"}
    )
    with pytest.raises(RegistryError) as info:
        client.upload_blob_chunk(session.location, b"0123456789", 10, 0)
    assert info.value.http is not None and info.value.http.method == "PATCH"


def test_an_upload_location_of_another_scheme_is_a_registry_error(
    registry: RegistryServer,
) -> None:
    client = Client(registry.host, use_docker_config=False)
    with pytest.raises(RegistryError) as info:
        client.upload_blob("ftp://127.0.0.1/v2/ml/app/blobs/uploads/1", b"x", 1, digest_bytes(b"x"))
    assert info.value.http is not None and info.value.http.method == "PUT"
