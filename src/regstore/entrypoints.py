"""The entry points of one group, as ``importlib.metadata.entry_points(group=...)`` gives them,
found without parsing every installed distribution's ``entry_points.txt``.

Every command of the CLI looks up its plugins (the group ``regstore``) before its first request.
``importlib.metadata`` parses the entry points of each distribution on ``sys.path`` to select one
group: in a virtualenv of 150 distributions that is about 10 ms of each start-up, against about
3 ms to list the same directories and look for the group's section header in each file. Only a
file that names the group is read, as ``importlib.metadata`` reads it, into entry points of the
same attributes (:class:`FoundEntryPoint`, its ``dist`` a :class:`FoundDistribution`): so
``importlib.metadata`` itself, whose import alone costs a start-up more than the lookup (it
loads ``email`` and ``zipfile``), is not imported at all; nor for a distribution's version
(:func:`installed_version`).

The discovery follows the standard path finder's (``importlib.metadata.MetadataPathFinder``, the
same in Python 3.10 to 3.13): ``.dist-info`` and ``.egg-info`` directories of each ``sys.path``
entry, in order, one distribution per normalized name (the first found, whether it has entry
points or not). Where anything else could take part (a zip archive or an ``.egg`` on
``sys.path``, a finder of distributions other than the standard one, the standard one missing,
a directory name whose distribution only its METADATA names), the answer is
``importlib.metadata``'s own.

One difference is deliberate: a distribution whose ``entry_points.txt`` does not name the group
is not parsed, so a malformed file of an unrelated package (which makes ``importlib.metadata``
raise for every group) does not stop regstore.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import os
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import importlib.metadata

__all__ = [
    "EntryPointLike",
    "FoundDistribution",
    "FoundEntryPoint",
    "entry_points",
    "installed_version",
    "installed_versions",
    "name_and_version",
]

_SUFFIXES = (".dist-info", ".egg-info")


class EntryPointLike(Protocol):
    """What regstore reads of an entry point: ``importlib.metadata.EntryPoint``'s attributes."""

    @property
    def name(self) -> str:
        """The entry point's name (a plugin's, in the group ``regstore``)."""
        ...

    @property
    def value(self) -> str:
        """What it names: ``module`` or ``module:attr``."""
        ...

    @property
    def group(self) -> str:
        """The group it is declared in."""
        ...

    @property
    def dist(self) -> Any:
        """The distribution declaring it (None where unknown)."""
        ...

    @property
    def module(self) -> str:
        """The module its value names."""
        ...

    def load(self) -> Any:
        """The object its value names (importing its module)."""
        ...


class FoundDistribution:
    """A distribution directory the fast way found: ``importlib.metadata.PathDistribution``'s
    ``read_text`` and ``metadata`` (the latter through it, importing it only then)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read_text(self, filename: str) -> str | None:
        """The file's text (UTF-8), None where there is none (as ``PathDistribution``)."""
        try:
            with open(os.path.join(self.path, filename), encoding="utf-8") as file:
                return file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            return None

    @property
    def metadata(self) -> Any:
        """The parsed metadata, as ``importlib.metadata`` gives it."""
        import importlib.metadata
        import pathlib

        return importlib.metadata.PathDistribution(pathlib.Path(self.path)).metadata

    def __repr__(self) -> str:
        return f"FoundDistribution({self.path!r})"


