"""Many HEADs at once over a few kept-alive connections, without ``requests`` on the way
(nor imported: :mod:`regstore.engine.early` asks before it is).

A sync of a few hundred unchanged tags is a few hundred manifest HEADs. Through ``requests``
each costs most of a millisecond of Python (header dictionaries, URL parsing,
``http.client``'s header parser); here a request is one line per header written to a socket
kept open, and its answer a status line and a few header lines (a HEAD answer has no body,
whatever its ``Content-Length`` says). A few connections, each with one request in flight at
a time, keep the registry as busy as HTTP/1.1 pipelining would, without pipelining's risk: an
intermediary that answered pipelined requests out of order would pair a tag with another
tag's digest, and a sync would skip a changed image without a word.

The connections are kept between batches (:class:`HeadConnections`, one per registry client):
a sync of many repositories opens them once, not once per repository.

Only a shortcut. Whatever breaks a connection (a refused connect, a cut, a malformed answer,
``Connection: close``) leaves the requests it did not answer unanswered, and any status but
200 and 404 ends the connection's work (a 401 wants a new token, a 429 or 5xx the retry
policy's pauses, a redirect following): the caller asks those again the ordinary way. The one
request asked again here is the first on a kept connection the server closed as it was taken.
"""

from __future__ import annotations

import logging
import os.path
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:  # (imported where TLS is used: a sync over plain HTTP never loads it)
    import ssl

__all__ = [
    "HeadAnswer",
    "HeadConnections",
    "Headers",
    "connector",
    "get_body",
    "many_heads",
    "read_answer",
    "sendable",
    "tls_context",
]

log = logging.getLogger("regstore.client.heads")

#: Longest status or header line accepted (as ``http.client``): a hostile server cannot make
#: a reader buffer without end.
MAX_LINE = 65536
#: Most header lines in one answer (as ``http.client``).
MAX_HEADERS = 100
#: Seconds a connection is kept unused: past this, a middlebox may have dropped it silently
IDLE_SECONDS = 30.0


class Headers(Mapping[str, str]):
    """An answer's headers, looked up whatever the case of the name (as ``requests``' own
    mapping, which this module does without: a sync asks its HEADs before ``requests`` is
    even imported, :mod:`regstore.engine.early`)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __setitem__(self, key: str, value: str) -> None:
        self._items[key.lower()] = (key, value)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class HeadAnswer:
    """One answer: its status and headers (case-insensitive)."""

    status: int
    headers: Headers


class _Malformed(Exception):
    """An answer that is not HTTP/1.x: its connection is given up."""


class LineReader(Protocol):
    """What answers are read from: ``readline`` with a limit (a binary file, :class:`_Lines`)."""

    def readline(self, size: int = -1, /) -> bytes: ...


class _Lines:
    """Lines from a socket, with the bytes read past the last one kept here, in sight: a
    connection is kept for another batch only when none are left over (a buffered file
    would read ahead and hide them)."""

    def __init__(self, sock: socket.socket, deadline: float | None = None) -> None:
        self.sock = sock
        self.buffer = bytearray()
        #: ``time.monotonic()`` past which no read waits any more (None: the socket's timeout)
        self.deadline = deadline

    def recv(self, size: int) -> bytes:
        """Bytes from the socket, waiting no longer than the deadline allows."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the answer took longer than its deadline")
            self.sock.settimeout(left)
        return self.sock.recv(size)

    def readline(self, size: int = -1, /) -> bytes:
        limit = size if size >= 0 else MAX_LINE + 1
        while True:
            end = self.buffer.find(b"\n", 0, limit)
            if end >= 0 or len(self.buffer) >= limit:
                cut = end + 1 if end >= 0 else limit
                line = bytes(self.buffer[:cut])
                del self.buffer[:cut]
                return line
            chunk = self.recv(65536)
            if not chunk:
                line = bytes(self.buffer)
                self.buffer.clear()
                return line
            self.buffer += chunk


