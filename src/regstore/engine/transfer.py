"""Moving whole images: walk the manifests, move every blob once through one shared pool,
then write manifests children-first and the tag last.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from regstore.digest import digest_bytes, verify
from regstore.errors import (
    BlobNotFoundError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    PlatformNotFoundError,
    TransportError,
    UnsupportedError,
    UsageError,
)
from regstore.events import EventKind
from regstore.manifest import MAX_CONFIG_SIZE, Descriptor, Manifest, Platform
from regstore.reference import Digest, is_digest
from regstore.referrers import artifact_type_list
from regstore.retry import RetryPolicy
from regstore.safetext import escaped

from .blobs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MONOLITHIC_THRESHOLD,
    BlobMove,
    check_stated_size,
    retried,
)
from .interrupt import run_stoppable
from .lookahead import Known, look_ahead, unchanged, written_key
from .manifestreads import ManifestReads
from .model import (
    BatchResult,
    Image,
    ImageOutcome,
    ImageStatus,
    TransferResult,
    destination_tag,
    resolve_destination,
)
from .options import TransferOptions
from .places import ImageSink, ImageSource, destination_digest, sink_of, source_of
from .reporting import EventSink, Reporter

__all__ = [
    "CANCELLED",
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "Image",
    "ImagePlan",
    "TransferOptions",
    "destination_tag",
    "fit_to_sink",
    "image_workers",
    "plan_image",
    "resolve_destination",
    "transfer_image",
    "transfer_many",
]

log = logging.getLogger("regstore.engine")

#: Blobs moved at once (docker pulls 3 and pushes 5 at a time; the seed used a window of 4).
DEFAULT_CONCURRENCY = 4
#: The most blobs anyone may ask to move at once (--concurrency, a sync file's concurrency).
MAX_CONCURRENCY = 64
#: Why an image of a batch was not attempted.
CANCELLED = "not attempted: an earlier image failed (fail-fast)"
#: How deep indexes may nest (an index of indexes is legal, a cycle is hostile).
MAX_INDEX_DEPTH = 4


# -- the shared pool -----------------------------------------------------------------------


class _BlobScheduler:
    """One bounded pool for every blob of every image; each destination digest moves once.

    Images that want a blob while it moves share that move. After the move ended, an image
    shares it too unless the sink ``claims_reuse`` (a store): there it makes its own, which
    finds the blob present and claims it, because gc's grace must count from each image that
    reuses the blob, not from the first one, perhaps hours earlier in a long sync.
    """

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:  # (0 was taken for 1 without a word)
            raise UsageError(f"concurrency must be at least 1, not {concurrency}")
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="regstore-blob")
        self._futures: dict[Hashable, Future[BlobMove]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when the batch is interrupted (interrupt.check)

    def submit(
        self, key: Hashable, fn: Callable[[], BlobMove], *, share_finished: bool = True
    ) -> tuple[Future[BlobMove], bool]:
        """The future moving ``key``, and whether this call created it (owns the bytes). A move
        that failed is made again; one that finished is shared only with ``share_finished``."""
        with self._lock:
            existing = self._futures.get(key)
            if existing is not None and not (
                existing.done() and (existing.exception() or not share_finished)
            ):
                return existing, False
            future = self._pool.submit(run_stoppable, self._stop, fn)
            self._futures[key] = future
            return future, True

    def shutdown(self, *, cancel: bool = False) -> None:
        """Wait for the moves running; with ``cancel``, first cancel those not started (they
        never start, and no new one is taken) and stop those running at their next chunk."""
        if cancel:
            self._stop.set()
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=True)


# -- one image -----------------------------------------------------------------------------


@dataclass
class ImagePlan:
    """What moving one image moves: its top manifest, the child manifests taken (children
    before parents), every blob once (by digest), and whether an index's platforms were
    left out (``partial``)."""

    top: Manifest
    children: list[Manifest] = field(default_factory=list)
    blobs: dict[str, Descriptor] = field(default_factory=dict)
    partial: bool = False


def _wanted(desc: Descriptor, platforms: tuple[Platform, ...]) -> bool:
    if not platforms:
        return True
    return desc.platform is not None and any(desc.platform.matches(p) for p in platforms)


def plan_image(source: Image, options: TransferOptions) -> ImagePlan:
    """Read the manifests of ``source`` (at its reference) and plan their transfer: the
    children an index's platforms select (``options.platforms``), every blob once.

    Raises UsageError (a ValueError) when ``source`` has no reference,
    ImageManifestNotFoundError when no child matches the platforms, ManifestInvalidError for a
    hostile or inconsistent index, and what reading the manifests raises.
    """
    if source.reference is None:
        raise UsageError(f"the source {source} needs a tag or digest")
    return _plan(source_of(source), source.reference, options)


def _plan(
    source: ImageSource, reference: str, options: TransferOptions, *, check_platform: bool = True
) -> ImagePlan:
    """:func:`plan_image`'s work; without ``check_platform`` an image of one platform is taken
    whatever its platform (an image found unchanged, whose referrers alone are looked for)."""
    top = source.manifest(reference)
    if check_platform and options.platforms and not top.is_index:
        _check_image_platform(source, reference, top, options.platforms)
    plan = ImagePlan(top)
    planned = {str(top.digest)}
    _add_manifest(source, top, plan, options, 0, planned, ManifestReads(source, planned))
    return plan


def _check_image_platform(
    source: ImageSource, reference: str, manifest: Manifest, platforms: tuple[Platform, ...]
) -> None:
    """Raise PlatformNotFoundError when ``manifest``, an image of one platform, is of none of
    ``platforms`` as its config says: there is no index to choose from, and a mirror asked for
    arm64 must not hold amd64 under the tag. Taken as it is: an image whose config names no
    platform or no architecture, an artifact, a config larger than an image's."""
    config = manifest.platform_config
    if config is None:
        return
    found = Platform.from_config(_read_config(source, config))
    if found is None or not found.architecture or any(found.matches(p) for p in platforms):
        return
    raise PlatformNotFoundError(
        source.name, reference, [str(p) for p in platforms], [str(found)], single=True
    )


