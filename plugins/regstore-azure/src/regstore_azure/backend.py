"""``az://container/prefix`` (and ``abfs://``): the fsspec store on adlfs, with Azure's own
staging and locks.

:class:`AzureBackend` is :class:`regstore.backends.kit.FsspecBackend` on an
``adlfs.AzureBlobFileSystem`` (streamed reads of complete blobs, listing of blobs); the layouts
(``distribution``, ``oci``) and every manifest operation come from there unchanged. It is
handed the two parts of a composed store:

- the staging part :class:`~regstore_azure.staging.AzureBlockStaging` (Put Block, Get Block
  List, Put Block List, then a server-side copy into place);
- the lock part :class:`~regstore_azure.locks.AzureLeaseLockManager` (blob leases);

Small files (links, ``index.json``) are adlfs's: one Put Blob replaces a blob atomically
(``atomic_put``), and listing, removal and quarantine moves use FsspecBackend's generic fsspec
calls unchanged. Overridden are only what adlfs answers differently from what a store needs:
no directories to create, a blob under a pending server-side copy is not yet whole, and reads
use a bounded read-ahead. Every Azure SDK, aiohttp and OS failure becomes a chained
StoreError whose message never holds a credential.
"""

from __future__ import annotations

import functools
import os
import re
from typing import IO, Any

from regstore.backends.kit import (
    FsspecBackend,
    Option,
    StoreLocation,
    StoreOptionError,
    check_layout,
    location_factory,
    parse_flag,
)
from regstore.errors import StoreError

from .client import AzureObjects, translate_azure_errors
from .locks import DEFAULT_LEASE, AzureLeaseLockManager, check_lease
from .staging import AzureBlockStaging

__all__ = ["OPTIONS", "SCHEMES", "AzureBackend", "open_backend", "parse_azure_location"]

#: The URL schemes of this backend (adlfs's names for Azure Blob Storage).
SCHEMES = ("az", "abfs")

#: Options of ``open_store("az://...", **options)`` (and of the URL's query string).
OPTIONS: dict[str, Option[Any]] = {
    "account_name": Option(str, help="the storage account's name"),
    "account_url": Option(
        str, help="the Blob service URL, e.g. http://127.0.0.1:10000/devstoreaccount1"
    ),
    "account_key": Option(str),
    "sas_token": Option(str),
    "connection_string": Option(str),
    "anon": Option(parse_flag, help="true or false"),
    "layout": Option(check_layout, default="distribution"),
    "lease": Option(check_lease, default=DEFAULT_LEASE, help="whole seconds, 15 to 60"),
}

#: Environment variables read when the options do not say (the Azure CLI's names first).
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT = ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCOUNT_NAME")
ENV_KEY = ("AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY")
ENV_SAS = ("AZURE_STORAGE_SAS_TOKEN",)

# container names: 3-63 of [a-z0-9-], starting and ending with a letter or digit, no "--"
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII)
#: Reading a blob: adlfs fetches this much per request (and holds about that much in memory).
READ_BLOCK_SIZE = 4 * 1024 * 1024


def parse_azure_location(location: StoreLocation) -> tuple[str, str]:
    """``(container, prefix)`` of ``az://container/some/prefix`` (prefix without slashes at
    the ends). Raises StoreOptionError for anything else; the error shows no secret."""
    shown = location.shown
    if location.scheme not in SCHEMES:
        raise StoreOptionError(
            f"not an Azure store URL: {shown!r}", hint="write az://container/prefix"
        )
    container = location.host
    if "@" in container:
        raise StoreOptionError(
            f"an az:// store URL names the account with account_name=, not user info: {shown!r}",
            hint="write az://container/prefix?account_name=ACCOUNT",
        )
    if _CONTAINER.fullmatch(container) is None or "--" in container:
        raise StoreOptionError(
            f"invalid Azure container name {container!r} in {shown!r}",
            hint="3 to 63 lower-case letters, digits and single dashes",
        )
    prefix = location.path.strip("/")
    if prefix and any(_PREFIX_PART.fullmatch(p) is None for p in prefix.split("/")):
        raise StoreOptionError(
            f"invalid prefix {prefix!r} in {shown!r}",
            hint="use components of [A-Za-z0-9._-] not starting with a dot or a dash",
        )
    return container, prefix


