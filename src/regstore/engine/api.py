"""``pull``, ``push`` and ``copy``: the seed's two functions and their sibling, for one image."""

from __future__ import annotations

from collections.abc import Sequence

from regstore.manifest import Platform
from regstore.store import ObjectStore

from .blobs import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD
from .model import RegistryClient, RegistryImage, StoreImage, TransferResult
from .repair import repair_image
from .reporting import EventSink
from .transfer import DEFAULT_CONCURRENCY, Image, TransferOptions, run_one

__all__ = ["copy", "pull", "push"]


def pull(
    client: RegistryClient,
    store: ObjectStore,
    name: str,
    reference: str,
    *,
    as_name: str | None = None,
    as_tag: str | None = None,
    platforms: Sequence[str | Platform] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    events: EventSink | None = None,
    repair: bool = False,
) -> TransferResult:
    """Pull ``name`` at ``reference`` (a tag or digest) from a registry into ``store``.

    Every blob (config and layers, of every child of an index, or only of the children
    matching ``platforms`` such as ``["linux/amd64"]``) streams registry → digest → store,
    concurrently, resumed after a dropped connection, verified, committed; blobs the store has
    are skipped without a GET. Manifests follow their blobs, children before the index, the tag
    last: the store never shows a tag whose content is incomplete. ``as_name``/``as_tag`` store
    it under another name or tag. Returns what moved; raises on failure (DigestMismatchError,
    ImageManifestNotFoundError, RetriesExhaustedError when a blob's retries ran out, ...),
    leaving completed blobs and the staged part of interrupted ones for the next run.

    ``repair=True`` first re-hashes every manifest and blob of the image that the store has
    and moves the damaged ones aside (:mod:`regstore.engine.repair`), so the pull fetches them
    again; ``TransferResult.quarantined`` names them.
    """
    source = RegistryImage(client, name, reference)
    quarantined: list[str] = []
    if repair:
        report = repair_image(
            source, store, platforms=platforms, concurrency=concurrency, events=events
        )
        quarantined = sorted(report.quarantined)
    dest_ref = as_tag if as_tag is not None else None
    result = run_one(
        source,
        StoreImage(store, as_name or name, dest_ref),
        "pull",
        options=TransferOptions.build(platforms),
        concurrency=concurrency,
        events=events,
    )
    result.quarantined = quarantined
    return result


def push(
    client: RegistryClient,
    store: ObjectStore,
    name: str,
    reference: str,
    *,
    dest_name: str | None = None,
    dest_tag: str | None = None,
    mount_from: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
    events: EventSink | None = None,
) -> TransferResult:
    """Push ``name`` at ``reference`` from ``store`` to a registry (the reverse of :func:`pull`).

    Blobs the registry has (HEAD) are skipped; ``mount_from`` repositories are asked for a
    cross-repository mount first; blobs up to ``monolithic_threshold`` go up in one PUT, larger
    ones in ``chunk_size`` chunks that resume from the registry's offset after a failure.
    Children before the index; the tag last.
    """
    return run_one(
        StoreImage(store, name, reference),
        RegistryImage(client, dest_name or name, dest_tag),
        "push",
        options=TransferOptions.build(
            None, mount_from, chunk_size=chunk_size, monolithic_threshold=monolithic_threshold
        ),
        concurrency=concurrency,
        events=events,
    )


def copy(
    source: Image,
    dest: Image,
    *,
    platforms: Sequence[str | Platform] | None = None,
    mount_from: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
    events: EventSink | None = None,
) -> TransferResult:
    """Copy one image between any two places: registry or store to registry or store.

    Registry → registry streams each blob through (nothing staged on disk or held whole in
    memory) and mounts instead when both are repositories of the same registry. ``dest``'s
    name and reference rename on the way (``None`` reference keeps the source's tag).
    """
    return run_one(
        source,
        dest,
        "copy",
        options=TransferOptions.build(
            platforms, mount_from, chunk_size=chunk_size, monolithic_threshold=monolithic_threshold
        ),
        concurrency=concurrency,
        events=events,
    )
