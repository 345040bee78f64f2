"""The commands that look after the store (and describe images): ``ls``, ``inspect``,
``verify``, ``delete``, ``gc`` and ``plugins``.

None of them creates a store: a store URL where nothing was ever stored (a mistyped path or
prefix) is an error, exit code 1.
"""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

import click

from regstore import plugins
from regstore.engine import RegistryImage, StoreImage
from regstore.engine.gc import (
    DEFAULT_GRACE,
    collect_garbage,
    delete_image,
    manifests_reached,
    tags_of,
)
from regstore.engine.referrers import ReferrerNode, referrer_tree
from regstore.engine.verify import verify
from regstore.errors import DamagedTagError, RegstoreError
from regstore.manifest import Manifest
from regstore.referrers import is_supply_chain_tag, sigstore_tags, subject_of_tag
from regstore.store import DELETED_NOT_MOVED, read_blob

from .app import AppState, cli, regstore_command
from .output import EXIT_FAILURE, EXIT_OK, format_size, short_digest
from .refs import ImageRef, ImageRefType, RegistryRef, StoreRef

if TYPE_CHECKING:
    from regstore.engine.verify import Problem, VerifyReport
    from regstore.store import ObjectStore
    from regstore.storetypes import StagingEntry

__all__ = ["describe_manifest"]

_SHORT_TYPES = {
    "application/vnd.oci.image.index.v1+json": "oci-index",
    "application/vnd.oci.image.manifest.v1+json": "oci-manifest",
    "application/vnd.docker.distribution.manifest.list.v2+json": "docker-list",
    "application/vnd.docker.distribution.manifest.v2+json": "docker-v2",
    "application/vnd.docker.distribution.manifest.v1+prettyjws": "docker-v1-signed",
    "application/vnd.docker.distribution.manifest.v1+json": "docker-v1",
}


# -- ls ------------------------------------------------------------------------------------------


@cli.command("ls")
@click.argument("name", required=False, type=ImageRefType("store-or-registry"))
@regstore_command
def ls_command(state: AppState, name: StoreRef | RegistryRef | None) -> int:
    """List the store's repositories, or the tags of one (digest, type, size); or the tags of
    a registry's repository.

    NAME is a repository of the store (store: may prefix it), or HOST[:PORT]/NAME of a
    registry.
    """
    if isinstance(name, RegistryRef):
        return _ls_registry(state, name)
    store = state.store(must_exist=True, read_only=True)
    out = state.output
    if name is None:
        state.action = f"listing the repositories of {state.shown_store_url}"
        repos = [{"name": r, "tags": store.tags(r)} for r in store.repositories()]
        if out.json_mode:
            out.json({"ok": True, "store": state.shown_store_url, "repositories": repos})
        elif repos:
            out.table(("REPOSITORY", "TAGS"), [(r["name"], len(r["tags"])) for r in repos])
        else:
            out.note(f"the store {state.shown_store_url} is empty")
        return EXIT_OK
    if name.explicit:
        raise click.BadParameter("give a repository name without a tag", param_hint="NAME")
    state.action = f"listing the tags of {name}"
    unreadable: list[tuple[str, str, RegstoreError]] = []
    records = store.images(name.name, unreadable=unreadable)  # as Python users get them
    for _, tag, exc in unreadable:  # listed, but its image cannot be read: the rest still is
        out.warning(
            f"tag {tag} not listed: {exc} (pulling that image again with --repair mends it); "
            "UNIQUE sizes leave it out, so what it shares with others counts as theirs alone"
        )
    marks = _referrer_marks(store, name.name, [(r.tag, str(r.digest)) for r in records])
    if out.json_mode:
        rows = [
            {**{k: v for k, v in r.as_dict().items() if k != "name"}, "referrers": marks[i][0]}
            for i, r in enumerate(records)
        ]
        skipped = [{"tag": tag, "error": str(exc)} for _, tag, exc in unreadable]
        out.json(
            {
                "ok": True,
                "store": state.shown_store_url,
                "repository": name.name,
                "tags": rows,
                "unreadable": skipped,
            }
        )
    else:
        out.table(
            ("TAG", "DIGEST", "TYPE", "PLATFORMS", "SIZE", "UNIQUE"),
            [
                (
                    r.tag or "-",
                    short_digest(str(r.digest)),
                    _SHORT_TYPES.get(r.media_type, r.media_type)
                    + (" (partial)" if r.partial else "")
                    + marks[i][1],
                    ",".join(r.platforms) or "-",
                    format_size(r.size),
                    format_size(r.unique_size),
                )
                for i, r in enumerate(records)
            ],
        )
    return EXIT_OK


