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
- descriptors this store cannot attribute to a repository (written by other tools) are left as
  they are; ones with a ``<name>:<tag>`` ref name are read as that repository and tag.

``index.json`` is updated by read, modify, write to a temporary file and rename, under the
store's mutex (a flock on a local disk), so concurrent taggers in threads and processes lose
nothing. The descriptor's ``mediaType`` is the manifest's own media type; a partial index
carries ``io.regstore.partial: "true"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from regstore.errors import (
    ImageManifestNotFoundError,
    InvalidReferenceError,
    RepositoryNotFoundError,
    StoreDamageError,
)
from regstore.manifest import OCI_INDEX, Manifest
from regstore.reference import (
    SUPPORTED_ALGORITHMS,
    Digest,
    is_digest,
    validate_name,
    validate_tag,
)

from .layouts import Layout, check_tagged_bytes, sniff_media_type, split_blob_relative

__all__ = ["PARTIAL_ANNOTATION", "REF_NAME", "REPOSITORY_ANNOTATION", "OciLayout"]

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY_ANNOTATION = "io.regstore.repository"
PARTIAL_ANNOTATION = "io.regstore.partial"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
_INDEX_LOCK = "oci-index"

Entry = dict[str, Any]


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def _annotations(entry: Entry) -> dict[str, Any]:
    found = entry.get("annotations")
    return found if isinstance(found, dict) else {}


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
    """``(repository, tag, digest)`` of an index.json descriptor; parts may be unknown."""
    try:
        digest: Digest | None = Digest(entry.get("digest"))  # type: ignore[arg-type]
    except InvalidReferenceError:
        digest = None
    annotations = _annotations(entry)
    repo = annotations.get(REPOSITORY_ANNOTATION)
    if not isinstance(repo, str):
        repo = None
    split = _split_ref(annotations.get(REF_NAME))
    tag = None
    if split is not None:
        if repo is None:
            repo = split[0]  # written by skopeo or umoci: the ref name is all we have
        if split[0] == repo:
            tag = split[1]
    return repo, tag, digest


class OciLayout(Layout):
    """``oci-layout`` + ``index.json`` + ``blobs/<alg>/<hex>`` (image-spec v1.1)."""

    name = "oci"
    markers = (("oci-layout",), ("index.json",))
    #: the index.json bytes last read whose entries were checked (bytes: shared by threads
    #: without harm, the newest read wins)
    _checked: bytes | None = None

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
        has no named one. Descriptors of unknown repository stay untouched.
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

    # -- manifests ---------------------------------------------------------------------------

    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        wanted_digest = Digest(reference) if is_digest(reference) else None
        for tag, digest, entry in self._entries(name):
            if (wanted_digest is not None and digest == wanted_digest) or (
                wanted_digest is None and tag == reference
            ):
                raw = self.host.read_file(self.blob_path(digest))
                if raw is None:
                    break
                if wanted_digest is None:
                    check_tagged_bytes(name, reference, digest, raw)
                media_type = entry.get("mediaType")
                if not isinstance(media_type, str) or not media_type:
                    media_type = sniff_media_type(raw)
                return raw, media_type
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
                    entry["mediaType"] = manifest.media_type
            if not present:
                annotations = {REPOSITORY_ANNOTATION: name}
                if tag is not None:
                    annotations[REF_NAME] = ref
                if partial:
                    annotations[PARTIAL_ANNOTATION] = "true"
                entry = {"mediaType": manifest.media_type, "digest": str(digest),
                         "size": manifest.size, "annotations": annotations}  # fmt: skip
                if manifest.artifact_type:  # the image-layout spec lists artifacts so
                    entry["artifactType"] = manifest.artifact_type
                entries.append(entry)
            index["manifests"] = self._normalise(entries)
            self._save(index)

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        return any(
            _annotations(entry).get(PARTIAL_ANNOTATION) == "true"
            for _, found, entry in self._entries(name)
            if found == digest
        )

    def delete_manifest(self, name: str, digest: Digest) -> None:
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
        return sorted({str(digest) for _, digest, _ in entries})
