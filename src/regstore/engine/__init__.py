"""The engine: pull, push and copy images between registries and stores.

Concurrent (one bounded pool shared by every blob of every image), resumable (a dropped
connection continues from the bytes already stored or uploaded), verified (nothing becomes
visible before its digest checks out) and deduplicated (each digest moves once).

Images move between places — registry and store repositories — through the
:class:`~.places.ImageSource`/:class:`~.places.ImageSink` protocols, one adapter per kind of
place (:mod:`.places`); pull, push, copy and the CLI's commands share :func:`transfer_one`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regstore.lazy import lazy_exports

if TYPE_CHECKING:  # the same names, imported on first use at run time (__getattr__)
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

#: Where each name lives. Importing one module of the engine imports only what that module
#: needs: a no-op re-sync never loads pull, push, copy, the dry-run preview nor progress
#: (their data classes alone cost a CLI start-up milliseconds; benchmarks/).
_EXPORTS: dict[str, str] = {
    "copy": "regstore.engine.api",
    "pull": "regstore.engine.api",
    "push": "regstore.engine.api",
    "transfer_one": "regstore.engine.api",
    "BatchResult": "regstore.engine.model",
    "ImageOutcome": "regstore.engine.model",
    "RegistryClient": "regstore.engine.model",
    "RegistryImage": "regstore.engine.model",
    "StoreImage": "regstore.engine.model",
    "TransferResult": "regstore.engine.model",
    "TransferPreview": "regstore.engine.preview",
    "preview_transfer": "regstore.engine.preview",
    "ImageProgress": "regstore.engine.progress",
    "Progress": "regstore.engine.progress",
    "ProgressSnapshot": "regstore.engine.progress",
    "DEFAULT_CONCURRENCY": "regstore.engine.transfer",
    "MAX_CONCURRENCY": "regstore.engine.transfer",
    "destination_tag": "regstore.engine.transfer",
    "resolve_destination": "regstore.engine.transfer",
    "transfer_many": "regstore.engine.transfer",
}

if not TYPE_CHECKING:  # (hidden from type checkers, which see the imports above instead)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


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
