"""The bundle as a place of the engine: an image sink writing into a bundle's tar and an image
source reading out of one, registered with :func:`regstore.engine.places.register_place`.

``bundle create`` is a transfer from registries or stores into a :class:`BundleSink`;
``bundle import`` a transfer from a :class:`BundleSource` into a registry or store. The
engine's plan, dedup, verification, children-before-parents order and tag-last rule do the
rest: the sink appends each blob and manifest as a tar member (manifests after what they
reference, because the engine writes them after), and records the tag of a top manifest for
``index.json``. Any manifest the engine hands over is carried the same way (an artifact or a
referrer is manifests and blobs too): with ``referrers=True`` the engine writes each referrer
after its subject, and a cosign tag is recorded as ``NAME:sha256-<hex>.sig``. Read back, the
source answers :meth:`~BundleSource.referrers` and those tags from the bundle, so an import
with ``referrers=True`` carries them on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from regstore.engine.blobs import BlobMove, Opener
from regstore.engine.places import register_place, source_of
from regstore.errors import BlobNotFoundError, ImageManifestNotFoundError
from regstore.events import EventKind
from regstore.reference import is_digest
from regstore.retry import RetryPolicy

from .archive import BundleWriter
from .contents import OpenBundle

if TYPE_CHECKING:
    from regstore.engine.model import Image
    from regstore.engine.options import TransferOptions
    from regstore.engine.places import ImageSource
    from regstore.engine.reporting import Reporter
    from regstore.manifest import Descriptor, Manifest
    from regstore.retry import RetryBudget

__all__ = ["BundleImage", "BundleSink", "BundleSource"]


@dataclass(frozen=True)
class BundleImage:
    """An image in a bundle: ``name`` and ``reference`` (tag or digest) as ``index.json``
    names it.

    ``bundle`` is a :class:`~.archive.BundleWriter` when the image is written (a destination)
    and an :class:`~.contents.OpenBundle` when it is read (a source). ``fallback`` (a source
    only) is where the manifests a delta leaves out are read from, in order: repositories of
    the import's target, which has them from the base bundle.
    """

    bundle: BundleWriter | OpenBundle = field(compare=False)
    name: str
    reference: str | None = None
    fallback: tuple[Image, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        base = f"bundle:{self.name}"
        if self.reference is None:
            return base
        return (
            f"{base}@{self.reference}" if is_digest(self.reference) else f"{base}:{self.reference}"
        )


class BundleSink:
    """Writes an image into a bundle's tar: blobs streamed in (verified), manifests as their
    exact bytes, the tag recorded for ``index.json``. Base bundles' content is left out."""

    def __init__(self, image: BundleImage) -> None:
        if not isinstance(image.bundle, BundleWriter):
            raise TypeError(f"{image} is read from a bundle, not written into one")
        self.writer = image.bundle
        self.name = image.name

    @property
    def needs_blob_sizes(self) -> bool:
        """True: a tar header carries the size before the bytes."""
        return True

    @property
    def accepts_partial_index(self) -> bool:
        """False: every image of a bundle is complete, so skopeo can read any of them (a
        platform-filtered index becomes its one child, or a new index of those taken)."""
        return False

    @property
    def claims_reuse(self) -> bool:
        """False: a tar being written has no gc."""
        return False

    def blob_key(self, digest: str) -> tuple[object, ...]:
        """Per bundle: a blob is carried once."""
        return ("bundle", id(self.writer), digest)

    def manifest_digest(self, reference: str) -> str | None:
        """None: a bundle being written holds no earlier tags."""
        return None

    def mount_sources(self, source: ImageSource, requested: Sequence[str]) -> tuple[str, ...]:
        """Nothing mounts into a tar."""
        return ()

    def put_blob(
        self,
        desc: Descriptor,
        source: ImageSource,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
    ) -> BlobMove:
        """Append the blob unless the bundle carries it or a base bundle holds it."""
        digest = str(desc.digest)
        if self.writer.carries(digest):
            reporter.emit(EventKind.SKIPPED, digest, total=desc.size, media_type=desc.media_type)
            return BlobMove(digest, "skipped")
        reporter.emit(
            EventKind.STARTED, digest, total=desc.size, offset=0, media_type=desc.media_type
        )
        position = [0]

        def progress(n: int) -> None:
            position[0] += n
            if reporter.active:
                reporter.emit(
                    EventKind.PROGRESS, digest, total=desc.size, offset=position[0], nbytes=n
                )

        try:
            moved = self.writer.add_blob(
                digest, desc.size, source.opener(digest), progress, source.read_budget(desc)
            )
        except BaseException as exc:
            reporter.emit(EventKind.FAILED, digest, total=desc.size, error=str(exc))
            raise
        if moved == 0:
            reporter.emit(EventKind.SKIPPED, digest, total=desc.size, media_type=desc.media_type)
            return BlobMove(digest, "skipped")
        reporter.emit(EventKind.VERIFIED, digest, total=desc.size, media_type=desc.media_type)
        return BlobMove(digest, "transferred", moved)

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        """Append the manifest's bytes (unless carried or in a base); record ``name:tag``."""
        self.writer.add_manifest(str(manifest.digest), manifest.raw)
        if tag is not None:
            self.writer.tag(f"{self.name}:{tag}", str(manifest.digest))


