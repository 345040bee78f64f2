"""What the engine moves between (images in registries and stores) and what it reports back."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, get_args

from regstore.reference import Digest, is_digest, validate_name, validate_reference
from regstore.wire import BlobData, BlobSource, ManifestInfo, UploadSession, UploadStatus

if TYPE_CHECKING:
    from collections.abc import Iterator

    from regstore.manifest import Descriptor, Manifest
    from regstore.retry import RetryPolicy
    from regstore.store import ObjectStore

__all__ = [
    "BatchResult",
    "BlobSource",
    "Image",
    "ImageOutcome",
    "ImageStatus",
    "RegistryClient",
    "RegistryImage",
    "StoreImage",
    "TransferResult",
    "destination_tag",
    "image_text",
    "resolve_destination",
]


class RegistryClient(Protocol):
    """The part of :class:`regstore.client.Client` the engine uses (a test double may stand in).

    Every value crossing this seam is defined in :mod:`regstore.wire` (or is a manifest, a
    digest, a retry policy): the engine imports no part of the client. ``retry_policy`` bounds
    the retries of each blob the engine pulls or pushes (one budget per blob, spent by the
    client's requests made while it is active).
    """

    @property
    def registry(self) -> str:
        """The registry's name as ``host[:port]``."""
        ...

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every request to this registry."""
        ...

    def get_image_manifest(self, name: str, reference: str) -> Manifest:
        """The manifest of ``name`` at ``reference`` (a tag or digest), its bytes as sent."""
        ...

    def head_manifest(self, name: str, reference: str) -> ManifestInfo | None:
        """What a ``HEAD`` tells of the manifest; None or ImageManifestNotFoundError if absent."""
        ...

    def put_image_manifest(self, name: str, reference: str, manifest: Manifest) -> Digest:
        """Store ``manifest`` under ``reference`` (a tag or its digest); its digest."""
        ...

    def list_image_tags(self, name: str, *, complete: bool = False) -> list[str]:
        """Every tag of repository ``name``; with ``complete``, an error rather than the tags
        a registry's paging let it read when it could not read to the end."""
        ...

    def referrers(
        self, name: str, digest: str, artifact_type: str | Collection[str] | None = ...
    ) -> list[Descriptor]:
        """The manifests of ``name`` whose ``subject`` is ``digest`` (API or tag schema)."""
        ...

    def blob_length(self, name: str, digest: str) -> int:
        """The blob's size, or -1 when the repository does not have it."""
        ...

    def get_blob(self, name: str, digest: str, byte_offset: int = 0) -> BlobSource:
        """A stream of the blob from ``byte_offset`` (or from 0: see ``BlobSource.offset``)."""
        ...

    def initiate_blob_upload(
        self, name: str, *, mount: str | None = ..., from_: str | None = ...
    ) -> UploadSession:
        """Start an upload (or mount ``mount`` from repository ``from_``)."""
        ...

    def get_blob_upload_status(self, location: str) -> UploadStatus:
        """Where the upload at ``location`` stands."""
        ...

    def upload_blob(self, location: str, data: BlobData, length: int, digest: str) -> Digest:
        """Send the whole blob in one ``PUT``; its digest."""
        ...

    def upload_blob_chunk(
        self, location: str, chunk: BlobData, length: int, start_byte: int
    ) -> str:
        """Send ``length`` bytes at ``start_byte``; the location to use next."""
        ...

    def finish_chunked_blob_upload(self, location: str, length: int, digest: str) -> Digest:
        """Close a chunked upload of ``length`` bytes; its digest."""
        ...

    def cancel_blob_upload(self, location: str) -> None:
        """Abandon the upload at ``location``."""
        ...


def _check(name: str, reference: str | None) -> None:
    validate_name(name)
    if reference is not None:
        validate_reference(reference)


@dataclass(frozen=True)
class RegistryImage:
    """An image in a registry repository: ``reference`` is a tag or a digest.

    As a destination, ``reference`` None means "the source's tag".
    """

    client: RegistryClient
    name: str
    reference: str | None = None

    def __post_init__(self) -> None:
        _check(self.name, self.reference)

    def __str__(self) -> str:
        return image_text(self.client.registry + "/" + self.name, self.reference)


@dataclass(frozen=True)
class StoreImage:
    """An image in an object store: ``reference`` is a tag or a digest (None: source's tag)."""

    store: ObjectStore
    name: str
    reference: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.store, (str, bytes, os.PathLike)):  # what it failed on was far away
            raise TypeError(
                f"a store is an ObjectStore (regstore.open_store({self.store!r})), not a URL"
            )
        _check(self.name, self.reference)

    def __str__(self) -> str:
        return image_text(f"store:{self.name}", self.reference)


#: The image values a transfer moves between; each names its place (see :mod:`.places`).
#: ``transfer_many`` takes pairs of them; ``copy`` takes any two.
Image: TypeAlias = RegistryImage | StoreImage

#: What happened to one image of a batch (:attr:`ImageOutcome.status`).
ImageStatus = Literal["copied", "skipped", "failed", "cancelled", "pruned"]
_IMAGE_STATUSES: frozenset[str] = frozenset(get_args(ImageStatus))


def image_text(base: str, reference: str | None) -> str:
    """How an image is written: ``base`` (``host/name``, ``store:name``) with ``:tag`` or
    ``@digest`` (nothing for None)."""
    if reference is None:
        return base
    return f"{base}@{reference}" if is_digest(reference) else f"{base}:{reference}"


