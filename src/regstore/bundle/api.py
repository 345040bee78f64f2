"""Bundles from Python: :func:`create_bundle`, :func:`import_bundle`, :func:`read_bundle`
and :func:`verify_bundle` (the CLI's ``regstore bundle`` commands are a thin layer over them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal, cast

from regstore.engine.model import BatchResult, RegistryImage, StoreImage
from regstore.engine.options import TransferOptions
from regstore.engine.places import source_of
from regstore.engine.referrers import find_referrers, has_wanted_type
from regstore.engine.transfer import (
    DEFAULT_CONCURRENCY,
    MAX_INDEX_DEPTH,
    fit_to_sink,
    plan_image,
    transfer_many,
)
from regstore.errors import (
    BundleBaseMissingError,
    BundleInvalidError,
    DigestMismatchError,
    ManifestInvalidError,
    NotFoundError,
    UsageError,
)
from regstore.manifest import INDEX_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST, Manifest, Platform
from regstore.reference import is_digest, validate_name
from regstore.referrers import artifact_type_list, referrer_descriptor

from .archive import BundleReader, BundleWriter
from .contents import BundleIndex, OpenBundle
from .format import (
    BUNDLE_MANIFEST_MEMBER,
    INDEX_MEMBER,
    LAYOUT_MEMBER,
    REF_NAME_ANNOTATION,
    BaseBundle,
    BundledImage,
    BundledReferrer,
    BundleManifest,
    bundle_id,
    split_ref_name,
)
from .place import BundleImage

if TYPE_CHECKING:
    from regstore.engine.model import Image, RegistryClient
    from regstore.engine.places import ImageSource
    from regstore.engine.transfer import ImagePlan
    from regstore.events import EventSink
    from regstore.manifest import Descriptor
    from regstore.store import ObjectStore

__all__ = [
    "BundleInput",
    "BundleProblem",
    "BundleProblemKind",
    "BundleVerifyReport",
    "create_bundle",
    "import_bundle",
    "read_bundle",
    "verify_bundle",
]

log = logging.getLogger("regstore.bundle")

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def _tool() -> str:
    try:
        return f"regstore {version('regstore')}"
    except PackageNotFoundError:  # a source tree never installed
        return "regstore 0.0.0+unknown"


@dataclass(frozen=True)
class BundleInput:
    """An image to write into a bundle with settings of its own (what a sync file's
    repository asks for): ``name`` is the ``NAME:TAG`` the bundle calls it (default: the
    image's own name and tag), ``platforms`` the platforms taken of it (None: those of
    :func:`create_bundle`), ``referrers`` True to carry its referrers even when
    :func:`create_bundle` carries none."""

    image: Image
    name: str | None = None
    platforms: tuple[str, ...] | None = None
    referrers: bool = False


@dataclass
class _Planned:
    image: Image
    source_digest: str
    info: BundledImage
    descriptor: Descriptor
    sizes: dict[str, int]
    plan: ImagePlan
    platforms: tuple[str, ...] | None = None
    referrers: bool = False


@dataclass
class _PlannedReferrer:
    info: BundledReferrer
    descriptor: Descriptor
    sizes: dict[str, int]


def _sizes(source: ImageSource, plan: ImagePlan) -> dict[str, int]:
    """Every blob and manifest of ``plan`` with its size (blobs first, manifests after)."""
    sizes: dict[str, int] = {}
    for desc in plan.blobs.values():
        size = desc.size if desc.size >= 0 else source.blob_size(desc.digest)
        sizes[str(desc.digest)] = size
    for manifest in [*plan.children, plan.top]:
        sizes[str(manifest.digest)] = manifest.size
    return sizes


def _plan_referrers(
    image: Image, plan: ImagePlan, types: Sequence[str], excluded: frozenset[str], name: str
) -> list[_PlannedReferrer]:
    """What the engine's ``referrers=True`` moves with the planned image (the same walk:
    breadth-first from its manifests, a plain referrer only when its ``subject`` is the one it
    was listed for, a cosign tag only of a wanted type), read now because ``index.json`` and
    the bundle manifest are written before any blob."""
    source = source_of(image)
    subjects = [str(plan.top.digest)] + [str(c.digest) for c in plan.children]
    seen = set(subjects)
    queue = deque(subjects)
    plain = TransferOptions.build(None)
    out: list[_PlannedReferrer] = []
    while queue:
        subject = queue.popleft()
        for found in find_referrers(source, subject, types):
            if found.digest in seen:
                continue
            seen.add(found.digest)
            referrer = plan_image(dataclasses.replace(image, reference=found.reference), plain)
            top = referrer.top
            if found.tag is None and (top.subject is None or str(top.subject.digest) != subject):
                continue  # listed for another subject: the engine leaves it out too
            if found.tag is not None and not has_wanted_type(top, types):
                continue
            queue.append(str(top.digest))
            seen.add(str(top.digest))
            sizes = _sizes(source, referrer)
            desc = referrer_descriptor(top)
            info = BundledReferrer(
                name=name,
                subject=subject,
                digest=str(top.digest),
                media_type=top.media_type,
                artifact_type=desc.artifact_type,
                tag=found.tag,
                size=sum(sizes.values()),
                carried=sum(s for d, s in sizes.items() if d not in excluded),
            )
            out.append(_PlannedReferrer(info, desc, sizes))
    return out


def _plan(
    item: BundleInput,
    platforms: Sequence[str | Platform] | None,
    referrers: bool,
    excluded: frozenset[str],
) -> _Planned:
    image = item.image
    if image.reference is None or is_digest(image.reference):
        raise UsageError(f"{image}: a bundle names its images NAME:TAG; give a tag")
    name, tag = image.name, image.reference
    if item.name is not None:
        try:
            named, tag = split_ref_name(item.name)
        except ValueError as exc:
            raise UsageError(f"{image}: cannot name it {item.name!r} in a bundle: {exc}") from exc
        if named is None:
            raise UsageError(f"{image}: a bundle names its images NAME:TAG, not {item.name!r}")
        name = named
    chosen = item.platforms if item.platforms is not None else platforms
    key = tuple(str(p) for p in chosen) if chosen else None
    options = TransferOptions.build(chosen)
    plan = plan_image(image, options)
    source_digest = str(plan.top.digest)
    if plan.partial:
        plan = fit_to_sink(plan)
    sizes = _sizes(source_of(image), plan)
    info = BundledImage(
        name=name,
        tag=tag,
        digest=str(plan.top.digest),
        media_type=plan.top.media_type,
        size=sum(sizes.values()),
        carried=sum(s for d, s in sizes.items() if d not in excluded),
    )
    return _Planned(
        image, source_digest, info, plan.top.descriptor(), sizes, plan, key,
        referrers or item.referrers,
    )  # fmt: skip


def _taken_once(
    planned: list[_Planned], walks: list[list[_PlannedReferrer]]
) -> tuple[list[_Planned], list[list[_PlannedReferrer]]]:
    """``planned`` (and the referrers walked from each) without the images that are cosign
    tags another image's referrers carry anyway: a ``.sig`` tag named beside its image
    travels once, as its referrer (as ``--from`` takes it). An image of that name but
    another manifest stays (:func:`_check_index_names` refuses it)."""
    tagged: dict[tuple[str, str], list[int]] = {}  # (ref name, digest) -> whose walks
    for j, walk in enumerate(walks):
        for r in walk:
            if r.info.ref_name is not None:
                tagged.setdefault((r.info.ref_name, r.info.digest), []).append(j)
    kept: list[tuple[_Planned, list[_PlannedReferrer]]] = []
    for i, p in enumerate(planned):
        carriers = [j for j in tagged.get((p.info.ref_name, p.info.digest), []) if j != i]
        if carriers:
            carrier = planned[carriers[0]].info.ref_name
            log.info("%s travels as a referrer of %s, not as an image", p.image, carrier)
            continue
        kept.append((p, walks[i]))
    return [p for p, _ in kept], [w for _, w in kept]


def _listed_once(walks: list[list[_PlannedReferrer]]) -> list[_PlannedReferrer]:
    """The referrers walked from every image, each (repository, digest, tag) once: two tags
    of one image share their referrers."""
    found: list[_PlannedReferrer] = []
    listed: set[tuple[str, str, str | None]] = set()
    for walk in walks:
        for r in walk:
            key = (r.info.name, r.info.digest, r.info.tag)
            if key not in listed:
                listed.add(key)
                found.append(r)
    return found


def _check_index_names(planned: list[_Planned], walks: list[list[_PlannedReferrer]]) -> None:
    """UsageError when one ``NAME:TAG`` of ``index.json`` would name two manifests: an image
    and a cosign tag the referrers carry (an unrelated image named as another's signature
    tag), or two such tags (two sources signing one image differently). A reader could not
    tell them apart; nothing is written."""
    named: dict[str, tuple[str, str]] = {}  # ref name -> (digest, what it is)
    for p in planned:
        named[p.info.ref_name] = (p.info.digest, f"the image {p.image}")
    for p, walk in zip(planned, walks, strict=True):
        for r in walk:
            ref_name = r.info.ref_name
            if ref_name is None:
                continue
            what = f"the signature tag --referrers carries with {p.info.ref_name}"
            digest, earlier = named.setdefault(ref_name, (r.info.digest, what))
            if digest != r.info.digest:
                raise UsageError(
                    f"{ref_name} would name two manifests in the bundle: {earlier} "
                    f"({digest}) and {what} ({r.info.digest}); name the image otherwise, "
                    "or bundle them separately"
                )


def _base_names(base: BundleManifest) -> tuple[str, ...]:
    """The ref names a base bundle delivered, its own base's included (where an import may
    find what a delta leaves out)."""
    names = [i.ref_name for i in base.images if i.name]
    names += [n for b in base.base for n in b.images]
    return tuple(dict.fromkeys(names))


def _named(descriptor: Descriptor, ref_name: str) -> dict[str, Any]:
    desc = descriptor.to_json()
    desc["mediaType"] = OCI_INDEX if descriptor.media_type in INDEX_MEDIA_TYPES else OCI_MANIFEST
    desc["annotations"] = {REF_NAME_ANNOTATION: ref_name}
    return desc


def _index_bytes(planned: Sequence[_Planned], referrers: Sequence[_PlannedReferrer]) -> bytes:
    """``index.json``. Its entries carry OCI media types even for a Docker manifest (list):
    skopeo (containers/image) looks a ref name up only among OCI-typed entries. The manifest
    bytes are untouched; their own ``mediaType`` says what they are, and readers believe it.

    Referrers follow the images: a cosign tag named ``NAME:sha256-<hex>.sig`` (a ref name the
    image-layout spec allows, and skopeo can read it out by it), a plain referrer untagged, as
    its referrers-index descriptor (with its ``artifactType``); skopeo looks only at the
    entries whose ref name it is asked for."""
    entries = [_named(p.descriptor, p.info.ref_name) for p in planned]
    plain: set[str] = set()
    for r in referrers:
        ref_name = r.info.ref_name
        if ref_name is not None:
            entries.append(_named(r.descriptor, ref_name))
        elif r.info.digest not in plain:
            plain.add(r.info.digest)
            desc = r.descriptor.to_json()
            annotations = {
                k: v for k, v in r.descriptor.annotations.items() if k != REF_NAME_ANNOTATION
            }
            desc.pop("annotations", None)
            if annotations:
                desc["annotations"] = annotations
            entries.append(desc)
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, indent=1).encode("utf-8")


def _same_file(a: str, b: str) -> bool:
    """True if the bundle URLs ``a`` and ``b`` name one file (local paths by the file itself,
    whatever the spelling; other URLs by their text)."""
    local = [u.removeprefix("file://") for u in (a, b) if "://" not in u.removeprefix("file://")]
    if len(local) == 2:
        try:
            return os.path.samefile(local[0], local[1])
        except OSError:  # one of them does not exist (yet)
            return os.path.abspath(local[0]) == os.path.abspath(local[1])
    return a.rstrip("/") == b.rstrip("/")


def create_bundle(
    out: str,
    images: Sequence[Image | BundleInput],
    *,
    since: Sequence[str] = (),
    platforms: Sequence[str | Platform] | None = None,
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    events: EventSink | None = None,
    storage_options: dict[str, Any] | None = None,
) -> BundleManifest:
    """Write the bundle ``out`` (any fsspec URL: a path, ``s3://bucket/key.tar``) holding
    ``images`` (registry or store images, each at a tag); its bundle manifest.

    The bundle is an OCI image layout in a tar (skopeo's ``oci-archive``): ``index.json``
    names each image ``NAME:TAG``. Every blob streams from its source into the tar, verified
    on the way; the tar is written under a temporary name and renamed when complete, so
    ``out`` is either the whole bundle or untouched. ``since`` names earlier bundles (only
    their bundle manifest, or index and manifests, are read): every blob and manifest they
    hold is left out, and they are recorded as this delta's base. ``platforms`` narrows
    indexes as ``pull`` does (an image then holds its one platform, or an index of those
    taken). ``referrers`` carries what refers to each image too, as ``pull`` does: its
    signatures, SBOMs and attestations (recursively) and cosign's ``sha256-<hex>.sig``,
    ``.att``, ``.sbom`` tags, only those of ``referrer_types`` when given (which implies
    ``referrers``); a delta leaves out the referrers its base holds. A :class:`BundleInput`
    gives one image a name, platforms or referrers of its own. An image that is a cosign tag
    the referrers of another image carry anyway (``app:sha256-<hex>.sig`` beside ``app:v1``)
    travels once, as that referrer. Raises UsageError for an image without a tag, a name
    given twice, or a name an image and a carried cosign tag of another manifest would share,
    and what reading the sources raises (nothing is left at ``out`` then).
    """
    for base in since:
        if _same_file(out, base):
            # the delta would be renamed over the base it leaves out: both gone
            raise UsageError(f"{out} is also given as --since: name another file to write")
    bases = [read_bundle(s, storage_options=storage_options) for s in since]
    excluded = frozenset(d for b in bases for d in b.references)
    referrer_types = artifact_type_list(referrer_types)
    referrers = referrers or bool(referrer_types)
    inputs = [i if isinstance(i, BundleInput) else BundleInput(i) for i in images]
    planned = [_plan(i, platforms, referrers, excluded) for i in inputs]
    names = [p.info.ref_name for p in planned]
    if len(set(names)) != len(names):
        raise UsageError(f"an image is named twice: {', '.join(sorted(names))}")
    walks = [
        _plan_referrers(p.image, p.plan, referrer_types, excluded, p.info.name)
        if p.referrers
        else []
        for p in planned
    ]
    planned, walks = _taken_once(planned, walks)
    found = _listed_once(walks)
    _check_index_names(planned, walks)
    carried: dict[str, int] = {}  # digest -> size, in first-use order
    references: set[str] = set(excluded)
    for sizes in [p.sizes for p in planned] + [r.sizes for r in found]:
        references.update(sizes)
        for d, size in sizes.items():
            if d not in excluded:
                carried.setdefault(d, size)
    base_ids = [b.id for b in bases]
    manifest = BundleManifest(
        id=bundle_id([(p.info.ref_name, p.info.digest) for p in planned], list(carried), base_ids),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tool=_tool(),
        images=tuple(p.info for p in planned),
        base=tuple(BaseBundle(b.id, _base_names(b)) for b in bases),
        carried=tuple(carried),
        references=tuple(sorted(references)),
        size=sum(carried.values()),
        referrers=tuple(r.info for r in found),
    )
    index_raw = _index_bytes(planned, found)
    # what ls, verify and import will make of it, before anything is written
    problems = BundleIndex(out, Manifest.parse(index_raw, OCI_INDEX), manifest).listing_problems()
    if problems:
        raise BundleInvalidError(f"{out} would not read back ({problems[0]}); nothing written")
    writer = BundleWriter(out, storage_options=storage_options, excluded=excluded)
    try:
        writer.add_bytes(LAYOUT_MEMBER, OCI_LAYOUT)
        writer.add_bytes(BUNDLE_MANIFEST_MEMBER, manifest.to_json())
        writer.add_bytes(INDEX_MEMBER, index_raw)
        writer.add_directory("blobs/")
        writer.add_directory("blobs/sha256/")
        # one transfer per platform choice and referrers setting (as a sync runs its jobs),
        # all into the one tar
        groups: dict[tuple[tuple[str, ...] | None, bool], list[_Planned]] = {}
        for p in planned:
            groups.setdefault((p.platforms, p.referrers), []).append(p)
        moved: set[str] = set()
        for (chosen, carry), group in groups.items():
            jobs = [
                (
                    dataclasses.replace(p.image, reference=p.source_digest),
                    cast("Image", BundleImage(writer, p.info.name, p.info.tag)),
                )
                for p in group
            ]
            batch = transfer_many(
                jobs,
                platforms=list(chosen) if chosen else None,
                concurrency=concurrency,
                events=events,
                skip_unchanged=False,
                keep_going=False,
                referrers=carry,
                referrer_types=referrer_types if carry else (),
            )
            if not batch.ok:
                failed = batch.by_status("failed") or batch.by_status("cancelled")
                error = failed[0].exception
                if error is not None:
                    raise error
                raise BundleInvalidError(f"{failed[0].source}: {failed[0].error}")
            moved.update(str(d) for o in batch.outcomes if o.result for d in o.result.referrers)
        wanted = {p.info.ref_name: p.info.digest for p in planned}
        wanted.update({r.info.ref_name: r.info.digest for r in found if r.info.ref_name})
        # the images and referrers index.json names (written first, from the plan) are what
        # the transfer tagged and moved: a signature added or removed meanwhile is not
        # ... and its members what the bundle manifest says it carries (verify and import
        # check that too)
        if (
            writer.tagged != wanted
            or moved != {r.info.digest for r in found}
            or writer.written != frozenset(manifest.carried)
        ):
            raise BundleInvalidError(
                "an image changed while the bundle was written; run the command again"
            )
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return manifest


# -- reading ---------------------------------------------------------------------------------


def read_bundle(bundle: str, *, storage_options: dict[str, Any] | None = None) -> BundleManifest:
    """What the bundle at ``bundle`` holds, reading as little of it as it can.

    A bundle regstore wrote has its bundle manifest among its first members: only those are
    read, and its images checked against ``index.json`` (BundleInvalidError when they
    differ); its sizes and ``carried`` are as stated (:func:`verify_bundle` checks them
    against the tar). Any other OCI-layout tar (one ``skopeo copy ... oci-archive:``
    wrote) is described from its ``index.json`` and manifests (``described`` False; its id
    is the digest of its ``index.json``); its blobs are never read. Raises
    BundleInvalidError for a tar that is no OCI layout.
    """
    reader = BundleReader(bundle, storage_options=storage_options, stop_after=INDEX_MEMBER)
    if reader.has(BUNDLE_MANIFEST_MEMBER):
        manifest = BundleManifest.from_json(reader.read_member(BUNDLE_MANIFEST_MEMBER))
        if reader.has(INDEX_MEMBER):
            # the images an import would write are index.json's: a bundle manifest naming
            # others lies (its sizes and digests carried are checked by verify_bundle only)
            problems = OpenBundle(reader, name="unnamed").inconsistencies()
            if problems:
                raise BundleInvalidError(f"{bundle} is inconsistent: {problems[0]}")
        return manifest
    if not reader.complete:  # no bundle manifest before index.json: the manifests are needed
        reader = BundleReader(bundle, storage_options=storage_options)
    return _describe(reader)


def _describe(reader: BundleReader) -> BundleManifest:
    """A bundle manifest derived from an OCI-layout tar that has none."""
    from regstore.digest import digest_bytes

    if not reader.has(INDEX_MEMBER):
        raise BundleInvalidError(f"{reader.url} has no index.json: not an OCI image layout tar")
    index_raw = reader.read_member(INDEX_MEMBER)
    opened = OpenBundle(reader, name="unnamed")
    images: list[BundledImage] = []
    references: set[str] = set()
    for desc in opened.index.manifests:
        ref_name = desc.annotations.get(REF_NAME_ANNOTATION, "")
        try:
            name, tag = split_ref_name(ref_name) if ref_name else (None, "")
        except ValueError:
            name, tag = None, ref_name
        digests = _walk(opened, desc)
        references.update(digests)
        size = sum(digests.values())
        images.append(BundledImage(name or "", tag, str(desc.digest), desc.media_type, size, size))
    carried = sorted(d for d in references if opened.carries(d))
    return BundleManifest(
        id=str(digest_bytes(index_raw)),
        created="",
        tool="",
        images=tuple(images),
        carried=tuple(carried),
        references=tuple(sorted(references)),
        size=sum(reader.blob_size(d) or 0 for d in carried),
        described=False,
    )


def _walk(opened: OpenBundle, desc: Descriptor) -> dict[str, int]:
    """Every digest the manifest ``desc`` reaches through the tar, with its size: each
    manifest read once (indexes sharing children are a DAG, not a tree), indexes nested no
    deeper than the engine takes them."""
    found: dict[str, int] = {}

    def visit(desc: Descriptor, depth: int) -> None:
        digest = str(desc.digest)
        if digest in found:
            return
        found[digest] = desc.size
        if not opened.carries(digest):
            return
        manifest = opened.manifest(digest, desc.media_type or None)
        for blob in manifest.blobs:
            found.setdefault(str(blob.digest), blob.size)
        if manifest.is_index and depth >= MAX_INDEX_DEPTH:
            raise BundleInvalidError(
                f"{opened.url}: indexes nest deeper than {MAX_INDEX_DEPTH} levels"
            )
        for child in manifest.manifests:
            visit(child, depth + 1)

    visit(desc, 0)
    return found


# -- importing -------------------------------------------------------------------------------


def _target_name(prefix: str, name: str) -> str:
    return validate_name(f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name)


def import_bundle(
    bundle: str,
    *,
    client: RegistryClient | None = None,
    store: ObjectStore | None = None,
    prefix: str = "",
    name: str | None = None,
    base_repositories: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    events: EventSink | None = None,
    storage_options: dict[str, Any] | None = None,
) -> BatchResult:
    """Import every image of the bundle at ``bundle`` into a registry (``client``, names kept
    under ``prefix``) or a store (``store``); what happened to each image.

    Everything is verified as it streams (each blob's digest and size, each manifest's
    digest). A delta is checked before anything moves: every blob and manifest it leaves out
    must already be at the target (a HEAD on a registry, a status in a store), else
    BundleBaseMissingError names the base bundle and the first missing digests, and nothing
    is tagged (a full bundle lacking content, e.g. cut short, raises BundleInvalidError
    naming the member it ends in). Referrers the bundle carries follow their images, each
    after its subject (into a registry's referrers API or tag schema, or a store's referrers
    index), cosign's tags with them. Tags go last, per image; a run that was killed is
    resumed by running it again (complete blobs are skipped, a store resumes a partly written
    one). What a delta leaves out is looked for in each image's own repository at the
    target, and in ``base_repositories`` (names under ``prefix``; a base bundle that
    delivered it under another name) only when the importer names them. ``name`` names the
    repository of images whose ref name is only a tag or absent (a bundle ``skopeo copy``
    wrote): ``NAME`` or ``NAME:TAG``. Raises BundleInvalidError for a tar that is no OCI
    layout or whose bundle manifest disagrees with its ``index.json`` and members,
    ValueError unless exactly one of ``client`` and ``store`` is given.
    """
    if (client is None) == (store is None):
        raise ValueError("give exactly one of client= and store=")
    opened = OpenBundle(BundleReader(bundle, storage_options=storage_options), name=name)

    def image(repo: str, tag: str | None) -> Image:
        if client is not None:
            return RegistryImage(client, repo, tag)
        assert store is not None
        return StoreImage(store, repo, tag)

    problems = opened.inconsistencies()
    if problems:
        raise BundleInvalidError(f"{bundle} is inconsistent: {problems[0]}")
    targets = {e.ref_name: _target_name(prefix, e.name) for e in opened.entries}
    # where a delta's left-out content may be found besides each image's own repository:
    # only what the importer names (never what the bundle names: a bundle could otherwise
    # copy any repository the importer can read into one it names), under the prefix
    candidates = list(dict.fromkeys(_target_name(prefix, r) for r in base_repositories))
    roots = [(targets[e.ref_name], e.descriptor) for e in opened.entries]
    roots += [(_target_name(prefix, n), d) for n, d in opened.referrer_entries]
    # the repositories (under the prefix) looked in: a refusal suggests --base-repo for others
    searched = [e.name for e in opened.entries] + [n for n, _ in opened.referrer_entries]
    searched += [r.strip("/") for r in base_repositories]
    homes = _check_base(opened, roots, candidates, image, bundle, searched)
    jobs = []
    for e in opened.entries:
        repo = targets[e.ref_name]
        fallback = tuple(image(r, None) for r in dict.fromkeys([repo, *homes]))
        source = BundleImage(opened, e.name, e.tag, fallback=fallback)
        jobs.append((cast("Image", source), image(repo, e.tag)))
    # a registry keeps blobs per repository: what a base delivered under another name is
    # mounted from there (a store's blobs are shared: nothing to mount)
    mounts = [r for r in homes if client is not None]
    return transfer_many(
        jobs,
        mount_from=mounts,
        concurrency=concurrency,
        events=events,
        skip_unchanged=True,
        # the bundle may be the only source there is: a blob verify moved aside is restored
        confirm_unchanged=True,
        keep_going=True,
        # what a bundle carries with its images travels on (nothing when it carries none)
        referrers=bool(opened.listed_referrers),
    )


def _check_base(
    opened: OpenBundle,
    roots: list[tuple[str, Descriptor]],
    candidates: list[str],
    image: Any,
    bundle: str,
    searched: list[str],
) -> list[str]:
    """Before anything moves: every digest the bundle's images and referrers (``roots``: the
    target repository and the ``index.json`` descriptor of each) need but it does not carry
    must be at the target, in the image's repository or in another ``candidates`` one (a
    base may have delivered it under another name). Returns those other repositories (the
    manifests are read and the blobs mounted from there); raises BundleBaseMissingError
    listing what lacks, what the base held and (``searched``: the repositories looked in,
    under the prefix) where else to look."""
    missing: list[str] = []
    homes: list[str] = []
    visited: set[tuple[str, str]] = set()

    def find(repo: str, has: Callable[[ImageSource], bool]) -> bool:
        for candidate in [repo, *(c for c in candidates if c != repo)]:
            if has(source_of(image(candidate, None))):
                if candidate != repo and candidate not in homes:
                    homes.append(candidate)
                return True
        return False

    def has_blob(digest: str) -> Callable[[ImageSource], bool]:
        def check(place: ImageSource) -> bool:
            try:
                place.blob_size(digest)
            except NotFoundError:
                return False
            return True

        return check

    def walk(repo: str, desc: Descriptor, depth: int = 0) -> None:
        digest = str(desc.digest)
        if (repo, digest) in visited or depth > MAX_INDEX_DEPTH:
            return  # deeper indexes: the engine's plan refuses the image
        visited.add((repo, digest))
        if not opened.carries(digest):
            if not find(repo, lambda place: place.has_manifest(digest)):
                missing.append(digest)
            return
        manifest = opened.manifest(digest, desc.media_type or None)
        for blob in manifest.blobs:
            blob_digest = str(blob.digest)
            size = opened.reader.blob_size(blob_digest)
            if size is None:
                if not find(repo, has_blob(blob_digest)):
                    missing.append(blob_digest)
            elif size != blob.size:
                # the import would read the stated size out of a member of another one
                raise BundleInvalidError(
                    f"{bundle}: blob {blob_digest} is {size} bytes in the bundle, manifest "
                    f"{digest} says {blob.size}"
                )
        for child in manifest.manifests:
            walk(repo, child, depth + 1)

    for repo, desc in roots:
        walk(repo, desc)
    if missing:
        missing = list(dict.fromkeys(missing))
        if not opened.is_delta:
            cut = opened.reader.truncated
            raise BundleInvalidError(
                f"{bundle} lacks {len(missing)} blob(s)/manifest(s) its images need "
                f"(first: {missing[0]})"
                + (f"; it is cut short inside {', '.join(sorted(cut))}" if cut else "")
            )
        assert opened.bundle_manifest is not None
        bases = opened.bundle_manifest.base
        searched = list(dict.fromkeys(searched))
        raise BundleBaseMissingError(
            bundle, [b.id for b in bases], missing, _valid_ref_names(bases), searched
        )
    return homes


def _valid_ref_names(bases: Sequence[BaseBundle]) -> list[str]:
    """The ref names base bundles delivered, as a delta records them: only well-formed
    ``NAME:TAG`` ones (the bundle is not trusted, and they end up in a message)."""
    names: list[str] = []
    for ref_name in dict.fromkeys(n for b in bases for n in b.images):
        try:
            name, _ = split_ref_name(ref_name)
        except ValueError:
            continue
        if name is not None:
            names.append(ref_name)
    return names


# -- verifying -------------------------------------------------------------------------------


#: What a :class:`BundleProblem` is about
BundleProblemKind = Literal[
    "damaged-blob", "missing", "wrong-size", "invalid-manifest", "too-deep", "inconsistent"
]


@dataclass(frozen=True)
class BundleProblem:
    """One thing wrong in a bundle, reported in the shape ``regstore verify`` reports a
    store's problems (its own kinds: a bundle's damage is not a store's).

    Attributes:
        kind: ``damaged-blob`` (a member does not hash to its name), ``missing`` (neither
            in the bundle nor in its base), ``wrong-size`` (a blob's member is not the size
            its manifest states), ``invalid-manifest``, ``too-deep`` (indexes nested past
            the bound) or ``inconsistent`` (the bundle's own description disagrees with its
            content).
        subject: the digest (or, for ``inconsistent``, the member) it concerns.
        detail: what is wrong.
        image: what the walk that met it started from: an image's ref name (``NAME:TAG``)
            or ``NAME referrer DIGEST``; None for what no image leads to.
    """

    kind: BundleProblemKind
    subject: str
    detail: str
    image: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail,
                "image": self.image}  # fmt: skip

    def __str__(self) -> str:
        return f"{self.image}: {self.detail}" if self.image else self.detail


@dataclass
class BundleVerifyReport:
    """What :func:`verify_bundle` found: blobs and bytes re-hashed, and every problem (one
    line each as text); ``ok`` when there is none."""

    bundle: str
    blobs_checked: int = 0
    bytes_checked: int = 0
    problems: list[BundleProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every member hashed to its name and every image is whole."""
        return not self.problems

    @property
    def blobs(self) -> int:
        """Deprecated: :attr:`blobs_checked` (its name until 0.1)."""
        warnings.warn("BundleVerifyReport.blobs is blobs_checked", DeprecationWarning, 2)
        return self.blobs_checked

    @property
    def bytes(self) -> int:
        """Deprecated: :attr:`bytes_checked` (its name until 0.1)."""
        warnings.warn("BundleVerifyReport.bytes is bytes_checked", DeprecationWarning, 2)
        return self.bytes_checked

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the keys of ``regstore verify --json`` where they mean the same)."""
        return {"bundle": self.bundle, "ok": self.ok, "blobs_checked": self.blobs_checked,
                "bytes_checked": self.bytes_checked,
                "problems": [p.as_dict() for p in self.problems]}  # fmt: skip


def verify_bundle(
    bundle: str, *, storage_options: dict[str, Any] | None = None
) -> BundleVerifyReport:
    """Re-hash everything in the bundle without importing it: every ``blobs/`` member
    against its name, every manifest, and that each image's content is in the tar (or, for a
    delta, left out as its base's). Problems are reported, not raised; BundleInvalidError
    only for a tar that is no OCI layout at all."""
    reader = BundleReader(bundle, storage_options=storage_options)
    opened = OpenBundle(reader, name="unnamed")
    report = BundleVerifyReport(bundle)
    buffer = bytearray(4 << 20)
    for member in sorted(reader.members):
        parts = member.split("/")
        if len(parts) != 3 or parts[0] != "blobs":
            continue
        digest = f"{parts[1]}:{parts[2]}"
        try:
            source = reader.opener(digest)(0)
            try:
                while n := source.readinto(buffer):
                    report.bytes_checked += n
            finally:
                source.close()
        except (DigestMismatchError, ValueError) as exc:
            report.problems.append(BundleProblem("damaged-blob", digest, str(exc)))
        report.blobs_checked += 1
    omitted = opened.bundle_manifest.omitted if opened.bundle_manifest else frozenset()
    checked: set[str] = set()  # each manifest read once: indexes may share children

    def check(where: str, desc: Descriptor, depth: int = 0) -> None:
        digest = str(desc.digest)
        if digest in checked:
            return
        checked.add(digest)
        if not opened.carries(digest):
            if digest not in omitted:
                report.problems.append(
                    BundleProblem(
                        "missing", digest, f"{digest} is neither in the bundle nor its base", where
                    )
                )
            return
        try:
            manifest = opened.manifest(digest, desc.media_type or None)
        except (DigestMismatchError, ManifestInvalidError) as exc:
            report.problems.append(BundleProblem("invalid-manifest", digest, str(exc), where))
            return
        for blob in manifest.blobs:
            _check_blob(report, opened, omitted, where, blob)
        if manifest.is_index and depth >= MAX_INDEX_DEPTH:
            report.problems.append(
                BundleProblem(
                    "too-deep",
                    digest,
                    f"indexes nest deeper than {MAX_INDEX_DEPTH} levels (at {digest})",
                    where,
                )
            )
            return
        for child in manifest.manifests:
            check(where, child, depth + 1)

    for entry in opened.entries:
        check(entry.ref_name, entry.descriptor)
    for name, desc in opened.referrer_entries:
        check(f"{name} referrer {desc.digest}", desc)
    report.problems.extend(
        BundleProblem("inconsistent", BUNDLE_MANIFEST_MEMBER, text)
        for text in _manifest_problems(opened)
    )
    return report


def _manifest_problems(opened: OpenBundle) -> list[str]:
    """Where the bundle manifest disagrees with ``index.json`` and the tar: what ``ls``
    shows must be what an import writes. Each image's sizes are recomputed from its
    manifests too (but a delta's)."""
    problems = opened.inconsistencies()
    bm = opened.bundle_manifest
    if bm is None or problems or bm.is_delta:
        return problems  # (a delta's sizes count manifests it does not hold: not checked)
    omitted = bm.omitted
    for info in bm.images:
        entry = opened.entry(info.name, info.tag)
        if entry is None:
            continue
        try:
            sizes = _walk(opened, entry.descriptor)
        except (BundleInvalidError, DigestMismatchError, ManifestInvalidError):
            continue  # reported by the walk over the images already
        size = sum(sizes.values())
        carried = sum(s for d, s in sizes.items() if d not in omitted)
        if (info.size, info.carried) != (size, carried):
            problems.append(
                f"{BUNDLE_MANIFEST_MEMBER} says {info.ref_name} is {info.size} bytes "
                f"({info.carried} carried), its manifests {size} ({carried} carried)"
            )
    return problems


def _check_blob(
    report: BundleVerifyReport,
    opened: OpenBundle,
    omitted: frozenset[str],
    where: str,
    blob: Descriptor,
) -> None:
    """A blob a manifest references must be in the tar at the size the manifest states (an
    import would read that many bytes), or left out as the base's."""
    digest = str(blob.digest)
    size = opened.reader.blob_size(digest)
    if size is None:
        if digest not in omitted:
            report.problems.append(
                BundleProblem(
                    "missing", digest, f"blob {digest} is neither in the bundle nor its base", where
                )
            )
    elif size != blob.size:
        report.problems.append(
            BundleProblem(
                "wrong-size",
                digest,
                f"blob {digest} is {size} bytes in the bundle, its manifest says {blob.size}",
                where,
            )
        )
