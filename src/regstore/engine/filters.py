"""Tag filters: which tags of a repository to move.

One value type, :class:`TagFilter`, serves the sync file (``tags:`` of a repository) and the
command line (``--include``, ``--exclude``, ``--semver``, ``--latest``). A filter is applied to
the tags a repository has, in this order:

1. ``exact``: only these tags (when the list is not empty);
2. ``include``: regular expressions (``re.search``, anchor them yourself with ``^``/``$``); a
   tag is kept when *any* of them matches (when the list is not empty);
3. ``exclude``: regular expressions; a tag is dropped when *any* of them matches;
4. ``semver``: a version range; only tags that are versions inside the range are kept, every
   other tag (``latest``, ``main``) is dropped;
5. ``latest``: keep the newest N of what is left.

Versions (parsed by the ``semver`` package, never by hand): a leading ``v`` is ignored and
missing minor/patch parts are zero, so ``v1.2.3``, ``1.2.3``, ``1.2`` (= 1.2.0) and ``1``
(= 1.0.0) are versions; ``1.2.3-rc1`` is a pre-release that sorts before ``1.2.3``. A range
keeps pre-releases that lie inside it (``>=1.2 <2`` keeps ``1.5.0-rc1``; drop them with an
``exclude`` pattern such as ``-rc``), but an exclusive upper bound also excludes the
pre-releases of that bound (``<2`` and ``1.x`` leave out ``2.0.0-rc1``), as users mean it.
Tags of four parts (``1.2.3.4``) or with leading zeros are not versions.

Ranges: comparators ``>=1.2``, ``>1.2.0``, ``<=2``, ``<2.0.0``, ``==1.4.2``, ``!=1.3.0``, a
bare version (equality), ``^1.2.3`` (>=1.2.3 <2.0.0; ``^0.2.3`` is <0.3.0), ``~1.2.3``
(>=1.2.3 <1.3.0), ``1.2.x`` / ``1.x`` / ``*``. Comparators separated by spaces or commas must
all hold; ``||`` separates alternatives (``>=1.2 <2 || >=3``).

Tags a registry lists that are not valid tags (``..``, ``-x``, 200 characters; a registry may
send anything) cannot name an image: :func:`partition_tags` separates them with the reason, so a
caller can report them and go on with the rest, and :meth:`TagFilter.select` never keeps one.

Order ("newest"): versions in version order (ties, such as ``v1.2`` and ``1.2.0``, by the tag
text) are newer than every tag that is not a version; those are in text order. So without any
version among the tags the order is plain text order. :meth:`TagFilter.select` returns the kept
tags oldest first in that order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regstore.errors import FilterError, InvalidReferenceError
from regstore.reference import validate_tag
from regstore.safetext import escaped

if TYPE_CHECKING:
    import semver

__all__ = [
    "FilterError",
    "InvalidTag",
    "SemverRange",
    "TagFilter",
    "parse_version",
    "partition_tags",
]

#: How much of an invalid tag a report shows (a hostile registry may list megabyte "tags").
_SHOWN_TAG_LENGTH = 64


@dataclass(frozen=True)
class InvalidTag:
    """A listed tag that is not a valid tag, and why (see :func:`partition_tags`)."""

    tag: object
    reason: str

    @property
    def shown(self) -> str:
        """The tag for a report line: escaped (no control characters) and cut short."""
        return escaped(self.tag if isinstance(self.tag, str) else repr(self.tag), _SHOWN_TAG_LENGTH)


def partition_tags(tags: Iterable[object]) -> tuple[list[str], list[InvalidTag]]:
    """Split listed tags into the valid ones (in the given order, duplicates dropped) and the
    invalid ones with the reason, so one bad tag never costs the others."""
    valid: list[str] = []
    invalid: list[InvalidTag] = []
    seen: set[str] = set()
    for tag in tags:
        try:
            validate_tag(tag)  # type: ignore[arg-type]
        except InvalidReferenceError as exc:
            invalid.append(InvalidTag(tag, exc.reason))
            continue
        assert isinstance(tag, str)
        if tag not in seen:
            seen.add(tag)
            valid.append(tag)
    return valid, invalid


def _is_valid_tag(tag: object) -> bool:
    try:
        validate_tag(tag)  # type: ignore[arg-type]
    except InvalidReferenceError:
        return False
    return True


def parse_version(tag: str) -> semver.Version | None:
    """The version a tag names (``v1.2`` → 1.2.0), or None when it is not a version."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    if not text[:1].isdigit():
        # a version starts with its major number: other tags need no parse, nor semver's import
        return None
    import semver  # late: a CLI command that meets no version tag never pays its import

    try:
        return semver.Version.parse(text, optional_minor_and_patch=True)
    except (ValueError, TypeError):
        return None


