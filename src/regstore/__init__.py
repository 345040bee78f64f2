"""regstore: move container images between OCI/Docker registries and pluggable storage.

The public API: :func:`pull`, :func:`push`, :func:`copy` and :func:`transfer_many` (the
engine) with the image values they move (:class:`RegistryImage`, :class:`StoreImage`: an
:data:`Image`), their results and events; :func:`verify`; :class:`Client` (the registry
client); :func:`create_bundle`, :func:`import_bundle`, :func:`read_bundle` and
:func:`verify_bundle` (air-gap bundles, :mod:`regstore.bundle`); :func:`open_store` with
:class:`ObjectStore` and :class:`Layer` (the storage contract); and the error tree of
:mod:`regstore.errors`. Everything a program using these needs to name in its annotations is
importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regstore.errors import (
    AuthenticationError,
    BackendNotFoundError,
    BlobNotFoundError,
    BlobTooLargeError,
    BlobUploadInvalidRangeError,
    BlobUploadNotFoundError,
    BundleBaseMissingError,
    BundleInvalidError,
    ClusterError,
    CredentialStoreError,
    DamagedTagError,
    DigestMismatchError,
    FilterError,
    HTTPContext,
    ImageManifestNotFoundError,
    InsecureRealmError,
    InterruptedTransferError,
    InvalidReferenceError,
    LayerAlreadyExistsError,
    LayerLockedError,
    ManifestInvalidError,
    NotFoundError,
    PagingError,
    PagingLimitError,
    PlatformNotFoundError,
    PluginLoadError,
    RegistryError,
    RegistryErrorDetail,
    RegstoreError,
    RepositoryNotFoundError,
    RetriesExhaustedError,
    StoreDamageError,
    StoreError,
    StoreEscapeError,
    StoreNotFoundError,
    StoreOptionError,
    StoreReadOnlyError,
    StoreURLError,
    SyncFileError,
    TransportError,
    UnexpectedHTTPStatusError,
    UnsupportedError,
    UploadLengthError,
    UsageError,
)
from regstore.lazy import lazy_exports

if TYPE_CHECKING:  # the same names, imported on first use at run time (__getattr__)
    from regstore.bundle import (
        BaseBundle,
        BundledImage,
        BundledReferrer,
        BundleInput,
        BundleManifest,
        BundleProblem,
        BundleProblemKind,
        BundleVerifyReport,
        create_bundle,
        import_bundle,
        read_bundle,
        verify_bundle,
    )
    from regstore.client import Client
    from regstore.engine import (
        BatchResult,
        RegistryClient,
        RegistryImage,
        StoreImage,
        TransferPreview,
        TransferResult,
        copy,
        preview_transfer,
        pull,
        push,
        transfer_many,
    )
    from regstore.engine.filters import SemverRange, TagFilter
    from regstore.engine.model import Image, ImageOutcome, ImageStatus
    from regstore.engine.progress import ImageProgress, Progress, ProgressSnapshot
    from regstore.engine.verify import Problem, ProblemKind, VerifyReport, verify
    from regstore.events import EventKind, EventSink, Operation, TransferEvent
    from regstore.imagelist import ImageRecord
    from regstore.manifest import Descriptor, Manifest, Platform, SignedManifest
    from regstore.reference import Digest, Reference, parse_reference
    from regstore.store import Layer, LayerReader, LayerWriter, ObjectStore, open_store
    from regstore.storetypes import BlobInfo, BlobState, BlobStatus, StagingEntry, StagingKind
    from regstore.wire import UploadSession, UploadStatus

    __version__: str

#: Where each public name but the errors lives. Importing ``regstore`` imports none of these:
#: ``regstore --help`` and programs that need one corner of the API do not pay for requests,
#: fsspec, pluggy and the engine, nor for the data classes of manifests, events and uploads
#: (the CLI's start-up time; tests/test_cli_startup.py).
_EXPORTS: dict[str, str] = {
    "EventKind": "regstore.events",
    "EventSink": "regstore.events",
    "Operation": "regstore.events",
    "TransferEvent": "regstore.events",
    "Descriptor": "regstore.manifest",
    "Manifest": "regstore.manifest",
    "Platform": "regstore.manifest",
    "SignedManifest": "regstore.manifest",
    "Digest": "regstore.reference",
    "Reference": "regstore.reference",
    "parse_reference": "regstore.reference",
    "BlobInfo": "regstore.storetypes",
    "BlobState": "regstore.storetypes",
    "BlobStatus": "regstore.storetypes",
    "UploadSession": "regstore.wire",
    "UploadStatus": "regstore.wire",
    "BaseBundle": "regstore.bundle",
    "BundledImage": "regstore.bundle",
    "BundledReferrer": "regstore.bundle",
    "BundleInput": "regstore.bundle",
    "BundleManifest": "regstore.bundle",
    "BundleProblem": "regstore.bundle",
    "BundleProblemKind": "regstore.bundle",
    "BundleVerifyReport": "regstore.bundle",
    "create_bundle": "regstore.bundle",
    "import_bundle": "regstore.bundle",
    "read_bundle": "regstore.bundle",
    "verify_bundle": "regstore.bundle",
    "Client": "regstore.client",
    "BatchResult": "regstore.engine",
    "RegistryClient": "regstore.engine",
    "RegistryImage": "regstore.engine",
    "StoreImage": "regstore.engine",
    "TransferPreview": "regstore.engine",
    "TransferResult": "regstore.engine",
    "copy": "regstore.engine",
    "preview_transfer": "regstore.engine",
    "pull": "regstore.engine",
    "push": "regstore.engine",
    "transfer_many": "regstore.engine",
    "SemverRange": "regstore.engine.filters",
    "StagingEntry": "regstore.storetypes",
    "StagingKind": "regstore.storetypes",
    "TagFilter": "regstore.engine.filters",
    "Image": "regstore.engine.model",
    "ImageOutcome": "regstore.engine.model",
    "ImageStatus": "regstore.engine.model",
    "ImageProgress": "regstore.engine.progress",
    "Progress": "regstore.engine.progress",
    "ProgressSnapshot": "regstore.engine.progress",
    "Problem": "regstore.engine.verify",
    "ProblemKind": "regstore.engine.verify",
    "VerifyReport": "regstore.engine.verify",
    "verify": "regstore.engine.verify",
    "Layer": "regstore.store",
    "LayerReader": "regstore.store",
    "LayerWriter": "regstore.store",
    "ObjectStore": "regstore.store",
    "open_store": "regstore.store",
    "ImageRecord": "regstore.imagelist",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("regstore")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


if not TYPE_CHECKING:  # (hidden from type checkers, which see the imports above instead:
    # a module __getattr__ would make them accept any misspelt name)

    _exported, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), "__version__")

    def __getattr__(name: str) -> Any:
        """The public names, imported when first asked for (PEP 562)."""
        if name == "__version__":
            globals()[name] = value = _version()
            return value
        return _exported(name)


# A literal list (not built from other lists) so that type checkers see what
# ``from regstore import *`` gives; tests/test_public_api.py checks it against errors.__all__.
__all__ = [
    "AuthenticationError",
    "BackendNotFoundError",
    "BaseBundle",
    "BatchResult",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobState",
    "BlobStatus",
    "BlobTooLargeError",
    "BlobUploadInvalidRangeError",
    "BlobUploadNotFoundError",
    "BundleBaseMissingError",
    "BundleInput",
    "BundleInvalidError",
    "BundleManifest",
    "BundleProblem",
    "BundleProblemKind",
    "BundleVerifyReport",
    "BundledImage",
    "BundledReferrer",
    "Client",
    "ClusterError",
    "CredentialStoreError",
    "DamagedTagError",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "EventKind",
    "EventSink",
    "FilterError",
    "HTTPContext",
    "Image",
    "ImageManifestNotFoundError",
    "ImageOutcome",
    "ImageProgress",
    "ImageRecord",
    "ImageStatus",
    "InsecureRealmError",
    "InterruptedTransferError",
    "InvalidReferenceError",
    "Layer",
    "LayerAlreadyExistsError",
    "LayerLockedError",
    "LayerReader",
    "LayerWriter",
    "Manifest",
    "ManifestInvalidError",
    "NotFoundError",
    "ObjectStore",
    "Operation",
    "PagingError",
    "PagingLimitError",
    "Platform",
    "PlatformNotFoundError",
    "PluginLoadError",
    "Problem",
    "ProblemKind",
    "Progress",
    "ProgressSnapshot",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RegistryErrorDetail",
    "RegistryImage",
    "RegstoreError",
    "RepositoryNotFoundError",
    "RetriesExhaustedError",
    "SemverRange",
    "SignedManifest",
    "StagingEntry",
    "StagingKind",
    "StoreDamageError",
    "StoreError",
    "StoreEscapeError",
    "StoreImage",
    "StoreNotFoundError",
    "StoreOptionError",
    "StoreReadOnlyError",
    "StoreURLError",
    "SyncFileError",
    "TagFilter",
    "TransferEvent",
    "TransferPreview",
    "TransferResult",
    "TransportError",
    "UnexpectedHTTPStatusError",
    "UnsupportedError",
    "UploadLengthError",
    "UploadSession",
    "UploadStatus",
    "UsageError",
    "VerifyReport",
    "__version__",
    "copy",
    "create_bundle",
    "import_bundle",
    "open_store",
    "parse_reference",
    "preview_transfer",
    "pull",
    "push",
    "read_bundle",
    "transfer_many",
    "verify",
    "verify_bundle",
]
