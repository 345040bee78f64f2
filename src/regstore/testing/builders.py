"""Small, deterministic images of every manifest kind, for tests of stores and transfers.

Everything here is self-contained (no registry, no network): blobs are seeded random bytes,
manifests are hand-built JSON serialised with deliberately unusual formatting (indent 3 and a
trailing newline), so a store that re-serialises instead of keeping exact bytes is caught.

Kinds: :func:`docker_image` (schema2), :func:`oci_image` (with or without the ``mediaType``
field), :func:`oci_artifact` (with a ``subject``), :func:`oci_index`,
:func:`docker_manifest_list`, :func:`schema1_signed` (a syntactically valid signed schema1
manifest: the digest is of its JWS payload). :func:`write_image` stores one with its blobs.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regstore.digest import CHUNK_SIZE, digest_bytes
from regstore.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Manifest,
)
from regstore.reference import Digest

if TYPE_CHECKING:
    from regstore.store import ObjectStore

__all__ = [
    "PLATFORMS",
    "Blob",
    "Image",
    "docker_image",
    "docker_manifest_list",
    "oci_artifact",
    "oci_image",
    "oci_index",
    "random_bytes",
    "schema1_signed",
    "serialise",
    "write_blob",
    "write_image",
]

#: Platforms given, in order, to the children of indexes built here.
PLATFORMS = (("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "s390x", None))


def random_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def serialise(doc: dict[str, Any]) -> bytes:
    """JSON the way no registry writes it (indent 3, trailing newline): exact-bytes canary."""
    return json.dumps(doc, indent=3).encode() + b"\n"


@dataclass(frozen=True)
class Blob:
    """Bytes with a media type; the digest uses ``algorithm``."""

    data: bytes
    media_type: str = OCI_LAYER_GZIP
    algorithm: str = "sha256"

    @property
    def digest(self) -> Digest:
        return digest_bytes(self.data, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The JSON descriptor of this blob (extra keys such as ``annotations`` added)."""
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size,
                **extra}  # fmt: skip


