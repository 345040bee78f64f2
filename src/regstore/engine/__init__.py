"""The engine: pull, push and copy images between registries and stores.

Concurrent (one bounded pool shared by every blob of every image), resumable (a dropped
connection continues from the bytes already stored or uploaded), verified (nothing becomes
visible before its digest checks out) and deduplicated (each digest moves once).

Images move between places — registry and store repositories — through the
:class:`~.places.ImageSource`/:class:`~.places.ImageSink` protocols, one adapter per kind of
place (:mod:`.places`); pull, push, copy and the CLI's commands share :func:`transfer_one`.
"""

from __future__ import annotations

from .api import copy, pull, push, transfer_one
from .model import (
    BatchResult,
    ImageOutcome,
    RegistryClient,
    RegistryImage,
    StoreImage,
    TransferResult,
)
from .preview import TransferPreview, preview_transfer
from .progress import ImageProgress, Progress, ProgressSnapshot
from .transfer import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    destination_tag,
    resolve_destination,
    transfer_many,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "BatchResult",
    "ImageOutcome",
    "ImageProgress",
    "Progress",
    "ProgressSnapshot",
    "RegistryClient",
    "RegistryImage",
    "StoreImage",
    "TransferPreview",
    "TransferResult",
    "copy",
    "destination_tag",
    "preview_transfer",
    "pull",
    "push",
    "resolve_destination",
    "transfer_many",
    "transfer_one",
]
