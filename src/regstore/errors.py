"""The one error hierarchy of regstore.

Every failure regstore raises through its public API is one of these; no ``requests``,
``botocore`` or ``OSError`` escapes unwrapped (the original is chained as ``__cause__``).
The names of the original Go package are kept (``BlobNotFoundError`` ...), with its two
sentinels ``ErrLayerAlreadyExists`` / ``ErrLayerLocked`` as ``LayerAlreadyExistsError`` and
``LayerLockedError``.

::

    RegstoreError
    ├── InvalidReferenceError          (also ValueError) a bad name, tag, digest or reference
    ├── ManifestInvalidError           (also ValueError) corrupt, hostile or oversized manifest
    ├── DigestMismatchError            bytes did not hash to (or were not the size of) the digest
    ├── NotFoundError                  (also LookupError)
    │   ├── BlobNotFoundError              name, digest
    │   ├── ImageManifestNotFoundError     name, tag
    │   │   └── PlatformNotFoundError          wanted, offered: no manifest of a platform asked
    │   ├── RepositoryNotFoundError        name
    │   ├── BlobUploadNotFoundError        location
    │   └── BundleBaseMissingError         base, missing: a delta's base is not at the target
    ├── BlobUploadInvalidRangeError    location, last_valid_range, blob_size
    ├── LayerAlreadyExistsError        digest: the layer is complete
    ├── LayerLockedError               digest: another writer holds the layer
    ├── RegistryError                  a registry answered with a failure (carries ``http``)
    │   ├── UnexpectedHTTPStatusError      status: nothing better matched
    │   ├── AuthenticationError            credentials missing, wrong or insufficient
    │   │   └── InsecureRealmError             an HTTPS registry named a plain-HTTP token realm
    │   ├── PagingError                    tag/catalog paging that does not advance
    │   │   └── PagingLimitError               more pages or entries than the client allows
    │   └── BlobTooLargeError              a blob of unknown length ran past the client's bound
    ├── TransportError                 the registry could not be reached or the connection broke
    ├── CredentialStoreError           docker's config file or a credential helper refused a write
    ├── RetriesExhaustedError          transient failures outlasted a blob's (or request's) retries
    ├── InterruptedTransferError       a blob move stopped between chunks: its batch was interrupted
    ├── StoreError                     a storage backend failed (I/O, full disk, ...)
    │   ├── BackendNotFoundError           no installed backend serves a URL scheme
    │   ├── StoreDamageError               path: a file no digest checks is damaged
    │   │   └── DamagedTagError                name, tag: its link names no digest
    │   ├── StoreEscapeError               path, link, target: a symlink leads out of the root
    │   ├── StoreNotFoundError             url: nothing was ever stored there (reading)
    │   ├── StoreOptionError               hint: a store URL or option its backend refuses
    │   │   └── StoreURLError                  (also UsageError) a store URL of no accepted form
    │   └── StoreReadOnlyError             url, operation: a change asked of a read-only store
    ├── PluginLoadError                a plugin's entry point could not be loaded (names the cause)
    ├── BundleInvalidError             a bundle that is not an OCI-layout tar regstore can read
    ├── ClusterError                   a Dask cluster could not be started or reached (or no extra)
    ├── UnsupportedError               a valid request regstore or the peer cannot honour
    └── UsageError                     (also ValueError) input regstore cannot act on
        ├── SyncFileError                  a sync file that is not YAML or not the format
        ├── FilterError                    a malformed tag filter (regex, version range)
        └── UploadLengthError              upload data shorter or longer than declared

Errors that come from an HTTP exchange carry an :class:`HTTPContext` in ``.http`` (method, URL
without credentials, status, the registry's error codes and messages), whatever their class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AuthenticationError",
    "BackendNotFoundError",
    "BlobNotFoundError",
    "BlobTooLargeError",
    "BlobUploadInvalidRangeError",
    "BlobUploadNotFoundError",
    "BundleBaseMissingError",
    "BundleInvalidError",
    "ClusterError",
    "CredentialStoreError",
    "DamagedTagError",
    "DigestMismatchError",
    "FilterError",
    "HTTPContext",
    "ImageManifestNotFoundError",
    "InsecureRealmError",
    "InterruptedTransferError",
    "InvalidReferenceError",
    "LayerAlreadyExistsError",
    "LayerLockedError",
    "ManifestInvalidError",
    "NotFoundError",
    "PagingError",
    "PagingLimitError",
    "PlatformNotFoundError",
    "PluginLoadError",
    "RegistryError",
    "RegistryErrorDetail",
    "RegstoreError",
    "RepositoryNotFoundError",
    "RetriesExhaustedError",
    "StoreDamageError",
    "StoreError",
    "StoreEscapeError",
    "StoreNotFoundError",
    "StoreOptionError",
    "StoreReadOnlyError",
    "StoreURLError",
    "SyncFileError",
    "TransportError",
    "UnexpectedHTTPStatusError",
    "UnsupportedError",
    "UploadLengthError",
    "UsageError",
]


@dataclass(frozen=True)
class RegistryErrorDetail:
    """One entry of an OCI error body: ``{"code", "message", "detail"}``."""

    code: str
    message: str = ""
    detail: Any = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


@dataclass(frozen=True)
class HTTPContext:
    """What was being done when a registry answered badly. The URL never holds credentials."""

    method: str
    url: str
    status: int | None = None
    errors: tuple[RegistryErrorDetail, ...] = field(default_factory=tuple)
    retry_after: float | None = None

    @property
    def codes(self) -> tuple[str, ...]:
        """The registry's error codes, in the order it sent them."""
        return tuple(e.code for e in self.errors)

    def describe(self) -> str:
        """A short human form: ``GET http://host/v2/... -> 404 (MANIFEST_UNKNOWN: ...)``."""
        text = f"{self.method} {self.url}"
        if self.status is not None:
            text += f" -> {self.status}"
        if self.errors:
            text += " (" + "; ".join(str(e) for e in self.errors) + ")"
        return text


