"""Staging a blob on Azure as blocks of a staging blob, then one server-side copy into place.

The kit's five staging primitives (:class:`regstore.backends.kit.AppendStaging`), on Azure's
block primitives. A blob being written is the block blob
``<root>/_regstore/uploads/<alg>/<hex>``:

- ``append``: a stream that buffers one block (:func:`~regstore_azure.blocks.block_size`) and
  stages each full block with **Put Block** (uncommitted: nothing is visible, not even the
  staging blob); ``close`` stages the short tail and commits the blocks with **Put Block
  List**, which makes them durable and readable;
- ``size``: **Get Block List** (committed and uncommitted): the committed blocks plus the
  uncommitted ones that continue their numbering (:func:`~regstore_azure.blocks.usable_blocks`).
  A writer killed mid-blob leaves uncommitted blocks; they count, and are resumed;
- ``iterate``: commits those resumed blocks first (a Put Block List of the usable blocks, so
  they become readable), then streams the staging blob: the facade re-hashes it;
- ``seal``: checks the blob's lease is still ours, copies the staging blob onto the layout's
  path (**Copy Blob**, server-side; the target appears whole when the copy succeeds, and a
  pending copy counts as absent), then deletes the staging blob;
- ``drop``: a Put Block List of no blocks (which discards uncommitted ones) and a delete.

Why not stage the blocks on the final blob itself and commit them there (no copy)? Because an
uncommitted block cannot be read back, and a resumed write must re-hash every staged byte
before it continues (the digest covers the whole blob). Azure's Put Block From URL would let
the commit reuse a readable staging blob's ranges, but Azurite does not implement it; a
same-account Copy Blob is one server-side request.

Housekeeping lists staging blobs *including those made only of uncommitted blocks* (invisible
to a plain listing) with their staged size, so ``regstore gc`` removes abandoned blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from regstore.backends.kit import (
    AppendStaging,
    Digest,
    FsspecStagingArea,
    StagingEntry,
    StagingKind,
    StagingStream,
)
from regstore.errors import StoreError

from .blocks import Block, block_id, block_size, usable_blocks
from .client import AzureObjects

if TYPE_CHECKING:
    from .backend import AzureBackend

__all__ = ["AzureBlockStaging", "BlockStream"]

_MIN_BUFFER = 64 * 1024


class BlockStream:
    """An append stream into a staging blob: Put Block per full block, Put Block List on close.

    Memory: one block buffer (grown as bytes arrive, up to the block size, then reused).
    """

    def __init__(
        self,
        objects: AzureObjects,
        name: str,
        blocks: list[Block],
        check_lease: Callable[[], None] = lambda: None,
    ) -> None:
        self._objects = objects
        self._name = name
        # A writer that outlived its lease must not touch the staging blob again: its next
        # Put Block List would discard the uncommitted blocks of the writer that took over.
        self._check_lease = check_lease
        self._ids = [b.id for b in blocks]
        self._staged = sum(b.size for b in blocks)
        self._committed = all(b.committed for b in blocks)
        self._buffer = bytearray()
        self._filled = 0

    def _room(self) -> int:
        size = block_size(self._staged)
        if len(self._buffer) < size and self._filled == len(self._buffer):
            grown = bytearray(min(size, max(_MIN_BUFFER, 2 * len(self._buffer))))
            grown[: self._filled] = memoryview(self._buffer)[: self._filled]
            self._buffer = grown
        return min(size, len(self._buffer)) - self._filled

    def _stage(self) -> None:
        if not self._filled:
            return
        try:
            identifier = block_id(len(self._ids))
        except ValueError as exc:  # Azure's 50,000 blocks: a blob of over 100 TiB
            raise StoreError(f"cannot stage more of {self._name}: {exc}") from None
        view = memoryview(self._buffer)[: self._filled]
        self._check_lease()
        self._objects.stage_block(self._name, identifier, view)
        self._ids.append(identifier)
        self._staged += self._filled
        self._filled = 0
        self._committed = False

    def write(self, data: bytes | memoryview, /) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            room = self._room()
            if room <= 0:
                self._stage()
                continue
            count = min(room, len(view))
            self._buffer[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled >= block_size(self._staged):
                self._stage()
        return total

    def close(self) -> None:
        """Stage the buffered tail and commit every block: durable, and readable."""
        self._stage()
        self._buffer = bytearray()
        if not self._committed and self._ids:
            self._check_lease()
            self._objects.commit_blocks(self._name, self._ids)
            self._committed = True


class AzureBlockStaging(FsspecStagingArea, AppendStaging):
    """The Azure store's staging part (see the module docstring)."""

    store: AzureBackend

    def name(self, digest: Digest) -> str:
        """The staging blob's name in the container."""
        return self.store.blob_name(self.store.staging_path(digest))

    def blocks(self, digest: Digest) -> list[Block]:
        """The usable staged blocks of ``digest``, in order (one Get Block List)."""
        committed, uncommitted = self.store.objects.block_list(self.name(digest))
        return usable_blocks(committed, uncommitted)

    # -- the five primitives ----------------------------------------------------------------

    def size(self, digest: Digest) -> int:
        return sum(b.size for b in self.blocks(digest))

    def append(self, digest: Digest) -> StagingStream:
        key = self.store.blob_lock_key(digest)
        return BlockStream(
            self.store.objects,
            self.name(digest),
            self.blocks(digest),
            lambda: self.store.lease_locks.check_held(key),
        )

    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        name = self.name(digest)
        blocks = self.blocks(digest)
        if not blocks:
            return
        if not all(b.committed for b in blocks):
            # resumed blocks of a killed writer: commit them, so they can be read and re-hashed
            self.store.objects.commit_blocks(name, [b.id for b in blocks])
        yield from self.store.objects.open_range(name, 0, sum(b.size for b in blocks))

    def seal(self, digest: Digest) -> None:
        self.store.lease_locks.check_held(self.store.blob_lock_key(digest))
        final = self.store.blob_name(self.store.final_blob_path(digest))
        name = self.name(digest)
        if not self.blocks(digest):  # an empty blob: nothing was ever staged
            self.store.objects.put(final, b"")
        else:
            self.store.objects.copy(name, final)
        self.drop(digest)

    def drop(self, digest: Digest) -> None:
        # only under a live lease: a writer that lost it would delete its successor's blocks
        self.store.lease_locks.check_held(self.store.blob_lock_key(digest))
        name = self.name(digest)
        committed, uncommitted = self.store.objects.block_list(name)
        if uncommitted:
            self.store.objects.commit_blocks(name, [])  # discards the uncommitted blocks
        if committed or uncommitted:
            self.store.objects.delete(name)

    # -- housekeeping -----------------------------------------------------------------------

    def _entry(self, digest: Digest, mtime: float) -> StagingEntry:
        store = self.store
        return StagingEntry(
            StagingKind.UPLOAD,
            str(digest),
            store.location(store.staging_path(digest)),
            self.size(digest),
            mtime,
            digest=str(digest),
            active=store.locks.is_held(store.blob_lock_key(digest)),
        )

    def entries(self) -> list[StagingEntry]:
        """Every staging blob, those of uncommitted blocks only included, with its staged size."""
        prefix = self.store.blob_name(self.store.work_path("uploads")) + "/"
        found = []
        for info in self.store.objects.list_blobs(prefix, uncommitted=True):
            algorithm, _, encoded = info.name[len(prefix) :].partition("/")
            try:
                digest = Digest(f"{algorithm}:{encoded}")
            except ValueError:
                continue  # not ours: leave it alone
            found.append(self._entry(digest, info.mtime))
        return sorted(found, key=lambda e: e.key)

    def entry(self, digest: Digest) -> StagingEntry | None:
        name = self.name(digest)
        for info in self.store.objects.list_blobs(name, uncommitted=True):
            if info.name == name:
                return self._entry(digest, info.mtime)
        return None
