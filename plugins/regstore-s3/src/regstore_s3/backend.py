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
from typing import IO, Any

from regstore.backends.kit import (
    FsspecBackend,
    Option,
    StoreLocation,
    StoreOptionError,
    WalkedFile,
    check_layout,
    location_factory,
    parse_flag,
)
from regstore.errors import StoreError
from regstore.safetext import redact_store_url

from .client import S3Objects, is_missing_bucket, translate_s3_errors
from .locks import DEFAULT_LEASE, MIN_LEASE, S3LeaseLockManager
from .parts import MAX_PART_SIZE, parse_size, validate_part_size
from .staging import STAGING_MODES, S3PartStaging
from .stream import ObjectStream

__all__ = ["OPTIONS", "S3Backend", "open_backend", "parse_s3_location"]


def _part_size(value: Any) -> int | None:
    return None if value in (None, "") else validate_part_size(parse_size(value))


def _staging(value: Any) -> str:
    mode = str(value or STAGING_MODES[0])
    if mode not in STAGING_MODES:
        raise ValueError(f"staging must be {' or '.join(STAGING_MODES)}, not {value!r}")
    return mode


def _lease(value: Any) -> float:
    lease = float(value or DEFAULT_LEASE)
    if lease < MIN_LEASE:
        raise ValueError(f"lease must be at least {MIN_LEASE:g} s, not {lease:g}")
    return lease


def _addressing(value: Any) -> str:
    if str(value) not in ("auto", "path", "virtual", ""):
        raise ValueError(f"addressing_style must be auto, path or virtual, not {value!r}")
    return str(value)


def _verify(value: Any) -> bool | str:
    try:
        return parse_flag(value)
    except ValueError:
        return str(value)  # a CA bundle path


def _retries(value: Any) -> int | None:
    if value in (None, ""):
        return None
    retries = int(value)
    if retries < 0:
        raise ValueError("retries must not be negative")
    return retries


def _read_timeout(value: Any) -> float | None:
    if value in (None, ""):
        return None
    seconds = float(value)
    if not seconds > 0:
        raise ValueError("read_timeout must be a positive number of seconds")
    return seconds


#: Options of ``open_store("s3://...", **options)`` (and of the URL's query string).
OPTIONS: dict[str, Option[Any]] = {
    "endpoint_url": Option(str),
    "region": Option(str),
    "profile": Option(str),
    "key": Option(str),
    "secret": Option(str),
    "token": Option(str),
    "anon": Option(parse_flag, help="true or false"),
    "part_size": Option(_part_size, help="bytes or a size such as 8MiB, from 5 MiB to 5 GiB"),
    "staging": Option(_staging, default=STAGING_MODES[0], help=" or ".join(STAGING_MODES)),
    "layout": Option(check_layout, default="distribution"),
    "lease": Option(_lease, default=DEFAULT_LEASE, help="seconds, at least 1"),
    "addressing_style": Option(_addressing, help="auto, path or virtual"),
    "verify": Option(_verify, help="true, false or the path of a CA bundle"),
    "retries": Option(_retries, help="a whole number of retries per request"),
    "read_timeout": Option(_read_timeout, help="seconds without an answer before a retry"),
}

# S3 bucket names (the general-purpose rules, plus dots)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII)