class RegstoreError(Exception):
    """Base of every error regstore raises.

    ``http`` holds the HTTP exchange behind the error, when there was one; ``retryable`` says
    whether trying the same thing again later may succeed.
    """

    retryable: bool = False

    def __init__(self, message: str, *, http: HTTPContext | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http = http

    def __str__(self) -> str:
        if self.http is not None:
            return f"{self.message} [{self.http.describe()}]"
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException pickles as ``cls(*args)``, which breaks every subclass whose __init__
        # takes other arguments than the message (BlobNotFoundError(name, digest), ...).
        # Rebuild without calling __init__ and restore the attributes instead, so errors cross
        # process boundaries (ProcessPoolExecutor, multiprocessing) intact.
        return (_rebuild_error, (type(self), self.args), self.__dict__)


def _rebuild_error(cls: type[RegstoreError], args: tuple[Any, ...]) -> RegstoreError:
    error = cls.__new__(cls)
    error.args = args
    return error


class InvalidReferenceError(RegstoreError, ValueError):
    """A repository name, tag, digest or reference does not follow the OCI grammar.

    ``part`` names the bad part (``"name"``, ``"tag"``, ``"digest"``, ``"registry"``,
    ``"reference"``, ``"platform"``), ``value`` is what was given.
    """

    def __init__(self, part: str, value: object, reason: str) -> None:
        super().__init__(f"invalid {part} {value!r}: {reason}")
        self.part = part
        self.value = value
        self.reason = reason


class ManifestInvalidError(RegstoreError, ValueError):
    """A manifest is not valid JSON, too large, of an unknown shape, or has bad descriptors."""


class DigestMismatchError(RegstoreError):
    """Content did not match the digest (or size) it was announced under.

    ``subject`` says what was checked (e.g. ``"blob sha256:... of library/alpine"``).
    """

    def __init__(
        self,
        subject: str,
        *,
        expected: str,
        actual: str | None = None,
        expected_size: int | None = None,
        actual_size: int | None = None,
    ) -> None:
        parts = [f"{subject}: content does not match its digest {expected}"]
        if actual is not None and actual != expected:
            parts.append(f"got {actual}")
        if expected_size is not None and actual_size is not None and expected_size != actual_size:
            parts.append(f"size {actual_size} instead of {expected_size}")
        super().__init__(", ".join(parts))
        self.subject = subject
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size


class NotFoundError(RegstoreError, LookupError):
    """Something asked for does not exist (in a registry or in a store)."""


class BlobNotFoundError(NotFoundError):
    """The blob (layer, config, ...) does not exist in the registry repository or the store."""

    def __init__(self, name: str | None, digest: str, *, http: HTTPContext | None = None) -> None:
        where = f"Name: {name}, " if name else ""
        super().__init__(f"No blob found with {where}Digest: {digest}", http=http)
        self.name = name
        self.digest = digest


class ImageManifestNotFoundError(NotFoundError):
    """No manifest exists under this repository name and tag (or digest)."""

    def __init__(self, name: str, tag: str, *, http: HTTPContext | None = None) -> None:
        label = "Digest" if ":" in tag else "Tag"  # a tag never holds a colon; a digest does
        super().__init__(f"No manifest found with Name: {name}, {label}: {tag}", http=http)
        self.name = name
        self.tag = tag


class PlatformNotFoundError(ImageManifestNotFoundError):
    """The image at ``name``/``tag`` (a tag or digest) has a manifest for none of the platforms
    asked (``wanted``): an index without one, or an image of one other platform (``offered``:
    the platforms it has; ``single``: an image, not an index)."""

    def __init__(
        self, name: str, tag: str, wanted: Sequence[str], offered: Sequence[str], *, single: bool
    ) -> None:
        what = (
            f"an image for {offered[0] if offered else 'no platform'}"
            if single
            else f"an index of {', '.join(offered) or 'no platform'}"
        )
        RegstoreError.__init__(
            self, f"{name}@{tag} has no manifest for platform {', '.join(wanted)}: it is {what}"
        )
        self.name = name
        self.tag = tag
        self.wanted = tuple(wanted)
        self.offered = tuple(offered)
        self.single = single


class RepositoryNotFoundError(NotFoundError):
    """The repository does not exist."""

    def __init__(self, name: str, *, http: HTTPContext | None = None) -> None:
        super().__init__(f"No repository found with Name: {name}", http=http)
        self.name = name


class BlobUploadNotFoundError(NotFoundError):
    """The upload location is unknown: cancelled, completed or stale. Start the blob again."""

    def __init__(self, location: str, *, http: HTTPContext | None = None) -> None:
        super().__init__(f"No blob upload found at Location: {location}", http=http)
        self.location = location


class BlobUploadInvalidRangeError(RegstoreError):
    """A chunk was out of order. The registry holds ``blob_size`` bytes, the last valid byte
    being ``last_valid_range``; resume the upload at ``blob_size``.
    """

    retryable = True

    def __init__(
        self,
        location: str,
        last_valid_range: int,
        blob_size: int,
        *,
        http: HTTPContext | None = None,
    ) -> None:
        super().__init__(
            f"Invalid range provided for upload at Location: {location}. "
            f"Last Valid Range: {last_valid_range}, Blob Size: {blob_size}",
            http=http,
        )
        self.location = location
        self.last_valid_range = last_valid_range
        self.blob_size = blob_size


class LayerAlreadyExistsError(RegstoreError):
    """The layer is already complete in the store; it cannot be written again."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"Layer already exists: {digest}")
        self.digest = digest


class LayerLockedError(RegstoreError):
    """Another writer is writing this layer right now (in this or another process)."""

    retryable = True

    def __init__(self, digest: str) -> None:
        super().__init__(f"Layer locked: {digest} is being written by another writer")
        self.digest = digest


class RegistryError(RegstoreError):
    """A registry answered a request with a failure that has no more specific class."""


class UnexpectedHTTPStatusError(RegistryError):
    """The registry answered with a status regstore did not expect for this request."""

    def __init__(
        self, status: int | str, *, what: str = "", http: HTTPContext | None = None
    ) -> None:
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}Received unexpected HTTP status: {status}", http=http)
        self.status = status
        self.retryable = isinstance(status, int) and (status >= 500 or status in (408, 429))


class AuthenticationError(RegistryError):
    """Credentials were missing, wrong, or do not grant the access asked for."""


class InsecureRealmError(AuthenticationError):
    """An HTTPS registry sent its token challenge to a plain-HTTP realm: following it would send
    the credentials (or fetch the token) in cleartext, so it is refused unless TLS is off anyway
    (a plain-HTTP registry, or verification disabled)."""


class PagingError(RegistryError):
    """A registry's tag or catalog paging went wrong: its ``Link`` went back to a ``last``
    already asked for. ``registry`` and ``name`` (None for the catalog) say where."""

    def __init__(
        self,
        message: str,
        *,
        registry: str,
        name: str | None = None,
        http: HTTPContext | None = None,
    ) -> None:
        super().__init__(message, http=http)
        self.registry = registry
        self.name = name


class PagingLimitError(PagingError):
    """A tag or catalog listing needed more pages or entries than the client allows.

    ``limit`` names the client option (``max_pages`` or ``max_list_entries``), ``value`` its
    setting; the message says how to raise it.
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str,
        name: str | None = None,
        limit: str,
        value: int,
        http: HTTPContext | None = None,
    ) -> None:
        super().__init__(message, registry=registry, name=name, http=http)
        self.limit = limit
        self.value = value


