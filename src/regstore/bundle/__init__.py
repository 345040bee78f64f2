"""Air-gap bundles: many images in one verifiable OCI-layout tar, and deltas between them.

:func:`create_bundle` writes registry or store images into a bundle (``since=`` earlier
bundles: a delta leaving out what they hold); :func:`import_bundle` moves a bundle's images
into a registry or a store, refusing a delta whose base the target lacks before anything is
tagged; :func:`read_bundle` says what a bundle holds from its first members;
:func:`verify_bundle` re-hashes everything in it. The bundle is a place of the engine
(:mod:`.place`): creating and importing are transfers with the engine's plan, verification
and tag-last rule. The on-disk format is described in :mod:`.format`.
"""

from __future__ import annotations

from .api import (
    BundleInput,
    BundleProblem,
    BundleProblemKind,
    BundleVerifyReport,
    create_bundle,
    import_bundle,
    read_bundle,
    verify_bundle,
)
from .format import BaseBundle, BundledImage, BundledReferrer, BundleManifest
from .place import BundleImage

__all__ = [
    "BaseBundle",
    "BundleImage",
    "BundleInput",
    "BundleManifest",
    "BundleProblem",
    "BundleProblemKind",
    "BundleVerifyReport",
    "BundledImage",
    "BundledReferrer",
    "create_bundle",
    "import_bundle",
    "read_bundle",
    "verify_bundle",
]