class _TranslatingFS:
    """A view of an ``AzureBlobFileSystem`` whose methods raise only ``OSError`` or StoreError
    (adlfs lets Azure SDK and aiohttp exceptions escape; their messages may hold URLs)."""

    def __init__(self, fs: Any, where: str) -> None:
        self._fs = fs
        self._where = where

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._fs, name)
        if not callable(value) or name.startswith("_"):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with translate_azure_errors(f"{self._where}: {name}"):
                return value(*args, **kwargs)

        return call


class _TranslatingReader:
    """A blob stream from adlfs whose every failure is a StoreError."""

    def __init__(self, raw: IO[bytes], what: str) -> None:
        self._raw = raw
        self._what = what

    def read(self, n: int = -1, /) -> bytes:
        with translate_azure_errors(self._what):
            return self._raw.read(n)

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        with translate_azure_errors(self._what):
            return int(self._raw.readinto(buffer) or 0)  # type: ignore[attr-defined]

    def seek(self, offset: int, whence: int = 0) -> int:
        with translate_azure_errors(self._what):
            return int(self._raw.seek(offset, whence))

    def close(self) -> None:
        with translate_azure_errors(self._what):
            self._raw.close()


class AzureBackend(FsspecBackend):
    """A regstore store in an Azure Blob Storage container.

    Args:
        container, prefix: where the store lives (``az://container/prefix``).
        fs: the ``adlfs.AzureBlobFileSystem`` (reads and listings).
        container_client: the ``azure.storage.blob.ContainerClient`` (blocks, leases, copies,
            small files).
        layout: ``"distribution"`` (default) or ``"oci"``.
        lease: seconds a killed writer's lock outlives it (Azure's lease duration, 15-60).
        url: the URL the store was opened with (shown redacted).
    """

    backend_name = "azure"
    atomic_put = True  # one Put Blob replaces a small blob atomically

    def __init__(
        self,
        container: str,
        prefix: str,
        fs: Any,
        container_client: Any,
        *,
        layout: str = "distribution",
        lease: int = DEFAULT_LEASE,
        url: str = "",
    ) -> None:
        self.container = container
        self.prefix = prefix
        root = f"{container}/{prefix}" if prefix else container
        url = url or f"az://{root}"
        self.shown_url = StoreLocation.parse(url).shown
        self.raw_fs = fs
        self.objects = AzureObjects(container_client, self.shown_url)
        self.lease_locks = AzureLeaseLockManager(
            self.objects, self._name_prefix("_regstore/locks/"), lease=lease
        )
        super().__init__(
            _TranslatingFS(fs, self.shown_url),
            root,
            layout=layout,
            locks=self.lease_locks,
            staging=AzureBlockStaging(),
            url=url,
        )

    # -- names --------------------------------------------------------------------------------

    def _name_prefix(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def blob_name(self, path: str) -> str:
        """The blob name of an fsspec path in this container (``container/name`` → ``name``)."""
        head = f"{self.container}/"
        if not path.startswith(head):
            raise StoreError(f"path {path!r} is not in container {self.container!r}")
        return path[len(head) :]

    # -- what adlfs's generic answers get wrong for a store -----------------------------------

    def ensure_parent(self, path: str) -> None:
        """Nothing to do: blob storage has no directories (adlfs would ask for the container)."""

    def file_size(self, path: str) -> int | None:
        """The size of a whole blob; None while a server-side copy onto it is still pending."""
        info = self.objects.head(self.blob_name(path))
        return None if info is None else info.size

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        what = f"cannot read az://{path} ({self.shown_url})"
        with translate_azure_errors(what):
            raw: IO[bytes] = self.raw_fs.open(
                path, "rb", block_size=READ_BLOCK_SIZE, cache_type="readahead"
            )
            if offset:
                raw.seek(offset)
        return _TranslatingReader(raw, what)  # type: ignore[return-value]

    # -- housekeeping -------------------------------------------------------------------------

    def location(self, path: str) -> str:
        return f"az://{path}"

    def stat_file(self, path: str) -> tuple[int, float] | None:
        """``(size, mtime)`` of a whole blob (a pending copy is not one yet)."""
        info = self.objects.head(self.blob_name(path))
        return None if info is None else (info.size, info.mtime)

    # -- lifecycle ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            container=self.container,
            prefix=self.prefix,
            account_url=self.objects.container.primary_endpoint.split("?", 1)[0].rsplit(
                "/" + self.container, 1
            )[0],
            lease=self.lease_locks.lease,
        )
        return info

    def close(self) -> None:
        """Close this store's Azure client and its connections (adlfs's filesystem is shared by
        stores opened with the same options, and stays)."""
        with translate_azure_errors(f"cannot close {self.shown_url}"):
            self.objects.container.close()

    def __repr__(self) -> str:
        return f"AzureBackend({self.shown_url!r}, layout={self.layout.name!r})"


