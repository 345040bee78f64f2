"""``regstore bundle create | import | ls | verify``: air-gap bundles, a thin layer over
:mod:`regstore.bundle`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from regstore.bundle import (
    BundleInput,
    create_bundle,
    import_bundle,
    read_bundle,
    verify_bundle,
)
from regstore.engine.sync import load_sync_file, plan_sync
from regstore.errors import InvalidReferenceError, RegstoreError, UsageError
from regstore.reference import validate_name
from regstore.referrers import is_supply_chain_tag

from .app import AppState, cli, regstore_command
from .output import EXIT_FAILURE, EXIT_OK, format_size, short_digest
from .refs import STORE_PREFIX, ImageRef, ImageRefType
from .transfer import (
    check_platforms,
    image_of,
    platform_options,
    referrers_options,
    report_batch,
)

if TYPE_CHECKING:
    from regstore.engine.model import Image

__all__ = ["bundle_group"]


@cli.group("bundle")
def bundle_group() -> None:
    """Air-gap bundles: many images in one verifiable OCI-layout tar, and deltas.

    \b
    regstore bundle create one.tar 127.0.0.1:5000/app:1 store:tools/cli:2
    regstore bundle create two.tar --from mirror.yaml --since one.tar --referrers
    regstore bundle import one.tar mirror.internal:5000/prefix   (then two.tar)
    regstore bundle ls two.tar | regstore bundle verify two.tar
    """


def _sync_images(
    state: AppState, sync_file: str, referrers: bool, platforms: list[str] | None
) -> list[BundleInput]:
    """The images a sync file names, as the sync would write them: named as at its target
    (``as:`` and the prefixes), with their platforms and ``referrers:``."""
    spec = load_sync_file(sync_file)
    client_for = state.sync_clients(spec)
    target_store = state.store(spec.target.store) if spec.target.connection is None else None
    plan = plan_sync(spec, client_for=client_for, target_store=target_store)
    if plan.failures:
        # a listing that failed (a registry down: exit 1), or images of the file that would
        # write one tag (usage: exit 2); its own error says which
        first = plan.failures[0]
        if isinstance(first.exception, RegstoreError):
            raise first.exception
        raise RegstoreError(f"{sync_file}: {first.source}: {first.error}")
    inputs: list[BundleInput] = []
    for job in plan.jobs:
        carry = referrers or job.referrers
        if carry and job.source.reference and is_supply_chain_tag(job.source.reference):
            continue  # signature and referrers-index tags travel with their images instead
        chosen = tuple(job.platforms) if job.platforms else None
        if chosen is not None and platforms and sorted(chosen) != sorted(platforms):
            raise UsageError(
                f"{sync_file}: {job.source} takes the platforms {', '.join(chosen)}, the "
                f"command line {', '.join(platforms)}: a bundle cannot honour both"
            )
        dest = job.destination
        if dest.reference is None:
            raise UsageError(f"{sync_file}: {job.source} has no tag at its target")
        inputs.append(
            BundleInput(
                job.source,
                name=f"{dest.name}:{dest.reference}",
                platforms=chosen,
                referrers=job.referrers,
            )
        )
    return inputs


@bundle_group.command("create")
@click.argument("out", metavar="OUT.tar")
@click.argument("images", metavar="IMAGE...", nargs=-1, type=ImageRefType("any"))
@click.option(
    "--from", "sync_file", metavar="SYNC.yaml", type=click.Path(dir_okay=False),
    help="Also take every image a sync file names, as the sync would write it (its as: "
    "names, prefixes, platforms and referrers).",
)  # fmt: skip
@click.option(
    "--since", metavar="OLD.tar", multiple=True,
    help="Leave out what this earlier bundle holds (repeatable): a delta.",
)  # fmt: skip
@platform_options
@referrers_options
@regstore_command
def create_command(
    state: AppState,
    out: str,
    images: tuple[ImageRef, ...],
    sync_file: str | None,
    since: tuple[str, ...],
    platforms: tuple[str, ...],
    all_platforms: bool,
    referrers: bool,
    referrer_types: tuple[str, ...],
) -> int:
    """Write IMAGEs (registry images or store:NAME:TAG) into the bundle OUT.tar.

    OUT.tar is an OCI image layout in a tar (skopeo reads it as oci-archive:OUT.tar:NAME:TAG)
    and may be any fsspec URL (a path, s3://bucket/key.tar). It is written under a temporary
    name and renamed when complete. With --since, what the earlier bundles hold is left out.
    With --referrers, each image's signatures, SBOMs and attestations (and cosign's
    sha256-<digest>.sig/.att/.sbom tags) travel in the bundle too; such a tag named as an
    IMAGE beside its image travels once, as its referrer.
    """
    state.action = f"writing bundle {out}"
    wanted = check_platforms(platforms, all_platforms)
    chosen: list[Image | BundleInput] = [image_of(state, ref) for ref in images]
    if sync_file is not None:
        chosen += _sync_images(
            state, sync_file, referrers or bool(referrer_types), list(wanted) if wanted else None
        )
    if not chosen:
        raise click.UsageError("name at least one IMAGE (or --from SYNC.yaml)")
    display = state.progress()
    with display:
        info = create_bundle(
            out,
            chosen,
            since=since,
            platforms=wanted,
            referrers=referrers,
            referrer_types=referrer_types,
            concurrency=state.concurrency,
            events=display.sink,
        )
    out_ = state.output
    if out_.json_mode:
        out_.json({"ok": True, "bundle": out, **info.as_dict()})
    else:
        out_.summary(
            f"{out}: {len(info.images)} image(s), {format_size(info.size)} carried"
            + (f", {len(info.referrers)} referrer(s)" if info.referrers else "")
            + (f", a delta of {len(info.base)} bundle(s)" if info.is_delta else "")
        )
    return EXIT_OK


def _target(state: AppState, text: str) -> dict[str, Any]:
    """``store:`` (the --store in use) or ``HOST[:PORT][/PREFIX]``."""
    if text == STORE_PREFIX:
        return {"store": state.store()}
    if text.startswith(STORE_PREFIX):
        # store:NAME opened a new directory store ./NAME, where copy reads a repository
        raise click.BadParameter(
            f"{text!r}: the target store: takes no name (images keep their repositories); "
            "import into another store with --store URL",
            param_hint="TARGET",
        )
    host, _, prefix = text.partition("/")
    if prefix:
        try:
            validate_name(prefix.strip("/"))
        except InvalidReferenceError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
    return {"client": state.client(host), "prefix": prefix}


@bundle_group.command("import")
@click.argument("bundle", metavar="BUNDLE.tar")
@click.argument("target", metavar="TARGET")
@click.option(
    "--name", metavar="NAME[:TAG]",
    help="The repository of images whose ref name is only a tag or absent (skopeo's archives).",
)  # fmt: skip
@click.option(
    "--base-repo", "base_repos", metavar="REPO", multiple=True,
    help="Also look for what a delta leaves out in this repository of TARGET (repeatable).",
)  # fmt: skip
@regstore_command
def import_command(
    state: AppState, bundle: str, target: str, name: str | None, base_repos: tuple[str, ...]
) -> int:
    """Import every image of BUNDLE.tar into TARGET: a registry HOST[:PORT][/PREFIX] (names
    kept under PREFIX) or store: (the --store in use).

    Everything is verified as it streams. A delta whose base the target lacks is refused
    before anything is tagged; what it leaves out is looked for in each image's own
    repository, and in the --base-repo ones (under PREFIX) when a base bundle delivered it
    under another name. Run it again after an interruption: what is complete is skipped.
    """
    state.action = f"importing {bundle}"
    where = _target(state, target)
    display = state.progress()
    with display:
        batch = import_bundle(
            bundle,
            name=name,
            base_repositories=base_repos,
            concurrency=state.concurrency,
            events=display.sink,
            **where,
        )
    return report_batch(state, batch)


@bundle_group.command("ls")
@click.argument("bundle", metavar="BUNDLE.tar")
@regstore_command
def ls_command(state: AppState, bundle: str) -> int:
    """List a bundle's images, sizes and base bundles (reading only its first members).

    The images are checked against the bundle's index.json; the sizes are as the bundle
    states them (bundle verify checks them against its content).
    """
    state.action = f"reading {bundle}"
    info = read_bundle(bundle)
    out = state.output
    if out.json_mode:
        out.json({"ok": True, **info.as_dict()})
        return EXIT_OK
    rows = [
        (i.ref_name, short_digest(i.digest), format_size(i.size), format_size(i.carried))
        for i in info.images
    ]
    rows += [
        (
            f"  {r.ref_name or r.name} ({r.artifact_type or 'referrer'})",
            short_digest(r.digest),
            format_size(r.size),
            format_size(r.carried),
        )
        for r in info.referrers
    ]
    out.table(("IMAGE", "DIGEST", "SIZE", "CARRIED"), rows)
    for base in info.base:
        out.line(f"base bundle: {base.id}")
    out.summary(
        f"bundle {info.id}: {len(info.images)} image(s), {format_size(info.size)} carried"
        + (", a delta" if info.is_delta else "")
    )
    return EXIT_OK


@bundle_group.command("verify")
@click.argument("bundle", metavar="BUNDLE.tar")
@regstore_command
def verify_command(state: AppState, bundle: str) -> int:
    """Re-hash everything in a bundle (no import); exit code 1 when anything is wrong."""
    state.action = f"verifying {bundle}"
    report = verify_bundle(bundle)
    out = state.output
    if out.json_mode:
        out.json(report.as_dict())
    else:
        for problem in report.problems:
            out.line(str(problem))
        out.summary(
            f"{report.blobs_checked} blob(s), {format_size(report.bytes_checked)} re-hashed, "
            f"{len(report.problems)} problem(s)"
        )
    if not report.ok:
        out.error(f"{bundle} is damaged: {report.problems[0]}")
        return EXIT_FAILURE
    return EXIT_OK
