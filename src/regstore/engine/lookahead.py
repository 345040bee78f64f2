"""What a batch's destinations already hold, learned in bulk before its images start.

A re-sync of a few hundred unchanged tags is nothing but a pair of digests per tag: the one the
destination tag names and the one the source tag names. Asked image by image, each source
digest is a HEAD of its own through the image's thread; asked here, all of one repository's go
at once (a place's optional ``manifest_digests``, as
:meth:`~.registryplace.RegistryPlace.manifest_digests`). Each image then starts from what was
learned: an unchanged one is done without a request, a changed one skips the HEAD it no
longer needs.

Only a shortcut, and a snapshot: whatever could not be learned (a failure of any kind, a place
without bulk answers) is left unknown and the image asks for it itself, reporting any error as
it always did. Nothing is learned for a job whose tag another job of the batch writes (two
jobs into one tag, or a copy into a registry repository that a later job reads from), and
what was learned is trusted for :data:`MAX_AGE` seconds only: an image that starts later in a
long batch asks again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from regstore.manifest import Platform
from regstore.reference import is_digest

from .model import Image, RegistryImage
from .places import ImageSink, ImageSource, destination_digest, sink_of, source_of

__all__ = ["AskedEarly", "Known", "look_ahead", "unchanged", "written_key"]

log = logging.getLogger("regstore.engine")

#: Fewer references of one repository than this are not worth a batch's connections: each
#: image asks its own (on connections already open)
BULK_MIN = 8
#: Batches and single questions asked at once (as many as a sync plans images at once)
THREADS = 8
#: Seconds what was learned is trusted; an image starting later asks again
MAX_AGE = 60.0
#: An answer slower than this (seconds) is a slow one ...
SLOW = 0.002
#: ... and this many slow ones in a row send the remaining questions to threads: one slow
#: answer of a local disk (its first, a page fault, the registry's HEADs taking the CPU a
#: moment) must not send the rest of a quick store's reads to threads fighting over the GIL
SLOW_IN_ROW = 3


@dataclass(frozen=True)
class Known:
    """What was learned for one job: the digest its destination tag names (None: no such tag)
    and, when learned, the digest its source reference names (None: ask the source)."""

    destination: str | None
    source: str | None = None
    #: when it was learned (``time.monotonic()``)
    at: float = dataclasses.field(default_factory=time.monotonic, compare=False)

    @property
    def fresh(self) -> bool:
        """Still young enough to be trusted (:data:`MAX_AGE`)."""
        return time.monotonic() - self.at <= MAX_AGE


class AskedEarly(Protocol):
    """Source listings and digests asked before the plan and the look-ahead (:mod:`.early`,
    :class:`regstore.client.early.EarlyHeads`)."""

    def tags(self, registry: str, name: str) -> list[str] | None:
        """The tags of ``name`` at ``registry`` as the client would list them; None when not
        known."""
        ...

    def digest(self, registry: str, name: str, reference: str) -> tuple[str | None, float] | None:
        """The digest ``name:reference`` at ``registry`` named (None: no such tag) and when
        that was asked (``time.monotonic()``); None when not known."""
        ...


def _group_key(image: Image) -> object | None:
    """The repository an image is in (the image without its reference), when images of one
    repository can be told alike; None otherwise."""
    if not dataclasses.is_dataclass(image):
        return None
    try:
        key = dataclasses.replace(image, reference=None)
        hash(key)
    except (TypeError, ValueError):
        return None
    return key


def _learn(
    asked: Sequence[tuple[int, Image, str]], place_of: Callable[[object], Any], *, each: bool
) -> dict[int, str | None]:
    """The digest each ``(job index, image, reference)`` names: asked in bulk per repository
    of at least :data:`BULK_MIN` references whose place answers in bulk, the rest (with
    ``each``) one by one, in order while the answers are quick (:data:`SLOW`,
    :data:`SLOW_IN_ROW`); up to :data:`THREADS` of these at once. A job missing from the
    result was not learned."""
    learned: dict[int, str | None] = {}
    groups: dict[object, list[tuple[int, Image, str]]] = {}
    alone: list[tuple[int, Image, str]] = []
    for item in asked:
        key = _group_key(item[1])
        if key is None:
            alone.append(item)
        else:
            groups.setdefault(key, []).append(item)

    # Whatever fails here (a custom place's OSError too) only leaves a job unknown: the image
    # meets it again and reports it, and one image's failure never stops the batch.
    def in_bulk(key: object, bulk: Callable[..., dict[str, str | None]], items: list[Any]) -> None:
        try:
            digests = bulk([reference for _, _, reference in items])
        except Exception as exc:
            log.debug("%s: no digests learned ahead: %s", key, exc)
            return
        for i, _, reference in items:
            if reference in digests:
                learned[i] = digests[reference]

    def each_of(items: Sequence[tuple[int, Image, str]]) -> None:
        for i, image, reference in items:
            try:
                learned[i] = place_of(image).manifest_digest(reference)
            except Exception as exc:
                log.debug("%s: no digest learned ahead: %s", image, exc)

    def bulk_of(key: object) -> Any:
        try:
            return getattr(place_of(key), "manifest_digests", None)
        except Exception:
            return None

    tasks: list[Callable[[], None]] = []
    for key, items in groups.items():
        bulk = bulk_of(key) if len(items) >= BULK_MIN else None
        if bulk is not None:
            tasks.append(functools.partial(in_bulk, key, bulk, items))
        else:
            alone += items
    if each:
        # Quick answers (a local disk's) are asked in order here: threads would only fight
        # over the GIL. Once answers come slowly (a store on the network), the rest are
        # asked THREADS at once, as images would have asked them.
        done = slow = 0
        while done < len(alone):
            started = time.monotonic()
            each_of(alone[done : done + 1])
            done += 1
            slow = slow + 1 if time.monotonic() - started > SLOW else 0
            if slow >= SLOW_IN_ROW:
                break
        rest = alone[done:]
        shares = min(THREADS, len(rest))
        tasks += [functools.partial(each_of, rest[k::shares]) for k in range(shares)]
    if len(tasks) <= 1:
        for task in tasks:
            task()
    else:  # a store on the network answers one by one: as many at once as images would ask
        with ThreadPoolExecutor(min(THREADS, len(tasks)), "regstore-lookahead") as pool:
            for _ in pool.map(lambda task: task(), tasks):
                pass
    return learned


def written_key(image: Image, reference: str) -> object | None:
    """What names the tag ``reference`` of ``image`` across the jobs of a batch (a registry
    by its name, whichever client reaches it); None when it cannot be told."""
    if isinstance(image, RegistryImage):
        return ("registry", image.client.registry, image.name, reference)
    key = _group_key(image)
    return None if key is None else (key, reference)


def _independent(jobs: Sequence[tuple[Image, Image, str | None]]) -> list[bool]:
    """Which jobs no other job of the batch changes: their destination tag is written by no
    other job, and their source is no job's destination. Unknown places count as changed."""
    writes: dict[object, int] = {}
    keys: list[object | None] = []
    for _, dest, tag in jobs:
        key = written_key(dest, tag) if tag is not None else None
        keys.append(key)
        if key is not None:
            writes[key] = writes.get(key, 0) + 1
    free = []
    for (source, _, tag), key in zip(jobs, keys, strict=True):
        reference = source.reference
        read = written_key(source, reference) if reference is not None else None
        free.append(
            tag is not None
            and key is not None
            and writes[key] == 1
            and read is not None
            and read not in writes
        )
    return free