class BundleSource:
    """Reads an image out of a bundle: manifests verified against their digests, blobs
    streamed from the tar and verified as they pass. Manifests a delta leaves out are read
    from ``fallback`` (the target already holding them)."""

    def __init__(self, image: BundleImage) -> None:
        if not isinstance(image.bundle, OpenBundle):
            raise TypeError(f"{image} is written into a bundle, not read from one")
        self.bundle = image.bundle
        self.name = image.name
        self._fallback = [source_of(f) for f in image.fallback]

    def _digest_of(self, reference: str) -> str | None:
        if is_digest(reference):
            return reference
        entry = self.bundle.entry(self.name, reference)
        if entry is not None:
            return str(entry.descriptor.digest)
        tagged = self.bundle.referrer_tag(self.name, reference)  # cosign's sha256-<hex>.sig
        return None if tagged is None else str(tagged.digest)

    def manifest(self, reference: str) -> Manifest:
        """The manifest at ``reference``: from the tar, else (a delta) from the fallback."""
        digest = self._digest_of(reference)
        if digest is None:
            raise ImageManifestNotFoundError(f"bundle {self.bundle.url}: {self.name}", reference)
        if self.bundle.carries(digest):
            return self.bundle.manifest(digest)
        for place in self._fallback:
            if place.has_manifest(digest):
                return place.manifest(digest)
        raise ImageManifestNotFoundError(f"bundle {self.bundle.url}: {self.name}", digest)

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` points at in the bundle's index."""
        return self._digest_of(reference)

    def has_all_children(self, index: Manifest) -> bool:
        """True: a bundle's images are complete (a delta's rest is at the target)."""
        return True

    def has_manifest(self, digest: str) -> bool:
        """True if the tar, or the fallback, has the manifest."""
        if self.bundle.carries(digest):
            return True
        return any(place.has_manifest(digest) for place in self._fallback)

    def blob_size(self, digest: str) -> int:
        """The blob's size in the tar; BlobNotFoundError when the tar does not carry it."""
        size = self.bundle.reader.blob_size(digest)
        if size is None:
            raise BlobNotFoundError(f"bundle {self.bundle.url}", digest)
        return size

    def opener(self, digest: str) -> Opener:
        """Ranged reads of the tar member (verified when read from its start)."""
        return self.bundle.reader.opener(digest)

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        """No retries: a tar member that ends before the size its manifest states ends
        there again when reread (what breaks reading the tar itself is no transient failure
        of the engine's kind either), so an early end is the final verdict."""
        return RetryPolicy(retries=0).budget(f"reading blob {desc.digest} from {self.bundle.url}")

    def mount_origin(self) -> tuple[str, str] | None:
        """None: nothing mounts from a tar."""
        return None

    def referrers(self, digest: str, artifact_types: Sequence[str]) -> list[Descriptor]:
        """The referrers of ``digest`` the bundle carries for this repository (listed in its
        bundle manifest, their descriptors from ``index.json``); none for a bundle created
        without referrers or one regstore did not write."""
        return self.bundle.referrers(self.name, digest, artifact_types)


def _source(image: BundleImage) -> ImageSource:
    return BundleSource(image)


register_place(BundleImage, source=_source, sink=BundleSink)