def _ls_registry(state: AppState, name: RegistryRef) -> int:
    """The tags of a registry's repository (every page the registry lists), sorted."""
    if name.explicit:
        raise click.BadParameter("give a repository name without a tag", param_hint="NAME")
    state.action = f"listing the tags of {name.registry}/{name.name}"
    tags = sorted(state.client(name.registry).list_image_tags(name.name))
    out = state.output
    if out.json_mode:
        out.json({"ok": True, "registry": name.registry, "repository": name.name, "tags": tags})
    elif tags:
        out.table(("TAG",), [(tag,) for tag in tags])
    else:
        out.note(f"{name.registry}/{name.name} has no tags")
    return EXIT_OK


def _referrer_marks(
    store: ObjectStore, name: str, rows: list[tuple[str | None, str]]
) -> list[tuple[int, str]]:
    """Per ``(tag, digest)``: how many referrers the image has (its store index and cosign
    tags), and the text ``ls`` appends to its type ("+2 referrers", or for a tag that only
    describes another image, what it is)."""
    tags = {tag for tag, _ in rows if tag}
    marks = []
    for tag, digest in rows:
        if tag is not None and is_supply_chain_tag(tag):
            about = subject_of_tag(tag)
            kinds = {"sig": "signature", "att": "attestation", "sbom": "SBOM"}
            what = kinds.get(tag.rsplit(".", 1)[-1], "referrers index")
            marks.append((0, f" ({what} of {short_digest(str(about))})"))
            continue
        count = sum(t in tags for t in sigstore_tags(digest))
        try:
            count += len(store.referrers(name, digest))
        except DamagedTagError:  # the index's tag is warned about above; the rest is shown
            marks.append((count, f" +{count} referrer(s), referrers index damaged"))
            continue
        marks.append((count, f" +{count} referrer(s)" if count else ""))
    return marks


# -- inspect -------------------------------------------------------------------------------------


def _config_platform(raw: bytes) -> str | None:
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(config, dict) or not config.get("os"):
        return None
    parts = [str(config.get("os")), str(config.get("architecture", ""))]
    if config.get("variant"):
        parts.append(str(config["variant"]))
    return "/".join(p for p in parts if p)


def _read_config(state: AppState, ref: ImageRef, manifest: Manifest) -> bytes | None:
    config = manifest.config
    if config is None or config.size > 1 << 20 or manifest.artifact_type:
        return None
    try:
        if isinstance(ref, StoreRef):
            return read_blob(state.store(must_exist=True, read_only=True), config.digest)
        client = state.client(ref.registry)
        return client.fetch_blob(ref.name, config.digest, max_size=1 << 20)
    except RegstoreError:  # the platform is a nicety: inspect still shows the rest
        return None


def _describe_index(state: AppState, ref: ImageRef, index: Manifest) -> dict[str, Any]:
    """An index's platforms and manifests; in the store, also whether it was stored partially
    (``partial``, as ``ls`` says: pulled with --platform) and which of its manifests are there
    (``stored``), since a partial index still lists every platform of its source."""
    info: dict[str, Any] = {
        "platforms": [str(m.platform) for m in index.manifests if m.platform],
        "manifests": [
            {
                "digest": str(m.digest),
                "media_type": m.media_type,
                "size": m.size,
                "platform": str(m.platform) if m.platform else None,
            }
            for m in index.manifests
        ],
    }
    if isinstance(ref, StoreRef):
        store = state.store(must_exist=True, read_only=True)
        info["partial"] = store.is_partial(ref.name, str(index.digest))
        for entry in info["manifests"]:
            entry["stored"] = store.has_manifest(ref.name, entry["digest"])
    return info