@dataclass(frozen=True)
class Image:
    """A manifest with the blobs it references and, for an index, its child images."""

    manifest: Manifest
    blobs: tuple[Blob, ...] = ()
    children: tuple[Image, ...] = field(default=())

    @property
    def digest(self) -> Digest:
        return self.manifest.digest

    @property
    def raw(self) -> bytes:
        return self.manifest.raw

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The JSON descriptor of this manifest."""
        return {"mediaType": self.media_type, "digest": str(self.digest),
                "size": self.manifest.size, **extra}  # fmt: skip

    def all_blobs(self) -> Iterator[Blob]:
        """Every blob of the image and its children, each once."""
        seen: set[str] = set()
        for child in self.children:
            for blob in child.all_blobs():
                if blob.digest not in seen:
                    seen.add(blob.digest)
                    yield blob
        for blob in self.blobs:
            if blob.digest not in seen:
                seen.add(blob.digest)
                yield blob


def _layers(count: int, size: int, seed: int, media_type: str, algorithm: str) -> list[Blob]:
    return [Blob(random_bytes(size, seed * 1000 + i), media_type, algorithm) for i in range(count)]


def _config(layers: Sequence[Blob], seed: int, media_type: str, algorithm: str) -> Blob:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"seed": str(seed)}},
        "rootfs": {"type": "layers", "diff_ids": [str(digest_bytes(b.data)) for b in layers]},
    }
    return Blob(json.dumps(doc, sort_keys=True).encode(), media_type, algorithm)


def docker_image(layers: int = 2, layer_size: int = 64, seed: int = 0) -> Image:
    """A Docker image manifest v2 schema 2 with ``layers`` random layers and a config."""
    blobs = _layers(layers, layer_size, seed, DOCKER_LAYER, "sha256")
    config = _config(blobs, seed, DOCKER_CONFIG, "sha256")
    doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_V2, "config": config.descriptor(),
           "layers": [b.descriptor() for b in blobs]}  # fmt: skip
    return Image(Manifest.parse(serialise(doc)), (config, *blobs))


def oci_image(
    layers: int = 2,
    layer_size: int = 64,
    seed: int = 0,
    *,
    media_type_field: bool = True,
    algorithm: str = "sha256",
    annotations: dict[str, str] | None = None,
) -> Image:
    """An OCI image manifest; without ``media_type_field`` the body omits ``mediaType``
    (as umoci writes them), so stores must not rely on it.
    """
    blobs = _layers(layers, layer_size, seed, OCI_LAYER_GZIP, algorithm)
    config = _config(blobs, seed, OCI_CONFIG, algorithm)
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type_field:
        doc["mediaType"] = OCI_MANIFEST
    doc["config"] = config.descriptor()
    doc["layers"] = [b.descriptor() for b in blobs]
    if annotations:
        doc["annotations"] = annotations
    return Image(Manifest.parse(serialise(doc), OCI_MANIFEST), (config, *blobs))


def oci_artifact(
    subject: Image,
    payload: bytes = b'{"spdxVersion":"SPDX-2.3"}',
    artifact_type: str = "application/spdx+json",
) -> Image:
    """An OCI artifact (empty config, one payload layer) referring to ``subject``."""
    empty = Blob(b"{}", OCI_EMPTY)
    layer = Blob(payload, artifact_type)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
           "config": empty.descriptor(), "layers": [layer.descriptor()],
           "subject": subject.descriptor(),
           "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}  # fmt: skip
    return Image(Manifest.parse(serialise(doc)), (empty, layer))


def _platform(i: int) -> dict[str, str]:
    os_, arch, variant = PLATFORMS[i % len(PLATFORMS)]
    found = {"architecture": arch, "os": os_}
    if variant:
        found["variant"] = variant
    return found


def oci_index(children: Sequence[Image], *, media_type_field: bool = True) -> Image:
    """An OCI image index over ``children`` (platforms from :data:`PLATFORMS`)."""
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type_field:
        doc["mediaType"] = OCI_INDEX
    doc["manifests"] = [c.descriptor(platform=_platform(i)) for i, c in enumerate(children)]
    return Image(Manifest.parse(serialise(doc), OCI_INDEX), (), tuple(children))


def docker_manifest_list(children: Sequence[Image]) -> Image:
    """A Docker manifest list over ``children``."""
    doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
           "manifests": [c.descriptor(platform=_platform(i))
                         for i, c in enumerate(children)]}  # fmt: skip
    return Image(Manifest.parse(serialise(doc)), (), tuple(children))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def schema1_signed(
    name: str = "library/test", tag: str = "latest", layers: int = 2, seed: int = 0
) -> Image:
    """A signed Docker schema 1 manifest (``+prettyjws``), as libtrust formats it.

    The signature is not cryptographically valid (nothing in regstore verifies it), but the
    structure is: the protected header's ``formatLength``/``formatTail`` rebuild the payload,
    whose sha256 is the manifest digest.
    """
    blobs = _layers(layers, 48, seed, DOCKER_LAYER, "sha256")
    history = [{"v1Compatibility": json.dumps({"id": f"{seed:02d}{i:062d}"})}
               for i in range(layers)]  # fmt: skip
    payload_doc = {"schemaVersion": 1, "name": name, "tag": tag, "architecture": "amd64",
                   "fsLayers": [{"blobSum": str(b.digest)} for b in reversed(blobs)],
                   "history": history}  # fmt: skip
    payload = json.dumps(payload_doc, indent=3).encode()  # ends "\n}", as libtrust's
    format_length = len(payload[: payload.rindex(b"}")].rstrip())
    tail = payload[format_length:]
    protected = {"formatLength": format_length, "formatTail": _b64url(tail),
                 "time": "2015-03-03T00:00:00Z"}  # fmt: skip
    signature = {
        "header": {"jwk": {"crv": "P-256", "kid": "ABCD:EFGH:IJKL:MNOP:QRST:UVWX:YZ23:4567",
                           "kty": "EC", "x": _b64url(b"x" * 32), "y": _b64url(b"y" * 32)},
                   "alg": "ES256"},
        "signature": _b64url(random_bytes(64, seed)),
        "protected": _b64url(json.dumps(protected).encode()),
    }  # fmt: skip
    signatures = json.dumps([signature], indent=3).replace("\n", "\n   ").encode()
    raw = payload[:format_length] + b',\n   "signatures": ' + signatures + tail
    manifest = Manifest.parse(raw)
    if manifest.digest != digest_bytes(payload):  # the builder's own sanity check
        raise AssertionError("schema1 builder produced a payload that does not round-trip")
    return Image(manifest, tuple(blobs))


def write_blob(store: ObjectStore, blob: Blob | bytes, *, chunk_size: int = CHUNK_SIZE) -> Digest:
    """Store a blob through the Layer writer (in chunks), unless it is complete already."""
    if isinstance(blob, bytes):
        blob = Blob(blob)
    digest = blob.digest
    if store.blob_exists(digest):
        return digest
    writer = store.layer(digest).writer()
    try:
        writer.set_size(blob.size)
        view = memoryview(blob.data)
        for offset in range(writer.current_size, blob.size, chunk_size):
            writer.write(view[offset : offset + chunk_size])
        return writer.commit()
    finally:
        writer.close()


def write_image(
    store: ObjectStore, name: str, tag: str | None, image: Image, *, partial: bool = False
) -> Digest:
    """Store an image: blobs, then child manifests (by digest), then the manifest and tag.

    With ``partial``, an index is written without its children.
    """
    if not partial:
        for child in image.children:
            write_image(store, name, None, child)
    for blob in image.blobs:
        write_blob(store, blob)
    return store.write_manifest(name, tag, image.manifest, partial=partial)
