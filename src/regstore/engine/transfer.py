"""Moving whole images: walk the manifests, move every blob once through one shared pool,
then write manifests children-first and the tag last.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from regstore.errors import (
    BlobNotFoundError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    NotFoundError,
    UnsupportedError,
)
from regstore.events import EventKind
from regstore.manifest import Descriptor, Manifest, Platform
from regstore.reference import Digest, is_digest
from regstore.retry import RetryBudget

from .blobs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MONOLITHIC_THRESHOLD,
    BlobMove,
    Opener,
    pull_budget,
    store_blob,
    upload_blob,
)
from .model import (
    BatchResult,
    ImageOutcome,
    RegistryClient,
    RegistryImage,
    StoreImage,
    TransferResult,
)
from .reporting import EventSink, Reporter

__all__ = [
    "CANCELLED",
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "Image",
    "TransferOptions",
    "transfer_image",
    "transfer_many",
]

log = logging.getLogger("regstore.engine")

Image = RegistryImage | StoreImage
#: Blobs moved at once (docker pulls 3 and pushes 5 at a time; the seed used a window of 4).
DEFAULT_CONCURRENCY = 4
#: The most blobs anyone may ask to move at once (--concurrency, a sync file's concurrency).
MAX_CONCURRENCY = 64
#: Why an image of a batch was not attempted.
CANCELLED = "not attempted: an earlier image failed (fail-fast)"
#: How deep indexes may nest (an index of indexes is legal, a cycle is hostile).
MAX_INDEX_DEPTH = 4


@dataclass(frozen=True)
class TransferOptions:
    """Knobs shared by every image of one operation."""

    platforms: tuple[Platform, ...] = ()
    mount_from: tuple[str, ...] = ()
    chunk_size: int = DEFAULT_CHUNK_SIZE
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD
    skip_unchanged: bool = False

    @classmethod
    def build(
        cls,
        platforms: Sequence[str | Platform] | None = None,
        mount_from: Sequence[str] = (),
        **kwargs: Any,
    ) -> TransferOptions:
        """Parse user-facing values (``"linux/amd64"``) into options."""
        parsed = tuple(p if isinstance(p, Platform) else Platform.parse(p) for p in platforms or ())
        return cls(platforms=parsed, mount_from=tuple(mount_from), **kwargs)


# -- the two kinds of places, behind one interface --------------------------------------------


class _RegistrySide:
    def __init__(self, image: RegistryImage) -> None:
        self.client: RegistryClient = image.client
        self.name = image.name

    def key(self, digest: str) -> tuple[object, ...]:
        # registries keep blobs per repository: the same digest elsewhere is another upload
        return ("registry", id(self.client), self.name, digest)

    def manifest(self, reference: str) -> Manifest:
        return self.client.get_image_manifest(self.name, reference)

    def has_all_children(self, index: Manifest) -> bool:
        return True  # a registry's index is whole: it refuses one with missing children

    def manifest_digest(self, reference: str) -> str | None:
        try:
            info = self.client.head_manifest(self.name, reference)
        except NotFoundError:
            return None
        return None if info is None else str(info.digest)

    def blob_size(self, digest: str) -> int:
        size = self.client.blob_length(self.name, digest)
        if size < 0:
            raise BlobNotFoundError(self.name, digest)
        return size

    def opener(self, digest: str) -> Opener:
        client, name = self.client, self.name
        return lambda offset: client.get_blob(name, digest, offset)

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        """The retry budget of reading one blob from here, under the client's policy."""
        return pull_budget(self.client, self.name, desc.digest, desc.size)

    def put_blob(
        self,
        desc: Descriptor,
        opener: Opener,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
        source: _Side,
    ) -> BlobMove:
        # The upload's own budget covers reading the source too (see upload_blob).
        return upload_blob(
            self.client,
            self.name,
            desc.digest,
            desc.size,
            opener,
            reporter,
            media_type=desc.media_type,
            mount_from=mount_from,
            chunk_size=options.chunk_size,
            monolithic_threshold=options.monolithic_threshold,
        )

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        self.client.put_image_manifest(self.name, tag or str(manifest.digest), manifest)


