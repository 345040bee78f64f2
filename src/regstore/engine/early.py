"""What a sync asks its sources while it is still starting: the tags of each repository the
file names, and, for every tag a destination repository already holds that the file's filters
take, the digest the source's tag names now (asked by
:class:`regstore.client.early.EarlyHeads`; the plan takes the listings, :func:`~.sync.plan_sync`,
and the look-ahead the digests, :func:`~.lookahead.look_ahead`).

Nothing is asked that the sync would not ask anyway: nothing for a registry target (its tags
are read through its client) nor a source listed from its catalog, and no digest for a
repository the destination holds fewer than :data:`MIN_TAGS` tags of (a first mirror asks
nothing more than before).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from regstore.reference import validate_name

from .filters import TagFilter
from .syncfile import ConnectionSpec, SyncSpec

__all__ = ["MIN_TAGS", "early_questions"]

log = logging.getLogger("regstore.engine")

#: A destination repository holding fewer tags than this is not asked about early: each
#: image asks its own (as the look-ahead's BULK_MIN)
MIN_TAGS = 8


def early_questions(
    spec: SyncSpec,
    tags_of: Callable[[str], Sequence[str]],
    extra_filter: TagFilter | None = None,
) -> list[tuple[ConnectionSpec, dict[str, list[str]]]]:
    """For each source of ``spec`` (a sync into a store), its repositories by name, each with
    the tags ``tags_of`` its destination repository holds that the filters take (none when
    fewer than :data:`MIN_TAGS`, or when they cannot be read: the images ask for
    themselves). Never raises."""
    if spec.target.connection is not None:
        return []
    questions: list[tuple[ConnectionSpec, dict[str, list[str]]]] = []
    for source in spec.sources:
        if source.catalog is not None:
            continue
        asked: dict[str, list[str]] = {}
        for repo in source.repositories:
            tag_filter = repo.tags if not repo.tags.is_empty else source.tags
            try:
                dest = validate_name(
                    spec.target.prefix + source.prefix + (repo.dest_name or repo.name)
                )
                held = [
                    tag
                    for tag in tags_of(dest)
                    if tag_filter.matches(tag)
                    and (extra_filter is None or extra_filter.matches(tag))
                ]
            except Exception as exc:  # a shortcut: the images ask for themselves
                log.debug("%s: no digests asked early: %s", repo.name, exc)
                held = []
            asked[repo.name] = held if len(held) >= MIN_TAGS else []
        if asked:
            questions.append((source.connection, asked))
    return questions
