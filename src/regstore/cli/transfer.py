"""The commands that move images: ``pull``, ``push`` and ``copy`` (and their shared options)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from regstore.engine.filters import FilterError, TagFilter
from regstore.engine.model import BatchResult, RegistryImage, StoreImage, TransferResult
from regstore.errors import RegstoreError
from regstore.manifest import Platform
from regstore.reference import validate_name, validate_tag
from regstore.referrers import is_supply_chain_tag

from .app import AppState, cli, regstore_command
from .output import EXIT_FAILURE, EXIT_OK, format_size, short_digest
from .refs import ImageRef, ImageRefType, RegistryRef, StoreRef

if TYPE_CHECKING:
    from regstore.client import Client

__all__ = [
    "copy_command",
    "filter_options",
    "make_filter",
    "move_images",
    "pull_command",
    "push_command",
    "report_batch",
]

F = TypeVar("F", bound=Callable[..., Any])
Image = RegistryImage | StoreImage


# -- shared options ------------------------------------------------------------------------------


def filter_options(f: F) -> F:
    """``--include``, ``--exclude``, ``--semver``, ``--latest``: tags of a repository."""
    options = [
        click.option(
            "--include",
            metavar="REGEX",
            multiple=True,
            help="Take tags matching REGEX (re.search; repeatable: any may match).",
        ),
        click.option(
            "--exclude",
            metavar="REGEX",
            multiple=True,
            help="Leave out tags matching REGEX (repeatable).",
        ),
        click.option(
            "--semver",
            metavar="RANGE",
            help="Take version tags in RANGE, e.g. '>=1.2 <2', '^1.4', '1.x' (pre-releases "
            "inside it too, '1.5.0-rc1'; --exclude '-rc' drops them).",
        ),
        click.option(
            "--latest",
            metavar="N",
            type=click.IntRange(min=1),
            help="Take the newest N tags (by version; pre-releases count: --exclude '-rc').",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def dry_run_option(f: F) -> F:
    """``--dry-run`` of pull, push and copy."""
    return click.option(
        "--dry-run",
        is_flag=True,
        help="Say what would move (each image: copy or unchanged, its blobs, those the "
        "destination lacks and their size); move nothing. Referrers are not counted.",
    )(f)


def keep_going_option(f: F) -> F:
    """``--keep-going`` (the default) / ``--fail-fast`` for commands that move many images."""
    return click.option(
        "--keep-going/--fail-fast",
        default=True,
        show_default=True,
        help="With many images: go on after a failed one (report it), or stop at the first "
        "failure and cancel the images not yet started.",
    )(f)


def platform_options(f: F) -> F:
    """``--platform`` (repeatable) and ``--all-platforms``."""
    f = click.option(
        "--all-platforms",
        is_flag=True,
        help="Take every platform of an index (the default).",
    )(f)
    f = click.option(
        "--platform",
        "platforms",
        metavar="OS/ARCH[/VARIANT]",
        multiple=True,
        help="Take only this platform of an index (repeatable); an image of another "
        "platform alone is refused.",
    )(f)
    return f


def referrers_options(f: F) -> F:
    """``--referrers`` and ``--referrers-type TYPE`` (repeatable; implies ``--referrers``)."""
    f = click.option(
        "--referrers-type",
        "referrer_types",
        metavar="TYPE",
        multiple=True,
        help="With --referrers: only artifacts of this type, e.g. application/spdx+json "
        "(repeatable; implies --referrers).",
    )(f)
    f = click.option(
        "--referrers",
        is_flag=True,
        help="Also move what refers to each image: signatures, SBOMs, attestations "
        "(recursively) and cosign's sha256-<digest>.sig/.att/.sbom tags.",
    )(f)
    return f


def make_filter(
    include: Sequence[str], exclude: Sequence[str], semver: str | None, latest: int | None
) -> TagFilter | None:
    """The tag filter of the command line, or None when no filter option was given."""
    try:
        tag_filter = TagFilter.from_options(
            include=include, exclude=exclude, semver=semver, latest=latest
        )
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="tag filter") from None
    return None if tag_filter.is_empty else tag_filter


def check_platforms(platforms: Sequence[str], all_platforms: bool) -> list[str] | None:
    """Validated platforms, or None for all of them."""
    if platforms and all_platforms:
        raise click.UsageError("--platform and --all-platforms exclude each other")
    for p in platforms:
        try:
            Platform.parse(p)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--platform") from None
    return list(platforms) or None


# -- reporting -----------------------------------------------------------------------------------


def report_result(state: AppState, result: TransferResult, verb: str) -> int:
    """Print one image's result; exit code 0."""
    out = state.output
    if out.json_mode:
        out.json({"ok": True, **result.as_dict()})
        return EXIT_OK
    if result.unchanged:
        more = f"; {len(result.referrers)} new referrer(s) moved" if result.referrers else ""
        out.summary(
            f"{result.destination} is up to date "
            f"({short_digest(str(result.manifest_digest))}{more})"
        )
        return EXIT_OK
    moved = len(result.transferred)
    details = f"{moved} blob(s), {format_size(result.bytes_moved)}"
    if result.skipped:
        details += f"; {len(result.skipped)} already there"
    if result.mounted:
        details += f"; {len(result.mounted)} mounted"
    if result.quarantined:
        details += f"; {len(result.quarantined)} damaged in the store, fetched again"
    if result.referrers:
        details += f"; {len(result.referrers)} referrer(s)"
    partial = " (some platforms only)" if result.partial else ""
    if result.rewritten_from is not None:
        # a registry got the one platform's manifest or a new index, not the source index
        partial = f" (some platforms only, from index {short_digest(str(result.rewritten_from))})"
    out.summary(
        f"{verb} {result.source} -> {result.destination}{partial} "
        f"{short_digest(str(result.manifest_digest))} ({details})"
    )
    return EXIT_OK


