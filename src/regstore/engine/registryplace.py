"""The registry adapter: a repository of a registry as an image source and sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from regstore.errors import BlobNotFoundError, NotFoundError

if TYPE_CHECKING:
    from regstore.manifest import Descriptor, Manifest
    from regstore.retry import RetryBudget

    from .blobs import BlobMove, Opener
    from .model import RegistryClient, RegistryImage
    from .options import TransferOptions
    from .places import ImageSource
    from .reporting import Reporter

__all__ = ["RegistryPlace"]


class RegistryPlace:
    """Repository ``image.name`` of ``image.client``'s registry, through the client only.

    Blobs are read with ranged GETs under the client's retry policy and written by
    :func:`~.blobs.upload_blob` (HEAD, mount, monolithic or chunked); a registry keeps blobs
    per repository, so the same digest in another repository is another write.
    """

    def __init__(self, image: RegistryImage) -> None:
        self.client: RegistryClient = image.client
        self.name = image.name

    # -- as a source ---------------------------------------------------------------------------
    def manifest(self, reference: str) -> Manifest:
        """The manifest at ``reference``."""
        return self.client.get_image_manifest(self.name, reference)

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` points at (a HEAD), or None."""
        try:
            info = self.client.head_manifest(self.name, reference)
        except NotFoundError:
            return None
        return None if info is None else str(info.digest)

    def manifest_digests(self, references: Sequence[str]) -> dict[str, str | None]:
        """The digests of many references at once (the client's ``head_manifests``, when it
        has one), each None when absent; a reference missing from the answer was
        not learned (ask :meth:`manifest_digest`)."""
        bulk = getattr(self.client, "head_manifests", None)
        if bulk is None:
            return {}
        return {
            reference: None if info is None else str(info.digest)
            for reference, info in bulk(self.name, references).items()
        }

    def has_all_children(self, index: Manifest) -> bool:
        """Always True: a registry refuses an index whose manifests are missing."""
        return True

    def has_manifest(self, digest: str) -> bool:
        """True if the registry has the manifest ``digest`` (a HEAD)."""
        return self.manifest_digest(digest) is not None

    def blob_size(self, digest: str) -> int:
        """The blob's size (a HEAD); BlobNotFoundError when the repository lacks it."""
        size = self.client.blob_length(self.name, digest)
        if size < 0:
            raise BlobNotFoundError(self.name, digest)
        return size

    def has_blob(self, digest: str) -> bool:
        """True when the repository holds the blob (a HEAD); a dry run counts what a copy
        here would move (a mount from another repository would move no bytes either)."""
        return self.client.blob_length(self.name, digest) >= 0

    def opener(self, digest: str) -> Opener:
        """Ranged GETs of the blob."""
        client, name = self.client, self.name
        return lambda offset: client.get_blob(name, digest, offset)

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        """The retry budget of reading one blob from here, under the client's policy."""
        from .blobs import pull_budget  # (the blob machinery when a blob moves, not before)

        return pull_budget(self.client, self.name, desc.digest, desc.size)

    def mount_origin(self) -> tuple[str, str] | None:
        """This registry and repository: a sink on the same registry mounts from here."""
        return (self.client.registry, self.name)

    def referrers(self, digest: str, artifact_types: Sequence[str]) -> list[Descriptor]:
        """The referrers API, or the referrers tag schema where the registry lacks it."""
        return self.client.referrers(self.name, digest, tuple(artifact_types) or None)

    # -- as a sink -----------------------------------------------------------------------------
    @property
    def needs_blob_sizes(self) -> bool:
        """True: an upload declares its length up front."""
        return True

    @property
    def accepts_partial_index(self) -> bool:
        """False: a registry refuses an index whose manifests are missing."""
        return False

    @property
    def claims_reuse(self) -> bool:
        """False: a registry collects its own garbage; a blob pushed once in a batch stays."""
        return False

    def blob_key(self, digest: str) -> tuple[object, ...]:
        """Per client and repository: registries keep blobs per repository."""
        return ("registry", id(self.client), self.name, digest)

    def mount_sources(self, source: ImageSource, requested: Sequence[str]) -> tuple[str, ...]:
        """``requested``, plus the source's repository when it is on this registry (a mount
        then moves nothing)."""
        origin = source.mount_origin()
        mount_from = tuple(requested)
        if origin is not None and origin[0] == self.client.registry and origin[1] not in mount_from:
            mount_from += (origin[1],)
        return mount_from

    def put_blob(
        self,
        desc: Descriptor,
        source: ImageSource,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
    ) -> BlobMove:
        """Upload the blob unless the repository has it or can mount it."""
        from .blobs import upload_blob  # (the blob machinery when a blob moves, not before)

        # The upload's own budget covers reading the source too (see upload_blob).
        return upload_blob(
            self.client,
            self.name,
            desc.digest,
            desc.size,
            source.opener(desc.digest),
            reporter,
            media_type=desc.media_type,
            mount_from=mount_from,
            chunk_size=options.chunk_size,
            monolithic_threshold=options.monolithic_threshold,
            # a registry's bytes are not hashed on the way (stores and bundles check theirs)
            read_again=isinstance(source, RegistryPlace),
        )

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        """PUT the manifest under ``tag``, or under its digest (a referrer's PUT also keeps
        its subject's referrers tag index when the registry does not process ``subject``)."""
        self.client.put_image_manifest(self.name, tag or str(manifest.digest), manifest)

    def index_referrer(self, manifest: Manifest) -> None:
        """Make sure the subject's referrers list ``manifest`` (already pushed), when the
        client can (``index_referrer``; a test double may lack it)."""
        index_referrer = getattr(self.client, "index_referrer", None)
        if index_referrer is not None:
            index_referrer(self.name, manifest)
