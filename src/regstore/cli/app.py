"""The ``regstore`` click group, its global options, and the per-run state commands share.

Global options may be written before the command (``regstore --json ls``) or after it
(``regstore ls --json``). The state opens the store and builds registry clients lazily, so a
command pays only for what it uses.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from regstore.errors import RegstoreError, StoreNotFoundError, UsageError
from regstore.safetext import MASK, printable, redact_store_url, store_url_secrets

from . import startup
from .output import EXIT_FAILURE, EXIT_USAGE, INTERRUPTED_HINT, Output, usage_hint

# Only click and the leaves at import: `regstore --help` (and shell completion) must start fast,
# so the store, the client, the engine, plugins and rich are imported where they are used, and
# the commands' own modules when a command is run (LazyGroup; cli/__init__.py lists them).
if TYPE_CHECKING:
    from regstore.client import Client
    from regstore.engine.syncfile import ConnectionSpec, SyncSpec
    from regstore.store import ObjectStore

    from .progress import ProgressDisplay

__all__ = [
    "AppState",
    "DeferredClient",
    "cli",
    "default_store_url",
    "global_options",
    "regstore_command",
]

log = logging.getLogger("regstore.cli")

F = TypeVar("F", bound=Callable[..., Any])

STORE_ENV = "REGSTORE_STORE"
#: The most blobs moved at once (``regstore.engine.transfer.MAX_CONCURRENCY``, which is not
#: imported here for start-up time; tests/test_cli_startup.py checks they agree).
MAX_CONCURRENCY = 64

EPILOG = """\b
Images:
  registry   HOST[:PORT]/NAME[:TAG|@DIGEST], e.g. 127.0.0.1:5000/team/app:1.2,
             alpine (= docker.io/library/alpine:latest); docker:// may prefix it
  store      store:NAME[:TAG|@DIGEST], e.g. store:team/app:1.2, in the store of --store

\b
Store: --store URL, else $REGSTORE_STORE, else a directory store in the user data
directory (e.g. ~/.local/share/regstore). URLs: file:///path (or a path),
memory://name, s3://bucket/prefix (pip install regstore-s3), ?layout=oci.

\b
Exit codes:
    0  success
    1  failure (an image failed, the store is damaged, a registry refused, ...)
    2  usage error (bad option, argument, reference or sync file)
  130  interrupted (Ctrl-C); SIGTERM stops it alike, then ends it by that signal
  141  its output was closed (| head)
