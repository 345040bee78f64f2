"""An opened bundle: its index (which image is where, and which entries are referrers carried
with them), its bundle manifest when it has one, and its manifests read back verified."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from regstore.digest import digest_bytes
from regstore.errors import (
    BundleInvalidError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestInvalidError,
)
from regstore.manifest import OCI_INDEX, Descriptor, Manifest
from regstore.reference import DEFAULT_TAG
from regstore.referrers import filter_referrers

from .archive import BundleReader
from .format import (
    BUNDLE_MANIFEST_MEMBER,
    INDEX_MEMBER,
    REF_NAME_ANNOTATION,
    BundledReferrer,
    BundleManifest,
    blob_member,
    bundle_id,
    split_ref_name,
)

__all__ = ["BundleEntry", "BundleIndex", "OpenBundle"]


@dataclass(frozen=True)
class BundleEntry:
    """One image of ``index.json``: the repository and tag it is imported as, its manifest."""

    name: str
    tag: str
    descriptor: Descriptor

    @property
    def ref_name(self) -> str:
        """``NAME:TAG``."""
        return f"{self.name}:{self.tag}"


class BundleIndex:
    """What a bundle's ``index.json`` and bundle manifest say, as values: which image is
    where, and which entries are referrers carried with them.

    ``name`` names the repository of images whose ref name is only a tag or absent (what
    ``skopeo copy ... oci-archive:X.tar[:TAG]`` writes), as ``NAME`` or ``NAME:TAG`` (the tag of
    an image without a ref name; default ``latest``). The ``index.json`` entries the bundle
    manifest names as referrers (untagged ones, and cosign's ``NAME:sha256-<hex>.sig`` tags)
    are not images: :meth:`referrers` and :meth:`referrer_tag` answer for them. Raises
    BundleInvalidError when an image has no name and ``name`` is not given, or a ref name is
    used twice. ``bundle create`` builds one from what it is about to write, to check it
    reads back (:meth:`listing_problems`).
    """

    def __init__(
        self,
        url: str,
        index: Manifest,
        bundle_manifest: BundleManifest | None,
        *,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.index = index
        self.bundle_manifest = bundle_manifest
        self._media_types: dict[str, str] = {}
        self._lock = threading.Lock()
        #: the referrers the bundle carries (from its bundle manifest)
        self.listed_referrers: tuple[BundledReferrer, ...] = (
            bundle_manifest.referrers if bundle_manifest is not None else ()
        )
        self._plain: dict[str, Descriptor] = {}  # digest -> its untagged index.json entry
        self._tags: dict[tuple[str, str], Descriptor] = {}  # (name, cosign tag) -> entry
        self.entries = self._entries(name)

    def _entries(self, name: str | None) -> list[BundleEntry]:
        default_name, default_tag = None, DEFAULT_TAG
        try:
            if name is not None:
                default_name, tag = split_ref_name(name) if ":" in name else (name, None)
                if default_name is None:
                    raise BundleInvalidError(f"--name {name!r} has no repository")
                default_tag = tag or DEFAULT_TAG
        except InvalidReferenceError as exc:
            raise BundleInvalidError(f"--name {name!r}: {exc}") from exc
        entries: list[BundleEntry] = []
        seen: set[str] = set()
        plain = {r.digest for r in self.listed_referrers if r.tag is None}
        tagged = {r.ref_name: r for r in self.listed_referrers if r.tag is not None}
        for desc in self.index.manifests:
            self._media_types[str(desc.digest)] = desc.media_type
            ref_name = desc.annotations.get(REF_NAME_ANNOTATION)
            if ref_name is None and str(desc.digest) in plain:
                self._plain[str(desc.digest)] = desc
                continue
            if ref_name is not None and ref_name in tagged:
                referrer = tagged[ref_name]
                assert referrer.tag is not None
                self._tags[(referrer.name, referrer.tag)] = desc
                continue
            try:
                repo, tag = split_ref_name(ref_name) if ref_name else (None, default_tag)
            except InvalidReferenceError as exc:
                raise BundleInvalidError(
                    f"{self.url}: ref name {ref_name!r} is neither NAME:TAG nor TAG ({exc})"
                ) from exc
            repo = repo or default_name
            if repo is None:
                raise BundleInvalidError(
                    f"{self.url}: image {desc.digest} has no repository in its ref name "
                    f"({ref_name or 'none'}); give one with --name NAME"
                )
            entry = BundleEntry(repo, tag, desc)
            if entry.ref_name in seen:
                raise BundleInvalidError(f"{self.url} names {entry.ref_name} twice")
            seen.add(entry.ref_name)
            entries.append(entry)
        return entries

    @property
    def is_delta(self) -> bool:
        """True when the bundle manifest names base bundles."""
        return self.bundle_manifest is not None and self.bundle_manifest.is_delta

    def entry(self, name: str, tag: str) -> BundleEntry | None:
        """The image imported as ``name:tag``, or None."""
        for e in self.entries:
            if e.name == name and e.tag == tag:
                return e
        return None

    def referrers(self, name: str, subject: str, artifact_types: Sequence[str]) -> list[Descriptor]:
        """The plain referrers of ``subject`` in repository ``name`` the bundle lists (their
        ``index.json`` descriptors, with ``artifactType``), of ``artifact_types`` when given."""
        found = [
            self._plain[r.digest]
            for r in self.listed_referrers
            if r.tag is None and r.name == name and r.subject == subject and r.digest in self._plain
        ]
        return filter_referrers(found, artifact_types)

    def referrer_tag(self, name: str, tag: str) -> Descriptor | None:
        """The manifest of cosign's tag ``tag`` (``sha256-<hex>.sig``) in ``name``, or None."""
        return self._tags.get((name, tag))

    @property
    def referrer_entries(self) -> list[tuple[str, Descriptor]]:
        """Every referrer the bundle lists: (repository, its ``index.json`` descriptor)."""
        out: list[tuple[str, Descriptor]] = []
        for r in self.listed_referrers:
            desc = self._plain.get(r.digest) if r.tag is None else self._tags.get((r.name, r.tag))
            if desc is not None:
                out.append((r.name, desc))
        return out

    def listing_problems(self) -> list[str]:
        """Where the bundle manifest's images and referrers disagree with ``index.json``
        (empty without a bundle manifest): an import follows ``index.json``, so a bundle
        manifest naming other images lies about the bundle."""
        bm = self.bundle_manifest
        if bm is None:
            return []
        problems: list[str] = []
        stated = {i.ref_name: i.digest for i in bm.images}
        indexed = {e.ref_name: str(e.descriptor.digest) for e in self.entries}
        if stated != indexed:
            problems.append(
                f"{BUNDLE_MANIFEST_MEMBER} names the images "
                f"{', '.join(f'{n}@{d}' for n, d in sorted(stated.items())) or 'none'}, "
                f"{INDEX_MEMBER} "
                f"{', '.join(f'{n}@{d}' for n, d in sorted(indexed.items())) or 'none'}"
            )
        listed = {r.digest for r in self.listed_referrers}
        found = {str(d.digest) for _, d in self.referrer_entries}
        if listed != found:
            problems.append(
                f"{BUNDLE_MANIFEST_MEMBER} lists referrers {INDEX_MEMBER} does not: "
                + ", ".join(sorted(listed - found))
            )
        return problems


def _parse_index(url: str, raw: bytes) -> Manifest:
    try:
        return Manifest.parse(raw, OCI_INDEX)
    except ManifestInvalidError as exc:
        raise BundleInvalidError(f"index.json of {url}: {exc}") from exc


class OpenBundle(BundleIndex):
    """The index of the bundle ``reader`` reads (see :class:`BundleIndex`), its bundle
    manifest when it has one, and its manifests read back verified. Raises
    BundleInvalidError when the tar is no OCI layout, or an image has no name and ``name``
    is not given.
    """

    def __init__(self, reader: BundleReader, *, name: str | None = None) -> None:
        self.reader = reader
        if not reader.has(INDEX_MEMBER):
            raise BundleInvalidError(
                f"{reader.url} has no index.json: not an OCI image layout tar, or cut short"
            )
        index = _parse_index(reader.url, reader.read_member(INDEX_MEMBER))
        bundle_manifest: BundleManifest | None = None
        if reader.has(BUNDLE_MANIFEST_MEMBER):
            bundle_manifest = BundleManifest.from_json(reader.read_member(BUNDLE_MANIFEST_MEMBER))
        super().__init__(reader.url, index, bundle_manifest, name=name)

    def inconsistencies(self) -> list[str]:
        """Where the bundle manifest disagrees with what the tar holds (empty without one):
        an import follows ``index.json`` and the ``blobs/`` members, so a bundle manifest that
        names other images, digests or sizes lies about the bundle. The images are checked
        always; ``carried``, the size and the id (recomputed) once every member is indexed."""
        bm = self.bundle_manifest
        if bm is None:
            return []
        problems = self.listing_problems()
        if not self.reader.complete:
            return problems
        members = {
            f"{parts[1]}:{parts[2]}": size
            for name, (_, size) in self.reader.members.items()
            if len(parts := name.split("/")) == 3 and parts[0] == "blobs"
        }
        if set(bm.carried) != set(members):
            problems.append(
                f"{BUNDLE_MANIFEST_MEMBER} says it carries {len(set(bm.carried))} blob(s) and "
                f"manifest(s), the tar holds {len(members)} (they differ)"
            )
        elif bm.size != sum(members.values()):
            problems.append(
                f"{BUNDLE_MANIFEST_MEMBER} says it carries {bm.size} bytes, "
                f"the tar holds {sum(members.values())}"
            )
        expected = bundle_id(
            [(i.ref_name, i.digest) for i in bm.images], bm.carried, [b.id for b in bm.base]
        )
        if bm.id != expected:
            problems.append(f"{BUNDLE_MANIFEST_MEMBER} has the id {bm.id}, its content {expected}")
        return problems

    def carries(self, digest: str) -> bool:
        """True when the tar holds the blob or manifest ``digest``."""
        return self.reader.has(blob_member(digest))

    def manifest(self, digest: str, media_type: str | None = None) -> Manifest:
        """The manifest ``digest`` read from the tar, its digest checked; the media types
        of its children remembered for when they are read."""
        raw = self.reader.read_member(blob_member(digest))
        actual = str(digest_bytes(raw, digest.partition(":")[0]))
        if actual != digest:
            raise DigestMismatchError(
                f"manifest {digest} in bundle {self.url}", expected=digest, actual=actual
            )
        with self._lock:
            hint = media_type or self._media_types.get(digest)
        try:
            try:
                manifest = Manifest.parse(raw, hint or None)
            except ManifestInvalidError:
                # index.json names a Docker manifest with an OCI type (for skopeo): the body's
                # own mediaType decides
                manifest = Manifest.parse(raw)
        except ManifestInvalidError as exc:
            raise ManifestInvalidError(f"manifest {digest} in bundle {self.url}: {exc}") from exc
        with self._lock:
            for child in manifest.manifests:
                self._media_types.setdefault(str(child.digest), child.media_type)
        return manifest

    def media_type(self, digest: str) -> str | None:
        """The media type a descriptor gave ``digest``, when one was read."""
        with self._lock:
            return self._media_types.get(digest)
