"""Bundles from Python: :func:`create_bundle`, :func:`import_bundle`, :func:`read_bundle`
and :func:`verify_bundle` (the CLI's ``regstore bundle`` commands are a thin layer over them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, cast

from regstore.engine.model import BatchResult, RegistryImage, StoreImage
from regstore.engine.options import TransferOptions
from regstore.engine.places import source_of
from regstore.engine.transfer import DEFAULT_CONCURRENCY, fit_to_sink, plan_image, transfer_many
from regstore.errors import (
    BundleBaseMissingError,
    BundleInvalidError,
    DigestMismatchError,
    ManifestInvalidError,
    NotFoundError,
    UsageError,
)
from regstore.manifest import INDEX_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST, Platform
from regstore.reference import is_digest, validate_name

from .archive import BundleReader, BundleWriter
from .contents import OpenBundle
from .format import (
    BUNDLE_MANIFEST_MEMBER,
    INDEX_MEMBER,
    LAYOUT_MEMBER,
    REF_NAME_ANNOTATION,
    BaseBundle,
    BundledImage,
    BundleManifest,
    bundle_id,
    split_ref_name,
)
from .place import BundleImage

if TYPE_CHECKING:
    from regstore.engine.model import Image, RegistryClient
    from regstore.engine.places import ImageSource
    from regstore.events import EventSink
    from regstore.manifest import Descriptor
    from regstore.store import ObjectStore

__all__ = [
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


@dataclass
class _Planned:
    image: Image
    source_digest: str
    info: BundledImage
    descriptor: Descriptor
    sizes: dict[str, int]


def _plan(image: Image, options: TransferOptions, excluded: frozenset[str]) -> _Planned:
    if image.reference is None or is_digest(image.reference):
        raise UsageError(f"{image}: a bundle names its images NAME:TAG; give a tag")
    plan = plan_image(image, options)
    source_digest = str(plan.top.digest)
    if plan.partial:
        plan = fit_to_sink(plan)
    sizes: dict[str, int] = {}
    source = source_of(image)
    for desc in plan.blobs.values():
        size = desc.size if desc.size >= 0 else source.blob_size(desc.digest)
        sizes[str(desc.digest)] = size
    for manifest in [*plan.children, plan.top]:
        sizes[str(manifest.digest)] = manifest.size
    info = BundledImage(
        name=image.name,
        tag=image.reference,
        digest=str(plan.top.digest),
        media_type=plan.top.media_type,
        size=sum(sizes.values()),
        carried=sum(s for d, s in sizes.items() if d not in excluded),
    )
    return _Planned(image, source_digest, info, plan.top.descriptor(), sizes)


def _base_names(base: BundleManifest) -> tuple[str, ...]:
    """The ref names a base bundle delivered, its own base's included (where an import may
    find what a delta leaves out)."""
    names = [i.ref_name for i in base.images if i.name]
    names += [n for b in base.base for n in b.images]
    return tuple(dict.fromkeys(names))


def _index_bytes(planned: Sequence[_Planned]) -> bytes:
    """``index.json``. Its entries carry OCI media types even for a Docker manifest (list):
    skopeo (containers/image) looks a ref name up only among OCI-typed entries. The manifest
    bytes are untouched; their own ``mediaType`` says what they are, and readers believe it."""
    entries = []
    for p in planned:
        desc = p.descriptor.to_json()
        desc["mediaType"] = (
            OCI_INDEX if p.descriptor.media_type in INDEX_MEDIA_TYPES else OCI_MANIFEST
        )
        desc["annotations"] = {REF_NAME_ANNOTATION: p.info.ref_name}
        entries.append(desc)
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, indent=1).encode("utf-8")


def create_bundle(
    out: str,
    images: Sequence[Image],
    *,
    since: Sequence[str] = (),
    platforms: Sequence[str | Platform] | None = None,
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
    taken). Raises UsageError for an image without a tag or a name given twice, and what
    reading the sources raises (nothing is left at ``out`` then).
    """
    bases = [read_bundle(s, storage_options=storage_options) for s in since]
    excluded = frozenset(d for b in bases for d in b.references)
    options = TransferOptions.build(platforms)
    planned = [_plan(image, options, excluded) for image in images]
    names = [p.info.ref_name for p in planned]
    if len(set(names)) != len(names):
        raise UsageError(f"an image is named twice: {', '.join(sorted(names))}")
    carried: dict[str, int] = {}  # digest -> size, in first-use order
    references: set[str] = set(excluded)
    for p in planned:
        references.update(p.sizes)
        for d, size in p.sizes.items():
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
    )
    writer = BundleWriter(out, storage_options=storage_options, excluded=excluded)
    try:
        writer.add_bytes(LAYOUT_MEMBER, OCI_LAYOUT)
        writer.add_bytes(BUNDLE_MANIFEST_MEMBER, manifest.to_json())
        writer.add_bytes(INDEX_MEMBER, _index_bytes(planned))
        writer.add_directory("blobs/")
        writer.add_directory("blobs/sha256/")
        jobs = [
            (
                dataclasses.replace(p.image, reference=p.source_digest),
                cast("Image", BundleImage(writer, p.info.name, p.info.tag)),
            )
            for p in planned
        ]
        batch = transfer_many(
            jobs,
            platforms=platforms,
            concurrency=concurrency,
            events=events,
            skip_unchanged=False,
            keep_going=False,
        )
        if not batch.ok:
            failed = batch.by_status("failed") or batch.by_status("cancelled")
            error = failed[0].exception
            if error is not None:
                raise error
            raise BundleInvalidError(f"{failed[0].source}: {failed[0].error}")
        wanted = {p.info.ref_name: p.info.digest for p in planned}
        # the images index.json names (written first, from the plan) are what the transfer
        # tagged; other tagged manifests (none today) would be carried but not named
        if any(writer.tagged.get(ref) != digest for ref, digest in wanted.items()):
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
    read. Any other OCI-layout tar (one ``skopeo copy ... oci-archive:`` wrote) is described
    from its ``index.json`` and manifests (``described`` False; its id is the digest of its
    ``index.json``); its blobs are never read. Raises BundleInvalidError for a tar that is no
    OCI layout.
    """
    reader = BundleReader(
        bundle, storage_options=storage_options, stop_after=BUNDLE_MANIFEST_MEMBER
    )
    if reader.has(BUNDLE_MANIFEST_MEMBER):
        return BundleManifest.from_json(reader.read_member(BUNDLE_MANIFEST_MEMBER))
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
    """Every digest the manifest ``desc`` reaches through the tar, with its size."""
    found: dict[str, int] = {str(desc.digest): desc.size}
    if not opened.carries(str(desc.digest)):
        return found
    manifest = opened.manifest(str(desc.digest), desc.media_type or None)
    for blob in manifest.blobs:
        found[str(blob.digest)] = blob.size
    for child in manifest.manifests:
        found.update(_walk(opened, child))
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
    naming the member it ends in). Tags go last, per image; a run that was killed is
    resumed by running it again (complete blobs are skipped, a store resumes a partly written
    one). ``name`` names the
    repository of images whose ref name is only a tag or absent (a bundle ``skopeo copy``
    wrote): ``NAME`` or ``NAME:TAG``. Raises BundleInvalidError for a tar that is no OCI
    layout, ValueError unless exactly one of ``client`` and ``store`` is given.
    """
    if (client is None) == (store is None):
        raise ValueError("give exactly one of client= and store=")
    opened = OpenBundle(BundleReader(bundle, storage_options=storage_options), name=name)

    def image(repo: str, tag: str | None) -> Image:
        if client is not None:
            return RegistryImage(client, repo, tag)
        assert store is not None
        return StoreImage(store, repo, tag)

    targets = {e.ref_name: _target_name(prefix, e.name) for e in opened.entries}
    candidates = list(dict.fromkeys(targets.values()))
    if opened.bundle_manifest is not None:
        for base in opened.bundle_manifest.base:
            for ref_name in base.images:
                base_name, _ = split_ref_name(ref_name)
                if base_name is not None:
                    candidates.append(_target_name(prefix, base_name))
    candidates = list(dict.fromkeys(candidates))
    homes = _check_base(opened, targets, candidates, image, bundle)
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
        keep_going=True,
    )


