"""``regstore bundle create | import | ls | verify``: air-gap bundles, a thin layer over
:mod:`regstore.bundle`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from regstore.bundle import create_bundle, import_bundle, read_bundle, verify_bundle
from regstore.engine.sync import ConnectionSpec, load_sync_file, plan_sync
from regstore.errors import InvalidReferenceError, UsageError
from regstore.reference import validate_name

from .app import AppState, cli, regstore_command
from .output import EXIT_FAILURE, EXIT_OK, format_size, short_digest
from .refs import STORE_PREFIX, ImageRef, ImageRefType
from .transfer import check_platforms, image_of, platform_options, report_batch

if TYPE_CHECKING:
    from regstore.engine.model import Image, RegistryClient

__all__ = ["bundle_group"]


@cli.group("bundle")
def bundle_group() -> None:
    """Air-gap bundles: many images in one verifiable OCI-layout tar, and deltas.

    \b
    regstore bundle create one.tar 127.0.0.1:5000/app:1 store:tools/cli:2
    regstore bundle create two.tar --from mirror.yaml --since one.tar
    regstore bundle import one.tar mirror.internal:5000/prefix   (then two.tar)
    regstore bundle ls two.tar | regstore bundle verify two.tar
    """


def _sync_images(state: AppState, sync_file: str) -> list[Image]:
    spec = load_sync_file(sync_file)

    def client_for(conn: ConnectionSpec) -> RegistryClient:
        return state.client(
            conn.registry,
            plain_http=conn.plain_http,
            tls_verify=conn.tls_verify,
            ca_cert=conn.ca_cert,
            username=conn.username,
            password=conn.password(),
        )

    target_store = state.store(spec.target.store) if spec.target.connection is None else None
    plan = plan_sync(spec, client_for=client_for, target_store=target_store)
    if plan.failures:
        first = plan.failures[0]
        raise UsageError(f"{sync_file}: cannot list {first.source}: {first.error}")
    return [job.source for job in plan.jobs]


@bundle_group.command("create")
@click.argument("out", metavar="OUT.tar")
@click.argument("images", metavar="IMAGE...", nargs=-1, type=ImageRefType("any"))
@click.option(
    "--from", "sync_file", metavar="SYNC.yaml", type=click.Path(dir_okay=False),
    help="Also take every image a sync file names (its sources).",
)  # fmt: skip
@click.option(
    "--since", metavar="OLD.tar", multiple=True,
    help="Leave out what this earlier bundle holds (repeatable): a delta.",
)  # fmt: skip
@platform_options
@regstore_command
def create_command(
    state: AppState,
    out: str,
    images: tuple[ImageRef, ...],
    sync_file: str | None,
    since: tuple[str, ...],
    platforms: tuple[str, ...],
    all_platforms: bool,
) -> int:
    """Write IMAGEs (registry images or store:NAME:TAG) into the bundle OUT.tar.

    OUT.tar is an OCI image layout in a tar (skopeo reads it as oci-archive:OUT.tar:NAME:TAG)
    and may be any fsspec URL (a path, s3://bucket/key.tar). It is written under a temporary
    name and renamed when complete. With --since, what the earlier bundles hold is left out.
    """
    state.action = f"writing bundle {out}"
    chosen = [image_of(state, ref) for ref in images]
    if sync_file is not None:
        chosen += _sync_images(state, sync_file)
    if not chosen:
        raise click.UsageError("name at least one IMAGE (or --from SYNC.yaml)")
    display = state.progress()
    with display:
        info = create_bundle(
            out,
            chosen,
            since=since,
            platforms=check_platforms(platforms, all_platforms),
            concurrency=state.concurrency,
            events=display.sink,
        )
    out_ = state.output
    if out_.json_mode:
        out_.json({"ok": True, "bundle": out, **info.as_dict()})
    else:
        out_.summary(
            f"{out}: {len(info.images)} image(s), {format_size(info.size)} carried"
            + (f", a delta of {len(info.base)} bundle(s)" if info.is_delta else "")
        )
    return EXIT_OK


def _target(state: AppState, text: str) -> dict[str, Any]:
    """``store:`` (the --store in use) or ``HOST[:PORT][/PREFIX]``."""
    if text == STORE_PREFIX or text.startswith(STORE_PREFIX):
        url = text[len(STORE_PREFIX) :] or None
        return {"store": state.store(url)}
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
@regstore_command
def import_command(state: AppState, bundle: str, target: str, name: str | None) -> int:
    """Import every image of BUNDLE.tar into TARGET: a registry HOST[:PORT][/PREFIX] (names
    kept under PREFIX) or store: (the --store in use).

    Everything is verified as it streams. A delta whose base the target lacks is refused
    before anything is tagged. Run it again after an interruption: what is complete is
    skipped.
    """
    state.action = f"importing {bundle}"
    where = _target(state, target)
    display = state.progress()
    with display:
        batch = import_bundle(
            bundle, name=name, concurrency=state.concurrency, events=display.sink, **where
        )
    return report_batch(state, batch)


@bundle_group.command("ls")
@click.argument("bundle", metavar="BUNDLE.tar")
@regstore_command
def ls_command(state: AppState, bundle: str) -> int:
    """List a bundle's images, sizes and base bundles (reading only its first members)."""
    state.action = f"reading {bundle}"
    info = read_bundle(bundle)
    out = state.output
    if out.json_mode:
        out.json(info.as_dict())
        return EXIT_OK
    rows = [
        (i.ref_name, short_digest(i.digest), format_size(i.size), format_size(i.carried))
        for i in info.images
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
            out.line(problem)
        out.summary(
            f"{report.blobs} blob(s), {format_size(report.bytes)} re-hashed, "
            f"{len(report.problems)} problem(s)"
        )
    if not report.ok:
        out.error(f"{bundle} is damaged: {report.problems[0]}")
        return EXIT_FAILURE
    return EXIT_OK
