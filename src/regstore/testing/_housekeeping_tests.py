"""Conformance tests: quarantine, the staging area and store existence (mixed into
BackendConformance).

The operations behind ``regstore verify`` (a damaged blob is moved aside so the next pull
fetches it again), ``regstore gc`` (what interrupted writers left is listed and removed unless
a writer holds it) and the reading commands (a URL where nothing was stored is not a store).
"""

from __future__ import annotations

import time

import pytest

from regstore.errors import (
    BlobNotFoundError,
    LayerLockedError,
    StoreNotFoundError,
    UnsupportedError,
)
from regstore.store import ObjectStore, open_store
from regstore.storetypes import BlobState, StagingEntry, StagingKind

from ._suite import SuiteSettings, assert_unsupported
from .builders import Blob, random_bytes, write_blob

__all__ = ["HousekeepingTests"]


def _blob(seed: int, size: int = 4000) -> Blob:
    return Blob(random_bytes(size, seed))


def _of(store: ObjectStore, blob: Blob, kind: StagingKind | None = None) -> list[StagingEntry]:
    return [
        e
        for e in store.staging()
        if e.digest == str(blob.digest) and (kind is None or e.kind is kind)
    ]


def _interrupted(store: ObjectStore, blob: Blob, count: int) -> None:
    """A writer that stores ``count`` bytes, then gives up (close keeps them for a resume)."""
    writer = store.layer(blob.digest).writer()
    writer.set_size(blob.size)
    writer.write(blob.data[:count])
    writer.close()


