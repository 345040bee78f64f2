"""The sync file: many repositories, tags and platforms from registries into a store or registry.

A sync file is YAML (PyYAML's safe loader, without aliases) or plain JSON, validated into
the frozen dataclasses below; a mistake is reported with the file, line and key path
(``sync.yaml:9: sources[0].repositories[1].tags.semvr: unknown key; expected one of ...``).

Format::

    version: 1                        # optional; the only version is 1
    defaults:                         # optional
      platforms: [linux/amd64]        # default: every platform of an index
      concurrency: 4                  # blobs moved at once, 1 to 64 (--concurrency wins)
    target:                           # optional; default: the store of the command line
      store: file:///srv/mirror       # a store URL (file://, memory://, s3://, a path), or
      # registry: 127.0.0.1:6000      # a registry (host[:port]), with
      # plain_http: true              #   the same connection keys as a source (below)
      prefix: mirror/                 # optional: prepended to every destination name
    sources:
      - registry: 127.0.0.1:5000      # host[:port] (docker.io, ghcr.io, ...)
        plain_http: true              # optional; loopback hosts may use HTTP anyway
        tls_verify: true              # optional; false disables TLS verification (unsafe)
        ca_cert: /etc/ssl/my-ca.pem   # optional; a CA bundle for this registry
        username: mirror              # optional, with password_env: the variable holding
        password_env: SRC_PASSWORD    #   the password (never the password itself)
        prefix: ""                    # optional: prepended to names from this source
        platforms: [linux/arm64]      # optional: overrides defaults.platforms
        referrers: true               # optional: signatures, SBOMs, attestations come too
        prune: true                   # optional: delete mirrored tags the source no longer has
        tags: {latest: 5}             # optional: filter for repositories without their own
        repositories:
          - team/app                  # a name alone: every tag (or the source's tags:)
          - name: team/app2
            as: apps/app2             # optional: the destination name (before prefixes)
            platforms: [linux/amd64]  # optional
            referrers: false          # optional: overrides the source's referrers
            prune: false              # optional: overrides the source's prune
            tags:                     # a list of exact tags, or a mapping of filters:
              include: ["^1\\."]      #   regexes (re.search), any may match
              exclude: ["-rc"]        #   regexes, none may match
              semver: ">=1.2.0"       #   a version range (see regstore.engine.filters)
              latest: 3               #   the newest N of what is left
              exact: ["1.2.0"]        #   only these tags
          - name: library/alpine
            tags: ["3.19", "3.20"]
        catalog: true                 # instead of (or besides) repositories: every repository
                                      # of the registry's catalog, or a mapping
                                      # {include: [regex], exclude: [regex]} on their names

Each (source repository, tag) becomes one job ``registry/name:tag → target/prefix+name:tag``.
A job whose destination tag already points at the source's manifest costs one HEAD and moves
nothing (``skipped``); one failed image never stops the others; the report lists every image
as ``copied``, ``skipped`` or ``failed`` with the reason. Listing a repository's tags or the
catalog can fail too: that repository is then reported as failed and the rest go on. A tag
(or catalog name) the registry lists that is not valid (``..``, ``-x``, too long) can name no
image: it is reported as ``skipped`` with the reason, and the repository's other tags are
mirrored as usual.

Command-line tag filters (``regstore sync FILE --semver '>=2'``) narrow every repository's
filter further: a tag must pass both.

With ``prune`` (into a store only), a repository's destination tags that its filters take
(every per-tag test: patterns, versions; ``latest`` is the window, so a tag that left it goes)
but the source no longer lists are deleted after the run, each with the manifests only it
kept (``regstore gc`` frees their blobs), and reported as ``pruned``. Nothing is pruned where
the tags could not be listed (nor read to the end of their pages), where the source lists none
at all, where exact tags are given (nothing there to take away), where two entries of the file
write into one destination repository (which one's tags another has is unknown), or while a
source or its catalog could not be listed; signature and referrers tags are never pruned
(``regstore gc`` removes those of a pruned image with its other referrers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from regstore.errors import (
    ImageManifestNotFoundError,
    InvalidReferenceError,
    NotFoundError,
    PagingError,
    PagingLimitError,
    RegstoreError,
    UsageError,
)
from regstore.reference import Digest, is_digest, validate_name
from regstore.referrers import is_supply_chain_tag, subject_of_tag

from .filters import InvalidTag, TagFilter, partition_tags
from .lookahead import THREADS, AskedEarly, look_ahead, unchanged
from .model import (
    BatchResult,
    ImageOutcome,
    RegistryClient,
    RegistryImage,
    StoreImage,
    TransferResult,
    destination_tag,
    resolve_destination,
)
from .options import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD, TransferOptions
from .places import destination_digest, sink_of, source_of
from .syncfile import (
    CatalogSpec,
    ConnectionSpec,
    Defaults,
    RepositorySpec,
    SourceSpec,
    SyncFileError,
    SyncSpec,
    TargetSpec,
    load_sync_file,
    parse_sync_text,
)

if TYPE_CHECKING:
    from regstore.events import TransferEvent
    from regstore.store import ObjectStore

__all__ = [
    "CatalogSpec",
    "ConnectionSpec",
    "Defaults",
    "PlannedJob",
    "PruneScope",
    "RepositorySpec",
    "SourceSpec",
    "SyncFileError",
    "SyncPlan",
    "SyncSpec",
    "TargetSpec",
    "load_sync_file",
    "parse_sync_text",
    "plan_sync",
    "preview_job",
    "prune_destinations",
    "run_sync",
    "settle_unchanged",
]

log = logging.getLogger("regstore.engine")

# -- planning: sources → concrete jobs ---------------------------------------------------------

Destination = RegistryImage | StoreImage


@dataclass(frozen=True)
class PlannedJob:
    """One image to move, with the platforms to take."""

    source: RegistryImage
    destination: Destination
    platforms: tuple[str, ...] | None = None
    #: its signatures, SBOMs and attestations move with it
    referrers: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "platforms": list(self.platforms) if self.platforms else None,
            "referrers": self.referrers,
        }


@dataclass(frozen=True)
class PruneScope:
    """A destination repository of a store whose tags its source no longer has go: those
    ``tag_filter`` (and ``extra_filter``, the command line's) take tag by tag that are not in
    ``kept`` (what the source listed and the filters selected). ``takes``: which tags, named
    as their source (``registry/name:tag``), this share of a sharded run prunes."""

    source: str
    store: ObjectStore
    name: str
    tag_filter: TagFilter
    extra_filter: TagFilter | None
    kept: frozenset[str]
    takes: Callable[[str], bool] | None = None

    def doomed(self, tags: Sequence[str]) -> list[str]:
        """The tags of ``tags`` (the destination's) this scope prunes."""
        return [
            tag
            for tag in tags
            if tag not in self.kept
            and subject_of_tag(tag) is None
            and self.tag_filter.matches(tag)
            and (self.extra_filter is None or self.extra_filter.matches(tag))
            and (self.takes is None or self.takes(f"{self.source}:{tag}"))
        ]


@dataclass
class SyncPlan:
    """The jobs a sync will run, the repositories whose listing failed (already failed), and
    what a registry listed that names no image (invalid tags or names: ``skipped``, with the
    reason in ``error``); ``prunes``: the destination repositories a run prunes after it."""

    jobs: list[PlannedJob] = field(default_factory=list)
    failures: list[ImageOutcome] = field(default_factory=list)
    concurrency: int | None = None
    skipped: list[ImageOutcome] = field(default_factory=list)
    prunes: list[PruneScope] = field(default_factory=list)


ClientFactory = Callable[[ConnectionSpec], RegistryClient]


def _catalog(client: RegistryClient) -> list[str]:
    catalog = getattr(client, "catalog", None)
    if catalog is None:
        raise RegstoreError("this registry client cannot list the catalog")
    return list(catalog())


def _list_tags(
    client: RegistryClient, name: str, *, complete: bool = False, early: AskedEarly | None = None
) -> list[str]:
    listed = None if early is None else early.tags(client.registry, name)
    if listed is not None:  # (one clean page: complete)
        return listed
    return list(
        client.list_image_tags(name, complete=True) if complete else client.list_image_tags(name)
    )


def plan_sync(
    spec: SyncSpec,
    *,
    client_for: ClientFactory,
    target_store: ObjectStore | None = None,
    extra_filter: TagFilter | None = None,
    early: AskedEarly | None = None,
) -> SyncPlan:
    """Expand ``spec`` into jobs: list catalogs and tags, apply filters, name destinations.

    ``client_for`` builds the client of a source (or registry target) from its connection
    settings; ``target_store`` is the store images go to when the spec's target is a store
    (the caller opens it: the spec's ``target.store`` URL or its own default). ``extra_filter``
    narrows every repository's tags further (the command line's filters). A repository's tags
    ``early`` listed (:mod:`.early`) are not listed again.
    """
    plan = SyncPlan(concurrency=spec.defaults.concurrency)
    target_client: RegistryClient | None = None
    if spec.target.connection is not None:
        target_client = client_for(spec.target.connection)
    elif target_store is None:
        raise ValueError("a store target needs target_store")

    def destination(name: str, tag: str) -> Destination:
        full = validate_name(spec.target.prefix + name)
        if target_client is not None:
            return RegistryImage(target_client, full, tag)
        assert target_store is not None
        return StoreImage(target_store, full, tag)

    # the repositories of the file writing into each destination repository (pruning one
    # that several write into could take another's tags), and what writes where unknown: a
    # source that could not be reached, a catalog that could not be listed
    writers: dict[str, list[str]] = {}
    unknown: list[str] = []
    for source in spec.sources:
        try:
            client = client_for(source.connection)
        except RegstoreError as exc:
            plan.failures.append(_failure(source.registry, "", exc))
            unknown.append(source.registry)
            continue
        repos = list(source.repositories)
        if source.catalog is not None:
            try:
                listed = _catalog(client)
            except RegstoreError as exc:
                plan.failures.append(_failure(f"{source.registry} (catalog)", "", exc))
                unknown.append(f"{source.registry} (catalog)")
                listed = []
            named = {r.name for r in repos}
            for n in _catalog_names(listed, source.catalog, f"{source.registry} (catalog)", plan):
                if n not in named:
                    repos.append(RepositorySpec(name=n))
        for repo in repos:
            tag_filter = source.tags_of(repo)
            platforms = repo.platforms or source.platforms or spec.defaults.platforms
            referrers = source.referrers_of(repo)
            dest_name = source.destination_of(repo)
            where = f"{source.registry}/{repo.name}"
            target_text = (
                f"{spec.target.connection.registry}/{spec.target.prefix}{dest_name}"
                if spec.target.connection is not None
                else f"store:{spec.target.prefix}{dest_name}"
            )
            prune = (
                (source.prune if repo.prune is None else repo.prune)
                and tag_filter.needs_listing  # exact tags: nothing to take away
                and target_store is not None
            )
            with contextlib.suppress(InvalidReferenceError):  # the jobs below report it
                writers.setdefault(validate_name(spec.target.prefix + dest_name), []).append(where)
            try:
                incomplete = None
                if tag_filter.needs_listing:
                    try:
                        # a list cut short must not be taken for the whole by a prune
                        listing = _list_tags(client, repo.name, complete=prune, early=early)
                    except PagingError as exc:
                        if not prune or isinstance(exc, PagingLimitError):
                            raise
                        incomplete = str(exc)
                        listing = _list_tags(client, repo.name)  # what it lists still moves
                    listed_tags, invalid = partition_tags(listing)
                    for bad in invalid:
                        if _wanted(bad, tag_filter) and _wanted(bad, extra_filter):
                            plan.skipped.append(_invalid_tag(where, target_text, bad))
                    tags = tag_filter.select(listed_tags)
                else:
                    tags = tag_filter.select(tag_filter.exact)
                # (what the file's filters keep: narrowed by the command line's, a tag the
                # source still has is still no tag to prune)
                kept = frozenset(tags)
                if extra_filter is not None:
                    tags = extra_filter.select(tags)
                if referrers:  # sigstore and referrers-index tags travel with their subjects
                    tags = [t for t in tags if not is_supply_chain_tag(t)]
                for tag in tags:
                    plan.jobs.append(
                        PlannedJob(
                            RegistryImage(client, repo.name, tag),
                            destination(dest_name, tag),
                            platforms,
                            referrers,
                        )
                    )
                if prune:
                    assert target_store is not None
                    scope = PruneScope(
                        where,
                        target_store,
                        validate_name(spec.target.prefix + dest_name),
                        tag_filter,
                        extra_filter,
                        kept,
                    )
                    if incomplete is not None:
                        plan.skipped.append(_not_pruned(scope, target_text, incomplete))
                    elif listed_tags:
                        plan.prunes.append(scope)
                    else:  # an emptied repository, or a registry that lists none: kept
                        plan.skipped.append(
                            _not_pruned(scope, target_text, "the source lists no tags")
                        )
            except RegstoreError as exc:
                plan.failures.append(_failure(where, target_text, exc))
    _one_writer_per_tag(plan)
    _one_source_per_pruned_repository(plan, writers, unknown)
    return plan


def _not_pruned(scope: PruneScope, destination: str, why: str) -> ImageOutcome:
    return ImageOutcome(scope.source, destination, "skipped", error=f"nothing pruned: {why}")


def _one_source_per_pruned_repository(
    plan: SyncPlan, writers: dict[str, list[str]], unknown: list[str]
) -> None:
    """Keep only the prunes of destination repositories one repository entry of the file
    writes (the same source listed twice, with two filters, is two), and none while a source
    or catalog could not be listed: what it writes, and where, is unknown."""
    kept = []
    for scope in plan.prunes:
        entries = writers.get(scope.name, [])
        if unknown:
            why = f"{', '.join(unknown)} could not be listed: what it writes is unknown"
        elif len(entries) > 1:
            others = sorted(set(entries) - {scope.source}) or [scope.source]
            why = f"{len(entries)} entries of the file write into it ({', '.join(others)})"
        else:
            kept.append(scope)
            continue
        plan.skipped.append(_not_pruned(scope, f"store:{scope.name}", why))
    plan.prunes = kept


def prune_destinations(plan: SyncPlan, *, dry_run: bool = False) -> list[ImageOutcome]:
    """Delete (``dry_run``: only list) the destination tags each of ``plan.prunes`` takes
    that its source no longer has, each with the manifests only it kept (their blobs stay for
    ``regstore gc``): one ``pruned`` outcome per tag, or ``failed`` with why. Never raises a
    regstore error."""
    from .gc import delete_image, tags_of  # (start-up: a no-op sync prunes nothing)

    outcomes: list[ImageOutcome] = []
    for scope in plan.prunes:
        where = f"store:{scope.name}"
        try:
            doomed = scope.doomed(tags_of(scope.store, scope.name))
        except RegstoreError as exc:
            outcomes.append(_failure(scope.source, where, exc))
            continue
        for tag in doomed:
            source, destination = f"{scope.source}:{tag}", f"{where}:{tag}"
            try:
                if not dry_run:
                    delete_image(scope.store, scope.name, tag)
            except ImageManifestNotFoundError:
                continue  # deleted meanwhile (another share of the run, a user)
            except RegstoreError as exc:
                outcomes.append(_failure(source, destination, exc))
                continue
            outcomes.append(ImageOutcome(source, destination, "pruned"))
    return outcomes


def _one_writer_per_tag(plan: SyncPlan) -> None:
    """Jobs that write one destination tag: the same image asked twice runs once; different
    ones fail, all of them (which would win is an accident of the run, and a re-run would
    write the other and report the first unchanged)."""
    writers: dict[str, list[PlannedJob]] = {}
    for job in plan.jobs:
        writers.setdefault(str(job.destination), []).append(job)
    kept = []
    for destination, jobs in writers.items():
        alike = {(str(j.source), tuple(sorted(j.platforms or ())), j.referrers) for j in jobs}
        if len(alike) == 1:
            kept.append(jobs[0])
            continue
        sources = sorted({str(j.source) for j in jobs})
        for job in jobs:
            problem = UsageError(
                f"{destination} is the destination of {len(jobs)} images of the sync file "
                f"({', '.join(sources)}): give them different names (as:, prefix:) or tags"
            )
            plan.failures.append(_failure(str(job.source), destination, problem))
    kept_ids = {id(job) for job in kept}
    plan.jobs = [job for job in plan.jobs if id(job) in kept_ids]


def _wanted(bad: InvalidTag, tag_filter: TagFilter | None) -> bool:
    """Whether an invalid tag is worth reporting: one the filter would have taken (a text
    filter can judge any string; an exact list holds only valid tags)."""
    if tag_filter is None or not isinstance(bad.tag, str):
        return True
    return tag_filter.matches(bad.tag)


def _invalid_tag(where: str, destination: str, bad: InvalidTag) -> ImageOutcome:
    return ImageOutcome(
        source=f"{where}:{bad.shown}",
        destination=destination,
        status="skipped",
        error=f"invalid tag listed by the registry, not mirrored: {bad.reason}",
    )


def _catalog_names(
    listed: list[str], catalog: CatalogSpec, where: str, plan: SyncPlan
) -> list[str]:
    """The valid names of a catalog that ``catalog`` takes, sorted; the invalid ones it would
    take are reported as skipped."""
    taken: set[str] = set()
    for name in listed:
        if isinstance(name, str) and not catalog.matches(name):
            continue
        try:
            taken.add(validate_name(name))
        except InvalidReferenceError as exc:
            plan.skipped.append(
                ImageOutcome(
                    source=f"{where}: {InvalidTag(name, exc.reason).shown}",
                    destination="",
                    status="skipped",
                    error="invalid repository name listed by the registry, not mirrored: "
                    + exc.reason,
                )
            )
    return sorted(taken)


def _failure(source: str, destination: str, exc: BaseException) -> ImageOutcome:
    return ImageOutcome(
        source=source, destination=destination, status="failed", error=str(exc), exception=exc
    )


# -- running -----------------------------------------------------------------------------------


def run_sync(
    plan: SyncPlan,
    *,
    concurrency: int | None = None,
    events: Callable[[TransferEvent], None] | None = None,
    skip_unchanged: bool = True,
    keep_going: bool = True,
    referrer_types: Sequence[str] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
) -> BatchResult:
    """Run the plan's jobs (grouped by platform selection) and report every image.

    ``chunk_size`` and ``monolithic_threshold`` shape the uploads into registries (see
    :func:`~regstore.engine.transfer.transfer_many`).

    Jobs planned with ``referrers`` move their images' referrers too (of ``referrer_types``
    only, when given).

    Listing failures of the plan come first in the report, then what the plan skipped
    (invalid tags), then the jobs in plan order. With ``keep_going=False`` the first failure
    (a listing failure included) cancels every job not yet started; a skipped tag is no
    failure. Nothing is pruned here: :func:`prune_destinations` does it after the run (as
    ``regstore sync`` does), its outcomes to add to the report.
    """
    if not plan.jobs:  # (all settled before: the transfer machinery is not even imported)
        return BatchResult(outcomes=[*plan.failures, *plan.skipped])
    from .transfer import CANCELLED, transfer_many

    workers = concurrency or plan.concurrency or 4
    groups: dict[tuple[tuple[str, ...] | None, bool], list[int]] = {}
    for i, job in enumerate(plan.jobs):
        groups.setdefault((job.platforms, job.referrers), []).append(i)
    outcomes: list[ImageOutcome | None] = [None] * len(plan.jobs)
    failed = bool(plan.failures)
    for (platforms, referrers), indexes in groups.items():
        if failed and not keep_going:
            for i in indexes:
                job = plan.jobs[i]
                outcomes[i] = ImageOutcome(
                    str(job.source), str(job.destination), "cancelled", error=CANCELLED
                )
            continue
        batch = transfer_many(
            [(plan.jobs[i].source, plan.jobs[i].destination) for i in indexes],
            platforms=list(platforms) if platforms else None,
            concurrency=workers,
            events=events,
            skip_unchanged=skip_unchanged,
            keep_going=keep_going,
            referrers=referrers,
            referrer_types=referrer_types,
            chunk_size=chunk_size,
            monolithic_threshold=monolithic_threshold,
        )
        failed = failed or not batch.ok
        for i, outcome in zip(indexes, batch.outcomes, strict=True):
            outcomes[i] = outcome
    done = [o for o in outcomes if o is not None]
    return BatchResult(outcomes=[*plan.failures, *plan.skipped, *done])


def settle_unchanged(plan: SyncPlan, early: AskedEarly | None = None) -> dict[int, ImageOutcome]:
    """The plan's images that are unchanged, settled here before any starts: by job index, the
    outcome a run reports for each (``skipped``, unchanged).

    For a plan about to be shared out (forked processes, a cluster's workers): an unchanged
    image then costs none of them, and only what changed is shared. What both ends name is
    learned in bulk (:func:`~.lookahead.look_ahead`); what that missed is asked of the places,
    up to :data:`~.lookahead.THREADS` at once. Never settled here: a job that moves referrers
    (its image's new referrers are looked for by the run), one without a tag to compare, one
    whose tag or source another job of the plan changes (decided when it runs, in its turn),
    one whose question fails (the run meets the failure and reports it). Source digests
    ``early`` knows (:mod:`.early`) are not asked again. Never raises.
    """
    tags = [destination_tag(job.source, job.destination) for job in plan.jobs]
    # a job moving referrers is not asked about, but its tag counts: a job writing that tag
    # too is then decided in its turn, by the run
    known = look_ahead(
        [(job.source, job.destination, tag) for job, tag in zip(plan.jobs, tags, strict=True)],
        ask=[not job.referrers for job in plan.jobs],
        early=early,
    )

    def settle(i: int) -> ImageOutcome | None:
        source, dest, tag = plan.jobs[i].source, plan.jobs[i].destination, tags[i]
        if tag is None or source.reference is None:
            return None
        try:
            platforms = TransferOptions.build(plan.jobs[i].platforms).platforms
            have = unchanged(
                known[i], source_of(source), sink_of(dest), source.reference, tag, platforms
            )
            if have is None:
                return None
            text = str(resolve_destination(source, dest))
        except Exception as exc:  # the run meets it again and reports it
            log.debug("checking %s before the run failed: %s", source, exc)
            return None
        result = TransferResult(str(source), text, Digest(have), unchanged=True)
        return ImageOutcome(str(source), text, "skipped", result=result)

    # Only what look_ahead learned something of: it learns nothing of a job another job of the
    # plan changes, of one moving referrers, nor of one whose destination could not be read.
    learned = {i: k for i, k in enumerate(known) if k is not None and tags[i] is not None}
    # (decided by what was learned: settled at once; what it lacks is asked, some at once)
    asking = [
        i
        for i, k in learned.items()
        if not k.fresh or (k.destination is not None and k.source is None)
    ]
    found = {i: settle(i) for i in learned if i not in asking}
    if asking:
        with ThreadPoolExecutor(min(THREADS, len(asking)), "regstore-settle") as pool:
            found.update(zip(asking, pool.map(settle, asking), strict=True))
    return {i: outcome for i, outcome in sorted(found.items()) if outcome is not None}


def preview_job(job: PlannedJob) -> Literal["copy", "skip"]:
    """What a dry run says a job would do: ``skip`` when the destination tag already points at
    the source's manifest (one HEAD on each side), or, for a registry destination and some
    platforms of an index, at the index the run rewrites to them (the source's manifests read
    to tell), else ``copy``. Raises what the source raises, ImageManifestNotFoundError when
    the source has no such manifest, and PlatformNotFoundError when a job given platforms
    would copy an image of none of them (the source's manifests, and a single image's config,
    read to tell): the run fails those."""
    source = job.source
    info = source.client.head_manifest(source.name, source.reference or "")
    if info is None:
        raise ImageManifestNotFoundError(source.name, source.reference or "")
    action, have = _preview(job, str(info.digest))
    if action is None:
        from .transfer import fit_to_sink, plan_image

        # As the run: a registry holds an index of some platforms rewritten to them (a new
        # digest, or the one child taken), which the source's digest never matches.
        fitted = fit_to_sink(plan_image(source, TransferOptions.build(job.platforms)))
        return "skip" if str(fitted.top.digest) == have else "copy"
    if action == "copy" and job.platforms:
        from .transfer import plan_image

        plan_image(source, TransferOptions.build(job.platforms))  # raises as the run would
    return action


def _preview(
    job: PlannedJob, source_digest: str
) -> tuple[Literal["copy", "skip"] | None, str | None]:
    """:func:`preview_job` as far as the destination's tag tells, with the digest that tag
    names; None when what the run writes must be planned to compare (a registry given
    platforms)."""
    dest = job.destination
    reference = dest.reference
    if reference is None or is_digest(reference):
        return "copy", None
    try:
        if isinstance(dest, StoreImage):
            # as the sync itself asks (a damaged tag or manifest there is copied again)
            have = destination_digest(sink_of(dest), reference)
        else:
            dest_info = dest.client.head_manifest(dest.name, reference)
            have = str(dest_info.digest) if dest_info is not None else None
        sink = sink_of(dest)
        # (a registry given platforms gets the index rewritten to them: the caller compares)
        if have == source_digest and (not job.platforms or sink.accepts_partial_index):
            # as the run asks: a partial index here may lack a platform the job wants
            platforms = TransferOptions.build(job.platforms).platforms
            holds = getattr(sink, "holds_image", None)
            whole = holds is None or holds(have, platforms, source_of(job.source))
            return ("skip" if whole else "copy"), have
        if have is None or not job.platforms or sink.accepts_partial_index:
            return "copy", have
    except (ImageManifestNotFoundError, NotFoundError):
        return "copy", None
    return None, have