class _StoreSide:
    def __init__(self, image: StoreImage) -> None:
        self.store = image.store
        self.name = image.name

    def key(self, digest: str) -> tuple[object, ...]:
        return ("store", id(self.store), digest)

    def manifest(self, reference: str) -> Manifest:
        return self.store.manifest(self.name, reference)

    def has_all_children(self, index: Manifest) -> bool:
        # a platform-filtered pull stored the index without some children (on purpose)
        return not self.store.is_partial(self.name, index.digest)

    def has_manifest(self, digest: str) -> bool:
        return self.store.has_manifest(self.name, digest)

    def manifest_digest(self, reference: str) -> str | None:
        try:
            return str(self.store.manifest(self.name, reference).digest)
        except NotFoundError:
            return None

    def blob_size(self, digest: str) -> int:
        size = self.store.blob_size(digest)
        if size is None:
            raise BlobNotFoundError(self.name, digest)
        return size

    def opener(self, digest: str) -> Opener:
        layer = self.store.layer(digest)
        return lambda offset: layer.reader(offset)

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        return None  # a store has no retry policy: store_blob's default serves

    def put_blob(
        self,
        desc: Descriptor,
        opener: Opener,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
        source: _Side,
    ) -> BlobMove:
        return store_blob(
            self.store,
            desc.digest,
            desc.size,
            opener,
            reporter,
            media_type=desc.media_type,
            budget=source.read_budget(desc),
        )

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        self.store.write_manifest(self.name, tag, manifest, partial=partial and manifest.is_index)


_Side = _RegistrySide | _StoreSide


def _side(image: Image) -> _Side:
    return _RegistrySide(image) if isinstance(image, RegistryImage) else _StoreSide(image)


# -- the shared pool -----------------------------------------------------------------------


class _BlobScheduler:
    """One bounded pool for every blob of every image; each destination digest moves once."""

    def __init__(self, concurrency: int) -> None:
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="regstore-blob")
        self._futures: dict[tuple[object, ...], Future[BlobMove]] = {}
        self._lock = threading.Lock()

    def submit(
        self, key: tuple[object, ...], fn: Callable[[], BlobMove]
    ) -> tuple[Future[BlobMove], bool]:
        """The future moving ``key``, and whether this call created it (owns the bytes)."""
        with self._lock:
            existing = self._futures.get(key)
            if existing is not None and not (existing.done() and existing.exception()):
                return existing, False
            future = self._pool.submit(fn)
            self._futures[key] = future
            return future, True

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


# -- one image -----------------------------------------------------------------------------


@dataclass
class _Plan:
    top: Manifest
    children: list[Manifest] = field(default_factory=list)
    blobs: dict[str, Descriptor] = field(default_factory=dict)
    partial: bool = False


def _wanted(desc: Descriptor, platforms: tuple[Platform, ...]) -> bool:
    if not platforms:
        return True
    return desc.platform is not None and any(desc.platform.matches(p) for p in platforms)


def _plan(source: _Side, reference: str, options: TransferOptions) -> _Plan:
    top = source.manifest(reference)
    plan = _Plan(top)
    _add_manifest(source, top, plan, options, depth=0)
    return plan


