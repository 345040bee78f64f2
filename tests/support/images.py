"""Deterministic test images built with the standard library only.

Everything here is a pure function of its arguments (seed included): the same call gives the
same bytes and digests on every run and machine. Layers are real gzip-compressed tar archives
(mtime 0, uid/gid 0, gzip mtime 0) and configs are valid image configs (``rootfs.diff_ids`` =
sha256 of the uncompressed tars), so skopeo and umoci accept the images.

- :func:`build_layer`, :func:`random_blob`, :func:`layer_diff_id`, :func:`sha256_digest`
- :func:`build_image` → :class:`BuiltImage`; :func:`build_index` → :class:`BuiltIndex`
- :func:`write_oci_layout` (skopeo ``oci:DIR:REF``, umoci ``--image DIR:REF``)
- :func:`write_dir_layout` (skopeo ``dir:DIR``, which also carries Docker media types)

Manifests are serialised with a 3-space indent, as Docker does; a client that re-serialises
instead of keeping the exact bytes therefore changes the digest and is caught.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
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
    "REF_NAME_ANNOTATION",
    "TEST_ARTIFACT_TYPE",
    "TEST_BLOB_TYPE",
    "Built",
    "BuiltImage",
    "BuiltIndex",
    "build_image",
    "build_index",
    "build_layer",
    "layer_diff_id",
    "random_blob",
    "sha256_digest",
    "write_dir_layout",
    "write_oci_layout",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
TEST_ARTIFACT_TYPE = "application/vnd.regstore.test.artifact.v1"
TEST_BLOB_TYPE = "application/vnd.regstore.test.blob.v1"

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
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_blob(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random (incompressible) bytes, the same for the same ``seed``."""
    return random.Random(seed).randbytes(size)


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
