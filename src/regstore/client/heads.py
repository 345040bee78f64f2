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

import contextlib
import logging
import os.path
import select
import selectors
import socket
import sys
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
    items = headers._items  # (filled here directly: a sync reads hundreds of answers)
    for _ in range(MAX_HEADERS + 1):
        line = _read_line(reader)
        if line in (b"\r\n", b"\n"):
            break
        key, sep, value = line.decode("latin-1").partition(":")
        if not sep or not key or key != key.strip():
            raise _Malformed("malformed header line")
        # a repeated header is joined, as urllib3 joins it: a doubled digest or length is then
        # no longer a valid one, and the reference goes the ordinary way
        value, folded = value.strip(), key.lower()
        earlier = items.get(folded)
        items[folded] = (key, value) if earlier is None else (key, f"{earlier[1]}, {value}")
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
    """The requests not yet taken by a connection, shared by all of them, in order; those
    ``wanted`` no longer wants (asked as each is taken) are passed over."""

    def __init__(self, count: int, wanted: Callable[[int], bool] | None = None) -> None:
        self._next = 0
        self._count = count
        self._wanted = wanted
        self.stop = False

    def take(self) -> int | None:
        while not self.stop and self._next < self._count:
            index = self._next
            self._next += 1
            if self._wanted is None or self._wanted(index):
                return index
        return None


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

    def take_kept(self) -> socket.socket | None:
        """A connection kept from before that is still good, else None (nothing opened)."""
        while True:
            with self._lock:
                if self._pid != os.getpid():  # a forked child: the parent's streams are not ours
                    self._idle, self._pid = [], os.getpid()
                sock, since = self._idle.pop() if self._idle else (None, 0.0)
            if sock is None:
                return None
            if time.monotonic() - since <= IDLE_SECONDS and _quiet(sock):
                return sock
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


#: More than any answer ``read_answer`` takes can be: every header line and the status line at
#: their longest, and the blank line
_MOST_READ = (MAX_HEADERS + 2) * (MAX_LINE + 2)


class _Incomplete(Exception):
    """The bytes read so far end before the answer does."""


class _Buffered:
    """:class:`LineReader` over the bytes a connection has read so far (``read_answer``
    parses an answer only once its last line is in): :class:`_Incomplete` where they end
    before a line does."""

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.at = 0

    def readline(self, size: int = -1, /) -> bytes:
        limit = size if size >= 0 else MAX_LINE + 1
        end = self.buffer.find(b"\n", self.at, self.at + limit)
        if end >= 0:
            cut = end + 1
        elif len(self.buffer) - self.at >= limit:
            cut = self.at + limit  # (too long a line: read_answer refuses it)
        else:
            raise _Incomplete
        line = bytes(self.buffer[self.at : cut])
        self.at = cut
        return line


class _Connection:
    """One connection of a batch: the request in flight on it and what it has read."""

    __slots__ = ("answered", "deadline", "index", "kept", "lines", "scanned", "sock", "timeout")

    def __init__(self, sock: socket.socket, kept: bool, index: int) -> None:
        self.sock = sock
        self.kept = kept
        self.index = index  #: the request in flight (sent, or about to be)
        self.lines = _Lines(sock)  #: what was read past the last answer
        self.scanned = 0  #: how far the buffer is known to hold no blank line
        self.answered = 0
        self.deadline: float | None = None
        #: the socket's own timeout: between two reads, and set again once the batch is done
        #: with it (during the batch it never blocks: a TLS socket readable for a session
        #: ticket alone would hold up every other connection in its read)
        self.timeout = sock.gettimeout()

    def may_hold_answer(self) -> bool:
        """Whether what was read may hold a whole answer, or so much that it must be a
        malformed one: an answer is parsed only then, so that one trickled byte by byte costs
        a parse or two, not one per byte (its end is a blank line; a blank first line, the
        parse refuses at once)."""
        buffer = self.lines.buffer
        if self.scanned == 0 or len(buffer) > _MOST_READ:
            return True
        start = max(0, self.scanned - 2)  # (a blank line may straddle two reads)
        self.scanned = len(buffer)
        return buffer.find(b"\n\n", start) >= 0 or buffer.find(b"\n\r\n", start) >= 0

    def wait(self) -> None:
        """Allow the socket's own timeout for the next bytes (none: wait as long as it takes)."""
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout


class _Batch:
    """One :func:`many_heads` batch: every connection's requests and answers on one thread,
    with a selector; connections are opened on short-lived threads of their own (a connect
    may take a round trip or a TLS handshake, while the others are answered)."""

    def __init__(
        self,
        requests: Sequence[bytes],
        answers: list[HeadAnswer | None],
        pool: HeadConnections,
        seen: Callable[[int, HeadAnswer], bool],
        wanted: Callable[[int], bool] | None = None,
    ) -> None:
        self.requests = requests
        self.answers = answers
        self.pool = pool
        self.seen = seen
        self.queue = _Queue(len(requests), wanted)
        self.sent = 0
        self.selector = selectors.DefaultSelector()
        self.live: set[_Connection] = set()
        self.connecting: list[threading.Thread] = []
        self.awaited = 0  # connections being opened, not yet taken
        self.opened: list[tuple[socket.socket | None, int]] = []  # (from the connecting threads)
        self.lock = threading.Lock()
        self.done = False  # (what a connecting thread opens after the batch is closed)
        self.wake_read, self.wake_write = os.pipe()

    def run(self, connections: int) -> int:
        """Ask every request over up to ``connections`` connections; the requests sent."""
        try:
            self.selector.register(self.wake_read, selectors.EVENT_READ)
            for _ in range(connections):
                index = self.queue.take()
                if index is None:
                    break
                self._open(index, fresh=False)
            while self.live or self.awaited:
                self._turn()
        except BaseException:
            self.queue.stop = True
            raise
        finally:  # whatever ends the batch, even an interrupt: nothing left open or running
            self._close()
        return self.sent

    def _open(self, index: int, *, fresh: bool) -> None:
        """A connection for request ``index``: a kept one at once (unless ``fresh``), else a
        new one opened on a thread."""
        sock = None if fresh else self.pool.take_kept()
        if sock is not None:
            self._start(_Connection(sock, True, index))
            return
        thread = threading.Thread(
            target=self._connect, args=(index,), name="regstore-heads-connect", daemon=True
        )
        thread.start()
        self.connecting.append(thread)
        self.awaited += 1

    def _connect(self, index: int) -> None:
        sock: socket.socket | None = None
        try:
            sock = self.pool.connect()
        except Exception as exc:  # a shortcut: whatever fails leaves its requests to the caller
            log.debug("many HEADs: cannot connect: %s", exc)
        finally:  # (posted whatever happened: the batch waits for every connection it opens)
            self._post(sock, index)

    def _post(self, sock: socket.socket | None, index: int) -> None:
        with self.lock:
            if self.done:  # (the batch is over: nobody will take it)
                if sock is not None:
                    sock.close()
                return
            self.opened.append((sock, index))
        os.write(self.wake_write, b".")

    def _turn(self) -> None:
        """Wait for the next bytes, a new connection or a deadline, and act on them."""
        deadlines = [c.deadline for c in self.live if c.deadline is not None]
        wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for key, _ in self.selector.select(wait):
            if key.data is None:
                self._take_opened()
            elif key.data in self.live:
                self._read(key.data)
        now = time.monotonic()
        for conn in [c for c in self.live if c.deadline is not None and c.deadline <= now]:
            self._failed(conn, TimeoutError("no answer within the socket's timeout"))

    def _take_opened(self) -> None:
        os.read(self.wake_read, 4096)
        with self.lock:
            opened, self.opened = self.opened, []
        self.awaited -= len(opened)
        for k, (sock, index) in enumerate(opened):
            if sock is None:  # (its request stays unanswered; the others go on)
                continue
            try:
                self._start(_Connection(sock, False, index))
            except BaseException:
                for left, _ in opened[k + 1 :]:
                    if left is not None:
                        left.close()
                raise

    def _start(self, conn: _Connection) -> None:
        if self.queue.stop:  # (a refusal came meanwhile: its request is not sent)
            self.pool.give_back(conn.sock, conn.lines)
            return
        try:
            conn.sock.setblocking(False)
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        except BaseException:
            conn.sock.close()
            raise
        self.live.add(conn)
        self._send(conn)

    def _send(self, conn: _Connection) -> None:
        try:
            # (sent with the socket's own timeout: a request is sent whole or not at all)
            conn.sock.settimeout(conn.timeout)
            conn.sock.sendall(self.requests[conn.index])
            conn.sock.setblocking(False)
        except Exception as exc:
            self._failed(conn, exc)
            return
        self.sent += 1
        conn.wait()

    def _read(self, conn: _Connection) -> None:
        pending = getattr(conn.sock, "pending", None)  # (TLS: bytes decrypted ahead)
        had = len(conn.lines.buffer)
        try:
            while True:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    self._failed(conn, _Malformed("connection closed before the answer"))
                    return
                conn.lines.buffer += chunk
                if pending is None or not pending():
                    break
        except Exception as exc:
            if not _nothing_yet(exc):  # (else no byte yet: a TLS record not whole, a ticket)
                self._failed(conn, exc)
                return
        if len(conn.lines.buffer) == had:  # (nothing for us: the deadline stands)
            return
        conn.wait()
        if not conn.may_hold_answer():
            return
        reader = _Buffered(conn.lines.buffer)
        try:
            answer, keep = read_answer(reader)
        except _Incomplete:
            conn.scanned = len(conn.lines.buffer)
            return
        except Exception as exc:  # a malformed answer
            self._failed(conn, exc)
            return
        del conn.lines.buffer[: reader.at]
        conn.scanned = 0
        conn.answered += 1
        self.answers[conn.index] = answer
        try:
            going_on = self.seen(conn.index, answer) and keep
        except Exception as exc:
            self._failed(conn, exc)
            return
        if conn.lines.buffer:
            # Bytes past the answer, with one request in flight: what nobody asked for. Sent
            # to this connection's next request, they would be taken for its answer, and every
            # answer after it for the one before: given up (closed, never kept).
            self._failed(conn, _Malformed("bytes past the answer, unasked"))
            return
        index = self.queue.take() if going_on else None
        if index is None:
            self._end(conn, clean=going_on)
            return
        conn.index = index
        self._send(conn)

    def _failed(self, conn: _Connection, exc: BaseException) -> None:
        """Give the connection up (its request in flight unanswered); a kept one that failed
        before its first answer (the server closed it as it was taken) is replaced, once, by a
        new one that asks the same request again: a HEAD may be."""
        log.debug("many HEADs: connection given up: %s", exc)
        self._end(conn, clean=False)
        if conn.kept and conn.answered == 0 and not self.queue.stop:
            self._open(conn.index, fresh=True)

    def _end(self, conn: _Connection, *, clean: bool) -> None:
        self.live.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        if clean:
            try:
                conn.sock.settimeout(conn.timeout)  # (as it was before the batch)
            except OSError:
                conn.sock.close()
                return
            self.pool.give_back(conn.sock, conn.lines)
        else:
            conn.sock.close()

    def _close(self) -> None:
        for conn in list(self.live):
            self._end(conn, clean=False)
        with self.lock:
            self.done = True
            opened, self.opened = self.opened, []
        for sock, _ in opened:
            if sock is not None:
                sock.close()
        try:  # the caller's permits stay taken until no connection is left open
            for thread in self.connecting:
                thread.join()
        finally:
            self.selector.close()
            os.close(self.wake_read)
            os.close(self.wake_write)