def look_ahead(
    jobs: Sequence[tuple[Image, Image, str | None]],
    ask: Sequence[bool] | None = None,
    early: AskedEarly | None = None,
) -> list[Known | None]:
    """For each ``(source, destination, destination tag)``, what is known before it starts
    (None: nothing, the image asks everything itself; always for a job without a tag or
    without a source reference, for one another job of the batch changes, and for one
    ``ask`` leaves out: a job not asked about still writes its tag). A source digest
    ``early`` knows is taken from it, not asked again. Never raises."""
    try:
        return _look_ahead(jobs, ask, early)
    except Exception as exc:  # a shortcut: the images ask for themselves
        log.debug("nothing learned ahead: %s", exc)
        return [None] * len(jobs)


def _look_ahead(
    jobs: Sequence[tuple[Image, Image, str | None]],
    ask: Sequence[bool] | None,
    early: AskedEarly | None,
) -> list[Known | None]:
    # a long batch is silent meanwhile (skipped images send no events): say what happens
    log.info("looking ahead: what the %d destination tags and their sources name", len(jobs))
    free = _independent(jobs)
    # the destinations first: only a tag that is there can be unchanged
    destinations = _learn(
        [
            (i, dest, tag)
            for i, (source, dest, tag) in enumerate(jobs)
            if tag is not None
            and source.reference is not None
            and free[i]
            and (ask is None or ask[i])
        ],
        sink_of,
        each=True,
    )
    asked = [
        (i, source, source.reference)
        for i, (source, _, _) in enumerate(jobs)
        if destinations.get(i) is not None
        and source.reference is not None
        and not is_digest(source.reference)
    ]
    known_early: dict[int, tuple[str | None, float]] = {}
    if early is not None:
        for i, source, reference in asked:
            if isinstance(source, RegistryImage):
                got = early.digest(source.client.registry, source.name, reference)
                if got is not None:
                    known_early[i] = got
    sources = _learn([a for a in asked if a[0] not in known_early], source_of, each=False)
    result: list[Known | None] = []
    for i in range(len(jobs)):
        if i not in destinations:
            result.append(None)
        elif i in known_early:
            digest, at = known_early[i]
            result.append(Known(destinations[i], digest, at=at))
        else:
            result.append(Known(destinations[i], sources.get(i)))
    return result


def unchanged(
    known: Known | None,
    source: ImageSource,
    sink: ImageSink,
    reference: str,
    tag: str,
    platforms: Sequence[Platform] = (),
    *,
    blobs: bool = False,
) -> str | None:
    """The digest both ends name when the destination's ``tag`` already names the source's
    manifest at ``reference`` and, where the destination holds an index without some of its
    children, holds those of ``platforms`` (of every platform when none are given; with
    ``blobs``, where the sink can tell, holds every blob of the image too); else None. Never
    for an index given ``platforms`` where the destination cannot hold a partial index (the
    source's manifest read to tell): the job writes it rewritten to them there, known once
    planned. What ``known`` lacks (or all of it, once it is older than :data:`MAX_AGE`) is
    asked of the places."""
    if known is not None and not known.fresh:
        known = None
    have = known.destination if known is not None else destination_digest(sink, tag)
    if have is None:
        return None
    if known is not None and known.source is not None:
        theirs: str | None = known.source
    else:
        theirs = source.manifest_digest(reference)
    if have != theirs:
        return None
    if platforms and not sink.accepts_partial_index and source.manifest(reference).is_index:
        # there an index of some platforms is rewritten to them (transfer.fit_to_sink): the
        # source index's own digest under the tag is not what the job writes; the run plans it
        return None
    # a platform-filtered pull stored the index partial: the same digest, fewer children
    holds = getattr(sink, "holds_image", None)
    if holds is not None and not holds(have, platforms, source, blobs=blobs):
        return None
    return have