_COMPARATOR_RE = re.compile(r"(>=|<=|==|!=|>|<|=|\^|~)?\s*(.+)")
_WILDCARDS = frozenset({"x", "X", "*"})


def _bound(text: str, expression: str) -> semver.Version:
    version = parse_version(text)
    if version is None:
        raise FilterError(f"invalid semver range {expression!r}: {text!r} is not a version")
    return version


@dataclass(frozen=True)
class _Comparator:
    op: str
    version: semver.Version

    def holds(self, v: semver.Version) -> bool:
        if self.op == "<" and not self.version.prerelease:
            # "<1.3.0" means below 1.3.0 *and its pre-releases*: 1.3.0-rc1 is not "below 1.3"
            v = v.finalize_version()
        c = v.compare(self.version)
        return {
            ">=": c >= 0,
            ">": c > 0,
            "<=": c <= 0,
            "<": c < 0,
            "==": c == 0,
            "!=": c != 0,
        }[self.op]


def _wildcard(text: str, expression: str) -> list[_Comparator]:
    """``1.2.x`` → [>=1.2.0, <1.3.0]; ``1.x`` → [>=1.0.0, <2.0.0]; ``*`` → []."""
    parts = text.lstrip("vV").split(".")
    fixed: list[int] = []
    for part in parts:
        if part in _WILDCARDS:
            break
        if not part.isdigit():
            raise FilterError(f"invalid semver range {expression!r}: bad wildcard {text!r}")
        fixed.append(int(part))
    if not fixed:
        return []
    import semver  # late: see parse_version

    low = semver.Version(*[*fixed, 0, 0, 0][:3])
    if len(fixed) == 1:
        high = low.bump_major()
    elif len(fixed) == 2:
        high = low.bump_minor()
    else:
        return [_Comparator("==", low)]
    return [_Comparator(">=", low), _Comparator("<", high)]


def _comparators(token: str, expression: str) -> list[_Comparator]:
    match = _COMPARATOR_RE.fullmatch(token)
    if match is None:  # pragma: no cover - the pattern matches any non-empty token
        raise FilterError(f"invalid semver range {expression!r}")
    op, text = match.group(1) or "==", match.group(2)
    if any(p in _WILDCARDS for p in text.lstrip("vV").split(".")):
        if op != "==" and op != "=":
            raise FilterError(
                f"invalid semver range {expression!r}: wildcards take no operator ({token!r})"
            )
        return _wildcard(text, expression)
    version = _bound(text, expression)
    if op == "=":
        op = "=="
    if op == "^":
        if version.major:
            high = version.bump_major()
        elif version.minor:
            high = version.bump_minor()
        else:
            high = version.bump_patch()
        return [_Comparator(">=", version), _Comparator("<", high)]
    if op == "~":
        return [_Comparator(">=", version), _Comparator("<", version.bump_minor())]
    return [_Comparator(op, version)]


@dataclass(frozen=True)
class SemverRange:
    """A parsed version range (see the module docstring for the syntax)."""

    expression: str
    alternatives: tuple[tuple[_Comparator, ...], ...] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, expression: str) -> SemverRange:
        """Parse ``expression``; FilterError names what is wrong."""
        if not isinstance(expression, str) or not expression.strip():
            raise FilterError("a semver range must be a non-empty string such as '>=1.2'")
        alternatives: list[tuple[_Comparator, ...]] = []
        for alternative in expression.split("||"):
            # "> = 1.2" is not allowed, but ">= 1.2" is: glue an operator to its version
            text = re.sub(r"(>=|<=|==|!=|>|<|=|\^|~)\s+", r"\1", alternative.strip())
            tokens = [t for t in re.split(r"[\s,]+", text) if t]
            if not tokens:
                raise FilterError(f"invalid semver range {expression!r}: empty alternative")
            comparators: list[_Comparator] = []
            for token in tokens:
                comparators.extend(_comparators(token, expression))
            alternatives.append(tuple(comparators))
        return cls(expression, tuple(alternatives))

    def contains(self, version: semver.Version) -> bool:
        """True if ``version`` is inside the range."""
        return any(all(c.holds(version) for c in alt) for alt in self.alternatives)

    def __str__(self) -> str:
        return self.expression