def _check_base(
    opened: OpenBundle,
    targets: dict[str, str],
    candidates: list[str],
    image: Any,
    bundle: str,
) -> list[str]:
    """Before anything moves: every digest the bundle's images need but it does not carry
    must be at the target, in the image's repository or in another ``candidates`` one (a
    base may have delivered it under another name). Returns those other repositories (the
    manifests are read and the blobs mounted from there); raises BundleBaseMissingError
    listing what lacks."""
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

    def walk(repo: str, desc: Descriptor) -> None:
        digest = str(desc.digest)
        if (repo, digest) in visited:
            return
        visited.add((repo, digest))
        if not opened.carries(digest):
            if not find(repo, lambda place: place.has_manifest(digest)):
                missing.append(digest)
            return
        manifest = opened.manifest(digest, desc.media_type or None)
        for blob in manifest.blobs:
            blob_digest = str(blob.digest)
            if not opened.carries(blob_digest) and not find(repo, has_blob(blob_digest)):
                missing.append(blob_digest)
        for child in manifest.manifests:
            walk(repo, child)

    for entry in opened.entries:
        walk(targets[entry.ref_name], entry.descriptor)
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
        base = [b.id for b in opened.bundle_manifest.base]
        raise BundleBaseMissingError(bundle, base, missing)
    return homes


# -- verifying -------------------------------------------------------------------------------


@dataclass
class BundleVerifyReport:
    """What :func:`verify_bundle` found: blobs and bytes re-hashed, and every problem (one
    line each); ``ok`` when there is none."""

    bundle: str
    blobs: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every member hashed to its name and every image is whole."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"bundle": self.bundle, "ok": self.ok, "blobs": self.blobs, "bytes": self.bytes,
                "problems": list(self.problems)}  # fmt: skip


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
                    report.bytes += n
            finally:
                source.close()
        except (DigestMismatchError, ValueError) as exc:
            report.problems.append(str(exc))
        report.blobs += 1
    omitted = opened.bundle_manifest.omitted if opened.bundle_manifest else frozenset()

    def check(where: str, desc: Descriptor) -> None:
        digest = str(desc.digest)
        if not opened.carries(digest):
            if digest not in omitted:
                report.problems.append(f"{where}: {digest} is neither in the bundle nor its base")
            return
        try:
            manifest = opened.manifest(digest, desc.media_type or None)
        except (DigestMismatchError, ManifestInvalidError) as exc:
            report.problems.append(f"{where}: {exc}")
            return
        for blob in manifest.blobs:
            if not opened.carries(str(blob.digest)) and str(blob.digest) not in omitted:
                report.problems.append(
                    f"{where}: blob {blob.digest} is neither in the bundle nor its base"
                )
        for child in manifest.manifests:
            check(where, child)

    for entry in opened.entries:
        check(entry.ref_name, entry.descriptor)
    return report
