"""Conformance tests: the seed's Layer, made precise (mixed into BackendConformance)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from functools import partial

import pytest

from regstore.digest import digest_bytes
from regstore.errors import (
    BlobNotFoundError,
    DigestMismatchError,
    LayerAlreadyExistsError,
    LayerLockedError,
    StoreError,
)
from regstore.store import LayerWriter, ObjectStore
from regstore.storetypes import BlobState

from ._suite import SuiteSettings, assert_unsupported, barrier, in_thread
from .builders import Blob, random_bytes, write_blob

__all__ = ["BlobTests"]


def _blob(seed: int, size: int = 3000, algorithm: str = "sha256") -> Blob:
    return Blob(random_bytes(size, seed), algorithm=algorithm)


def _read_all(store: ObjectStore, digest: str, offset: int = 0) -> bytes:
    with store.layer(digest).reader(offset) as reader:
        return b"".join(reader.chunks())


class BlobTests(SuiteSettings):
    """Write once, verify, commit atomically; locks, waits, resumes; absence."""

    # -- the basic cycle ---------------------------------------------------------------------

    def test_missing_blob(self, store: ObjectStore) -> None:
        blob = _blob(1)
        layer = store.layer(blob.digest)
        with pytest.raises(BlobNotFoundError):
            layer.reader()
        assert layer.status().state is BlobState.ABSENT
        assert not layer.exists()
        assert not store.blob_exists(blob.digest)
        assert store.blob_size(blob.digest) is None
        assert layer.wait(timeout=1) is False

    def test_write_commit_read(self, store: ObjectStore) -> None:
        blob = _blob(2)
        writer = store.layer(blob.digest).writer()
        assert writer.current_size == 0
        writer.set_size(blob.size)
        assert writer.size == blob.size
        writer.write(blob.data[:1000])
        assert writer.current_size == 1000
        writer.write(bytearray(blob.data[1000:2000]))
        writer.write(memoryview(blob.data)[2000:])
        assert writer.current_size == blob.size
        assert store.blob_status(blob.digest).state is BlobState.WRITING
        assert writer.commit() == blob.digest
        status = store.blob_status(blob.digest)
        assert (status.state, status.size, status.current_size) == (
            BlobState.COMPLETE, blob.size, blob.size)  # fmt: skip
        assert store.blob_exists(blob.digest)
        assert store.blob_size(blob.digest) == blob.size
        with store.layer(blob.digest).reader() as reader:
            assert reader.size == blob.size
            assert reader.current_size == blob.size
            assert reader.read() == blob.data
        assert _read_all(store, blob.digest, offset=1234) == blob.data[1234:]
        assert store.layer(blob.digest).wait(timeout=1) is True

    def test_commit_with_size_argument(self, store: ObjectStore) -> None:
        blob = _blob(3)
        writer = store.layer(blob.digest).writer()
        writer.write(blob.data)
        writer.commit(blob.size)
        assert _read_all(store, blob.digest) == blob.data

    def test_second_writer_on_complete_blob(self, store: ObjectStore) -> None:
        blob = _blob(4)
        write_blob(store, blob)
        with pytest.raises(LayerAlreadyExistsError):
            store.layer(blob.digest).writer()

    def test_empty_blob(self, store: ObjectStore) -> None:
        digest = digest_bytes(b"")
        writer = store.layer(digest).writer()
        writer.set_size(0)
        writer.commit()
        assert store.blob_status(digest).state is BlobState.COMPLETE
        assert store.blob_size(digest) == 0
        with store.layer(digest).reader() as reader:
            assert reader.size == 0
            assert reader.read() == b""

    def test_sha512_blob(self, store: ObjectStore) -> None:
        blob = _blob(5, algorithm="sha512")
        assert blob.digest.algorithm == "sha512"
        write_blob(store, blob)
        assert _read_all(store, blob.digest) == blob.data
        if self.supports_list_blobs:
            assert blob.digest in [b.digest for b in store.blobs()]

    def test_large_blob_streams_in_chunks(self, store: ObjectStore) -> None:
        blob = _blob(6, size=self.large_blob_size)
        write_blob(store, blob, chunk_size=self.chunk_size)
        with store.layer(blob.digest).reader() as reader:
            assert reader.size == blob.size
            digester_input = []
            for chunk in reader.chunks(self.chunk_size):
                assert len(chunk) <= self.chunk_size
                digester_input.append(chunk)
        assert digest_bytes(b"".join(digester_input)) == blob.digest

    def test_list_blobs(self, store: ObjectStore) -> None:
        blobs = [_blob(7), _blob(8, size=10), _blob(9, size=1)]
        for blob in blobs:
            write_blob(store, blob)
        if not self.supports_list_blobs:
            assert_unsupported(store.blobs)
            return
        partial = _blob(10)
        writer = store.layer(partial.digest).writer()
        writer.write(partial.data[:10])
        writer.close()
        listed = {b.digest: b for b in store.blobs()}
        for blob in blobs:
            assert listed[blob.digest].size == blob.size
            assert listed[blob.digest].mtime > 0
        assert partial.digest not in listed  # only complete blobs
        assert [b.digest for b in store.blobs()] == sorted(b.digest for b in store.blobs())

    def test_delete_blobs(self, store: ObjectStore) -> None:
        blobs = [_blob(7), _blob(8, size=10)]
        for blob in blobs:
            write_blob(store, blob)
        if not self.supports_delete:
            assert_unsupported(lambda: store.delete_blob(blobs[0].digest))
            assert store.blob_exists(blobs[0].digest)  # nothing changed
            return
        partial = _blob(10)
        writer = store.layer(partial.digest).writer()
        writer.write(partial.data[:10])
        writer.close()
        store.delete_blob(blobs[0].digest)
        assert not store.blob_exists(blobs[0].digest)
        assert store.blob_exists(blobs[1].digest)
        if self.supports_list_blobs:
            assert blobs[0].digest not in {b.digest for b in store.blobs()}
        with pytest.raises(BlobNotFoundError):
            store.layer(blobs[0].digest).reader()
        with pytest.raises(BlobNotFoundError):
            store.delete_blob(blobs[0].digest)
        with pytest.raises(BlobNotFoundError):
            store.delete_blob(partial.digest)
        write_blob(store, blobs[0])  # written again after deletion
        assert _read_all(store, blobs[0].digest) == blobs[0].data

    def test_a_claimed_blob_is_dated_by_the_claim(self, store: ObjectStore) -> None:
        # gc's grace counts from a blob's last reuse (ObjectStore.claim_blob); a backend that
        # keeps no such date answers None from blob_used_at, and must still claim correctly
        blob = _blob(12)
        assert store.claim_blob(blob.digest) is None  # absent: nothing to claim
        write_blob(store, blob)
        committed = store.blob_used_at(blob.digest)
        if committed is not None:
            time.sleep(1.1)  # object stores date to the second: let the claim's second differ
        assert store.claim_blob(blob.digest) == blob.size
        used = store.blob_used_at(blob.digest)
        if committed is None:
            assert used is None  # a backend keeps dates or it does not
        else:
            assert used is not None and used > committed  # the claim dated it, not the commit
        if self.supports_delete:
            store.delete_blob(blob.digest)
            assert store.blob_used_at(blob.digest) is None
            assert store.claim_blob(blob.digest) is None
            write_blob(store, blob)  # a claim leaves nothing that stops a new write
            assert _read_all(store, blob.digest) == blob.data

    # -- verification ------------------------------------------------------------------------

    def test_digest_mismatch_leaves_nothing_visible(self, store: ObjectStore) -> None:
        blob = _blob(11)
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size)
        writer.write(blob.data[:-1] + bytes([blob.data[-1] ^ 1]))
        with pytest.raises(DigestMismatchError):
            writer.commit()
        self._assert_absent_and_writable(store, blob)

    def test_size_mismatch_leaves_nothing_visible(self, store: ObjectStore) -> None:
        blob = _blob(12)
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size + 1)
        writer.write(blob.data)
        with pytest.raises(DigestMismatchError):
            writer.commit()
        self._assert_absent_and_writable(store, blob)

    def test_writing_past_the_declared_size_is_refused(self, store: ObjectStore) -> None:
        blob = _blob(13)
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size - 1)
        with pytest.raises(DigestMismatchError):
            writer.write(blob.data)
        writer.discard()
        self._assert_absent_and_writable(store, blob)

    @staticmethod
    def _assert_absent_and_writable(store: ObjectStore, blob: Blob) -> None:
        assert store.blob_status(blob.digest).state is BlobState.ABSENT
        with pytest.raises(BlobNotFoundError):
            store.layer(blob.digest).reader()
        write_blob(store, blob)
        assert _read_all(store, blob.digest) == blob.data

    # -- the seed's bugs, fixed --------------------------------------------------------------

    def test_writer_closed_before_any_byte_leaves_the_blob_writable(
        self, store: ObjectStore
    ) -> None:
        # Seed bug 1: a writer closed before SetSize left a "complete" empty layer.
        blob = _blob(14)
        store.layer(blob.digest).writer().close()
        assert store.blob_status(blob.digest).state is BlobState.ABSENT
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size)
        writer.close()
        status = store.blob_status(blob.digest)
        assert status.state is BlobState.ABSENT and status.current_size == 0
        with pytest.raises(BlobNotFoundError):
            store.layer(blob.digest).reader()
        write_blob(store, blob)  # not LayerAlreadyExistsError
        assert _read_all(store, blob.digest) == blob.data

    def test_wait_reports_a_writer_that_gave_up(self, store: ObjectStore) -> None:
        # Seed bug 2: Wait() returned success although the writer it waited for failed.
        for give_up in (LayerWriter.close, LayerWriter.discard):
            blob = _blob(15 if give_up is LayerWriter.close else 16)
            writer = store.layer(blob.digest).writer()
            writer.set_size(blob.size)
            writer.write(blob.data[:100])
            waiter = in_thread(partial(store.layer(blob.digest).wait, self.thread_timeout))
            time.sleep(0.05)
            give_up(writer)
            assert waiter.result(timeout=self.thread_timeout) is False

    # -- resuming ----------------------------------------------------------------------------

    def test_resume_after_close(self, store: ObjectStore) -> None:
        blob = _blob(17)
        half = blob.size // 2
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size)
        writer.write(blob.data[:half])
        writer.close()
        status = store.blob_status(blob.digest)
        assert status.state is BlobState.PARTIAL
        assert status.current_size == half
        with pytest.raises(BlobNotFoundError):  # partial blobs are not readable
            store.layer(blob.digest).reader()
        writer = store.layer(blob.digest).writer()
        assert writer.current_size == half
        writer.set_size(blob.size)
        writer.write(blob.data[half:])
        writer.commit()
        assert _read_all(store, blob.digest) == blob.data

    def test_a_commit_of_bytes_staged_earlier_is_dated_by_the_commit(
        self, store: ObjectStore
    ) -> None:
        # gc spares blobs younger than its grace by the date the listing gives: a blob whose
        # bytes were all staged a day ago by a pull killed before its commit, and committed
        # now by the pull that resumed it, must not look a day old (gc deleted it before its
        # manifest was written). Two seconds apart, so a listing's one-second resolution
        # still tells the staging from the commit.
        if not self.supports_list_blobs:
            return
        blob = _blob(19)
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size)
        writer.write(blob.data)
        writer.close()
        time.sleep(2.2)
        committed_at = time.time()
        writer = store.layer(blob.digest).writer()
        assert writer.current_size == blob.size
        writer.set_size(blob.size)
        writer.commit()
        [listed] = [b for b in store.blobs() if b.digest == blob.digest]
        assert listed.mtime >= committed_at - 1.0, (
            f"the blob is listed as {committed_at - listed.mtime:.1f} s old right after its "
            "commit: date it by the commit (a rename keeps the staged file's time)"
        )

    def test_resume_of_wrong_bytes_fails_the_whole_digest(self, store: ObjectStore) -> None:
        blob = _blob(18)
        half = blob.size // 2
        writer = store.layer(blob.digest).writer()
        writer.write(b"\0" * half)  # not the blob's first half
        writer.close()
        writer = store.layer(blob.digest).writer()
        assert writer.current_size == half
        writer.write(blob.data[half:])
        with pytest.raises(DigestMismatchError):
            writer.commit(blob.size)
        self._assert_absent_and_writable(store, blob)

    def test_discard_drops_staged_bytes(self, store: ObjectStore) -> None:
        blob = _blob(19)
        writer = store.layer(blob.digest).writer()
        writer.write(blob.data[:500])
        writer.discard()
        assert store.blob_status(blob.digest).state is BlobState.ABSENT
        assert store.layer(blob.digest).writer().current_size == 0

    def test_closed_writer_refuses_more(self, store: ObjectStore) -> None:
        blob = _blob(20)
        writer = store.layer(blob.digest).writer()
        writer.close()
        with pytest.raises(StoreError):
            writer.write(b"x")
        with pytest.raises(StoreError):
            writer.set_size(3)

    # -- locks and waits ---------------------------------------------------------------------

    def test_reader_and_writer_while_being_written(self, store: ObjectStore) -> None:
        blob = _blob(21)
        writer = store.layer(blob.digest).writer()
        writer.set_size(blob.size)
        writer.write(blob.data[:10])
        with pytest.raises(LayerLockedError):
            store.layer(blob.digest).reader()
        with pytest.raises(LayerLockedError):
            store.layer(blob.digest).writer()
        status = store.blob_status(blob.digest)
        assert status.state is BlobState.WRITING
        writer.write(blob.data[10:])
        writer.commit()
        assert _read_all(store, blob.digest) == blob.data

    @pytest.mark.parametrize("handles", ["one-handle", "two-handles"])
    def test_two_concurrent_writers_one_wins(
        self, store: ObjectStore, store_factory: Callable[[], ObjectStore], handles: str
    ) -> None:
        blob = _blob(22)
        second = store if handles == "one-handle" else store_factory()
        start = barrier(2)
        writers: list[LayerWriter] = []

        def take(handle: ObjectStore) -> str:
            start.wait()
            try:
                writers.append(handle.layer(blob.digest).writer())
            except LayerLockedError:
                return "locked"
            return "writer"

        results = [in_thread(partial(take, h)) for h in (store, second)]
        outcomes = sorted(f.result(timeout=self.thread_timeout) for f in results)
        assert outcomes == ["locked", "writer"]
        (winner,) = writers
        winner.write(blob.data)
        winner.commit(blob.size)
        assert _read_all(second, blob.digest) == blob.data

    def test_lock_is_released_by_commit_close_and_discard(self, store: ObjectStore) -> None:
        blob = _blob(23)
        for release in (LayerWriter.close, LayerWriter.discard):
            writer = store.layer(blob.digest).writer()
            release(writer)
        writer = store.layer(blob.digest).writer()
        writer.write(blob.data)
        writer.commit(blob.size)
        with pytest.raises(LayerAlreadyExistsError):
            store.layer(blob.digest).writer()

    def test_wait_blocks_until_the_writer_commits(
        self, store: ObjectStore, store_factory: Callable[[], ObjectStore]
    ) -> None:
        blob = _blob(24)
        taken, release = threading.Event(), threading.Event()
        other = store_factory()

        def write() -> None:
            writer = other.layer(blob.digest).writer()
            taken.set()
            writer.set_size(blob.size)
            writer.write(blob.data[:100])
            # the writer cannot commit before the waiter has been seen waiting, however slow
            # the machine: no race between a sleep and the wait
            assert release.wait(self.thread_timeout)
            writer.write(blob.data[100:])
            writer.commit()

        def wait_then_read() -> bytes:
            assert store.layer(blob.digest).wait(timeout=self.thread_timeout) is True
            return _read_all(store, blob.digest)  # complete the moment wait() says so

        writing = in_thread(write)
        assert taken.wait(self.thread_timeout)
        waiting = in_thread(wait_then_read)
        with pytest.raises(FutureTimeoutError):  # a wait() that returned early fails here
            waiting.result(timeout=0.3)
        release.set()
        assert waiting.result(timeout=self.thread_timeout) == blob.data
        writing.result(timeout=self.thread_timeout)

    def test_wait_timeout(self, store: ObjectStore) -> None:
        blob = _blob(25)
        writer = store.layer(blob.digest).writer()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            store.layer(blob.digest).wait(timeout=0.1)
        assert time.monotonic() - started < self.thread_timeout
        writer.discard()

    def test_concurrent_writers_of_different_blobs(
        self, store: ObjectStore, store_factory: Callable[[], ObjectStore]
    ) -> None:
        blobs = [_blob(30 + i, size=20_000) for i in range(6)]
        handles = [store, store_factory()]
        start = barrier(len(blobs))

        def write(i: int) -> None:
            start.wait()
            write_blob(handles[i % 2], blobs[i], chunk_size=1000)

        futures = [in_thread(partial(write, i)) for i in range(len(blobs))]
        for future in futures:
            future.result(timeout=self.thread_timeout)
        for blob in blobs:
            assert _read_all(store, blob.digest) == blob.data
