"""Deterministic test images of every manifest kind, for tests of stores, registries and tools.

Everything here is a pure function of its arguments (seed included) and self-contained (no
registry, no network): the same call gives the same bytes and digests on every run and machine.
Manifests are serialised with deliberately unusual formatting (indent 3), so a store or client
that re-serialises instead of keeping exact bytes changes the digest and is caught.

Two families, one library:

*Manifest-kind builders* (small random blobs; :class:`Image` values over
:class:`regstore.Manifest`, written to a store with :func:`write_image`):
:func:`docker_image` (schema2), :func:`oci_image` (with or without the ``mediaType`` field),
:func:`oci_artifact` (with a ``subject``), :func:`oci_index`, :func:`docker_manifest_list`,
:func:`schema1_signed` (a syntactically valid signed schema1 manifest: the digest is of its JWS
payload); :func:`write_blob`, :func:`write_image`.

*Real images* (what skopeo, umoci and a registry accept: layers are gzip-compressed tar archives
with mtime 0 and owner 0:0, configs carry ``rootfs.diff_ids`` of the uncompressed tars):
:func:`build_layer`, :func:`layer_diff_id`, :func:`build_image` → :class:`BuiltImage`,
:func:`build_index` → :class:`BuiltIndex` (either is a :data:`Built`, with ``blobs`` and
``manifests`` maps to upload), :func:`write_oci_layout` (skopeo ``oci:DIR:REF``, umoci
``--image DIR:REF``), :func:`write_dir_layout` (skopeo ``dir:DIR``, Docker media types too).

Both: :func:`random_bytes` (alias :func:`random_blob`), :func:`sha256_digest`, and
:func:`validate` which checks an image or index as a registry would hold it (every descriptor's
digest and size, the config's ``diff_ids`` against the layers, children of an index).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    "COSIGN_SIGNATURE_ANNOTATION",
    "DEFAULT_PLATFORMS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "EMPTY_GZIP_TAR",
    "EMPTY_GZIP_TAR_DIGEST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_EMPTY_DIGEST",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "PLATFORMS",
    "REF_NAME_ANNOTATION",
    "SIMPLE_SIGNING",
    "TEST_ARTIFACT_TYPE",
    "TEST_BLOB_TYPE",
    "Blob",
    "Built",
    "BuiltImage",
    "BuiltIndex",
    "Image",
    "ImageError",
    "build_image",
    "build_index",
    "build_layer",
    "cosign_signature",
    "docker_image",
    "docker_manifest_list",
    "layer_diff_id",
    "oci_artifact",
    "oci_image",
    "oci_index",
    "random_blob",
    "random_bytes",
    "schema1_signed",
    "serialise",
    "sha256_digest",
    "validate",
    "write_blob",
    "write_dir_layout",
    "write_image",
    "write_oci_layout",
]

#: Short names of the media types, as the real-image builders call them.
DOCKER_MANIFEST = DOCKER_MANIFEST_V2
OCI_LAYER = OCI_LAYER_GZIP
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
TEST_ARTIFACT_TYPE = "application/vnd.regstore.test.artifact.v1"
TEST_BLOB_TYPE = "application/vnd.regstore.test.blob.v1"

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


#: The media type of a cosign signature's payload layer (Red Hat's "simple signing" format).
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
#: The layer annotation cosign keeps the base64 signature in.
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def cosign_signature(subject: Image, *, seed: int = 0, with_subject: bool = False) -> Image:
    """A cosign-style signature of ``subject``: a simple-signing payload layer carrying the
    signature annotation, and a config as cosign writes it. cosign pushes it under the tag
    ``sha256-<hex>.sig`` without ``subject``; ``with_subject`` adds one (cosign's OCI 1.1
    mode), making it a referrer."""
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": "example.invalid/image"},
                     "image": {"docker-manifest-digest": str(subject.digest)},
                     "type": "cosign container image signature"},
        "optional": {"seed": str(seed)},
    }).encode()  # fmt: skip
    layer = Blob(payload, SIMPLE_SIGNING)
    config_doc = {"architecture": "", "created": "0001-01-01T00:00:00Z", "os": "",
                  "rootfs": {"type": "layers", "diff_ids": [str(layer.digest)]},
                  "config": {}}  # fmt: skip
    config = Blob(json.dumps(config_doc).encode(), OCI_CONFIG)
    signature = base64.b64encode(random_bytes(64, seed)).decode()
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": config.descriptor(),
                           "layers": [layer.descriptor(
                               annotations={COSIGN_SIGNATURE_ANNOTATION: signature})]}  # fmt: skip
    if with_subject:
        doc["subject"] = subject.descriptor()
    return Image(Manifest.parse(serialise(doc)), (config, layer))


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


# -- real images (tar layers, valid configs) ----------------------------------------------------

#: Docker's well-known "empty layer": gzip of 1024 zero bytes (an empty tar archive), 32 bytes,
#: digest sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4. Images
#: share it, which makes it a natural "blob already exists / mount" case.
EMPTY_GZIP_TAR = bytes(
    [31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 98, 24, 5, 163, 96, 20,
     140, 88, 0, 8, 0, 0, 255, 255, 46, 175, 181, 239, 0, 4, 0, 0]
)  # fmt: skip
EMPTY_GZIP_TAR_DIGEST = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"

DEFAULT_PLATFORMS: tuple[tuple[str, ...], ...] = (("linux", "amd64"), ("linux", "arm64"))

_EPOCH = "1970-01-01T00:00:00Z"


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data`` (a plain ``str``, for comparing with JSON values)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


#: ``size`` pseudo-random (incompressible) bytes, the same for the same ``seed``.
random_blob = random_bytes


def build_layer(files: Mapping[str, bytes], *, compress: bool = True) -> bytes:
    """A deterministic tar archive of ``files`` (path → content), gzip-compressed by default.

    Parent directories get their own entries (mode 0755); files are 0644, owned by 0:0 with
    mtime 0, in sorted order. The gzip header has mtime 0 and no file name.
    """
    dirs: set[str] = set()
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(_normalise(info))
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name.strip("/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(_normalise(info), io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer_diff_id(layer: bytes) -> str:
    """The diff_id of a layer: sha256 of its uncompressed tar (gzip is detected by magic)."""
    raw = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
    return sha256_digest(raw)


def _dumps_manifest(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, indent=3).encode()


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


@dataclass(frozen=True)
class BuiltImage:
    """One image manifest with its config and layers.

    ``blobs`` maps digest → bytes for the config and every layer (not the manifest);
    ``manifests`` maps digest → (media type, bytes) for the manifest itself.
    """

    manifest_bytes: bytes
    manifest_media_type: str
    config: bytes
    config_media_type: str
    layers: tuple[bytes, ...]
    layer_media_types: tuple[str, ...]
    platform: tuple[str, ...] = ("linux", "amd64")
    # Derived from the fields above; left out of hashing so images can be set members/keys.
    blobs: dict[str, bytes] = field(default_factory=dict, hash=False)

    @property
    def manifest_digest(self) -> str:
        """``sha256:<hex>`` of :attr:`manifest_bytes`."""
        return sha256_digest(self.manifest_bytes)

    @property
    def config_digest(self) -> str:
        """Digest of the config blob."""
        return sha256_digest(self.config)

    @property
    def layer_digests(self) -> list[str]:
        """Digests of the layers, in manifest order."""
        return [sha256_digest(layer) for layer in self.layers]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest parsed as JSON."""
        result: dict[str, Any] = json.loads(self.manifest_bytes)
        return result

    @property
    def manifests(self) -> dict[str, tuple[str, bytes]]:
        """digest → (media type, bytes) for every manifest (here just this one)."""
        return {self.manifest_digest: (self.manifest_media_type, self.manifest_bytes)}

    @property
    def size(self) -> int:
        """Total bytes of manifest and blobs."""
        return len(self.manifest_bytes) + sum(len(b) for b in self.blobs.values())

    def descriptor(self, *, with_platform: bool = False, **extra: Any) -> dict[str, Any]:
        """The descriptor of this manifest (optionally with its ``platform``)."""
        desc = _descriptor(self.manifest_media_type, self.manifest_bytes, **extra)
        if with_platform:
            desc["platform"] = _platform_dict(self.platform)
        return desc


