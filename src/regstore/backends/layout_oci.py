"""The OCI Image Layout: one layout per store, readable by skopeo (``oci:``), umoci and oras.

::

    oci-layout      {"imageLayoutVersion":"1.0.0"}
    index.json      an OCI image index; one descriptor per stored (repository, manifest)
    blobs/<alg>/<hex>

A tagged manifest's descriptor carries ``org.opencontainers.image.ref.name`` = ``<name>:<tag>``
(skopeo's ``oci:DIR:library/alpine:3.19`` and umoci's ``--image DIR:library/alpine:3.19`` split
at the first colon, so the repository name survives), plus ``io.regstore.repository`` = the
repository. Manifests stored by digest only (index children, untagged pulls) get a descriptor
with the repository annotation and no ref name; tools ignore unnamed descriptors when resolving
a ref, and the spec allows them. Rules kept on every update:

- exactly one descriptor per ref name (retagging moves it; the old manifest keeps an unnamed
  descriptor so it stays listed by digest);
- a (repository, digest) pair has either named descriptors or one unnamed descriptor;
  a named descriptor is never removed to keep that rule;
- a ref name decides whose descriptor it is, before the repository annotation: ``<name>:<tag>``
  is that repository and tag; any other ref name (skopeo's ``oci:DIR:v2``, umoci's ``tag``,
  which copies the annotations of the descriptor it tags) belongs to another tool, as does a
  descriptor with neither; those are left as they are, and kept by gc with what they name
  (:meth:`OciLayout.outside_references`).

A repository holds the manifests its descriptors name and every stored manifest an index among
them lists (nested indexes too): skopeo's ``copy --all`` adds the index alone to
``index.json``, its children are plain blobs, as the image-layout spec allows.

``index.json`` is updated by read, modify, write to a temporary file and rename, under the
store's mutex (a flock on a local disk), so concurrent taggers in threads and processes lose
nothing. The descriptor's ``mediaType`` is the manifest's own media type, but for a Docker
manifest (list), whose descriptor carries the OCI image manifest (index) type: skopeo looks a
ref name up only among OCI-typed descriptors (regstore's bundles do the same). The bytes keep
their own ``mediaType``, and a read answers with it. A partial index carries
``io.regstore.partial: "true"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from regstore.errors import (
    ImageManifestNotFoundError,
    InvalidReferenceError,
    ManifestInvalidError,
    RepositoryNotFoundError,
    StoreDamageError,
)
from regstore.manifest import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
)
from regstore.reference import (
    SUPPORTED_ALGORITHMS,
    Digest,
    is_digest,
    validate_name,
    validate_tag,
)

from .layouts import (
    Layout,
    LayoutHost,
    check_tagged_bytes,
    sniff_media_type,
    split_blob_relative,
)

__all__ = ["PARTIAL_ANNOTATION", "REF_NAME", "REPOSITORY_ANNOTATION", "OciLayout"]

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY_ANNOTATION = "io.regstore.repository"
PARTIAL_ANNOTATION = "io.regstore.partial"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
_INDEX_LOCK = "oci-index"
#: How deep indexes nest below a descriptor's own (as the engine walks them)
_MAX_NESTING = 4
#: The children of intact index bytes kept by digest (bytes of a digest never change); cleared
#: when it holds more
_CHILDREN_CACHE_SIZE = 4096
#: The OCI type a descriptor carries for a Docker manifest (list): skopeo resolves a ref name
#: only among OCI-typed descriptors
_ENTRY_MEDIA_TYPES = {DOCKER_MANIFEST_V2: OCI_MANIFEST, DOCKER_MANIFEST_LIST: OCI_INDEX}

Entry = dict[str, Any]
#: ``(digest, media type its index lists it under)`` of an index's child manifests
Children = tuple[tuple[Digest, str], ...]


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def _annotations(entry: Entry) -> dict[str, Any]:
    found = entry.get("annotations")
    return found if isinstance(found, dict) else {}


def _entry_media_type(media_type: str) -> str:
    """The ``mediaType`` an index.json descriptor carries for a manifest of ``media_type``."""
    return _ENTRY_MEDIA_TYPES.get(media_type, media_type)


def _true_media_type(listed: object, raw: bytes) -> str:
    """The media type of stored manifest bytes ``raw`` that a descriptor lists as ``listed``:
    that one, unless the bytes declare a Docker type the descriptor stands for with the OCI
    type (as this layout writes them, and bundles do); the sniffed one when none is listed."""
    sniffed = sniff_media_type(raw)
    if not isinstance(listed, str) or not listed:
        return sniffed
    if sniffed != listed and _entry_media_type(sniffed) == listed:
        return sniffed
    return listed


def _may_be_index(media_type: object) -> bool:
    """Whether a descriptor of ``media_type`` may name an index (one of no type may)."""
    return not isinstance(media_type, str) or not media_type or media_type in INDEX_MEDIA_TYPES


def _split_ref(ref: object) -> tuple[str, str] | None:
    """``("library/alpine", "3.19")`` from ``library/alpine:3.19`` (first colon), if valid."""
    if not isinstance(ref, str) or ":" not in ref:
        return None
    name, _, tag = ref.partition(":")
    try:
        return validate_name(name), validate_tag(tag)
    except InvalidReferenceError:
        return None


#: The image spec's digest grammar (algorithm ":" encoded)
_DIGEST_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def _names_a_digest(value: object) -> bool:
    """True for a digest regstore verifies, or one of another algorithm another tool wrote
    (kept as it is); False for anything else (a sha256 that is not 64 hex digits too)."""
    if not isinstance(value, str):
        return False
    try:
        Digest(value)
        return True
    except InvalidReferenceError:
        algorithm = value.partition(":")[0]
        return algorithm not in SUPPORTED_ALGORITHMS and bool(_DIGEST_GRAMMAR.fullmatch(value))


def _valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidReferenceError:
        return False
    return True


def _entry_key(entry: Entry) -> tuple[str | None, str | None, Digest | None]:
    """``(repository, tag, digest)`` of an index.json descriptor; parts may be unknown.

    A ref name decides before the repository annotation: umoci's ``tag`` copies the
    annotations of the descriptor it tags onto its new one, named ``stable`` alone, and read as
    an unnamed descriptor of ours, that one was dropped as a duplicate by the next write, or
    deleted with its image by ``gc --untagged``. A ref name that is no ``<name>:<tag>`` is
    another tool's: no repository (gc keeps it through :meth:`OciLayout.outside_references`).
    """
    try:
        digest: Digest | None = Digest(entry.get("digest"))  # type: ignore[arg-type]
    except InvalidReferenceError:
        digest = None
    annotations = _annotations(entry)
    if REF_NAME in annotations:
        split = _split_ref(annotations[REF_NAME])
        if split is None:
            return None, None, digest
        return split[0], split[1], digest
    repo = annotations.get(REPOSITORY_ANNOTATION)
    return (repo if isinstance(repo, str) else None), None, digest


class OciLayout(Layout):
    """``oci-layout`` + ``index.json`` + ``blobs/<alg>/<hex>`` (image-spec v1.1)."""

    name = "oci"
    markers = (("oci-layout",), ("index.json",))
    #: the index.json bytes last read whose entries were checked (bytes: shared by threads
    #: without harm, the newest read wins)
    _checked: bytes | None = None

    def __init__(self, host: LayoutHost) -> None:
        super().__init__(host)
        #: the children of index bytes read intact, by digest (see :meth:`_children_of`)
        self._children: dict[Digest, Children] = {}

    def blob_path(self, digest: Digest) -> str:
        return self.host.path("blobs", digest.algorithm, digest.hex)

    def blobs_root(self) -> str:
        return self.host.path("blobs")

    def blob_digest_of(self, relative: str) -> Digest | None:
        return split_blob_relative(relative, fanout=False)

    def prepare(self) -> None:
        marker = self.host.path("oci-layout")
        if self.host.file_size(marker) is None:
            self.host.write_file(marker, LAYOUT_VERSION)
        index = self.host.path("index.json")
        if self.host.file_size(index) is None:
            with self.host.mutex(_INDEX_LOCK):
                if self.host.file_size(index) is None:
                    self._refuse_without_index(index)
                    self._save(_empty_index())

    # -- index.json --------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        path = self.host.path("index.json")
        data = self.host.read_file(path)
        if data is None:
            self._refuse_without_index(path)
            return _empty_index()
        try:
            index = json.loads(data)
        except ValueError as exc:
            raise StoreDamageError(f"corrupt {path}: {exc}", path) from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise StoreDamageError(f"corrupt {path}: not an image index", path)
        index.setdefault("manifests", [])
        if data == self._checked:
            return index  # its entries were checked when these bytes were read before
        for number, entry in enumerate(index["manifests"]):
            # an entry naming no digest was passed over: its image vanished from every
            # listing, verify said OK and gc deleted its blobs
            digest = entry.get("digest") if isinstance(entry, dict) else None
            if not _names_a_digest(digest):
                raise StoreDamageError(
                    f"corrupt {path}: its entry {number} names no valid digest ({digest!r}): "
                    "what it keeps is unknown; correct or remove that entry by hand, or "
                    "restore index.json from a backup",
                    path,
                )
        self._checked = data
        return index

    def _refuse_without_index(self, path: str) -> None:
        """Raise StoreDamageError when ``index.json`` is missing but blobs are stored: read as
        an empty store, it let verify say OK and gc delete every blob, and a write would
        have started a new index over them."""
        root = self.blobs_root()
        for algorithm, is_dir in self.host.list_dir(root):
            if is_dir and self.host.list_dir(f"{root}/{algorithm}"):
                raise StoreDamageError(
                    f"{path} is missing, yet the layout holds blobs: what it tagged and listed "
                    "is unknown; restore it from a backup (nothing is written or collected "
                    "until it is back; to start afresh, move the blobs directory away)",
                    path,
                )

    def _save(self, index: dict[str, Any]) -> None:
        data = json.dumps(index, separators=(",", ":")).encode()
        self.host.write_file(self.host.path("index.json"), data)

    def _entries(self, name: str) -> Iterator[tuple[str | None, Digest, Entry]]:
        """``(tag, digest, descriptor)`` of every descriptor of repository ``name``."""
        for entry in self._load()["manifests"]:
            if not isinstance(entry, dict):
                continue
            repo, tag, digest = _entry_key(entry)
            if repo == name and digest is not None:
                yield tag, digest, entry

    @staticmethod
    def _normalise(entries: list[Any]) -> list[Any]:
        """Keep named descriptors; keep one unnamed descriptor per (repository, digest) that
        has no named one. Descriptors of another tool (of no repository, or named otherwise
        than ``<name>:<tag>``) stay untouched.
        """
        named = set()
        for entry in entries:
            if isinstance(entry, dict):
                repo, tag, digest = _entry_key(entry)
                if repo is not None and tag is not None:
                    named.add((repo, digest))
        kept, unnamed = [], set()
        for entry in entries:
            if isinstance(entry, dict):
                repo, tag, digest = _entry_key(entry)
                if repo is not None and tag is None:
                    if (repo, digest) in named or (repo, digest) in unnamed:
                        continue
                    unnamed.add((repo, digest))
            kept.append(entry)
        return kept

    @staticmethod
    def _unname(entry: Entry, repo: str) -> None:
        annotations = dict(_annotations(entry))
        annotations.pop(REF_NAME, None)
        annotations[REPOSITORY_ANNOTATION] = repo  # it may only have been implied by the name
        entry["annotations"] = annotations

    # -- children of indexes -----------------------------------------------------------------

    def _held_children(self, entries: list[tuple[str | None, Digest, Entry]]) -> dict[Digest, str]:
        """The stored manifests that the indexes among a repository's descriptors ``entries``
        list (nested ones too) and that have no descriptor of their own there, with the media
        type their index lists each under. A child whose bytes cannot be examined counts (it
        is not known to be absent: reading it reports what is wrong)."""
        own = {digest for _, digest, _ in entries}
        pending = [
            (digest, entry.get("mediaType"), 0)
            for _, digest, entry in entries
            if _may_be_index(entry.get("mediaType"))
        ]
        read: set[Digest] = set()
        held: dict[Digest, str] = {}
        while pending:
            digest, listed, depth = pending.pop()
            if digest in read:
                continue
            read.add(digest)
            for child, media_type in self._children_of(digest, listed):
                if child not in own and child not in held and self._maybe_stored(child):
                    held[child] = media_type
                if depth < _MAX_NESTING and _may_be_index(media_type):
                    pending.append((child, media_type, depth + 1))
        return held

    def _children_of(self, digest: Digest, listed: object) -> Children:
        """The children of the stored index ``digest`` (a descriptor lists it as ``listed``);
        none when it is no index, is not stored, cannot be read, or its bytes are damaged
        (reading the index itself reports that: what it lists is unknown)."""
        known = self._children.get(digest)
        if known is not None:
            return known
        try:
            raw = self.host.read_file(self.blob_path(digest))
        except OSError:
            return ()
        if raw is None:
            return ()
        try:
            manifest = Manifest.parse(raw, _true_media_type(listed, raw))
        except ManifestInvalidError:
            return ()
        if manifest.digest_with(digest.algorithm) != digest:
            return ()
        children = tuple((c.digest, c.media_type) for c in manifest.manifests)
        if len(self._children) >= _CHILDREN_CACHE_SIZE:
            self._children.clear()
        self._children[digest] = children  # its bytes are its digest's: they never change
        return children

    def _maybe_stored(self, digest: Digest) -> bool:
        """False only when the blob ``digest`` is known to be absent."""
        try:
            return self.host.file_size(self.blob_path(digest)) is not None
        except OSError:
            return True

    # -- manifests ---------------------------------------------------------------------------

    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        wanted_digest = Digest(reference) if is_digest(reference) else None
        entries = list(self._entries(name))
        for tag, digest, entry in entries:
            if (wanted_digest is not None and digest == wanted_digest) or (
                wanted_digest is None and tag == reference
            ):
                raw = self.host.read_file(self.blob_path(digest))
                if raw is None:
                    raise ImageManifestNotFoundError(name, reference)
                if wanted_digest is None:
                    check_tagged_bytes(name, reference, digest, raw)
                return raw, _true_media_type(entry.get("mediaType"), raw)
        if wanted_digest is not None:
            listed = self._held_children(entries).get(wanted_digest)
            raw = None if listed is None else self.host.read_file(self.blob_path(wanted_digest))
            if raw is not None:
                return raw, _true_media_type(listed, raw)
        raise ImageManifestNotFoundError(name, reference)

    def put_manifest(
        self, name: str, tag: str | None, manifest: Manifest, digest: Digest, partial: bool
    ) -> None:
        self.host.make_durable()  # the blobs it references survive a crash the index survives
        with self.host.mutex(_INDEX_LOCK):
            index = self._load()
            entries: list[Any] = index["manifests"]
            present = False
            ref = f"{name}:{tag}"
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                repo, entry_tag, entry_digest = _entry_key(entry)
                moves_away = entry_digest != digest or repo != name
                if tag is not None and moves_away and _annotations(entry).get(REF_NAME) == ref:
                    self._unname(entry, repo or name)  # the tag moves away from it
                    continue
                if repo == name and entry_digest == digest:
                    present = present or tag is None or entry_tag == tag
                    annotations = dict(_annotations(entry))
                    annotations[REPOSITORY_ANNOTATION] = name
                    if partial:
                        annotations[PARTIAL_ANNOTATION] = "true"
                    else:
                        annotations.pop(PARTIAL_ANNOTATION, None)
                    entry["annotations"] = annotations
                    entry["mediaType"] = _entry_media_type(manifest.media_type)
            if not present:
                annotations = {REPOSITORY_ANNOTATION: name}
                if tag is not None:
                    annotations[REF_NAME] = ref
                if partial:
                    annotations[PARTIAL_ANNOTATION] = "true"
                media_type = _entry_media_type(manifest.media_type)
                entry = {"mediaType": media_type, "digest": str(digest),
                         "size": manifest.size, "annotations": annotations}  # fmt: skip
                if manifest.artifact_type:  # the image-layout spec lists artifacts so
                    entry["artifactType"] = manifest.artifact_type
                entries.append(entry)
            index["manifests"] = self._normalise(entries)
            self._save(index)

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        # (a child held through its index alone was written by another tool: never partial)
        return any(
            _annotations(entry).get(PARTIAL_ANNOTATION) == "true"
            for _, found, entry in self._entries(name)
            if found == digest
        )

    def delete_manifest(self, name: str, digest: Digest) -> None:
        """Remove the descriptors of ``name`` naming ``digest``. A child held through an index
        alone has none to remove: it goes with its index (ImageManifestNotFoundError until
        then, as for a manifest deleted meanwhile; gc passes over it, and takes its blobs once
        the index is gone)."""
        if not any(found == digest for _, found, _ in self._entries(name)):
            raise ImageManifestNotFoundError(name, str(digest))  # no need to lock for that
        with self.host.mutex(_INDEX_LOCK):
            index = self._load()
            kept = []
            for entry in index["manifests"]:
                if isinstance(entry, dict):
                    repo, _, found = _entry_key(entry)
                    if repo == name and found == digest:
                        continue
                kept.append(entry)
            if len(kept) == len(index["manifests"]):
                raise ImageManifestNotFoundError(name, str(digest))
            index["manifests"] = kept
            self._save(index)

    def delete_tag(self, name: str, tag: str) -> None:
        if not any(found == tag for found, _, _ in self._entries(name)):
            raise ImageManifestNotFoundError(name, tag)  # no need to lock for that
        with self.host.mutex(_INDEX_LOCK):
            index = self._load()
            for entry in index["manifests"]:
                if isinstance(entry, dict):
                    repo, found_tag, _ = _entry_key(entry)
                    if repo == name and found_tag == tag:
                        self._unname(entry, name)  # the manifest stays reachable by digest
                        break
            else:
                raise ImageManifestNotFoundError(name, tag)
            index["manifests"] = self._normalise(index["manifests"])
            self._save(index)

    def outside_references(self) -> list[Digest]:
        # Entries of other tools (skopeo's oci:DIR:v2 writes the bare ref name "v2"): no
        # repository lists them, and gc deleted the images they name.
        pending = []
        for entry in self._load()["manifests"]:
            if not isinstance(entry, dict):
                continue
            repo, _, digest = _entry_key(entry)
            if digest is not None and (repo is None or not _valid_name(repo)):
                media_type = entry.get("mediaType")
                pending.append((digest, media_type if isinstance(media_type, str) else None))
        remedy = "remove that entry from index.json, or store the manifest it names again"
        return sorted(self.kept_by(pending, self.host.path("index.json"), remedy))

    def list_repositories(self) -> list[str]:
        found = set()
        for entry in self._load()["manifests"]:
            if isinstance(entry, dict):
                repo, _, digest = _entry_key(entry)
                if repo is not None and digest is not None:
                    try:
                        found.add(validate_name(repo))
                    except InvalidReferenceError:
                        continue
        return list(found)

    def list_tags(self, name: str) -> list[str]:
        entries = list(self._entries(name))
        if not entries:
            raise RepositoryNotFoundError(name)
        return sorted({tag for tag, _, _ in entries if tag is not None})

    def list_manifests(self, name: str) -> list[str]:
        entries = list(self._entries(name))
        if not entries:
            raise RepositoryNotFoundError(name)
        # the children of another tool's index, which have no descriptor: unlisted, their
        # configs and layers were deleted by gc, and verify called them missing
        held = self._held_children(entries)
        return sorted({str(digest) for _, digest, _ in entries} | {str(d) for d in held})
