"""Many manifest HEADs at once (``Client.head_manifests``, ``regstore.client.heads``): the same
answers as one ``head_manifest`` each, against the real registry with every kind of auth and
over TLS; every failure leaves a reference out (for the ordinary path) instead of guessing.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from regstore.client import Client
from regstore.client.heads import (
    HeadAnswer,
    HeadConnections,
    _Lines,
    _Malformed,
    connector,
    many_heads,
    read_answer,
    sendable,
)
from regstore.client.ratelimit import RateLimitState
from regstore.errors import InvalidReferenceError
from regstore.testing.builders import build_image, build_index
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.test_client_registry import make_client, push_built

# -- reading one answer --------------------------------------------------------------------------


def _answer(raw: bytes) -> tuple[HeadAnswer, bool]:
    return read_answer(io.BytesIO(raw))


def test_an_answer_is_its_status_and_case_insensitive_headers() -> None:
    answer, keep = _answer(
        b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:ab\r\n"
        b"content-type: application/json\r\nContent-Length: 12\r\n\r\nleft for the next"
    )
    assert answer.status == 200 and keep
    assert answer.headers["docker-content-digest"] == "sha256:ab"
    assert answer.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
    ],
)
def test_a_closing_answer_ends_its_connection(raw: bytes) -> None:
    _, keep = _answer(raw)
    assert not keep


def test_a_repeated_header_is_joined_so_a_doubled_digest_is_no_digest() -> None:
    answer, _ = _answer(
        b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:aa\r\n"
        b"docker-content-digest: sha256:bb\r\n\r\n"
    )
    assert answer.headers["Docker-Content-Digest"] == "sha256:aa, sha256:bb"


def test_only_values_that_go_on_the_wire_as_they_are_are_sent() -> None:
    assert sendable({"Authorization": "Bearer abc.def", "Accept": "a/b, c/d"})
    assert not sendable({"Authorization": "Bearer x\r\n\r\nHEAD /v2/ HTTP/1.1"})
    assert not sendable({"Authorization": "Bearer x\ny"})
    assert not sendable({"User-Agent": "r\u00e9gstore \u2603"})


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # closed before the answer
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",  # closed inside the headers
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 \u00b200 OK\r\n\r\n".encode("latin-1"),  # a digit to isdigit, not to int
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
    ],
)
def test_anything_but_an_http_answer_gives_the_connection_up(raw: bytes) -> None:
    with pytest.raises(_Malformed):
        _answer(raw)


# -- a small fake server: what many_heads does with connections that misbehave -------------------


class _RawServer:
    """Answers each request line with ``answer(n)`` (n counts requests across connections);
    None closes the connection instead."""

    def __init__(
        self, answer: Callable[[int], bytes | None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.answer = answer
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.connections = 0
        self.open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            with self._lock:
                self.connections += 1
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                while reader.readline() not in (b"\r\n", b""):
                    pass
                with self._lock:
                    self.count += 1
                    n = self.count
                reply = self.answer(n)
                if reply is None:
                    return
                conn.sendall(reply)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def drop_all(self) -> None:
        """Close every connection from this side (as a server's idle timeout does)."""
        with self._lock:
            dropped, self.open = self.open, []
        for conn in dropped:
            conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def _tls_server(tmp_path: Path, answer: Callable[[int], bytes | None]) -> tuple[_RawServer, Path]:
    """A :class:`_RawServer` over TLS, and the CA file that trusts it."""
    from tests.test_client_tls import _certificates

    ca, cert, key = _certificates(tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    return _RawServer(answer, tls=serving), ca


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[int], bytes | None]], _RawServer]]:
    servers: list[_RawServer] = []

    def start(answer: Callable[[int], bytes | None]) -> _RawServer:
        servers.append(_RawServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
URLS = [f"http://127.0.0.1/v2/a/manifests/t{i}" for i in range(20)]


def test_every_url_is_asked_once_over_the_connections_kept_open(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: OK)
    answers, sent = many_heads(URLS, {"Accept": "x"}, connections=3, connect=server.connect)
    assert sent == server.count == len(URLS)
    assert [a.status if a else None for a in answers] == [200] * len(URLS)
    # each connection asks many (a worker that starts after the others emptied the queue
    # opens none: how many do is the scheduler's)
    assert 1 <= server.connections <= 3


def test_a_connection_closed_by_the_server_leaves_only_its_own_request_unanswered(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: None if n == 5 else OK)
    answers, sent = many_heads(URLS, {}, connections=2, connect=server.connect)
    assert sent == len(URLS)
    assert sum(a is None for a in answers) == 1  # the one in flight when its connection died


def test_connection_close_answers_end_their_connections(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    answers, sent = many_heads(URLS, {}, connections=2, connect=server.connect)
    assert sent == 2 and sum(a is not None for a in answers) == 2


def test_a_refusal_stops_its_connection_and_a_stop_stops_the_batch(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: b"HTTP/1.1 503 Busy\r\n\r\n" if n == 3 else OK)
    answers, _ = many_heads(URLS, {}, connections=1, connect=server.connect)
    assert [a.status if a else None for a in answers[:4]] == [200, 200, 503, None]
    assert all(a is None for a in answers[3:])

    stopping = raw_server(lambda n: OK)
    seen: list[int] = []

    def stop_after_four(answer: HeadAnswer) -> bool:
        seen.append(answer.status)
        return len(seen) < 4

    answers, sent = many_heads(
        URLS, {}, connections=2, connect=stopping.connect, on_answer=stop_after_four
    )
    assert sent <= 5  # the other connection may have had one request in flight
    assert sum(a is not None for a in answers) == sent


def test_an_answer_that_is_no_answer_leaves_its_request_unanswered(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: "HTTP/1.1 \u00b200 OK\r\n\r\n".encode("latin-1"))
    answers, sent = many_heads(URLS[:3], {}, connections=1, connect=server.connect)
    assert answers == [None] * 3 and sent == 1


def test_a_tls_handshake_counts_against_the_connect_timeout() -> None:
    import ssl
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    connect = connector(
        f"https://127.0.0.1:{listener.getsockname()[1]}/",
        timeout=(0.3, 30.0),
        tls=ssl.create_default_context(),
    )
    started = time.monotonic()
    with pytest.raises(OSError):
        connect()  # the server accepts and never answers the handshake
    assert time.monotonic() - started < 10
    listener.close()


def test_connections_kept_between_batches_are_used_again(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: OK)
    kept = HeadConnections(server.connect, 3)
    for _ in range(3):
        answers, _ = many_heads(URLS, {}, connections=3, connect=kept)
        assert all(a is not None and a.status == 200 for a in answers)
    # at most one connection per worker over the three batches (a worker that starts after
    # the others emptied the queue opens none: how many do is the scheduler's)
    opened = server.connections
    assert 1 <= opened <= 3 and server.count == 3 * len(URLS)

    # closed by the server meanwhile: noticed when taken (no request lost on them), replaced
    server.drop_all()
    answers, sent = many_heads(URLS, {}, connections=3, connect=kept)
    assert all(a is not None for a in answers)
    assert sent == len(URLS) and opened < server.connections <= opened + 3
    kept.close()


def test_a_kept_connection_that_dies_before_its_answer_is_replaced_once(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: OK)
    kept = HeadConnections(server.connect, 3)
    pairs = [socket.socketpair() for _ in range(2)]

    def close_on_request(theirs: socket.socket) -> None:  # closed as the request arrives
        theirs.recv(4096)
        theirs.close()

    for ours, theirs in pairs:
        threading.Thread(target=close_on_request, args=(theirs,), daemon=True).start()
        kept.give_back(ours, _Lines(ours))
    answers, sent = many_heads(URLS[:4], {}, connections=1, connect=kept)
    assert [a.status if a else None for a in answers] == [200] * 4
    # the first request asked twice: on one dead kept connection, then on a new one (not on
    # the other dead one)
    assert sent == 5 and server.connections == 1
    assert pairs[1][0].fileno() == -1 or pairs[0][0].fileno() == -1


def test_what_a_kept_connection_was_sent_unasked_is_never_taken_for_an_answer(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: OK)
    kept = HeadConnections(server.connect, 2)
    ours, theirs = socket.socketpair()
    kept.give_back(ours, _Lines(ours))
    theirs.sendall(b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:unasked\r\n\r\n")
    answers, _ = many_heads(URLS[:3], {}, connections=1, connect=kept)
    assert all(a is not None and "Docker-Content-Digest" not in a.headers for a in answers)
    assert ours.fileno() == -1  # closed, not used
    theirs.close()


def test_over_tls_bytes_decrypted_ahead_are_never_taken_for_the_next_answer(
    tmp_path: Path,
) -> None:
    unasked = b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:unasked\r\n\r\n"

    def answer(n: int) -> bytes:  # the last answer of the first batch brings one unasked
        digest = f"Docker-Content-Digest: sha256:{n}\r\n".encode()
        head = b"HTTP/1.1 200 OK\r\n" + digest + b"\r\n"
        return head + unasked if n == 3 else head

    server, ca = _tls_server(tmp_path, answer)
    try:
        client_side = ssl.create_default_context(cafile=str(ca))
        kept = HeadConnections(
            connector(f"https://127.0.0.1:{server.port}/", timeout=(5, 5), tls=client_side), 2
        )
        first, _ = many_heads(URLS[:3], {}, connections=1, connect=kept)
        assert [a.headers["Docker-Content-Digest"] for a in first if a] == [
            f"sha256:{n}" for n in (1, 2, 3)
        ]
        second, _ = many_heads(URLS[:3], {}, connections=1, connect=kept)
        assert [a.headers["Docker-Content-Digest"] for a in second if a] == [
            f"sha256:{n}" for n in (4, 5, 6)
        ]
        assert server.connections == 2  # the connection with bytes left over was not kept
        kept.close()
    finally:
        server.close()


def test_an_unreachable_server_answers_nothing() -> None:
    def refuse() -> socket.socket:
        raise ConnectionRefusedError("refused")

    answers, sent = many_heads(URLS, {}, connections=4, connect=refuse)
    assert sent == 0 and answers == [None] * len(URLS)


# -- the real registry -----------------------------------------------------------------------------


def _push_some(client: Client, name: str) -> dict[str, str]:
    digests = {}
    for i in range(12):
        built = build_image(media="oci" if i % 2 else "docker", seed=700 + i, layers=1)
        push_built(client, name, f"t{i}", built)
        digests[f"t{i}"] = str(built.manifest_digest)
    index = build_index(seed=720)
    push_built(client, name, "multi", index)
    digests["multi"] = str(index.manifest_digest)
    return digests


@pytest.mark.parametrize("mode", ["registry", "basic_registry", "token_registry"])
def test_many_heads_answer_what_one_head_each_answers(
    request: pytest.FixtureRequest, mode: str
) -> None:
    reg: RegistryServer = request.getfixturevalue(mode)
    digests = _push_some(make_client(reg), "h/app")
    refs = [*digests, "absent", digests["t3"], "t5"]
    fresh = make_client(reg)
    found = fresh.head_manifests("h/app", refs)
    # one request per distinct reference, and perhaps the first's auth challenge
    assert fresh.transport.counters.requests <= len(set(refs)) + 1
    assert fresh.transport.auth.token_fetches <= 1
    assert set(found) == set(refs)
    assert found["absent"] is None
    for ref in refs:
        assert found[ref] == fresh.head_manifest("h/app", ref)
    assert {ref: str(info.digest) for ref, info in found.items() if info and ref in digests} == (
        digests
    )
    # the connections stay for the next batch, which answers the same; closing closes them
    (kept,) = fresh.transport._heads.values()
    before = {sock for sock, _ in kept._idle}
    assert 0 < len(before) <= fresh.transport.HEAD_CONNECTIONS
    assert fresh.head_manifests("h/app", refs) == found
    socks = [sock for sock, _ in kept._idle]
    assert before & set(socks)  # used again, and kept again
    fresh.close()
    assert fresh.transport._heads == {} and all(sock.fileno() == -1 for sock in socks)


def test_each_answer_is_given_with_the_index_of_its_url(registry: RegistryServer) -> None:
    digests = _push_some(make_client(registry), "h/each")
    refs = ["t1", "absent", "t4", "t7", "multi", "t1"]
    urls = [f"{registry.url}/v2/h/each/manifests/{ref}" for ref in refs]
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
    accept += ", application/vnd.docker.distribution.manifest.v2+json"
    given: list[tuple[int, int, str | None]] = []

    def each(index: int, answer: HeadAnswer) -> None:
        given.append((index, answer.status, answer.headers.get("Docker-Content-Digest")))

    answers, sent = many_heads(
        urls,
        {"Accept": accept},
        connections=3,
        connect=connector(registry.url, timeout=(5, 5), tls=None),
        each=each,
    )
    assert sent == len(refs) == len(given)
    assert sorted(index for index, *_ in given) == list(range(len(refs)))
    for index, status, digest in given:
        assert answers[index] is not None and answers[index].status == status
        if refs[index] == "absent":
            assert status == 404
        else:
            assert (status, digest) == (200, digests[refs[index]]), refs[index]


def test_each_answer_is_given_as_it_comes_before_its_connection_asks_again(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: OK)
    asked_when: list[tuple[int, int]] = []
    many_heads(
        URLS,
        {},
        connections=1,
        connect=server.connect,
        each=lambda index, answer: asked_when.append((index, server.count)),
    )
    # (one connection: the server has had exactly the requests answered so far)
    assert asked_when == [(i, i + 1) for i in range(len(URLS))]


def test_a_failing_each_gives_its_connection_up_and_on_answer_still_sees_the_answer(
    raw_server: Callable[..., _RawServer],
) -> None:
    # (on_answer decides whether the whole batch stops: a refusal must reach it regardless)
    server = raw_server(lambda n: OK)
    seen: list[int] = []

    def each(index: int, answer: HeadAnswer) -> None:
        if index == 1:
            raise RuntimeError("a bug in the caller's reading")

    def on_answer(answer: HeadAnswer) -> bool:
        seen.append(answer.status)
        return True

    answers, sent = many_heads(
        URLS, {}, connections=1, connect=server.connect, each=each, on_answer=on_answer
    )
    assert (sent, seen) == (2, [200, 200])  # given up after the second: nothing more asked
    assert [a is not None for a in answers[:3]] == [True, True, False]


def test_a_slow_connect_holds_up_no_answer_of_a_connection_already_open(
    raw_server: Callable[..., _RawServer],
) -> None:
    # Every answer is read on the calling thread; connecting (a round trip, a TLS handshake)
    # is done aside, and the connections already open go on meanwhile.
    server = raw_server(lambda n: OK)
    release = threading.Event()
    lock = threading.Lock()
    connects: list[int] = []
    callers: set[int] = set()
    order: list[int] = []

    def connect() -> socket.socket:
        with lock:
            connects.append(len(connects))
            slow = len(connects) == 2
        if slow:  # the second connection takes its time, until every other answer came
            assert release.wait(30)
        return server.connect()

    def each(index: int, answer: HeadAnswer) -> None:
        callers.add(threading.get_ident())
        order.append(index)
        if len(order) == len(URLS) - 1:
            release.set()

    answers, sent = many_heads(URLS, {}, connections=2, connect=connect, each=each)
    assert sent == len(URLS) and all(a is not None and a.status == 200 for a in answers)
    # the slow connection's one request (the first or the second URL, whichever connecting
    # thread came second) was answered last, after all the others over the other connection
    assert order[-1] in (0, 1) and sorted(order) == list(range(len(URLS)))
    assert callers == {threading.get_ident()} and len(connects) == 2


def test_a_url_no_longer_wanted_when_its_turn_comes_is_never_sent(
    raw_server: Callable[..., _RawServer],
) -> None:
    server = raw_server(lambda n: OK)
    unwanted: set[int] = set()

    def each(index: int, answer: HeadAnswer) -> None:
        if index == 2:  # from the third answer on, the odd URLs are wanted no more
            unwanted.update(range(1, len(URLS), 2))

    answers, sent = many_heads(
        URLS,
        {},
        connections=1,
        connect=server.connect,
        each=each,
        wanted=lambda index: index not in unwanted,
    )
    assert [a is not None for a in answers[:3]] == [True, True, True]
    assert all((answers[i] is None) == (i % 2 == 1) for i in range(3, len(URLS)))
    assert sent == server.count == 3 + (len(URLS) - 3) // 2


def test_an_answer_trickled_byte_by_byte_is_read_whole_and_parsed_once_or_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import regstore.client.heads as heads_module

    parses: list[int] = []
    real_read_answer = heads_module.read_answer

    def counting(reader: Any) -> tuple[HeadAnswer, bool]:
        parses.append(1)
        return real_read_answer(reader)

    monkeypatch.setattr(heads_module, "read_answer", counting)
    ours, theirs = socket.socketpair()

    def trickle() -> None:  # each answer a byte at a time (the blank line split too)
        with theirs, theirs.makefile("rb") as reader:
            for n in range(2):
                while reader.readline() not in (b"\r\n", b""):
                    pass
                reply = f"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:{n}\r\n\r\n"
                for byte in reply.encode():
                    theirs.sendall(bytes([byte]))
                    time.sleep(0.001)

    threading.Thread(target=trickle, daemon=True).start()
    ours.settimeout(10)  # (a batch that never saw a whole answer would end, not hang)
    kept = HeadConnections(lambda: ours, 1)
    kept.give_back(ours, _Lines(ours))
    answers, sent = many_heads(URLS[:2], {}, connections=1, connect=kept)
    kept.close()
    assert sent == 2
    assert [a.headers["Docker-Content-Digest"] if a else None for a in answers] == [
        "sha256:0",
        "sha256:1",
    ]
    assert len(parses) <= 2 * 3  # (the first look, and once a blank line is in; not per byte)


def test_bytes_past_an_answer_give_its_connection_up_and_are_never_an_answer(
    raw_server: Callable[..., _RawServer],
) -> None:
    unasked = b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:unasked\r\n\r\n"

    def answer(n: int) -> bytes:  # the second answer brings one nobody asked for
        head = f"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:{n}\r\n\r\n".encode()
        return head + unasked if n == 2 else head

    server = raw_server(answer)
    answers, sent = many_heads(URLS[:4], {}, connections=1, connect=server.connect)
    digests = [a.headers["Docker-Content-Digest"] if a else None for a in answers]
    # the second answer is its own; the connection is given up there, never asked again
    assert digests == ["sha256:1", "sha256:2", None, None] and sent == 2


def test_over_tls_several_connections_answer_every_url_with_its_own_answer(
    tmp_path: Path,
) -> None:
    server, ca = _tls_server(
        tmp_path,
        lambda n: f"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:{n}\r\n\r\n".encode(),
    )
    try:
        client_side = ssl.create_default_context(cafile=str(ca))
        connect = connector(f"https://127.0.0.1:{server.port}/", timeout=(5, 5), tls=client_side)
        answers, sent = many_heads(URLS, {}, connections=4, connect=connect)
        digests = [a.headers["Docker-Content-Digest"] for a in answers if a is not None]
        assert sent == len(URLS) == len(digests) == len(set(digests))
        assert sorted(int(d.split(":")[1]) for d in digests) == list(range(1, len(URLS) + 1))
        assert 1 <= server.connections <= 4
    finally:
        server.close()


def test_a_server_that_never_answers_is_given_up_after_the_sockets_timeout(
    raw_server: Callable[..., _RawServer],
) -> None:
    import time

    hold = threading.Event()
    server = raw_server(lambda n: OK if hold.wait(20) else None)  # answers nothing for now

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", server.port), timeout=0.3)

    started = time.monotonic()
    answers, sent = many_heads(URLS[:4], {}, connections=2, connect=connect)
    waited = time.monotonic() - started
    hold.set()
    assert answers == [None] * 4 and sent == 2  # one request in flight on each, unanswered
    assert 0.25 <= waited < 10


def test_answers_that_are_not_clean_are_left_to_the_ordinary_path(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    client = make_client(registry)
    digests = _push_some(client, "h/faults")
    proxy = fault_proxy_factory(registry)
    proxy.drop_connection("HEAD", r"/manifests/t6$", times=None)
    proxy.override_status(
        "HEAD", r"/manifests/t8$", 200, times=None, headers={"Content-Type": "text/plain"}
    )
    proxy.override_status(
        "HEAD", r"/manifests/t9$", 200, times=None, headers={"Docker-Content-Digest": "sha256:x"}
    )
    # a digest reference answered with another (valid) digest
    proxy.override_status(
        "HEAD",
        rf"/manifests/{digests['t10']}$",
        200,
        times=None,
        headers={
            "Docker-Content-Digest": digests["t11"],
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Content-Length": "10",
        },
    )
    through = Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=lambda s: None)
    found = through.head_manifests("h/faults", [*digests, digests["t10"]])
    assert set(found) == set(digests) - {"t6", "t8", "t9"}
    for ref, info in found.items():
        assert info is not None and str(info.digest) == digests[ref]
    # nothing was retried in bulk: the failing references were asked once each
    for tag in ("t6", "t8", "t9"):
        assert proxy.count("HEAD", rf"/manifests/{tag}$") == 1


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (429, {"Retry-After": "1", "RateLimit-Limit": "100", "RateLimit-Remaining": "50"}),
        (503, {}),
        (401, {}),
    ],
)
def test_a_registry_refusing_or_failing_stops_the_batch(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    status: int,
    headers: dict[str, str],
) -> None:
    client = make_client(registry)
    digests = _push_some(client, "h/quota")
    proxy = fault_proxy_factory(registry)
    proxy.override_status("HEAD", r"/manifests/t3$", status, times=None, headers=headers)
    # the answers after t3 come a second late, far longer than the refusal takes to be seen,
    # so the other connection still waits for its one request in flight when the batch stops
    # (without it, under the full suite, that connection once got through two more first)
    proxy.delay("HEAD", r"/manifests/t([4-9]|1[0-2])$", 1.0)
    through = Client(
        proxy.host, use_docker_config=False, max_in_flight=2, sleep=lambda s: None, backoff=0.01
    )
    found = through.head_manifests("h/quota", list(digests))
    assert "t3" not in found and set(found) <= {"t0", "t1", "t2", "t4"}
    # the batch stopped at the refusal: two connections, at most one request in flight on the
    # other, nothing after it (else all 13 would have been asked)
    assert proxy.count("HEAD") <= 5
    if status == 429:  # the quota it announced is known to the pacer
        assert through.transport.pacer.state == RateLimitState(50, 100, None)


def test_behind_a_proxy_nothing_is_sent_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    from regstore.client.errors_map import Operation

    urls = [f"https://registry.invalid:5000/v2/a/manifests/t{i}" for i in range(3)]
    op = Operation("manifest", "checking")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = Client("registry.invalid:5000", use_docker_config=False, timeout=(0.5, 0.5))
    assert client.transport.head_many(urls, op) is None
    monkeypatch.setenv("NO_PROXY", "registry.invalid")
    client = Client("registry.invalid:5000", use_docker_config=False, timeout=(0.5, 0.5))
    # not behind the proxy: tried (and, the name resolving nowhere, unanswered)
    assert client.transport.head_many(urls, op) == [None] * 3


def test_a_client_that_cannot_take_the_shortcut_sends_nothing_in_bulk(
    registry: RegistryServer,
) -> None:
    client = make_client(registry)
    digests = _push_some(client, "h/own")
    with requests.Session() as own:
        theirs = Client(registry.host, use_docker_config=False, session=own)
        assert list(theirs.head_manifests("h/own", list(digests))) == ["t0"]
        assert theirs.transport.counters.requests == 1
    paced = make_client(registry)
    paced.transport.pacer.observe({"RateLimit-Limit": "100", "RateLimit-Remaining": "1"})
    assert paced.transport.pacer.state == RateLimitState(1, 100, None)
    assert list(paced.head_manifests("h/own", list(digests))) == ["t0"]
    cookies = make_client(registry)
    cookies.transport.session.cookies.set("affinity", "b2", domain="127.0.0.1")
    assert list(cookies.head_manifests("h/own", list(digests))) == ["t0"]


def test_invalid_references_are_refused_before_anything_is_sent(registry: RegistryServer) -> None:
    client = make_client(registry)
    with pytest.raises(InvalidReferenceError):
        client.head_manifests("h/app", ["good", "-bad"])
    with pytest.raises(InvalidReferenceError):
        client.head_manifests("UPPER/case", ["good"])
    assert client.transport.counters.requests == 0
    assert client.head_manifests("h/app", []) == {}