"""


def default_store_url() -> str:
    """The store used when neither --store nor REGSTORE_STORE says otherwise."""
    import platformdirs

    return Path(platformdirs.user_data_dir("regstore")).as_uri()


@dataclass
class Settings:
    """The global options of one run."""

    store: str | None = None
    #: --store was written on the command line (not taken from REGSTORE_STORE)
    store_given: bool = False
    plain_http: bool = False
    ca_cert: str | None = None
    insecure: bool = False
    username: str | None = None
    password_stdin: bool = False
    verbose: int = 0
    quiet: bool = False
    json: bool = False
    concurrency: int | None = None
    retries: int | None = None
    chunk_size: int | None = None


class DeferredClient:
    """A registry client made when first used (any attribute but :attr:`registry`): a re-sync
    whose tags and digests were all asked early (:mod:`regstore.client.early`) never makes
    one, nor imports ``requests``."""

    def __init__(self, registry: str, make: Callable[[], Client]) -> None:
        #: the registry as its client names it (``Client.registry``)
        self.registry = registry
        self._make = make
        self._client: Client | None = None
        self._lock = threading.Lock()

    def made(self) -> Client:
        """The client (made now, once, if not yet)."""
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_make", "_client", "_lock"):
            raise AttributeError(name)  # (copy and pickle look for these before __init__)
        return getattr(self.made(), name)


@dataclass
class AppState:
    """Shared by the commands of one run: settings, output, the store and registry clients."""

    settings: Settings = field(default_factory=Settings)
    action: str = ""  #: what is being done, for the error line ("pulling X")
    _output: Output | None = None
    _stores: dict[tuple[str, bool], ObjectStore] = field(default_factory=dict)
    _clients: dict[tuple[Any, ...], Client] = field(default_factory=dict)
    _deferred: dict[tuple[Any, ...], DeferredClient] = field(default_factory=dict)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: the one registry the global --username/--password-stdin go to in this run
    _credentials_host: str | None = None
    _password: str | None = None
    _password_read: bool = False
    _warned_insecure: bool = False

    # -- output -----------------------------------------------------------------------------

    @property
    def output(self) -> Output:
        if self._output is None:
            self._output = Output(json_mode=self.settings.json, quiet=self.settings.quiet)
        return self._output

    def progress(self) -> ProgressDisplay:
        """The progress display for this run (see :mod:`regstore.cli.progress`)."""
        with startup.imports():
            from .progress import make_progress

        return make_progress(
            json_mode=self.settings.json, quiet=self.settings.quiet, clean=self.output.shown
        )

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency or 4

    @property
    def chunk_size(self) -> int:
        """The PATCH size of a chunked push: ``--chunk-size``, else the engine's default."""
        from regstore.engine.options import DEFAULT_CHUNK_SIZE

        return self.settings.chunk_size or DEFAULT_CHUNK_SIZE

    @property
    def monolithic_threshold(self) -> int:
        """Blobs up to this size are pushed in one PUT: never above ``--chunk-size`` (no
        request body larger than it)."""
        from regstore.engine.options import DEFAULT_MONOLITHIC_THRESHOLD

        return min(self.chunk_size, DEFAULT_MONOLITHIC_THRESHOLD)

    # -- the store ----------------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        return self.settings.store or default_store_url()

    @property
    def shown_store_url(self) -> str:
        """The store URL as printed: credentials in it are masked."""
        return redact_store_url(self.store_url)

    def store(
        self, url: str | None = None, *, must_exist: bool = False, read_only: bool = False
    ) -> ObjectStore:
        """Open (once) the store at ``url``, default the run's store.

        ``must_exist`` (reading commands): a URL where nothing was ever stored is an error
        (StoreNotFoundError), not an empty store; opening creates nothing either way.
        ``read_only`` (commands that only look): every change is refused (StoreReadOnlyError).
        With ``-vv`` the store is traced; :meth:`report_store_metrics` prints what it did.
        """
        url = url or self.store_url
        key = (url, read_only)
        if key not in self._stores:
            # a sync file may name another store: its secrets are masked like --store's
            self.output.secrets.extend(store_url_secrets(url))
            mode = " (read-only)" if read_only else ""
            log.info("opening the store %s%s", redact_store_url(url), mode)
            with startup.imports():  # the store's, the plugins' modules, the backend's stack
                from regstore.store import open_store

                self._stores[key] = open_store(
                    url, read_only=read_only, trace=self.settings.verbose > 1
                )
        store = self._stores[key]
        if must_exist and not store.exists():
            raise StoreNotFoundError(redact_store_url(url))
        return store

    # -- registries ---------------------------------------------------------------------------

    def password(self) -> str | None:
        """The password given on stdin (read once), or None."""
        if not self._password_read:
            self._password_read = True
            if self.settings.password_stdin:
                line = sys.stdin.readline()
                self._password = line.rstrip("\r\n")
                if not self._password:
                    raise click.UsageError("--password-stdin: nothing was read from stdin")
                self.output.secrets.append(self._password)
        return self._password

    def warn_insecure(self, host: str) -> None:
        if not self._warned_insecure:
            self._warned_insecure = True
            self.output.warning(
                f"--insecure: TLS certificates of {host} are NOT verified; anyone on the "
                "network path can read or alter images and credentials"
            )

    def global_credentials_for(self, hosts: Iterable[str]) -> None:
        """Refuse (UsageError) when the global --username/--password-stdin would go to more
        than one registry in this run (with those already given them): a copy or sync sent
        the destination's password to its source too (to Docker Hub's token server, say)."""
        if self.settings.username is None:
            return
        wanted = sorted({*hosts, *filter(None, [self._credentials_host])})
        if len(wanted) > 1:
            raise UsageError(
                f"--username would send one password to {' and '.join(wanted)}: give each "
                "registry its own credentials (`regstore login HOST`, or a sync file's "
                "username: and password_env:) and leave --username out"
            )
        if wanted:
            self._credentials_host = wanted[0]

    def sync_clients(
        self, spec: SyncSpec, *, deferred: bool = False
    ) -> Callable[[ConnectionSpec], Client]:
        """The client of each registry of a sync file, with the credentials the file gives
        it; the global ones go to one of them only (decided here, before any is asked). With
        ``deferred``, each is a :class:`DeferredClient`, made when first used."""
        connections = (spec.target.connection, *(s.connection for s in spec.sources))
        self.global_credentials_for(
            c.registry for c in connections if c is not None and c.username is None
        )

        def client_for(conn: ConnectionSpec) -> Client:
            password = conn.password()  # (a variable not set fails now, not on first use)

            def make() -> Client:
                return self.client(
                    conn.registry,
                    plain_http=conn.plain_http,
                    tls_verify=conn.tls_verify,
                    ca_cert=conn.ca_cert,
                    username=conn.username,
                    password=password,
                )

            if not deferred:
                return make()
            with startup.imports():
                from regstore.client.urls import Endpoint
            plain, verify = self.transport_for(
                plain_http=conn.plain_http, tls_verify=conn.tls_verify, ca_cert=conn.ca_cert
            )
            # what making the client says and hides, said and hidden now (it may never be made)
            self.warn_if_insecure(conn.registry, plain, verify)
            if password:
                self.output.secrets.append(password)
            key = (conn, password)
            if key not in self._deferred:
                registry = Endpoint.parse(conn.registry, plain_http=plain).registry
                self._deferred[key] = DeferredClient(registry, make)
            return cast("Client", self._deferred[key])

        return client_for

    def transport_for(
        self, *, plain_http: bool | None, tls_verify: bool, ca_cert: str | None
    ) -> tuple[bool | None, bool | str]:
        """How a registry's client connects, the global options applied to its own: plain
        HTTP (None: on loopback only) and what verifies its certificate (False: nothing)."""
        s = self.settings
        insecure = s.insecure or not tls_verify
        verify: bool | str = False if insecure else (ca_cert or s.ca_cert or True)
        plain = True if s.plain_http else plain_http
        if plain is None and isinstance(verify, str):
            plain = False  # a CA given for it: the registry speaks TLS, on loopback too
        return plain, verify

    def warn_if_insecure(self, host: str, plain: bool | None, verify: bool | str) -> None:
        """Warn (once) when ``host`` is reached over TLS without checking its certificate (a
        plain-HTTP connection has no certificate to skip)."""
        from regstore.client.urls import is_loopback_host

        if verify is False and not (plain or (plain is None and is_loopback_host(host))):
            self.warn_insecure(host)

    def client(
        self,
        host: str,
        *,
        plain_http: bool | None = None,
        tls_verify: bool = True,
        ca_cert: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Client:
        """A registry client for ``host``; explicit credentials beat the global ones, which beat
        credential plugins, which beat docker's config (the client's own default)."""
        with startup.imports():
            from regstore import plugins
            from regstore.client import Client

        s = self.settings
        plain, verify = self.transport_for(
            plain_http=plain_http, tls_verify=tls_verify, ca_cert=ca_cert
        )
        self.warn_if_insecure(host, plain, verify)
        if username is None and s.username is not None:
            self.global_credentials_for([host])
            username, password = s.username, self.password()
        if password:
            self.output.secrets.append(password)
        key = (host, plain, verify, username)
        with self._clients_lock:  # (deferred clients are made by whichever thread needs one)
            if key not in self._clients:
                log.info(
                    "registry %s: plain_http=%s, verify=%s, user=%s", host, plain, verify, username
                )
                retries: dict[str, Any] = {}
                if s.retries is not None:
                    retries["retries"] = s.retries
                self._clients[key] = Client(
                    host,
                    plain_http=plain,
                    verify=verify,
                    username=username,
                    password=password,
                    credentials=plugins.credentials_for,
                    **retries,
                )
            return self._clients[key]

    def prepare(self) -> None:
        """Check option combinations and set up logging, once every option is parsed."""
        s = self.settings
        if s.store:
            self.output.secrets.extend(store_url_secrets(s.store))
        configure_logging(s.verbose, self.output)
        if s.password_stdin and s.username is None:
            raise click.UsageError("--password-stdin needs --username")
        if s.username is not None and not s.password_stdin:
            if sys.stdin.isatty():
                self._password = click.prompt(f"Password for {s.username}", hide_input=True)
                self._password_read = True
                self.output.secrets.append(self._password or "")
            else:
                raise click.UsageError("--username needs --password-stdin (or a terminal to ask)")
        if s.quiet and s.verbose:
            raise click.UsageError("--quiet and --verbose contradict each other")

    def report_store_metrics(self) -> None:
        """With -vv: each traced store's operations (calls, errors, total and max time) on
        stderr, through the output (secrets masked, control characters escaped)."""
        from regstore.store import TRACER

        for store in self._stores.values():
            if store.get_wrapper(TRACER) is None:
                continue
            metrics = store.metrics()
            calls = sum(m.count for m in metrics.values())
            seconds = sum(m.total_seconds for m in metrics.values())
            mode = " (read-only)" if store.read_only else ""
            lines = [
                f"regstore: store {redact_store_url(store.url)}{mode}: {calls} operation(s), "
                f"{seconds * 1000:.1f} ms in the store"
            ]
            if metrics:
                lines.append(
                    f"  {'OPERATION':<20} {'CALLS':>7} {'ERRORS':>7} {'TOTAL':>10} {'MAX':>10}"
                )
            for m in metrics.values():
                lines.append(
                    f"  {m.operation:<20} {m.count:>7} {m.errors:>7} "
                    f"{m.total_seconds * 1000:>8.1f}ms {m.max_seconds * 1000:>8.1f}ms"
                )
            out = self.output
            out.stderr.write("".join(out.shown(line) + "\n" for line in lines))
            out.stderr.flush()

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self.close_connections()

    def close_connections(self) -> None:
        """Close the registry clients' pooled connections (they open new ones when used)."""
        for client in self._clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                close()


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Store a global option on the shared state when it was given (on the group or command).

    Every global option defaults to None, False or (counted) 0, which means "not given here"
    and leaves what the group (or the environment) set.
    """
    counted = isinstance(param, click.Option) and param.count
    if param.name is None or value is None or value is False or (counted and value == 0):
        return value
    state = ctx.ensure_object(AppState)
    setattr(state.settings, param.name, value)
    if param.name == "store":
        source = ctx.get_parameter_source(param.name)
        state.settings.store_given = source is click.core.ParameterSource.COMMANDLINE
    return value


if TYPE_CHECKING:  # click >= 8.4 types its ParamType generically; older ones are not generic
    _IntParamType = click.ParamType[int]
else:
    _IntParamType = click.ParamType


class _Size(_IntParamType):
    """A byte count: ``67108864``, ``64MiB``, ``64M``, ``100MB``, ``1GiB`` (1 MiB ... 5 GiB)."""

    name = "size"
    _UNITS = {
        "": 1,
        "k": 1000,
        "kb": 1000,
        "ki": 1024,
        "kib": 1024,
        "m": 1 << 20,
        "mb": 1000**2,
        "mi": 1 << 20,
        "mib": 1 << 20,
        "g": 1 << 30,
        "gb": 1000**3,
        "gi": 1 << 30,
        "gib": 1 << 30,
    }

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip().lower()
            digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
            unit = self._UNITS.get(text[len(digits) :].strip())
            if not digits.strip().isdigit() or unit is None:
                self.fail(f"{value!r} is not a size (use bytes or 64MiB, 100MB, 1GiB)", param, ctx)
            number = int(digits) * unit
        if not 1 << 20 <= number <= 5 << 30:
            self.fail(f"{value!r} is outside 1MiB ... 5GiB", param, ctx)
        return number


_SIZE = _Size()


def _global_option_decorators(*, on_group: bool) -> list[Callable[[F], F]]:
    common: dict[str, Any] = {"expose_value": False, "callback": _remember}
    # the environment is read once, by the group: a command's own --store would otherwise
    # replace a --store written before the command with $REGSTORE_STORE
    env: dict[str, Any] = {"envvar": STORE_ENV, "show_envvar": True} if on_group else {}
    return [
        click.option(
            "--store",
            metavar="URL",
            **env,
            help="Store to use (default: a directory store in the user data directory).",
            **common,
        ),
        click.option(
            "--plain-http", is_flag=True, help="Talk plain HTTP to registries (no TLS).", **common
        ),
        click.option(
            "--ca-cert",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="CA certificate bundle to verify registries with (HTTPS then, a loopback "
            "registry's too, which is otherwise spoken to in plain HTTP).",
            **common,
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Do not verify TLS certificates (unsafe; warned about on stderr).",
            **common,
        ),
        click.option("--username", metavar="NAME", help="Registry user name.", **common),
        click.option(
            "--password-stdin",
            is_flag=True,
            help="Read the registry password from the first line of stdin.",
            **common,
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            help="Log what happens; tracebacks (-vv: debug logs, and what each store did).",
            **common,
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress or summaries.", **common),
        click.option(
            "--json",
            is_flag=True,
            help="Print one JSON result on stdout and nothing else.",
            **common,
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, MAX_CONCURRENCY),
            metavar="N",
            help="Blobs moved at once (default 4; in each process of a sync in several; "
            "giving it keeps a sync in one process unless --processes says otherwise).",
            **common,
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 20),
            metavar="N",
            help="Retries of a failed registry request (default 5, with backoff).",
            **common,
        ),
        click.option(
            "--chunk-size",
            type=_SIZE,
            metavar="SIZE",
            help="Largest request body of a push, e.g. 64MiB (default 512MiB): lower it for a "
            "registry behind a proxy that caps request bodies.",
            **common,
        ),
    ]


def global_options(f: F, *, on_group: bool = False) -> F:
    """Accept the global options on a command too (``regstore ls --json``)."""
    for decorator in reversed(_global_option_decorators(on_group=on_group)):
        f = decorator(f)
    return f


#: A run of text that may be or hold a URL (quotes and spaces end one); and where a URL starts
#: in it: a scheme at a word's start, or a request target (urllib3's ``"PUT /v2/...?_state=...
#: HTTP/1.1"``, its retries' ``url: /path?query``, ``(url='/path?query')``).
_TOKEN = re.compile(r"""[^\s"'<>]+""")
_URL_START = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://|(?:^|(?<=[(=,\[]))/")
#: Punctuation of the sentence around a URL, kept out of it.
_TRAILING = ").,;:]"


def _redact_urls(text: str) -> str:
    """``text`` with every URL and request target redacted as regstore shows URLs: user info
    gone, the values of query parameters other than the API's own replaced (upload state and
    presigned signatures are bearer secrets, whoever logs them)."""
    return _TOKEN.sub(_redacted_token, text)


def _redacted_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if not any(sign in token for sign in "?@#"):  # nothing in it to hide: shown as it is
        return token
    start = _URL_START.search(token)
    if start is None:
        return token
    head, url = token[: start.start()], token[start.start() :].rstrip(_TRAILING)
    tail = token[len(head) + len(url) :]
    return head + _redacted_url(url) + tail


def _redacted_url(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        return redact_store_url(url)  # a store's URL (s3://KEY:SECRET@bucket/...)
    from regstore.client.urls import redact_url  # (only when a URL has something to hide)

    return redact_url(url)


class _MaskingFormatter(logging.Formatter):
    """Formats log records with every known secret masked (defence in depth: the client never
    logs credentials, but a third-party plugin or library might), every URL redacted (urllib3
    logs its request lines with their query strings: upload state, presigned signatures) and
    control characters escaped (a logged server answer must not drive the terminal)."""

    def __init__(self, output: Output) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.output = output

    def format(self, record: logging.LogRecord) -> str:
        text = _CREDENTIAL_HEADER.sub(_masked_header, _redact_urls(super().format(record)))
        return printable(self.output.mask(text), multiline=True)


#: A credential header as a library's debug lines print it: botocore logs the headers of each
#: request (``'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIA..., Signature=...'``) and
#: its canonical request (``x-amz-security-token:TOKEN``), whatever gave the credentials (the
#: environment, a profile, a role: values regstore never saw to mask them)
_CREDENTIAL_HEADER = re.compile(
    r"(?P<name>(?:proxy-)?authorization|x-amz-security-token|x-ms-copy-source-authorization"
    r"|cookie|set-cookie)(?P<sep>['\"]?\s*[:=]\s*)"
    r"(?:(?P<prefix>(?-i:b)?)(?P<quote>['\"])[^'\"\r\n]*(?P=quote)|[^\r\n]+)",
    re.IGNORECASE,
)


def _masked_header(match: re.Match[str]) -> str:
    quote = match.group("quote")
    value = f"{match.group('prefix')}{quote}{MASK}{quote}" if quote else MASK
    return f"{match.group('name')}{match.group('sep')}{value}"


#: Environment variables whose values are credentials a library may log (``-v``/``-vv``)
_SECRET_ENVIRONMENT = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)


def _environment_secrets() -> list[str]:
    """The credential values of the environment a library may log: those of
    :data:`_SECRET_ENVIRONMENT`, and the key and SAS parts of an Azure connection string."""
    found = [v for v in map(os.environ.get, _SECRET_ENVIRONMENT) if v]
    for part in os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
            found.append(value)
    return found


class _WarningLines(logging.Handler):
    """Without -v, regstore's warnings (a blob found damaged and fetched again, referrers left
    out of a rewritten index) as the command's warning lines: a NullHandler swallowed them.
    One for the process, writing to the output of the command running."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.output: Output | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # a broken plugin is said by `regstore plugins`, and by the one command that needs
        # it (its error): other commands run as if it were not installed
        if self.output is None or record.name in _QUIET_LOGGERS:
            return
        try:
            from . import progress  # (loaded already by any command drawing bars)

            drawing = progress.live[-1:]  # (the main thread may end the display meanwhile)
            if drawing:  # above the bars, not through them
                drawing[0].note(f"regstore: warning: {record.getMessage()}")
            else:
                self.output.warning(record.getMessage())
        except Exception:  # a warning never fails the command
            self.handleError(record)


_QUIET_LOGGERS = frozenset({"regstore.plugins"})
_warning_lines = _WarningLines()


def configure_logging(verbose: int, output: Output) -> None:
    """Warnings as warning lines; -v: INFO, -vv: DEBUG (including hook traces with
    REGSTORE_TRACE_PLUGINS=1) on stderr."""
    regstore_log = logging.getLogger("regstore")
    if verbose <= 0:
        _warning_lines.output = output
        if _warning_lines not in regstore_log.handlers:
            regstore_log.addHandler(_warning_lines)
        return
    _warning_lines.output = None  # the handler below shows them, with the rest
    output.secrets.extend(_environment_secrets())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter(output))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


_JSON_ASKED = "regstore.json"


def _json_asked(args: Iterable[str]) -> bool:
    """True if ``--json`` is among the command line's arguments (before a ``--``)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


class _JsonUsageError(click.UsageError):
    """A usage error shown as click shows it, after its JSON result on stdout."""

    @classmethod
    def of(cls, exc: click.UsageError) -> _JsonUsageError:
        # (format_message of a BadParameter names the parameter; its message does not)
        return cls(exc.format_message(), exc.ctx)

    def show(self, file: Any = None) -> None:
        error = {"message": printable(self.format_message()), "type": "UsageError",
                 "hint": usage_hint(self.ctx)}  # fmt: skip
        sys.stdout.write(json.dumps({"ok": False, "error": error}, indent=2) + "\n")
        sys.stdout.flush()
        super().show(file)


class LazyGroup(click.Group):
    """The ``regstore`` group: a command whose module is not imported yet is listed from
    :attr:`lazy_commands` (name -> module, short help) and its module is imported when the
    command is looked up to run (or for its own ``--help``). The module registers the command
    on this group as it is imported, like any other.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: name -> (module, short help) of the commands not imported yet
        self.lazy_commands: dict[str, tuple[str, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    # A usage error click finds (a missing argument, a bad option value) or a command raises
    # is shown by click's own handler on stderr; with --json a script reading stdout gets its
    # JSON result too, as for every other ending.
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        wanted = _json_asked(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _JsonUsageError.of(exc) if wanted else exc from None
        ctx.meta[_JSON_ASKED] = wanted
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, _JsonUsageError) or not ctx.meta.get(_JSON_ASKED):
                raise
            raise _JsonUsageError.of(exc) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            import importlib

            with startup.imports():
                importlib.import_module(self.lazy_commands[cmd_name][0])
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, with the short help of commands not imported yet from the table
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is not None and command.hidden:
                continue
            rows.append((name, "" if command is not None else self.lazy_commands[name][1]))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl(
                [
                    (
                        name,
                        self.commands[name].get_short_help_str(limit)
                        if name in self.commands
                        else click.Command(name, help=text).get_short_help_str(limit),
                    )
                    for name, text in rows
                ]
            )


#: The exit code of a command whose output's reader went away (128 + SIGPIPE, what a shell
#: reports for a program SIGPIPE stopped)
EXIT_BROKEN_PIPE = 141


def _stdout_gone() -> bool:
    """True if nobody reads stdout any more (a pipe whose reader closed it): a BrokenPipeError
    of a socket is another matter."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no such stdout, no poll on this system
        return False


#: Exit code of a command stopped by SIGTERM (128 + 15, as a shell reports it)
EXIT_TERMINATED = 143
#: A SIGTERM stopped the command of this process (see :func:`die_if_terminated`)
_terminated = False


def die_if_terminated() -> None:
    """After a command a SIGTERM stopped has cleaned up, end this process by that signal, as
    its default action would have: a supervisor tells a stop it asked for (systemd counts
    death by SIGTERM as a clean stop, an exit status of 143 as a failure)."""
    if not _terminated:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone: nothing to flush to
            stream.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _sigterm_stops_it(stopped: list[int]) -> Iterator[None]:
    """While the command runs, SIGTERM (systemd stopping a unit, ``timeout``, a pod's end)
    stops it as Ctrl-C does, so that its cleanups run (a bundle's partial file removed, staged
    writes closed, locks released); ``stopped`` records it. A second SIGTERM meanwhile ends
    the process on the spot. Only where SIGTERM has its default action (a caller that set
    its own keeps it), and only in the main thread (where Python runs handlers)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        global _terminated
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stopped.append(signum)
        _terminated = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def regstore_command(f: Callable[..., int | None]) -> Callable[..., None]:
    """Make ``f(state, **params) -> exit code`` a command body: global options accepted, logging
    set up, and any regstore error turned into one line on stderr and exit code 1."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        ctx = click.get_current_context()
        state = ctx.ensure_object(AppState)
        state.prepare()
        stopped: list[int] = []
        try:
            with _sigterm_stops_it(stopped):
                code = f(state, *args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            what = state.action or "the command"
            said = f"{what} was stopped (SIGTERM)" if stopped else f"{what} was interrupted"
            # a result on stdout with --json, as every other ending
            state.output.failed(said, "Interrupted", INTERRUPTED_HINT)
            code = EXIT_TERMINATED if stopped else 130
        except BrokenPipeError:
            if not _stdout_gone():
                raise
            # the reader of the output went away (| head): nothing more to say, nor anyone
            # to say it to; what the command was doing stopped there, as SIGPIPE would stop it
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            code = EXIT_BROKEN_PIPE
        except Exception as exc:  # one clear line; the traceback only with -v
            if state.settings.verbose:
                # (a chained requests error names its URL: upload state, a presigned signature)
                shown = _redact_urls(traceback.format_exc())
                sys.stderr.write(printable(state.output.mask(shown), multiline=True))
            if isinstance(exc, UsageError):  # input to fix: usage (a sync file, a store URL)
                state.output.failure("", exc)
                code = EXIT_USAGE
            else:
                if not isinstance(exc, RegstoreError):
                    log.debug("unexpected error", exc_info=True)
                state.output.failure(state.action, exc)
                code = EXIT_FAILURE
        if state.settings.verbose > 1:
            try:
                state.report_store_metrics()
            except Exception:  # a diagnostic never changes the outcome of the command
                log.debug("cannot report the store metrics", exc_info=True)
        ctx.exit(code or 0)

    return global_options(wrapper)


@click.group(
    cls=LazyGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(None, "-V", "--version", package_name="regstore", prog_name="regstore")
@functools.partial(global_options, on_group=True)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Move container images between OCI/Docker registries and stores.

    \b
    regstore pull 127.0.0.1:5000/team/app:1.2       registry -> store
    regstore push team/app:1.2 127.0.0.1:5000/app   store -> registry
    regstore copy SRC DST                           any -> any
    regstore sync mirror.yaml                       many images, incrementally
    regstore bundle create | import | ls | verify   air-gap bundles (OCI-layout tars, deltas)
    regstore ls | inspect | verify | gc | delete    look after the store
    regstore login | logout 127.0.0.1:5000          save or remove credentials
    """
    ctx.ensure_object(AppState)
    ctx.call_on_close(ctx.obj.close)
