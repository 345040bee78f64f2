"""What travels with an image when referrers are asked for: the manifests whose ``subject`` is
one of its manifests (through :meth:`ImageSource.referrers`: the referrers API, the tag schema,
or a store's index) and cosign's tags ``sha256-<hex>.sig``/``.att``/``.sbom`` beside it.

Discovery only; :mod:`.transfer` moves what is found with the same guarantees as images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regstore.referrers import sigstore_tags

if TYPE_CHECKING:
    from regstore.manifest import Manifest

    from .places import ImageSource

__all__ = ["Referrer", "find_referrers", "has_wanted_type"]


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