def _compile(patterns: Sequence[str], what: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise FilterError(f"{what} patterns must be strings, got {pattern!r}")
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise FilterError(f"invalid {what} regular expression {pattern!r}: {exc}") from None
    return tuple(compiled)


@dataclass(frozen=True)
class TagFilter:
    """Which tags to take; an empty filter takes every tag. Validated on construction."""

    exact: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    semver: str | None = None
    latest: int | None = None
    _include_re: tuple[re.Pattern[str], ...] = field(init=False, compare=False, repr=False)
    _exclude_re: tuple[re.Pattern[str], ...] = field(init=False, compare=False, repr=False)
    _range: SemverRange | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("exact", "include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        for tag in self.exact:
            if not isinstance(tag, str) or not tag:
                raise FilterError(f"tags must be non-empty strings, got {tag!r}")
            try:
                validate_tag(tag)
            except InvalidReferenceError as exc:
                raise FilterError(str(exc)) from None
        object.__setattr__(self, "_include_re", _compile(self.include, "include"))
        object.__setattr__(self, "_exclude_re", _compile(self.exclude, "exclude"))
        object.__setattr__(
            self, "_range", SemverRange.parse(self.semver) if self.semver is not None else None
        )
        if self.latest is not None and (
            not isinstance(self.latest, int) or isinstance(self.latest, bool) or self.latest < 1
        ):
            raise FilterError(f"latest must be a positive integer, got {self.latest!r}")

    @classmethod
    def from_options(
        cls,
        *,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        semver: str | None = None,
        latest: int | None = None,
        exact: Iterable[str] = (),
    ) -> TagFilter:
        """Build a filter from command-line style options (the ``--include`` ... flags)."""
        return cls(
            exact=tuple(exact),
            include=tuple(include),
            exclude=tuple(exclude),
            semver=semver,
            latest=latest,
        )

    @property
    def is_empty(self) -> bool:
        """True when the filter keeps every tag."""
        return not (self.exact or self.include or self.exclude or self.semver or self.latest)

    @property
    def needs_listing(self) -> bool:
        """True when the repository's tags must be listed (no exact list names them all)."""
        return not self.exact

    def matches(self, tag: str) -> bool:
        """True if ``tag`` passes every per-tag test (everything except ``latest``)."""
        if self.exact and tag not in self.exact:
            return False
        if self._include_re and not any(p.search(tag) for p in self._include_re):
            return False
        if any(p.search(tag) for p in self._exclude_re):
            return False
        if self._range is not None:
            version = parse_version(tag)
            if version is None or not self._range.contains(version):
                return False
        return True

    def select(self, tags: Iterable[str]) -> list[str]:
        """The tags to take from ``tags``, oldest first (see the module docstring).

        Invalid tags are never kept (:func:`partition_tags` finds them to report them).
        """
        kept = sorted({t for t in tags if _is_valid_tag(t) and self.matches(t)})
        ordered = order_tags(kept)
        if self.latest is not None:
            ordered = ordered[-self.latest :]
        return ordered

    def describe(self) -> str:
        """A short human form: ``include ^1\\. exclude -rc semver >=1.2 latest 3``."""
        parts: list[str] = []
        if self.exact:
            parts.append("tags " + ",".join(self.exact))
        parts += [f"include {p}" for p in self.include]
        parts += [f"exclude {p}" for p in self.exclude]
        if self.semver is not None:
            parts.append(f"semver {self.semver}")
        if self.latest is not None:
            parts.append(f"latest {self.latest}")
        return " ".join(parts) or "all tags"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the same keys as the sync file's ``tags:`` mapping)."""
        out: dict[str, Any] = {}
        if self.exact:
            out["exact"] = list(self.exact)
        if self.include:
            out["include"] = list(self.include)
        if self.exclude:
            out["exclude"] = list(self.exclude)
        if self.semver is not None:
            out["semver"] = self.semver
        if self.latest is not None:
            out["latest"] = self.latest
        return out


def order_tags(tags: Iterable[str]) -> list[str]:
    """Tags oldest first: tags that are not versions by text, then versions in version order.

    So with no versions among them the order is plain text order, and "the newest N" of a
    mixed list (``latest``, ``1.9``, ``1.10``) are the highest versions.
    """
    others: list[str] = []
    versioned: list[tuple[_VersionKey, str]] = []
    for tag in tags:
        version = parse_version(tag)
        if version is None:
            others.append(tag)
        else:
            versioned.append((_VersionKey(version), tag))
    versioned.sort()
    return sorted(others) + [t for _, t in versioned]


class _VersionKey:
    """Orders semver.Version values (which compare fine, but type checkers need the help)."""

    __slots__ = ("v",)

    def __init__(self, v: semver.Version | None) -> None:
        self.v = v

    def __lt__(self, other: _VersionKey) -> bool:
        assert self.v is not None and other.v is not None
        return bool(self.v.compare(other.v) < 0)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _VersionKey)
            and self.v is not None
            and other.v is not None
            and (self.v.compare(other.v) == 0)
        )

    __hash__ = None  # type: ignore[assignment]
