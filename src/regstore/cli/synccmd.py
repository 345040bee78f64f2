"""``regstore sync FILE.yaml``: many repositories and tags, as a sync file describes."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import click

from regstore.engine.model import BatchResult, ImageOutcome
from regstore.engine.syncfile import ConnectionSpec, SyncSpec, load_sync_file
from regstore.errors import RegstoreError
from regstore.safetext import redact_store_url

from . import startup
from .app import AppState, cli, regstore_command
from .output import EXIT_FAILURE, EXIT_OK
from .syncscale import ClusterRun, cluster_options, scale_options, shares_store
from .transfer import (
    filter_options,
    keep_going_option,
    make_filter,
    referrers_options,
    report_batch,
)

if TYPE_CHECKING:
    from regstore.client.early import EarlyHeads, Questions
    from regstore.engine.filters import TagFilter
    from regstore.engine.model import RegistryClient
    from regstore.engine.shards import Shard
    from regstore.engine.sync import SyncPlan
    from regstore.store import ObjectStore

__all__ = ["sync_command"]

log = logging.getLogger("regstore.cli")

#: How each connection of a sync file is reached: ``(plain_http, verify, registry)``
_Reach = dict[ConnectionSpec, tuple["bool | None", "bool | str", str]]


@cli.command("sync")
@click.argument("sync_file", metavar="FILE.yaml", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List what would move; move nothing.")
@filter_options
@keep_going_option
@referrers_options
@click.option(
    "--prune",
    is_flag=True,
    help="Delete mirrored tags the source no longer has (those the filters take), as the "
    "file's `prune: true` for every source; into a store only.",
)
@scale_options
@regstore_command
def sync_command(
    state: AppState,
    sync_file: str,
    dry_run: bool,
    prune: bool,
    referrers: bool,
    referrer_types: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    semver: str | None,
    latest: int | None,
    keep_going: bool,
    shard: Shard | None,
    processes: int | None,
    workers: int | None,
    scheduler: str | None,
    connect_timeout: float,
) -> int:
    """Sync many repositories and tags as a sync file describes (incrementally).

    Tags whose manifest the destination already has cost one request and move nothing; one
    failed image does not stop the others; exit code 1 if any failed. Tag filter options
    narrow every repository of the file further. Images go to the file's target, else to the
    store of --store. The file format is documented in regstore.engine.sync (and the README).
    --referrers turns on the file's ``referrers: true`` for every source.
    --shard takes a stable share of the images; --processes moves them in a few processes of
    this machine; --workers/--scheduler move them on a Dask cluster (planned here, each image
    a task on a worker).
    """
    tag_filter = make_filter(include, exclude, semver, latest)
    cluster = cluster_options(workers, scheduler, connect_timeout, processes)
    if processes is not None and cluster is not None:
        raise click.UsageError("--processes and --workers/--scheduler exclude each other")
    several = (processes or 1) > 1  # several processes asked for
    if several and not keep_going:
        raise click.UsageError(
            "--fail-fast stops the whole run at its first failure, which one process does: "
            "leave out --processes"
        )
    if several and state.settings.verbose >= 2:
        raise click.UsageError(
            "-vv prints the store metrics of one process: leave out --processes to see a sync's"
        )
    spec = load_sync_file(sync_file)
    _refuse_a_second_target(state, spec)
    if several and spec.target.connection is not None:
        # Processes pushing one blob two shares share raced: docker-registry 2.8 once refused
        # a manifest whose blob another process was committing (MANIFEST_BLOB_UNKNOWN).
        raise click.UsageError(
            "--processes needs a directory store as the target, not a registry: processes "
            "pushing the same blob into one registry can race"
        )
    if referrers or referrer_types:
        sources = tuple(dataclasses.replace(s, referrers=True) for s in spec.sources)
        spec = dataclasses.replace(spec, sources=sources)
    if prune:
        if spec.target.connection is not None:
            raise click.UsageError(
                "--prune deletes tags in a store: the sync file's target is a registry"
            )
        sources = tuple(dataclasses.replace(s, prune=True) for s in spec.sources)
        spec = dataclasses.replace(spec, sources=sources)
    state.action = f"syncing {sync_file}"
    on_cluster = ClusterRun(state, cluster) if cluster is not None and not dry_run else None

    # into a store, the sources are asked early (from the file, before the store opens), and a
    # client is made only where something is left to ask
    ask_early = (
        spec.target.connection is None and not dry_run and on_cluster is None and shard is None
    )
    # (--username/--password-stdin: one client, made now, is given them; none is deferred)
    clients = state.sync_clients(spec, deferred=ask_early and state.settings.username is None)

    def client_for(conn: ConnectionSpec) -> RegistryClient:
        client = clients(conn)
        if on_cluster is not None:
            on_cluster.remember(client, conn)
        return client

    store_url = None if spec.target.connection else (spec.target.store or state.store_url)
    early: EarlyHeads | None = None
    reach: _Reach = {}
    with contextlib.ExitStack() as cleanup:
        if ask_early:  # (asked from the file alone: the store's modules take a while to load)
            early, reach = _ask_early(state, spec, tag_filter)
            if early is not None:
                cleanup.callback(early.close)  # (stopped and joined however the command ends)
        if on_cluster is not None:
            on_cluster.start(store_url)
        target_store = None
        if spec.target.connection is None:
            target_store = state.store(spec.target.store)
            if several and not shares_store(target_store):
                raise click.UsageError(
                    "--processes needs a directory store as the target: what other processes "
                    f"write into a {target_store.describe().get('backend')} store may not "
                    "reach this one"
                )
            if early is not None:
                _hold(spec, target_store, tag_filter, early, reach)
        # (the engine loaded only now, the collector paused: the early asks go on meanwhile)
        with startup.imports():
            from regstore.engine.sync import plan_sync

            from .syncforked import auto_processes, run_here  # (fork: sync only)

        plan = plan_sync(
            spec,
            client_for=client_for,
            target_store=target_store,
            extra_filter=tag_filter,
            early=early,
        )
        if shard is not None:
            plan = shard.select(plan)
        for skipped in plan.skipped:  # a registry listed something no image can be named by
            state.output.warning(f"{skipped.source}: {skipped.error}")
        if dry_run:
            return _report_dry_run(state, plan)
        if on_cluster is not None:
            ran = on_cluster.run(plan, store_url, keep_going, referrer_types)
            return report_batch(state, _pruned(ran, plan, keep_going), extra={"dry_run": False})
        asked = processes is not None
        if processes is None:
            processes = auto_processes(state, plan, target_store, keep_going=keep_going)
        batch, processes = run_here(
            state,
            plan,
            processes,
            state.progress(),
            asked=asked,
            keep_going=keep_going,
            referrer_types=referrer_types,
            early=early,
        )
        # "processes" only where there were several: a run in one is reported as it always was
        extra: dict[str, Any] = {"dry_run": False}
        if processes > 1:
            extra["processes"] = processes
        return report_batch(state, _pruned(batch, plan, keep_going), extra=extra)


def _ask_early(
    state: AppState, spec: SyncSpec, tag_filter: TagFilter | None
) -> tuple[EarlyHeads | None, _Reach]:
    """Start asking the sources for their tags and for the digests of the tags the filters
    take (:mod:`regstore.engine.early`), before the store is even open, as their clients
    would ask: not a registry given credentials, nor one the file reaches in two ways (its
    answers are known by its name only); the entries of one registry reached one way are
    asked together. :func:`_hold` narrows them to the tags the store holds, by the reach
    returned with them."""
    if state.settings.username is not None:
        return None, {}
    try:
        with startup.imports():
            from regstore.engine.early import listed_questions

        reach, ways = _reach(state, spec)
        questions: list[Questions] = []
        for conn, listed, asked in listed_questions(spec, tag_filter):  # (one per connection)
            plain, verify, registry = reach[conn]
            if conn.username is None and len(ways[registry]) == 1:
                questions.append((conn.registry, plain, verify, listed, asked))
    except Exception as exc:  # a shortcut: whatever it cannot ask is asked the ordinary way
        log.debug("nothing asked early: %s", exc)
        return None, {}
    with startup.imports():
        from regstore.client.early import EarlyHeads
    return EarlyHeads.start(questions), reach


def _hold(
    spec: SyncSpec, store: ObjectStore, tag_filter: TagFilter | None, early: EarlyHeads,
    reach: _Reach,
) -> None:  # fmt: skip
    """Narrow what ``early`` asks to the tags ``store`` holds that the filters take: those
    whose digests the look-ahead will want (:func:`~regstore.engine.early.early_questions`:
    none of a repository holding only a few); nothing more where they cannot be read."""
    from regstore.engine.early import early_questions

    held: dict[str, dict[str, list[str]]] = {registry: {} for _, _, registry in reach.values()}
    try:
        for conn, _, asked in early_questions(spec, store.tags, tag_filter):
            by_name = held[reach[conn][2]]
            for name, tags in asked.items():
                by_name[name] = [*by_name.get(name, []), *tags]
    except Exception as exc:  # (asked no more: the images ask for themselves)
        log.debug("the store's tags were not read early: %s", exc)
        held = {registry: {} for registry in held}
    for registry, by_name in held.items():
        early.hold(registry, by_name)


def _reach(state: AppState, spec: SyncSpec) -> tuple[_Reach, dict[str, set[ConnectionSpec]]]:
    """How each connection of the file's sources is reached, and which registry it is (by
    name, as early answers are kept); and the connections reaching each registry."""
    with startup.imports():
        from regstore.client.urls import Endpoint

    reach: _Reach = {}
    ways: dict[str, set[ConnectionSpec]] = {}
    for source in spec.sources:
        conn = source.connection
        if conn not in reach:
            plain, verify = state.transport_for(
                plain_http=conn.plain_http, tls_verify=conn.tls_verify, ca_cert=conn.ca_cert
            )
            registry = Endpoint.parse(conn.registry, plain_http=plain).registry
            reach[conn] = (plain, verify, registry)
            ways.setdefault(registry, set()).add(conn)
    return reach, ways


def _pruned(batch: BatchResult, plan: SyncPlan, keep_going: bool) -> BatchResult:
    """``batch`` with the tags pruned after it (none after a failure with --fail-fast: the
    run stopped there)."""
    if not plan.prunes or (not keep_going and not batch.ok):
        return batch
    from regstore.engine.sync import prune_destinations

    return BatchResult(outcomes=[*batch.outcomes, *prune_destinations(plan)])


def _report_dry_run(state: AppState, plan: SyncPlan) -> int:
    from regstore.engine.sync import preview_job, prune_destinations

    out = state.output
    rows: list[dict[str, Any]] = []
    for job in plan.jobs:
        action: str
        try:
            action = preview_job(job)
            error = None
        except RegstoreError as exc:
            action, error = "fail", str(exc)
        rows.append({**job.as_dict(), "action": action, "error": error})
    unpruned: list[ImageOutcome] = []  # a destination whose tags could not be listed
    for o in prune_destinations(plan, dry_run=True):
        if o.status != "pruned":
            unpruned.append(o)
            continue
        rows.append(
            {
                "source": o.source,
                "destination": o.destination,
                "platforms": None,
                "referrers": False,
                "action": "prune",
                "error": None,
            }
        )
    failures = [o.as_dict() for o in [*plan.failures, *unpruned]]
    skipped = [o.as_dict() for o in plan.skipped]
    ok = not failures and all(r["action"] != "fail" for r in rows)
    if out.json_mode:
        out.json({"ok": ok, "dry_run": True, "jobs": rows, "failed": failures, "skipped": skipped})
    else:
        table = [(r["action"], r["source"], r["destination"], r["error"] or "") for r in rows]
        table += [("skip", f["source"], f["destination"], f["error"] or "") for f in skipped]
        table += [("fail", f["source"], f["destination"], f["error"] or "") for f in failures]
        if table:
            out.table(("WOULD", "SOURCE", "DESTINATION", "DETAIL"), table)
        copies = sum(r["action"] == "copy" for r in rows)
        skips = sum(r["action"] == "skip" for r in rows)
        prunes = sum(r["action"] == "prune" for r in rows)
        to_prune = f", {prunes} to prune" if prunes else ""
        out.summary(f"dry run: {copies} to copy, {skips} unchanged{to_prune}, nothing moved")
    if not ok:
        out.error("some repositories or images could not be listed or checked (see above)")
        return EXIT_FAILURE
    return EXIT_OK


def _refuse_a_second_target(state: AppState, spec: SyncSpec) -> None:
    """A --store on the command line where the sync file names its own target: the file's
    target wins, so the images would go elsewhere than the command line says. (From
    REGSTORE_STORE it is a default, and the file's target overrides it without a word.)"""
    given = state.settings.store if state.settings.store_given else None
    target = spec.target
    if given is None or (target.connection is None and target.store in (None, given)):
        return
    theirs = (
        f"the registry {target.connection.registry}"
        if target.connection is not None
        else f"the store {redact_store_url(target.store or '')}"
    )
    raise click.UsageError(
        f"--store {redact_store_url(given)} and the sync file's target ({theirs}) name two "
        "destinations: leave out --store, or the file's target"
    )
