"""Repair before a pull: re-hash the blobs of one image that the store already has, and
quarantine the damaged ones, so that the pull that follows fetches them again.

A pull skips every blob the store has ("already there") without reading it, which is what makes
a re-run cheap and also what lets a damaged copy survive any number of re-runs. ``pull(...,
repair=True)`` (``regstore pull REF --repair``) runs :func:`repair_image` first: the image's
manifests are read from the source (as the pull will read them), and every blob and manifest
they name that is complete in the store is re-hashed; one whose bytes hash to another digest is
moved aside (``ObjectStore.quarantine_blob``). No prior ``verify`` is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from regstore.errors import BlobNotFoundError, LayerLockedError, StoreError, UnsupportedError
from regstore.events import EventKind, TransferEvent
from regstore.reference import Digest
from regstore.storetypes import BlobState

# The transfer's own planner, so the digests re-hashed are exactly those the pull will skip.
from .transfer import TransferOptions, plan_image
from .verify import hash_stored_blob

if TYPE_CHECKING:
    from regstore.manifest import Platform
    from regstore.store import ObjectStore

    from .model import RegistryImage, StoreImage
    from .reporting import EventSink

__all__ = ["RepairReport", "image_digests", "repair_blobs", "repair_image"]


@dataclass
class RepairReport:
    """What :func:`repair_blobs` re-hashed and moved aside."""

    checked: int = 0
    bytes_checked: int = 0
    #: digest -> where its damaged bytes were moved
    quarantined: dict[str, str] = field(default_factory=dict)


def image_digests(
    source: RegistryImage | StoreImage, platforms: Sequence[str | Platform] | None = None
) -> list[str]:
    """Every manifest and blob digest the transfer of ``source`` moves (index children
    filtered by ``platforms``, as the transfer filters them), manifests first.
    """
    if source.reference is None:
        raise ValueError(f"{source} needs a tag or digest")
    plan = plan_image(source, TransferOptions.build(platforms))
    manifests = [str(plan.top.digest), *(str(child.digest) for child in plan.children)]
    return [*manifests, *sorted(set(plan.blobs) - set(manifests))]


def repair_blobs(
    store: ObjectStore,
    digests: Iterable[str],
    *,
    concurrency: int = 4,
    events: EventSink | None = None,
) -> RepairReport:
    """Re-hash each of ``digests`` the store has complete; quarantine those that do not hash
    to their digest. Blobs the store does not have are left to the pull.

    Raises StoreError when a damaged blob cannot be moved aside (the pull would skip it), and
    what reading a blob raises.
    """
    report = RepairReport()
    lock = threading.Lock()

    def check(digest: Digest) -> None:
        if store.blob_status(digest).state is not BlobState.COMPLETE:
            return
        try:
            actual, size = hash_stored_blob(store, digest, events)
        except BlobNotFoundError:  # removed meanwhile: the pull fetches it
            return
        where = None
        if actual != digest:
            try:
                where = store.set_aside(digest)
            except BlobNotFoundError:
                pass  # removed meanwhile: the pull fetches it
            except (UnsupportedError, LayerLockedError) as exc:  # the pull would skip it
                raise StoreError(
                    f"cannot repair blob {digest} (its bytes hash to {actual}): {exc}"
                ) from exc
        if events is not None:
            kind = EventKind.VERIFIED if where is None else EventKind.FAILED
            error = None if where is None else f"damaged (hashes to {actual}); moved to {where}"
            events(TransferEvent(kind, "verify", "", digest, total=size, error=error))
        with lock:
            report.checked += 1
            report.bytes_checked += size
            if where is not None:
                report.quarantined[str(digest)] = where

    unique = sorted({Digest(d) for d in digests})
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for future in [pool.submit(check, d) for d in unique]:
            future.result()
    return report


def repair_image(
    source: RegistryImage | StoreImage,
    store: ObjectStore,
    *,
    platforms: Sequence[str | Platform] | None = None,
    concurrency: int = 4,
    events: EventSink | None = None,
) -> RepairReport:
    """Re-hash what ``store`` has of the image at ``source`` (manifests and blobs) and
    quarantine what is damaged; the pull that follows fetches it again.
    """
    return repair_blobs(
        store, image_digests(source, platforms), concurrency=concurrency, events=events
    )
