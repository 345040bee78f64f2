"""The entry points of one group, as ``importlib.metadata.entry_points(group=...)`` gives them,
found without parsing every installed distribution's ``entry_points.txt``.

Every command of the CLI looks up its plugins (the group ``regstore``) before its first request.
``importlib.metadata`` parses the entry points of each distribution on ``sys.path`` to select one
group: in a virtualenv of 150 distributions that is about 10 ms of each start-up, against about
3 ms to list the same directories and look for the group's section header in each file. Only a
file that names the group is handed to ``importlib.metadata`` itself, so the entry points (and
their ``dist``) are the very objects it returns.

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

import email.parser
import importlib.machinery
import importlib.metadata
import os
import pathlib
import re
import sys

__all__ = ["entry_points", "name_and_version"]

_SUFFIXES = (".dist-info", ".egg-info")


def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The entry points of ``group``, one distribution per name (the first on ``sys.path``),
    in the order ``importlib.metadata.entry_points(group=group)`` lists them."""
    found = _scan(group)
    if found is None:
        return list(importlib.metadata.entry_points(group=group))
    return found


def name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """``dist.metadata["Name"]`` and ``["Version"]``; for a distribution on the file system read
    from the headers alone (``metadata`` parses the whole file, whose body is the project's long
    description, often its README). A header folded over several lines, which valid metadata
    never has, keeps its line break here where ``metadata`` re-indents it."""
    if type(dist) is not importlib.metadata.PathDistribution:
        metadata = dist.metadata  # (a finder's own kind may keep its metadata elsewhere)
        return metadata["Name"], metadata["Version"]
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("") or ""
    headers = email.parser.HeaderParser().parsestr(text)
    return headers["Name"], headers["Version"]


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


def _scan(group: str) -> list[importlib.metadata.EntryPoint] | None:
    """The fast way; None where it cannot answer as ``importlib.metadata`` would."""
    if not _standard_finders_only():
        return None
    header = f"[{group}]".encode()
    seen: set[str] = set()
    candidates: list[pathlib.Path] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            return None
        root = entry or "."
        if os.path.basename(root).lower().endswith(".egg"):
            return None  # an egg's EGG-INFO: importlib's way
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.exists(root):
                return None  # a zip archive (or a directory that cannot be listed)
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
                return None
            groups.setdefault(name, []).append(child)
        for name, infos in groups.items():
            if name in seen:
                continue  # shadowed by the same distribution earlier on sys.path
            seen.add(name)
            try:
                with open(os.path.join(root, infos[0], "entry_points.txt"), "rb") as file:
                    data = file.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                continue  # as importlib: no entry points
            except OSError:
                return None  # importlib's own answer (or error) for it
            # (a UTF-8 file naming the group holds these bytes; importlib parses it below)
            if header in data:
                candidates.append(pathlib.Path(entry, infos[0]))
    found: list[importlib.metadata.EntryPoint] = []
    for path in candidates:
        found.extend(importlib.metadata.PathDistribution(path).entry_points.select(group=group))
    return found
