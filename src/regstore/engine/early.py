"""What a sync asks its sources while it is still starting: the tags of each repository the
file names (where the plan lists them), and, for every tag a destination repository holds that
the file's filters take, the digest the source's tag names now (asked by
:class:`regstore.client.early.EarlyHeads`; the plan takes the listings, :func:`~.sync.plan_sync`,
and the look-ahead the digests, :func:`~.lookahead.look_ahead`).

The asking starts from the file alone (:func:`listed_questions`), before the store is open (its
modules take a while to load): the tags each listing gives (or the exact tags) that the filters
take. Once the store is read, what is still to ask is narrowed to the tags it holds
(:func:`early_questions`). So only what the sync would ask anyway, give or take a tag the
source no longer has and the HEADs sent while the store was opened and read: nothing for a
registry target (its tags are read through its client) nor a source listed from its catalog,
no digest for a repository whose images move their referrers (each image asks its own), and,
once the store is read, none for a repository the destination holds fewer than
:data:`MIN_TAGS` tags of (a first mirror asks only the HEADs sent while its store was opened
and read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeAlias

from regstore.reference import validate_name

from .filters import TagFilter
from .syncfile import ConnectionSpec, SyncSpec

__all__ = ["MIN_TAGS", "Selection", "early_questions", "listed_questions"]

log = logging.getLogger("regstore.engine")

#: A destination repository holding fewer tags than this is not asked about early: each
#: image asks its own (as the look-ahead's BULK_MIN)
MIN_TAGS = 8


def early_questions(
    spec: SyncSpec,
    tags_of: Callable[[str], Sequence[str]],
    extra_filter: TagFilter | None = None,
) -> list[tuple[ConnectionSpec, list[str], dict[str, list[str]]]]:
    """For each source of ``spec`` (a sync into a store): its connection, the repositories
    whose tags the plan will list, and by repository the tags whose digests to ask: those
    ``tags_of`` its destination repository holds that the filters would take (``latest`` too,
    among those held), none for a repository whose images move their referrers (each asks
    its own) or that holds fewer than :data:`MIN_TAGS` of them. Never raises: a repository
    whose destination tags cannot be read has none asked."""
    if spec.target.connection is not None:
        return []
    questions: list[tuple[ConnectionSpec, list[str], dict[str, list[str]]]] = []
    for source in spec.sources:
        if source.catalog is not None:
            continue
        listed: list[str] = []
        asked: dict[str, list[str]] = {}
        for repo in source.repositories:
            tag_filter = source.tags_of(repo)
            if tag_filter.needs_listing:
                listed.append(repo.name)
            if source.referrers_of(repo):
                continue
            try:
                dest = validate_name(spec.target.prefix + source.destination_of(repo))
                held = tag_filter.select(tags_of(dest))
                if extra_filter is not None:
                    held = extra_filter.select(held)
            except Exception as exc:  # a shortcut: the images ask for themselves
                log.debug("%s: no digests asked early: %s", repo.name, exc)
                continue
            asked[repo.name] = list(dict.fromkeys([*asked.get(repo.name, []), *held]))
        asked = {name: held for name, held in asked.items() if len(held) >= MIN_TAGS}
        if listed or asked:
            questions.append((source.connection, listed, asked))
    return questions


#: The tags to ask of one repository, given its listing (None: not listed, or not in one
#: clean page)
Selection: TypeAlias = Callable[["Sequence[str] | None"], list[str]]


class _Selected:
    """The tags the filters take: of the repository's listing, or of its exact tags (a
    repository named by several entries: what any of them takes)."""

    def __init__(self) -> None:
        self._takes: list[tuple[TagFilter, TagFilter | None]] = []

    def add(self, tag_filter: TagFilter, extra: TagFilter | None) -> None:
        self._takes.append((tag_filter, extra))

    def __call__(self, listing: Sequence[str] | None) -> list[str]:
        taken: list[str] = []
        for tag_filter, extra in self._takes:
            candidates = (listing or ()) if tag_filter.needs_listing else tag_filter.exact
            selected = tag_filter.select(candidates)
            taken += extra.select(selected) if extra is not None else selected
        return list(dict.fromkeys(taken))


def listed_questions(
    spec: SyncSpec, extra_filter: TagFilter | None = None
) -> list[tuple[ConnectionSpec, list[str], dict[str, Selection]]]:
    """What a sync asks before its store is even open, from the file alone: for each
    connection of its sources (into a store), the repositories whose tags the plan will list,
    and by repository what to ask of the tags its listing gives (or of its exact tags): those
    the filters take, none for a repository whose images move their referrers (a repository
    several entries name: what any of them takes).

    More than :func:`early_questions` asks (the store may not hold them all): the caller
    narrows the asking to the tags the store holds, by those questions, once it has read
    them (:meth:`regstore.client.early.EarlyHeads.hold`, which also leaves out a
    repository holding fewer than :data:`MIN_TAGS`).
    """
    if spec.target.connection is not None:
        return []
    listed: dict[ConnectionSpec, list[str]] = {}
    asked: dict[ConnectionSpec, dict[str, _Selected]] = {}
    for source in spec.sources:
        if source.catalog is not None:
            continue
        conn = source.connection
        names, selections = listed.setdefault(conn, []), asked.setdefault(conn, {})
        for repo in source.repositories:
            tag_filter = source.tags_of(repo)
            if tag_filter.needs_listing and repo.name not in names:
                names.append(repo.name)
            if not source.referrers_of(repo):
                selections.setdefault(repo.name, _Selected()).add(tag_filter, extra_filter)
    return [
        (conn, listed[conn], dict(asked[conn])) for conn in listed if listed[conn] or asked[conn]
    ]