@dataclass(frozen=True)
class BuiltIndex:
    """An OCI index or Docker manifest list over :class:`BuiltImage` children."""

    manifest_bytes: bytes
    manifest_media_type: str
    children: tuple[BuiltImage, ...]

    @property
    def manifest_digest(self) -> str:
        """``sha256:<hex>`` of :attr:`manifest_bytes`."""
        return sha256_digest(self.manifest_bytes)

    @property
    def manifest(self) -> dict[str, Any]:
        """The index parsed as JSON."""
        result: dict[str, Any] = json.loads(self.manifest_bytes)
        return result

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every config and layer blob of every child (digest → bytes)."""
        out: dict[str, bytes] = {}
        for child in self.children:
            out.update(child.blobs)
        return out

    @property
    def manifests(self) -> dict[str, tuple[str, bytes]]:
        """digest → (media type, bytes): the children first, then the index itself."""
        out: dict[str, tuple[str, bytes]] = {}
        for child in self.children:
            out.update(child.manifests)
        out[self.manifest_digest] = (self.manifest_media_type, self.manifest_bytes)
        return out

    @property
    def size(self) -> int:
        """Total bytes of all manifests and blobs."""
        return sum(len(m[1]) for m in self.manifests.values()) + sum(
            len(b) for b in self.blobs.values()
        )

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The descriptor of this index."""
        return _descriptor(self.manifest_media_type, self.manifest_bytes, **extra)


