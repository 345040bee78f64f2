"""``minimal:///path``: the smallest backend the plugin kit allows, read and write only.

Built from :mod:`regstore.backends.kit` alone, as docs/plugin-guide.md describes: a directory
of files, an append-and-rename staging part and flock locks. It implements none of the optional
operations (deleting, listing blobs, quarantine, listing the staging area): those raise
UnsupportedError, and tests/test_conformance_kit.py runs the whole conformance suite against it
with those capability switches off. tests/support/broken_backends.py breaks it on purpose.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import IO

from regstore.backends.kit import (
    AppendStaging,
    ComposedBlobs,
    Digest,
    FlockLockManager,
    Register,
    StagingStream,
    StoreLocation,
    StoreOptionError,
    hookimpl,
    location_factory,
)
from regstore.errors import ImageManifestNotFoundError, RepositoryNotFoundError


def _write_atomically(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"  # unique per writer: threads, processes
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


class FileStaging(AppendStaging):
    """Staged bytes in ``staging/<alg>/<hex>``, appended; sealed by a rename."""

    store: MinimalBackend

    def path(self, digest: Digest) -> str:
        return os.path.join(self.store.root, "staging", digest.algorithm, digest.hex)

    def size(self, digest: Digest) -> int:
        try:
            return os.path.getsize(self.path(digest))
        except FileNotFoundError:
            return 0

    def append(self, digest: Digest) -> StagingStream:
        os.makedirs(os.path.dirname(self.path(digest)), exist_ok=True)
        return open(self.path(digest), "ab")

    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        with open(self.path(digest), "rb") as file:
            while chunk := file.read(chunk_size):
                yield chunk

    def seal(self, digest: Digest) -> None:
        target = self.store.blob_path(digest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(self.path(digest), target)
        os.utime(target)  # dated by the commit (the rename kept the staging's time)

    def drop(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))


class MinimalBackend(ComposedBlobs):
    """Blobs in ``blobs/<alg>/<hex>``; manifests in ``manifests/<name>/<digest>`` (+ ``.type``
    and ``.partial``); tags in ``tags/<name>/<tag>`` holding the digest."""

    backend_name = "minimal"

    def __init__(self, root: str) -> None:
        self.root = root
        self.locks = FlockLockManager(os.path.join(root, "locks"))
        self.staging = FileStaging()
        self.staging.attach(self)

    def blob_path(self, digest: Digest) -> str:
        return os.path.join(self.root, "blobs", digest.algorithm, digest.hex)

    def _dir(self, kind: str, name: str) -> str:
        return os.path.join(self.root, kind, urllib.parse.quote(name, safe=""))

    # -- complete blobs --------------------------------------------------------------------
    def complete_size(self, digest: Digest) -> int | None:
        try:
            return os.path.getsize(self.blob_path(digest))
        except FileNotFoundError:
            return None

    def open_complete(self, digest: Digest, offset: int) -> IO[bytes]:
        file = open(self.blob_path(digest), "rb")  # noqa: SIM115 - the caller closes it
        file.seek(offset)
        return file

    def store_exists(self) -> bool:
        return os.path.isdir(self.root)

    # -- manifests -------------------------------------------------------------------------
    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        try:
            if ":" not in reference:
                with open(os.path.join(self._dir("tags", name), reference)) as tag:
                    reference = tag.read()
            path = os.path.join(self._dir("manifests", name), reference)
            with open(path, "rb") as raw, open(path + ".type") as media_type:
                return raw.read(), media_type.read()
        except FileNotFoundError:
            raise ImageManifestNotFoundError(name, reference) from None

    def put_manifest(self, name: str, tag: str | None, raw: bytes, media_type: str,
                     digest: Digest, partial: bool) -> None:  # fmt: skip
        path = os.path.join(self._dir("manifests", name), str(digest))
        _write_atomically(path + ".type", media_type.encode())
        _write_atomically(path, raw)
        if partial:
            _write_atomically(path + ".partial", b"")
        elif os.path.exists(path + ".partial"):
            os.unlink(path + ".partial")
        if tag is not None:
            _write_atomically(os.path.join(self._dir("tags", name), tag), str(digest).encode())

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        return os.path.exists(os.path.join(self._dir("manifests", name), f"{digest}.partial"))

    def list_repositories(self) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, "manifests"))
        except FileNotFoundError:
            return []
        return [urllib.parse.unquote(n) for n in names]

    def list_manifests(self, name: str) -> list[str]:
        try:
            files = os.listdir(self._dir("manifests", name))
        except FileNotFoundError:
            raise RepositoryNotFoundError(name) from None
        return [f for f in files if not f.endswith((".type", ".partial", ".tmp"))]

    def list_tags(self, name: str) -> list[str]:
        self.list_manifests(name)  # RepositoryNotFoundError for an unknown name
        try:
            return [t for t in os.listdir(self._dir("tags", name)) if not t.endswith(".tmp")]
        except FileNotFoundError:
            return []


@location_factory({})
def open_backend(location: StoreLocation) -> MinimalBackend:
    """``minimal:///absolute/path``."""
    if location.host or not location.path.startswith("/"):
        raise StoreOptionError(f"not a minimal store URL: {location.shown}",
                               hint="write minimal:///absolute/path")  # fmt: skip
    return MinimalBackend(location.path)


@hookimpl
def regstore_register_backends(register: Register) -> None:
    register("minimal", open_backend, "a read/write-only store in a directory (tests)")