def _add_manifest(
    source: _Side, manifest: Manifest, plan: _Plan, options: TransferOptions, depth: int
) -> None:
    for blob in manifest.blobs:
        known = plan.blobs.get(blob.digest)
        if known is not None and known.size != blob.size and min(known.size, blob.size) >= 0:
            raise ManifestInvalidError(
                f"blob {blob.digest} is referenced with sizes {known.size} and {blob.size}"
            )
        plan.blobs.setdefault(blob.digest, blob)
    if not manifest.is_index:
        return
    if depth >= MAX_INDEX_DEPTH:
        raise ManifestInvalidError(f"indexes nest deeper than {MAX_INDEX_DEPTH} levels")
    whole = source.has_all_children(manifest)
    for child_desc in manifest.manifests:
        if depth == 0 and not _wanted(child_desc, options.platforms):
            plan.partial = True
            continue
        if (
            not whole
            and isinstance(source, _StoreSide)
            and not source.has_manifest(child_desc.digest)
        ):
            plan.partial = True  # left out when it was pulled; it stays left out
            continue
        child = source.manifest(child_desc.digest)
        if child.media_type != child_desc.media_type and child_desc.media_type:
            log.debug(
                "child %s is %s, its descriptor says %s",
                child_desc.digest,
                child.media_type,
                child_desc.media_type,
            )
        _add_manifest(source, child, plan, options, depth + 1)
        if child.digest not in {c.digest for c in plan.children}:
            plan.children.append(child)
    if depth == 0 and options.platforms and not plan.children:
        wanted = ", ".join(str(p) for p in options.platforms)
        raise ImageManifestNotFoundError(
            source.name, f"{manifest.digest} (the index has no manifest for platform {wanted})"
        )


def _refuse_partial_push(source: Image, plan: _Plan) -> None:
    """Before any byte moves: a registry refuses an index whose manifests are missing."""
    have = ", ".join(
        f"{d.digest} ({d.platform or 'no platform'})"
        for d in plan.top.manifests
        if d.digest in {c.digest for c in plan.children}
    )
    raise UnsupportedError(
        f"{source} is an index of which only some manifests are taken ({have or 'none'}); a "
        f"registry refuses an index whose manifests are missing. Push one platform's manifest "
        f"by its digest instead, or take every platform"
    )


def _destination_tag(source: Image, dest: Image) -> str | None:
    if dest.reference is not None:
        return None if is_digest(dest.reference) else dest.reference
    if source.reference is not None and not is_digest(source.reference):
        return source.reference
    return None


def transfer_image(
    source: Image,
    dest: Image,
    *,
    options: TransferOptions,
    scheduler: _BlobScheduler,
    reporter: Reporter,
) -> TransferResult:
    """Move one image from ``source`` to ``dest`` using the shared ``scheduler``."""
    if source.reference is None:
        raise ValueError(f"the source {source} needs a tag or digest")
    src, dst = _side(source), _side(dest)
    tag = _destination_tag(source, dest)
    result = TransferResult(
        source=str(source),
        destination=str(dest) if dest.reference else f"{dest}:{tag}" if tag else str(dest),
    )

    if options.skip_unchanged and tag is not None:
        have = dst.manifest_digest(tag)
        if have is not None and have == src.manifest_digest(source.reference):
            result.manifest_digest = Digest(have)
            result.unchanged = True
            return result

    plan = _plan(src, source.reference, options)
    if (
        is_digest(source.reference)
        and plan.top.digest_with(Digest(source.reference).algorithm) != source.reference
    ):
        raise ManifestInvalidError(f"{source} returned a manifest with another digest")
    result.manifest_digest = plan.top.digest
    result.media_type = plan.top.media_type
    result.partial = plan.partial
    if plan.partial and isinstance(dest, RegistryImage):
        _refuse_partial_push(source, plan)

    mount_from = list(options.mount_from)
    if (
        isinstance(source, RegistryImage)
        and isinstance(dest, RegistryImage)
        and source.client.registry == dest.client.registry
        and source.name not in mount_from
    ):
        mount_from.append(source.name)  # same registry: a mount moves nothing

    submitted: list[tuple[Future[BlobMove], bool, Descriptor]] = []
    for desc in plan.blobs.values():
        opener = src.opener(desc.digest)

        def move(desc: Descriptor = desc, opener: Opener = opener) -> BlobMove:
            if desc.size < 0 and isinstance(dst, _RegistrySide):
                # schema1 carries no sizes; an upload needs one up front
                desc = dataclasses.replace(desc, size=src.blob_size(desc.digest))
            return dst.put_blob(desc, opener, reporter, options, mount_from, src)

        future, owner = scheduler.submit(dst.key(desc.digest), move)
        submitted.append((future, owner, desc))

    first_error: BaseException | None = None
    for future, owner, desc in submitted:
        try:
            move_result = future.result()
        except BaseException as exc:  # collect them all before failing: nothing is left running
            first_error = first_error or exc
            continue
        if not owner or move_result.status == "skipped":
            result.skipped.append(desc.digest)
        elif move_result.status == "mounted":
            result.mounted.append(desc.digest)
        else:
            result.transferred.append(desc.digest)
            result.bytes_moved += move_result.nbytes
    if first_error is not None:
        raise first_error

    for child in plan.children:
        dst.put_manifest(child, None, False)
        result.manifests.append(str(child.digest))
        reporter.emit(
            EventKind.MANIFEST, child.digest, total=child.size, media_type=child.media_type
        )
    dst.put_manifest(plan.top, tag, plan.partial)
    result.manifests.append(str(plan.top.digest))
    reporter.emit(
        EventKind.MANIFEST,
        plan.top.digest,
        total=plan.top.size,
        media_type=plan.top.media_type,
        tag=tag,
    )
    return result


