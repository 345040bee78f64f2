"""``ObjectStore`` and ``Layer``: the typed facades over a store's hooks, and ``open_store``.

The seed's names are kept in snake_case: ``store.manifest(name, reference)``,
``store.write_manifest(name, tag, manifest)``, ``store.layer(digest)``; ``layer.reader()``,
``layer.writer()``, ``layer.wait()``; readers and writers with ``size`` and ``current_size``,
writers with ``set_size(n)``.

Guarantees every backend gets from this facade (and the conformance suite checks):

- a blob becomes visible only through :meth:`LayerWriter.commit`, after its size and digest
  were verified here; a mismatch discards the staged bytes and raises DigestMismatchError;
- a manifest is written only when every blob it references is complete (and, unless the store
  is told the index is partial, every child manifest is stored); the tag is set last;
- names, tags and digests are validated before any backend sees them.

Thread safety: an ObjectStore may be shared by threads; a LayerReader or LayerWriter belongs to
one thread at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

import pluggy

from regstore import plugins
from regstore.backends.wrappers import (
    READ_ONLY_GUARD,
    TRACER,
    OperationStats,
    ReadOnlyGuard,
    StoreWrapper,
    TracingWrapper,
)
from regstore.digest import CHUNK_SIZE, Digester
from regstore.errors import (
    BlobNotFoundError,
    DamagedTagError,
    DigestMismatchError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    NotFoundError,
    RegstoreError,
    StoreDamageError,
    StoreError,
    StoreNotFoundError,
    StoreURLError,
    UnsupportedError,
)
from regstore.hookspecs import (
    BlobInfo,
    BlobReadHandle,
    BlobState,
    BlobStatus,
    BlobWriteHandle,
    StagingEntry,
    StagingKind,
    StoreLockHandle,
)
from regstore.imagelist import ImageRecord, list_images
from regstore.manifest import (
    IMAGE_MEDIA_TYPES,
    MAX_CONFIG_SIZE,
    SCHEMA1_MEDIA_TYPES,
    Descriptor,
    Manifest,
    digest_of,
)
from regstore.reference import Digest, is_digest, validate_name, validate_reference, validate_tag
from regstore.referrers import (
    INDEX_UPDATE_ATTEMPTS,
    add_referrer,
    filter_referrers,
    index_lock,
    keep_in_index,
    referrer_descriptor,
    referrers_in,
    referrers_tag,
    remove_referrer,
)
from regstore.safetext import redact_store_url

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "READ_ONLY_GUARD",
    "STORE_URL_FORMS",
    "TRACER",
    "ImageRecord",
    "Layer",
    "LayerReader",
    "LayerWriter",
    "ObjectStore",
    "OperationStats",
    "ReadOnlyGuard",
    "StoreWrapper",
    "TracingWrapper",
    "blob_use_lock_key",
    "open_store",
    "read_blob",
    "redact_store_url",
    "split_store_url",
]


#: A URL scheme as RFC 3986 spells it, followed by its colon: ``s3:``, ``memory:``.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
#: The forms a store URL takes, for the message refusing another.
STORE_URL_FORMS = (
    "a path (/srv/mirror, ./mirror), file:///srv/mirror, memory://NAME, "
    "s3://BUCKET/PREFIX or another installed scheme as SCHEME://..."
)


def split_store_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split a store URL into ``(scheme, url without query, query options)``.

    A plain path (``/srv/mirror``, ``./mirror``, ``mirror/x``) means ``file``. Query parameters
    become options (``file:///srv/mirror?layout=oci``); keyword options to :func:`open_store`
    win.

    Raises:
        StoreURLError: an empty URL, or a scheme without ``//`` (``memory:nightly``,
            ``file:/tmp/x``): taken for paths, they would create folders in the current
            directory. Write ``./memory:nightly`` for such a folder. A ``#`` fragment in a
            URL (its options after it would be lost).
    """
    if not url.strip():
        raise StoreURLError("the store URL is empty", hint=f"give {STORE_URL_FORMS}")
    if "://" not in url:
        if _SCHEME.match(url):
            scheme = url.partition(":")[0]
            raise StoreURLError(
                f"the store URL {redact_store_url(url)!r} has a scheme but no '//' "
                f"(write {scheme.lower()}://...)",
                hint=f"give {STORE_URL_FORMS}; for a folder named so, ./{scheme}:...",
            )
        return "file", url, {}
    parsed = urllib.parse.urlsplit(url)
    if not _SCHEME.fullmatch(url.partition("://")[0] + ":"):
        raise StoreURLError(
            f"the store URL {redact_store_url(url)!r} has no valid scheme before '://'",
            hint=f"give {STORE_URL_FORMS}",
        )
    if "#" in url:
        # dropped silently, it took with it any option after it: s3://b/p#x?endpoint_url=...
        # went to AWS instead of the endpoint given
        raise StoreURLError(
            f"the store URL {redact_store_url(url)!r} has a '#' fragment, which a store URL "
            "does not take",
            hint="leave out the '#...' part (percent-encode a '#' that belongs to a name: %23)",
        )
    options = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    # cut textually: urlunsplit would drop the "//" of schemes urllib does not know
    bare = url.partition("#")[0].partition("?")[0]
    return parsed.scheme.lower(), bare, options