def _read_config(source: ImageSource, desc: Descriptor) -> bytes:
    """A config's bytes, checked against its digest and size; a read that breaks is tried
    again from the start under the source's retry budget for the blob."""
    budget = source.read_budget(desc) or RetryPolicy().budget(f"reading config {desc.digest}")
    with budget:
        data = retried(budget, lambda: _read_whole(source, desc))
    verify(
        f"config {desc.digest} of {source.name}",
        desc.digest,
        digest_bytes(data, desc.digest.algorithm),
        expected_size=desc.size if desc.size >= 0 else None,
        actual_size=len(data),
    )
    return data


def _read_whole(source: ImageSource, desc: Descriptor) -> bytes:
    """The bytes of a small blob from its start (a stream that ends early is a TransportError:
    cut on the way), at most one byte more than :data:`MAX_CONFIG_SIZE`."""
    stream = source.opener(str(desc.digest))(0)
    try:
        check_stated_size(stream, str(desc.digest), desc.size)
        if stream.offset:  # a reader starts where asked or before; 0 is the start
            raise ManifestInvalidError(f"blob {desc.digest} was read from {stream.offset}")
        data = bytearray()
        chunk = bytearray(64 << 10)
        while len(data) <= MAX_CONFIG_SIZE and (count := stream.readinto(chunk)):
            data += chunk[:count]
    finally:
        stream.close()
    if len(data) < desc.size:
        raise TransportError(f"blob {desc.digest} ended after {len(data)} of {desc.size} bytes")
    return bytes(data)


