"""The plugin kit: everything a backend author builds a store backend from, in one module.

A regstore backend is an object whose methods answer the store hooks. The kit's way to write
one (``docs/plugin-guide.md`` walks through a whole backend):

1. Subclass :class:`BackendBase` and implement its core: the manifest methods
   (``get_manifest``, ``put_manifest``, ``list_repositories``, ``list_tags``,
   ``list_manifests``) and the two blob primitives of :class:`ComposedBlobs`
   (``complete_size``, ``open_complete``). Optional operations (deletes, listing blobs,
   housekeeping) raise UnsupportedError until implemented. Declare your library's error types
   in ``error_types`` (``(sqlite3.Error,)``): they become chained StoreErrors like OSError.
2. Hand the store two parts: a *staging part*, an :class:`AppendStaging` with five
   primitives (``size``, ``append``, ``iterate``, ``seal``, ``drop``) from which the writer,
   resume and the size check are derived, and a *lock part*: :class:`FlockLockManager`
   (a local disk; the kernel frees a dead writer's lock), :class:`ThreadLockManager` (one
   process) or your own :class:`LockManagerBase` (implement ``try_acquire`` and ``is_held``;
   validate keys with :func:`check_lock_key`; keep this process's holdings in a
   :class:`HeldKeys`). A dead writer's lock must not outlive it for long.
3. Write the factory with :func:`location_factory`: it receives a parsed
   :class:`StoreLocation` (the URL as given, for messages; its decoded path; its options
   parsed by the declared :class:`Option` types) and raises :class:`StoreOptionError` (with a
   hint) for anything it refuses.
4. Register the scheme with a ``regstore_register_backends(register)`` :data:`hookimpl` in the
   module named by your ``regstore`` entry point, and prove it with
   :mod:`regstore.testing.conformance`.

A backend over an fsspec filesystem subclasses :class:`FsspecBackend` instead, which brings the
``distribution`` and ``oci`` layouts and housekeeping, and hands it its two parts (``staging=``,
``locks=``); that is how the S3 plugin is built.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from regstore.errors import StoreError, StoreOptionError
from regstore.hookspecs import Register, hookimpl
from regstore.reference import Digest
from regstore.safetext import redact_store_url
from regstore.storetypes import (
    BlobInfo,
    BlobReadHandle,
    BlobState,
    BlobStatus,
    BlobWriteHandle,
    StagingEntry,
    StagingKind,
)

from .base import BackendBase, translate_errors
from .composed import ComposedBlobs
from .fsspec_store import (
    FsspecBackend,
    FsspecStaging,
    FsspecStagingArea,
    WalkedFile,
    check_layout,
)
from .leases import HeldLease, LeaseRenewal, LeaseTaken
from .locks import (
    BlobLock,
    FlockLockManager,
    HeldKeys,
    LockManager,
    LockManagerBase,
    ThreadLockManager,
    check_lock_key,
)
from .staging import AppendStaging, BlobReader, BlobStaging, StagedBlobWriter, StagingStream

__all__ = [
    "AppendStaging",
    "BackendBase",
    "BlobInfo",
    "BlobLock",
    "BlobReadHandle",
    "BlobReader",
    "BlobStaging",
    "BlobState",
    "BlobStatus",
    "BlobWriteHandle",
    "ComposedBlobs",
    "Digest",
    "FlockLockManager",
    "FsspecBackend",
    "FsspecStaging",
    "FsspecStagingArea",
    "HeldKeys",
    "HeldLease",
    "LeaseRenewal",
    "LeaseTaken",
    "LockManager",
    "LockManagerBase",
    "Option",
    "Register",
    "StagedBlobWriter",
    "StagingEntry",
    "StagingKind",
    "StagingStream",
    "StoreError",
    "StoreLocation",
    "StoreOptionError",
    "ThreadLockManager",
    "WalkedFile",
    "check_layout",
    "check_lock_key",
    "hookimpl",
    "location_factory",
    "parse_flag",
    "parse_options",
    "translate_errors",
]

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def parse_flag(value: Any) -> bool:
    """A boolean option from a keyword (``True``) or query text (``1/true/yes/on``,
    ``0/false/no/off``). Raises ValueError for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"must be true or false, not {value!r}")


