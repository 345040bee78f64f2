"""The engine: pull, push and copy images between registries and stores.

Concurrent (one bounded pool shared by every blob of every image), resumable (a dropped
connection continues from the bytes already stored or uploaded), verified (nothing becomes
visible before its digest checks out) and deduplicated (each digest moves once).
"""

from __future__ import annotations

from .api import copy, pull, push
from .model import (
    BatchResult,
    ImageOutcome,
    RegistryClient,
    RegistryImage,
    StoreImage,
    TransferResult,
)
from .transfer import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, transfer_many

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "BatchResult",
    "ImageOutcome",
    "RegistryClient",
    "RegistryImage",
    "StoreImage",
    "TransferResult",
    "copy",
    "pull",
    "push",
    "transfer_many",
]