@functools.cache
def _value_pattern() -> re.Pattern[str]:
    # importlib.metadata.EntryPoint.pattern: module, then ``:attr``, then ``[extras]``
    return re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class FoundEntryPoint:
    """One entry point the fast way read: ``importlib.metadata.EntryPoint``'s ``name``,
    ``value``, ``group``, ``dist``, ``module``, ``attr`` and ``load``."""

    def __init__(self, name: str, value: str, group: str, dist: FoundDistribution) -> None:
        self.name, self.value, self.group, self.dist = name, value, group, dist

    def _match(self) -> re.Match[str]:
        match = _value_pattern().match(self.value)
        if match is None:
            raise ValueError(f"{self.value!r} is no entry point value (module or module:attr)")
        return match

    @property
    def module(self) -> str:
        """The module the value names."""
        return self._match().group("module")

    @property
    def attr(self) -> str | None:
        """The attribute path the value names in its module, if any."""
        return self._match().group("attr")

    def load(self) -> Any:
        """The module, or the object at ``attr`` in it (importing the module)."""
        match = self._match()
        found: Any = importlib.import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            found = getattr(found, attr)
        return found

    def __repr__(self) -> str:
        return f"FoundEntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def entry_points(group: str) -> list[EntryPointLike]:
    """The entry points of ``group``, one distribution per name (the first on ``sys.path``),
    in the order ``importlib.metadata.entry_points(group=group)`` lists them."""
    found = _scan(group)
    if found is None:
        import importlib.metadata

        return list(importlib.metadata.entry_points(group=group))
    return list(found)


def name_and_version(dist: Any) -> tuple[str | None, str | None]:
    """``dist.metadata["Name"]`` and ``["Version"]``; for a distribution on the file system read
    from the headers alone (``metadata`` parses the whole file, whose body is the project's long
    description, often its README). A header folded over several lines, which valid metadata
    never has, keeps its line break here where ``metadata`` re-indents it."""
    if not isinstance(dist, FoundDistribution) and not _is_path_distribution(dist):
        metadata = dist.metadata  # (a finder's own kind may keep its metadata elsewhere)
        return metadata["Name"], metadata["Version"]
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("") or ""
    headers = _headers(text)
    return headers.get("name"), headers.get("version")


def _headers(text: str) -> dict[str, str]:
    """The header fields of an RFC 822 text, by lower-case name, each its first occurrence,
    as ``email``'s parser reads them (its import costs more than this whole lookup): up to
    the first blank line or line that is no field; a line starting with a blank folds onto
    the field before it, kept as written."""
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for match in _LINE.finditer(text):  # (lazily: the body, a README often, is not split)
        line = match.group()
        if not line.strip("\r\n"):
            break
        if line.startswith("From "):  # (a Unix "From " line: email passes over it)
            continue
        if line[0] in " \t":
            if current is not None:
                current.append(line)
            continue
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            break
        current = [value.lstrip(" \t")]
        fields.setdefault(name.lower(), current)
    return {name: "".join(parts).rstrip("\r\n") for name, parts in fields.items()}


#: A line and its end, as ``email`` splits (CR, LF or CRLF only: not ``str.splitlines``' others)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
#: A header field's name, as ``email``'s parser takes one (printable ASCII but space and colon)
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]*")


def _is_path_distribution(dist: object) -> bool:
    # (without importlib.metadata imported, no PathDistribution exists: nothing to import)
    metadata = sys.modules.get("importlib.metadata")
    return metadata is not None and type(dist) is metadata.PathDistribution


def _normalize(name: str) -> str:
    # importlib.metadata's Prepared.normalize: PEP 503, dashes as underscores
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def _standard_finders_only() -> bool:
    """True when distributions come from sys.path's directories through the standard path
    finder alone."""
    path_finder = importlib.machinery.PathFinder
    if path_finder not in sys.meta_path or not hasattr(path_finder, "find_distributions"):
        return False
    return all(
        finder is path_finder or getattr(finder, "find_distributions", None) is None
        for finder in sys.meta_path
    )


class _Unanswerable(Exception):
    """Something on ``sys.path`` only ``importlib.metadata`` reads as it does."""


