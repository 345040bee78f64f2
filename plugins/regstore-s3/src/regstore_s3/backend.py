"""``s3://bucket/prefix``: the fsspec store on s3fs, with S3's own staging, promotion and locks.

:class:`S3Backend` is :class:`regstore.backends.fsspec_store.FsspecBackend` on an
``s3fs.S3FileSystem``; the layouts (``distribution``, ``oci``) and every manifest operation come
from there unchanged. What S3 needs beyond a filesystem is overridden here:

- **staging and promotion** (:mod:`regstore_s3.staging`): a blob is staged as part objects
  under ``<prefix>/_regstore/uploads/<alg>/<hex>/`` and made visible by a server-side multipart
  copy completed after verification (a single copy or PUT for a one-part blob);
- **locks** (:mod:`regstore_s3.locks`): lease objects under ``<prefix>/_regstore/locks/``,
  created with ``If-None-Match: *``, renewed while held, broken once expired;
- **small files** (links, ``index.json``, ``oci-layout``): one ``PutObject`` each, which S3
  makes visible atomically, so no temporary object and rename are needed;
- **housekeeping** (:mod:`regstore_s3.leftovers`): staged part objects, expired lock objects,
  quarantined blobs and incomplete multipart uploads are listed for ``verify`` and ``gc``;
  a blob is quarantined by a server-side copy and then a delete of its final key;
- **errors**: every S3, botocore and aiohttp failure becomes a chained StoreError (s3fs's own
  ``OSError`` translations included).

``index.json`` (oci layout) is read, modified and written under the store-wide mutex
``oci-index``, which here is a lease object: concurrent taggers in any number of processes and
hosts take turns, and a crashed tagger's mutex is broken after its lease.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

from regstore.backends import BlobLock, FsspecBackend, StagingStream
from regstore.backends.fsspec_store import WalkedFile
from regstore.backends.housekeeping import UPLOADS_DIR, group_uploads
from regstore.errors import StoreError, UnsupportedError
from regstore.hookspecs import BlobWriteHandle, StagingEntry, StagingKind
from regstore.reference import Digest
from regstore.safetext import redact_store_url

from .client import ObjectInfo, S3Objects, translate_s3_errors
from .leftovers import drop_multipart, multipart_entries
from .locks import DEFAULT_LEASE, S3Lease, S3LeaseLockManager
from .parts import MAX_PART_SIZE, parse_size, validate_part_size
from .staging import S3BlobWriter, promote_parts, valid_parts

__all__ = ["OPTIONS", "S3Backend", "open_backend", "parse_s3_url"]

#: Options of ``open_store("s3://...", **options)`` (and of the URL's query string).
OPTIONS = (
    "endpoint_url",
    "region",
    "profile",
    "key",
    "secret",
    "token",
    "anon",
    "part_size",
    "layout",
    "lease",
    "addressing_style",
    "verify",
    "retries",
)

# S3 bucket names (the general-purpose rules, plus dots)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII)
#: Reading a blob: s3fs fetches this much per request (and holds about that much in memory).
READ_BLOCK_SIZE = 8 * 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` from ``s3://bucket/some/prefix`` (prefix without slashes at the
    ends; empty for the bucket's root). Raises StoreError for anything else; the error shows
    the URL without its secrets (user info, ``secret=`` ...).
    """
    shown = redact_store_url(url)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "s3":
        raise StoreError(f"not an S3 store URL: {shown!r} (expected s3://bucket/prefix)")
    if parsed.fragment:
        raise StoreError(f"an S3 store URL has no fragment: {shown!r}")
    bucket = parsed.netloc
    if "@" in bucket:
        raise StoreError(
            f"an S3 store URL takes no credentials before the bucket: {shown!r}; give the "
            "key= and secret= options, or let the AWS credential chain find them"
        )
    if _BUCKET.fullmatch(bucket) is None or ".." in bucket:
        raise StoreError(f"invalid S3 bucket name {bucket!r} in {shown!r}")
    prefix = parsed.path.strip("/")
    if prefix and any(_PREFIX_PART.fullmatch(p) is None for p in prefix.split("/")):
        raise StoreError(
            f"invalid S3 prefix {prefix!r} in {shown!r}: use components of [A-Za-z0-9._-] "
            "not starting with a dot or a dash"
        )
    return bucket, prefix


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise StoreError(f"option {name} must be true or false, not {value!r}")


