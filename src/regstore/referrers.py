"""Referrers: the manifests that point at another one through ``subject`` (signatures, SBOMs,
attestations), and the two ways registries and stores list them (pure values, no I/O).

- The OCI 1.1 **referrers API** answers ``GET /v2/<name>/referrers/<digest>`` with an image
  index whose descriptors carry ``artifactType`` and the referrer's annotations.
- The **referrers tag schema** is the fallback for registries without it: the same index,
  kept by clients under the tag ``<alg>-<hex>`` of the subject (:func:`referrers_tag`). regstore's
  stores keep their referrers this way too, so "what refers to D" is one tag lookup and a stock
  ``docker-registry`` serving a store shows the tags cosign and oras expect.
- **Sigstore tags** (``sha256-<hex>.sig``, ``.att``, ``.sbom``) are cosign's older convention:
  plain tags next to the image, without ``subject`` (:func:`sigstore_tags`).
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import Any

from regstore.errors import InvalidReferenceError
from regstore.manifest import OCI_INDEX, Descriptor, Manifest
from regstore.reference import Digest

__all__ = [
    "INDEX_UPDATE_ATTEMPTS",
    "SIGSTORE_SUFFIXES",
    "add_referrer",
    "artifact_type_list",
    "filter_referrers",
    "index_lock",
    "is_referrers_tag",
    "is_supply_chain_tag",
    "keep_in_index",
    "referrer_descriptor",
    "referrers_in",
    "referrers_tag",
    "remove_referrer",
    "sigstore_tags",
    "subject_of_tag",
]

#: cosign's tag suffixes: signature, attestation, SBOM.
SIGSTORE_SUFFIXES = (".sig", ".att", ".sbom")

_REFERRERS_TAG = re.compile(r"^([a-z0-9]{1,32})-([a-f0-9]{32,64})$")
_SUPPLY_CHAIN_TAG = re.compile(r"^([a-z0-9]{1,32})-([a-f0-9]{32,64})(\.sig|\.att|\.sbom)?$")


def referrers_tag(digest: str) -> str:
    """The referrers-schema tag of ``digest``: ``<alg>-<hex>`` (alg cut to 32 characters and
    the encoded part to 64, as the distribution spec says)."""
    d = Digest(digest)
    return f"{d.algorithm[:32]}-{d.hex[:64]}"


def sigstore_tags(digest: str) -> tuple[str, ...]:
    """cosign's tags for ``digest``: ``sha256-<hex>.sig``, ``.att``, ``.sbom``."""
    base = referrers_tag(digest)
    return tuple(base + suffix for suffix in SIGSTORE_SUFFIXES)


def is_referrers_tag(tag: str) -> bool:
    """True for a tag shaped like a referrers-schema index tag (``sha256-<64 hex>``)."""
    return _REFERRERS_TAG.match(tag) is not None


def is_supply_chain_tag(tag: str) -> bool:
    """True for a referrers-schema tag or a sigstore tag (``sha256-<hex>[.sig|.att|.sbom]``):
    tags that describe another image rather than name one."""
    return _SUPPLY_CHAIN_TAG.match(tag) is not None


def subject_of_tag(tag: str) -> Digest | None:
    """The digest a supply-chain tag is about (``sha256-<hex>.sig`` → ``sha256:<hex>``), or
    None for another tag or a digest cut short by the 64-character limit."""
    m = _SUPPLY_CHAIN_TAG.match(tag)
    if m is None:
        return None
    try:
        return Digest(f"{m.group(1)}:{m.group(2)}")
    except InvalidReferenceError:
        return None


def referrer_descriptor(manifest: Manifest) -> Descriptor:
    """The descriptor a referrers index lists for ``manifest``: its media type, digest and
    size, its ``artifactType`` (else its config's media type, as the spec says) and its
    annotations."""
    artifact_type = manifest.artifact_type
    if artifact_type is None and manifest.config is not None:
        artifact_type = manifest.config.media_type
    annotations = manifest.doc.get("annotations")
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        annotations = {}
    return Descriptor(
        manifest.media_type,
        manifest.digest,
        manifest.size,
        annotations=dict(annotations),
        artifact_type=artifact_type,
    )


def referrers_in(index: Manifest | None) -> list[Descriptor]:
    """The descriptors a referrers index lists (none for None or a manifest that is not an
    index: the spec says to treat that as "no referrers")."""
    if index is None or not index.is_index:
        return []
    return list(index.manifests)


def artifact_type_list(artifact_types: Iterable[str] | None) -> tuple[str, ...]:
    """``artifact_types`` as a tuple; one type given as a plain string is that one type (a
    string is an iterable of strings too: taken apart, it matched no referrer at all, or,
    tested with ``in``, any type it contains)."""
    if artifact_types is None:
        return ()
    if isinstance(artifact_types, str):
        return (artifact_types,) if artifact_types else ()  # "" asked for no filter before
    return tuple(artifact_types)


