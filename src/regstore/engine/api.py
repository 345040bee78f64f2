"""``pull``, ``push`` and ``copy``: the seed's two functions and their sibling, for one image,
all three one call of :func:`transfer_one` (which the CLI's commands share too)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

from regstore.errors import UnsupportedError
from regstore.events import EventSink
from regstore.manifest import Platform
from regstore.referrers import artifact_type_list
from regstore.store import ObjectStore

from .blobs import DEFAULT_CHUNK_SIZE, DEFAULT_MONOLITHIC_THRESHOLD
from .model import Image, RegistryClient, RegistryImage, StoreImage, TransferResult
from .transfer import DEFAULT_CONCURRENCY, TransferOptions, run_one

__all__ = ["copy", "pull", "push", "transfer_one"]


def transfer_one(
    source: Image,
    dest: Image,
    *,
    operation: Literal["pull", "push", "copy"] = "copy",
    platforms: Sequence[str | Platform] | None = None,
    mount_from: Sequence[str] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    monolithic_threshold: int = DEFAULT_MONOLITHIC_THRESHOLD,
    events: EventSink | None = None,
    repair: bool = False,
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
) -> TransferResult:
    """Move one image from ``source`` to ``dest``, any place to any place: the one path of
    :func:`pull`, :func:`push` and :func:`copy` (``operation`` names it in events).

    ``referrers=True`` also moves what refers to each of its manifests (signatures, SBOMs,
    attestations, recursively) and cosign's ``sha256-<hex>.sig``/``.att``/``.sbom`` tags;
    ``referrer_types`` keeps only those artifact types (``TransferResult.referrers`` lists
    what moved).

    ``dest``'s reference None gives it the source's tag (:func:`~.transfer.destination_tag`).
    ``repair=True`` (a store destination only) first re-hashes what the store has of the
    image and moves the damaged blobs aside (:mod:`.repair`); ``TransferResult.quarantined``
    names them. Raises UnsupportedError for ``repair`` into a registry.
    """
    quarantined: list[str] = []
    if repair:
        from .repair import repair_image  # (start-up: verify and repair load when asked)

        if not isinstance(dest, StoreImage):
            raise UnsupportedError(f"repair re-hashes a store's blobs; {dest} is not in a store")
        report = repair_image(
            source, dest.store, platforms=platforms, concurrency=concurrency, events=events
        )
        quarantined = sorted(report.quarantined)
    result = run_one(
        source,
        dest,
        operation,
        options=TransferOptions.build(
            platforms,
            mount_from,
            chunk_size=chunk_size,
            monolithic_threshold=monolithic_threshold,
            referrers=referrers,
            referrer_types=artifact_type_list(referrer_types),
        ),
        concurrency=concurrency,
        events=events,
    )
    result.quarantined = quarantined
    return result


def pull(
    client: RegistryClient,
    store: ObjectStore,
    name: str,
    reference: str,
    *,
    dest_name: str | None = None,
    dest_tag: str | None = None,
    platforms: Sequence[str | Platform] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    events: EventSink | None = None,
    repair: bool = False,
    as_name: str | None = None,
    as_tag: str | None = None,
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
) -> TransferResult:
    """Pull ``name`` at ``reference`` (a tag or digest) from a registry into ``store``.

    Every blob (config and layers, of every child of an index, or only of the children
    matching ``platforms`` such as ``["linux/amd64"]``) streams registry → digest → store,
    concurrently, resumed after a dropped connection, verified, committed; blobs the store has
    are skipped without a GET. Manifests follow their blobs, children before the index, the tag
    last: the store never shows a tag whose content is incomplete. ``dest_name``/``dest_tag``
    store it under another name or tag (as :func:`push` names its destination; ``as_name``/
    ``as_tag`` are their deprecated spellings, removed in the next release). Returns what
    moved; raises on failure (DigestMismatchError, ImageManifestNotFoundError,
    RetriesExhaustedError when a blob's retries ran out, ...),
    leaving completed blobs and the staged part of interrupted ones for the next run.

    ``repair=True`` first re-hashes every manifest and blob of the image that the store has
    and moves the damaged ones aside (:mod:`regstore.engine.repair`), so the pull fetches them
    again; ``TransferResult.quarantined`` names them. ``referrers``/``referrer_types``: see
    :func:`transfer_one`.
    """
    dest_name = _renamed("as_name", as_name, "dest_name", dest_name)
    dest_tag = _renamed("as_tag", as_tag, "dest_tag", dest_tag)
    return transfer_one(
        RegistryImage(client, name, reference),
        StoreImage(store, dest_name or name, dest_tag),
        operation="pull",
        platforms=platforms,
        concurrency=concurrency,
        events=events,
        repair=repair,
        referrers=referrers,
        referrer_types=referrer_types,
    )


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
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
) -> TransferResult:
    """Push ``name`` at ``reference`` from ``store`` to a registry (the reverse of :func:`pull`).

    Blobs the registry has (HEAD) are skipped; ``mount_from`` repositories are asked for a
    cross-repository mount first; blobs up to ``monolithic_threshold`` go up in one PUT, larger
    ones in ``chunk_size`` chunks that resume from the registry's offset after a failure.
    Children before the index; the tag last. ``dest_name``/``dest_tag`` push it under another
    name or tag (None: ``name``, and the tag of ``reference``). ``referrers``/
    ``referrer_types``: see :func:`transfer_one`.
    """
    return transfer_one(
        StoreImage(store, name, reference),
        RegistryImage(client, dest_name or name, dest_tag),
        operation="push",
        mount_from=mount_from,
        concurrency=concurrency,
        chunk_size=chunk_size,
        monolithic_threshold=monolithic_threshold,
        events=events,
        referrers=referrers,
        referrer_types=referrer_types,
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
    referrers: bool = False,
    referrer_types: Sequence[str] = (),
) -> TransferResult:
    """Copy one image between any two places: registry or store to registry or store.

    Registry → registry streams each blob through (nothing staged on disk or held whole in
    memory) and mounts instead when both are repositories of the same registry. ``dest``'s
    name and reference rename on the way (``None`` reference keeps the source's tag).
    ``referrers``/``referrer_types``: see :func:`transfer_one`.
    """
    return transfer_one(
        source,
        dest,
        operation="copy",
        platforms=platforms,
        mount_from=mount_from,
        concurrency=concurrency,
        chunk_size=chunk_size,
        monolithic_threshold=monolithic_threshold,
        events=events,
        referrers=referrers,
        referrer_types=referrer_types,
    )


def _renamed(old: str, old_value: str | None, new: str, new_value: str | None) -> str | None:
    """The value of keyword ``new``, taking the deprecated ``old`` spelling for one release."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"pass {new}= only ({old}= is its deprecated spelling)")
    warnings.warn(
        f"{old}= is deprecated and will be removed in the next release; use {new}=",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