#: Either kind of built content.
Built = BuiltImage | BuiltIndex


def _platform_dict(platform: Sequence[str]) -> dict[str, str]:
    out = {"architecture": platform[1], "os": platform[0]}
    if len(platform) > 2 and platform[2]:
        out["variant"] = platform[2]
    return out


def build_image(
    layers: int = 2,
    layer_size: int = 1024,
    seed: int = 0,
    media: Literal["docker", "oci"] = "docker",
    artifact_subject: Built | Mapping[str, Any] | None = None,
    empty_layer: bool = False,
    *,
    platform: Sequence[str] = ("linux", "amd64"),
    shared_layers: Sequence[bytes] = (),
    layer_files: Sequence[Mapping[str, bytes]] | None = None,
    annotations: Mapping[str, str] | None = None,
    artifact_type: str = TEST_ARTIFACT_TYPE,
) -> BuiltImage:
    """Build a deterministic image.

    - ``layers`` layers, each a gzip tar holding ``layer-<i>/data.bin`` of ``layer_size``
      random bytes (so a compressed layer is ``layer_size`` plus ~1.5 KiB of tar/gzip
      overhead) and ``layer-<i>/seed.txt``. ``layer_files`` replaces these with explicit
      file maps, one per layer.
    - ``shared_layers`` (compressed layer bytes, e.g. another image's ``layers``) come first,
      to build images that share blobs.
    - ``empty_layer`` appends Docker's well-known 32-byte empty layer (:data:`EMPTY_GZIP_TAR`).
    - ``media`` chooses Docker schema2 or OCI types for manifest, config and layers.
    - ``platform`` is ``(os, architecture[, variant])`` written into the config.
    - ``artifact_subject`` (OCI only) builds an *artifact* instead: config = the OCI empty
      descriptor, ``artifactType`` = ``artifact_type``, ``layers`` random blobs of type
      :data:`TEST_BLOB_TYPE`, and ``subject`` = the subject's descriptor.
    """
    if media not in ("docker", "oci"):
        raise ValueError(f"media must be 'docker' or 'oci', not {media!r}")
    if artifact_subject is not None:
        if media != "oci":
            raise ValueError("artifacts (artifact_subject) need media='oci'")
        return _build_artifact(
            artifact_subject, layers, layer_size, seed, artifact_type, annotations
        )

    docker = media == "docker"
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    blobs_layers: list[bytes] = list(shared_layers)
    if layer_files is not None:
        blobs_layers += [build_layer(files) for files in layer_files]
    else:
        for i in range(layers):
            files = {
                f"layer-{i}/data.bin": random_blob(layer_size, seed * 1_000_003 + i),
                f"layer-{i}/seed.txt": f"seed={seed} layer={i}\n".encode(),
            }
            blobs_layers.append(build_layer(files))
    if empty_layer:
        blobs_layers.append(EMPTY_GZIP_TAR)

    config_obj: dict[str, Any] = {
        "architecture": platform[1],
        "os": platform[0],
        "created": _EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.regstore.test.seed": str(seed)},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_diff_id(layer) for layer in blobs_layers]},
        "history": [
            {"created": _EPOCH, "created_by": f"regstore test layer {i}"}
            for i in range(len(blobs_layers))
        ],
    }
    if len(platform) > 2 and platform[2]:
        config_obj["variant"] = platform[2]
    config = json.dumps(config_obj, separators=(",", ":"), sort_keys=True).encode()
    config_type = DOCKER_CONFIG if docker else OCI_CONFIG
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": _descriptor(config_type, config),
        "layers": [_descriptor(layer_type, layer) for layer in blobs_layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    blobs = {sha256_digest(config): config}
    for layer in blobs_layers:
        blobs[sha256_digest(layer)] = layer
    return BuiltImage(
        manifest_bytes=_dumps_manifest(manifest),
        manifest_media_type=manifest["mediaType"],
        config=config,
        config_media_type=config_type,
        layers=tuple(blobs_layers),
        layer_media_types=tuple(layer_type for _ in blobs_layers),
        platform=tuple(platform),
        blobs=blobs,
    )


def _build_artifact(
    subject: Built | Mapping[str, Any],
    count: int,
    size: int,
    seed: int,
    artifact_type: str,
    annotations: Mapping[str, str] | None,
) -> BuiltImage:
    subject_desc = dict(subject) if isinstance(subject, Mapping) else subject.descriptor()
    empty = b"{}"
    payloads = [random_blob(size, seed * 1_000_003 + 500_000 + i) for i in range(count)]
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": _descriptor(OCI_EMPTY, empty),
        "layers": [_descriptor(TEST_BLOB_TYPE, p) for p in payloads],
        "subject": {k: subject_desc[k] for k in ("mediaType", "digest", "size")},
        "annotations": dict(annotations or {"org.opencontainers.image.created": _EPOCH}),
    }
    blobs = {OCI_EMPTY_DIGEST: empty}
    for p in payloads:
        blobs[sha256_digest(p)] = p
    return BuiltImage(
        manifest_bytes=_dumps_manifest(manifest),
        manifest_media_type=OCI_MANIFEST,
        config=empty,
        config_media_type=OCI_EMPTY,
        layers=tuple(payloads),
        layer_media_types=tuple(TEST_BLOB_TYPE for _ in payloads),
        platform=("", ""),
        blobs=blobs,
    )