def filter_referrers(
    descriptors: Iterable[Descriptor], artifact_types: Collection[str] | None
) -> list[Descriptor]:
    """Keep the descriptors whose ``artifactType`` is one of ``artifact_types`` (all when it is
    None or empty; one type may be given as a plain string)."""
    wanted = artifact_type_list(artifact_types)
    if not wanted:
        return list(descriptors)
    return [d for d in descriptors if d.artifact_type in wanted]


def _index(entries: Sequence[Any], base: Manifest | None) -> Manifest:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}
    if base is not None and isinstance(base.doc.get("annotations"), dict):
        doc["annotations"] = base.doc["annotations"]
    raw = json.dumps(doc, indent=2, sort_keys=False).encode("utf-8")
    return Manifest.parse(raw, OCI_INDEX)


def _entry_digest(entry: Any) -> str | None:
    digest = entry.get("digest") if isinstance(entry, dict) else None
    return digest if isinstance(digest, str) else None


def add_referrer(
    index: Manifest | None,
    descriptor: Descriptor,
    exists: Callable[[str], bool] | None = None,
) -> Manifest | None:
    """The referrers index ``index`` plus ``descriptor``, or None when it lists it already
    (and nothing was dropped).

    The entries already there are kept as they were (exact JSON objects, order), the new one
    is appended. A missing ``index`` (or one that is not an index) starts a new one. With
    ``exists``, the entries whose manifest it says is gone (a deleted signature) are dropped:
    a stale entry would otherwise stay listed forever, and a registry refuses the whole index
    while it names a manifest it does not have.
    """
    base = index if index is not None and index.is_index else None
    entries: list[Any] = list(base.doc.get("manifests", [])) if base is not None else []
    wanted = str(descriptor.digest)
    kept = [
        e
        for e in entries
        if exists is None or _entry_digest(e) in (None, wanted) or exists(str(_entry_digest(e)))
    ]
    listed = any(_entry_digest(e) == wanted for e in kept)
    if listed and len(kept) == len(entries):
        return None
    if not listed:
        kept.append(descriptor.to_json())
    return _index(kept, base)


def remove_referrer(index: Manifest | None, digest: str) -> Manifest | None:
    """The referrers index ``index`` without the entry of ``digest``, or None when it does not
    list it. The other entries are kept as they were."""
    if index is None or not index.is_index:
        return None
    entries: list[Any] = list(index.doc.get("manifests", []))
    kept = [e for e in entries if _entry_digest(e) != str(digest)]
    if len(kept) == len(entries):
        return None
    return _index(kept, index)


#: How many times an index update is redone after another writer's change.
INDEX_UPDATE_ATTEMPTS = 8


class _IndexLock:
    """A ``threading.Lock`` that can be weakly referenced (a bare lock cannot)."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (as ``threading.Lock.acquire``)."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def locked(self) -> bool:
        """True while someone holds it."""
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_locks_guard = threading.Lock()
# Weak values: an entry lives while some thread holds (or waits for) its lock, so the table
# does not keep one lock per subject ever indexed for the life of the process.
_locks: weakref.WeakValueDictionary[Hashable, _IndexLock] = weakref.WeakValueDictionary()


def index_lock(key: Hashable) -> _IndexLock:
    """The lock of one referrers index in this process (``key`` names the place and tag), so
    threads updating the same index take turns instead of racing. Hold on to the returned
    lock while using it (``with index_lock(key):``): a lock nobody holds is forgotten."""
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _IndexLock()
            _locks[key] = lock
        return lock


def keep_in_index(
    read: Callable[[], Manifest | None],
    write: Callable[[Manifest], None],
    descriptor: Descriptor,
    attempts: int = INDEX_UPDATE_ATTEMPTS,
    exists: Callable[[str], bool] | None = None,
) -> bool:
    """Make the referrers index that ``read`` returns list ``descriptor``: add it, ``write``
    the new index, read it back; redone while another writer's change hides ours. True once
    it is listed, False after ``attempts`` writes that another writer undid.

    No conditional write exists on a registry (nor on every store), so this cannot exclude a
    writer that reads before our write and writes after our read-back; callers serialise their
    own threads with :func:`index_lock` (and stores their processes with the store's lock).
    ``exists`` drops entries whose manifest is gone (see :func:`add_referrer`).
    """
    current = read()
    for _ in range(attempts):
        updated = add_referrer(current, descriptor, exists)
        if updated is None:
            return True
        write(updated)
        current = read()
        if any(d.digest == descriptor.digest for d in referrers_in(current)):
            return True
    return False
