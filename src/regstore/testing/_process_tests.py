"""Conformance tests across processes (mixed into CrossProcessConformance).

Child processes (:mod:`regstore.testing.processes`) open ``store_url`` with
:func:`regstore.open_store`, so the backend must be installed (its entry point visible) or
named in the ``child_plugins`` setting.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from regstore.errors import LayerLockedError
from regstore.store import ObjectStore
from regstore.storetypes import BlobState, StagingKind

from ._suite import SuiteSettings, assert_unsupported, in_thread
from .builders import Blob, oci_artifact, oci_image, random_bytes, write_blob, write_image
from .processes import CHILD_SCRIPT, ChildProcess, hold_writer, killed_writer

__all__ = ["LOCK_EXPIRY_GRACE", "ProcessTests"]

#: Seconds a dead writer's lock may outlive ``lock_expiry_seconds`` (process teardown, polling,
#: one-second clocks of object stores) before the test calls it stale.
LOCK_EXPIRY_GRACE = 3.0


class ProcessTests(SuiteSettings):
    """Exclusion and lost-update checks across processes sharing one store."""

    def _children(self, request: pytest.FixtureRequest) -> list[ChildProcess]:
        children: list[ChildProcess] = []

        def kill_all() -> None:
            for child in children:
                child.stop()

        request.addfinalizer(kill_all)
        return children

    def _child_holding(
        self,
        blob: Blob,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> ChildProcess:
        """A child process that holds the writer of ``blob`` with half of it written; it waits
        for "commit" or "close" (killed at teardown if the test ends first)."""
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        data_file = tmp_path / "blob"
        data_file.write_bytes(blob.data)
        child = hold_writer(store_url, blob.digest, data_file, timeout=self.process_timeout,
                            plugins=self.child_plugins)  # fmt: skip
        self._children(request).append(child)
        return child

    def test_writer_in_another_process_excludes_this_one(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        blob = Blob(random_bytes(10_000, 70))
        child = self._child_holding(blob, store_url, tmp_path, request)
        layer = store.layer(blob.digest)
        with pytest.raises(LayerLockedError):
            layer.writer()
        with pytest.raises(LayerLockedError):
            layer.reader()
        assert layer.status().state is BlobState.WRITING
        with pytest.raises(TimeoutError):
            layer.wait(timeout=0.1)
        waiter = in_thread(lambda: layer.wait(timeout=self.process_timeout))
        child.send("close")
        child.expect("done")
        child.finish()
        assert waiter.result(timeout=self.process_timeout) is False  # it gave up
        status = layer.status()
        assert status.state is BlobState.PARTIAL
        assert status.current_size == blob.size // 2
        writer = layer.writer()  # the lock went with the process
        assert writer.current_size == blob.size // 2
        writer.write(blob.data[blob.size // 2 :])
        writer.commit(blob.size)
        with layer.reader() as reader:
            assert reader.read() == blob.data

    def test_staging_held_by_another_process_is_active_until_it_lets_go(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        blob = Blob(random_bytes(20_000, 73))
        child = self._child_holding(blob, store_url, tmp_path, request)
        if not self.supports_list_staging:
            assert_unsupported(store.staging)
            child.send("close")
            child.expect("done")
            child.finish()
            return
        held = [e for e in store.staging() if e.digest == str(blob.digest)]
        assert held, "a writer in another process holds the blob: its lock must be listed"
        assert all(e.active for e in held)
        assert all(store.drop_staging(e) is False for e in held)
        child.send("close")
        child.expect("done")
        child.finish()
        [upload] = [
            e
            for e in store.staging()
            if e.digest == str(blob.digest) and e.kind is StagingKind.UPLOAD
        ]
        assert not upload.active and upload.size == blob.size // 2
        for entry in [e for e in store.staging() if e.digest == str(blob.digest)]:
            assert store.drop_staging(entry) is True
        assert [e for e in store.staging() if e.digest == str(blob.digest)] == []
        assert store.blob_status(blob.digest).state is BlobState.ABSENT

    def test_two_processes_race_for_one_writer(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        blob = Blob(random_bytes(20_000, 71))
        data_file = tmp_path / "blob"
        data_file.write_bytes(blob.data)
        children = self._children(request)
        for _ in range(2):
            children.append(ChildProcess(CHILD_SCRIPT, store_url, "race", blob.digest,
                                         str(data_file), timeout=self.process_timeout,
                                         plugins=self.child_plugins))  # fmt: skip
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        said = sorted(child.read() for child in children)
        assert said == ["locked", "writer"], said
        finals = sorted(child.read() for child in children)
        assert finals == ["committed", "waited-True"], finals
        for child in children:
            child.finish()
        with store.layer(blob.digest).reader() as reader:
            assert reader.read() == blob.data

    def test_concurrent_tagging_from_two_processes_loses_nothing(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        image = oci_image(seed=72)
        write_image(store, "shared/repo", None, image)
        manifest_file = tmp_path / "manifest.json"
        manifest_file.write_bytes(image.raw)
        children = self._children(request)
        count = 20
        for prefix in ("p", "q"):
            children.append(ChildProcess(CHILD_SCRIPT, store_url, "tag", "shared/repo",
                                         str(manifest_file), prefix, str(count),
                                         timeout=self.process_timeout,
                                         plugins=self.child_plugins))  # fmt: skip
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        for child in children:
            child.expect("done")
            child.finish()
        expected = sorted(f"{p}-{i}" for p in ("p", "q") for i in range(count))
        assert store.tags("shared/repo") == expected
        assert store.manifest("shared/repo", "q-19").raw == image.raw

    def test_concurrent_referrers_from_several_processes_are_all_indexed(
        self,
        store: ObjectStore,
        store_url: str | None,
        request: pytest.FixtureRequest,
    ) -> None:
        # Each referrer write reads its subject's referrers index, adds itself and writes it
        # back: without a lock shared by the processes (``regstore_store_lock``) one process
        # overwrites another's update and referrers go missing from the index.
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        subject = oci_image(seed=75)
        write_image(store, "shared/signed", "v1", subject)
        empty_config = oci_artifact(subject).blobs[0]
        write_blob(store, empty_config)  # shared by every referrer: not a blob race here
        children = self._children(request)
        workers, count = self.referrer_processes, self.referrers_per_process
        for worker in range(workers):
            children.append(ChildProcess(CHILD_SCRIPT, store_url, "referrers", "shared/signed",
                                         "75", str(worker), str(count),
                                         timeout=self.process_timeout,
                                         plugins=self.child_plugins))  # fmt: skip
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        for child in children:
            child.expect("done")
            child.finish()
        stored = [
            d
            for d in store.manifests("shared/signed")
            if store.manifest("shared/signed", d).subject
        ]
        assert len(stored) == workers * count
        listed = {d.digest for d in store.referrers("shared/signed", subject.digest)}
        missing = set(stored) - listed
        assert not missing, (
            f"{len(missing)} of {len(stored)} referrers written by {workers} processes are not "
            "in their subject's referrers index (lost updates)"
        )

    def test_a_killed_writers_lock_does_not_outlive_it(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
    ) -> None:
        # "A dead writer's lock must not outlive it": a writer killed with SIGKILL (no close,
        # no release) frees the blob within lock_expiry_seconds, and the next writer resumes.
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        blob = Blob(random_bytes(20_000, 74))
        data_file = tmp_path / "blob"
        data_file.write_bytes(blob.data)
        killed_writer(store_url, blob.digest, data_file, timeout=self.process_timeout,
                      plugins=self.child_plugins)  # fmt: skip
        killed = time.monotonic()
        deadline = killed + self.lock_expiry_seconds + LOCK_EXPIRY_GRACE
        layer = store.layer(blob.digest)
        while True:
            try:
                writer = layer.writer()
                break
            except LayerLockedError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the lock of a writer killed {time.monotonic() - killed:.1f} s ago is "
                        f"still held (lock_expiry_seconds = {self.lock_expiry_seconds:g}): "
                        "a dead writer's lock must not outlive it"
                    ) from None
                time.sleep(0.05)
        assert writer.current_size <= blob.size // 2  # what the dead writer staged, if kept
        writer.set_size(blob.size)
        writer.write(blob.data[writer.current_size :])
        writer.commit()  # the resumed bytes were the right ones: the digest checks
        with layer.reader() as reader:
            assert reader.read() == blob.data