def report_batch(
    state: AppState, batch: BatchResult, *, extra: dict[str, Any] | None = None
) -> int:
    """Print every image's outcome; exit code 1 when any failed."""
    out = state.output
    if out.json_mode:
        out.json({**batch.as_dict(), **(extra or {})})
    else:
        rows = []
        for o in batch.outcomes:
            detail = o.error or ""
            if o.result is not None and o.status == "copied":
                digest = short_digest(str(o.result.manifest_digest))
                detail = f"{digest} {format_size(o.result.bytes_moved)}"
            elif o.result is not None and o.status == "skipped":
                detail = f"{short_digest(str(o.result.manifest_digest))} unchanged"
            rows.append((o.status, o.source, o.destination, detail))
        if rows and not out.quiet:
            out.table(("STATUS", "SOURCE", "DESTINATION", "DETAIL"), rows)
        out.summary(
            f"{len(batch.by_status('copied'))} copied, {len(batch.by_status('skipped'))} "
            f"skipped, {len(batch.by_status('failed'))} failed"
            + (
                f", {cancelled} cancelled"
                if (cancelled := len(batch.by_status("cancelled")))
                else ""
            )
            + (f", {pruned} pruned" if (pruned := len(batch.by_status("pruned"))) else "")
            + f" ({format_size(batch.bytes_moved)} moved)"
        )
    if not batch.ok:
        failed = batch.by_status("failed") or batch.by_status("cancelled")
        first = failed[0]
        out.error(
            f"{len(failed)} of {len(batch.outcomes)} image(s) failed; first: {first.source}: "
            f"{first.error}"
        )
        return EXIT_FAILURE
    return EXIT_OK


# -- resolving images ----------------------------------------------------------------------------


def registry_client(state: AppState, ref: RegistryRef) -> Client:
    return state.client(ref.registry)


def image_of(state: AppState, ref: ImageRef, store_url: str | None = None) -> Image:
    """The engine's image for a command-line reference."""
    return image_at(state, ref, ref.reference, store_url)


def image_at(
    state: AppState, ref: ImageRef, reference: str | None, store_url: str | None = None
) -> Image:
    """The engine's image for ``ref``'s repository at ``reference`` (a tag, a digest, or None:
    the engine gives a destination the source's tag)."""
    if isinstance(ref, StoreRef):
        return StoreImage(state.store(store_url), ref.name, reference)
    return RegistryImage(registry_client(state, ref), ref.name, reference)


def list_tags(state: AppState, ref: ImageRef, store_url: str | None = None) -> list[str]:
    if isinstance(ref, StoreRef):
        return state.store(store_url).tags(ref.name)
    return registry_client(state, ref).list_image_tags(ref.name)