@dataclass(frozen=True)
class Option(Generic[T]):
    """A declared store option: how its text (from the URL's query) or keyword value is read.

    ``parse`` turns the value into the option's type and raises ValueError or TypeError for a
    bad one (:func:`parse_flag`, :func:`check_layout`, ``int``, ``float``, ``str``...);
    ``default`` is what the factory gets when the option is absent; ``help`` is the hint of
    the StoreOptionError a bad value raises.
    """

    parse: Callable[[Any], T]
    default: T | None = None
    help: str = ""


def parse_options(
    declared: Mapping[str, Option[Any]], given: Mapping[str, Any], *, where: str = "this store"
) -> dict[str, Any]:
    """Every declared option, parsed (absent ones at their default).

    Raises StoreOptionError for an unknown option (the hint lists the known ones) or a value
    its ``parse`` refuses (the hint is the option's ``help``). ``where`` names the store in
    the message (pass :attr:`StoreLocation.shown`).
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise StoreOptionError(
            f"unknown option(s) for {where}: {', '.join(unknown)}",
            hint=f"known: {', '.join(declared) or 'none'}",
        )
    parsed: dict[str, Any] = {}
    for name, option in declared.items():
        if name not in given:
            parsed[name] = option.default
            continue
        try:
            parsed[name] = option.parse(given[name])
        except StoreOptionError:
            raise
        except (TypeError, ValueError, StoreError) as exc:
            raise StoreOptionError(
                f"invalid option {name}={given[name]!r} for {where}: {exc}", hint=option.help
            ) from None
    return parsed


@dataclass(frozen=True)
class StoreLocation:
    """A store URL, parsed once for its backend's factory.

    ``text`` is the URL as given (without its query), for messages (show :attr:`shown`, which
    hides credentials); ``scheme`` is lower-case; ``host`` is what stands between ``//`` and the
    next ``/`` (decoded); ``path`` is the rest, decoded, with every slash kept
    (``sqlite:///tmp/db`` → ``/tmp/db``, ``sqlite:////tmp/db`` → ``//tmp/db``); ``options``
    are the query's parameters overridden by keyword options. A plain path is ``file``.
    """

    text: str
    scheme: str
    host: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """The URL safe to show (user info and secret-looking parameters redacted)."""
        return redact_store_url(self.text)

    @classmethod
    def parse(cls, url: str, **options: Any) -> StoreLocation:
        """Parse ``url`` (``scheme://host/path?query`` or a plain path); keyword options win
        over the query's. A ``#fragment`` is refused (StoreOptionError)."""
        if "://" not in url:
            return cls(url, "file", "", url, dict(options))
        text, _, query = url.partition("?")
        if "#" in text or "#" in query:
            raise StoreOptionError(
                f"a store URL has no fragment: {redact_store_url(url)!r}",
                hint="percent-encode '#' as %23",
            )
        scheme, _, rest = text.partition("://")
        host, slash, path = rest.partition("/")
        merged: dict[str, Any] = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        merged.update(options)
        return cls(
            text,
            scheme.lower(),
            urllib.parse.unquote(host),
            urllib.parse.unquote(slash + path),
            merged,
        )


def location_factory(
    options: Mapping[str, Option[Any]],
) -> Callable[[Callable[[StoreLocation], T]], Callable[..., T]]:
    """Decorate ``open(location) -> backend`` into the ``factory(url, **options)`` that
    ``register`` takes: the URL is parsed into a :class:`StoreLocation` whose ``options`` are
    already checked and parsed by the declared ``options`` (StoreOptionError otherwise).
    """

    def decorate(open_location: Callable[[StoreLocation], T]) -> Callable[..., T]:
        def factory(url: str, **given: Any) -> T:
            location = StoreLocation.parse(url, **given)
            parsed = parse_options(options, location.options, where=location.shown)
            return open_location(
                StoreLocation(location.text, location.scheme, location.host, location.path, parsed)
            )

        factory.__name__ = getattr(open_location, "__name__", "factory")
        factory.__doc__ = open_location.__doc__
        return factory

    return decorate
