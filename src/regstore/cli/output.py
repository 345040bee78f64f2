"""What the command line prints: results (JSON, tables, plain lines), errors and exit codes.

- Results go to stdout: with ``--json`` one JSON document and nothing else; otherwise rich
  tables on a terminal and plain, tab-free aligned columns when stdout is a pipe or file.
- Errors are one line on stderr, ``regstore: error: <what> failed: <why> — try <hint>``;
  warnings ``regstore: warning: ...``. A known secret (the password given on stdin, the
  credentials of a store URL) is masked in anything printed, whatever produced the text.
- Everything printed for humans passes :func:`regstore.safetext.printable`: a registry's error
  message, a realm, a tag or file name may hold ESC/OSC sequences, and they reach the terminal
  as visible ``\\x1b`` escapes, never as commands. (JSON escapes control characters itself.)
"""

from __future__ import annotations

import errno
import json
import re
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from regstore.errors import (
    AuthenticationError,
    BackendNotFoundError,
    DamagedTagError,
    DigestMismatchError,
    ImageManifestNotFoundError,
    InsecureRealmError,
    InvalidReferenceError,
    LayerLockedError,
    PlatformNotFoundError,
    RegstoreError,
    RepositoryNotFoundError,
    RetriesExhaustedError,
    StoreDamageError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreURLError,
    SyncFileError,
    TransportError,
    UnexpectedHTTPStatusError,
    UsageError,
)
from regstore.safetext import MASK, MIN_MASKED_LENGTH, printable, secrets_pattern

if TYPE_CHECKING:  # rich is imported where a terminal needs it (start-up time of the CLI)
    from rich.console import Console

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "INTERRUPTED_HINT",
    "Output",
    "format_size",
    "hint_for",
    "short_digest",
    "usage_hint",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def format_size(n: int | None) -> str:
    """Binary units, as ``ls -h`` users expect: ``512 B``, ``12.3 KiB``, ``1.0 GiB``."""
    if n is None or n < 0:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def short_digest(digest: str, length: int = 12) -> str:
    """``sha256:0123456789ab`` (enough to recognise, like docker's short ids)."""
    algorithm, _, encoded = str(digest).partition(":")
    return f"{algorithm}:{encoded[:length]}" if encoded else str(digest)


#: Signs, in a TLS failure, that the server answered in plain HTTP (OpenSSL's words for it).
_PLAIN_HTTP_SIGNS = (
    "wrong version number",
    "wrong_version_number",
    "record layer failure",
    "unknown protocol",
    "packet length too long",
    "http request",
)
#: Signs that a connection broke in the middle of an exchange (after a response began).
_MID_TRANSFER_SIGNS = (
    "while reading the body",
    "stream ended",
    "incompleteread",
    "chunkedencodingerror",
    "connection broken",
)


