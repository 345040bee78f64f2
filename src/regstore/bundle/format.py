"""What a bundle holds, as values: the bundle manifest (``regstore-bundle.json``) and the
names of its members.

A bundle is a tar of an OCI image layout (skopeo's ``oci-archive``). Its members, in order:
``oci-layout``, ``regstore-bundle.json`` (this module's :class:`BundleManifest`),
``index.json`` (one entry per image, ``org.opencontainers.image.ref.name`` = ``NAME:TAG``; then,
in a bundle created with referrers, one per referrer: untagged for a plain one, with its
``artifactType``, and ``NAME:sha256-<hex>.sig`` for a cosign tag),
then ``blobs/sha256/<hex>`` for every blob and manifest it carries, each manifest after
everything it references. The first three are small and come first, so a reader learns what
a bundle holds from its first few kilobytes.

**The bundle id** is ``sha256:`` of the canonical JSON (sorted keys, no spaces) of
``{"base": [base ids], "carried": [sorted digests], "images": [[ref name, digest], ...]}``:
the same content gives the same id whenever and wherever it is written, and a delta names its
base bundles by these ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from regstore.errors import BundleInvalidError
from regstore.reference import validate_name, validate_tag

__all__ = [
    "BUNDLE_MANIFEST_MEMBER",
    "BUNDLE_MEDIA_TYPE",
    "INDEX_MEMBER",
    "LAYOUT_MEMBER",
    "REF_NAME_ANNOTATION",
    "BaseBundle",
    "BundleManifest",
    "BundledImage",
    "BundledReferrer",
    "blob_member",
    "bundle_id",
    "split_ref_name",
]

LAYOUT_MEMBER = "oci-layout"
INDEX_MEMBER = "index.json"
BUNDLE_MANIFEST_MEMBER = "regstore-bundle.json"
BUNDLE_MEDIA_TYPE = "application/vnd.regstore.bundle.v1+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: The most bytes a JSON member (index, bundle manifest) or a manifest may have.
MAX_JSON_MEMBER = 64 << 20


def blob_member(digest: str) -> str:
    """The tar member holding ``digest``: ``blobs/<algorithm>/<hex>``."""
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def split_ref_name(ref_name: str) -> tuple[str | None, str]:
    """``NAME:TAG`` → (NAME, TAG); a bare ``TAG`` (what ``skopeo copy ... oci-archive:X:TAG``
    writes) → (None, TAG). Raises InvalidReferenceError for anything else."""
    colon, slash = ref_name.rfind(":"), ref_name.rfind("/")
    if colon > slash:
        return validate_name(ref_name[:colon]), validate_tag(ref_name[colon + 1 :])
    return None, validate_tag(ref_name)


@dataclass(frozen=True)
class BundledImage:
    """One image of a bundle: ``name:tag``, its top manifest, and its bytes.

    ``size`` counts every manifest and blob of the image; ``carried`` the part of it this
    bundle holds (a delta leaves out what its base bundles hold).
    """

    name: str
    tag: str
    digest: str
    media_type: str
    size: int
    carried: int

    @property
    def ref_name(self) -> str:
        """``NAME:TAG``, as ``index.json`` and skopeo name it (only what an archive regstore
        did not write gives, when it has no repository: the tag, or nothing)."""
        return f"{self.name}:{self.tag}" if self.name else self.tag

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {
            "name": self.name,
            "tag": self.tag,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "carried": self.carried,
        }


@dataclass(frozen=True)
class BundledReferrer:
    """A referrer carried with an image of a bundle (``bundle create --referrers``): a
    manifest of repository ``name`` whose ``subject`` is ``subject`` (a signature, an SBOM,
    an attestation, and theirs in turn), or cosign's tag ``tag`` (``sha256-<hex>.sig``) of it.

    ``index.json`` lists a plain referrer untagged (its descriptor with its ``artifactType``)
    and a cosign tag as ``NAME:sha256-<hex>.sig``. ``size`` counts the referrer's manifests
    and blobs, ``carried`` the part of it this bundle holds.
    """

    name: str
    subject: str
    digest: str
    media_type: str
    artifact_type: str | None
    tag: str | None
    size: int
    carried: int

    @property
    def ref_name(self) -> str | None:
        """``NAME:TAG`` of a cosign tag, None for a plain referrer (untagged in the index)."""
        return None if self.tag is None else f"{self.name}:{self.tag}"

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {
            "name": self.name,
            "subject": self.subject,
            "digest": self.digest,
            "mediaType": self.media_type,
            "artifactType": self.artifact_type,
            "tag": self.tag,
            "size": self.size,
            "carried": self.carried,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BundledReferrer:
        """Parse :meth:`to_json`'s form (KeyError/ValueError/TypeError when malformed)."""
        tag = doc.get("tag")
        artifact_type = doc.get("artifactType")
        return cls(
            validate_name(str(doc["name"])),
            str(doc["subject"]),
            str(doc["digest"]),
            str(doc["mediaType"]),
            None if artifact_type is None else str(artifact_type),
            None if tag is None else validate_tag(str(tag)),
            int(doc["size"]),
            int(doc["carried"]),
        )


