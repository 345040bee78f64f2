"""A hostile registry must not choose how much the client buffers, nor make tokens useless.

- The token realm is any URL the registry names. A token answer past ``MAX_TOKEN_BODY`` is a
  RegistryError naming the bound and the realm, and the client stops reading it there; the
  body of a refusal is read only as far as its error message needs.
- An ``expires_in`` that is not a finite number (``NaN``), or cannot be read at all, counts as
  absent: the token is kept for the minimum lifetime, not fetched again for every request.
- Tag and catalog listings keep invalid names only up to ``INVALID_NAMES_KEPT`` characters;
  past that they are left out as each page is read, and one warning says how many.

Bodies are not made huge: each server sends a little past the bound, then waits to see the
client hang up before it would send the rest (a client reading it all would wait instead).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from regstore.client import Client, auth
from regstore.client.auth import EXPIRY_MARGIN, MAX_TOKEN_BODY, MIN_TOKEN_LIFETIME
from regstore.client.errors_map import MAX_ERROR_BODY
from regstore.client.listing import INVALID_NAMES_KEPT
from regstore.errors import (
    AuthenticationError,
    PagingLimitError,
    RegistryError,
    UnexpectedHTTPStatusError,
)
from tests.support.fake_registry import FakeRegistry
from tests.support.ports import LoopbackHTTPServer, QuietHandler

NAME = "team/app"
TAGS_PATH = f"/v2/{NAME}/tags/list"
#: What the hostile answers declare: far more than any bound, never sent in full.
DECLARED = 64 << 20
#: How long a server waits for the client to hang up before it gives up (never on success).
HANG_UP_WAIT = 10.0

# -- a registry that is its own token realm --------------------------------------------------


class _Handler(QuietHandler):
    server: TokenRealm

    def do_GET(self) -> None:
        if self.path.startswith("/token"):
            self.server.token_requests += 1
            self.server.token(self)
        elif self.headers.get("Authorization") == "Bearer T":
            self.send_simple(200, b"{}", {"Content-Type": "application/json"})
        else:
            challenge = f'Bearer realm="{self.server.url}/token",service="svc"'
            self.send_simple(401, b"{}", {"WWW-Authenticate": challenge})


class TokenRealm(LoopbackHTTPServer):
    """A registry whose token realm is itself: ``/token`` is answered by ``token(handler)``,
    every other path by 200 with ``Bearer T`` and by the challenge without."""

    def __init__(self, token: Callable[[_Handler], None]) -> None:
        super().__init__(_Handler)
        self.token = token
        self.token_requests = 0


@pytest.fixture
def realm() -> Iterator[Callable[[Callable[[_Handler], None]], TokenRealm]]:
    servers: list[TokenRealm] = []

    def start(token: Callable[[_Handler], None]) -> TokenRealm:
        server = TokenRealm(token)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


def _client(server: TokenRealm) -> Client:
    return Client(server.host, plain_http=True, use_docker_config=False, retries=0)


class Oversized:
    """A token answer declaring DECLARED bytes that sends ``sent`` of them, then waits for
    the client to hang up; ``hung_up`` says whether it did (set once ``done`` is)."""

    def __init__(self, status: int, sent: int) -> None:
        self.status = status
        self.sent = sent
        self.hung_up = False
        self.done = threading.Event()

    def __call__(self, handler: _Handler) -> None:
        handler.close_connection = True
        try:
            handler.send_response(self.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(DECLARED))
            handler.end_headers()
            handler.wfile.write(b" " * self.sent)
            handler.wfile.flush()
            self.hung_up = _hangs_up(handler.connection)
        except OSError:  # broken pipe, reset: the client hung up mid-way
            self.hung_up = True
        finally:
            self.done.set()


def _hangs_up(conn: socket.socket) -> bool:
    """Whether the client closes ``conn`` within HANG_UP_WAIT (it sends nothing more)."""
    conn.settimeout(HANG_UP_WAIT)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


# -- F1: the token server's answer is read with a bound --------------------------------------


def test_an_oversized_token_answer_stops_at_the_bound_with_a_clear_error(
    realm: Callable[[Callable[[_Handler], None]], TokenRealm],
) -> None:
    answer = Oversized(200, 2 * MAX_TOKEN_BODY)
    server = realm(answer)
    with pytest.raises(RegistryError) as caught:
        _client(server).ping()
    assert answer.done.wait(HANG_UP_WAIT * 2)
    assert answer.hung_up, "the client waited for the rest of an oversized token answer"
    error = caught.value
    assert not isinstance(error, UnexpectedHTTPStatusError | AuthenticationError)
    message = str(error)
    assert f"larger than {MAX_TOKEN_BODY} bytes" in message
    assert f"the token server {server.url}/token" in message
    assert server.token_requests == 1


def test_a_refusal_with_an_oversized_body_is_read_only_as_far_as_its_message(
    realm: Callable[[Callable[[_Handler], None]], TokenRealm],
) -> None:
    answer = Oversized(401, 4 * MAX_ERROR_BODY)
    server = realm(answer)
    with pytest.raises(AuthenticationError) as caught:
        _client(server).ping()
    assert answer.done.wait(HANG_UP_WAIT * 2)
    assert answer.hung_up, "the client waited for the rest of an oversized refusal"
    assert "refused anonymous access" in str(caught.value)


def test_a_token_answer_within_the_bound_is_read_whole(
    realm: Callable[[Callable[[_Handler], None]], TokenRealm],
) -> None:
    # padding to just under the bound: the bound is on the answer, not on the token
    padded = json.dumps({"token": "T", "pad": " " * (MAX_TOKEN_BODY - 64)}).encode()
    assert len(padded) <= MAX_TOKEN_BODY
    server = realm(lambda h: h.send_simple(200, padded, {"Content-Type": "application/json"}))
    _client(server).ping()
    assert server.token_requests == 1


# -- F10: an unusable expires_in costs the lifetime, not the token ---------------------------

ODD_LIFETIMES = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, '"soon"', "[300]"]


@pytest.mark.parametrize(
    "expires_in", ODD_LIFETIMES, ids=lambda v: v if len(v) < 20 else "1e400int"
)
def test_an_unusable_expires_in_gives_one_token_for_many_requests(
    realm: Callable[[Callable[[_Handler], None]], TokenRealm], expires_in: str
) -> None:
    body = f'{{"token": "T", "expires_in": {expires_in}}}'.encode()
    server = realm(lambda h: h.send_simple(200, body, {"Content-Type": "application/json"}))
    client = _client(server)
    for _ in range(4):
        client.ping()
    assert server.token_requests == 1


# -- F2: invalid names in a listing are bounded ----------------------------------------------


@pytest.fixture
def make(fake_client_factory: Callable[..., Client]) -> Callable[..., Client]:
    return fake_client_factory


def _serve_pages(fake: FakeRegistry, path: str, key: str, pages: list[list[str]]) -> None:
    """``pages`` at ``path``, each linking to the next through ``?last=p<i>``."""
    for i, page in enumerate(pages):
        link = {"Link": f'<{path}?last=p{i + 1}>; rel="next"'} if i + 1 < len(pages) else {}
        fake.expect("GET", path, f"last=p{i}" if i else None, json={key: page}, headers=link)


def test_huge_invalid_tags_are_left_out_and_counted_in_one_warning(
    fake_registry: FakeRegistry, make: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    huge = INVALID_NAMES_KEPT + 1
    pages = [["1.0", "a" * huge], ["b" * huge, "1.0", "2.0"], ["c" * huge, "latest"]]
    _serve_pages(fake_registry, TAGS_PATH, "tags", pages)
    with caplog.at_level(logging.WARNING, logger="regstore.client"):
        tags = make().list_image_tags(NAME, complete=True)
    assert tags == ["1.0", "2.0", "latest"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "left out 3 invalid tags" in warnings[0]
    assert f"'{'a' * 64}... ({huge} characters)'" in warnings[0]
    assert NAME in warnings[0]


def test_small_invalid_tags_are_still_listed_for_the_report(
    fake_registry: FakeRegistry, make: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    # sync reports each of these as skipped: they must reach it as before
    pages = [["..", "1.0", "x" * 129], ["-x", "..", "ü", "2.0"]]
    _serve_pages(fake_registry, TAGS_PATH, "tags", pages)
    with caplog.at_level(logging.WARNING, logger="regstore.client"):
        tags = make().list_image_tags(NAME)
    assert tags == ["..", "1.0", "x" * 129, "-x", "ü", "2.0"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_invalid_tags_are_kept_until_their_budget_is_spent(
    fake_registry: FakeRegistry, make: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    half = "-" + "h" * (INVALID_NAMES_KEPT // 2 - 1)
    third = "-" + "t" * (INVALID_NAMES_KEPT // 2)  # one past what is left
    _serve_pages(fake_registry, TAGS_PATH, "tags", [[half, "v1"], [third, half, "v2"]])
    with caplog.at_level(logging.WARNING, logger="regstore.client"):
        tags = make().list_image_tags(NAME)
    assert tags == [half, "v1", "v2"]
    assert any("left out 1 invalid tags" in r.getMessage() for r in caplog.records)


def test_left_out_names_still_count_towards_max_list_entries(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    huge = "z" * (INVALID_NAMES_KEPT + 1)
    _serve_pages(fake_registry, TAGS_PATH, "tags", [[huge, "1.0"], [huge, "2.0"]])
    with pytest.raises(PagingLimitError):
        make(max_list_entries=3).list_image_tags(NAME)


def test_huge_invalid_repository_names_are_left_out_of_the_catalog(
    fake_registry: FakeRegistry, make: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    huge = "r" * (INVALID_NAMES_KEPT + 1)
    pages = [["a/b", huge], ["Upper/Case", "c"]]
    _serve_pages(fake_registry, "/v2/_catalog", "repositories", pages)
    with caplog.at_level(logging.WARNING, logger="regstore.client"):
        names = make().catalog()
    assert names == ["a/b", "Upper/Case", "c"]
    assert any("left out 1 invalid repository names" in r.getMessage() for r in caplog.records)


def test_invalid_names_do_not_pile_up_across_pages(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    # 16 pages of one 2 MiB "tag" each: kept whole they would be 32 MiB at the end; dropped
    # as each page is read, only about one page is held at a time
    size, count = 2 << 20, 16
    pages = [[chr(ord("a") + i) * size] for i in range(count)] + [["v1"]]
    _serve_pages(fake_registry, TAGS_PATH, "tags", pages)  # queued before tracing starts
    client = make()
    tracemalloc.start()
    try:
        tags = client.list_image_tags(NAME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tags == ["v1"]
    assert peak < size * count // 2, f"peak {peak} bytes while listing"


class _Clock:
    """Stands in for the auth module's ``time``: monotonic time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize("expires_in", ["Infinity", "1e400", "NaN"])
def test_a_non_finite_expires_in_lasts_the_minimum_lifetime(
    realm: Callable[[Callable[[_Handler], None]], TokenRealm],
    monkeypatch: pytest.MonkeyPatch,
    expires_in: str,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(auth, "time", clock)
    body = f'{{"token": "T", "expires_in": {expires_in}}}'.encode()
    server = realm(lambda h: h.send_simple(200, body, {"Content-Type": "application/json"}))
    client = _client(server)
    client.ping()
    clock.now += MIN_TOKEN_LIFETIME - EXPIRY_MARGIN - 1
    client.ping()
    assert server.token_requests == 1
    clock.now += 2  # past the renewal time of a token of the minimum lifetime
    client.ping()
    assert server.token_requests == 2