def _read_line(reader: LineReader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise _Malformed("header line too long")
    if not line:
        raise _Malformed("connection closed before the answer")
    return line


def read_answer(reader: LineReader) -> tuple[HeadAnswer, bool]:
    """Read one HEAD answer; returns it and whether the server keeps the connection open."""
    version, _, rest = _read_line(reader).decode("latin-1").strip().partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not (
        len(code) == 3 and code.isascii() and code.isdigit()
    ):
        raise _Malformed(f"not an HTTP/1.x status line: {version[:20]!r}")
    status = int(code)
    if status < 200:  # 1xx before a HEAD's answer: nothing regstore asked for
        raise _Malformed(f"interim answer {status}")
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        line = _read_line(reader)
        if line in (b"\r\n", b"\n"):
            break
        key, sep, value = line.decode("latin-1").partition(":")
        if not sep or not key or key != key.strip():
            raise _Malformed("malformed header line")
        # a repeated header is joined, as urllib3 joins it: a doubled digest or length is then
        # no longer a valid one, and the reference goes the ordinary way
        earlier = headers.get(key)
        headers[key] = value.strip() if earlier is None else f"{earlier}, {value.strip()}"
    else:
        raise _Malformed("too many header lines")
    keep = version == "HTTP/1.1" and "close" not in headers.get("Connection", "").lower()
    return HeadAnswer(status, headers), keep


def tls_context(verify: bool | str, default_bundle: str) -> ssl.SSLContext:
    """Python's default TLS context, trusting what ``requests`` trusts for ``verify``: a CA
    file or directory, its own bundle (``default_bundle``) for True, nothing checked for False
    (not urllib3's own context: its ciphers and options may differ)."""
    import ssl

    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    where = default_bundle if verify is True else verify
    if os.path.isdir(where):
        return ssl.create_default_context(capath=where)
    return ssl.create_default_context(cafile=where)


def sendable(headers: Mapping[str, str]) -> bool:
    """Whether every header value can go on the wire as it is: latin-1, no CR or LF (one that
    held a line break would make one request two, and pair later answers with the wrong
    requests; ``http.client`` refuses such a value)."""
    for value in headers.values():
        if "\r" in value or "\n" in value:
            return False
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return False
    return True


def get_body(
    sock: socket.socket, url: str, headers: dict[str, str], limit: int, seconds: float
) -> tuple[HeadAnswer, bytes | None]:
    """One GET of ``url`` over ``sock``: its answer, and its body when the answer is a 200
    with a ``Content-Length`` of at most ``limit`` bytes (None otherwise, the body left unread:
    another status, a body of unknown length, chunked or longer), all read within ``seconds``.
    Raises OSError (TimeoutError past the deadline), or ValueError for an answer that is not
    HTTP/1.x or a body cut short."""
    sock.sendall(_request_bytes(url, headers, "GET"))
    lines = _Lines(sock, time.monotonic() + seconds)
    try:
        answer, _ = read_answer(lines)
    except _Malformed as exc:
        raise ValueError(str(exc)) from None
    length = answer.headers.get("Content-Length", "")
    if (
        answer.status != 200
        or "Transfer-Encoding" in answer.headers
        or not (length.isascii() and length.isdigit())
        or int(length) > limit
    ):
        return answer, None
    body = bytearray(lines.buffer[: int(length)])
    while len(body) < int(length):  # (a registry trickling its answer is failing: deadline)
        chunk = lines.recv(min(65536, int(length) - len(body)))
        if not chunk:
            raise ValueError("connection closed in the body")
        body += chunk
    return answer, bytes(body)


def _request_bytes(url: str, headers: dict[str, str], method: str = "HEAD") -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Queue:
    """The requests not yet taken by a connection, shared by all of them."""

    def __init__(self, count: int) -> None:
        self._next = 0
        self._count = count
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def take(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or self._next >= self._count:
                return None
            self._next += 1
            return self._next - 1


def _quiet(sock: socket.socket) -> bool:
    """Nothing is waiting to be read on ``sock``: no byte the kernel holds (nor its closing),
    none a TLS layer decrypted already."""
    pending = getattr(sock, "pending", None)  # (a TLS socket's: ssl.SSLSocket.pending)
    if pending is not None and pending():
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class HeadConnections:
    """Connections of one origin kept open between batches, at most ``keep`` of them and for
    :data:`IDLE_SECONDS` at most: a sync of many repositories asks each repository's tags in a
    batch of its own, and would otherwise open (and, over TLS, shake hands on) new
    connections for every one.

    A connection is kept only when its last answer was read to the byte, and used again only
    if nothing is waiting on it then: the server closing it, or sending what nobody asked
    for, makes it be closed instead, never read. Thread-safe; not shared with a forked child.
    """

    def __init__(self, connect: Callable[[], socket.socket], keep: int) -> None:
        self.connect = connect
        self.keep = keep
        self._idle: list[tuple[socket.socket, float]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    def take(self) -> tuple[socket.socket, bool]:
        """A connection and whether it was kept from before (else new)."""
        while True:
            with self._lock:
                if self._pid != os.getpid():  # a forked child: the parent's streams are not ours
                    self._idle, self._pid = [], os.getpid()
                sock, since = self._idle.pop() if self._idle else (None, 0.0)
            if sock is None:
                return self.connect(), False
            if time.monotonic() - since <= IDLE_SECONDS and _quiet(sock):
                return sock, True
            sock.close()

    def give_back(self, sock: socket.socket, lines: _Lines) -> None:
        """Keep ``sock`` for the next batch if its answers were read to the byte (``lines``
        holds nothing more) and nothing is waiting on it; else close it."""
        if not lines.buffer and _quiet(sock):
            with self._lock:
                if not self._closed and len(self._idle) < self.keep:
                    self._idle.append((sock, time.monotonic()))
                    return
        sock.close()

    def close(self) -> None:
        """Close every kept connection; none is kept from now on."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for sock, _ in idle:
            sock.close()


def _serve(
    requests: Sequence[bytes],
    answers: list[HeadAnswer | None],
    queue: _Queue,
    connections: HeadConnections,
    on_answer: Callable[[int, HeadAnswer], bool],
) -> int:
    """One connection's work: take a request, send it, read its answer, until the queue is
    empty or something ends the connection; returns the requests sent. A kept connection that
    fails before its first answer (the server closed it as it was taken) is replaced, once, by
    a new one, and the request sent again: a HEAD may be."""
    index = queue.take()
    sent = 0
    fresh_only = False
    while index is not None:
        try:
            sock, kept = (connections.connect(), False) if fresh_only else connections.take()
        except Exception as exc:  # a shortcut: whatever fails leaves its requests to the caller
            log.debug("many HEADs: cannot connect: %s", exc)
            return sent
        lines = _Lines(sock)
        answered, clean = 0, False
        try:
            while index is not None:
                sock.sendall(requests[index])
                sent += 1
                answer, keep = read_answer(lines)
                answered += 1
                answers[index] = answer
                if not on_answer(index, answer) or not keep:
                    break
                index = queue.take()
            else:
                clean = True  # every request asked, the connection still good
        except Exception as exc:  # a cut, a malformed answer, anything: the connection is given up
            log.debug("many HEADs: connection given up: %s", exc)
            if kept and answered == 0 and not queue.stop.is_set():
                sock.close()
                fresh_only = True
                continue
        finally:  # whatever ends the work, even an interrupt: closed, or kept if clean
            if clean:
                connections.give_back(sock, lines)
            else:
                sock.close()
        return sent
    return sent


def many_heads(
    urls: Sequence[str],
    headers: dict[str, str],
    *,
    connections: int,
    connect: Callable[[], socket.socket] | HeadConnections,
    on_answer: Callable[[HeadAnswer], bool] = lambda answer: True,
    each: Callable[[int, HeadAnswer], None] | None = None,
) -> tuple[list[HeadAnswer | None], int]:
    """HEAD every URL of ``urls`` (all of one origin) with ``headers`` over up to
    ``connections`` connections from ``connect`` (each its own thread, one request in flight
    on each): new ones from a function, or kept ones from :class:`HeadConnections` (which
    keeps them again after a clean batch).

    Returns the answers in the order of ``urls`` (None where none came) and the number of
    requests sent. ``on_answer`` sees every answer as it comes; False stops the whole batch.
    ``each`` is given every answer with the index of its URL as it comes, before
    ``on_answer`` and before its connection asks again (on that connection's thread: what it
    makes of the answers is made while the others are still asked, not after the last); an
    exception from it gives its connection up, as a malformed answer does. Any status but 200
    and 404 ends its connection's work.
    """
    answers: list[HeadAnswer | None] = [None] * len(urls)
    if not urls:
        return answers, 0
    queue = _Queue(len(urls))

    def seen(index: int, answer: HeadAnswer) -> bool:
        try:
            if each is not None:
                each(index, answer)
        finally:  # (even after a failing ``each``: a refusal still stops the whole batch)
            wanted = on_answer(answer)
            if not wanted:
                queue.stop.set()
        return wanted and answer.status in (200, 404)

    pool = connect if isinstance(connect, HeadConnections) else HeadConnections(connect, 0)
    requests = [_request_bytes(url, headers) for url in urls]
    count = max(1, min(connections, len(urls)))
    sent = [0] * count

    def work(k: int) -> None:
        sent[k] = _serve(requests, answers, queue, pool, seen)

    threads = [
        threading.Thread(target=work, args=(k,), name=f"regstore-heads-{k}", daemon=True)
        for k in range(1, count)
    ]
    for thread in threads:
        thread.start()
    try:
        work(0)
    except BaseException:
        queue.stop.set()
        raise
    finally:  # the caller's permits stay taken until no connection is left open
        for thread in threads:
            thread.join()
    return answers, sum(sent)


def connector(
    url: str, *, timeout: tuple[float, float], tls: ssl.SSLContext | None
) -> Callable[[], socket.socket]:
    """A function opening a connection to ``url``'s origin: TCP (no Nagle delay), TLS with
    ``tls`` when the URL is https (the server's name checked as the context says)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)

    # An ASCII name goes to the resolver (and TLS) as bytes: as a str, the socket and ssl
    # modules would encode it with the IDNA codec, whose import (and stringprep's,
    # unicodedata's) a sync's first connection would wait for.
    address: str | bytes = host.encode("ascii") if host.isascii() else host

    def connect() -> socket.socket:
        # (typeshed says str; the resolver takes bytes as well)
        sock = socket.create_connection((address, port), timeout=timeout[0])  # type: ignore[arg-type]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:  # the handshake is part of connecting, as for urllib3
                sock = tls.wrap_socket(sock, server_hostname=address)
            sock.settimeout(timeout[1])
            return sock
        except BaseException:
            sock.close()
            raise

    return connect