#: Options :func:`open_store` handles itself (wrappers), never handed to a backend's factory.
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _store_flag(name: str, value: object) -> bool:
    """An on/off store option, given as a keyword (bool) or in the URL query (text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise StoreError(f"store option {name} must be 1 or 0 (true or false), not {value!r}")


def _provider(scheme: str) -> str:
    """Which plugin (and distribution) registered ``scheme``, for an error message."""
    info = plugins.backends().get(scheme)
    if info is None:
        return "its plugin"
    origin = " ".join(p for p in (info.distribution, info.version) if p)
    return f"plugin {info.plugin!r}" + (f" of {origin}" if origin else "")


def open_store(
    url: str,
    *,
    must_exist: bool = False,
    read_only: bool = False,
    trace: bool = False,
    **options: Any,
) -> ObjectStore:
    """Open the store at ``url`` with the backend registered for its scheme.

    ``memory://name``, ``file:///srv/mirror`` (or a plain path), ``s3://bucket/prefix`` (with
    the ``regstore-s3`` plugin) and any scheme a third-party plugin registers. Options are
    backend-specific (``layout="oci"`` for the fsspec backends); URL query parameters give the
    same options as strings. Opening creates nothing: the first write creates the store.
    ``must_exist=True`` (for reading) refuses a URL where nothing was ever stored.

    Two options belong to every store and wrap its backend (see
    :mod:`regstore.backends.wrappers`); either may also be given in the URL (``?read_only=1``,
    ``?trace=1``), and either way turns it on:

    - ``read_only``: every change (manifest, tag or blob write, deletion, quarantine,
      staging clean-up) raises :class:`~regstore.errors.StoreReadOnlyError`;
    - ``trace``: every operation is counted and timed; read them with
      :meth:`ObjectStore.metrics`.

    Raises:
        BackendNotFoundError: no installed plugin serves the scheme (names what to install).
        StoreNotFoundError: ``must_exist`` was given and there is no store at ``url``.
        StoreURLError: the URL is empty or of no accepted form (``memory:x``: no ``//``).
        StoreError: an option has a bad value (or the backend refused one).
    """
    scheme, bare, query = split_store_url(url)
    read_only = _store_flag("read_only", query.pop("read_only", "0")) or _store_flag(
        "read_only", read_only
    )
    trace = _store_flag("trace", query.pop("trace", "0")) or _store_flag("trace", trace)
    factory = plugins.backend_factory(scheme)
    merged: dict[str, Any] = {**query, **options}
    try:
        backend = factory(bare, **merged)
    except RegstoreError:
        raise
    except Exception as exc:  # a plugin's bug: say whose, not only "ZeroDivisionError: ..."
        raise StoreError(
            f"the {scheme}:// backend ({_provider(scheme)}) failed to open "
            f"{redact_store_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc
    store = ObjectStore(backend, url=url)
    # The guard first, the tracer last: pluggy runs the wrapper registered last outermost, so
    # refused changes are counted (as errors) too.
    if read_only:
        store.add_wrapper(ReadOnlyGuard(redact_store_url(url)), name=READ_ONLY_GUARD)
    if trace:
        store.add_wrapper(TracingWrapper(), name=TRACER)
    if must_exist:
        try:
            found = store.exists()
        except BaseException:
            store.close()
            raise
        if not found:
            store.close()
            raise StoreNotFoundError(redact_store_url(url))
    return store


_P = ParamSpec("_P")
_R = TypeVar("_R")


class _StoreHooks(Protocol):
    """The store hooks as the facade calls them: keyword arguments, the spec's answers.

    At run time this is the store's ``pm.hook``; the protocol only gives mypy the signatures of
    :class:`regstore.hookspecs.StoreSpec`. Changes answer ``object``: the facade ignores it.
    """

    def regstore_store_get_manifest(self, *, name: str, reference: str) -> tuple[bytes, str]: ...
    def regstore_store_put_manifest(
        self, *, name: str, tag: str | None, raw: bytes, media_type: str, digest: str, partial: bool
    ) -> object: ...
    def regstore_store_manifest_is_partial(self, *, name: str, digest: str) -> bool: ...
    def regstore_store_unlinked_blobs(self, *, name: str, digests: list[str]) -> dict[str, str]: ...
    def regstore_store_outside_references(self) -> list[str]: ...
    def regstore_store_delete_manifest(self, *, name: str, digest: str) -> object: ...
    def regstore_store_delete_tag(self, *, name: str, tag: str) -> object: ...
    def regstore_store_list_repositories(self) -> list[str]: ...
    def regstore_store_list_tags(self, *, name: str) -> list[str]: ...
    def regstore_store_list_manifests(self, *, name: str) -> list[str]: ...
    def regstore_store_blob_status(self, *, digest: str) -> BlobStatus: ...
    def regstore_store_open_blob(self, *, digest: str, offset: int) -> BlobReadHandle: ...
    def regstore_store_blob_writer(self, *, digest: str) -> BlobWriteHandle: ...
    def regstore_store_wait_blob(self, *, digest: str, timeout: float | None) -> bool: ...
    def regstore_store_list_blobs(self) -> list[BlobInfo]: ...
    def regstore_store_delete_blob(self, *, digest: str) -> object: ...
    def regstore_store_mark_blob_used(self, *, digest: str) -> object: ...
    def regstore_store_blob_used_at(self, *, digest: str) -> float | None: ...
    def regstore_store_quarantine_blob(self, *, digest: str) -> str: ...
    def regstore_store_list_staging(self) -> list[StagingEntry]: ...
    def regstore_store_list_quarantined(self) -> list[str]: ...
    def regstore_store_drop_staging(self, *, entry: StagingEntry) -> bool: ...
    def regstore_store_exists(self) -> bool: ...
    def regstore_store_describe(self) -> dict[str, Any]: ...
    def regstore_store_close(self) -> list[None]: ...
    def regstore_store_lock(self, *, key: str, timeout: float | None) -> StoreLockHandle | None: ...


def blob_use_lock_key(digest: Digest) -> str:
    """The store lock (:meth:`ObjectStore.lock`) under which a blob is claimed for reuse
    (:meth:`ObjectStore.claim_blob`) and under which gc decides to delete it."""
    return f"blob-use/{digest.algorithm}/{digest.hex}"


log = logging.getLogger("regstore.store")

#: Up to how many tags a repository's tags are checked before an old referrers index version
#: is deleted (beyond, it is left for gc).
_INDEX_PRUNE_TAG_LIMIT = 32


#: How many non-index manifest digests a store facade remembers (a set of short strings)
_PLAIN_REMEMBERED = 100_000
#: Manifest types that are surely no index (what sniffs as anything else is asked about)
_PLAIN_TYPES = IMAGE_MEDIA_TYPES | SCHEMA1_MEDIA_TYPES
#: Where :meth:`ObjectStore.set_aside` says a damaged blob went when the backend cannot
#: quarantine it
DELETED_NOT_MOVED = "nowhere: deleted, as this store cannot move blobs aside"
#: Seconds one listing of the quarantine answers :meth:`ObjectStore.quarantined`: a sync asks
#: it of every unchanged image, and a verify in another process may move a blob aside meanwhile
_QUARANTINE_LISTED_FOR = 30.0


class ObjectStore:
    """A store of manifests (by repository name and tag or digest) and blobs (by digest).

    Wraps one backend instance in its own plugin manager; :meth:`add_wrapper` adds middleware
    plugins (``@hookimpl(wrapper=True)``, see :mod:`regstore.backends.wrappers`) around it.
    """

    def __init__(self, backend: object, *, url: str = "") -> None:
        self.url = url
        self._pm: pluggy.PluginManager = plugins.new_store_manager()
        self._pm.register(backend, name="backend")
        try:
            # a misspelt hook name would otherwise load fine and never be called
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise StoreError(
                f"the backend {type(backend).__name__} of {redact_store_url(url) or 'a store'} "
                f"is broken: {' '.join(str(exc).split())}"
            ) from exc
        self.backend = backend
        #: the hooks the backend answers; any other is unsupported, whatever wrappers exist
        self._implemented = frozenset(
            caller.name for caller in self._pm.get_hookcallers(backend) or []
        )
        if not self._implemented:  # a factory that returned something else than a backend
            raise StoreError(
                f"the backend of {redact_store_url(url) or 'a store'} is a "
                f"{type(backend).__name__}, which implements no store hook"
            )
        self._closed = False
        #: digests of manifests read here that are no index (a digest's bytes never change):
        #: none can be partial, so is_partial answers them without asking the backend
        self._plain: set[str] = set()
        #: (when, digests) of the last listing of the quarantine
        self._quarantine: tuple[float, frozenset[str]] | None = None

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def _hooks(self) -> _StoreHooks:
        if self._closed:
            raise StoreError(f"store {redact_store_url(self.url) or self.backend!r} is closed")
        return cast("_StoreHooks", self._pm.hook)

    def _call(self, hook: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Call one store hook (``self._hooks.regstore_store_...``) through the wrappers.

        UnsupportedError when the backend does not implement it at all; a backend that
        implements it but answers nothing where an answer is due is broken (StoreError).
        """
        name: str = getattr(hook, "name", "")
        if name not in self._implemented:
            where = redact_store_url(self.url) or "this store"
            raise UnsupportedError(f"the backend of {where} does not implement {name}")
        return hook(*args, **kwargs)

    def _ask(self, hook: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """:meth:`_call` for a hook whose answer is needed: None from it is a backend bug."""
        result = self._call(hook, *args, **kwargs)
        if result is None:
            where = redact_store_url(self.url) or "this store"
            name = getattr(hook, "name", "")
            raise StoreError(f"the backend of {where} answered nothing to {name}")
        return result

    def add_wrapper(self, plugin: object, name: str | None = None) -> None:
        """Register a wrapper plugin (read-only guard, metrics, cache, ...) on this store.

        Its hookimpls must all be ``@hookimpl(wrapper=True)`` (or old-style ``hookwrapper``)
        and named after store hooks: anything else is refused (ValueError) before it could
        answer in place of the backend or silently never run. See
        :mod:`regstore.backends.wrappers` for the rules a wrapper keeps. Add wrappers before
        the store is shared with other threads (pluggy's registration is not synchronised
        with calls); a wrapper added later wraps the calls made after it.
        """
        self._pm.register(plugin, name=name)
        try:
            self._pm.check_pending()  # a misspelt hook name would otherwise never run
            plain = [
                impl.function.__name__
                for caller in self._pm.get_hookcallers(plugin) or []
                for impl in caller.get_hookimpls()
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper)
            ]
            if plain:
                raise ValueError(
                    f"{plugin!r} is not a wrapper: {', '.join(plain)} must be declared "
                    "@hookimpl(wrapper=True)"
                )
            if not self._pm.get_hookcallers(plugin):
                raise ValueError(f"{plugin!r} implements no store hook")
        except Exception as exc:
            self._pm.unregister(plugin)
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"{plugin!r} is not a store wrapper: {exc}") from exc

    def get_wrapper(self, name: str) -> object | None:
        """The wrapper registered under ``name`` (e.g. ``"regstore.trace"``), or None."""
        if name == "backend":
            return None
        return self._pm.get_plugin(name)

    @property
    def read_only(self) -> bool:
        """True when the store was opened read-only (every change is refused)."""
        return isinstance(self._pm.get_plugin(READ_ONLY_GUARD), ReadOnlyGuard)

    def metrics(self) -> dict[str, OperationStats]:
        """Counts and timings per operation since the store was opened with ``trace=True``.

        A snapshot (operation name -> :class:`OperationStats`), sorted by name. Raises
        StoreError for a store opened without tracing.
        """
        tracer = self._pm.get_plugin(TRACER)
        if not isinstance(tracer, TracingWrapper):
            raise StoreError(
                f"{redact_store_url(self.url) or 'this store'} was opened without trace=True: "
                "no metrics were collected"
            )
        return tracer.metrics()

    def describe(self) -> dict[str, Any]:
        """What this store is: URL, backend, layout (JSON-able)."""
        # called even when the backend has no describe: wrappers add to it (``read_only``)
        info = self._hooks.regstore_store_describe() or {}
        return {"url": redact_store_url(self.url), **info}

    def exists(self) -> bool:
        """True if there is a store at this URL (something was written there).

        Creates nothing. A backend that cannot tell answers True.
        """
        found: bool | None = self._hooks.regstore_store_exists()
        return True if found is None else bool(found)

    def close(self) -> None:
        """Release the backend's resources. Idempotent."""
        if not self._closed:
            self._pm.hook.regstore_store_close()
            self._closed = True

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ObjectStore({redact_store_url(self.url)!r})"

    # -- manifests ---------------------------------------------------------------------------

    def manifest(self, name: str, reference: str) -> Manifest:
        """The manifest of ``name`` at a tag or digest (the seed's ``Manifest(name, tag)``).

        Raises ImageManifestNotFoundError; ManifestInvalidError if the stored bytes are damaged
        (they do not hash to the digest asked for, or to the one the tag names).
        """
        validate_name(name)
        validate_reference(reference)
        raw, media_type = self._ask(
            self._hooks.regstore_store_get_manifest, name=name, reference=reference
        )
        manifest = Manifest.parse(raw, media_type)
        if is_digest(reference):
            wanted = Digest(reference)
            if manifest.digest_with(wanted.algorithm) != wanted:
                raise ManifestInvalidError(
                    f"stored manifest {name}@{reference} is damaged: its bytes hash to "
                    f"{manifest.digest_with(wanted.algorithm)}"
                )
        return manifest

    def manifest_digest(self, name: str, reference: str) -> Digest | None:
        """The digest of the manifest bytes stored at a tag or digest of ``name``; None if
        there are none.

        The bytes are hashed, not parsed (but for a signed schema1 manifest, whose digest
        covers its JWS payload): a sync asks this of every tag to learn whether it changed,
        and a parse cost a no-op re-sync of 300 tags more than reading them. A tag whose link
        is damaged raises DamagedTagError, and one whose manifest bytes do not hash to the
        digest it names raises ManifestInvalidError: a copy into it treats it as absent (and
        writes the tag and the bytes again), one out of it fails.
        """
        validate_name(name)
        validate_reference(reference)
        try:
            raw, media_type = self._ask(
                self._hooks.regstore_store_get_manifest, name=name, reference=reference
            )
        except NotFoundError:  # as manifest() raises it: no tag, no manifest, no repository
            return None
        algorithm = Digest(reference).algorithm if is_digest(reference) else "sha256"
        digest = digest_of(raw, algorithm)
        if media_type in _PLAIN_TYPES and len(self._plain) < _PLAIN_REMEMBERED:
            self._plain.add(str(digest))
        return digest

    def has_manifest(self, name: str, reference: str) -> bool:
        """True if ``name`` has a manifest at this tag or digest."""
        try:
            self._ask(
                self._hooks.regstore_store_get_manifest,
                name=validate_name(name),
                reference=validate_reference(reference),
            )
        except ImageManifestNotFoundError:
            return False
        return True

    def resolve(self, name: str, tag: str) -> Digest:
        """The digest the tag points at."""
        return self.manifest(name, tag).digest

    def write_manifest(
        self, name: str, tag: str | None, manifest: Manifest, *, partial: bool = False
    ) -> Digest:
        """Store ``manifest`` (exact bytes) in ``name``, then point ``tag`` at it (if given).

        Refuses (StoreError) while a referenced blob is not complete, or a child manifest of an
        index is missing unless ``partial`` is set (a platform-filtered index). Returns the
        manifest digest.
        """
        validate_name(name)
        if tag is not None:
            validate_tag(tag)
        if not isinstance(manifest, Manifest):
            raise TypeError(f"manifest must be a regstore Manifest, not {type(manifest).__name__}")
        for blob in manifest.blobs:
            status = self.blob_status(blob.digest)
            if status.state is not BlobState.COMPLETE:
                raise StoreError(
                    f"cannot write manifest {manifest.digest} to {name}: blob {blob.digest} "
                    f"is {status.state.value}, not complete"
                )
            if blob.size >= 0 and status.size is not None and status.size != blob.size:
                raise StoreError(
                    f"cannot write manifest {manifest.digest} to {name}: blob {blob.digest} "
                    f"has {status.size} bytes in the store, the manifest says {blob.size}"
                )
        if not partial:
            for child in manifest.manifests:
                if not self.has_manifest(name, child.digest):
                    raise StoreError(
                        f"cannot write index {manifest.digest} to {name}: child manifest "
                        f"{child.digest} is not stored (pass partial=True for a filtered index)"
                    )
        # Where manifests are blobs too, the bytes may already be there as garbage (an image
        # deleted earlier) that a running gc has decided to collect: claimed like a reused blob.
        self._claim_if_stored(manifest.digest)
        self._call(
            self._hooks.regstore_store_put_manifest,
            name=name,
            tag=tag,
            raw=manifest.raw,
            media_type=manifest.media_type,
            digest=str(manifest.digest),
            partial=partial,
        )
        if manifest.subject is not None:
            self._index_referrer(name, manifest)
        return manifest.digest

    # -- referrers ---------------------------------------------------------------------------

    def referrers(
        self, name: str, digest: str, artifact_types: Collection[str] | None = None
    ) -> list[Descriptor]:
        """The manifests of ``name`` whose ``subject`` is ``digest`` (one tag lookup, no scan).

        A store keeps them as registries without the referrers API do: an index tagged
        ``<alg>-<hex>`` of the subject (:mod:`regstore.referrers`), updated after each
        referrer's manifest write. ``artifact_types`` keeps only those types.
        """
        index = self._referrers_index(validate_name(name), referrers_tag(digest))
        return filter_referrers(referrers_in(index), artifact_types)

    def _referrers_index(self, name: str, tag: str, *, rewriting: bool = False) -> Manifest | None:
        """The referrers index at ``tag``, None when there is none. ``rewriting``: for a writer
        about to replace it (holding its lock), a damaged tag or damaged index bytes (what it
        listed is unknown) are mended first (:meth:`_rebuild_index`)."""
        try:
            return self.manifest(name, tag)
        except NotFoundError:
            return None
        except (DamagedTagError, ManifestInvalidError):
            if not rewriting:
                raise
            return self._rebuild_index(name, tag)

    def _rebuild_index(self, name: str, tag: str) -> Manifest | None:
        """Mend the referrers index ``tag`` whose tag or bytes are damaged: write it anew from the
        manifests of ``name`` that refer to its subject, and return it; with none stored,
        delete the tag and return None. Built from the writes since, it would lack the
        referrers listed before. Every manifest of the repository is read once (slow on an
        object store, but only for damage); one that is damaged or cannot be read is left out
        with a warning (``verify`` reports it; a transfer with referrers lists it once it
        reads), unless the store stopped answering: that error is raised, and nothing
        written."""
        index: Manifest | None = None
        for digest in self.manifests(name):
            try:
                manifest = self.manifest(name, str(digest))
            except NotFoundError:  # deleted meanwhile
                continue
            except RegstoreError as exc:  # damaged, unreadable: whose referrer it is is unknown
                if not isinstance(exc, ManifestInvalidError | StoreDamageError):
                    try:
                        self.manifests(name)
                    except RegstoreError:
                        raise exc from None  # an outage: a smaller index would lose entries
                log.warning("rebuilding the referrers index %s of %s: %s", tag, name, exc)
                continue
            # (by the tag: a sha512 digest's tag is cut short, and names no digest to compare with)
            if manifest.subject is not None and referrers_tag(manifest.subject.digest) == tag:
                index = add_referrer(index, referrer_descriptor(manifest)) or index
        if index is None:
            self.delete_tag(name, tag)
        else:
            self._put_index(name, tag, index)
        return index

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[bool]:
        """Hold the store-wide lock ``key`` (``/``-separated words) for the body: exclusive
        among this process's threads always, and across processes when the backend answers
        ``regstore_store_lock`` (every backend built on the kit's ``ComposedBlobs`` does).
        Yields True when the lock also excludes other processes, False when the backend has
        no such lock (in-process only). Raises StoreError when it cannot be taken within
        ``timeout`` seconds (None: no limit here, the backend's default there). Not
        re-entrant: a thread holding ``key`` must not take it again."""
        local = index_lock(("store-lock", self.url, key))
        if not local.acquire(timeout=-1 if timeout is None else timeout):
            raise StoreError(f"could not take the store lock {key!r} within {timeout:g} s")
        try:
            handle: StoreLockHandle | None = None
            if "regstore_store_lock" in self._implemented:
                handle = self._hooks.regstore_store_lock(key=key, timeout=timeout)
            try:
                yield handle is not None
            finally:
                if handle is not None:
                    handle.release()
        finally:
            local.release()

    def _put_index(self, name: str, tag: str, index: Manifest) -> None:
        # an earlier version with these very bytes may be garbage gc is about to collect
        self._claim_if_stored(index.digest)
        self._call(
            self._hooks.regstore_store_put_manifest,
            name=name,
            tag=tag,
            raw=index.raw,
            media_type=index.media_type,
            digest=str(index.digest),
            partial=False,
        )

    def _drop_old_index(self, name: str, tag: str, old: Manifest | None) -> None:
        """Delete ``old``, the version of the referrers index ``tag`` just replaced, unless a
        tag still points at it: each update would otherwise leave one more untagged manifest.
        In a repository of many tags the check would cost a read per tag on every update, so
        there the old version is left for gc (:func:`regstore.engine.gc.collect_garbage`)."""
        if old is None or "regstore_store_delete_manifest" not in self._implemented:
            return
        try:
            tags = self.tags(name)
        except NotFoundError:
            return
        if len(tags) > _INDEX_PRUNE_TAG_LIMIT:
            return
        for other in tags:
            try:
                if self.manifest(name, other).digest == old.digest:
                    return
            except NotFoundError:
                continue
            except (DamagedTagError, ManifestInvalidError):  # it may name the old version: gc's
                return
        with contextlib.suppress(NotFoundError, UnsupportedError):
            self.delete_manifest(name, str(old.digest))

    def index_referrer(self, name: str, manifest: Manifest) -> None:
        """Make sure the referrers index of ``manifest``'s subject lists it (one index read
        when it does): :meth:`write_manifest` does this after writing a referrer, and a
        transfer that finds a referrer already stored does it again, which repairs an index
        that a crash between the two writes left behind. Entries whose manifest is gone are
        dropped on the way, and the previous version of the index is deleted.

        Raises ValueError for a manifest without ``subject``; StoreError when other writers
        kept changing the index.
        """
        if manifest.subject is None:
            raise ValueError(f"manifest {manifest.digest} has no subject")
        self._index_referrer(validate_name(name), manifest)

    def _index_referrer(self, name: str, manifest: Manifest) -> None:
        """Add ``manifest`` to its subject's referrers index (a second write after the
        manifest's), under the store lock of that index."""
        assert manifest.subject is not None
        tag = referrers_tag(manifest.subject.digest)
        descriptor = referrer_descriptor(manifest)
        with self.lock(f"referrers/{name}/{tag}"):
            previous = self._referrers_index(name, tag, rewriting=True)
            if any(d.digest == descriptor.digest for d in referrers_in(previous)):
                return  # listed: the common case of a repeated transfer costs one read
            done = keep_in_index(
                lambda: self._referrers_index(name, tag, rewriting=True),
                lambda index: self._put_index(name, tag, index),
                descriptor,
                exists=lambda digest: self.has_manifest(name, digest),
            )
            if done:
                self._drop_old_index(name, tag, previous)
        if not done:
            raise StoreError(
                f"updating the referrers index {name}:{tag}: another writer changed it "
                f"{INDEX_UPDATE_ATTEMPTS} times in a row"
            )

    def unindex_referrer(self, name: str, subject: str, digest: str) -> None:
        """Remove ``digest`` from the referrers index of ``subject`` (after the referrer was
        deleted), under the index's store lock. An index left empty is deleted with its tag;
        the previous version of the index is deleted too."""
        name = validate_name(name)
        tag = referrers_tag(subject)
        with self.lock(f"referrers/{name}/{tag}"):
            previous = self._referrers_index(name, tag, rewriting=True)
            updated = remove_referrer(previous, digest)
            if previous is None or updated is None:
                return
            if not updated.manifests:
                self.delete_tag(name, tag)
            else:
                self._put_index(name, tag, updated)
            self._drop_old_index(name, tag, previous)

    def is_partial(self, name: str, digest: str) -> bool:
        """True if the index ``digest`` was stored without all its children."""
        if "regstore_store_manifest_is_partial" not in self._implemented:
            return False  # a backend that cannot record partial indexes has none
        if digest in self._plain:
            return False  # no index (a no-op re-sync asks this of every image)
        return bool(
            self._call(
                self._hooks.regstore_store_manifest_is_partial,
                name=validate_name(name),
                digest=Digest(digest),
            )
        )

    def unlinked_blobs(self, name: str, digests: Collection[str]) -> dict[Digest, str]:
        """Of the blobs ``digests`` that manifests of ``name`` refer to, those that ``name``
        does not lead to, each with what is wrong (``verify``'s ``unlinked-blob``): a blob of
        the distribution layout whose ``_layers`` link in ``name`` is missing or holds anything
        but its digest, which a registry serving this store would not serve as that blob from
        ``name``. Empty for backends whose repositories share every blob. Whether the blobs
        are stored is not asked (:meth:`blob_status`). Raises StoreError when the links cannot
        be read.
        """
        if "regstore_store_unlinked_blobs" not in self._implemented:
            return {}  # a backend without per-repository links: nothing to miss
        wanted = {str(Digest(d)) for d in digests}
        if not wanted:
            return {}
        answer = self._call(
            self._hooks.regstore_store_unlinked_blobs,
            name=validate_name(name),
            digests=sorted(wanted),
        )
        return {Digest(d): str(why) for d, why in dict(answer or {}).items() if d in wanted}

    def outside_references(self) -> set[Digest]:
        """What content the store holds outside its repositories keeps in use (see the
        hookspec ``regstore_store_outside_references``): in an OCI layout shared with skopeo,
        umoci or oras, the images they tagged there. gc deletes none of it. Empty for backends
        that hold nothing but their repositories. Raises StoreError when it cannot be read."""
        if "regstore_store_outside_references" not in self._implemented:
            return set()
        return {Digest(d) for d in self._ask(self._hooks.regstore_store_outside_references)}

    def delete_manifest(self, name: str, digest: str) -> None:
        """Remove a manifest and every tag pointing at it (blobs stay until gc)."""
        self._call(
            self._hooks.regstore_store_delete_manifest,
            name=validate_name(name),
            digest=Digest(digest),
        )

    def delete_tag(self, name: str, tag: str) -> None:
        """Remove a tag; the manifest stays reachable by digest."""
        self._call(
            self._hooks.regstore_store_delete_tag, name=validate_name(name), tag=validate_tag(tag)
        )

    def repositories(self) -> list[str]:
        """Every repository holding at least one manifest, sorted."""
        return sorted(self._ask(self._hooks.regstore_store_list_repositories))

    def tags(self, name: str) -> list[str]:
        """Tags of ``name``, sorted. Raises RepositoryNotFoundError."""
        return sorted(self._ask(self._hooks.regstore_store_list_tags, name=validate_name(name)))

    def manifests(self, name: str) -> list[Digest]:
        """Digests of every manifest stored in ``name``, sorted."""
        found = self._ask(self._hooks.regstore_store_list_manifests, name=validate_name(name))
        return sorted(Digest(d) for d in found)

    # -- images ------------------------------------------------------------------------------

    def images(
        self,
        name: str | None = None,
        *,
        unreadable: list[tuple[str, str, RegstoreError]] | None = None,
    ) -> list[ImageRecord]:
        """Every tagged image of repository ``name`` (default: of every repository), with sizes.

        One :class:`~regstore.imagelist.ImageRecord` per tag, sorted by name and tag: digest,
        media type, platforms, ``size`` (each blob and manifest counted once) and
        ``unique_size`` (what no other image of this listing shares), ``partial``. Raises
        RepositoryNotFoundError for a ``name`` the store does not hold, and the error of a tag
        whose manifest cannot be read (dangling, damaged) unless ``unreadable`` is a list,
        which then gets ``(name, tag, error)`` of each such tag while the others are listed.
        """
        names = None if name is None else [validate_name(name)]
        return list_images(self, names, read_config=self._read_config, unreadable=unreadable)

    def image(self, name: str, reference: str) -> ImageRecord:
        """The record of ``name`` at a tag or digest, sized against the repository's tags.

        A digest reference gives a record without a tag. Raises ImageManifestNotFoundError.
        """
        name, reference = validate_name(name), validate_reference(reference)
        # another tag that cannot be read (damaged, dangling, an index short of a child) is
        # left out of the sizing: only the image asked about must be whole
        unreadable: list[tuple[str, str, RegstoreError]] = []
        if not is_digest(reference):
            for record in self.images(name, unreadable=unreadable):
                if record.tag == reference:
                    return record
            for _, tag, exc in unreadable:
                if tag == reference:
                    raise exc
            raise ImageManifestNotFoundError(name, reference)
        try:
            names: list[str] = [name] if self.tags(name) else []
        except NotFoundError:
            names = []
        records = list_images(
            self,
            names,
            read_config=self._read_config,
            extra=[(name, reference)],
            unreadable=unreadable,
        )
        return records[-1]

    def _read_config(self, digest: str) -> bytes | None:
        """A small blob's bytes (an image config), or None when it is larger than a config."""
        size = self.blob_size(digest)
        if size is None or size > MAX_CONFIG_SIZE:
            return None
        return read_blob(self, digest)

    # -- blobs -------------------------------------------------------------------------------

    def layer(self, digest: str) -> Layer:
        """A handle on the blob ``digest`` for reading, writing and waiting (the seed's Layer)."""
        return Layer(self, Digest(digest))

    def blob_status(self, digest: str) -> BlobStatus:
        """Where the blob stands (absent, partial, writing, complete)."""
        return self._ask(self._hooks.regstore_store_blob_status, digest=Digest(digest))

    def blob_exists(self, digest: str) -> bool:
        """True if the blob is complete (verified and committed)."""
        return self.blob_status(digest).state is BlobState.COMPLETE

    def blob_size(self, digest: str) -> int | None:
        """Size of a complete blob, or None when it is not complete."""
        status = self.blob_status(digest)
        return status.size if status.state is BlobState.COMPLETE else None

    def blobs(self) -> list[BlobInfo]:
        """Every complete blob in the store."""
        found = self._ask(self._hooks.regstore_store_list_blobs)
        return sorted(found, key=lambda b: b.digest)

    def delete_blob(self, digest: str) -> None:
        """Delete a complete blob (garbage collection only: manifests may still need it)."""
        self._call(self._hooks.regstore_store_delete_blob, digest=Digest(digest))

    def claim_blob(self, digest: str) -> int | None:
        """The size of the complete blob ``digest``, which the caller is about to reference
        (a pull that found it present); None when it is not complete.

        A blob found present is recorded as used now (``regstore_store_mark_blob_used``), under
        the same store lock that :func:`~regstore.engine.gc.collect_garbage` holds while it
        decides to delete a blob: so gc either deleted it first (the answer is None and the
        caller fetches it again) or sees the claim and keeps it for its grace period. Without
        this, a blob that was garbage (its image deleted, older than the grace) could be
        collected after a pull decided to reuse it and before the pull's manifest named it.
        The protection lasts one grace period from the claim, on backends that date claims
        (``regstore_store_mark_blob_used``) and whose store lock excludes other processes.
        """
        checked = Digest(digest)
        with self.lock(blob_use_lock_key(checked)):
            size = self.blob_size(checked)
            if size is not None and "regstore_store_mark_blob_used" in self._implemented:
                try:
                    self._hooks.regstore_store_mark_blob_used(digest=checked)
                except BlobNotFoundError:  # removed meanwhile by something other than gc
                    return None
            return size

    def _claim_if_stored(self, digest: Digest) -> None:
        """:meth:`claim_blob` for bytes that are usually new (a manifest being written): no
        lock when they are absent, since gc never deletes what is absent and a blob written
        from now on is dated by its commit, which gc reads under the lock."""
        if self.blob_size(digest) is not None:
            self.claim_blob(str(digest))

    def blob_used_at(self, digest: str) -> float | None:
        """When the blob was last committed or claimed (:meth:`claim_blob`), in epoch seconds;
        None when the backend keeps no such record (or the blob is gone). Ask it holding
        ``blob_use_lock_key(digest)`` for an answer no claim can overtake."""
        if "regstore_store_blob_used_at" not in self._implemented:
            return None
        return self._hooks.regstore_store_blob_used_at(digest=Digest(digest))

    def quarantine_blob(self, digest: str) -> str:
        """Move a damaged blob aside so the next pull fetches it again; returns where it went.

        Raises BlobNotFoundError if it is not complete, LayerLockedError while a writer holds
        it, UnsupportedError if the backend cannot.
        """
        where = self._ask(self._hooks.regstore_store_quarantine_blob, digest=Digest(digest))
        self._quarantine = None  # listed again when next asked
        return where

    def quarantined(self) -> frozenset[str]:
        """Digests of the blobs moved aside (:meth:`quarantine_blob`) that the store still
        lacks, as found at most 30 seconds ago (one listing of the quarantine, and a look at
        each blob it names); empty where the backend lists no quarantine or cannot list it
        now. The store may hold some of them again (fetched since): :meth:`blob_exists`
        tells."""
        now = time.monotonic()
        listed = self._quarantine
        if listed is None or now - listed[0] > _QUARANTINE_LISTED_FOR:
            listed = self._quarantine = (now, self._lost_blobs())
        return listed[1]

    def _lost_blobs(self) -> frozenset[str]:
        try:
            if "regstore_store_list_quarantined" in self._implemented:
                aside = list(self._ask(self._hooks.regstore_store_list_quarantined))
            elif "regstore_store_list_staging" in self._implemented:
                aside = [
                    e.digest
                    for e in self.staging()
                    if e.kind is StagingKind.QUARANTINE and e.digest is not None
                ]
            else:
                return frozenset()
            # fetched again since (a pull, an earlier sync): nothing lost any more
            return frozenset(d for d in aside if not self.blob_exists(d))
        except UnsupportedError:  # (a backend that lists no quarantine: none known)
            return frozenset()
        except RegstoreError as exc:  # (credentials without a listing's permission)
            where = redact_store_url(self.url) or "the store"
            log.warning(
                "could not list the blobs verify moved aside in %s (%s): images that lack "
                "one are not fetched again",
                where,
                exc,
            )
            return frozenset()

    def set_aside(self, digest: str) -> str:
        """Take a damaged blob out of the store so the next pull fetches it again: moved aside
        (:meth:`quarantine_blob`), or deleted where the backend cannot quarantine (its bytes
        are useless, and while it is there a pull skips it). Returns where it went, or
        :data:`DELETED_NOT_MOVED` (read after "moved to").

        Raises BlobNotFoundError if it is not complete, LayerLockedError while a writer holds
        it, UnsupportedError if the backend can do neither.
        """
        try:
            return self.quarantine_blob(digest)
        except UnsupportedError:
            if "regstore_store_delete_blob" not in self._implemented:
                raise
        self.delete_blob(digest)
        return DELETED_NOT_MOVED

    # -- housekeeping ------------------------------------------------------------------------

    def staging(self) -> list[StagingEntry]:
        """Leftovers in the store's working area: staged bytes of unfinished writes,
        incomplete multipart uploads, locks, temporary files, quarantined blobs.
        """
        return self._ask(self._hooks.regstore_store_list_staging)

    def drop_staging(self, entry: StagingEntry) -> bool:
        """Remove one entry of :meth:`staging` unless a writer took it up again since.

        True when it is gone; False when it is in use (or changed since it was listed).
        """
        return bool(self._ask(self._hooks.regstore_store_drop_staging, entry=entry))