def build_index(
    images: Sequence[BuiltImage] | None = None,
    media: Literal["docker", "oci"] = "oci",
    platforms: Sequence[Sequence[str]] = DEFAULT_PLATFORMS,
    *,
    seed: int = 0,
    layers: int = 1,
    layer_size: int = 1024,
    annotations: Mapping[str, str] | None = None,
) -> BuiltIndex:
    """Build an OCI index (``media="oci"``) or a Docker manifest list (``"docker"``).

    ``images`` are the children, one per entry of ``platforms`` (``(os, arch[, variant])``);
    when omitted, one image per platform is built with the same ``media``, ``layers`` and
    ``layer_size`` and seeds ``seed*100 + i`` (so each child has distinct layers).
    """
    if media not in ("docker", "oci"):
        raise ValueError(f"media must be 'docker' or 'oci', not {media!r}")
    if images is None:
        images = [
            build_image(
                layers=layers,
                layer_size=layer_size,
                seed=seed * 100 + i,
                media=media,
                platform=tuple(p),
            )
            for i, p in enumerate(platforms)
        ]
    if len(images) != len(platforms):
        raise ValueError(f"{len(images)} images for {len(platforms)} platforms")
    entries = [
        {**img.descriptor(), "platform": _platform_dict(tuple(plat))}
        for img, plat in zip(images, platforms, strict=True)
    ]
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST if media == "docker" else OCI_INDEX,
        "manifests": entries,
    }
    if annotations:
        index["annotations"] = dict(annotations)
    return BuiltIndex(
        manifest_bytes=_dumps_manifest(index),
        manifest_media_type=index["mediaType"],
        children=tuple(images),
    )


