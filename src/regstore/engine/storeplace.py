"""The store adapter: a repository of an object store as an image source and sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from regstore.errors import BlobNotFoundError, RegstoreError

if TYPE_CHECKING:
    from regstore.manifest import Descriptor, Manifest, Platform
    from regstore.retry import RetryBudget
    from regstore.store import ObjectStore

    from .blobs import BlobMove, Opener
    from .model import StoreImage
    from .options import TransferOptions
    from .places import ImageSource
    from .reporting import Reporter

__all__ = ["StorePlace"]


class StorePlace:
    """Repository ``image.name`` of ``image.store``, through the store's typed facade.

    Blobs are shared by every repository of a store (one key per digest and store), written
    by :func:`~.blobs.store_blob` (verified, resumable, each digest once across processes).
    """

    def __init__(self, image: StoreImage) -> None:
        self.store: ObjectStore = image.store
        self.name = image.name

    # -- as a source ---------------------------------------------------------------------------
    def manifest(self, reference: str) -> Manifest:
        """The manifest at ``reference``."""
        return self.store.manifest(self.name, reference)

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` points at, or None."""
        digest = self.store.manifest_digest(self.name, reference)
        return None if digest is None else str(digest)

    def has_blob(self, digest: str) -> bool:
        """True when the store holds the blob (whole and committed: shared by every
        repository); a dry run counts what a copy here would move."""
        return self.store.blob_exists(digest)

    def holds_image(
        self,
        digest: str,
        platforms: Sequence[Platform],
        source: ImageSource,
        *,
        blobs: bool = False,
    ) -> bool:
        """False when the image ``digest`` here lacks a part ``source`` would give a copy of it
        though both ends name the same digest: a child (of one of ``platforms``, of any
        platform when none are given) of an index a platform-filtered pull stored partial,
        which ``source`` holds; a blob ``verify`` moved aside (:meth:`ObjectStore.quarantined`)
        and nothing fetched again since; with ``blobs``, any blob or any child of an index it
        lacks. A source as partial as this store moves nothing more."""
        partial = self.store.is_partial(self.name, digest)
        # a damaged blob moved aside is missing for every image that has it, its tag unchanged
        lost = self.store.quarantined()
        if not partial and not blobs and not lost:
            return True
        try:
            return self._holds(digest, platforms, source, partial=partial, blobs=blobs, lost=lost)
        except RegstoreError:  # a part that cannot be read is no part held: the copy mends it
            return False

    def _holds(
        self,
        digest: str,
        platforms: Sequence[Platform],
        source: ImageSource,
        *,
        partial: bool,
        blobs: bool,
        lost: frozenset[str],
    ) -> bool:
        pending = [digest]
        while pending:
            manifest = self.store.manifest(self.name, pending.pop())
            held = (str(b.digest) for b in manifest.blobs)
            if not all(self.store.blob_exists(b) for b in held if blobs or b in lost):
                return False
            for child in manifest.manifests:
                if self.store.has_manifest(self.name, str(child.digest)):
                    pending.append(str(child.digest))
                    continue
                found = child.platform
                wanted = not platforms or (
                    found is not None and any(found.matches(p) for p in platforms)
                )
                if (wanted or not partial) and source.has_manifest(str(child.digest)):
                    return False
        return True

    def has_all_children(self, index: Manifest) -> bool:
        """False when a platform-filtered pull stored the index without some children."""
        return not self.store.is_partial(self.name, index.digest)

    def has_manifest(self, digest: str) -> bool:
        """True if the store has the manifest ``digest`` in this repository."""
        return self.store.has_manifest(self.name, digest)

    def blob_size(self, digest: str) -> int:
        """The blob's size; BlobNotFoundError when the store lacks it."""
        size = self.store.blob_size(digest)
        if size is None:
            raise BlobNotFoundError(self.name, digest)
        return size

    def opener(self, digest: str) -> Opener:
        """Readers of the complete blob from an offset."""
        layer = self.store.layer(digest)
        return lambda offset: layer.reader(offset)

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        """None: a store has no retry policy (the sink's default serves)."""
        return None

    def mount_origin(self) -> tuple[str, str] | None:
        """None: nothing mounts from a store."""
        return None

    def referrers(self, digest: str, artifact_types: Sequence[str]) -> list[Descriptor]:
        """The store's referrers index of ``digest`` (one lookup)."""
        return self.store.referrers(self.name, digest, artifact_types)

    # -- as a sink -----------------------------------------------------------------------------
    @property
    def needs_blob_sizes(self) -> bool:
        """False: a store learns an unannounced size from the stream (schema1)."""
        return False

    @property
    def accepts_partial_index(self) -> bool:
        """True: the store marks such an index partial."""
        return True

    @property
    def claims_reuse(self) -> bool:
        """True: each image that reuses a blob claims it (gc's grace counts from there)."""
        return True

    def blob_key(self, digest: str) -> tuple[object, ...]:
        """Per store: blobs are shared by its repositories."""
        return ("store", id(self.store), digest)

    def mount_sources(self, source: ImageSource, requested: Sequence[str]) -> tuple[str, ...]:
        """Nothing: a store copies what it lacks."""
        return ()

    def put_blob(
        self,
        desc: Descriptor,
        source: ImageSource,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
    ) -> BlobMove:
        """Store the blob unless the store has it, under the source's read budget."""
        from .blobs import store_blob  # (the blob machinery when a blob moves, not before)

        return store_blob(
            self.store,
            desc.digest,
            desc.size,
            source.opener(desc.digest),
            reporter,
            media_type=desc.media_type,
            budget=source.read_budget(desc),
        )

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        """Write the manifest (partial only for an index, and only while the repository lacks
        one of its children: platforms pulled one by one make it whole, not partial for
        ever)."""
        if partial and manifest.is_index:
            held = self.store.has_manifest
            partial = not all(held(self.name, str(c.digest)) for c in manifest.manifests)
        else:
            partial = False
        self.store.write_manifest(self.name, tag, manifest, partial=partial)

    def index_referrer(self, manifest: Manifest) -> None:
        """Make sure the subject's referrers index lists ``manifest`` (already stored)."""
        self.store.index_referrer(self.name, manifest)
