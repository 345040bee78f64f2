"""The error tree: its shape, the seed's names and messages, the fields callers rely on."""

from __future__ import annotations

import copy
import inspect
import pickle
import re

import pytest

import regstore
from regstore import errors
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

DIGEST = "sha256:" + "ab" * 32

# class -> its parent in the tree drawn in the docstring of errors.py
TREE: dict[type[RegstoreError], type[BaseException]] = {
    RegstoreError: Exception,
    InvalidReferenceError: RegstoreError,
    ManifestInvalidError: RegstoreError,
    DigestMismatchError: RegstoreError,
    NotFoundError: RegstoreError,
    BlobNotFoundError: NotFoundError,
    ImageManifestNotFoundError: NotFoundError,
    RepositoryNotFoundError: NotFoundError,
    PlatformNotFoundError: ImageManifestNotFoundError,
    BlobUploadNotFoundError: NotFoundError,
    BundleBaseMissingError: NotFoundError,
    BundleInvalidError: RegstoreError,
    BlobUploadInvalidRangeError: RegstoreError,
    LayerAlreadyExistsError: RegstoreError,
    LayerLockedError: RegstoreError,
    RegistryError: RegstoreError,
    UnexpectedHTTPStatusError: RegistryError,
    AuthenticationError: RegistryError,
    InsecureRealmError: AuthenticationError,
    PagingError: RegistryError,
    PagingLimitError: PagingError,
    BlobTooLargeError: RegistryError,
    TransportError: RegstoreError,
    ClusterError: RegstoreError,
    CredentialStoreError: RegstoreError,
    RetriesExhaustedError: RegstoreError,
    InterruptedTransferError: RegstoreError,
    StoreError: RegstoreError,
    BackendNotFoundError: StoreError,
    PluginLoadError: RegstoreError,
    StoreDamageError: StoreError,
    DamagedTagError: StoreDamageError,
    StoreEscapeError: StoreError,
    StoreNotFoundError: StoreError,
    StoreOptionError: StoreError,
    StoreURLError: StoreOptionError,
    StoreReadOnlyError: StoreError,
    UnsupportedError: RegstoreError,
    UsageError: RegstoreError,
    SyncFileError: UsageError,
    FilterError: UsageError,
    UploadLengthError: UsageError,
}