def _write_if_missing(path: Path, data: bytes) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


def write_oci_layout(
    directory: str | Path, content: Built, ref_name: str | None = "latest"
) -> Path:
    """Write ``content`` into an OCI Image Layout at ``directory`` (created or extended).

    Writes ``oci-layout``, ``blobs/sha256/<hex>`` for every blob and manifest, and adds the
    top-level descriptor to ``index.json`` with the ``org.opencontainers.image.ref.name``
    annotation ``ref_name`` (an older entry with that name is replaced; ``None`` adds an
    unnamed entry). Use ``oci:DIR:REF`` with skopeo and ``--image DIR:REF`` with umoci.

    skopeo 1.9 only finds OCI-typed descriptors in ``index.json`` and umoci unpacks only OCI
    image manifests: build with ``media="oci"`` for those tools (or use
    :func:`write_dir_layout` for Docker media types).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _write_if_missing(root / "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    blob_dir = root / "blobs" / "sha256"
    for digest, data in content.blobs.items():
        _write_if_missing(blob_dir / digest.split(":", 1)[1], data)
    for digest, (_, data) in content.manifests.items():
        _write_if_missing(blob_dir / digest.split(":", 1)[1], data)
    index_path = root / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_bytes())
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entries = [
        e
        for e in index.get("manifests", [])
        if ref_name is None or (e.get("annotations") or {}).get(REF_NAME_ANNOTATION) != ref_name
    ]
    desc = content.descriptor()
    if ref_name is not None:
        desc["annotations"] = {REF_NAME_ANNOTATION: ref_name}
    entries.append(desc)
    index["manifests"] = entries
    tmp = index_path.with_name("index.json.tmp")
    tmp.write_bytes(json.dumps(index, indent=2).encode())
    tmp.replace(index_path)
    return root


def write_dir_layout(directory: str | Path, content: Built) -> Path:
    """Write ``content`` in skopeo's ``dir:`` transport format (any media type).

    ``manifest.json`` is the top manifest, ``<hex>.manifest.json`` each child of an index,
    ``<hex>`` each blob, and ``version`` the transport marker. Copy with
    ``skopeo copy [--all] dir:DIR docker://...``; the manifest bytes are kept as they are.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    (root / "version").write_text("Directory Transport Version: 1.1\n")
    (root / "manifest.json").write_bytes(content.manifest_bytes)
    for digest, data in content.blobs.items():
        _write_if_missing(root / digest.split(":", 1)[1], data)
    if isinstance(content, BuiltIndex):
        for child in content.children:
            (root / f"{child.manifest_digest.split(':', 1)[1]}.manifest.json").write_bytes(
                child.manifest_bytes
            )
    return root


# -- validation ----------------------------------------------------------------------------------


class ImageError(AssertionError):
    """An image or index that does not hold together (raised by :func:`validate`).

    An ``AssertionError`` so that pytest shows it as a failed check, not as an error.
    """


_TAR_LAYER_TYPES = (DOCKER_LAYER, OCI_LAYER, "application/vnd.oci.image.layer.v1.tar")
_IMAGE_CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)


