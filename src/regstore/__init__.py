"""regstore: move container images between OCI/Docker registries and pluggable storage.

The public API: :func:`pull`, :func:`push`, :func:`copy` (the engine), :class:`Client` (the
registry client), :func:`open_store` with :class:`ObjectStore` and :class:`Layer` (the storage
contract), and the error tree in :mod:`regstore.errors`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from regstore.client import Client
from regstore.engine import (
    BatchResult,
    RegistryImage,
    StoreImage,
    TransferResult,
    copy,
    pull,
    push,
    transfer_many,
)
from regstore.errors import *  # noqa: F403  (the whole error tree is public API)
from regstore.errors import __all__ as _errors_all
from regstore.manifest import Descriptor, Manifest, Platform, SignedManifest
from regstore.reference import Digest, Reference, parse_reference
from regstore.store import Layer, LayerReader, LayerWriter, ObjectStore, open_store

try:
    __version__ = version("regstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BatchResult",
    "Client",
    "Descriptor",
    "Digest",
    "Layer",
    "LayerReader",
    "LayerWriter",
    "Manifest",
    "ObjectStore",
    "Platform",
    "Reference",
    "RegistryImage",
    "SignedManifest",
    "StoreImage",
    "TransferResult",
    "__version__",
    "copy",
    "open_store",
    "parse_reference",
    "pull",
    "push",
    "transfer_many",
    *_errors_all,
]