def _add_manifest(
    source: ImageSource,
    manifest: Manifest,
    plan: ImagePlan,
    options: TransferOptions,
    depth: int,
    planned: set[str],
    reads: ManifestReads,
) -> None:
    # ``planned``: the manifests read so far. Indexes may share children (a DAG, not a
    # tree): each is read and planned once, or n levels listing one child twice cost 2**n.
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
    taken: list[Descriptor] = []
    for child_desc in manifest.manifests:
        if depth == 0 and not _wanted(child_desc, options.platforms):
            plan.partial = True
        elif not whole and not source.has_manifest(child_desc.digest):
            plan.partial = True  # left out when it was pulled; it stays left out
        else:
            taken.append(child_desc)
    # read ahead in the loop's order (not for a store's partial index: the store is local)
    level = reads.level([str(d.digest) for d in taken if whole and str(d.digest) not in planned])
    try:
        for child_desc in taken:
            if str(child_desc.digest) in planned:
                continue
            planned.add(str(child_desc.digest))
            child = level.get(str(child_desc.digest))
            if len(child.raw) != child_desc.size:
                # as for a blob: a mirror of it would be refused by clients that check sizes
                raise ManifestInvalidError(
                    f"index {manifest.digest} lists the manifest {child_desc.digest} with size "
                    f"{child_desc.size}, but that manifest is {len(child.raw)} bytes"
                )
            if child.media_type != child_desc.media_type and child_desc.media_type:
                log.debug(
                    "child %s is %s, its descriptor says %s",
                    child_desc.digest,
                    child.media_type,
                    child_desc.media_type,
                )
            _add_manifest(source, child, plan, options, depth + 1, planned, reads)
            plan.children.append(child)
    finally:
        level.close()
    if depth == 0 and options.platforms and not plan.children:
        raise PlatformNotFoundError(
            source.name,
            str(manifest.digest),
            [str(p) for p in options.platforms],
            sorted({str(d.platform) for d in manifest.manifests if d.platform is not None}),
            single=False,
        )


def fit_to_sink(plan: ImagePlan) -> ImagePlan:
    """The plan for a sink that cannot hold a partial index (a registry), as crane's
    ``WithPlatform`` does: one child taken is moved as itself (its digest unchanged) under the
    tag; several become a new index listing only them (a new digest). A plan that is not
    partial comes back unchanged.

    The new index keeps the source index's bytes otherwise: its media type, annotations and
    the taken entries exactly as they were (platform, annotations, sizes), in their order.
    """
    if not plan.partial or not plan.top.is_index:
        return plan
    taken = {c.digest for c in plan.children}
    entries = [d for d in plan.top.manifests if d.digest in taken]
    if len(entries) == 1:
        top = next(c for c in plan.children if c.digest == entries[0].digest)
        children = [c for c in plan.children if c.digest != top.digest]
        return ImagePlan(top, children, plan.blobs, partial=True)
    raw_entries = plan.top.doc.get("manifests", [])
    doc = dict(plan.top.doc)
    doc["manifests"] = [
        e
        for e in raw_entries
        if e["digest"] in taken  # validated when the index was parsed
    ]
    raw = json.dumps(doc, indent=3).encode("utf-8")  # indent 3 as the docker CLI writes
    top = Manifest.parse(raw, plan.top.media_type)
    return ImagePlan(top, list(plan.children), plan.blobs, partial=True)


def _settled(
    plan: ImagePlan,
    src: ImageSource,
    dst: ImageSink,
    scheduler: _BlobScheduler,
    reporter: Reporter,
    options: TransferOptions,
    same: TransferResult,
) -> TransferResult:
    """``same``, the result of an image found unchanged, once its referrers moved (new
    signatures may have come since): then a copy, not a skip of nothing, if any did."""
    if options.referrers:
        mount_from = dst.mount_sources(src, options.mount_from)
        _move_referrers(plan, src, dst, scheduler, reporter, options, mount_from, same)
        same.unchanged = not same.manifests
        same.media_type = plan.top.media_type
    return same


