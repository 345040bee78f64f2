"""Text that is safe to show: store URLs without their secrets, outside text without controls.

- :func:`redact_store_url` is the one way a store URL is shown (errors, logs, ``describe``,
  ``repr``, ``--json``): user info (``s3://KEY:SECRET@bucket``) and the values of secret-looking
  query options (``secret=``, ``token=``, ``account_key=``, ``sig=``, ...) become ``***``.
  :func:`store_url_secrets` lists those same values, so a printer can mask them anywhere else
  they might surface (a third-party library's log line, a traceback).
- :func:`secret_spellings` lists the ways a secret is written in text that quotes it (JSON,
  ``repr``, URL-quoted); :func:`secrets_pattern` finds any of them as a whole, and
  :func:`mask_secrets` masks them in text that came from outside (a credential helper's answer).
- :func:`printable` neutralises control characters in text that came from outside (a
  registry's error message, a realm, a tag name, a store's file names) before it reaches a
  terminal: an ESC, BEL or CSI byte could otherwise clear the screen, retitle the window or
  forge output. Each becomes a visible escape (``\\x1b``, ``\\u202e``).
- :func:`shortened` cuts text that came from outside (a URL a registry named) to a length a
  one-line message can hold, saying how long it was; :func:`escaped` shows such text as
  ``repr`` does (backslashes, quotes and controls visible), cut the same way.

Only the standard library is used: the backends, the client and the CLI all import this.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterable

__all__ = [
    "SECRET_OPTION_WORDS",
    "SHOWN_LENGTH",
    "escaped",
    "is_secret_option",
    "mask_secrets",
    "printable",
    "redact_store_url",
    "secret_spellings",
    "secrets_pattern",
    "shortened",
    "store_url_secrets",
]

#: A query option whose (lowercased) name contains one of these carries a credential: ``key``,
#: ``secret``, ``token``, ``session_token``, ``password``, ``sas_token``, ``account_key``,
#: ``connection_string``, ``credential``, ``sig`` (Azure SAS), ``x-amz-signature``, ...
SECRET_OPTION_WORDS = (
    "key",
    "secret",
    "token",
    "passw",
    "pwd",
    "sas",
    "connection_string",
    "credential",
    "sig",
    "auth",
)

#: What replaces a secret.
MASK = "***"

#: Secrets shorter than this are not masked in free text (see :func:`store_url_secrets`).
MIN_MASKED_LENGTH = 4


def is_secret_option(name: str) -> bool:
    """True if a store URL query option of this name carries a credential."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_OPTION_WORDS)


def _split_plain_path(url: str) -> tuple[str, str]:
    """``(path, query)`` of a plain path store (``./mirror?key=x`` keeps a query-like tail)."""
    path, question, query = url.partition("?")
    return (path, query) if question else (url, "")


def redact_store_url(url: str) -> str:
    """``url`` as it may be shown: user info and secret option values replaced by ``***``.

    ``s3://KEY:SECRET@bucket/p?endpoint_url=http://h&secret=S`` is shown as
    ``s3://***@bucket/p?endpoint_url=http://h&secret=***``. A URL that cannot be parsed is
    shown as its scheme only (its secrets cannot be told apart from the rest).
    """
    if "://" not in url:
        path, query = _split_plain_path(url)
        return f"{path}?{_redact_query(query)}" if query else path
    try:
        parsed = urllib.parse.urlsplit(url)
        netloc = parsed.netloc
    except ValueError:
        return url.partition("://")[0] + "://" + MASK
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    # put together by hand: urlunsplit drops the "//" of schemes urllib does not know
    # (a plugin's dirstore:///tmp/a would be shown as dirstore:/tmp/a, which does not open)
    shown = f"{parsed.scheme}://{netloc}{parsed.path}"
    if parsed.query:
        shown += f"?{_redact_query(parsed.query)}"
    return f"{shown}#{MASK}" if parsed.fragment else shown


def _redact_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return urllib.parse.urlencode(
        [(k, MASK if is_secret_option(k) and v else v) for k, v in pairs], safe="*/:"
    )


def store_url_secrets(url: str) -> list[str]:
    """The secrets in a store URL (user info, secret option values), raw and decoded.

    Values shorter than :data:`MIN_MASKED_LENGTH` are left out: masking ``ab`` in every line
    would garble digests and sizes, and :func:`redact_store_url` still hides them wherever the
    URL itself is shown.
    """
    found: list[str] = []
    if "://" in url:
        try:
            parsed = urllib.parse.urlsplit(url)
        except ValueError:
            return []
        userinfo, at, _ = parsed.netloc.rpartition("@")
        if at:
            found.extend(userinfo.split(":", 1))
        query, fragment = parsed.query, parsed.fragment
        if fragment:
            found.append(fragment)
    else:
        query = _split_plain_path(url)[1]
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        if equals and is_secret_option(urllib.parse.unquote_plus(name)):
            found.append(value)
    decoded = [urllib.parse.unquote_plus(s) for s in found] + [
        urllib.parse.unquote(s) for s in found
    ]
    unique = dict.fromkeys(s for s in [*found, *decoded] if len(s) >= MIN_MASKED_LENGTH)
    # longest first, so a secret containing another is masked whole
    return sorted(unique, key=len, reverse=True)