def parse_s3_location(location: StoreLocation) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/some/prefix`` (prefix without slashes at the
    ends; empty for the bucket's root). Raises StoreOptionError for anything else; the error
    shows the URL without its secrets.
    """
    shown = location.shown
    if location.scheme != "s3":
        raise StoreOptionError(f"not an S3 store URL: {shown!r}", hint="write s3://bucket/prefix")
    bucket = location.host
    if "@" in bucket:
        raise StoreOptionError(
            f"an S3 store URL takes no credentials before the bucket: {shown!r}",
            hint="give the key= and secret= options, or let the AWS credential chain find them",
        )
    if _BUCKET.fullmatch(bucket) is None or ".." in bucket:
        raise StoreOptionError(f"invalid S3 bucket name {bucket!r} in {shown!r}")
    prefix = location.path.strip("/")
    if prefix and any(_PREFIX_PART.fullmatch(p) is None for p in prefix.split("/")):
        raise StoreOptionError(
            f"invalid S3 prefix {prefix!r} in {shown!r}",
            hint="use components of [A-Za-z0-9._-] not starting with a dot or a dash",
        )
    return bucket, prefix


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


class S3Backend(FsspecBackend):
    """A regstore store in an S3 bucket (AWS or any S3-compatible endpoint).

    Args:
        bucket, prefix: where the store lives (``s3://bucket/prefix``).
        fs: the ``s3fs.S3FileSystem`` to use (built from the options by :func:`open_backend`).
        layout: ``"distribution"`` (default; a registry's S3 driver with this bucket and
            ``rootdirectory: /prefix`` serves it) or ``"oci"``.
        part_size: multipart part size in bytes (5 MiB ... 5 GiB); None derives it from each
            blob's size (see :mod:`regstore_s3.parts`).
        staging: how blobs are written: ``"direct"`` (default; parts straight into the blob's
            multipart upload, :mod:`regstore_s3.direct`) or ``"parts"`` (part objects copied
            into it, :mod:`regstore_s3.staging`: a resumed write re-reads its parts instead of
            its source, for one more pass of the server over every byte).
        lease: seconds a writer's lock outlives its last renewal (a crashed writer's blob is
            writable again after that).
    """

    backend_name = "s3"
    atomic_put = True  # one PutObject replaces a small file atomically

    def __init__(
        self,
        bucket: str,
        prefix: str,
        fs: Any,
        *,
        layout: str = "distribution",
        part_size: int | None = None,
        staging: str = STAGING_MODES[0],
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
        self.staging_mode = staging
        self.lease_locks = S3LeaseLockManager(
            self.objects, self._key_prefix("_regstore/locks/"), lease=lease
        )
        super().__init__(
            _TranslatingFS(fs, redact_store_url(url)),
            root,
            layout=layout,
            locks=self.lease_locks,
            staging=S3PartStaging(self.part_size, staging),
            url=url,
        )

    # -- keys --------------------------------------------------------------------------------

    def _key_prefix(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def key_of(self, path: str) -> str:
        """The object key of an fsspec path under this bucket (``bucket/key`` → ``key``)."""
        head = f"{self.bucket}/"
        if not path.startswith(head):
            raise StoreError(f"path {path!r} is not in bucket {self.bucket!r}")
        return path[len(head) :]

    # -- small files: a PUT is atomic on S3 --------------------------------------------------

    def ensure_parent(self, path: str) -> None:
        """Nothing to do: S3 has no directories."""

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

    def open_blob_file(self, path: str, offset: int) -> IO[bytes]:
        # One streamed GET per blob (see regstore_s3.stream), not s3fs's block-sized GETs;
        # FileNotFoundError when absent (the base class answers BlobNotFoundError).
        stream = ObjectStream(self.raw_fs, self.bucket, self.key_of(path), offset)
        return stream  # type: ignore[return-value]

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

    def store_exists(self) -> bool:
        """True if a store of this layout lies under the prefix (S3 has no empty directories):
        objects there are no store by themselves (a bucket's root or a parent prefix, a store
        of the other layout: verify said OK to a store it never looked at). A missing bucket
        holds no store either: a reading command says "no store at", as for an empty prefix,
        not that the store should be writable."""
        try:
            found = self.objects.has_prefix(f"{self.prefix}/" if self.prefix else "")
        except StoreError as exc:
            if is_missing_bucket(exc):
                return False
            raise
        return found and self.holds_layout()

    # -- lifecycle ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=getattr(self.raw_fs, "endpoint_url", None),
            part_size=self.part_size or "derived",
            staging=self.staging_mode,
            lease=self.lease_locks.lease,
        )
        return info


def _build_filesystem(options: dict[str, Any]) -> Any:
    """An ``s3fs.S3FileSystem`` from the parsed store options (credentials never logged)."""
    import s3fs

    client_kwargs: dict[str, Any] = {}
    config_kwargs: dict[str, Any] = {}
    fs_kwargs: dict[str, Any] = {
        # Other processes write the same bucket: never answer from a stale listing.
        # (Stores opened with the same options share one S3FileSystem, hence one client and
        # connection pool: fsspec caches instances by their arguments.)
        "use_listings_cache": False,
    }
    if options["endpoint_url"]:
        fs_kwargs["endpoint_url"] = options["endpoint_url"]
    if options["region"]:
        client_kwargs["region_name"] = options["region"]
    if options["profile"]:
        fs_kwargs["profile"] = options["profile"]
    key, secret = options["key"], options["secret"]
    if bool(key) != bool(secret):
        raise StoreOptionError("S3 options key and secret go together", hint="or use neither")
    if key:
        fs_kwargs["key"], fs_kwargs["secret"] = key, secret
        if options["token"]:
            fs_kwargs["token"] = options["token"]
    if options["anon"] is not None:
        fs_kwargs["anon"] = options["anon"]
    if options["addressing_style"]:
        config_kwargs["s3"] = {"addressing_style": options["addressing_style"]}
    if options["verify"] is not None:
        client_kwargs["verify"] = options["verify"]
    if options["retries"] is not None:
        # botocore's own retries (connection errors, throttling, 5xx): attempts = 1 + retries
        config_kwargs["retries"] = {"max_attempts": options["retries"] + 1, "mode": "standard"}
    if options["read_timeout"] is not None:
        # (multipart completion and server-side copies wait longer: client.SLOW_OPERATIONS)
        config_kwargs["read_timeout"] = options["read_timeout"]
    if client_kwargs:
        fs_kwargs["client_kwargs"] = client_kwargs
    if config_kwargs:
        fs_kwargs["config_kwargs"] = config_kwargs
    with translate_s3_errors("cannot set up the S3 client"):
        return s3fs.S3FileSystem(**fs_kwargs)


@location_factory(OPTIONS)
def open_backend(location: StoreLocation) -> S3Backend:
    """The factory for ``s3://bucket/prefix``.

    Options (keywords, or the URL's query parameters as strings): ``endpoint_url``,
    ``region``, ``profile``, ``key`` + ``secret`` (+ ``token``) or the normal AWS credential
    chain, ``anon``, ``part_size`` (bytes or ``8MiB``), ``staging`` (``direct`` or ``parts``),
    ``layout``, ``lease`` (seconds), ``addressing_style``, ``verify`` (bool or CA bundle
    path), ``retries`` (botocore retries per request), ``read_timeout`` (seconds; s3fs's
    default is 15). Unknown or invalid options raise StoreOptionError.
    """
    bucket, prefix = parse_s3_location(location)
    options = location.options
    return S3Backend(
        bucket,
        prefix,
        _build_filesystem(options),
        layout=options["layout"],
        part_size=options["part_size"],
        staging=options["staging"],
        lease=options["lease"],
        url=location.text,
    )
