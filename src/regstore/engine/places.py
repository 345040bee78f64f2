"""Places images move between: the :class:`ImageSource` and :class:`ImageSink` protocols, and
the one table that finds the adapter for an image.

The transfer loop (:mod:`.transfer`) knows only these two protocols. Each kind of place is one
adapter class, written against them and registered here for the image value that names such a
place: a registry repository (:class:`~.model.RegistryImage` →
:class:`~.registryplace.RegistryPlace`) and a store repository (:class:`~.model.StoreImage` →
:class:`~.storeplace.StorePlace`). A new kind of place — an OCI-layout bundle, a cluster
worker — is one more image value and one more adapter, registered with :func:`register_place`;
nothing in the transfer loop changes.

An adapter is made per image transfer (cheap: it holds the client or store and the repository
name) and used from the blob pool's threads, so its methods must be thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import singledispatch
from typing import TYPE_CHECKING, Protocol, TypeVar

from regstore.errors import DamagedTagError, ManifestInvalidError

from .model import RegistryImage, StoreImage
from .registryplace import RegistryPlace
from .storeplace import StorePlace

if TYPE_CHECKING:
    from regstore.manifest import Descriptor, Manifest
    from regstore.retry import RetryBudget

    from .blobs import BlobMove, Opener
    from .options import TransferOptions
    from .reporting import Reporter

__all__ = [
    "ImageSink",
    "ImageSource",
    "destination_digest",
    "register_place",
    "sink_of",
    "source_of",
]


class ImageSource(Protocol):
    """A repository images are read from: its manifests, and streams of its blobs.

    Raises the :mod:`regstore.errors` of the place (ImageManifestNotFoundError,
    BlobNotFoundError, TransportError, ...). ``name`` is the repository, for messages.
    """

    @property
    def name(self) -> str:
        """The repository, as errors name it."""
        ...

    def manifest(self, reference: str) -> Manifest:
        """The manifest at ``reference`` (a tag or digest), its exact bytes parsed.

        Called from several threads at once: the children of an index are read ahead
        (``engine/manifestreads.py``), as blobs are moved, concurrently.
        """
        ...

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` points at, or None when there is no such manifest."""
        ...

    def has_all_children(self, index: Manifest) -> bool:
        """False when this place holds ``index`` without some of its manifests on purpose (a
        platform-filtered pull); the transfer then leaves out those it does not have."""
        ...

    def has_manifest(self, digest: str) -> bool:
        """True if the manifest ``digest`` is here (asked only when not all children are)."""
        ...

    def blob_size(self, digest: str) -> int:
        """The blob's size in bytes; BlobNotFoundError when it is not here."""
        ...

    def opener(self, digest: str) -> Opener:
        """``opener(offset)`` opens a :class:`~regstore.wire.BlobSource` of the blob there."""
        ...

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        """The retry budget reading one blob from here spends (None: the sink's default)."""
        ...

    def mount_origin(self) -> tuple[str, str] | None:
        """``(registry, repository)`` when this place is a registry repository whose blobs a
        sink on the same registry can mount instead of copying; else None."""
        ...

    def referrers(self, digest: str, artifact_types: Sequence[str]) -> list[Descriptor]:
        """The manifests here whose ``subject`` is ``digest`` (of ``artifact_types`` only,
        when given): signatures, SBOMs, attestations."""
        ...


class ImageSink(Protocol):
    """A repository images are written to: blobs first, manifests after, the tag last.

    ``put_blob`` must make the blob exist once, verified, whatever else writes it at the same
    time; ``put_manifest`` is called only after every blob and child manifest it references.
    """

    @property
    def needs_blob_sizes(self) -> bool:
        """True when a blob's size must be known before it is written (a registry upload);
        the loop then asks the source for sizes a manifest does not give (schema1)."""
        ...

    @property
    def accepts_partial_index(self) -> bool:
        """True when this place may hold an index without some of its manifests (a store
        marks it partial); False makes the transfer give it the one child taken, or a new index
        of the children taken (`transfer.fit_to_sink`)."""
        ...

    @property
    def claims_reuse(self) -> bool:
        """True when every image that reuses a blob already here must claim it itself (a store:
        the claim keeps gc off the blob for its grace, see ``ObjectStore.claim_blob``); a batch
        then shares a blob's move between images only while it is under way. False lets an
        image take a move another image of the batch finished (a registry: nothing to claim)."""
        ...

    def blob_key(self, digest: str) -> Hashable:
        """What makes two blob writes the same write: a blob moves once per key and batch."""
        ...

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` points at here, or None (for ``skip_unchanged``)."""
        ...

    def mount_sources(self, source: ImageSource, requested: Sequence[str]) -> tuple[str, ...]:
        """The repositories to ask for a cross-repository mount of ``source``'s blobs."""
        ...

    def put_blob(
        self,
        desc: Descriptor,
        source: ImageSource,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
    ) -> BlobMove:
        """Make the blob ``desc`` exist here, streamed from ``source`` (skipped when present)."""
        ...

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        """Write ``manifest`` (under ``tag`` when given); ``partial``: an index of which some
        manifests were left out on purpose."""
        ...


def destination_digest(sink: ImageSink, reference: str) -> str | None:
    """What ``reference`` names at a destination, to skip what is there already: None also for
    a tag whose link is damaged (DamagedTagError) or whose manifest bytes are
    (ManifestInvalidError), which name nothing usable, so the image is copied again and the
    tag and bytes written anew. A source read lets those errors through."""
    try:
        return sink.manifest_digest(reference)
    except (DamagedTagError, ManifestInvalidError):
        return None


@singledispatch
def source_of(image: object) -> ImageSource:
    """The :class:`ImageSource` adapter of ``image`` (a :class:`RegistryImage`, a
    :class:`StoreImage`, or an image value registered with :func:`register_place`)."""
    raise TypeError(f"no place is registered for {type(image).__name__} images")


@singledispatch
def sink_of(image: object) -> ImageSink:
    """The :class:`ImageSink` adapter of ``image`` (see :func:`source_of`)."""
    raise TypeError(f"no place is registered for {type(image).__name__} images")


_I = TypeVar("_I")


def register_place(
    image_type: type[_I],
    *,
    source: Callable[[_I], ImageSource] | None = None,
    sink: Callable[[_I], ImageSink] | None = None,
) -> None:
    """Make images of ``image_type`` readable through ``source(image)`` and writable through
    ``sink(image)`` (an adapter class usually serves as both). A place that is only read (or
    only written) registers one of them; the other way then raises TypeError."""
    if source is not None:
        source_of.register(image_type, source)
    if sink is not None:
        sink_of.register(image_type, sink)


register_place(RegistryImage, source=RegistryPlace, sink=RegistryPlace)
register_place(StoreImage, source=StorePlace, sink=StorePlace)