def _chain_text(exc: BaseException) -> str:
    """The messages and class names of ``exc`` and its causes, lowercased."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # a regstore error's own message, without its [METHOD URL] (a host may say "tls")
        message = current.message if isinstance(current, RegstoreError) else str(current)
        parts.append(f"{type(current).__name__} {message}")
        current = current.__cause__ or current.__context__
    return " ".join(parts).lower()


def _transport_hint(exc: TransportError) -> str:
    """Suggest --plain-http only when it can help: the request went to an https:// URL and
    failed before any answer (a mid-body break proves the protocol was right)."""
    text = _chain_text(exc)
    https = exc.http is not None and exc.http.url.lower().startswith("https://")
    if https and any(sign in text for sign in _PLAIN_HTTP_SIGNS):
        return "the registry answers in plain HTTP: add --plain-http"
    if "ssl" in text or "certificate" in text or "tls" in text:
        return "give the registry's CA with --ca-cert FILE (or, unsafely, --insecure)"
    if "refused" in text or "resolve" in text or "name or service" in text:
        return "is the registry running at that address (host and port)?"
    if "registry too slow" in text:
        return "the registry answers, but sends too slowly (overloaded, or a path throttled)"
    if "token server too slow" in text:
        return (
            "the registry's token server answers, but sends too slowly (overloaded, or a path "
            "throttled)"
        )
    if any(sign in text for sign in _MID_TRANSFER_SIGNS):
        return "the connection broke during the transfer; run the command again (it resumes)"
    if https:
        return "is the registry reachable? if it speaks plain HTTP, add --plain-http"
    return "is the registry reachable (host, port, network)?"


#: Where a reference without a registry host goes (Docker Hub's API host)
_DOCKER_HUB_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io")


#: What to do after a command was interrupted (Ctrl-C, SIGTERM)
INTERRUPTED_HINT = "run the command again: a pull, push, copy or sync resumes where it stopped"


def usage_hint(ctx: click.Context | None) -> str:
    """The hint of a usage error: the command whose ``--help`` shows its usage (``ctx`` its
    click context; None: the command running, else the whole program)."""
    ctx = ctx or click.get_current_context(silent=True)
    path = ctx.command_path if ctx is not None else "regstore"
    return f"`{path} --help` shows its usage"


def hint_for(exc: BaseException) -> str:
    """What to try next for an error, or ``""``."""
    hint = _hint_for(exc)
    http = getattr(exc, "http", None)
    if http is not None and urlsplit(http.url).hostname in _DOCKER_HUB_HOSTS:
        # a newcomer's `inspect team/app:1.2` meant the store's image, and met Docker Hub
        where = (
            "a NAME:TAG without a registry host is a Docker Hub image (store:NAME:TAG names "
            "the store's)"
        )
        return f"{hint}; {where}" if hint else where
    return hint


def _hint_for(exc: BaseException) -> str:
    if isinstance(exc, InsecureRealmError):
        return (
            "the registry's token server should use https; if you accept the risk, --insecure "
            "allows it"
        )
    if isinstance(exc, AuthenticationError):
        return (
            "check the credentials: `regstore login HOST`, --username NAME --password-stdin, "
            "or a sync file's username: and password_env:"
        )
    if isinstance(exc, TransportError):
        return _transport_hint(exc)
    if (
        isinstance(exc, UnexpectedHTTPStatusError)
        and exc.status == 400
        and exc.http is not None
        and exc.http.url.startswith("http://")
        and not exc.http.codes
    ):
        # what a TLS port answers to plain HTTP (Go's servers: "Client sent an HTTP request
        # to an HTTPS server"); a registry's own 400s carry error codes
        return (
            "does the registry speak HTTPS? give its CA with --ca-cert FILE (a loopback "
            "registry is spoken to in plain HTTP otherwise)"
        )
    if isinstance(exc, UnexpectedHTTPStatusError) and exc.status == 405:
        return "the registry does not take this request here: is it read-only, or a mirror?"
    if isinstance(exc, UnexpectedHTTPStatusError) and exc.status == 413:
        if exc.http is not None and "/manifests/" in exc.http.url:
            # a manifest goes in one request whatever --chunk-size says
            return (
                "a proxy or the registry caps request bodies below this manifest's size: "
                "raise the cap (a proxy's client_max_body_size or the like)"
            )
        return (
            "a proxy or the registry caps request bodies: push in chunks smaller than its cap "
            "(--chunk-size 64MiB, or less)"
        )
    if isinstance(exc, RetriesExhaustedError):
        # the last failure says what may help; what moved so far is kept for the next run
        if isinstance(exc.__cause__, TransportError):
            return _transport_hint(exc.__cause__)
        return "the registry kept failing; run the command again later (it resumes)"
    if isinstance(exc, RepositoryNotFoundError):
        if exc.http is not None:  # the registry's answer
            return "check the repository name: the registry holds none of that name"
        return "check the repository name (`regstore ls` lists the store's repositories)"
    if isinstance(exc, PlatformNotFoundError):
        return (
            f"ask for {' or '.join(f'--platform {p}' for p in exc.offered)}, or leave out "
            "--platform"
            if exc.offered
            else "leave out --platform: the image names no platform"
        )
    if isinstance(exc, ImageManifestNotFoundError):
        host = urlsplit(exc.http.url).netloc if exc.http is not None else ""
        if ":" in host:  # the registry's answer; `ls` reads HOST:PORT/NAME as a registry's
            return f"check the tag or digest (`regstore ls {host}/{exc.name}` lists its tags)"
        if host:
            return "check the tag or digest: the registry holds no such manifest"
        return "check the name and tag or digest (`regstore ls NAME` lists a stored repository)"
    if isinstance(exc, (BackendNotFoundError, StoreNotFoundError, StoreReadOnlyError)):
        return ""  # its message already says what to install, to check the URL, or why not
    if isinstance(exc, DigestMismatchError):
        if exc.actual is None and None not in (exc.expected_size, exc.actual_size):
            # the source stated another size: asked again, it says the same
            return (
                "the source holds the blob at another size than the manifest says (or a "
                "proxy re-encodes it): running the command again will not help"
            )
        return "the content was corrupted on the way or at the source; run the command again"
    if isinstance(exc, LayerLockedError):
        return "another regstore process is writing it; try again when it is done"
    if isinstance(exc, StoreURLError):
        return "fix --store (or REGSTORE_STORE, or the sync file's store)"
    if isinstance(exc, SyncFileError):
        return "fix the sync file where the message says (README: “The sync file” lists its keys)"
    if isinstance(exc, UsageError):  # regstore's own (a tag filter, an option's value)
        return usage_hint(None)
    if isinstance(exc, DamagedTagError):
        return (
            "pull that image again to rewrite the tag, or delete the tag (`regstore delete "
            "store:NAME:TAG` always can); `regstore verify` lists every damaged tag"
        )
    if isinstance(exc, StoreDamageError):
        return "restore the file named from a backup, or repair it by hand"
    if isinstance(exc, StoreError) and isinstance(exc.__cause__, OSError):
        # the store's medium failed (a backend chains what the system said); a refusal, such
        # as gc's while a manifest cannot be read, says what to do itself
        return _medium_hint(exc.__cause__)
    if isinstance(exc, InvalidReferenceError):
        return "references look like HOST[:PORT]/NAME[:TAG|@DIGEST] or store:NAME[:TAG|@DIGEST]"
    return ""


def _medium_hint(error: OSError) -> str:
    """What to do when the store's file system refused: full, read-only, or another cause."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            "the store's file system is full: free space there (`regstore gc` removes "
            "unreferenced blobs and what interrupted writes left behind), then run the command "
            "again (it resumes)"
        )
    if error.errno == errno.EROFS:
        return "the store's file system is mounted read-only: remount it read-write"
    return "check the store URL (--store or REGSTORE_STORE) and that it is writable"