def _nothing_yet(exc: Exception) -> bool:
    """Whether a read of a non-blocking socket failed only for want of bytes yet."""
    if isinstance(exc, BlockingIOError):
        return True
    ssl = sys.modules.get("ssl")  # (loaded by whoever made a TLS socket, never here)
    return ssl is not None and isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError)


def many_heads(
    urls: Sequence[str],
    headers: dict[str, str],
    *,
    connections: int,
    connect: Callable[[], socket.socket] | HeadConnections,
    on_answer: Callable[[HeadAnswer], bool] = lambda answer: True,
    each: Callable[[int, HeadAnswer], None] | None = None,
    wanted: Callable[[int], bool] | None = None,
) -> tuple[list[HeadAnswer | None], int]:
    """HEAD every URL of ``urls`` (all of one origin) with ``headers`` over up to
    ``connections`` connections from ``connect`` (one request in flight on each, all of them
    served by the calling thread): new ones from a function, or kept ones from
    :class:`HeadConnections` (which keeps them again after a clean batch).

    Returns the answers in the order of ``urls`` (None where none came) and the number of
    requests sent. ``on_answer`` sees every answer as it comes; False stops the whole batch.
    ``each`` is given every answer with the index of its URL as it comes, before
    ``on_answer`` and before its connection asks again (what it makes of the answers is made
    while the others are still asked, not after the last); an exception from it gives its
    connection up, as a malformed answer does. Any status but 200 and 404 ends its
    connection's work. ``wanted`` is asked, as each URL's turn comes (in order), whether it is
    still wanted: one that is not is never sent (its answer stays None).
    """
    answers: list[HeadAnswer | None] = [None] * len(urls)
    if not urls:
        return answers, 0
    batch: _Batch

    def seen(index: int, answer: HeadAnswer) -> bool:
        try:
            if each is not None:
                each(index, answer)
        finally:  # (even after a failing ``each``: a refusal still stops the whole batch)
            going_on = on_answer(answer)
            if not going_on:
                batch.queue.stop = True
        return going_on and answer.status in (200, 404)

    pool = connect if isinstance(connect, HeadConnections) else HeadConnections(connect, 0)
    requests = [_request_bytes(url, headers) for url in urls]
    batch = _Batch(requests, answers, pool, seen, wanted)
    return answers, batch.run(max(1, min(connections, len(urls))))


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