class _TranslatingFS:
    """A view of an ``S3FileSystem`` whose methods raise only ``OSError`` or StoreError.

    s3fs turns S3 error responses into ``OSError`` subclasses (which FsspecBackend relies on:
    ``FileNotFoundError`` means "absent", and the hook boundary chains the rest into
    StoreError), but lets botocore's own exceptions (no credentials, endpoint unreachable,
    ...) and aiohttp's escape. Those become StoreError here, chained.
    """

    def __init__(self, fs: Any, describe: str) -> None:
        self._fs = fs
        self._describe = describe

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._fs, name)
        if not callable(value) or name.startswith("_"):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except OSError:
                raise
            except Exception as exc:
                with translate_s3_errors(f"{self._describe}: {name}"):
                    raise exc
                raise  # pragma: no cover - translate_s3_errors always raises

        return call


class _TranslatingReader:
    """A blob stream from s3fs whose every failure is a StoreError (never a botocore error)."""

    def __init__(self, raw: IO[bytes], what: str) -> None:
        self._raw = raw
        self._what = what

    def read(self, n: int = -1, /) -> bytes:
        with translate_s3_errors(self._what):
            return self._raw.read(n)

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        with translate_s3_errors(self._what):
            return int(self._raw.readinto(buffer) or 0)  # type: ignore[attr-defined]

    def seek(self, offset: int, whence: int = 0) -> int:
        with translate_s3_errors(self._what):
            return int(self._raw.seek(offset, whence))

    def close(self) -> None:
        with translate_s3_errors(self._what):
            self._raw.close()