def _distributions() -> Iterator[tuple[str, str, str]]:
    """Each distribution the standard path finder finds, in its order, one per normalized
    name (the first on ``sys.path``): ``(sys.path entry, its metadata directory, its
    normalized name)``. Raises _Unanswerable where anything else could take part."""
    if not _standard_finders_only():
        raise _Unanswerable
    seen: set[str] = set()
    for entry in sys.path:
        if not isinstance(entry, str):
            raise _Unanswerable
        root = entry or "."
        if os.path.basename(root).lower().endswith(".egg"):
            raise _Unanswerable  # an egg's EGG-INFO: importlib's way
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.exists(root):
                raise _Unanswerable from None  # a zip archive (or a directory not listable)
            continue
        # importlib lists a directory's distributions grouped by name, in the order first seen
        groups: dict[str, list[str]] = {}
        for child in children:
            low = child.lower()
            if not low.endswith(_SUFFIXES):
                continue
            # The name importlib lists it by, and the one it tells distributions apart by
            # (from the name as written); where they differ, or are empty, METADATA decides.
            name = _normalize(low.rpartition(".")[0].partition("-")[0])
            stem, suffix = os.path.splitext(child)
            if not name or suffix not in _SUFFIXES or _normalize(stem.partition("-")[0]) != name:
                raise _Unanswerable
            groups.setdefault(name, []).append(child)
        for name, infos in groups.items():
            if name not in seen:  # (else shadowed by the same distribution earlier on sys.path)
                seen.add(name)
                yield entry, infos[0], name


def installed_version(distribution: str) -> str | None:
    """The version of ``distribution`` as ``importlib.metadata.version`` gives it (its
    METADATA's, the first distribution of that name on ``sys.path``), found the way entry points
    are; None where it is not found or only ``importlib.metadata`` can tell."""
    return installed_versions(distribution)[distribution]


def installed_versions(*distributions: str) -> dict[str, str | None]:
    """:func:`installed_version` of each of ``distributions``, found in one walk of
    ``sys.path`` (a walk costs a start-up about 1.5 ms: the User-Agent names two)."""
    found: dict[str, str | None] = dict.fromkeys(distributions)
    wanted: dict[str, list[str]] = {}
    for name in distributions:  # (names written differently, one distribution)
        wanted.setdefault(_normalize(name.lower()), []).append(name)
    try:
        for entry, info, normalized in _distributions():
            names = wanted.pop(normalized, [])
            if names:
                version = name_and_version(FoundDistribution(os.path.join(entry, info)))[1]
                # (a folded value importlib.metadata re-indents: its answer, not ours)
                folded = version is not None and ("\n" in version or "\r" in version)
                found.update(dict.fromkeys(names, None if folded else version))
            if not wanted:
                break
    except _Unanswerable:  # (found before the entry only importlib can read: as found alone)
        pass
    return found


def _scan(group: str) -> list[FoundEntryPoint] | None:
    """The fast way; None where it cannot answer as ``importlib.metadata`` would."""
    header = f"[{group}]".encode()
    candidates: list[tuple[str, bytes]] = []
    try:
        for entry, info, _ in _distributions():
            try:
                with open(os.path.join(entry or ".", info, "entry_points.txt"), "rb") as file:
                    data = file.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                continue  # as importlib: no entry points
            except OSError:
                return None  # importlib's own answer (or error) for it
            # (a UTF-8 file naming the group holds these bytes; parsed below, as importlib would)
            if header in data:
                candidates.append((os.path.join(entry, info), data))
    except _Unanswerable:
        return None
    found: list[FoundEntryPoint] = []
    for path, data in candidates:
        dist = FoundDistribution(path)
        found += [FoundEntryPoint(n, v, group, dist) for n, v in _pairs(data.decode(), group)]
    return found


def _pairs(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` pairs of ``group`` in an ``entry_points.txt``, as
    ``importlib.metadata`` reads the file: stripped lines, ``#`` comments, ``[section]``
    headers; a line of any section without ``=`` raises TypeError (as there)."""
    pairs: list[tuple[str, str]] = []
    section: str | None = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue  # (before any section: importlib skips it unparsed)
        name, equals, value = line.partition("=")
        if not equals:
            raise TypeError(f"an entry point line without '=': {line!r}")
        if section == group:
            pairs.append((name.strip(), value.strip()))
    return pairs