# -- credentials --------------------------------------------------------------------------------


def _env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _connection_string_value(text: str, key: str) -> str | None:
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals and name.strip().lower() == key.lower():
            return value.strip()
    return None


def build_clients(container: str, options: dict[str, Any]) -> tuple[Any, Any]:
    """``(adlfs filesystem, ContainerClient)`` from the store options; credentials the Azure
    way, first found wins: the ``connection_string``, ``account_key`` or ``sas_token``
    option; ``anon``; the ``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_KEY`` or
    ``AZURE_STORAGE_SAS_TOKEN`` environment variable; else ``DefaultAzureCredential``.
    """
    import adlfs
    from azure.storage.blob import ContainerClient

    account = options["account_name"] or _env(ENV_ACCOUNT)
    connection = options["connection_string"]
    key, sas = options["account_key"], options["sas_token"]
    if not (connection or key or sas or options["anon"]):
        connection = os.environ.get(ENV_CONNECTION_STRING) or None
        if not connection:
            key, sas = _env(ENV_KEY), _env(ENV_SAS)
    if connection:
        account = account or _connection_string_value(connection, "AccountName")
    elif not account and not options["account_url"]:
        raise StoreOptionError(
            "an Azure store needs its storage account",
            hint="add ?account_name=ACCOUNT (or account_url=, connection_string=, or set "
            "AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_CONNECTION_STRING)",
        )
    account_url = options["account_url"] or (
        _connection_string_value(connection, "BlobEndpoint") if connection else None
    )
    if not account_url:
        account_url = f"https://{account}.blob.core.windows.net"
    account_url = account_url.rstrip("/")

    with translate_azure_errors("cannot set up the Azure client"):
        if connection:
            client = ContainerClient.from_connection_string(connection, container)
            fs_kwargs: dict[str, Any] = {"connection_string": connection}
        elif key or sas:
            if key:
                credential: Any = {"account_name": account or "", "account_key": key}
                secret = f"AccountKey={key}"
            else:
                credential = sas.lstrip("?")
                secret = f"SharedAccessSignature={credential}"
            client = ContainerClient(account_url, container, credential=credential)
            protocol = "http" if account_url.startswith("http:") else "https"
            fs_kwargs = {
                "connection_string": f"DefaultEndpointsProtocol={protocol};AccountName="
                f"{account or ''};{secret};BlobEndpoint={account_url};"
            }
        elif options["anon"]:
            client = ContainerClient(account_url, container)
            fs_kwargs = {"account_name": account, "anon": True}
        else:
            from azure.identity import DefaultAzureCredential

            client = ContainerClient(account_url, container, credential=DefaultAzureCredential())
            fs_kwargs = {"account_name": account, "anon": False}
        if options["account_url"] and "connection_string" not in fs_kwargs:
            # reads and listings (adlfs) must go where the block and lease calls go
            fs_kwargs["account_host"] = account_url.split("://", 1)[-1]
        # Other processes write the same container: never answer from a stale listing. (Stores
        # opened with the same options share one filesystem and its connection pool: fsspec
        # caches instances by their arguments.)
        fs = adlfs.AzureBlobFileSystem(**fs_kwargs, use_listings_cache=False)
    return fs, client


@location_factory(OPTIONS)
def open_backend(location: StoreLocation) -> AzureBackend:
    """The factory for ``az://container/prefix`` and ``abfs://container/prefix``.

    Options (keywords, or the URL's query parameters as strings): ``account_name``,
    ``account_url``, ``account_key``, ``sas_token``, ``connection_string``, ``anon``,
    ``layout``, ``lease`` (seconds, 15 to 60). Without a credential option the environment
    (``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_SAS_TOKEN``)
    and then ``DefaultAzureCredential`` apply. Unknown or invalid options raise
    StoreOptionError.
    """
    container, prefix = parse_azure_location(location)
    options = location.options
    fs, client = build_clients(container, options)
    return AzureBackend(
        container,
        prefix,
        fs,
        client,
        layout=options["layout"],
        lease=options["lease"],
        url=location.text,
    )