def validate(
    content: Built | Image | bytes,
    blob: Callable[[str], bytes] | None = None,
    manifest: Callable[[str], bytes] | None = None,
) -> list[str]:
    """Check an image or index as a registry or store would hold it; return every digest seen.

    ``content`` is a :data:`Built` or an :class:`Image` (checked against its own blobs and
    manifests) or the exact bytes of a manifest, with ``blob(digest)`` and ``manifest(digest)``
    fetching what it references (``manifest`` defaults to ``blob``, as in an OCI layout;
    ``store.layer(d).reader().read`` or a registry GET will do). Checked: every
    descriptor's digest and size against the fetched bytes, children of an index recursively,
    and for an image whose config is an image config and whose layers are tar archives, the
    config's ``rootfs.diff_ids`` against the uncompressed layers.

    Raises:
        ImageError: the first thing that does not match (or cannot be fetched).
    """
    if isinstance(content, Image):
        blobs = {str(b.digest): b.data for b in content.all_blobs()}
        manifests = {str(m.digest): m.raw for m in _manifests_of(content)}
        return validate(content.raw, blob or blobs.__getitem__, manifest or manifests.__getitem__)
    if not isinstance(content, bytes):
        built = content
        return validate(
            built.manifest_bytes,
            blob or (lambda digest: built.blobs[digest]),
            manifest or (lambda digest: built.manifests[digest][1]),
        )
    if blob is None:
        raise TypeError("validate(raw_bytes, ...) needs a blob(digest) function")
    return _validate(content, blob, manifest or blob, where="the manifest")


def _manifests_of(image: Image) -> Iterator[Image]:
    for child in image.children:
        yield from _manifests_of(child)
    yield image


def _fetched(fetch: Callable[[str], bytes], desc: Mapping[str, Any], where: str) -> bytes:
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int):
        raise ImageError(f"{where}: a descriptor without digest or size: {dict(desc)}")
    try:
        data = fetch(digest)
    except Exception as exc:
        raise ImageError(f"{where}: {digest} cannot be fetched: {exc!r}") from exc
    algorithm = digest.split(":", 1)[0]
    if str(digest_bytes(data, algorithm)) != digest:
        raise ImageError(f"{where}: the bytes of {digest} have another digest")
    if len(data) != size:
        raise ImageError(f"{where}: {digest} is {len(data)} bytes, the descriptor says {size}")
    return data


def _validate(
    raw: bytes, blob: Callable[[str], bytes], manifest: Callable[[str], bytes], *, where: str
) -> list[str]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ImageError(f"{where} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise ImageError(f"{where} is not a schema 2 manifest or index")
    seen: list[str] = []
    if "manifests" in doc:
        for i, desc in enumerate(doc["manifests"]):
            child_where = f"{where}, child {i}"
            data = _fetched(manifest, desc, child_where)
            seen.append(desc["digest"])
            seen += _validate(data, blob, manifest, where=f"{child_where} ({desc['digest']})")
        return seen
    config_desc = doc.get("config")
    if not isinstance(config_desc, dict):
        raise ImageError(f"{where} has no config descriptor")
    config = _fetched(blob, config_desc, f"{where}, config")
    seen.append(config_desc["digest"])
    layers = []
    for i, desc in enumerate(doc.get("layers") or []):
        layers.append((desc, _fetched(blob, desc, f"{where}, layer {i}")))
        seen.append(desc["digest"])
    if config_desc.get("mediaType") in _IMAGE_CONFIG_TYPES and all(
        d.get("mediaType") in _TAR_LAYER_TYPES for d, _ in layers
    ):
        diff_ids = (json.loads(config).get("rootfs") or {}).get("diff_ids")
        wanted = [layer_diff_id(data) for _, data in layers]
        if diff_ids != wanted:
            raise ImageError(f"{where}: config rootfs.diff_ids {diff_ids} != layers {wanted}")
    return seen
