"""The HTTP transport against a hostile registry (findings F3, F6, F7 and F8 of the hostile-
registry review): redirect loops and redirects without a ``Location`` say so; URLs a registry
names are shown cut short, and the suspect part of one refused for its characters is shown
escaped; the registry's cookies never reach another origin on the same host; a body read whole
that trickles in fails at its deadline as a retried TransportError, while a blob's stream does
not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import urllib3

from regstore.cli.output import hint_for
from regstore.client import Client
from regstore.digest import digest_bytes
from regstore.errors import (
    BlobNotFoundError,
    RegistryError,
    RegstoreError,
    RepositoryNotFoundError,
    TransportError,
    UnexpectedHTTPStatusError,
)
from regstore.manifest import OCI_MANIFEST
from regstore.testing.builders import build_image
from tests.support.fake_registry import ANY_QUERY, FakeRegistry

NAME = "a/b"
BLOB = b"0123456789"
BLOB_DIGEST = digest_bytes(BLOB)
BLOB_PATH = f"/v2/{NAME}/blobs/{BLOB_DIGEST}"
MANIFEST = build_image(media="oci", seed=7)
MANIFEST_HEADERS = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": MANIFEST.manifest_digest}

Factory = Callable[[], FakeRegistry]


@pytest.fixture
def make() -> Iterator[Callable[..., Client]]:
    """Clients that never sleep between retries and read no docker config."""
    clients: list[Client] = []

    def build(registry: FakeRegistry | str, **options: object) -> Client:
        options.setdefault("use_docker_config", False)
        options.setdefault("sleep", lambda _seconds: None)
        host = registry if isinstance(registry, str) else registry.host
        client = Client(host, **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def fetch_blob(client: Client) -> bytes:
    with client.get_blob(NAME, BLOB_DIGEST) as stream:
        return stream.read()


# -- F6: redirects that cannot be followed ---------------------------------------------------


def test_a_redirect_loop_says_the_redirect_limit_was_hit(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect_redirect("GET", BLOB_PATH, "{base}" + BLOB_PATH)
    fake_registry.expect("GET", BLOB_PATH, status=307, headers={"Location": BLOB_PATH}, times=None)
    with pytest.raises(RegistryError) as info:
        fetch_blob(make(fake_registry, retries=0))
    assert not isinstance(info.value, UnexpectedHTTPStatusError)
    assert "redirected more than 10 times (a loop?)" in str(info.value)
    assert len(fake_registry.requests_to("GET", BLOB_PATH)) == 11  # bounded as before


@pytest.mark.parametrize("location", [None, "", "   "])
def test_a_redirect_without_a_location_says_so(
    fake_registry: FakeRegistry, make: Callable[..., Client], location: str | None
) -> None:
    headers = {} if location is None else {"Location": location}
    fake_registry.expect("GET", BLOB_PATH, status=307, headers=headers)
    with pytest.raises(RegistryError) as info:
        fetch_blob(make(fake_registry, retries=0))
    assert "the registry answered 307 without a Location" in str(info.value)


# -- F7: registry-named URLs in messages ------------------------------------------------------


def test_a_huge_redirect_target_is_shown_cut_short_and_its_404_names_no_repository(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    far_path = "/" + "a" * 60_000
    fake_registry.expect_redirect("GET", BLOB_PATH, "{base}" + far_path)
    # the path the registry chose is in no repository: its "name unknown" is about that path
    fake_registry.expect(
        "GET",
        far_path,
        status=404,
        json={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]},
    )
    with pytest.raises(RegstoreError) as info:
        fetch_blob(make(fake_registry, retries=0))
    message = str(info.value)
    assert len(message) < 2_000
    assert f"({len(fake_registry.url) + len(far_path)} characters)" in message
    assert isinstance(info.value, BlobNotFoundError)


def test_name_unknown_from_the_repository_itself_still_names_the_repository(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect(
        "GET", BLOB_PATH, status=404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "no"}]}
    )
    with pytest.raises(RepositoryNotFoundError):
        fetch_blob(make(fake_registry, retries=0))


def test_a_target_refused_for_a_backslash_shows_the_backslash(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    # urllib3 would connect to 127.0.0.1:1, urlsplit (and so redaction) reads the other host
    trick = f"http://127.0.0.1:1\\@{fake_registry.host}{BLOB_PATH}"
    fake_registry.expect_redirect("GET", BLOB_PATH, trick)
    with pytest.raises(RegistryError) as info:
        fetch_blob(make(fake_registry, retries=0))
    message = str(info.value)
    assert "backslash" in message
    assert "127.0.0.1:1\\\\@127.0.0.1" in message  # the suspect part, escaped as repr does


def test_a_huge_target_refused_for_a_control_character_is_shown_short_and_escaped(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect_redirect("GET", BLOB_PATH, "{base}/v2/" + "b" * 60_000 + "\x1b[31mred")
    with pytest.raises(RegistryError) as info:
        fetch_blob(make(fake_registry, retries=0))
    message = str(info.value)
    assert len(message) < 2_000
    assert "\\x1b[31mred" in message and "\x1b" not in message


def test_shown_text_is_cut_short_with_its_length() -> None:
    from regstore.safetext import escaped, shortened

    assert shortened("short") == "short"
    assert shortened("x" * 500, 10) == "xxxxxxxxxx... (500 characters)"
    assert escaped("a\\b\x1b\u202e", 100) == "a\\\\b\\x1b\\u202e"


# -- F8: the registry's cookies stay on its origin --------------------------------------------


def test_cookies_are_not_sent_to_a_redirect_target_on_another_port(
    fake_registry_factory: Factory, make: Callable[..., Client]
) -> None:
    registry, storage = fake_registry_factory(), fake_registry_factory()
    registry.expect(
        "GET",
        BLOB_PATH,
        status=307,
        headers={
            "Location": f"{storage.url}/blob?sig=1",
            "Set-Cookie": "regsession=SECRET; Path=/",
        },
        times=2,
    )
    storage.expect("GET", "/blob", ANY_QUERY, body=BLOB, times=2)
    client = make(registry)
    assert fetch_blob(client) == BLOB
    assert fetch_blob(client) == BLOB
    assert [r.headers.get("Cookie") for r in registry.requests] == [None, "regsession=SECRET"]
    assert [r.headers.get("Cookie") for r in storage.requests] == [None, None]


def test_cookies_are_not_sent_elsewhere_through_a_session_of_the_callers(
    fake_registry_factory: Factory, make: Callable[..., Client]
) -> None:
    registry, storage = fake_registry_factory(), fake_registry_factory()
    registry.expect(
        "GET",
        BLOB_PATH,
        status=307,
        headers={"Location": f"{storage.url}/blob", "Set-Cookie": "regsession=SECRET; Path=/"},
        times=2,
    )
    storage.expect("GET", "/blob", body=BLOB, times=2)
    client = make(registry, session=requests.Session())
    assert fetch_blob(client) == BLOB
    assert fetch_blob(client) == BLOB
    assert registry.requests[1].headers.get("Cookie") == "regsession=SECRET"
    assert [r.headers.get("Cookie") for r in storage.requests] == [None, None]


def test_cookies_do_not_cross_between_the_registry_and_a_token_realm_on_the_same_host(
    fake_registry_factory: Factory, make: Callable[..., Client]
) -> None:
    registry, realm = fake_registry_factory(), fake_registry_factory()
    v1, v2 = f"/v2/{NAME}/manifests/v1", f"/v2/{NAME}/manifests/v2"
    registry.expect(
        "GET",
        v1,
        headers={**MANIFEST_HEADERS, "Set-Cookie": "regsession=SECRET; Path=/"},
        body=MANIFEST.manifest_bytes,
    )
    challenge = f'Bearer realm="{realm.url}/token",service="svc"'
    registry.expect("GET", v2, status=401, headers={"WWW-Authenticate": challenge})
    registry.expect("GET", v2, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes)
    realm.expect(
        "GET",
        "/token",
        ANY_QUERY,
        headers={"Set-Cookie": "realmsession=REALM"},
        json={"token": "t1", "expires_in": 600},
    )
    client = make(registry)
    client.get_image_manifest(NAME, "v1")
    client.get_image_manifest(NAME, "v2")
    [token_request] = realm.requests
    assert token_request.headers.get("Cookie") is None
    last = registry.requests_to("GET", v2)[-1]
    assert last.headers.get("Authorization") == "Bearer t1"
    assert last.headers.get("Cookie") == "regsession=SECRET"  # not the realm's


# -- F3: a body read whole has an overall deadline --------------------------------------------


class _Drip(ThreadingHTTPServer):
    """Answers every GET with ``body``, one byte every ``interval`` seconds."""

    daemon_threads = True

    def __init__(self, body: bytes, headers: dict[str, str], interval: float) -> None:
        super().__init__(("127.0.0.1", 0), _DripHandler)
        self.body, self.headers, self.interval = body, headers, interval
        self.gets = 0
        self.stopping = threading.Event()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _DripHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Drip

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        drip = self.server
        drip.gets += 1
        self.send_response(200)
        for key, value in {**drip.headers, "Content-Length": str(len(drip.body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        try:
            for byte in drip.body:
                if drip.stopping.wait(drip.interval):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass


@pytest.fixture
def drip() -> Iterator[Callable[[bytes, dict[str, str], float], _Drip]]:
    servers: list[_Drip] = []

    def start(body: bytes, headers: dict[str, str], interval: float) -> _Drip:
        server = _Drip(body, headers, interval)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def test_a_manifest_that_trickles_in_fails_at_the_deadline_and_is_retried(
    drip: Callable[[bytes, dict[str, str], float], _Drip], make: Callable[..., Client]
) -> None:
    # every wait is far under the read timeout; the whole body would take 50 x 0.1 s
    body = MANIFEST.manifest_bytes[:50]
    server = drip(body, MANIFEST_HEADERS, 0.1)
    client = make(server.host, timeout=(10.0, 5.0), retries=1)
    client.transport.options.body_deadline = 0.5
    with pytest.raises(TransportError) as info:
        client.get_image_manifest(NAME, "v1")
    message = str(info.value)
    assert "registry too slow:" in message
    assert "of 50 bytes in 0.5 s" in message
    assert server.gets == 2  # transient: the retry budget spent its one retry on it


def test_the_body_deadline_is_an_option_of_the_transport(
    drip: Callable[[bytes, dict[str, str], float], _Drip], make: Callable[..., Client]
) -> None:
    server = drip(MANIFEST.manifest_bytes[:50], MANIFEST_HEADERS, 0.1)
    client = make(server.host, retries=0)  # the read timeout stays 300 s
    client.transport.options.body_deadline = 0.4
    with pytest.raises(TransportError, match=r"registry too slow: \d+ of 50 bytes in 0\.4 s"):
        client.get_image_manifest(NAME, "v1")


def test_a_token_answer_that_trickles_in_fails_at_the_deadline_and_is_retried(
    drip: Callable[[bytes, dict[str, str], float], _Drip],
    fake_registry: FakeRegistry,
    make: Callable[..., Client],
) -> None:
    # a token server sending its answer a byte at a time held the request for ever: its body
    # was read with no overall deadline (only each wait bounded by the read timeout)
    token = b'{"token": "t1", "expires_in": 600, "padding": "' + b"x" * 40 + b'"}'
    realm = drip(token, {"Content-Type": "application/json"}, 0.1)
    v1 = f"/v2/{NAME}/manifests/v1"
    challenge = f'Bearer realm="http://{realm.host}/token",service="svc"'
    fake_registry.expect("GET", v1, status=401, headers={"WWW-Authenticate": challenge}, times=None)
    client = make(fake_registry, timeout=(10.0, 5.0), retries=1)
    client.transport.options.body_deadline = 0.5
    with pytest.raises(TransportError) as info:
        client.get_image_manifest(NAME, "v1")
    message = str(info.value)
    assert "token server too slow:" in message  # not the registry: another host, maybe
    assert f"of {len(token)} bytes in 0.5 s" in message
    assert realm.gets == 2  # transient: the retry budget spent its one retry on it
    assert "token server answers, but sends too slowly" in hint_for(info.value)


def test_a_blob_stream_has_no_overall_deadline(
    drip: Callable[[bytes, dict[str, str], float], _Drip], make: Callable[..., Client]
) -> None:
    # a slow link is legitimate for a blob: 10 bytes over about 1 s, past a 0.5 s deadline
    server = drip(BLOB, {"Content-Type": "application/octet-stream"}, 0.1)
    client = make(server.host, timeout=(10.0, 5.0), retries=0)
    client.transport.options.body_deadline = 0.5
    assert fetch_blob(client) == BLOB  # (ten waits of 0.1 s: past a body's 0.5 s deadline)


def test_a_registry_that_refuses_connections_is_tried_as_often_as_retries_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # urllib3's own connect retries (with backoff) ran inside each of regstore's: six times
    # six attempts, and 108 s before a push to a registry that was down failed
    attempts: list[int] = []

    def refused(self: urllib3.connection.HTTPConnection) -> Any:
        attempts.append(1)
        raise urllib3.exceptions.NewConnectionError(self, "Connection refused (injected)")

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "_new_conn", refused)
    pauses: list[float] = []
    client = Client("127.0.0.1:9", retries=2, use_docker_config=False, sleep=pauses.append)
    with client, pytest.raises(TransportError):
        client.get_image_manifest(NAME, "v1")
    assert len(attempts) == 3  # the first and two retries
    assert len(pauses) == 2