@dataclass(frozen=True)
class BaseBundle:
    """A bundle a delta was made against: its id and the ref names of its images (and of its
    own base's: where an import looks for what the delta leaves out)."""

    id: str
    images: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"id": self.id, "images": list(self.images)}


@dataclass(frozen=True)
class BundleManifest:
    """What a bundle holds: its images, the base bundles of a delta, and every digest.

    ``carried``: the digests of the blobs and manifests inside the tar. ``references``: every
    digest the images reference, carried or not (what a receiver has once it imported this
    bundle, so a later ``--since`` of it leaves all of them out). ``size``: bytes carried.
    ``described`` is False for an archive regstore did not write (no bundle manifest inside):
    the fields are then derived from its ``index.json`` and manifests. ``referrers``: what
    travels with the images (empty unless the bundle was created with referrers); their
    digests are in ``carried`` and ``references`` too.
    """

    id: str
    created: str
    tool: str
    images: tuple[BundledImage, ...]
    base: tuple[BaseBundle, ...] = ()
    carried: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    size: int = 0
    described: bool = field(default=True, compare=False)
    referrers: tuple[BundledReferrer, ...] = ()

    @property
    def is_delta(self) -> bool:
        """True when the bundle leaves out what base bundles hold."""
        return bool(self.base)

    @property
    def omitted(self) -> frozenset[str]:
        """The digests the images reference that this bundle does not carry."""
        return frozenset(self.references) - frozenset(self.carried)

    def to_json(self) -> bytes:
        """The bytes of ``regstore-bundle.json``."""
        doc = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "id": self.id,
            "created": self.created,
            "tool": self.tool,
            "size": self.size,
            "images": [i.to_json() for i in self.images],
            "base": [b.to_json() for b in self.base],
            "carried": list(self.carried),
            **({"referrers": [r.to_json() for r in self.referrers]} if self.referrers else {}),
            "references": list(self.references),
        }
        return json.dumps(doc, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> BundleManifest:
        """Parse ``regstore-bundle.json``; BundleInvalidError when it is not one."""
        try:
            doc = json.loads(raw.decode("utf-8"))
            if doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
                raise ValueError(f"mediaType is {doc.get('mediaType')!r}")
            images = tuple(
                BundledImage(
                    validate_name(str(i["name"])),
                    validate_tag(str(i["tag"])),
                    str(i["digest"]),
                    str(i["mediaType"]),
                    int(i["size"]),
                    int(i["carried"]),
                )
                for i in doc["images"]
            )
            base = tuple(
                BaseBundle(str(b["id"]), tuple(str(n) for n in b.get("images", [])))
                for b in doc.get("base", [])
            )
            return cls(
                id=str(doc["id"]),
                created=str(doc.get("created", "")),
                tool=str(doc.get("tool", "")),
                images=images,
                base=base,
                carried=tuple(str(d) for d in doc.get("carried", [])),
                references=tuple(str(d) for d in doc.get("references", [])),
                size=int(doc.get("size", 0)),
                referrers=tuple(BundledReferrer.from_json(r) for r in doc.get("referrers", [])),
            )
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            OverflowError,  # a size of 1e400 (inf) made an int
            RecursionError,  # a nesting bomb
        ) as exc:
            raise BundleInvalidError(f"{BUNDLE_MANIFEST_MEMBER} is malformed: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``bundle ls --json`` prints)."""
        return {
            "id": self.id,
            "created": self.created,
            "tool": self.tool,
            "size": self.size,
            "delta": self.is_delta,
            "described": self.described,
            "images": [_snake_case(i.to_json()) for i in self.images],
            "referrers": [_snake_case(r.to_json()) for r in self.referrers],
            "base": [b.to_json() for b in self.base],
            "blobs_carried": len(self.carried),
            "omitted": len(self.omitted),
        }


#: The bundle description's OCI-style keys, as regstore's other ``--json`` output names them
_SNAKE_KEYS = {"mediaType": "media_type", "artifactType": "artifact_type"}


def _snake_case(doc: dict[str, Any]) -> dict[str, Any]:
    """A described image or referrer with the keys every other ``--json`` output uses (the
    description inside the bundle keeps OCI's camelCase: bundles already written read it)."""
    return {_SNAKE_KEYS.get(key, key): value for key, value in doc.items()}


def bundle_id(
    images: list[tuple[str, str]], carried: list[str] | tuple[str, ...], base: list[str]
) -> str:
    """The id of a bundle's content (see the module docstring)."""
    doc = {"base": sorted(base), "carried": sorted(carried), "images": [list(i) for i in images]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