class HousekeepingTests(SuiteSettings):
    """quarantine_blob, list_staging / drop_staging, exists."""

    # -- quarantine --------------------------------------------------------------------------

    def test_quarantine_moves_a_blob_aside_and_a_new_write_starts_afresh(
        self, store: ObjectStore
    ) -> None:
        blob, other = _blob(80), _blob(81)
        write_blob(store, blob)
        write_blob(store, other)
        if not self.supports_quarantine:
            assert_unsupported(lambda: store.quarantine_blob(blob.digest))
            assert store.blob_status(blob.digest).state is BlobState.COMPLETE  # not moved
            return
        where = store.quarantine_blob(blob.digest)
        assert blob.digest.hex in where
        assert store.blob_status(blob.digest).state is BlobState.ABSENT
        assert not store.blob_exists(blob.digest)
        with pytest.raises(BlobNotFoundError):
            store.layer(blob.digest).reader()
        if self.supports_list_blobs:
            assert blob.digest not in {b.digest for b in store.blobs()}
        assert store.blob_exists(other.digest)  # nothing else moved
        entry = None
        if self.supports_list_staging:
            [entry] = _of(store, blob, StagingKind.QUARANTINE)
            assert entry.size == blob.size and not entry.active
            assert entry.location == where
            assert time.time() - entry.mtime < 3600  # dated by the move, not by the commit
        # a sync learns from this listing that an unchanged image lacks the blob
        assert store.quarantined() == {blob.digest}
        writer = store.layer(blob.digest).writer()  # not LayerAlreadyExistsError
        assert writer.current_size == 0  # the quarantined bytes are not resumed
        writer.write(blob.data)
        writer.commit(blob.size)
        with store.layer(blob.digest).reader() as reader:
            assert reader.read() == blob.data
        store.quarantine_blob(other.digest)  # (a listing is asked again after a move)
        assert store.quarantined() == {other.digest}  # the blob fetched again is not lost
        write_blob(store, other)
        if entry is not None:
            assert store.drop_staging(entry) is True
            assert _of(store, blob) == []
        assert store.blob_exists(blob.digest)  # dropping the quarantine keeps the new blob

    def test_quarantine_of_a_blob_that_is_not_complete(self, store: ObjectStore) -> None:
        blob = _blob(82)
        if not self.supports_quarantine:
            assert_unsupported(lambda: store.quarantine_blob(blob.digest))
            return
        with pytest.raises(BlobNotFoundError):
            store.quarantine_blob(blob.digest)
        writer = store.layer(blob.digest).writer()
        writer.write(blob.data[:100])
        try:
            with pytest.raises((LayerLockedError, BlobNotFoundError)):
                store.quarantine_blob(blob.digest)
        finally:
            writer.discard()

    def test_a_quarantined_manifest_blob_is_written_again_by_the_next_put(
        self, store: ObjectStore
    ) -> None:
        from .builders import oci_image, write_image

        image = oci_image(seed=83)
        write_image(store, "house/keeping", "v1", image)
        digest = store.resolve("house/keeping", "v1")
        if not self.supports_manifests_as_blobs:
            # the manifest is not a blob here: there is no blob of its digest to quarantine
            assert not store.blob_exists(digest)
            with pytest.raises(BlobNotFoundError if self.supports_quarantine else UnsupportedError):
                store.quarantine_blob(digest)
            assert store.manifest("house/keeping", "v1").raw == image.raw
            return
        assert store.blob_exists(digest), (
            "the manifest's bytes are not a blob of its digest: "
            "set supports_manifests_as_blobs = False"
        )
        if not self.supports_quarantine:
            assert_unsupported(lambda: store.quarantine_blob(digest))
            return
        store.quarantine_blob(digest)
        assert not store.has_manifest("house/keeping", "v1")
        write_image(store, "house/keeping", "v1", image)
        assert store.manifest("house/keeping", "v1").raw == image.raw

    # -- the staging area --------------------------------------------------------------------

    def test_an_interrupted_write_is_listed_and_dropped(self, store: ObjectStore) -> None:
        blob = _blob(84, size=20_000)
        _interrupted(store, blob, 5000)
        if not self.supports_list_staging:
            self._assert_no_staging_listing(store, blob, 5000)
            return
        [entry] = _of(store, blob, StagingKind.UPLOAD)
        assert entry.size == 5000
        assert not entry.active
        assert entry.key and entry.location
        assert 0 < entry.mtime <= time.time() + 5
        assert entry.as_dict(entry.mtime + 10)["age"] == 10
        assert store.drop_staging(entry) is True
        assert _of(store, blob, StagingKind.UPLOAD) == []
        status = store.blob_status(blob.digest)
        assert status.state is BlobState.ABSENT and status.current_size == 0
        assert store.drop_staging(entry) is True  # gone already is fine
        write_blob(store, blob)  # and it is writable from zero

    def test_a_held_write_is_active_and_never_dropped(self, store: ObjectStore) -> None:
        blob = _blob(85, size=20_000)
        _interrupted(store, blob, 5000)
        if not self.supports_list_staging:
            self._assert_no_staging_listing(store, blob, 5000)
            return
        [listed] = _of(store, blob, StagingKind.UPLOAD)
        writer = store.layer(blob.digest).writer()  # resumes
        try:
            held = _of(store, blob)
            assert held and all(e.active for e in held)
            assert store.drop_staging(listed) is False  # listed as abandoned, held now
            for entry in held:
                assert store.drop_staging(entry) is False
            assert store.blob_status(blob.digest).current_size == 5000
            writer.write(blob.data[writer.current_size :])
            writer.commit(blob.size)
        finally:
            writer.close()
        with store.layer(blob.digest).reader() as reader:
            assert reader.read() == blob.data

    def test_an_entry_resumed_since_it_was_listed_is_kept(self, store: ObjectStore) -> None:
        blob = _blob(86, size=20_000)
        _interrupted(store, blob, 5000)
        if not self.supports_list_staging:
            self._assert_no_staging_listing(store, blob, 5000)
            return
        [stale] = _of(store, blob, StagingKind.UPLOAD)
        writer = store.layer(blob.digest).writer()
        writer.write(blob.data[writer.current_size : 12_000])
        writer.close()  # a writer came back, added bytes and stopped again
        assert store.drop_staging(stale) is False
        assert store.blob_status(blob.digest).current_size == 12_000
        [fresh] = _of(store, blob, StagingKind.UPLOAD)
        assert fresh.size == 12_000
        assert store.drop_staging(fresh) is True

    def test_a_committed_blob_leaves_nothing_in_the_staging_area(self, store: ObjectStore) -> None:
        blob = _blob(87, size=20_000)
        _interrupted(store, blob, 5000)
        write_blob(store, blob)  # resumes and commits
        write_blob(store, _blob(88))
        if not self.supports_list_staging:
            assert_unsupported(store.staging)
            return
        assert _of(store, blob) == []
        assert store.staging() == []

    @staticmethod
    def _assert_no_staging_listing(store: ObjectStore, blob: Blob, staged: int) -> None:
        """list_staging and drop_staging are switched off: both raise UnsupportedError, and
        the interrupted write is still there for the next writer to resume."""
        made_up = StagingEntry(StagingKind.UPLOAD, str(blob.digest), "staging", staged,
                               time.time(), str(blob.digest))  # fmt: skip
        assert_unsupported(store.staging, lambda: store.drop_staging(made_up))
        assert store.blob_status(blob.digest).current_size == staged
        write_blob(store, blob)

    # -- existence ---------------------------------------------------------------------------

    def test_a_store_exists_once_written(self, store: ObjectStore, store_url: str | None) -> None:
        before = store.exists()
        if self.supports_store_exists:
            # (store_exists left at its default says True everywhere: a mistyped URL passed
            # verify and gc as an empty store; switch it off if the backend cannot tell)
            assert not before, "a fresh store's location said it holds a store already"
        if store_url is not None and not before:
            with pytest.raises(StoreNotFoundError):
                open_store(store_url, must_exist=True)
            assert not store.exists()  # asking created nothing
        write_blob(store, _blob(89))
        assert store.exists()
        if store_url is not None:
            open_store(store_url, must_exist=True).close()