def describe_manifest(state: AppState, ref: ImageRef, manifest: Manifest) -> dict[str, Any]:
    """The JSON form ``inspect`` prints."""
    info: dict[str, Any] = {
        "reference": str(ref),
        "digest": str(manifest.digest),
        "media_type": manifest.media_type,
        "size": manifest.size,
    }
    if manifest.is_index:
        info.update(_describe_index(state, ref, manifest))
    else:
        raw_config = _read_config(state, ref, manifest)
        platform = _config_platform(raw_config) if raw_config is not None else None
        info["platforms"] = [platform] if platform else []
        if manifest.config is not None:
            info["config"] = {
                "digest": str(manifest.config.digest),
                "media_type": manifest.config.media_type,
                "size": manifest.config.size,
            }
        info["layers"] = [
            {"digest": str(layer.digest), "media_type": layer.media_type, "size": layer.size}
            for layer in manifest.layers
        ]
        info["total_size"] = manifest.size + sum(max(b.size, 0) for b in manifest.blobs)
    if manifest.artifact_type:
        info["artifact_type"] = manifest.artifact_type
    if manifest.subject is not None:
        info["subject"] = str(manifest.subject.digest)
    annotations = manifest.doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        info["annotations"] = annotations
    return info


def _with_referrers(info: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    """``inspect``'s description with the referrer tree added (``inspect --referrers
    --json``): the image's referrers under ``referrers``, each child manifest's (of an index)
    in its entry of ``manifests`` (an image's ``manifests`` is empty, as it always was): the
    same fields as ``inspect --json``, and more."""
    children = {m["digest"]: m["referrers"] for m in tree["manifests"]}
    described = {**info, "referrers": tree["referrers"], "manifests": tree["manifests"]}
    if "manifests" in info:  # an index: its entries as inspect describes them
        described["manifests"] = [
            {**m, "referrers": children.get(m["digest"], [])} for m in info["manifests"]
        ]
    if tree.get("truncated"):
        described["truncated"] = True
    return described


def _tree_lines(nodes: list[ReferrerNode], prefix: str = "") -> list[str]:
    lines = []
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        tag = f" [{node.tag}]" if node.tag else ""
        lines.append(
            f"{prefix}{'└── ' if last else '├── '}{node.kind} {node.digest} "
            f"{format_size(node.size)}{tag}"
        )
        lines += _tree_lines(node.referrers, prefix + ("    " if last else "│   "))
        if node.truncated:
            lines.append(f"{prefix}{'    ' if last else '│   '}└── … (deeper referrers not shown)")
    return lines


def _show_referrers(state: AppState, ref: ImageRef) -> int:
    """``inspect --referrers``: the tree of what refers to the image, as cosign tree draws."""
    if isinstance(ref, StoreRef):
        image: RegistryImage | StoreImage = StoreImage(
            state.store(must_exist=True, read_only=True), ref.name, ref.reference
        )
    else:
        image = RegistryImage(state.client(ref.registry), ref.name, ref.reference)
    tree = referrer_tree(image)
    out = state.output
    if out.json_mode:
        assert tree.manifest is not None  # (referrer_tree keeps what it read)
        info = _with_referrers(describe_manifest(state, ref, tree.manifest), tree.as_dict())
        out.json({"ok": True, **info})
        return EXIT_OK
    out.line(f"{ref} {tree.digest} ({_SHORT_TYPES.get(tree.media_type, tree.media_type)})")
    for line in _tree_lines(tree.referrers):
        out.line(line)
    for digest, (platform, nodes) in tree.children.items():
        out.line(f"{platform} {digest}")
        for line in _tree_lines(nodes):
            out.line(line)
    out.summary(f"{tree.count} referrer(s)")
    return EXIT_OK


@cli.command("inspect")
@click.argument("ref", type=ImageRefType("any"))
@click.option("--raw", is_flag=True, help="Print the manifest's exact bytes.")
@click.option(
    "--referrers",
    is_flag=True,
    help="Draw the tree of signatures, SBOMs and attestations that refer to the image.",
)
@regstore_command
def inspect_command(state: AppState, ref: ImageRef, raw: bool, referrers: bool) -> int:
    """Describe an image: manifest digest, media type, platforms, layers and sizes.

    REF is a registry image or store:NAME[:TAG|@DIGEST]. With --referrers, the tree of what
    refers to it instead (artifact types, digests, sizes).
    """
    state.action = f"inspecting {ref}"
    if referrers:
        if raw:
            raise click.UsageError("--raw and --referrers exclude each other")
        return _show_referrers(state, ref)
    if isinstance(ref, StoreRef):
        manifest = state.store(must_exist=True, read_only=True).manifest(ref.name, ref.reference)
    else:
        manifest = state.client(ref.registry).get_image_manifest(ref.name, ref.reference)
    if raw:
        sys.stdout.buffer.write(manifest.raw)
        sys.stdout.buffer.flush()
        return EXIT_OK
    info = describe_manifest(state, ref, manifest)
    out = state.output
    if out.json_mode:
        out.json({"ok": True, **info})
        return EXIT_OK
    _print_description(state, info)
    return EXIT_OK


def _stored_text(entry: dict[str, Any]) -> str:
    """How a platform of a stored index reads: marked when the store lacks its manifest."""
    platform = str(entry["platform"])
    return platform if entry["stored"] else f"{platform} (not stored)"


def _print_description(state: AppState, info: dict[str, Any]) -> None:
    """``inspect``'s text: the header lines, then the index's manifests or the blobs."""
    out = state.output
    out.line(f"{'Reference:':<12}{info['reference']}")
    out.line(f"{'Digest:':<12}{info['digest']}")
    manifests: list[dict[str, Any]] = info.get("manifests", [])
    partial = ""
    if info.get("partial"):
        stored = sum(bool(m["stored"]) for m in manifests)
        partial = f" (partial: {stored} of {len(manifests)} manifests stored)"
    out.line(f"{'Type:':<12}{info['media_type']}{partial}")
    if any("stored" in m for m in manifests):  # a store's index: say what it lacks
        platforms = [_stored_text(m) for m in manifests if m["platform"]]
    else:
        platforms = info["platforms"]
    out.line(f"{'Platforms:':<12}{', '.join(platforms) or '-'}")
    if "total_size" in info:
        out.line(f"{'Size:':<12}{format_size(info['total_size'])}")
    if info.get("artifact_type"):
        out.line(f"{'Artifact:':<12}{info['artifact_type']}")
    if info.get("subject"):
        out.line(f"{'Subject:':<12}{info['subject']}")
    if "manifests" in info:
        out.line()
        in_store = any("stored" in m for m in manifests)
        rows = [
            (m["platform"] or "-", m["digest"], format_size(m["size"]))
            + ((("yes" if m["stored"] else "no"),) if in_store else ())
            for m in manifests
        ]
        out.table(("PLATFORM", "DIGEST", "SIZE") + (("STORED",) if in_store else ()), rows)
    if info.get("layers") is not None:
        out.line()
        blobs = []
        if "config" in info:
            c = info["config"]
            blobs.append(("config", c["digest"], format_size(c["size"]), c["media_type"]))
        blobs += [
            (f"layer {i}", layer["digest"], format_size(layer["size"]), layer["media_type"])
            for i, layer in enumerate(info["layers"])
        ]
        out.table(("BLOB", "DIGEST", "SIZE", "TYPE"), blobs)


# -- verify, delete, gc --------------------------------------------------------------------------


def _verify_hint(report: VerifyReport, images: list[str]) -> str:
    """What to try after a failed verify, naming the images to pull again (``images``: every
    one any problem involves) and the command that does it."""
    affected = f"the affected images ({_listed(images)})" if images else "the affected images"
    if report.quarantined and any(p.quarantined == DELETED_NOT_MOVED for p in report.quarantined):
        # no quarantine to list: a sync cannot tell the image lacks them
        return (
            f"{len(report.quarantined)} damaged blob(s) were deleted (this store cannot move "
            f"blobs aside): pull {affected} again ({_pull_command(images)}), or import their "
            "bundle again, to fetch them; a sync of an unchanged tag does not notice"
        )
    if report.quarantined:
        return (
            f"{len(report.quarantined)} damaged blob(s) were moved aside: pull {affected} "
            f"again ({_pull_command(images)}, or the next `regstore sync` of them), or import "
            "their bundle again, to fetch them; the store keeps intact blobs"
        )
    if all(p.kind == "wrong-child-size" for p in report.problems):
        # the source's index is so: a pull fetches the same bytes (and now refuses them)
        return (
            f"the index of {affected} lists a manifest at a wrong size, as its source does: "
            "pulling again does not mend it; delete it (`regstore delete store:NAME:TAG`) or "
            "have its publisher fix it"
        )
    if all(p.kind == "unlinked-blob" for p in report.problems):
        # by digest: the tag may name another image at its registry by now
        manifests = sorted(
            {f"{p.repository}@{m}" for p in report.problems for m in p.referenced_by}
        )
        tagged = [i for i in images if "@" not in i]
        return (
            f"the blobs are intact: pull or copy {_listed(manifests)} into its repository "
            f"again (`regstore pull REGISTRY/{manifests[0] if manifests else 'NAME@DIGEST'}`) "
            "to link them" + (f"; tagged {_listed(tagged)}" if tagged else "")
        )
    return (
        f"pull {affected} again with {_pull_command(images, '--repair')} (it re-hashes the "
        "image's blobs and fetches the damaged ones)"
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _staging_rows(entries: list[StagingEntry], now: float) -> list[tuple[str, ...]]:
    return [
        (
            e.kind.value,
            "in use" if e.active else _age(max(0.0, now - e.mtime)),
            format_size(e.size),
            e.location,
        )
        for e in entries
    ]


#: Images a table cell or the error line names before "and N more".
_NAMED = 3


def _tag_reach(store: ObjectStore, name: str) -> dict[str, set[str]]:
    """Per tag of ``name``: the digests of the manifests it leads to; a tag that cannot be
    read leads to none (its own problem names it)."""
    reach: dict[str, set[str]] = {}
    for tag in tags_of(store, name):
        try:
            digest = store.manifest_digest(name, tag)
        except RegstoreError:
            continue
        if digest is not None:
            reach[tag] = manifests_reached(store, name, str(digest))
    return reach


def _affected_images(store: ObjectStore, report: VerifyReport) -> list[list[str]]:
    """Per problem of ``report``: the images to pull again to mend it. Every ``NAME:TAG`` of
    the verified repositories that leads to a manifest involved (a blob is named in one
    repository but may be used in several), else ``NAME@DIGEST`` of the manifests involved
    that no tag leads to. Read only when something is wrong."""
    if not report.problems:
        return []
    reach = {name: _tag_reach(store, name) for name in report.repositories}
    return [_images_of(problem, reach) for problem in report.problems]


def _images_of(problem: Problem, reach: dict[str, dict[str, set[str]]]) -> list[str]:
    involved = {problem.subject, *problem.referenced_by}
    images = [
        f"{name}:{tag}"
        for name, tags in reach.items()
        for tag, reached in tags.items()
        if involved & reached or (name == problem.repository and tag == problem.subject)
    ]
    if images:
        return sorted(images)
    untagged = problem.referenced_by or (
        (problem.subject,)
        if problem.kind in ("damaged-manifest", "missing-manifest", "wrong-child-size")
        else ()
    )
    return [f"{problem.repository}@{digest}" for digest in untagged if ":" in digest]


def _listed(images: list[str], limit: int = _NAMED) -> str:
    """``a, b, c and 2 more``."""
    more = f" and {len(images) - limit} more" if len(images) > limit else ""
    return ", ".join(images[:limit]) + more


def _pull_command(images: list[str], *flags: str) -> str:
    """The pull that fetches the images again, with the first of ``images`` as its example
    (the store does not record the registry an image came from)."""
    generic = " ".join(("`regstore pull REF", *flags)) + "`"
    if not images:
        return generic
    example = " ".join((f"`regstore pull REGISTRY/{images[0]}", *flags)) + "`"
    return f"{generic} for each, e.g. {example}"


@cli.command("verify")
@click.argument("name", required=False, type=ImageRefType("store"))
@click.option(
    "--no-quarantine",
    is_flag=True,
    help="Only report damaged blobs; leave them in place (a pull then skips them).",
)
@regstore_command
def verify_command(state: AppState, name: StoreRef | None, no_quarantine: bool) -> int:
    """Re-hash every blob and check every manifest and reference of the store (or of NAME).

    A blob whose bytes do not hash to its digest is moved aside (quarantined), so that pulling
    an affected image again fetches it. Leftovers of interrupted writes are listed too (`gc`
    removes them). Exit code 1 when anything is damaged or missing; the report says what.
    """
    if name is not None and name.explicit:
        raise click.BadParameter("give a repository name without a tag", param_hint="NAME")
    # verify moves damaged blobs aside: read-only only when it is told not to
    store = state.store(must_exist=True, read_only=no_quarantine)
    target = f"repository {name.name}" if name else f"the store {state.shown_store_url}"
    state.action = f"verifying {target}"
    display = state.progress()
    with display:
        report = verify(
            store,
            name.name if name else None,
            concurrency=state.concurrency,
            events=display.sink,
            quarantine=not no_quarantine,
        )
    out = state.output
    abandoned = report.abandoned
    affected = _affected_images(store, report)
    if out.json_mode:
        document = report.as_dict()
        for problem, images in zip(document["problems"], affected, strict=True):
            problem["images"] = images
        out.json(document)
    else:
        if report.staging_error:
            out.warning(f"the staging area was not checked: {report.staging_error}")
        if report.problems:
            out.table(
                ("PROBLEM", "REPOSITORY", "WHAT", "IMAGES", "DETAIL"),
                [
                    (
                        p.kind,
                        p.repository,
                        p.subject,
                        _listed(images) or "-",
                        f"{p.detail}; quarantined to {p.quarantined}"
                        if p.quarantined
                        else p.detail,
                    )
                    for p, images in zip(report.problems, affected, strict=True)
                ],
            )
        if abandoned:
            out.line(
                "left in the store's working area (`regstore gc` removes them after its grace):"
            )
            out.table(
                ("STAGING", "AGE", "SIZE", "WHERE"), _staging_rows(abandoned, report.checked_at)
            )
        out.summary(
            f"checked {len(report.repositories)} repositories, {report.manifests_checked} "
            f"manifests, {report.tags_checked} tags, {report.blobs_checked} blobs "
            f"({format_size(report.bytes_checked)}): "
            + ("OK" if report.ok else f"{len(report.problems)} problem(s)")
            + (
                f"; {len(abandoned)} staging leftover(s), "
                f"{format_size(sum(e.size for e in abandoned))}"
                if abandoned
                else ""
            )
        )
    if not report.ok:
        hint = _verify_hint(report, sorted({i for images in affected for i in images}))
        out.error(
            f"{target} is damaged: {len(report.problems)} problem(s), first: {report.problems[0]}",
            hint,
        )
        return EXIT_FAILURE
    return EXIT_OK


@cli.command("delete")
@click.argument("ref", type=ImageRefType("store"))
@regstore_command
def delete_command(state: AppState, ref: StoreRef) -> int:
    """Delete a tag (store:NAME:TAG) or a manifest and its tags (store:NAME@DIGEST).

    Manifests left without a tag by this (the image, the children of an index) go too, unless
    another tag still points at them. Blobs stay until `regstore gc` removes those nothing
    references any more.
    """
    if not ref.explicit:
        raise click.BadParameter("name the tag or digest to delete", param_hint="REF")
    if ref.tag is not None and ref.digest is not None:
        # which one was meant cannot be told: a deletion by digest takes every tag of it
        raise click.BadParameter(
            "give a tag (NAME:TAG deletes the tag) or a digest (NAME@DIGEST deletes the "
            "manifest with every tag of it), not both",
            param_hint="REF",
        )
    state.action = f"deleting {ref}"
    store = state.store(must_exist=True)
    tags_before = set(tags_of(store, ref.name))
    deleted = delete_image(store, ref.name, ref.reference)
    tags_deleted = sorted(tags_before - set(tags_of(store, ref.name)))
    out = state.output
    if out.json_mode:
        out.json(
            {
                "ok": True,
                "deleted": str(ref),
                "manifests_deleted": deleted,
                "tags_deleted": tags_deleted,
            }
        )
    else:
        for tag in tags_deleted:
            out.line(f"deleted tag {tag}")
        for digest in deleted:
            out.line(f"deleted manifest {digest}")
        out.summary(f"deleted {ref} (`regstore gc` frees the blobs nothing references now)")
    return EXIT_OK


if TYPE_CHECKING:  # click >= 8.4 types its ParamType generically; older ones are not generic
    _FloatParamType = click.ParamType[float]
else:
    _FloatParamType = click.ParamType


class _Duration(_FloatParamType):
    """Seconds, as a number (``3600``, ``0.5``) or with a unit: ``90s``, ``30m``, ``12h``,
    ``7d``, ``1.5h``."""

    name = "duration"
    _UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            number = text.rstrip("smhd")
            unit = self._UNITS.get(text[len(number) :].strip())
            try:
                seconds = float(number) * unit if unit is not None else math.nan
            except ValueError:
                seconds = math.nan
            if number.strip().lower() in {"nan", "inf", "infinity", ""}:
                seconds = math.nan
        # nan compares false with every age: it would act as 0
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(
                f"{value!r} is not a duration (seconds, or with a unit: 90s, 30m, 12h, 7d)",
                param,
                ctx,
            )
        return seconds


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--grace",
    metavar="DURATION",
    type=_Duration(),
    default=DEFAULT_GRACE,
    show_default=True,
    help="Never remove blobs younger than this, in seconds or with a unit: 90s, 30m, 12h, 7d "
    "(protects transfers running now).",
)
@click.option(
    "--keep-orphan-referrers",
    is_flag=True,
    help="Keep signatures, SBOMs and attestations whose image is gone.",
)
@click.option(
    "--untagged",
    is_flag=True,
    help="Remove manifests no tag reaches first (earlier images of a moving tag, images "
    "pulled by digest), with their referrers, once older than the grace period.",
)
@regstore_command
def gc_command(
    state: AppState, dry_run: bool, grace: float, keep_orphan_referrers: bool, untagged: bool
) -> int:
    """Remove blobs no manifest in the store references, and what interrupted writes left
    (staged bytes, incomplete multipart uploads, stale locks, quarantined blobs), when older
    than the grace period and not held by a live writer. Referrers (signatures, SBOMs,
    attestations) whose image is gone are removed first, unless --keep-orphan-referrers;
    before them, with --untagged, the manifests no tag reaches (a mirror of a moving tag
    keeps every earlier image otherwise).
    """
    state.action = f"collecting garbage in {state.shown_store_url}"
    store = state.store(must_exist=True, read_only=dry_run)
    report = collect_garbage(
        store,
        grace=grace,
        dry_run=dry_run,
        keep_orphan_referrers=keep_orphan_referrers,
        untagged=untagged,
    )
    out = state.output
    if out.json_mode:
        out.json({"ok": True, **report.as_dict()})
        return EXIT_OK
    if report.staging_error:
        out.warning(f"the staging area was not collected: {report.staging_error}")
    verb = "would remove" if dry_run else "removed"
    for manifest in report.untagged_removed:
        out.line(f"{verb} untagged manifest {manifest}")
    for referrer in report.referrers_removed:
        out.line(f"{verb} referrer {referrer} (its subject is gone)")
    for blob in report.removed:
        out.line(f"{verb} {blob.digest} {format_size(blob.size)}")
    for entry in report.staging_removed:
        out.line(f"{verb} {entry.kind} {entry.location} {format_size(entry.size)}")
    young = f", kept {len(report.kept_young)} younger than {grace:g}s" if report.kept_young else ""
    staging = ""
    if report.staging_removed or report.staging_kept:
        staging = (
            f"; {verb} {len(report.staging_removed)} staging leftover(s), "
            f"{format_size(report.staging_bytes_removed)}"
        )
        if report.staging_kept:
            staging += f" (kept {len(report.staging_kept)} in use or younger than {grace:g}s)"
    manifests = ""
    if untagged:
        manifests = f"{verb} {len(report.untagged_removed)} untagged manifest(s)"
        if report.untagged_kept:
            manifests += f" (kept {len(report.untagged_kept)} younger than {grace:g}s or in use)"
        manifests += "; "
    out.summary(
        f"{manifests}{verb} {len(report.removed)} blob(s), {format_size(report.bytes_removed)}; "
        f"{report.referenced} referenced{young}{staging}"
    )
    return EXIT_OK


# -- plugins -------------------------------------------------------------------------------------


@cli.command("plugins")
@click.option(
    "--check",
    is_flag=True,
    help="List every plugin with its load status (ok, broken with the cause, blocked); "
    "exit 1 if one is broken.",
)
@regstore_command
def plugins_command(state: AppState, check: bool) -> int:
    """List the installed storage backends: URL scheme, distribution, version, entry point.

    Plugins that could not be loaded are listed after them, each with its error; the other
    backends work regardless (skip a broken one with REGSTORE_BLOCK_PLUGINS=NAME).
    """
    state.action = "listing plugins"
    found = sorted(plugins.backends().values(), key=lambda b: b.scheme)
    statuses = plugins.plugin_statuses()
    broken = [s for s in statuses if s.status == "broken"]
    code = EXIT_FAILURE if check and broken else EXIT_OK
    out = state.output
    if out.json_mode:
        doc: dict[str, Any] = {
            "backends": [b.as_dict() for b in found],
            "broken": [s.as_dict() for s in broken],
        }
        if check:
            doc["plugins"] = [s.as_dict() for s in statuses]
        out.json({"ok": code == EXIT_OK, **doc})
        return code
    if check:
        out.table(
            ("PLUGIN", "STATUS", "DISTRIBUTION", "VERSION", "ENTRY POINT", "ERROR"),
            [
                (
                    s.name,
                    s.status,
                    s.distribution or "-",
                    s.version or "-",
                    s.entry_point or "-",
                    s.cause or "",
                )
                for s in statuses
            ],
        )
        return code
    out.table(
        ("SCHEME", "DISTRIBUTION", "VERSION", "ENTRY POINT", "DESCRIPTION"),
        [
            (
                f"{b.scheme}://",
                b.distribution or "-",
                b.version or "-",
                b.entry_point or b.plugin,
                b.description,
            )
            for b in found
        ],
    )
    if broken:
        out.line()
        out.table(
            ("BROKEN PLUGIN", "DISTRIBUTION", "VERSION", "ENTRY POINT", "ERROR"),
            [
                (s.name, s.distribution or "-", s.version or "-", s.entry_point or "-", s.cause)
                for s in broken
            ],
        )
        out.summary(
            f"{len(broken)} plugin(s) could not be loaded; skip one with "
            "REGSTORE_BLOCK_PLUGINS=NAME, or reinstall or uninstall its distribution"
        )
    return code