class BlobTooLargeError(RegistryError):
    """A blob whose length nobody announced (no size in the manifest, no ``Content-Length``)
    ran past the client's ``max_unknown_blob_size``; ``limit`` is that bound in bytes."""

    def __init__(
        self, message: str, *, digest: str, limit: int, http: HTTPContext | None = None
    ) -> None:
        super().__init__(message, http=http)
        self.digest = digest
        self.limit = limit


class TransportError(RegstoreError):
    """The registry could not be reached, or a connection broke in the middle of an exchange."""

    retryable = True


class CredentialStoreError(RegstoreError):
    """Credentials could not be saved or erased: docker's config file is unreadable or not
    writable, or its credential helper failed. The message never holds the secret."""


class RetriesExhaustedError(RegstoreError):
    """Transient failures (broken connections, 5xx, 429) went on through every retry allowed.

    ``subject`` names the work (``pushing blob sha256:... (N bytes) to NAME on HOST``),
    ``retries`` the retries spent, ``last`` the last failure's text; that failure itself is the
    ``__cause__``, and its ``http`` — the last request and the registry's answer — is this
    error's ``http`` too. Running the same command later may succeed.
    """

    retryable = True

    def __init__(self, subject: str, retries: int, last: RegstoreError) -> None:
        super().__init__(
            f"{subject}: gave up after {retries} retries; the last failure: {last.message}",
            http=last.http,
        )
        self.subject = subject
        self.retries = retries
        self.last = str(last)