def filtered_jobs(
    state: AppState,
    source: ImageRef,
    tag_filter: TagFilter,
    destination: Callable[[str | None], Image],
    src_store: str | None = None,
) -> list[tuple[Image, Image]]:
    """One job per tag of ``source``'s repository that passes ``tag_filter``."""
    if source.explicit:
        raise click.UsageError(
            f"tag filters select tags of a repository: write {_without_tag(source)} "
            f"instead of {source}"
        )
    state.action = f"selecting tags of {_without_tag(source)}"
    available = list_tags(state, source, src_store)
    tags = tag_filter.select(available)
    if not tags:
        raise RegstoreError(
            f"none of its {len(available)} tag(s) matches the filter ({tag_filter.describe()})"
        )
    return [(image_at(state, source, tag, src_store), destination(tag)) for tag in tags]


def _without_tag(ref: ImageRef) -> str:
    if isinstance(ref, StoreRef):
        return f"store:{ref.name}"
    return ref.ref.repository


def _split_as(value: str) -> tuple[str, str | None]:
    """``--as NAME[:TAG]``."""
    name, tag = value, None
    colon, slash = value.rfind(":"), value.rfind("/")
    if colon > slash:
        name, tag = value[:colon], value[colon + 1 :]
    try:
        validate_name(name)
        if tag is not None:
            validate_tag(tag)
    except RegstoreError as exc:
        raise click.BadParameter(str(exc), param_hint="--as") from None
    return name, tag


def report_preview(
    state: AppState, jobs: Sequence[tuple[Image, Image]], platforms: list[str] | None
) -> int:
    """``--dry-run``: what moving each ``(source, destination)`` would do, as a table (or
    JSON); exit 1 when an image could not be previewed (the run would fail it)."""
    from regstore.engine.preview import preview_transfer  # (start-up: only a dry run needs it)

    rows: list[dict[str, Any]] = []
    for src, dst in jobs:
        try:
            rows.append(
                {**preview_transfer(src, dst, platforms=platforms).as_dict(), "error": None}
            )
        except RegstoreError as exc:
            rows.append({"source": str(src), "destination": str(dst), "action": "fail",
                         "error": str(exc)})  # fmt: skip
    ok = all(r["action"] != "fail" for r in rows)
    out = state.output
    if out.json_mode:
        out.json({"ok": ok, "dry_run": True, "jobs": rows})
    else:
        table = []
        for r in rows:
            if r["action"] == "fail":
                table.append(("fail", r["source"], r["destination"], "", r["error"]))
                continue
            blobs = f"{r['blobs']} ({format_size(r['size'])})"
            if r["missing_blobs"] is None:
                detail = "the destination cannot tell which it lacks"
            else:
                detail = f"{r['missing_blobs']} lacking ({format_size(r['missing_size'])})"
            table.append((r["action"], r["source"], r["destination"], blobs, detail))
        out.table(("WOULD", "SOURCE", "DESTINATION", "BLOBS", "AT THE DESTINATION"), table)
        copies = [r for r in rows if r["action"] == "copy"]
        lacking = sum(r["missing_size"] or 0 for r in copies)
        skips = sum(r["action"] == "skip" for r in rows)
        failed = len(rows) - len(copies) - skips
        out.summary(
            f"dry run: {len(copies)} to copy ({format_size(lacking)} of blobs lacking at the "
            f"destination), {skips} unchanged"
            + (f", {failed} failed" if failed else "")
            + ", nothing moved"
        )
    for r in rows:
        if r["action"] == "fail":
            out.error(f"{r['source']}: {r['error']}")
    return EXIT_OK if ok else EXIT_FAILURE


# -- the one path of pull, push and copy -----------------------------------------------------------

_VERBS = {
    "pull": ("pulling", "pulled"),
    "push": ("pushing", "pushed"),
    "copy": ("copying", "copied"),
}