class Layer:
    """A blob in a store, by digest: read it, write it once, or wait for its writer.

    The seed's ``Layer``, made precise: see :meth:`reader`, :meth:`writer`, :meth:`wait`.
    """

    def __init__(self, store: ObjectStore, digest: Digest) -> None:
        self.store = store
        self.digest = digest

    def status(self) -> BlobStatus:
        """Where this blob stands."""
        return self.store.blob_status(self.digest)

    def exists(self) -> bool:
        """True if complete."""
        return self.status().state is BlobState.COMPLETE

    def reader(self, offset: int = 0, *, verify: bool = True) -> LayerReader:
        """Open the complete blob for reading (from ``offset``).

        A reader opened at 0 hashes the bytes as they stream by and checks them against the
        digest when it reaches the end: the read that would hand over the last bytes raises
        DigestMismatchError instead (naming the store and the blob), so a consumer never
        finishes with a damaged blob — a push sends nothing the registry could accept. A
        reader opened at an offset cannot check the whole blob and does not; nor does one
        with ``verify=False`` (for callers that hash the bytes themselves).

        Raises BlobNotFoundError if it was never (completely) written, LayerLockedError while
        a writer holds it.
        """
        if offset < 0:
            raise ValueError("offset must not be negative")
        store = self.store
        handle = store._ask(
            store._hooks.regstore_store_open_blob, digest=self.digest, offset=offset
        )
        where = f"blob {self.digest} in the store {redact_store_url(store.url) or '?'}"
        return LayerReader(self.digest, handle, offset, verify=verify, subject=where)

    def writer(self) -> LayerWriter:
        """Take the blob for writing; resumes bytes an interrupted writer left behind.

        Raises LayerAlreadyExistsError when complete, LayerLockedError when another writer
        (thread or process) holds it.
        """
        store = self.store
        handle = store._ask(store._hooks.regstore_store_blob_writer, digest=self.digest)
        return LayerWriter(self.digest, handle)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no writer holds the blob. True if it is then complete.

        Unlike the seed, which returned success either way, False says the writer failed or
        gave up (retry the write). Raises TimeoutError after ``timeout`` seconds.
        """
        store = self.store
        return bool(
            store._ask(store._hooks.regstore_store_wait_blob, digest=self.digest, timeout=timeout)
        )

    def __repr__(self) -> str:
        return f"Layer({self.digest})"


class LayerReader:
    """A read-only stream over a complete blob, with ``size`` and ``current_size``.

    Read from 0 (and ``verify`` left on), it checks the bytes against the digest as it goes:
    the read that reaches the end of a damaged blob raises DigestMismatchError instead of
    returning its last bytes (see :meth:`Layer.reader`). Hashing streams: nothing is buffered.
    """

    def __init__(
        self,
        digest: Digest,
        handle: BlobReadHandle,
        offset: int = 0,
        *,
        verify: bool = True,
        subject: str = "",
    ) -> None:
        self.digest = digest
        self._handle = handle
        self.size: int = handle.size
        self.offset = offset
        self._closed = False
        self._subject = subject or f"blob {digest}"
        # only a read of the whole blob can be checked against its digest
        self._digester: Digester | None = (
            Digester(digest.algorithm) if verify and offset == 0 else None
        )
        self._failure: DigestMismatchError | None = None

    @property
    def verifying(self) -> bool:
        """True while the bytes read are being checked (a whole-blob read not yet ended)."""
        return self._digester is not None

    def _mismatch(self, digester: Digester) -> DigestMismatchError:
        self._digester = None
        self._failure = DigestMismatchError(
            self._subject,
            expected=str(self.digest),
            actual=str(digester.digest()),
            expected_size=self.size,
            actual_size=digester.size,
        )
        return self._failure

    def _check(self, data: bytes | memoryview, wanted: int) -> None:
        """Hash ``data`` (just read); at the end of the blob, compare with the digest."""
        digester = self._digester
        if digester is None:
            return
        if data:
            digester.update(data)
        if digester.size > self.size:
            raise self._mismatch(digester)
        if digester.size == self.size:
            if digester.digest() != self.digest:
                raise self._mismatch(digester)
            self._digester = None  # verified: the rest is plain reading
        elif not data and wanted != 0:
            raise self._mismatch(digester)  # the stored blob ends short of its size

    @property
    def current_size(self) -> int:
        """Bytes stored for the layer: all of them, since only complete layers are readable."""
        return self.size

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all remaining when ``n`` < 0).

        Raises DigestMismatchError at the end of a damaged blob (a verifying reader).
        """
        if self._failure is not None:
            raise self._failure
        data = self._handle.read(n)
        self._check(data, n)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer``; returns the count (0 at the end).

        Raises DigestMismatchError at the end of a damaged blob (a verifying reader).
        """
        if self._failure is not None:
            raise self._failure
        readinto = getattr(self._handle, "readinto", None)
        if readinto is not None:
            count = int(readinto(buffer))
        else:
            data = self._handle.read(len(buffer))
            memoryview(buffer)[: len(data)] = data
            count = len(data)
        if self._digester is not None:
            with memoryview(buffer) as view:
                self._check(view[:count], len(buffer))
        return count

    def readable(self) -> bool:
        """Always True: a file-like object that can be read."""
        return True

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Iterate the remaining bytes in chunks."""
        while chunk := self.read(chunk_size):
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def close(self) -> None:
        """Release the backend's read handle. Idempotent."""
        if not self._closed:
            self._closed = True
            self._handle.close()

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Chunks at least this large are hashed beside the write rather than after it.
_OVERLAP_MIN = 1 << 20
_hash_executor: ThreadPoolExecutor | None = None
_hash_executor_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    global _hash_executor
    with _hash_executor_lock:
        if _hash_executor is None:
            # (imported here: opening a store, or reading one, needs no thread pool)
            from concurrent.futures import ThreadPoolExecutor

            _hash_executor = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="regstore-hash"
            )
        return _hash_executor


