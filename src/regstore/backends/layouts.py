"""How keys are arranged inside a store's filesystem: the ``Layout`` base and what it needs.

A layout decides where blobs live and how manifests, tags and repositories are recorded; it
never does I/O itself but goes through its :class:`LayoutHost` (the
:class:`~regstore.backends.fsspec_store.FsspecBackend`), which builds every path from validated
parts under the store root, writes small files atomically and provides the store-wide mutex.
Blob *writes* (staging, locking, promotion) are the host's business, not the layout's: the
layout only names the final place of a blob.

Layouts: :mod:`regstore.backends.layout_distribution` (the Docker registry's own storage, the
default) and :mod:`regstore.backends.layout_oci` (the OCI Image Layout).
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from regstore.errors import InvalidReferenceError, ManifestInvalidError, StoreDamageError
from regstore.manifest import Manifest, digest_of, media_type_of
from regstore.reference import SUPPORTED_ALGORITHMS, Digest

__all__ = ["Layout", "LayoutHost", "parse_link", "sniff_media_type"]


class LayoutHost(Protocol):
    """The storage primitives a layout uses; every path comes from :meth:`path`."""

    def path(self, *parts: str) -> str:
        """The path of ``parts`` under the store root (a part may hold ``/`` between
        components). Refuses anything that could leave the root.
        """

    def read_file(self, path: str) -> bytes | None:
        """The whole content of a small file, or None if it does not exist."""

    def write_file(self, path: str, data: bytes) -> None:
        """Replace a small file atomically (readers see the old or the new bytes, never a mix)."""

    def make_durable(self) -> None:
        """Return once everything written so far is durable: a layout calls it before it
        writes what makes a manifest visible (what it references must survive a crash)."""

    def exists(self, path: str) -> bool:
        """True if a file or directory exists at ``path``. (Layouts ask :meth:`file_size` about
        files: on regstore's S3 and Azure stores a missing path costs a listing besides the
        HEAD here.)"""

    def file_size(self, path: str) -> int | None:
        """Size of the file at ``path``, or None if there is none. A path that cannot be
        examined (no permission, a loop of links) raises: it is not absent."""

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        """``(name, is_directory)`` of the entries of a directory; empty if it is missing.
        A host with symbolic links reports none as a directory, and may answer
        ``follows_link(path, start) -> bool`` (optional; see ``LocalBackend.follows_link``):
        whether a walk of the tree under ``start`` goes into the link ``path`` (the
        distribution layout's walk of its repositories asks it)."""

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file (or a directory tree with ``recursive``); missing is fine."""

    def mutex(self, key: str) -> contextlib.AbstractContextManager[None]:
        """A critical section shared by every thread and process using this store."""


def check_tagged_bytes(name: str, tag: str, digest: Digest, raw: bytes) -> None:
    """Raise ManifestInvalidError unless ``raw``, the manifest bytes stored for ``tag``, have
    the ``digest`` the tag names: read by tag, damaged bytes were handed on as they were (a
    push by tag published them under another digest)."""
    found = digest_of(raw, digest.algorithm)
    if found != digest:
        raise ManifestInvalidError(
            f"stored manifest {name}:{tag} is damaged: its bytes hash to {found}, not to the "
            f"{digest} the tag names; pull the image again to mend it"
        )


def sniff_media_type(raw: bytes) -> str:
    """The media type of stored manifest bytes, by distribution's own sniffing rule.

    Returns ``""`` for bytes that are not a JSON object. The rest is not validated here: the
    facade parses the bytes it is given (and reports damaged ones), so a full parse here too
    would only do that work twice on every manifest read.
    """
    return media_type_of(raw)


def parse_link(data: bytes, where: str) -> Digest:
    """Parse a link file (``sha256:<hex>``, no newline; whitespace tolerated on read)."""
    try:
        return Digest(data.decode("ascii").strip())
    except (UnicodeDecodeError, InvalidReferenceError) as exc:
        raise StoreDamageError(f"corrupt link file {where}: {exc}", where) from None


class Layout(abc.ABC):
    """Where a store keeps blobs and how it records manifests, tags and repositories.

    Manifest methods receive validated names, tags and digests and raise the store errors of
    :class:`regstore.hookspecs.StoreSpec` (ImageManifestNotFoundError,
    RepositoryNotFoundError). They must be safe to call from several threads and processes at
    once: each file write is atomic, and a layout that read-modify-writes a shared file does so
    under ``host.mutex``.
    """

    #: The option value selecting this layout (``layout="oci"``).
    name: ClassVar[str]
    #: Paths (parts under the root) any of which says a store of this layout is there
    markers: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def __init__(self, host: LayoutHost) -> None:
        self.host = host

    # -- blobs -------------------------------------------------------------------------------

    @abc.abstractmethod
    def blob_path(self, digest: Digest) -> str:
        """The final path of a complete blob (manifests are blobs too)."""

    @abc.abstractmethod
    def blobs_root(self) -> str:
        """The directory under which every blob lives (walked by ``list_blobs``)."""

    @abc.abstractmethod
    def blob_digest_of(self, relative: str) -> Digest | None:
        """The digest of the blob at ``relative`` (a path under :meth:`blobs_root`), or None
        if that file is not a blob of this layout (a foreign or temporary file).
        """

    def blob_removal_path(self, digest: Digest) -> str:
        """What to remove (recursively) to delete a blob: its file, or its own directory."""
        return self.blob_path(digest)

    def prepare(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Create the layout's fixed files (e.g. ``oci-layout``); called before the first
        write of a backend instance. Must be idempotent and safe under concurrency.
        """

    def write_manifest_blob(self, digest: Digest, raw: bytes) -> None:
        """Store manifest bytes as the blob ``digest`` unless these very bytes are there
        already: stored bytes damaged in place, their size kept, are written over with these
        (they hash to ``digest``: the facade computed it from them), or a pull that wrote the
        manifest again left it damaged."""
        path = self.blob_path(digest)
        if self.host.file_size(path) == len(raw) and self.host.read_file(path) == raw:
            return
        self.host.write_file(path, raw)

    # -- manifests ---------------------------------------------------------------------------

    @abc.abstractmethod
    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        """``(exact bytes, media type)``; ImageManifestNotFoundError if absent."""

    @abc.abstractmethod
    def put_manifest(
        self, name: str, tag: str | None, manifest: Manifest, digest: Digest, partial: bool
    ) -> None:
        """Record ``manifest`` (its blob already written) in ``name``; the tag last."""

    @abc.abstractmethod
    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        """True if ``digest`` was stored in ``name`` as a partial index."""

    def unlinked_blobs(self, name: str, digests: list[Digest]) -> dict[Digest, str]:
        """Of ``digests`` (blobs of manifests in ``name``), those ``name`` does not lead to,
        with what is wrong. Default: none, for a layout whose repositories share every blob."""
        return {}

    def outside_references(self) -> list[Digest]:
        """What content outside the repositories keeps in use (manifests other tools stored in
        the layout, and what they reference). Default: none."""
        return []

    def kept_by(
        self, manifests: Iterable[tuple[Digest, str | None]], where: str, remedy: str
    ) -> set[Digest]:
        """The manifests ``(digest, media type or None)`` and every blob and manifest they
        lead to, for :meth:`outside_references`: what other tools stored, as ``where`` (a
        path) names it (``remedy`` says what to do about damage there). A manifest regstore
        does not parse (an OCI artifact manifest, say) keeps whatever its descriptors name; a
        manifest not stored keeps nothing more. StoreDamageError when stored bytes are no JSON
        object: what they keep is unknown."""
        pending = list(manifests)
        kept: set[Digest] = set()
        while pending:
            digest, media_type = pending.pop()
            if digest in kept:
                continue
            kept.add(digest)
            raw = self.host.read_file(self.blob_path(digest))
            if raw is None:
                continue  # named but not stored: nothing of it to keep
            try:
                manifest = Manifest.parse(raw, media_type)
            except ManifestInvalidError as exc:
                blobs, children = _descriptors_in(raw, where, digest, exc, remedy)
                kept.update(blobs)
                pending += children
                continue
            kept.update(d.digest for d in manifest.blobs)
            followed = (*manifest.manifests, *filter(None, [manifest.subject]))
            pending += [(d.digest, d.media_type or None) for d in followed]
        return kept

    @abc.abstractmethod
    def delete_manifest(self, name: str, digest: Digest) -> None:
        """Forget the manifest in ``name`` and every tag of ``name`` pointing at it."""

    @abc.abstractmethod
    def delete_tag(self, name: str, tag: str) -> None:
        """Remove a tag; ImageManifestNotFoundError if there is none."""

    @abc.abstractmethod
    def list_repositories(self) -> list[str]:
        """Repositories holding at least one manifest."""

    @abc.abstractmethod
    def list_tags(self, name: str) -> list[str]:
        """Tags of ``name``; RepositoryNotFoundError if it holds no manifest."""

    @abc.abstractmethod
    def list_manifests(self, name: str) -> list[str]:
        """Manifest digests of ``name``; RepositoryNotFoundError if it holds none."""

    def describe(self) -> dict[str, Any]:
        """What to add to the backend's description."""
        return {"layout": self.name}


def _descriptors_in(
    raw: bytes, where: str, digest: Digest, why: Exception, remedy: str
) -> tuple[list[Digest], list[tuple[Digest, str | None]]]:
    """The blobs and the manifests (with their media types) that the JSON document ``raw``
    names by descriptor (``config``, ``layers``, ``blobs``, ``manifests``, ``subject``):
    those of a manifest regstore does not parse (``why``). StoreDamageError when ``raw`` is
    no JSON object (what ``where`` keeps by ``digest`` then is unknown)."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        raise StoreDamageError(
            f"{where} names {digest}, which is no manifest ({why}): what it keeps in use is "
            f"unknown, so gc deletes nothing; {remedy}",
            where,
        ) from None
    blobs: list[Digest] = []
    manifests: list[tuple[Digest, str | None]] = []
    for key in ("config", "layers", "blobs", "manifests", "subject"):
        value = doc.get(key)
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            try:
                found = Digest(item.get("digest"))  # type: ignore[arg-type]
            except InvalidReferenceError:
                continue
            if key in ("manifests", "subject"):
                kind = item.get("mediaType")
                manifests.append((found, kind if isinstance(kind, str) else None))
            else:
                blobs.append(found)
    return blobs, manifests


def split_blob_relative(relative: str, *, fanout: bool) -> Digest | None:
    """Parse ``<alg>/<hex>`` (or ``<alg>/<2 hex>/<hex>/data`` with ``fanout``) into a digest."""
    parts = relative.split("/")
    if fanout:
        if len(parts) != 4 or parts[3] != "data" or parts[2][:2] != parts[1]:
            return None
        algorithm, encoded = parts[0], parts[2]
    else:
        if len(parts) != 2:
            return None
        algorithm, encoded = parts
    if algorithm not in SUPPORTED_ALGORITHMS:
        return None
    try:
        return Digest(f"{algorithm}:{encoded}")
    except InvalidReferenceError:
        return None