def transfer_image(
    source: Image,
    dest: Image,
    *,
    options: TransferOptions,
    scheduler: _BlobScheduler,
    reporter: Reporter,
    known: Known | None = None,
) -> TransferResult:
    """Move one image from ``source`` to ``dest`` using the shared ``scheduler``; ``known``
    is what :func:`~.lookahead.look_ahead` learned of both ends before the batch started."""
    if source.reference is None:
        raise UsageError(f"the source {source} needs a tag or digest")
    src, dst = source_of(source), sink_of(dest)
    tag = destination_tag(source, dest)
    source_text, dest_text = str(source), str(resolve_destination(source, dest))

    if options.skip_unchanged and tag is not None:
        have = unchanged(
            known,
            src,
            dst,
            source.reference,
            tag,
            options.platforms,
            blobs=options.confirm_unchanged,
        )
        if have is not None:
            same = TransferResult(source_text, dest_text, Digest(have), unchanged=True)
            if not options.referrers:
                return same
            # (its platform was not asked when it was taken as unchanged: nor is it here)
            referred = _plan(src, source.reference, options, check_platform=False)
            return _settled(referred, src, dst, scheduler, reporter, options, same)

    plan = _plan(src, source.reference, options)
    if (
        is_digest(source.reference)
        and plan.top.digest_with(Digest(source.reference).algorithm) != source.reference
    ):
        raise ManifestInvalidError(f"{source} returned a manifest with another digest")
    partial, rewritten_from = plan.partial, None
    if plan.partial and not dst.accepts_partial_index:
        # A registry refuses an index whose manifests are missing: it gets the one child, or a
        # new index of the children taken (a new digest, reported as rewritten).
        fitted = fit_to_sink(plan)
        if fitted.top.digest != plan.top.digest:
            rewritten_from = plan.top.digest
            plan = fitted
    result = TransferResult(
        source_text,
        dest_text,
        plan.top.digest,
        plan.top.media_type,
        partial=partial,
        rewritten_from=rewritten_from,
    )
    if (
        options.skip_unchanged
        and tag is not None
        and options.platforms
        and not dst.accepts_partial_index
        and destination_digest(dst, tag) == str(plan.top.digest)
    ):  # what unchanged() leaves to the plan: the tag names what the job would write there
        same = dataclasses.replace(result, unchanged=True)
        return _settled(plan, src, dst, scheduler, reporter, options, same)
    wanted = dest.reference
    if wanted is not None and is_digest(wanted):
        written = plan.top.digest_with(Digest(wanted).algorithm)
        if written != wanted:  # nothing would be at the digest named, and no tag written
            raise UsageError(
                f"the destination {dest_text} names a digest the image moved does not have "
                f"(it is {written}): give a tag, the image's own digest, or no reference"
            )

    mount_from = dst.mount_sources(src, options.mount_from)
    _move_blobs(plan, src, dst, scheduler, reporter, options, mount_from, result)
    _write_manifests(
        plan, dst, tag, plan.partial and result.rewritten_from is None, result, reporter
    )
    if options.referrers:
        if rewritten_from is not None:
            _warn_rewritten_referrers(src, str(rewritten_from), plan, options, reporter)
        _move_referrers(plan, src, dst, scheduler, reporter, options, mount_from, result)
    return result


def _warn(reporter: Reporter, digest: str, message: str) -> None:
    log.warning("%s", message)
    reporter.emit(EventKind.WARNING, digest, error=message)


def _warn_rewritten_referrers(
    src: ImageSource, index: str, plan: ImagePlan, options: TransferOptions, reporter: Reporter
) -> None:
    """Say which referrers of the source index stay behind: the index moved was rewritten to
    the platforms taken (a new digest), which they do not refer to."""
    from .referrers import find_referrers  # (start-up: loaded when referrers move)

    left = [f.digest for f in find_referrers(src, index, options.referrer_types)]
    if left:
        _warn(
            reporter,
            index,
            f"the index {index} was rewritten to the platforms taken (now {plan.top.digest}); "
            f"its referrers are left out: {', '.join(left)}",
        )