# one instance of each, built as callers build them
SAMPLES: dict[type[RegstoreError], RegstoreError] = {
    RegstoreError: RegstoreError("something failed"),
    InvalidReferenceError: InvalidReferenceError("tag", "..", "bad"),
    ManifestInvalidError: ManifestInvalidError("not JSON"),
    DigestMismatchError: DigestMismatchError(
        "blob", expected=DIGEST, actual="sha256:" + "cd" * 32, expected_size=3, actual_size=4
    ),
    NotFoundError: NotFoundError("gone"),
    BlobNotFoundError: BlobNotFoundError("library/x", DIGEST),
    ImageManifestNotFoundError: ImageManifestNotFoundError("library/x", "latest"),
    RepositoryNotFoundError: RepositoryNotFoundError("library/x"),
    PlatformNotFoundError: PlatformNotFoundError(
        "library/x", "1", ["linux/arm64"], ["linux/amd64"], single=True
    ),
    BlobUploadNotFoundError: BlobUploadNotFoundError("http://r/v2/x/blobs/uploads/1"),
    BlobUploadInvalidRangeError: BlobUploadInvalidRangeError("http://r/u", 99, 100),
    LayerAlreadyExistsError: LayerAlreadyExistsError(DIGEST),
    LayerLockedError: LayerLockedError(DIGEST),
    RegistryError: RegistryError("denied"),
    UnexpectedHTTPStatusError: UnexpectedHTTPStatusError("500 Internal Server Error"),
    AuthenticationError: AuthenticationError("bad password"),
    InsecureRealmError: InsecureRealmError("realm http://t/token is plain HTTP"),
    PagingError: PagingError("Link went back", registry="r", name="library/x"),
    PagingLimitError: PagingLimitError(
        "too many pages", registry="r", name="library/x", limit="max_pages", value=10
    ),
    BlobTooLargeError: BlobTooLargeError("too long", digest=DIGEST, limit=1024),
    TransportError: TransportError("connection reset"),
    ClusterError: ClusterError("cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
    CredentialStoreError: CredentialStoreError("docker-credential-pass store failed"),
    InterruptedTransferError: InterruptedTransferError("interrupted"),
    RetriesExhaustedError: RetriesExhaustedError(
        f"pushing blob {DIGEST}",
        5,
        UnexpectedHTTPStatusError(
            503, what="uploading bytes 0-9", http=HTTPContext("PATCH", "http://r/u", 503)
        ),
    ),
    StoreError: StoreError("disk full"),
    BackendNotFoundError: BackendNotFoundError("s3", "pip install regstore-s3"),
    PluginLoadError: PluginLoadError(
        "s3", "ModuleNotFoundError: x", distribution="regstore-s3", version="1", entry_point="m"
    ),
    StoreDamageError: StoreDamageError(
        "corrupt /s/index.json: not an image index", "/s/index.json"
    ),
    DamagedTagError: DamagedTagError("app", "1", "/s/l", "corrupt link file /s/l: invalid digest"),
    StoreEscapeError: StoreEscapeError("/s/x/link", "/s/x", "/elsewhere"),
    StoreNotFoundError: StoreNotFoundError("file:///srv/mirorr"),
    StoreOptionError: StoreOptionError("unknown store layout 'x'", hint="choose one of: oci"),
    StoreURLError: StoreURLError("store URL 'memory:x' has no '//'", hint="write memory://NAME"),
    StoreReadOnlyError: StoreReadOnlyError("file:///srv/mirror", "write manifest app:1"),
    BundleBaseMissingError: BundleBaseMissingError("d.tar", ["sha256:" + "ef" * 32], [DIGEST]),
    BundleInvalidError: BundleInvalidError("no index.json"),
    UnsupportedError: UnsupportedError("no"),
    UsageError: UsageError("no such thing"),
    SyncFileError: SyncFileError("sync.yaml:3: sources: expected a list"),
    FilterError: FilterError("bad version range '>=x'"),
    UploadLengthError: UploadLengthError("got 3 bytes of 4"),
}


def all_error_classes() -> set[type[BaseException]]:
    return {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }


def test_the_tree_is_exactly_as_drawn() -> None:
    assert all_error_classes() == set(TREE)
    for cls, parent in TREE.items():
        assert cls.__bases__[0] is parent, cls
        assert issubclass(cls, RegstoreError)


def test_the_docstring_draws_the_same_tree() -> None:
    """The drawing in errors.py's docstring is the real hierarchy, indentation for parent."""
    doc = errors.__doc__ or ""
    drawing = doc.split("::", 1)[1].strip("\n").split("\n\n")[0]
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in drawing.splitlines():
        match = re.search(r"([A-Z][A-Za-z]+Error)", line)
        assert match, line
        column = match.start()
        while stack and stack[-1][0] >= column:
            stack.pop()
        drawn[match.group(1)] = stack[-1][1] if stack else None
        stack.append((column, match.group(1)))
    expected = {
        cls.__name__: (None if cls is RegstoreError else parent.__name__)
        for cls, parent in TREE.items()
    }
    assert drawn == expected


def test_the_seed_names_exist_spelled_exactly() -> None:
    seed_names = [
        "BlobNotFoundError",
        "BlobUploadInvalidRangeError",
        "BlobUploadNotFoundError",
        "ImageManifestNotFoundError",
        "RepositoryNotFoundError",
        "UnexpectedHTTPStatusError",
        "LayerAlreadyExistsError",  # ErrLayerAlreadyExists
        "LayerLockedError",  # ErrLayerLocked
    ]
    for name in seed_names:
        cls = getattr(errors, name)
        assert cls.__name__ == name
        assert getattr(regstore, name) is cls
    # every exported name is an error class of this module (or a context value), no typos
    for name in errors.__all__:
        obj = getattr(errors, name)
        assert obj.__name__ == name
    assert set(errors.__all__) == {c.__name__ for c in all_error_classes()} | {
        "HTTPContext",
        "RegistryErrorDetail",
    }
    assert errors.__all__ == sorted(errors.__all__)


def test_python_builtin_bases_for_catching() -> None:
    assert issubclass(InvalidReferenceError, ValueError)
    assert issubclass(ManifestInvalidError, ValueError)
    assert issubclass(NotFoundError, LookupError)
    for cls in (BlobNotFoundError, ImageManifestNotFoundError, RepositoryNotFoundError,
                BlobUploadNotFoundError):  # fmt: skip
        assert issubclass(cls, LookupError)
    assert not issubclass(DigestMismatchError, ValueError)


# -- the seed's messages ---------------------------------------------------------------------


def test_seed_message_formats() -> None:
    assert str(RepositoryNotFoundError("library/x")) == "No repository found with Name: library/x"
    assert (
        str(ImageManifestNotFoundError("library/x", "latest"))
        == "No manifest found with Name: library/x, Tag: latest"
    )
    assert str(BlobNotFoundError("x", DIGEST)) == f"No blob found with Name: x, Digest: {DIGEST}"
    assert (
        str(BlobUploadNotFoundError("http://r/u/1"))
        == "No blob upload found at Location: http://r/u/1"
    )
    assert str(BlobUploadInvalidRangeError("http://r/u/1", 1023, 1024)) == (
        "Invalid range provided for upload at Location: http://r/u/1. "
        "Last Valid Range: 1023, Blob Size: 1024"
    )
    assert (
        str(UnexpectedHTTPStatusError("500 Internal Server Error"))
        == "Received unexpected HTTP status: 500 Internal Server Error"
    )
    assert str(LayerAlreadyExistsError(DIGEST)).startswith("Layer already exists")
    assert str(LayerLockedError(DIGEST)).startswith("Layer locked")


def test_blob_not_found_without_a_repository() -> None:
    error = BlobNotFoundError(None, DIGEST)
    assert str(error) == f"No blob found with Digest: {DIGEST}"
    assert error.name is None and error.digest == DIGEST


def test_unexpected_status_with_context_and_int_status() -> None:
    error = UnexpectedHTTPStatusError(418, what="GetBlob")
    assert str(error) == "GetBlob: Received unexpected HTTP status: 418"
    assert error.status == 418


# -- fields ----------------------------------------------------------------------------------


def test_fields() -> None:
    e = BlobNotFoundError("library/x", DIGEST)
    assert (e.name, e.digest) == ("library/x", DIGEST)
    e2 = ImageManifestNotFoundError("library/x", "v1")
    assert (e2.name, e2.tag) == ("library/x", "v1")
    assert RepositoryNotFoundError("n").name == "n"
    assert BlobUploadNotFoundError("loc").location == "loc"
    r = BlobUploadInvalidRangeError("loc", 9, 10)
    assert (r.location, r.last_valid_range, r.blob_size) == ("loc", 9, 10)
    assert LayerAlreadyExistsError(DIGEST).digest == DIGEST
    assert LayerLockedError(DIGEST).digest == DIGEST
    i = InvalidReferenceError("digest", "sha256:x", "too short")
    assert (i.part, i.value, i.reason) == ("digest", "sha256:x", "too short")
    assert str(i) == "invalid digest 'sha256:x': too short"
    b = BackendNotFoundError("s3", "pip install regstore-s3")
    assert (b.scheme, b.hint) == ("s3", "pip install regstore-s3")
    assert "'s3'" in str(b) and "pip install regstore-s3" in str(b)
    assert BackendNotFoundError("x").hint == ""
    assert str(BackendNotFoundError("x")).endswith("'x'")


def test_plugin_load_error_fields_and_message() -> None:
    e = PluginLoadError("s3", "ImportError: gone", distribution="regstore-s3", version="0.2",
                        entry_point="regstore_s3", scheme="s3")  # fmt: skip
    assert (e.plugin, e.cause, e.distribution, e.version, e.entry_point, e.scheme) == (
        "s3", "ImportError: gone", "regstore-s3", "0.2", "regstore_s3", "s3",
    )  # fmt: skip
    assert str(e) == (
        "the backend for the URL scheme 's3' is unavailable: the regstore plugin 's3' "
        "(distribution regstore-s3 0.2, entry point s3 = regstore_s3) could not be loaded: "
        "ImportError: gone; skip it with REGSTORE_BLOCK_PLUGINS=s3, or reinstall or uninstall "
        "regstore-s3"
    )
    in_process = PluginLoadError("mine", "unknown hook 'regstore_x'")
    assert str(in_process) == (
        "the regstore plugin 'mine' could not be loaded: unknown hook 'regstore_x'; "
        "skip it with REGSTORE_BLOCK_PLUGINS=mine"
    )
    assert in_process.distribution is None and in_process.scheme is None


def test_digest_mismatch_fields_and_message() -> None:
    e = DigestMismatchError(
        "blob of x", expected=DIGEST, actual="sha256:" + "cd" * 32, expected_size=3, actual_size=4
    )
    assert (e.subject, e.expected, e.actual) == ("blob of x", DIGEST, "sha256:" + "cd" * 32)
    assert (e.expected_size, e.actual_size) == (3, 4)
    text = str(e)
    assert text.startswith("blob of x: ") and DIGEST in text
    assert "got sha256:" + "cd" * 32 in text and "size 4 instead of 3" in text
    only_size = DigestMismatchError("b", expected=DIGEST, actual=DIGEST, expected_size=1,
                                    actual_size=2)  # fmt: skip
    assert "got" not in str(only_size) and "size 2 instead of 1" in str(only_size)
    bare = DigestMismatchError("b", expected=DIGEST)
    assert (bare.actual, bare.expected_size, bare.actual_size) == (None, None, None)


def test_retryable() -> None:
    assert RegstoreError.retryable is False
    assert TransportError("x").retryable
    assert LayerLockedError(DIGEST).retryable
    assert BlobUploadInvalidRangeError("l", 0, 1).retryable
    assert not BlobNotFoundError("x", DIGEST).retryable
    assert not AuthenticationError("x").retryable
    for status, retryable in [(500, True), (503, True), (429, True), (408, True), (404, False),
                              (400, False), ("500 Internal Server Error", False)]:  # fmt: skip
        assert UnexpectedHTTPStatusError(status).retryable is retryable, status


# -- HTTP context ----------------------------------------------------------------------------


def test_http_context_describe() -> None:
    ctx = HTTPContext(
        "GET",
        "http://127.0.0.1:5000/v2/x/manifests/latest",
        404,
        (RegistryErrorDetail("MANIFEST_UNKNOWN", "manifest unknown", {"Tag": "latest"}),
         RegistryErrorDetail("NAME_UNKNOWN")),
    )  # fmt: skip
    assert ctx.codes == ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert ctx.describe() == (
        "GET http://127.0.0.1:5000/v2/x/manifests/latest -> 404 "
        "(MANIFEST_UNKNOWN: manifest unknown; NAME_UNKNOWN)"
    )
    assert HTTPContext("HEAD", "http://h/v2/").describe() == "HEAD http://h/v2/"
    assert HTTPContext("GET", "http://h/v2/", 500).describe() == "GET http://h/v2/ -> 500"
    assert HTTPContext("GET", "u").codes == ()
    assert HTTPContext("GET", "u", retry_after=1.5).retry_after == 1.5
    assert str(RegistryErrorDetail("DENIED", "no")) == "DENIED: no"
    assert str(RegistryErrorDetail("DENIED")) == "DENIED"


def test_errors_carry_http_context_in_their_text() -> None:
    ctx = HTTPContext("GET", "http://r/v2/x/blobs/" + DIGEST, 404,
                      (RegistryErrorDetail("BLOB_UNKNOWN", "blob unknown"),))  # fmt: skip
    error = BlobNotFoundError("x", DIGEST, http=ctx)
    assert error.http is ctx
    assert error.message == f"No blob found with Name: x, Digest: {DIGEST}"
    assert str(error) == f"{error.message} [{ctx.describe()}]"
    assert RegistryError("denied", http=ctx).http is ctx
    assert RegstoreError("plain").http is None
    assert str(RegstoreError("plain")) == "plain"


def test_http_context_is_frozen() -> None:
    ctx = HTTPContext("GET", "u")
    with pytest.raises(AttributeError):
        ctx.status = 200  # type: ignore[misc]


# -- errors travel ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_every_error_pickles_and_copies_with_its_fields(cls: type[RegstoreError]) -> None:
    error = SAMPLES[cls]
    assert type(error) is cls
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(clone) is cls
        assert str(clone) == str(error)
        assert clone.args == error.args
        assert vars(clone) == vars(error)


def test_pickled_error_keeps_http_context() -> None:
    ctx = HTTPContext("PATCH", "http://r/u", 416, (RegistryErrorDetail("BLOB_UPLOAD_INVALID"),))
    error = BlobUploadInvalidRangeError("http://r/u", 5, 6, http=ctx)
    clone = pickle.loads(pickle.dumps(error))
    assert clone.http == ctx
    assert (clone.location, clone.last_valid_range, clone.blob_size) == ("http://r/u", 5, 6)
    assert clone.retryable


def test_chained_cause_is_kept() -> None:
    try:
        try:
            raise ConnectionResetError("peer")
        except OSError as exc:
            raise TransportError("connection broke") from exc
    except TransportError as error:
        assert isinstance(error.__cause__, ConnectionResetError)