class S3Backend(FsspecBackend):
    """A regstore store in an S3 bucket (AWS or any S3-compatible endpoint).

    Args:
        bucket, prefix: where the store lives (``s3://bucket/prefix``).
        fs: the ``s3fs.S3FileSystem`` to use (built from the options by :func:`open_backend`).
        layout: ``"distribution"`` (default; a registry's S3 driver with this bucket and
            ``rootdirectory: /prefix`` serves it) or ``"oci"``.
        part_size: multipart part size in bytes (5 MiB ... 5 GiB); None derives it from each
            blob's size (see :mod:`regstore_s3.parts`).
        lease: seconds a writer's lock outlives its last renewal (a crashed writer's blob is
            writable again after that).
    """

    backend_name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        fs: Any,
        *,
        layout: str = "distribution",
        part_size: int | None = None,
        lease: float = DEFAULT_LEASE,
        url: str = "",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        root = f"{bucket}/{prefix}" if prefix else bucket
        url = url or f"s3://{root}"
        self.raw_fs = fs
        self.objects = S3Objects(fs, bucket)
        self.part_size = None if part_size is None else validate_part_size(part_size)
        locks = S3LeaseLockManager(self.objects, self._key_prefix("_regstore/locks/"), lease=lease)
        super().__init__(
            _TranslatingFS(fs, redact_store_url(url)), root, layout=layout, locks=locks, url=url
        )
        self.lease_locks = locks

    # -- keys --------------------------------------------------------------------------------

    def _key_prefix(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def key_of(self, path: str) -> str:
        """The object key of an fsspec path under this bucket (``bucket/key`` → ``key``)."""
        head = f"{self.bucket}/"
        if not path.startswith(head):
            raise StoreError(f"path {path!r} is not in bucket {self.bucket!r}")
        return path[len(head) :]

    def staging_key(self, digest: Digest) -> str:
        """The key prefix (ending in ``/``) of a blob's staged parts."""
        return self.key_of(self.staging_path(digest)) + "/"

    # -- small files: a PUT is atomic on S3 --------------------------------------------------

    def ensure_parent(self, path: str) -> None:
        """Nothing to do: S3 has no directories."""

    def write_file(self, path: str, data: bytes) -> None:
        self.objects.put(self.key_of(path), bytes(data))

    def read_file(self, path: str) -> bytes | None:
        found = self.objects.get(self.key_of(path))
        return None if found is None else found[0]

    def file_size(self, path: str) -> int | None:
        info = self.objects.head(self.key_of(path))
        return None if info is None else info.size

    def exists(self, path: str) -> bool:
        key = self.key_of(path)
        return self.objects.head(key) is not None or self.objects.has_prefix(key.rstrip("/") + "/")

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        prefix = self.key_of(path).rstrip("/") + "/"
        files, folders = self.objects.list_children(prefix)
        found = [(info.key[len(prefix) :], False) for info in files]
        found += [(folder[len(prefix) :].rstrip("/"), True) for folder in folders]
        return [(name, is_dir) for name, is_dir in found if name and "/" not in name]

    def remove(self, path: str, *, recursive: bool = False) -> None:
        key = self.key_of(path)
        if recursive:
            keys = [info.key for info in self.objects.list_objects(key.rstrip("/") + "/")]
            self.objects.delete_many([key, *keys])
        else:
            self.objects.delete(key)

    # -- staging strategy --------------------------------------------------------------------

    def scan_staged(self, digest: Digest) -> list[ObjectInfo]:
        """The usable staged parts of ``digest``, in order (see :func:`valid_parts`).

        Objects that cannot be resumed (after a gap, foreign names) are deleted when the
        caller holds the blob's lock; this is only called by a writer.
        """
        prefix = self.staging_key(digest)
        usable, junk = valid_parts(self.objects.list_objects(prefix), prefix)
        if junk:
            self.objects.delete_many(junk)
        return usable

    def staged_size(self, digest: Digest) -> int:
        prefix = self.staging_key(digest)
        usable, _ = valid_parts(self.objects.list_objects(prefix), prefix)
        return sum(p.size for p in usable)

    def open_staging(self, digest: Digest) -> StagingStream:
        raise UnsupportedError("S3 stores stage blobs through S3BlobWriter, not a stream")

    def read_staged(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        prefix = self.staging_key(digest)
        usable, _ = valid_parts(self.objects.list_objects(prefix), prefix)
        for part in usable:
            for start in range(0, part.size, chunk_size):
                yield self.objects.read_range(
                    part.key, start, min(start + chunk_size, part.size), if_match=part.etag
                )

    def promote_staged(self, digest: Digest, size: int) -> None:
        prefix = self.staging_key(digest)
        usable, _ = valid_parts(self.objects.list_objects(prefix), prefix)
        staged = sum(p.size for p in usable)
        if staged != size:
            self.discard_staged(digest)
            raise StoreError(
                f"staged bytes of {digest} changed under the writer ({staged} != {size} bytes)"
            )
        self.prepare()
        final_key = self.key_of(self.layout.blob_path(digest))
        if usable:
            promote_parts(self.objects, usable, final_key)
        else:
            self.objects.put(final_key, b"")
        self.discard_staged(digest)

    def discard_staged(self, digest: Digest) -> None:
        keys = [info.key for info in self.objects.list_objects(self.staging_key(digest))]
        self.objects.delete_many(keys)

    def make_write_handle(self, digest: Digest, lock: BlobLock) -> BlobWriteHandle:
        if not isinstance(lock, S3Lease):
            raise StoreError(f"S3 blob writers need an S3 lease, not {lock!r}")
        return S3BlobWriter(self, digest, lock)

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        what = f"cannot read s3://{path}"
        try:
            with translate_s3_errors(what):
                raw: IO[bytes] = self.raw_fs.open(
                    path, "rb", block_size=READ_BLOCK_SIZE, cache_type="readahead"
                )
                if offset:
                    raw.seek(offset)
        except StoreError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise exc.__cause__ from None  # the base class answers BlobNotFoundError
            raise
        return _TranslatingReader(raw, what)  # type: ignore[return-value]

    # -- housekeeping ------------------------------------------------------------------------

    def location(self, path: str) -> str:
        return f"s3://{path}"

    def walk_files(self, base: str) -> list[WalkedFile]:
        prefix = self.key_of(base).rstrip("/") + "/"
        return [
            (info.key[len(prefix) :], info.size, info.mtime)
            for info in self.objects.list_objects(prefix)
        ]

    def stat_file(self, path: str) -> tuple[int, float] | None:
        info = self.objects.head(self.key_of(path))
        return None if info is None else (info.size, info.mtime)

    def upload_entry(self, digest: Digest) -> StagingEntry | None:
        base = self.work_path(UPLOADS_DIR)
        prefix = self.key_of(base) + "/"
        files = [
            (info.key[len(prefix) :], info.size, info.mtime)
            for info in self.objects.list_objects(self.staging_key(digest))
        ]
        return next(iter(group_uploads(self, files, base)), None)

    def move_aside(self, source: str, target: str) -> None:
        # Copy server-side, then delete: the blob is whole until the delete, then absent.
        # The copy is a new object, dated now (the grace of gc runs from the quarantine).
        source_key, target_key = self.key_of(source), self.key_of(target)
        size = self.file_size(source)
        if size is not None and size > MAX_PART_SIZE:
            self.fs.copy(source, target)  # s3fs copies over 5 GiB as a multipart copy
        else:
            self.objects.copy(source_key, target_key)
        self.objects.delete(source_key)

    def list_staging(self) -> list[StagingEntry]:
        return [*super().list_staging(), *multipart_entries(self)]

    def drop_staging(self, entry: StagingEntry) -> bool:
        if entry.kind is StagingKind.MULTIPART:
            return not entry.active and drop_multipart(self, entry)
        return super().drop_staging(entry)

    def store_exists(self) -> bool:
        """True if any object lies under the prefix (S3 has no empty directories)."""
        return self.objects.has_prefix(f"{self.prefix}/" if self.prefix else "")

    # -- lifecycle ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=getattr(self.raw_fs, "endpoint_url", None),
            part_size=self.part_size or "derived",
            lease=self.lease_locks.lease,
        )
        return info


def _build_filesystem(options: dict[str, Any]) -> Any:
    """An ``s3fs.S3FileSystem`` from the store options (credentials never logged)."""
    import s3fs

    client_kwargs: dict[str, Any] = {}
    config_kwargs: dict[str, Any] = {}
    fs_kwargs: dict[str, Any] = {
        # Other processes write the same bucket: never answer from a stale listing.
        # (Stores opened with the same options share one S3FileSystem, hence one client and
        # connection pool: fsspec caches instances by their arguments.)
        "use_listings_cache": False,
    }
    if options.get("endpoint_url"):
        fs_kwargs["endpoint_url"] = str(options["endpoint_url"])
    if options.get("region"):
        client_kwargs["region_name"] = str(options["region"])
    if options.get("profile"):
        fs_kwargs["profile"] = str(options["profile"])
    key, secret = options.get("key"), options.get("secret")
    if bool(key) != bool(secret):
        raise StoreError("S3 options key and secret go together (or use neither)")
    if key:
        fs_kwargs["key"] = str(key)
        fs_kwargs["secret"] = str(secret)
        if options.get("token"):
            fs_kwargs["token"] = str(options["token"])
    if "anon" in options:
        fs_kwargs["anon"] = _flag("anon", options["anon"])
    style = options.get("addressing_style")
    if style:
        if style not in ("auto", "path", "virtual"):
            raise StoreError(f"addressing_style must be auto, path or virtual, not {style!r}")
        config_kwargs["s3"] = {"addressing_style": str(style)}
    if "verify" in options:
        verify = options["verify"]
        flags = ("1", "0", "true", "false", "yes", "no", "on", "off")
        if isinstance(verify, str) and verify.lower() not in flags:
            client_kwargs["verify"] = verify  # a CA bundle path
        else:
            client_kwargs["verify"] = _flag("verify", verify)
    if options.get("retries") not in (None, ""):
        try:
            attempts = int(options["retries"]) + 1
        except (TypeError, ValueError):
            raise StoreError(
                f"retries must be a whole number, not {options['retries']!r}"
            ) from None
        if attempts < 1:
            raise StoreError("retries must not be negative")
        # botocore's own retries (connection errors, throttling, 5xx): attempts = 1 + retries
        config_kwargs["retries"] = {"max_attempts": attempts, "mode": "standard"}
    if client_kwargs:
        fs_kwargs["client_kwargs"] = client_kwargs
    if config_kwargs:
        fs_kwargs["config_kwargs"] = config_kwargs
    with translate_s3_errors("cannot set up the S3 client"):
        return s3fs.S3FileSystem(**fs_kwargs)


def open_backend(url: str, **options: Any) -> S3Backend:
    """The factory for ``s3://bucket/prefix``.

    Options (keywords, or the URL's query parameters as strings): ``endpoint_url``,
    ``region``, ``profile``, ``key`` + ``secret`` (+ ``token``) or the normal AWS credential
    chain, ``anon``, ``part_size`` (bytes or ``8MiB``), ``layout``, ``lease`` (seconds),
    ``addressing_style``, ``verify`` (bool or CA bundle path), ``retries`` (botocore retries
    per request). Unknown options raise StoreError.
    """
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    options = {**query, **options}
    url = url.split("?", 1)[0]
    shown = redact_store_url(url)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise StoreError(
            f"unknown option(s) for s3:// stores: {', '.join(unknown)} "
            f"(known: {', '.join(OPTIONS)})"
        )
    bucket, prefix = parse_s3_url(url)
    try:
        part_size = (
            None if options.get("part_size") in (None, "") else parse_size(options["part_size"])
        )
        if part_size is not None:
            validate_part_size(part_size)
        lease = float(options.get("lease") or DEFAULT_LEASE)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"invalid option for {shown}: {exc}") from None
    fs = _build_filesystem(options)
    try:
        return S3Backend(
            bucket,
            prefix,
            fs,
            layout=str(options.get("layout") or "distribution"),
            part_size=part_size,
            lease=lease,
            url=url,
        )
    except ValueError as exc:
        raise StoreError(f"invalid option for {shown}: {exc}") from None