def _move_blobs(
    plan: ImagePlan,
    src: ImageSource,
    dst: ImageSink,
    scheduler: _BlobScheduler,
    reporter: Reporter,
    options: TransferOptions,
    mount_from: Sequence[str],
    result: TransferResult,
) -> None:
    """Move every blob of ``plan`` through the shared pool; wait for all of them."""
    submitted: list[tuple[Future[BlobMove], bool, Descriptor]] = []
    reporter.planned(plan.blobs.values())  # before any moves: a total that 100 % means done
    for desc in plan.blobs.values():

        def move(desc: Descriptor = desc) -> BlobMove:
            try:
                if desc.size < 0 and dst.needs_blob_sizes:
                    # schema1 carries no sizes; an upload needs one up front
                    desc = dataclasses.replace(desc, size=src.blob_size(desc.digest))
                return dst.put_blob(desc, src, reporter, options, mount_from)
            except BlobNotFoundError as exc:
                if not desc.urls:
                    raise
                raise _foreign_layer_error(desc, src.name) from exc

        future, owner = scheduler.submit(
            dst.blob_key(desc.digest), move, share_finished=not dst.claims_reuse
        )
        submitted.append((future, owner, desc))

    first_error: BaseException | None = None
    for future, owner, desc in submitted:
        try:
            move_result = future.result()
        except Exception as exc:  # collect them all before failing: nothing is left running
            first_error = first_error or exc
            continue
        except BaseException as exc:  # an interrupt: what has not started never will
            first_error = first_error or exc
            for waiting, _, _ in submitted:
                waiting.cancel()
            continue
        if not owner or move_result.status == "skipped":
            result.skipped.append(desc.digest)
            if not owner:  # another image's move reported it: this image's plan counts it too
                reporter.emit(
                    EventKind.SKIPPED, desc.digest, total=desc.size, media_type=desc.media_type
                )
        elif move_result.status == "mounted":
            result.mounted.append(desc.digest)
        else:
            result.transferred.append(desc.digest)
            result.bytes_moved += move_result.nbytes
    if first_error is not None:
        raise first_error


def _foreign_layer_error(desc: Descriptor, name: str) -> UnsupportedError:
    """The error for a blob ``name`` lacks whose descriptor lists URLs: a non-distributable
    ("foreign") layer, which registries may leave out (Windows base layers were fetched from
    Microsoft's servers), and which regstore moves only from where the image is."""
    more = f" (or {len(desc.urls) - 1} more)" if len(desc.urls) > 1 else ""
    return UnsupportedError(
        f"layer {desc.digest} of {name} is non-distributable ({desc.media_type or 'no type'}): "
        f"the source does not hold it, and its manifest says to fetch it from "
        f"{escaped(desc.urls[0])}{more}; "
        "regstore moves only what the source holds"
    )


def _write_manifests(
    plan: ImagePlan,
    dst: ImageSink,
    tag: str | None,
    partial: bool,
    result: TransferResult,
    reporter: Reporter,
) -> None:
    """Children first (by digest), then the top manifest under ``tag``."""
    for child in plan.children:
        dst.put_manifest(child, None, False)
        result.manifests.append(child.digest)
        reporter.emit(
            EventKind.MANIFEST, child.digest, total=child.size, media_type=child.media_type
        )
    dst.put_manifest(plan.top, tag, partial)
    result.manifests.append(plan.top.digest)
    reporter.emit(
        EventKind.MANIFEST,
        plan.top.digest,
        total=plan.top.size,
        media_type=plan.top.media_type,
        tag=tag,
    )