#: Regstore's own phrases that a password may be a word of. They are printed whatever the
#: password is, so a password found inside one is left there: asterisks in them would give the
#: password away (``login ... failed: *** username or password``). Only inside a whole phrase
#: longer than the secret: the same word standing anywhere else is masked, since text from
#: outside (a registry's message, a helper's output) may be echoing the secret.
OWN_PHRASES = (
    "regstore: error:",
    "regstore: warning:",
    "failed: wrong username or password",
    "access denied for user",
    "login to",
    "logging in to",
    "logging out of",
    "Login succeeded:",
    "did not ask for credentials, so they could not be checked; saving them anyway",
    "credential helper docker-credential-",
    "could not store the credentials for",
    "could not erase the credentials for",
    "Removed the credentials for",
    "Not logged in to",
    "no saved credentials",
)


def _own_phrase_spans(text: str) -> list[tuple[int, int]]:
    """Where :data:`OWN_PHRASES` stand in ``text`` (start, end)."""
    spans: list[tuple[int, int]] = []
    for phrase in OWN_PHRASES:
        start = text.find(phrase)
        while start >= 0:
            spans.append((start, start + len(phrase)))
            start = text.find(phrase, start + 1)
    return spans


def _inside(span: tuple[int, int], own: list[tuple[int, int]]) -> bool:
    """True if ``span`` is a strict part of one of the ``own`` spans (a secret that is a whole
    phrase by itself is no word of ours: it is masked)."""
    start, end = span
    return any(s <= start and end <= e and e - s > end - start for s, e in own)