class InterruptedTransferError(RegstoreError):
    """A blob's move stopped between two chunks because its batch was interrupted (Ctrl-C,
    SIGTERM, the caller's own exception): what a pull staged stays for the next run."""


class StoreError(RegstoreError):
    """A storage backend failed: I/O error, full disk, permission, a corrupt store file."""


class StoreDamageError(StoreError):
    """A file of the store that no digest checks is damaged, at ``path``: a link file that
    names no digest, an OCI layout's ``index.json`` that is not an image index. What it meant
    is unknown, so nothing that deletes acts on what it might name; a damaged ``index.json``
    stops the store until it is restored.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class DamagedTagError(StoreDamageError):
    """Tag ``tag`` of ``name`` is damaged: its link file (``path``) names no digest (or a
    directory stands in its place). The tag is still listed; reading it raises this;
    ``verify`` reports it; a pull, copy or sync into it writes it again (a destination tag that
    names nothing usable is no reason to skip), and deleting the tag removes it. Whatever reads
    the tag as a source fails with it, and nothing that deletes by what tags name proceeds
    while it is there.
    """

    def __init__(self, name: str, tag: str, path: str, detail: str) -> None:
        super().__init__(f"tag {tag} of {name} is damaged: {detail}", path)
        self.name = name
        self.tag = tag


class StoreOptionError(StoreError):
    """A store URL or option is not valid for its backend; ``hint`` says what would be.

    Raised by backend factories (``open_store``), before anything is opened or created.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message}; {hint}" if hint else message)
        self.hint = hint


class BackendNotFoundError(StoreError):
    """No installed backend serves a store URL's scheme; ``hint`` says what to install."""

    def __init__(self, scheme: str, hint: str = "") -> None:
        msg = f"no regstore backend is installed for the URL scheme {scheme!r}"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)
        self.scheme = scheme
        self.hint = hint


class PluginLoadError(RegstoreError):
    """A plugin could not be loaded: its module is missing (a stale install), raised on import,
    or is not a regstore plugin (no ``@hookimpl``, a misspelt or mistyped hook).

    Says which: ``plugin`` (the entry-point name, also what ``REGSTORE_BLOCK_PLUGINS`` takes),
    ``distribution`` and ``version`` (None for an in-process plugin), ``entry_point`` (its value,
    ``module`` or ``module:attr``), ``cause`` (the original error as text) and ``scheme`` (the
    store URL scheme that was asked for, when there was one). Other plugins are unaffected.
    """

    def __init__(
        self,
        plugin: str,
        cause: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        entry_point: str | None = None,
        scheme: str | None = None,
    ) -> None:
        origin = f"{distribution} {version}" if distribution and version else distribution
        where = ", ".join(
            part
            for part in (
                f"distribution {origin}" if origin else "",
                f"entry point {plugin} = {entry_point}" if entry_point else "",
            )
            if part
        )
        msg = f"the regstore plugin {plugin!r}" + (f" ({where})" if where else "")
        msg += f" could not be loaded: {cause}; skip it with REGSTORE_BLOCK_PLUGINS={plugin}"
        if distribution:
            msg += f", or reinstall or uninstall {distribution}"
        if scheme:
            msg = f"the backend for the URL scheme {scheme!r} is unavailable: {msg}"
        super().__init__(msg)
        self.plugin = plugin
        self.cause = cause
        self.distribution = distribution
        self.version = version
        self.entry_point = entry_point
        self.scheme = scheme