def run_one(
    source: Image,
    dest: Image,
    operation: str,
    *,
    options: TransferOptions,
    concurrency: int,
    events: EventSink | None,
) -> TransferResult:
    """One image, its own pool; errors propagate."""
    scheduler = _BlobScheduler(concurrency)
    try:
        return transfer_image(
            source,
            dest,
            options=options,
            scheduler=scheduler,
            reporter=Reporter(operation, str(source), events),
        )
    finally:
        scheduler.shutdown()


def transfer_many(
    jobs: Sequence[tuple[Image, Image]],
    *,
    platforms: Sequence[str | Platform] | None = None,
    mount_from: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    events: EventSink | None = None,
    skip_unchanged: bool = True,
    keep_going: bool = True,
    operation: str = "copy",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
) -> BatchResult:
    """Move many images through one bounded blob pool; each digest moves once per destination.

    Images are planned in parallel (``concurrency`` at a time) and share the blob pool, so a
    sync gets parallelism across images, not only across the layers of one. A failed image does
    not stop the others: its outcome says why (``keep_going=False`` instead cancels the images
    not yet started once one fails). ``skip_unchanged`` makes a destination tag that already
    points at the source's manifest digest cost one HEAD and move nothing.
    """
    options = TransferOptions.build(
        platforms,
        mount_from,
        chunk_size=chunk_size,
        monolithic_threshold=monolithic_threshold,
        skip_unchanged=skip_unchanged,
    )
    scheduler = _BlobScheduler(concurrency)
    base = Reporter(operation, "", events)
    stop = threading.Event()

    def one(job: tuple[Image, Image]) -> ImageOutcome:
        source, dest = job
        if stop.is_set():
            return ImageOutcome(str(source), str(dest), "cancelled", error=CANCELLED)
        try:
            res = transfer_image(
                source,
                dest,
                options=options,
                scheduler=scheduler,
                reporter=base.for_image(str(source)),
            )
        except Exception as exc:  # one image never stops the others, whatever broke
            log.info("%s -> %s failed: %s", source, dest, exc)
            if not keep_going:
                stop.set()
            return ImageOutcome(str(source), str(dest), "failed", error=str(exc), exception=exc)
        status = "skipped" if res.unchanged else "copied"
        return ImageOutcome(str(source), res.destination, status, result=res)  # type: ignore[arg-type]

    images = ThreadPoolExecutor(
        max(1, min(concurrency, len(jobs) or 1)), thread_name_prefix="regstore-image"
    )
    try:
        outcomes = list(images.map(one, jobs))
    finally:
        images.shutdown(wait=True)
        scheduler.shutdown()
    return BatchResult(outcomes)