class Output:
    """The printer of one command run (knows --json, --quiet and the secret to mask)."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.secrets: list[str] = []
        self._pattern_key: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def mask(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``, in every spelling text may give
        it (as is, JSON-escaped, ``repr``'d, URL-quoted: ``safetext.secret_spellings``).

        A secret is masked where it stands as a whole (not inside a longer run of letters and
        digits), only from :data:`MIN_MASKED_LENGTH` characters on, and never inside one of
        regstore's own phrases (:data:`OWN_PHRASES`): a password ``password`` or ``wrong``
        must not turn our own words into asterisks, which would show the secret by its holes
        while hiding the message. The same word anywhere else (a registry's or a helper's
        text, a URL) is masked.
        """
        pattern = self._secrets_pattern()
        if pattern is None:
            return text
        own = _own_phrase_spans(text)
        return pattern.sub(lambda m: m.group(0) if _inside(m.span(), own) else MASK, text)

    def _secrets_pattern(self) -> re.Pattern[str] | None:
        """The pattern of the secrets known now (built again only when they change)."""
        key = tuple(self.secrets)
        if self._pattern_key != key:
            self._pattern = secrets_pattern(key, MIN_MASKED_LENGTH)
            self._pattern_key = key
        return self._pattern

    def _mask_data(self, data: Any) -> Any:
        """``data`` (JSON-able) with secrets masked in every string, before it is encoded (in
        the encoded text a secret with quotes or non-ASCII letters no longer matches)."""
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, dict):
            return {self._mask_data(k): self._mask_data(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self._mask_data(v) for v in data]
        return data

    def shown(self, text: str) -> str:
        """``text`` as printed for humans: secrets masked, control characters escaped (one
        line: a newline in outside text could forge a line of our own)."""
        return printable(self.mask(text))

    @property
    def stdout_is_terminal(self) -> bool:
        return bool(getattr(self.stdout, "isatty", lambda: False)())

    def console(self) -> Console:
        """A rich console on stdout (plain text, no colour, when stdout is not a terminal)."""
        from rich.console import Console

        return Console(file=self.stdout, highlight=False, soft_wrap=not self.stdout_is_terminal)

    # -- results ---------------------------------------------------------------------------------

    def json(self, data: Any) -> None:
        """Print ``data`` as the one JSON document of this run."""
        self._write_json(self._mask_data(data))

    def _write_json(self, masked: Any) -> None:
        """Print ``masked`` (secrets masked already where they may be) as the JSON document."""
        self.stdout.write(json.dumps(masked, indent=2, default=lambda o: self.mask(str(o))))
        self.stdout.write("\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """A human result line on stdout (never in --json mode)."""
        if self.json_mode:
            return
        self.stdout.write(self.shown(text) + "\n")
        self.stdout.flush()

    def summary(self, text: str) -> None:
        """A human summary line on stdout, silenced by --quiet and --json."""
        if not self.quiet:
            self.line(text)

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[object]], title: str = ""
    ) -> None:
        """A table: rich on a terminal, aligned plain columns (with a header) otherwise."""
        if self.json_mode:
            return
        cells = [[self.shown(str(c)) for c in row] for row in rows]
        if self.stdout_is_terminal:
            from rich.table import Table
            from rich.text import Text

            table = Table(title=title or None, show_edge=False, header_style="bold")
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in cells:
                # Text, not str: a tag named "[blink]x" is shown, not taken as rich markup
                table.add_row(*(Text(c) for c in row))
            self.console().print(table)
            return
        widths = [len(c) for c in columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        for row in [list(columns), *cells]:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
            self.stdout.write("\n")
        self.stdout.flush()

    # -- diagnostics -----------------------------------------------------------------------------

    def error(self, message: str, hint: str = "") -> None:
        """The one error line on stderr (the hint is our own words: never masked)."""
        # one line first, then masked: a secret with a space or a newline in it is found whole
        text = f"regstore: error: {self.mask(' '.join(message.split()))}"
        if hint:
            text += f" — try: {' '.join(hint.split())}"
        self.stderr.write(printable(text) + "\n")
        self.stderr.flush()

    def warning(self, message: str) -> None:
        """A warning line on stderr (shown even with --quiet and --json)."""
        self.stderr.write(printable(f"regstore: warning: {self.mask(message)}") + "\n")
        self.stderr.flush()

    def note(self, message: str) -> None:
        """Information on stderr, silenced by --quiet and --json."""
        if self.quiet or self.json_mode:
            return
        self.stderr.write(self.shown(message) + "\n")
        self.stderr.flush()

    def failure(self, action: str, exc: BaseException) -> None:
        """Report ``exc`` (a failed ``action``, e.g. "pulling X") as one line; JSON too."""
        why = str(exc) if isinstance(exc, RegstoreError) else f"{type(exc).__name__}: {exc}"
        message = f"{action} failed: {why}" if action else why
        self.failed(message, type(exc).__name__, hint_for(exc))

    def failed(self, message: str, kind: str, hint: str) -> None:
        """The one error of this run: its line on stderr and, with --json, its document
        (``kind`` its type). The message is masked, never the hint: our own words, in which
        a secret that is one of them (``password``) must not show where it stands."""
        if self.json_mode:
            error = {"message": self.mask(message), "type": kind, "hint": hint or None}
            self._write_json({"ok": False, "error": error})
        self.error(message, hint)