class StoreEscapeError(StoreError):
    """A path inside a store root leads out of it through a symbolic link (``link`` points at
    ``target``): refused, so a store that came from elsewhere cannot redirect reads or writes.
    """

    def __init__(self, path: str, link: str, target: str) -> None:
        super().__init__(
            f"refusing to use {path}: the symbolic link {link} -> {target} leads out of the "
            "store root"
        )
        self.path = path
        self.link = link
        self.target = target


class StoreNotFoundError(StoreError):
    """A reading command found no store at ``url`` (a mistyped path or prefix, most likely)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"no store at {url} (nothing was ever stored there: check the URL; "
            "a pull, copy or sync creates the store)"
        )
        self.url = url


class StoreReadOnlyError(StoreError):
    """A change (``operation``) was asked of a store opened read-only (``read_only=True`` or
    ``?read_only=1``); nothing was changed.
    """

    def __init__(self, url: str, operation: str) -> None:
        super().__init__(
            f"the store {url} is open read-only: refusing to {operation} "
            "(open it without read_only to change it)"
        )
        self.url = url
        self.operation = operation


class BundleInvalidError(RegstoreError):
    """A bundle that is not an OCI image layout in a tar (no ``index.json``, a malformed bundle
    manifest, a ref name that is no ``NAME:TAG``), or that lacks what its index names."""


class BundleBaseMissingError(NotFoundError):
    """A delta bundle leaves out content the target does not have: its base bundle was never
    imported there, or went in under other repository names than the delta's images. ``base``
    names the base bundle ids, ``missing`` the digests lacking (all of them; the message shows
    the first few), ``base_images`` the ref names (``NAME:TAG``) the base bundles delivered,
    as the delta records them, ``searched`` the repositories (under the import's prefix)
    already looked in. The message names what the base held and suggests ``--base-repo``
    (``base_repositories=`` in Python) for its repositories not looked in yet. Raised before
    anything is tagged."""

    def __init__(
        self,
        bundle: str,
        base: list[str],
        missing: list[str],
        base_images: list[str] | None = None,
        searched: list[str] | None = None,
    ) -> None:
        few = BundleBaseMissingError._first_few
        bases = ", ".join(base) or "(none recorded)"
        message = (
            f"{bundle} is a delta of base bundle {bases}, which the target lacks: "
            f"{len(missing)} blob(s)/manifest(s) missing ({few(missing)}); import the base first"
        )
        held = list(base_images or [])
        looked = list(searched or [])
        # a base imported under other names than the delta's images is at the target all the
        # same, but only the importer may say where to look (never the bundle)
        others = [
            r for r in dict.fromkeys(n.rpartition(":")[0] or n for n in held) if r not in looked
        ]
        if others:
            options = " ".join(f"--base-repo {r}" for r in others[:3])
            message += (
                f", or, if it is imported already (it held {few(held)}), say where with "
                f"{options}{' ...' if len(others) > 3 else ''} (repositories under the "
                "target's prefix; base_repositories= in Python)"
            )
        elif held:
            message += f" (it held {few(held)})"
        super().__init__(message)
        self.bundle = bundle
        self.base = base
        self.missing = missing
        self.base_images = held
        self.searched = looked

    @staticmethod
    def _first_few(items: list[str]) -> str:
        """The first three of ``items``, and how many more (for a one-line message)."""
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        return ", ".join(items[:3]) + more


class ClusterError(RegstoreError):
    """A Dask cluster could not be started or reached (``regstore sync --workers N`` or
    ``--scheduler ADDRESS``), or the ``distributed`` package is missing (the message says to
    ``pip install 'regstore[dask]'``)."""


class UnsupportedError(RegstoreError):
    """A valid request that regstore, the backend or the registry cannot honour."""


class UsageError(RegstoreError, ValueError):
    """Input regstore cannot act on: a bad sync file, tag filter or upload length."""


class StoreURLError(StoreOptionError, UsageError):
    """A store URL of no accepted form (empty, or ``scheme:`` without ``//``).

    Also a :class:`UsageError`: the input is wrong, nothing was opened or created.
    """


class SyncFileError(UsageError):
    """The sync file is not valid YAML or does not follow the format; says where and why."""


class FilterError(UsageError):
    """A tag filter is malformed (a bad regular expression or version range)."""


class UploadLengthError(UsageError):
    """The data given for an upload is shorter or longer than its declared length."""