class LayerWriter:
    """A write-only handle to a blob being stored; verifies on :meth:`commit`.

    Declare the full size with :meth:`set_size` (or the ``size`` argument of commit) before the
    blob can be committed. ``current_size`` counts bytes stored so far, including those an
    interrupted writer left: continue from there (e.g. a ranged GET) to resume.

    :meth:`close` without commit releases the blob and keeps the bytes for a later resume;
    :meth:`discard` throws them away. As a context manager, leaving the block closes it
    (committing is always explicit).
    """

    def __init__(self, digest: Digest, handle: BlobWriteHandle) -> None:
        self.digest = digest
        self._handle = handle
        self._digester = Digester(digest.algorithm)
        self._size: int | None = None
        self._done = False
        if handle.current_size:
            # A resumed write: the digest must cover the whole blob, so re-hash the prefix.
            for chunk in handle.staged():
                self._digester.update(chunk)
            if self._digester.size != handle.current_size:
                handle.discard()
                raise StoreError(
                    f"staged bytes of {digest} changed while resuming "
                    f"({self._digester.size} read, {handle.current_size} expected)"
                )

    @property
    def current_size(self) -> int:
        """Bytes written to the layer so far (including resumed ones)."""
        return self._digester.size

    @property
    def size(self) -> int | None:
        """The declared full size, or None before :meth:`set_size`."""
        return self._size

    def set_size(self, size: int) -> None:
        """Declare the full size of the blob (the seed's ``SetSize``)."""
        if self._done:
            raise StoreError(f"layer {self.digest} is closed for writing")
        if size < 0 or size < self.current_size:
            raise ValueError(
                f"size {size} is negative or smaller than the {self.current_size} bytes written"
            )
        self._size = size
        tell_backend = getattr(self._handle, "set_size", None)  # optional (see BlobWriteHandle)
        if tell_backend is not None:
            tell_backend(size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append bytes. Writing past the declared size is refused."""
        if self._done:
            raise StoreError(f"layer {self.digest} is closed for writing")
        n = len(data)
        if self._size is not None and self.current_size + n > self._size:
            raise DigestMismatchError(
                f"layer {self.digest}",
                expected=str(self.digest),
                expected_size=self._size,
                actual_size=self.current_size + n,
            )
        chunk = data if isinstance(data, (bytes, memoryview)) else bytes(data)
        if n >= _OVERLAP_MIN:
            # Hash in a pool thread while this one writes, so a large blob costs max(hash,
            # write) per chunk instead of their sum. The write waits until the hash has begun:
            # hashlib lets go of the GIL for the whole chunk, but a write that holds it (a
            # memory store's BytesIO append) would otherwise keep the pool thread from even
            # starting, and the two ran one after the other (benchmarks/RESULTS.md). The write
            # stays in this thread (one thread writes a handle). The chunk is not reused before
            # both finish; chunks are hashed strictly in order.
            hashing = threading.Event()
            hashed = _hash_pool().submit(self._hash_chunk, chunk, hashing)
            hashed.add_done_callback(lambda _: hashing.set())  # a task that never ran
            try:
                hashing.wait()
                self._handle.write(chunk)
            finally:
                hashed.result()
        else:
            self._handle.write(chunk)
            self._digester.update(chunk)
        return n

    def _hash_chunk(self, chunk: bytes | memoryview, started: threading.Event) -> None:
        started.set()
        self._digester.update(chunk)

    def writable(self) -> bool:
        """True until the writer is committed, closed or discarded."""
        return not self._done

    def commit(self, size: int | None = None) -> Digest:
        """Verify size and digest, then make the blob visible atomically.

        On a mismatch the staged bytes are discarded and DigestMismatchError is raised; the
        layer then is absent and can be written again.
        """
        if size is not None:
            self.set_size(size)
        if self._done:
            raise StoreError(f"layer {self.digest} is closed for writing")
        expected_size = self._size
        actual = self._digester.digest()
        try:
            if expected_size is None:
                raise StoreError(f"layer {self.digest}: set_size was never called before commit")
            if actual != self.digest or self._digester.size != expected_size:
                raise DigestMismatchError(
                    f"layer {self.digest}",
                    expected=str(self.digest),
                    actual=str(actual),
                    expected_size=expected_size,
                    actual_size=self._digester.size,
                )
        except RegstoreError:
            self.discard()
            raise
        self._done = True
        self._handle.commit(expected_size)
        return self.digest

    def discard(self) -> None:
        """Throw away what was written and release the blob."""
        if not self._done:
            self._done = True
            self._handle.discard()

    def close(self) -> None:
        """Release the blob without committing; stored bytes remain for a resume."""
        if not self._done:
            self._done = True
            self._handle.close()

    @property
    def closed(self) -> bool:
        """True once committed, closed or discarded."""
        return self._done

    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_blob(store: ObjectStore, digest: str) -> bytes:
    """Read a whole (small) blob, such as a config; BlobNotFoundError if absent."""
    with store.layer(digest).reader() as reader:
        return reader.read()
