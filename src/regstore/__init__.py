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

from importlib.metadata import PackageNotFoundError, version

from regstore.bundle import (
    BaseBundle,
    BundledImage,
    BundleManifest,
    BundleVerifyReport,
    create_bundle,
    import_bundle,
    read_bundle,
    verify_bundle,
)
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
from regstore.engine.filters import TagFilter
from regstore.engine.model import Image, ImageOutcome, ImageStatus
from regstore.engine.progress import ImageProgress, Progress, ProgressSnapshot
from regstore.engine.verify import Problem, ProblemKind, VerifyReport, verify
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
    DigestMismatchError,
    FilterError,
    HTTPContext,
    ImageManifestNotFoundError,
    InsecureRealmError,
    InvalidReferenceError,
    LayerAlreadyExistsError,
    LayerLockedError,
    ManifestInvalidError,
    NotFoundError,
    PagingError,
    PagingLimitError,
    PluginLoadError,
    RegistryError,
    RegistryErrorDetail,
    RegstoreError,
    RepositoryNotFoundError,
    RetriesExhaustedError,
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
from regstore.events import EventKind, EventSink, Operation, TransferEvent
from regstore.imagelist import ImageRecord
from regstore.manifest import Descriptor, Manifest, Platform, SignedManifest
from regstore.reference import Digest, Reference, parse_reference
from regstore.store import Layer, LayerReader, LayerWriter, ObjectStore, open_store
from regstore.storetypes import BlobInfo, BlobState, BlobStatus
from regstore.wire import UploadSession, UploadStatus

try:
    __version__ = version("regstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

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
    "BundleInvalidError",
    "BundleManifest",
    "BundleVerifyReport",
    "BundledImage",
    "Client",
    "ClusterError",
    "CredentialStoreError",
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
    "PluginLoadError",
    "Problem",
    "ProblemKind",
    "Progress",
    "ProgressSnapshot",
    "Reference",
    "RegistryError",
    "RegistryErrorDetail",
    "RegistryImage",
    "RegstoreError",
    "RepositoryNotFoundError",
    "RetriesExhaustedError",
    "SignedManifest",
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
    "pull",
    "push",
    "read_bundle",
    "transfer_many",
    "verify",
    "verify_bundle",
]
