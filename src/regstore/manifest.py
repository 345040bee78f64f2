"""Manifests: media types, descriptors, and a light parsed view over the exact bytes.

A manifest's digest is of its bytes, so :class:`Manifest` always keeps ``raw`` and never
re-serialises. The parsed view lists every descriptor the manifest references (config, layers,
child manifests, subject) so the engine can walk an image without knowing its format.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from regstore.digest import digest_bytes
from regstore.errors import InvalidReferenceError, ManifestInvalidError
from regstore.reference import Digest

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V1",
    "DOCKER_MANIFEST_V1_SIGNED",
    "DOCKER_MANIFEST_V2",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MAX_SIZE",
    "MANIFEST_MEDIA_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "Platform",
    "SignedManifest",
    "digest_of",
    "media_type_of",
    "parse_manifest",
]

DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST_V2})
SCHEMA1_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED})
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | IMAGE_MEDIA_TYPES | SCHEMA1_MEDIA_TYPES
#: The Accept header value listing every manifest type regstore handles (Registry 2.8 rewrites
#: or hides manifests whose type is missing here).
MANIFEST_ACCEPT = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2,
     DOCKER_MANIFEST_V1_SIGNED, DOCKER_MANIFEST_V1]
)  # fmt: skip
#: Registries must accept manifests of at least 4 MiB; regstore refuses anything larger.
MANIFEST_MAX_SIZE = 4 * 1024 * 1024

_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})
_INT64_MAX = 2**63 - 1


def _is_int(value: object) -> TypeGuard[int]:
    """A JSON integer: ``true`` and ``2.0`` compare equal to 1 and 2 in Python, not in JSON."""
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: The largest config read to learn an image's platform (an image config is a few KiB).
MAX_CONFIG_SIZE = 1 << 20

#: Architecture names other tools write, as containerd normalizes them (name, variant).
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "i386": ("386", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
}


@dataclass(frozen=True)
class Platform:
    """The platform of an index entry (``linux/arm64/v8``)."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` as users write it."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(parts):
            # InvalidReferenceError is a ValueError too: a bad --platform is a user error that
            # callers catching RegstoreError report cleanly.
            raise InvalidReferenceError("platform", text, "expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_config(cls, raw: bytes | None) -> Platform | None:
        """The platform an image config's bytes name (``os``, ``architecture``, ``variant``,
        strings), None when they name no ``os`` (an artifact's config, bytes that are no JSON
        object, nesting too deep to read)."""
        try:
            config = json.loads(raw) if raw is not None else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(config, dict):
            return None
        os_, arch, variant = (config.get(k) for k in ("os", "architecture", "variant"))
        if not isinstance(os_, str) or not os_:
            return None
        return cls(
            os_,
            arch if isinstance(arch, str) else "",
            variant if isinstance(variant, str) and variant else None,
        )

    def normalized(self) -> Platform:
        """This platform as containerd normalizes it: architecture aliases (``x86_64``,
        ``aarch64``, ``armhf``...) by their names, ``arm`` without a variant as ``arm/v7``,
        ``arm64/v8`` as ``arm64`` (its only variant), ``os`` and architecture in lower case."""
        lower = self.architecture.lower()
        arch, variant = _ARCH_ALIASES.get(lower, (lower, None))
        variant = variant or self.variant
        if variant is not None and variant.isdigit():
            variant = f"v{variant}"
        if arch == "arm" and variant is None:
            variant = "v7"
        elif arch == "arm64" and variant == "v8":
            variant = None
        return Platform(self.os.lower(), arch, variant, self.os_version)

    def matches(self, wanted: Platform) -> bool:
        """True if this platform satisfies ``wanted``: ``wanted`` without a variant takes
        every variant (a mirror asked for ``linux/arm`` takes each arm variant); with one, it
        takes the same variant, both :meth:`normalized` (an image of ``linux/arm64`` is
        ``linux/arm64/v8``, one of ``linux/arm`` is ``linux/arm/v7``)."""
        have, want = self.normalized(), wanted.normalized()
        return (
            have.os == want.os
            and have.architecture == want.architecture
            and (wanted.variant is None or have.variant == want.variant)
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A reference to content by media type, digest and size (OCI descriptor)."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    # A dict is unhashable: leave it out of the hash so descriptors work in sets and as keys
    # (equal descriptors still have equal hashes; annotations still count for ==).
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        """Validate and build a descriptor from its JSON object; ``where`` names it in errors."""
        if not isinstance(obj, dict):
            raise ManifestInvalidError(f"{where}: descriptor must be a JSON object")
        try:
            digest = Digest(obj.get("digest"))  # type: ignore[arg-type]
        except InvalidReferenceError as exc:
            raise ManifestInvalidError(f"{where}: {exc}") from None
        size = obj.get("size")
        if not _is_int(size) or not 0 <= size <= _INT64_MAX:
            raise ManifestInvalidError(
                f"{where}: size must be a non-negative 64-bit integer, got {size!r}"
            )
        media_type = obj.get("mediaType", "")
        if not isinstance(media_type, str):
            raise ManifestInvalidError(f"{where}: mediaType must be a string")
        platform = None
        p = obj.get("platform")
        if p is not None:
            if not isinstance(p, dict):
                raise ManifestInvalidError(f"{where}: platform must be an object")
            fields = {k: p.get(k) for k in ("os", "architecture", "variant", "os.version")}
            if any(v is not None and not isinstance(v, str) for v in fields.values()):
                raise ManifestInvalidError(f"{where}: platform fields must be strings")
            platform = Platform(
                os=fields["os"] or "",
                architecture=fields["architecture"] or "",
                variant=fields["variant"],
                os_version=fields["os.version"],
            )
        annotations = obj.get("annotations", {})
        if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values()
        ):
            raise ManifestInvalidError(f"{where}: annotations must map strings to strings")
        urls = obj.get("urls", [])
        # a bare string would otherwise become a tuple of its characters
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestInvalidError(f"{where}: urls must be a list of strings")
        artifact_type = obj.get("artifactType")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=platform,
            annotations=dict(annotations),
            urls=tuple(urls),
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object form (for building indexes such as an OCI layout's index.json)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}  # fmt: skip
        if self.platform is not None:
            plat: dict[str, str] = {"architecture": self.platform.architecture,
                                    "os": self.platform.os}  # fmt: skip
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            if self.platform.os_version:
                plat["os.version"] = self.platform.os_version
            out["platform"] = plat
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @property
    def is_manifest(self) -> bool:
        """True if the descriptor points at a manifest or index (not a blob)."""
        return self.media_type in MANIFEST_MEDIA_TYPES


def _plain_type(media_type: str) -> str:
    """A media type without parameters, in lower case (how an announced one is compared)."""
    return media_type.split(";")[0].strip().lower()


def _sniff_media_type(doc: dict[str, Any], hint: str | None) -> str:
    """Distribution's own rule for a missing or generic Content-Type."""
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalidError("mediaType must be a string")
    hint = _plain_type(hint or "")
    if _is_int(doc.get("schemaVersion")) and doc["schemaVersion"] == 1:
        return DOCKER_MANIFEST_V1_SIGNED if "signatures" in doc else DOCKER_MANIFEST_V1
    if declared:
        if hint and hint not in _GENERIC_TYPES and hint != declared:
            raise ManifestInvalidError(
                f"mediaType {declared!r} in the body differs from the announced type {hint!r}"
            )
        return declared
    if hint and hint not in _GENERIC_TYPES:
        return hint
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        # Strict UTF-8 (json.loads(bytes) would also take UTF-16/32 and a BOM, which no
        # registry does) and no NaN/Infinity. A nesting bomb ends in RecursionError.
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ManifestInvalidError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestInvalidError("manifest must be a JSON object")
    return doc


def media_type_of(raw: bytes) -> str:
    """The media type of manifest bytes by distribution's own sniffing rule (the declared
    ``mediaType``, else the schema version and the keys present), without validating the rest
    (:class:`Manifest` does); ``""`` for bytes that are no JSON object within
    ``MANIFEST_MAX_SIZE``, declare no string type or one not in its plain lower-case form."""
    if len(raw) > MANIFEST_MAX_SIZE:
        return ""
    try:
        sniffed = _sniff_media_type(_json_object(bytes(raw)), None)
    except ManifestInvalidError:
        return ""
    # A declared type not in its plain form (capitals, parameters) would be compared with
    # itself as an announced one by the full parse: left for that parse to judge.
    return sniffed if sniffed == _plain_type(sniffed) else ""


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _schema1_payload(raw: bytes, doc: dict[str, Any]) -> bytes:
    """The JWS payload of a signed schema1 manifest: the digest is taken over these bytes."""
    signatures = doc.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise ManifestInvalidError("signed schema1 manifest needs a non-empty signatures list")
    payloads = set()
    for sig in signatures:
        try:
            protected = json.loads(_b64url(sig["protected"]))
            length = protected["formatLength"]
            tail = _b64url(protected["formatTail"])
            if not _is_int(length):
                raise TypeError(f"formatLength must be an integer, got {length!r}")
        except (KeyError, TypeError, ValueError, RecursionError, binascii.Error) as exc:
            raise ManifestInvalidError(
                f"schema1 signature has a bad protected header: {exc}"
            ) from None
        if not 0 <= length <= len(raw):
            raise ManifestInvalidError("schema1 signature formatLength is out of range")
        payloads.add(raw[:length] + tail)
    if len(payloads) != 1:
        raise ManifestInvalidError("schema1 signatures disagree about the payload")
    return payloads.pop()


class Manifest:
    """A manifest's exact bytes plus a parsed view of what it references.

    Build one with :meth:`parse`. ``media_type`` comes from the body's ``mediaType`` or, when it
    is absent (umoci omits it), from the ``media_type`` hint (descriptor or Content-Type), or by
    distribution's sniffing rule. ``digest`` is sha256 of the bytes, except for signed schema1
    manifests where it is the digest of the JWS payload, as registries compute it.

    ``layers`` and ``manifests`` keep the manifest's order; ``blobs`` (config, then layers) lists
    each digest once, as a fetch list.
    """

    __slots__ = ("_digest", "_payload", "blobs", "config", "doc", "layers", "manifests",
                 "media_type", "raw", "subject")  # fmt: skip

    raw: bytes
    media_type: str
    doc: dict[str, Any]
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    blobs: tuple[Descriptor, ...]

    def __init__(self, raw: bytes, media_type: str | None = None) -> None:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise ManifestInvalidError(f"manifest must be bytes, got {type(raw).__name__}")
        raw = bytes(raw)
        if len(raw) > MANIFEST_MAX_SIZE:
            raise ManifestInvalidError(
                f"manifest is {len(raw)} bytes, over the {MANIFEST_MAX_SIZE}-byte limit"
            )
        doc = _json_object(raw)
        self.raw = raw
        self.doc = doc
        self.media_type = _sniff_media_type(doc, media_type)
        self._digest: Digest | None = None
        self._payload: bytes | None = None  # what the digest covers, when not ``raw``
        self.config = None
        self.subject = None
        self.layers = ()
        self.manifests = ()
        mt = self.media_type
        if mt in SCHEMA1_MEDIA_TYPES:
            self._parse_schema1(doc)
            if mt == DOCKER_MANIFEST_V1_SIGNED:
                # validated here, so a bad signature header fails parse(), not .digest later
                self._payload = _schema1_payload(raw, doc)
        elif mt in INDEX_MEDIA_TYPES:
            self._require_schema2(doc)
            self.manifests = self._list(doc, "manifests", required=True)
        elif mt in IMAGE_MEDIA_TYPES or "config" in doc:
            self._require_schema2(doc)
            self.config = Descriptor.from_json(doc.get("config"), "config")
            self.layers = self._list(doc, "layers", required=mt in IMAGE_MEDIA_TYPES)
        else:
            raise ManifestInvalidError(f"unsupported manifest media type {mt!r}")
        if doc.get("subject") is not None:
            self.subject = Descriptor.from_json(doc["subject"], "subject")
        config = (self.config,) if self.config is not None else ()
        # Each blob once (first occurrence): images may repeat a layer, and artifacts may use
        # the empty descriptor as config and layer; fetching it twice would race on one writer.
        unique: dict[str, Descriptor] = {}
        for blob in config + self.layers:
            unique.setdefault(blob.digest, blob)
        self.blobs = tuple(unique.values())

    @staticmethod
    def _require_schema2(doc: dict[str, Any]) -> None:
        if not _is_int(doc.get("schemaVersion")) or doc["schemaVersion"] != 2:
            raise ManifestInvalidError(f"schemaVersion must be 2, got {doc.get('schemaVersion')!r}")

    @staticmethod
    def _list(doc: dict[str, Any], key: str, *, required: bool) -> tuple[Descriptor, ...]:
        items = doc.get(key)
        if items is None and not required:
            return ()
        if not isinstance(items, list):
            raise ManifestInvalidError(f"{key} must be a list")
        return tuple(Descriptor.from_json(d, f"{key}[{i}]") for i, d in enumerate(items))

    def _parse_schema1(self, doc: dict[str, Any]) -> None:
        if not _is_int(doc.get("schemaVersion")) or doc["schemaVersion"] != 1:
            raise ManifestInvalidError(f"schemaVersion must be 1, got {doc.get('schemaVersion')!r}")
        fs_layers = doc.get("fsLayers")
        if not isinstance(fs_layers, list):
            raise ManifestInvalidError("schema1 manifest needs an fsLayers list")
        history = doc.get("history")
        if isinstance(history, list) and len(history) != len(fs_layers):
            raise ManifestInvalidError("schema1 history and fsLayers differ in length")
        layers: list[Descriptor] = []
        seen: set[str] = set()
        for i, entry in enumerate(fs_layers):
            if not isinstance(entry, dict):
                raise ManifestInvalidError(f"fsLayers[{i}] must be an object")
            try:
                digest = Digest(entry.get("blobSum"))  # type: ignore[arg-type]
            except InvalidReferenceError as exc:
                raise ManifestInvalidError(f"fsLayers[{i}]: {exc}") from None
            if digest in seen:  # schema1 repeats empty layers; fetch each blob once
                continue
            seen.add(digest)
            # schema1 carries no sizes: -1 means "unknown" and the engine learns it on fetch.
            layers.append(Descriptor(media_type=DOCKER_LAYER, digest=digest, size=-1))
        self.layers = tuple(layers)

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        """Validate ``raw`` and build the view. Raises :class:`ManifestInvalidError`."""
        return cls(raw, media_type)

    @property
    def digest(self) -> Digest:
        """The manifest's content digest (sha256)."""
        if self._digest is None:
            self._digest = digest_bytes(self.raw if self._payload is None else self._payload)
        return self._digest

    def digest_with(self, algorithm: str) -> Digest:
        """The digest with another algorithm (e.g. when fetched by a sha512 reference)."""
        if algorithm == "sha256":
            return self.digest
        return digest_bytes(self.raw if self._payload is None else self._payload, algorithm)

    @property
    def size(self) -> int:
        """Length of the exact bytes."""
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        """True for an OCI index or Docker manifest list."""
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def is_schema1(self) -> bool:
        """True for the seed's Docker v2 schema 1 format (signed or not)."""
        return self.media_type in SCHEMA1_MEDIA_TYPES

    @property
    def artifact_type(self) -> str | None:
        """The OCI ``artifactType``, if any."""
        value = self.doc.get("artifactType")
        return value if isinstance(value, str) else None

    @property
    def platform_config(self) -> Descriptor | None:
        """The config that may name this image's platform: None for an index, an artifact
        (``artifactType``) or a config larger than an image's (:data:`MAX_CONFIG_SIZE`)."""
        config = self.config
        if config is None or self.artifact_type or config.size > MAX_CONFIG_SIZE:
            return None
        return config

    @property
    def references(self) -> tuple[Descriptor, ...]:
        """Every descriptor this manifest references: config, layers, children, subject."""
        subject = (self.subject,) if self.subject is not None else ()
        return self.blobs + self.manifests + subject

    def descriptor(self, **annotations: str) -> Descriptor:
        """A descriptor pointing at this manifest."""
        return Descriptor(self.media_type, self.digest, self.size, annotations=annotations)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Manifest({self.media_type!r}, {self.digest}, {self.size} bytes)"


def digest_of(raw: bytes, algorithm: str = "sha256") -> Digest:
    """The digest :class:`Manifest` gives these bytes, without building one where it need not:
    the digest of the bytes themselves, except for a signed schema1 manifest (told from its
    content, as :class:`Manifest` tells it, whatever type it was stored under), whose digest is
    of its JWS payload. Bytes that do not parse as a signed manifest give their own digest,
    which no valid manifest has."""
    # A "signatures" key is in the bytes as written, or with a \u escape: bytes holding
    # neither need no JSON parse (a sync asks this of every tag, whose layout parsed it once).
    maybe_signed = b"signatures" in raw or b"\\u" in raw
    if maybe_signed and media_type_of(raw) == DOCKER_MANIFEST_V1_SIGNED:
        with contextlib.suppress(ManifestInvalidError):
            return Manifest(raw).digest_with(algorithm)
    return digest_bytes(raw, algorithm)


#: The seed's name for its manifest type; here any manifest, schema1 signed included.
SignedManifest = Manifest


def parse_manifest(raw: bytes, media_type: str | None = None) -> Manifest:
    """Shorthand for :meth:`Manifest.parse`."""
    return Manifest.parse(raw, media_type)
