"""``WWW-Authenticate`` challenges (RFC 9110 §11) and Docker token scopes.

A header may hold several challenges (``Bearer realm="...",scope="a b", Basic realm="x"``);
parameter values may be quoted and contain commas, spaces and escaped quotes. Scopes follow
the distribution token spec: ``type:name:action[,action]`` where the name itself may contain a
``:`` (a ``host:port`` component), so the type is cut at the first colon and the actions at the
last one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Challenge",
    "merge_scopes",
    "parse_www_authenticate",
    "repository_scope",
]

_TOKEN_STOP = frozenset(' \t,="')
_ACTION_ORDER = {"pull": 0, "push": 1, "delete": 2, "*": 3}


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``scheme`` (lowercased) and its parameters (names lowercased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter (the token endpoint for Bearer)."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` parameter (Bearer)."""
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The space-separated ``scope`` parameter, split."""
        return tuple(self.params.get("scope", "").split())


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _read_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in _TOKEN_STOP:
        i += 1
    return text[start:i], i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; returns (value, index after)."""
    out: list[str] = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def parse_www_authenticate(header: str | None) -> list[Challenge]:
    """Parse every challenge of a ``WWW-Authenticate`` header (empty list when absent).

    Tolerant: stray commas and spaces are skipped, an unterminated quote ends at the end of
    the header, a token68 value (``Negotiate abc==``) is kept as the ``token68`` parameter.
    """
    if not header:
        return []
    challenges: list[Challenge] = []
    current: Challenge | None = None
    i, n = 0, len(header)
    while i < n:
        i = _skip(header, i, " \t,")
        if i >= n:
            break
        if header[i] in '="':  # garbage where a token should be: skip one char
            i += 1
            continue
        token, j = _read_token(header, i)
        k = _skip(header, j, " \t")
        if current is not None and k < n and header[k] == "=":
            # name=value, or a token68 made of the token and '=' padding
            e = _skip(header, k, "=")
            after = _skip(header, e, " \t")
            if after >= n or header[after] == ",":
                current.params.setdefault("token68", token + header[k:e])
                i = after
                continue
            v = _skip(header, k + 1, " \t")
            if header[v] == '"':
                value, i = _read_quoted(header, v)
            else:
                value, i = _read_token(header, v)
                while i < n and header[i] == "=":  # tolerate '=' inside an unquoted value
                    more, i = _read_token(header, i + 1)
                    value += "=" + more
            current.params[token.lower()] = value
            continue
        current = Challenge(token.lower(), {})
        challenges.append(current)
        i = j
    return challenges


def _split_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    first, last = scope.find(":"), scope.rfind(":")
    if first <= 0 or last == first:
        return None
    actions = tuple(a for a in scope[last + 1 :].split(",") if a)
    return scope[:first], scope[first + 1 : last], actions


def repository_scope(name: str, *actions: str) -> str:
    """``repository:<name>:<actions>``, e.g. ``repository:library/alpine:pull,push``."""
    return f"repository:{name}:{','.join(actions)}"


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union of scopes, merging the actions of the same resource; sorted, canonical.

    ``merge_scopes(["repository:a:pull"], ["repository:a:push", "repository:b:pull"])`` is
    ``("repository:a:pull,push", "repository:b:pull")``. Unparseable scopes are kept as given.
    """
    resources: dict[tuple[str, str], set[str]] = {}
    opaque: set[str] = set()
    for group in groups:
        for scope in group:
            parsed = _split_scope(scope)
            if parsed is None:
                if scope:
                    opaque.add(scope)
                continue
            kind, name, actions = parsed
            resources.setdefault((kind, name), set()).update(actions)
    merged = [
        f"{kind}:{name}:{','.join(sorted(actions, key=lambda a: (_ACTION_ORDER.get(a, 9), a)))}"
        for (kind, name), actions in resources.items()
    ]
    return tuple(sorted(merged + sorted(opaque)))