@dataclass
class TransferResult:
    """What one image transfer did.

    ``transferred``/``skipped``/``mounted`` list blob digests; ``bytes_moved`` counts blob bytes
    that crossed the wire into the destination (resumed bytes not counted twice); ``partial``
    says a platform filter left index children out; ``unchanged`` that the destination tag
    already pointed at the same manifest and nothing moved (an image whose new referrers
    moved is not unchanged); ``quarantined`` lists blobs a
    repair found damaged in the destination and moved aside before moving them again.
    ``rewritten_from`` is set when the destination could not hold a partial index (a
    registry): it names the source index, and ``manifest_digest`` is what the destination got
    instead (the one platform's own manifest, or a new index of the platforms taken).
    """

    source: str
    destination: str
    #: the digest of the image's top manifest at the destination (set on every success)
    manifest_digest: Digest
    media_type: str = ""
    transferred: list[Digest] = field(default_factory=list)
    skipped: list[Digest] = field(default_factory=list)
    mounted: list[Digest] = field(default_factory=list)
    manifests: list[Digest] = field(default_factory=list)
    bytes_moved: int = 0
    partial: bool = False
    unchanged: bool = False
    quarantined: list[str] = field(default_factory=list)
    rewritten_from: Digest | None = None
    #: referrer manifests (signatures, SBOMs, attestations) written with the image
    referrers: list[Digest] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "source": self.source,
            "destination": self.destination,
            "manifest_digest": str(self.manifest_digest),
            "media_type": self.media_type,
            "transferred": list(self.transferred),
            "skipped": list(self.skipped),
            "mounted": list(self.mounted),
            "manifests": list(self.manifests),
            "bytes_moved": self.bytes_moved,
            "partial": self.partial,
            "unchanged": self.unchanged,
            "quarantined": list(self.quarantined),
            "rewritten_from": str(self.rewritten_from) if self.rewritten_from else None,
            "referrers": [str(d) for d in self.referrers],
        }


@dataclass
class ImageOutcome:
    """The outcome of one image in a batch: copied, skipped (unchanged), failed (why),
    cancelled (not attempted: an earlier image failed and the batch was told not to go on), or
    pruned (a sync deleted its destination tag: the source no longer has it).
    ``worker`` names the cluster worker that moved the image (``regstore sync --workers``);
    None (and left out of :meth:`as_dict`) for an image moved or checked by this process.
    """

    source: str
    destination: str
    status: ImageStatus
    result: TransferResult | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    worker: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out: dict[str, Any] = {
            "source": self.source,
            "destination": self.destination,
            "status": self.status,
            "error": self.error,
            "result": self.result.as_dict() if self.result else None,
        }
        if self.worker is not None:
            out["worker"] = self.worker
        return out


@dataclass
class BatchResult:
    """The outcomes of a many-image transfer, in the order the jobs were given."""

    outcomes: list[ImageOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every image was copied, skipped or pruned (none failed or was cancelled)."""
        return all(o.status in ("copied", "skipped", "pruned") for o in self.outcomes)

    def by_status(self, status: ImageStatus) -> list[ImageOutcome]:
        """The outcomes with ``status``; ValueError for a status no outcome can have (a typo
        would otherwise quietly find nothing)."""
        if status not in _IMAGE_STATUSES:
            known = ", ".join(sorted(_IMAGE_STATUSES))
            raise ValueError(f"unknown image status {status!r} (one of {known})")
        return [o for o in self.outcomes if o.status == status]

    @property
    def results(self) -> list[TransferResult]:
        """The results of the images that were copied or skipped (unchanged), in job order:
        the success path, with no None to check."""
        return [o.result for o in self.outcomes if o.result is not None]

    @property
    def bytes_moved(self) -> int:
        """Blob bytes moved across all images."""
        return sum(o.result.bytes_moved for o in self.outcomes if o.result)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form with per-status counts."""
        return {
            "ok": self.ok,
            "copied": len(self.by_status("copied")),
            "skipped": len(self.by_status("skipped")),
            "failed": len(self.by_status("failed")),
            "cancelled": len(self.by_status("cancelled")),
            "pruned": len(self.by_status("pruned")),
            "bytes_moved": self.bytes_moved,
            "images": [o.as_dict() for o in self.outcomes],
        }

    def __iter__(self) -> Iterator[ImageOutcome]:
        return iter(self.outcomes)


def destination_tag(source: Image, dest: Image) -> str | None:
    """The tag an image moved from ``source`` gets at ``dest`` (the one rule of every command).

    ``dest``'s own reference when it has one (a digest: no tag); else the source's tag when
    the source names one; else none (an image taken by digest lands untagged, by digest).
    """
    if dest.reference is not None:
        return None if is_digest(dest.reference) else dest.reference
    if source.reference is not None and not is_digest(source.reference):
        return source.reference
    return None


def resolve_destination(source: Image, dest: Image) -> Image:
    """``dest`` with the reference the transfer gives it: its own, else the source's tag (see
    :func:`destination_tag`); unchanged when neither names one."""
    if dest.reference is not None:
        return dest
    tag = destination_tag(source, dest)
    return dest if tag is None else dataclasses.replace(dest, reference=tag)
