"""What travels with an image when referrers are asked for: the manifests whose ``subject`` is
one of its manifests (through :meth:`ImageSource.referrers`: the referrers API, the tag schema,
or a store's index) and cosign's tags ``sha256-<hex>.sig``/``.att``/``.sbom`` beside it.

Discovery only; :mod:`.transfer` moves what is found with the same guarantees as images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regstore.referrers import SIGSTORE_SUFFIXES, sigstore_tags

from .places import source_of

if TYPE_CHECKING:
    from regstore.manifest import Manifest

    from .model import Image
    from .places import ImageSource

log = logging.getLogger("regstore.engine")

__all__ = [
    "MAX_TREE_DEPTH",
    "Referrer",
    "ReferrerNode",
    "ReferrerTree",
    "find_referrers",
    "has_wanted_type",
    "referrer_tree",
]

#: What cosign's tag suffixes hold.
_SIGSTORE_KINDS = dict(zip(SIGSTORE_SUFFIXES, ("signature", "attestation", "sbom"), strict=True))


@dataclass(frozen=True)
class Referrer:
    """A manifest found for a subject: read at ``reference``; written under ``tag`` (a sigstore
    tag) or by digest alone (``tag`` None: a ``subject`` referrer)."""

    digest: str
    reference: str
    tag: str | None = None


def find_referrers(
    source: ImageSource, subject: str, artifact_types: Sequence[str]
) -> list[Referrer]:
    """The referrers of ``subject`` in ``source`` (filtered by ``artifact_types`` when given),
    then its sigstore tags that exist (their types are checked once their manifests are read:
    see :func:`has_wanted_type`)."""
    found = [
        Referrer(str(d.digest), str(d.digest)) for d in source.referrers(subject, artifact_types)
    ]
    for tag in sigstore_tags(subject):
        digest = source.manifest_digest(tag)
        if digest is not None:
            found.append(Referrer(digest, tag, tag))
    return found


def has_wanted_type(manifest: Manifest, artifact_types: Sequence[str]) -> bool:
    """True when ``artifact_types`` is empty or names the manifest's ``artifactType``, its
    config's media type or one of its layers' (cosign's tags carry no ``artifactType``: a
    signature is known by its simple-signing layer)."""
    if not artifact_types:
        return True
    kinds = {manifest.artifact_type}
    if manifest.config is not None:
        kinds.add(manifest.config.media_type)
    kinds.update(layer.media_type for layer in manifest.layers)
    return any(t in kinds for t in artifact_types)


@dataclass
class ReferrerNode:
    """One referrer in a tree: its manifest, what kind of artifact it is, its size (manifest
    and blobs), the sigstore ``tag`` it was found under (None: through ``subject``) and its
    own referrers."""

    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    tag: str | None = None
    referrers: list[ReferrerNode] = field(default_factory=list)
    #: True when this node's own referrers were not read: it lies :data:`MAX_TREE_DEPTH` deep
    truncated: bool = False

    @property
    def kind(self) -> str:
        """``signature``/``attestation``/``sbom`` for a sigstore tag, else the artifact type
        (or the media type when it has none)."""
        if self.tag is not None:
            for suffix, kind in _SIGSTORE_KINDS.items():
                if self.tag.endswith(suffix):
                    return f"cosign {kind}"
        return self.artifact_type or self.media_type

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``regstore inspect --referrers --json``)."""
        return {
            "digest": self.digest,
            "kind": self.kind,
            "artifact_type": self.artifact_type,
            "media_type": self.media_type,
            "size": self.size,
            "tag": self.tag,
            "referrers": [r.as_dict() for r in self.referrers],
            **({"truncated": True} if self.truncated else {}),
        }


#: How deep :func:`referrer_tree` follows referrers of referrers (a signature of an SBOM of an
#: image is 2 deep); a longer chain is cut there, marked ``truncated``, with a warning.
MAX_TREE_DEPTH = 64


@dataclass
class ReferrerTree:
    """The referrers of an image (``referrers``) and of each child manifest of an index
    (``children``: digest → platform text and its referrers)."""

    digest: str
    media_type: str
    referrers: list[ReferrerNode] = field(default_factory=list)
    children: dict[str, tuple[str, list[ReferrerNode]]] = field(default_factory=dict)
    #: True when a chain of referrers was cut at :data:`MAX_TREE_DEPTH`
    truncated: bool = False
    #: the image's manifest as the tree read it (what ``inspect`` describes beside it)
    manifest: Manifest | None = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        """How many referrers the tree holds, at every depth."""

        def count(nodes: list[ReferrerNode]) -> int:
            return sum(1 + count(n.referrers) for n in nodes)

        return count(self.referrers) + sum(count(nodes) for _, nodes in self.children.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "digest": self.digest,
            "media_type": self.media_type,
            "referrers": [r.as_dict() for r in self.referrers],
            "manifests": [
                {"digest": d, "platform": p, "referrers": [r.as_dict() for r in nodes]}
                for d, (p, nodes) in self.children.items()
            ],
            **({"truncated": True} if self.truncated else {}),
        }


def referrer_tree(image: Image, artifact_types: Sequence[str] = ()) -> ReferrerTree:
    """Everything that refers to ``image`` (and to each manifest of an index), recursively:
    what ``referrers=True`` would move with it. Reads manifests only, never blobs."""
    if image.reference is None:
        raise ValueError(f"{image} needs a tag or digest")
    source = source_of(image)
    top = source.manifest(image.reference)
    seen = {str(top.digest)} | {str(c.digest) for c in top.manifests}

    truncated = False

    def walk(subject: str, depth: int = 1) -> list[ReferrerNode]:
        nonlocal truncated
        nodes: list[ReferrerNode] = []
        for found in find_referrers(source, subject, artifact_types):
            if found.digest in seen:
                continue
            seen.add(found.digest)
            manifest = source.manifest(found.reference)
            if found.tag is not None and not has_wanted_type(manifest, artifact_types):
                continue
            artifact_type = manifest.artifact_type or (
                manifest.config.media_type if manifest.config is not None else None
            )
            size = manifest.size + sum(max(b.size, 0) for b in manifest.blobs)
            node = ReferrerNode(
                str(manifest.digest), manifest.media_type, artifact_type, size, found.tag
            )
            if depth < MAX_TREE_DEPTH:
                node.referrers = walk(str(manifest.digest), depth + 1)
            elif find_referrers(source, str(manifest.digest), artifact_types):
                node.truncated = truncated = True
            nodes.append(node)
        return nodes

    tree = ReferrerTree(str(top.digest), top.media_type, walk(str(top.digest)), manifest=top)
    for child in top.manifests:
        nodes = walk(str(child.digest))
        if nodes:
            tree.children[str(child.digest)] = (str(child.platform or "-"), nodes)
    if truncated:
        tree.truncated = True
        log.warning(
            "the referrers of %s form a chain deeper than %d; the tree is cut there",
            image,
            MAX_TREE_DEPTH,
        )
    return tree
