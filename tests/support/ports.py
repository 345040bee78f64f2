"""Loopback networking helpers shared by the test servers.

- :func:`free_port` picks an unused TCP port on 127.0.0.1.
- :func:`wait_for_http` polls a URL until it answers with an expected status.
- :class:`LoopbackHTTPServer` is a threaded ``http.server`` bound to 127.0.0.1 that runs in a
  background thread and, when stopped, also closes the keep-alive connections it still holds
  (otherwise a "stopped" server would keep answering on pooled client connections).
- :class:`QuietHandler` and :func:`iter_request_body` / :func:`read_request_body` are the
  HTTP/1.1 request-handler basics the token server, proxy and fake registry share.

Only the standard library is used here.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, TypeVar

LOOPBACK = "127.0.0.1"

__all__ = [
    "LOOPBACK",
    "LoopbackHTTPServer",
    "QuietHandler",
    "ServerStartError",
    "die_with_parent_prefix",
    "free_port",
    "iter_request_body",
    "read_request_body",
    "wait_for_http",
]


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its log tail when there is one."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The socket is closed before returning, so another process could grab the port before the
    caller binds it; the process-starting helpers therefore retry with a new port when a
    server fails with "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def die_with_parent_prefix() -> list[str]:
    """A command prefix that makes a server subprocess die when the test process dies.

    Fixtures stop their processes on normal teardown, but a runner killed hard (SIGKILL,
    pytest-timeout's ``os._exit``) would leave registries and moto servers behind. util-linux
    ``setpriv --pdeathsig TERM`` sets the parent-death signal and then execs the server, so no
    ``preexec_fn`` (unsafe with threads) is needed. The signal follows the *thread* that
    spawned the child, so it is only used from the main thread; elsewhere the prefix is empty.
    """
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


# urllib without any proxy: the environment may define HTTP(S)_PROXY, and loopback test servers
# must never be reached through one.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for_http(
    url: str,
    ok_statuses: Collection[int] = (200,),
    timeout: float = 15.0,
    *,
    proc: subprocess.Popen[Any] | None = None,
    interval: float = 0.05,
) -> int:
    """Poll ``GET url`` until it answers with one of ``ok_statuses``; return that status.

    ``proc``, when given, is the process that should serve ``url``: if it exits while we wait,
    :class:`ServerStartError` is raised at once instead of waiting for the timeout.
    Raises :class:`ServerStartError` on timeout, naming the last status or error seen.
    """
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(
                f"process exited with status {proc.returncode} before {url} answered"
            )
        try:
            with _NO_PROXY_OPENER.open(url, timeout=2.0) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:  # 4xx/5xx arrive as exceptions in urllib
            status = int(exc.code)
            exc.close()
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            status = -1
        if status in ok_statuses:
            return status
        if status != -1:
            last = f"HTTP {status}"
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{url} did not answer {sorted(ok_statuses)} within {timeout}s (last: {last})"
            )
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any] | None, log_file: IO[Any] | None = None) -> None:
    """Stop a server process (SIGTERM, then SIGKILL after 10 s) and close its log file."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if log_file is not None:
        with contextlib.suppress(OSError):
            log_file.close()


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 request handler that does not print every request to stderr.

    Subclasses must always send ``Content-Length`` (or close the connection) because the
    connection is kept alive between requests.
    """

    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is dropped after this many seconds so stray client pools
    # cannot pin handler threads forever.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging (tests record requests themselves)."""

    def send_simple(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        """Send a complete response with an exact ``Content-Length`` and keep the connection."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def abort_connection(self) -> None:
        """Drop the client connection now (no response or a partial one)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def iter_request_body(handler: BaseHTTPRequestHandler, chunk_size: int = 65536) -> Iterator[bytes]:
    """Yield the request body as it arrives: by ``Content-Length`` or chunked encoding.

    A request with neither has no body (HTTP/1.1 requests are never read to EOF).
    """
    te = (handler.headers.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        while True:
            line = handler.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection inside a chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Skip optional trailers up to the blank line that ends the message.
                while True:
                    trailer = handler.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        return
            remaining = size
            while remaining:
                data = handler.rfile.read(min(remaining, chunk_size))
                if not data:
                    raise ConnectionError("client closed the connection inside a chunk")
                remaining -= len(data)
                yield data
            handler.rfile.readline(3)  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    while length > 0:
        data = handler.rfile.read(min(length, chunk_size))
        if not data:
            raise ConnectionError("client closed the connection before the whole body was sent")
        length -= len(data)
        yield data


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read the whole request body (see :func:`iter_request_body`)."""
    return b"".join(iter_request_body(handler))


_S = TypeVar("_S", bound="LoopbackHTTPServer")


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` on 127.0.0.1 run in a daemon thread; ``stop()`` is final.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    daemon_threads = True
    # Close accepted sockets promptly on stop; do not join handler threads (they are daemons and
    # may be blocked on a client that never sends again).
    block_on_close = False

    def __init__(self, handler_class: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        super().__init__((LOOPBACK, port), handler_class)
        self._open_conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- addresses -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server_address[1])

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as used in image references."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}"

    # -- connection tracking -------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._open_conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._open_conns.discard(request)
        super().shutdown_request(request)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self: _S) -> _S:
        """Serve in a background daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection and close the listening socket."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        with self._conns_lock:
            conns = list(self._open_conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