def _move_referrers(
    plan: ImagePlan,
    src: ImageSource,
    dst: ImageSink,
    scheduler: _BlobScheduler,
    reporter: Reporter,
    options: TransferOptions,
    mount_from: Sequence[str],
    result: TransferResult,
) -> None:
    """Move the referrers of every manifest of ``plan`` (already written), and theirs in turn
    (a signature of an SBOM), and the sigstore tags of each: breadth-first from the subjects
    moved, so a referrer is written after its subject, after its own blobs and children. The
    sink keeps its referrers index after each referrer's write. A referrer whose manifest
    names another subject than the one it was listed for is left out (its subject is not
    being moved)."""
    from .referrers import find_referrers, has_wanted_type  # (start-up: when referrers move)

    subjects = [str(plan.top.digest)] + [str(c.digest) for c in plan.children]
    seen = set(subjects)
    queue = deque(subjects)
    plain = dataclasses.replace(options, platforms=())
    while queue:
        subject = queue.popleft()
        for found in find_referrers(src, subject, options.referrer_types):
            if found.digest in seen:
                continue
            seen.add(found.digest)
            try:
                referrer = _plan(src, found.reference, plain)
            except ImageManifestNotFoundError:
                # listed but gone (a signature deleted while the index kept its entry): the
                # image and its other referrers still move
                _warn(
                    reporter,
                    found.digest,
                    f"{found.digest} is listed as a referrer of {subject} but its manifest "
                    "is missing; left out",
                )
                continue
            if found.tag is None and (
                referrer.top.subject is None or str(referrer.top.subject.digest) != subject
            ):
                log.warning(
                    "%s is listed as a referrer of %s but its subject is %s; left out",
                    found.digest,
                    subject,
                    referrer.top.subject.digest if referrer.top.subject else "missing",
                )
                continue
            if found.tag is not None and not has_wanted_type(referrer.top, options.referrer_types):
                continue
            queue.append(str(referrer.top.digest))
            seen.add(str(referrer.top.digest))
            at = found.tag or str(referrer.top.digest)
            if options.skip_unchanged and destination_digest(dst, at) == str(referrer.top.digest):
                if found.tag is None:  # repair an index a crash left without it
                    _keep_listed(dst, referrer.top)
                continue
            _move_blobs(referrer, src, dst, scheduler, reporter, options, mount_from, result)
            _write_manifests(referrer, dst, found.tag, False, result, reporter)
            result.referrers.append(referrer.top.digest)


def _keep_listed(dst: ImageSink, referrer: Manifest) -> None:
    """Make sure the sink's referrers index lists ``referrer`` (already there): sinks that
    keep an index answer ``index_referrer`` (one index read when it is listed)."""
    index_referrer = getattr(dst, "index_referrer", None)
    if index_referrer is not None:
        index_referrer(referrer)


def run_one(
    source: Image,
    dest: Image,
    operation: Literal["pull", "push", "copy"],
    *,
    options: TransferOptions,
    concurrency: int,
    events: EventSink | None,
) -> TransferResult:
    """One image, its own pool; errors propagate."""
    scheduler = _BlobScheduler(concurrency)
    try:
        result = transfer_image(
            source,
            dest,
            options=options,
            scheduler=scheduler,
            reporter=Reporter(operation, str(source), events),
        )
    except BaseException:
        scheduler.shutdown(cancel=True)  # what has not started never will (an interrupt)
        raise
    scheduler.shutdown()
    return result


#: Images planned at once per blob slot: planning an image is waiting for the registry (a
#: HEAD, a manifest GET), not moving bytes; the blob pool alone bounds the bytes in flight.
IMAGES_PER_BLOB_SLOT = 2
MAX_IMAGE_WORKERS = 16


def image_workers(concurrency: int) -> int:
    """How many images :func:`transfer_many` plans at once for a blob ``concurrency`` (1 keeps
    a run strictly one image at a time)."""
    if concurrency <= 1:
        return 1
    return min(concurrency * IMAGES_PER_BLOB_SLOT, max(concurrency, MAX_IMAGE_WORKERS))


def _source_key(source: Image) -> object:
    reference = source.reference
    key = written_key(source, reference) if reference is not None else None
    return key if key is not None else str(source)


def _clashing_writers(jobs: Sequence[tuple[Image, Image]]) -> dict[int, UsageError]:
    """The jobs whose destination tag a job with another source writes too, each with its
    error: which would win is an accident of the run (and a re-run would write the other,
    and report the first unchanged), so all of them fail. The same image asked twice is no
    clash; a tag of a place :func:`~.lookahead.written_key` cannot tell is never one."""
    writers: dict[object, list[int]] = {}
    for i, (source, dest) in enumerate(jobs):
        tag = destination_tag(source, dest)
        key = written_key(dest, tag) if tag is not None else None
        if key is not None:
            writers.setdefault(key, []).append(i)
    clashes: dict[int, UsageError] = {}
    for indexes in writers.values():
        # sources told apart by place too (one name and tag in two stores are two images)
        places = {_source_key(jobs[i][0]) for i in indexes}
        sources = sorted({str(jobs[i][0]) for i in indexes})
        if len(places) > 1:
            destination = resolve_destination(*jobs[indexes[0]])
            for i in indexes:
                clashes[i] = UsageError(
                    f"{destination} is the destination of {len(indexes)} images of the batch "
                    f"({', '.join(sources)}): give them different names or tags"
                )
    return clashes