def move_images(
    state: AppState,
    operation: Literal["pull", "push", "copy"],
    source: ImageRef,
    destination: Callable[[str | None], Image],
    *,
    src_store: str | None = None,
    tag_filter: TagFilter | None = None,
    platforms: list[str] | None = None,
    mount_from: Sequence[str] = (),
    keep_going: bool = True,
    repair: bool = False,
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
    dry_run: bool = False,
) -> int:
    """The body pull, push and copy share: move ``source`` (one image, or each tag of its
    repository that ``tag_filter`` selects) to ``destination(tag)``, with progress, and report
    (``dry_run``: say what would move instead).

    ``destination`` is called with the selected tag, or with None for one image: the engine
    then gives the image its tag (:func:`regstore.engine.destination_tag`, the one rule).
    """
    # (start-up: a sync never loads what one pull, push or copy moves with)
    from regstore.engine.api import transfer_one
    from regstore.engine.transfer import resolve_destination, transfer_many

    doing, done = _VERBS[operation]
    referrers = referrers or bool(referrer_types)
    if dry_run:
        if repair:
            raise click.UsageError("--repair and --dry-run exclude each other")
        if tag_filter is not None:
            jobs = filtered_jobs(state, source, tag_filter, destination, src_store)
            jobs = [
                j for j in jobs if not (referrers and is_supply_chain_tag(j[0].reference or ""))
            ]
        else:
            jobs = [(image_of(state, source, src_store), destination(None))]
        state.action = f"previewing {len(jobs)} image(s) of {_without_tag(source)}"
        return report_preview(state, jobs, platforms)
    display = state.progress()
    if tag_filter is not None:
        jobs = filtered_jobs(state, source, tag_filter, destination, src_store)
        if referrers:  # signature and referrers-index tags travel with their images
            jobs = [j for j in jobs if not is_supply_chain_tag(j[0].reference or "")]
        state.action = f"{doing} {len(jobs)} tag(s) of {_without_tag(source)}"
        with display:
            batch = transfer_many(
                jobs,
                platforms=platforms,
                mount_from=mount_from,
                concurrency=state.concurrency,
                chunk_size=state.chunk_size,
                monolithic_threshold=state.monolithic_threshold,
                events=display.sink,
                keep_going=keep_going,
                operation=operation,
                referrers=referrers,
                referrer_types=referrer_types,
            )
        return report_batch(state, batch)
    state.action = f"{doing} {source}"  # until the destination is known
    src_image = image_of(state, source, src_store)
    dst_image = destination(None)
    if operation != "pull":  # a pull's destination is the store: its name says enough
        state.action = f"{doing} {source} to {resolve_destination(src_image, dst_image)}"
    with display:
        result = transfer_one(
            src_image,
            dst_image,
            operation=operation,
            platforms=platforms,
            mount_from=mount_from,
            concurrency=state.concurrency,
            chunk_size=state.chunk_size,
            monolithic_threshold=state.monolithic_threshold,
            events=display.sink,
            repair=repair,
            referrers=referrers,
            referrer_types=referrer_types,
        )
    return report_result(state, result, done)


# -- commands ------------------------------------------------------------------------------------


@cli.command("pull")
@click.argument("ref", type=ImageRefType("registry"))
@click.option("--as", "as_", metavar="NAME[:TAG]", help="Store under this name (and tag).")
@click.option(
    "--repair",
    is_flag=True,
    help="First re-hash the image's blobs already in the store; fetch the damaged ones again.",
)
@platform_options
@filter_options
@keep_going_option
@referrers_options
@dry_run_option
@regstore_command
def pull_command(
    state: AppState,
    ref: RegistryRef,
    as_: str | None,
    repair: bool,
    referrers: bool,
    referrer_types: tuple[str, ...],
    platforms: tuple[str, ...],
    all_platforms: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    semver: str | None,
    latest: int | None,
    keep_going: bool,
    dry_run: bool,
) -> int:
    """Pull an image from a registry into the store.

    \b
    regstore pull 127.0.0.1:5000/team/app:1.2
    regstore pull alpine --platform linux/arm64 --as mirror/alpine:3
    regstore pull 127.0.0.1:5000/team/app --semver '>=1.2'   (every matching tag)
    regstore pull 127.0.0.1:5000/team/app:1.2 --repair       (re-fetch damaged blobs)
    regstore pull 127.0.0.1:5000/team/app:1.2 --referrers    (with signatures and SBOMs)
    """
    selected = check_platforms(platforms, all_platforms)
    tag_filter = make_filter(include, exclude, semver, latest)
    as_name, as_tag = _split_as(as_) if as_ else (None, None)
    if tag_filter is not None:
        if repair:
            raise click.UsageError("--repair takes one image: name its tag or digest")
        if as_tag is not None:
            raise click.UsageError("--as takes only a NAME when tag filters select many tags")

    def destination(tag: str | None) -> Image:
        return StoreImage(state.store(), as_name or ref.name, as_tag if as_tag else tag)

    return move_images(
        state,
        "pull",
        ref,
        destination,
        tag_filter=tag_filter,
        platforms=selected,
        keep_going=keep_going,
        repair=repair,
        referrers=referrers,
        referrer_types=referrer_types,
        dry_run=dry_run,
    )