#: How text that quotes a secret may have written it: JSON (ASCII-only, as ``json.dumps`` does by
#: default, and not), Python's ``repr`` (either quote style), URL-quoted (a path, a form).
_ENCODINGS: tuple[Callable[[str], str], ...] = (
    lambda s: json.dumps(s)[1:-1],
    lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    lambda s: repr(s)[1:-1],
    lambda s: repr('"' + s)[2:-1],  # the style of a repr that holds both quotes: \' escaped
    lambda s: urllib.parse.quote(s, safe=""),
    lambda s: urllib.parse.quote(s),
    lambda s: urllib.parse.quote_plus(s),
)


def secret_spellings(secret: str) -> list[str]:
    """The ways ``secret`` may be written in text: as is, in each of the encodings above, and
    in each encoding of those (a helper that echoes its JSON input with ``repr``), longest
    first (a spelling that contains another is masked whole). ``[]`` for ``""``."""
    if not secret:
        return []
    once = {encode(secret) for encode in _ENCODINGS}
    twice = {encode(s) for s in once for encode in _ENCODINGS}
    return sorted({secret, *once, *twice}, key=len, reverse=True)


def _whole(spelling: str) -> str:
    """A regex for ``spelling`` standing as a whole: not the middle of a longer run of
    letters and digits (``s3cr3t`` is not found in ``s3cr3tive``). An edge that is not a
    letter or digit needs no such boundary (``"x`` is found in ``a"x``)."""
    head = r"(?<![^\W_])" if spelling[0].isalnum() else ""
    tail = r"(?![^\W_])" if spelling[-1].isalnum() else ""
    return head + re.escape(spelling) + tail


def secrets_pattern(secrets: Iterable[str], min_length: int = 1) -> re.Pattern[str] | None:
    """A regex that finds any spelling of any of ``secrets`` (those of ``min_length``
    characters or more) standing as a whole; None when there is nothing to find."""
    spellings = {
        s for secret in secrets if len(secret) >= min_length for s in secret_spellings(secret)
    }
    if not spellings:
        return None
    ordered = sorted(spellings, key=len, reverse=True)
    return re.compile("|".join(_whole(s) for s in ordered))


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every spelling of every secret (of any length) replaced by ``***``: for
    text that came from outside as a whole (a credential helper's answer to a request that
    held the secret), where every occurrence may be an echo."""
    pattern = secrets_pattern(secrets)
    return pattern.sub(MASK, text) if pattern is not None else text


def _control_escapes() -> dict[int, str]:
    table: dict[int, str] = {}
    # C0 controls and DEL, C1 controls (0x9b is a one-byte CSI on some terminals)
    for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]:
        table[code] = f"\\x{code:02x}"
    # Unicode bidi overrides and isolates, line/paragraph separators: they reorder or break
    # what the reader sees without any escape sequence ("Trojan Source")
    for code in [0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F), *range(0x2066, 0x206A)]:
        table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _control_escapes()
_ESCAPES_MULTILINE = {k: v for k, v in _ESCAPES.items() if k not in (0x09, 0x0A)}


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character shown as an escape (``ESC`` → ``\\x1b``).

    ``multiline`` keeps newlines and tabs (tracebacks, multi-line notes); a carriage return is
    always escaped, since it lets the text overwrite what was printed before it.
    """
    return text.translate(_ESCAPES_MULTILINE if multiline else _ESCAPES)


#: How much of a text that came from outside a one-line message shows by default: a hostile
#: registry may name a 60,000-character URL.
SHOWN_LENGTH = 300


def shortened(text: str, limit: int = SHOWN_LENGTH) -> str:
    """``text`` cut to its first ``limit`` characters, followed by ``... (N characters)`` when
    it was longer (as an invalid tag is shown); as it is otherwise."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def escaped(text: str, limit: int = SHOWN_LENGTH) -> str:
    """``text`` written as ``repr`` writes a string, without the quotes (``\\`` for a
    backslash, ``\\x1b`` for ESC, ``\\u202e`` for a bidi override), cut to ``limit``
    characters with ``... (N characters)`` (N: the text's own) when longer: for showing the
    very characters that made a text suspect. Only the start of a long text is copied (a
    hostile registry may list a 40 MB "tag")."""
    shown = repr(text[: limit + 1])[1:-1]
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(text)} characters)"