def transfer_many(
    jobs: Sequence[tuple[Image, Image]],
    *,
    platforms: Sequence[str | Platform] | None = None,
    mount_from: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    events: EventSink | None = None,
    skip_unchanged: bool = True,
    keep_going: bool = True,
    operation: Literal["pull", "push", "copy"] = "copy",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
    confirm_unchanged: bool = False,
) -> BatchResult:
    """Move many images through one bounded blob pool; each digest moves once per destination.

    Images are planned in parallel (:func:`image_workers`: twice ``concurrency`` at a time, at
    most 16 unless ``concurrency`` is higher, since planning waits on the registry) and share
    the blob pool of ``concurrency`` blobs, so a sync gets parallelism across images, not only
    across the layers of one. A failed image does
    not stop the others: its outcome says why (``keep_going=False`` instead cancels the images
    not yet started once one fails). ``skip_unchanged`` makes a destination tag that already
    points at the source's manifest digest cost one HEAD and move nothing (with ``referrers``,
    the image's referrers are still looked for, and the new ones moved); with
    ``confirm_unchanged``, only when a store destination holds every blob of the image too
    (one check per blob: what ``verify`` moved aside is moved again).
    """
    options = TransferOptions.build(
        platforms,
        mount_from,
        chunk_size=chunk_size,
        monolithic_threshold=monolithic_threshold,
        skip_unchanged=skip_unchanged,
        confirm_unchanged=confirm_unchanged,
        referrers=referrers,
        referrer_types=artifact_type_list(referrer_types),
    )
    scheduler = _BlobScheduler(concurrency)
    base = Reporter(operation, "", events)
    stop = threading.Event()
    known: list[Known | None] = [None] * len(jobs)
    if skip_unchanged and len(jobs) > 1:  # what both ends name, learned in bulk
        known = look_ahead([(s, d, destination_tag(s, d)) for s, d in jobs])

    clashes = _clashing_writers(jobs)

    def one(index: int) -> ImageOutcome:
        source, dest = jobs[index]
        if stop.is_set():
            return ImageOutcome(str(source), str(dest), "cancelled", error=CANCELLED)
        if index in clashes:
            clash = clashes[index]
            if not keep_going:
                stop.set()
            return ImageOutcome(str(source), str(dest), "failed", error=str(clash), exception=clash)
        try:
            res = transfer_image(
                source,
                dest,
                options=options,
                scheduler=scheduler,
                reporter=base.for_image(str(source)),
                known=known[index],
            )
        except Exception as exc:  # one image never stops the others, whatever broke
            log.info("%s -> %s failed: %s", source, dest, exc)
            if not keep_going:
                stop.set()
            return ImageOutcome(str(source), str(dest), "failed", error=str(exc), exception=exc)
        status: ImageStatus = "skipped" if res.unchanged else "copied"
        return ImageOutcome(str(source), res.destination, status, result=res)

    images = ThreadPoolExecutor(
        max(1, min(image_workers(concurrency), len(jobs) or 1)), thread_name_prefix="regstore-image"
    )
    try:
        outcomes = list(images.map(one, range(len(jobs))))
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM, the caller's own exception): no image and no blob not
        # started yet starts (images waiting on cancelled blobs fail at once); the requests
        # running end as they do, and blobs moving stop at their next chunk (interrupt.py)
        stop.set()
        scheduler.shutdown(cancel=True)
        images.shutdown(wait=True, cancel_futures=True)
        raise
    images.shutdown(wait=True)
    scheduler.shutdown()
    return BatchResult(outcomes)