@cli.command("push")
@click.argument("source", type=ImageRefType("store"))
@click.argument("dest", type=ImageRefType("registry"))
@click.option(
    "--mount-from",
    metavar="REPO",
    multiple=True,
    help="Ask the registry to mount blobs from this repository of it (repeatable).",
)
@referrers_options
@dry_run_option
@regstore_command
def push_command(
    state: AppState,
    source: StoreRef,
    dest: RegistryRef,
    mount_from: tuple[str, ...],
    referrers: bool,
    referrer_types: tuple[str, ...],
    dry_run: bool,
) -> int:
    """Push an image of the store to a registry.

    SOURCE is NAME[:TAG|@DIGEST] of the store (store: may prefix it). Without a tag in DEST,
    the source's tag is kept.

    \b
    regstore push team/app:1.2 127.0.0.1:5000/team/app
    regstore push store:team/app:1.2 registry.example/app:stable --mount-from base/app
    """
    for repo in mount_from:
        try:
            validate_name(repo)
        except RegstoreError as exc:
            raise click.BadParameter(str(exc), param_hint="--mount-from") from None
    return move_images(
        state,
        "push",
        source,
        lambda tag: image_at(state, dest, dest.reference if dest.explicit else tag),
        mount_from=mount_from,
        referrers=referrers,
        referrer_types=referrer_types,
        dry_run=dry_run,
    )


@cli.command("copy")
@click.argument("source", type=ImageRefType("any"))
@click.argument("dest", type=ImageRefType("any"))
@click.option("--src-store", metavar="URL", help="The store of a store: SOURCE (default --store).")
@click.option("--dest-store", metavar="URL", help="The store of a store: DEST (default --store).")
@click.option(
    "--mount-from", metavar="REPO", multiple=True, help="Repositories to mount blobs from."
)
@platform_options
@filter_options
@keep_going_option
@referrers_options
@dry_run_option
@regstore_command
def copy_command(
    state: AppState,
    source: ImageRef,
    dest: ImageRef,
    src_store: str | None,
    dest_store: str | None,
    mount_from: tuple[str, ...],
    referrers: bool,
    referrer_types: tuple[str, ...],
    platforms: tuple[str, ...],
    all_platforms: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    semver: str | None,
    latest: int | None,
    keep_going: bool,
    dry_run: bool,
) -> int:
    """Copy an image between registries and stores (any direction).

    Registry images as usual, store images as store:NAME[:TAG|@DIGEST]. Without a tag in DEST
    the source's tag is kept.

    \b
    regstore copy 127.0.0.1:5000/team/app:1.2 127.0.0.1:6000/team/app
    regstore copy store:team/app:1.2 ghcr.io/org/app:1.2
    regstore copy store:team/app store:team/app --src-store /srv/a --dest-store s3://b/m --latest 3
    regstore copy 127.0.0.1:5000/team/app 127.0.0.1:6000/mirror/app --include '^1\\.'
    """
    selected = check_platforms(platforms, all_platforms)
    tag_filter = make_filter(include, exclude, semver, latest)
    if tag_filter is not None and dest.explicit:
        raise click.UsageError("with tag filters, DEST names a repository without a tag")

    def destination(tag: str | None) -> Image:
        reference = dest.reference if dest.explicit else tag
        return image_at(state, dest, reference, dest_store)

    return move_images(
        state,
        "copy",
        source,
        destination,
        src_store=src_store,
        tag_filter=tag_filter,
        platforms=selected,
        mount_from=mount_from,
        keep_going=keep_going,
        referrers=referrers,
        referrer_types=referrer_types,
        dry_run=dry_run,
    )
