"""Conformance tests: the shipped store wrappers around this backend (mixed into
BackendConformance).

A read-only handle (``open_store(url, read_only=True)``, what ``ls``, ``inspect``, ``verify
--no-quarantine`` and ``gc --dry-run`` use) reads everything the backend stores and refuses
every change before the backend sees it; a traced handle (``trace=True``, what ``-vv`` and the
benchmarks use) counts and times every operation without changing an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from regstore.errors import ImageManifestNotFoundError, StoreReadOnlyError, UnsupportedError
from regstore.hookspecs import BlobState
from regstore.store import (
    READ_ONLY_GUARD,
    TRACER,
    ObjectStore,
    ReadOnlyGuard,
    TracingWrapper,
    open_store,
)

from ._suite import SuiteSettings
from .builders import Blob, oci_image, oci_index, random_bytes, write_blob, write_image

__all__ = ["WrapperTests"]

#: ``opener(read_only=..., trace=...)``: another handle on the test's store, so wrapped.
HandleOpener = Callable[..., ObjectStore]


def _snapshot(store: ObjectStore, settings: SuiteSettings) -> dict[str, object]:
    """Everything a change could touch, as seen through ``store`` (the listings a backend
    declares it cannot make are left out: their refusal is tested where they are)."""
    repositories = store.repositories()
    snapshot: dict[str, object] = {
        "repositories": repositories,
        "tags": {name: store.tags(name) for name in repositories},
        "manifests": {name: store.manifests(name) for name in repositories},
    }
    if settings.supports_list_blobs:
        snapshot["blobs"] = [(b.digest, b.size) for b in store.blobs()]
    if settings.supports_list_staging:
        snapshot["staging"] = sorted((e.kind.value, e.key, e.size) for e in store.staging())
    return snapshot


class WrapperTests(SuiteSettings):
    """The read-only guard and the tracing wrapper around the backend."""

    @pytest.fixture
    def wrapped_handle(
        self, store: ObjectStore, store_url: str | None, store_factory: Callable[[], ObjectStore]
    ) -> Iterator[HandleOpener]:
        """Opens another handle on the store with wrappers (by URL, as users do, when the
        class gives one; else a handle of ``store_factory`` with the wrappers added)."""
        opened: list[ObjectStore] = []

        def opener(*, read_only: bool = False, trace: bool = False) -> ObjectStore:
            if store_url is not None:
                handle = open_store(store_url, read_only=read_only, trace=trace)
                opened.append(handle)
                return handle
            handle = store_factory()
            if read_only:
                handle.add_wrapper(ReadOnlyGuard(), name=READ_ONLY_GUARD)
            if trace:
                handle.add_wrapper(TracingWrapper(), name=TRACER)
            return handle

        yield opener
        for handle in opened:
            handle.close()

    # -- the read-only guard -----------------------------------------------------------------

    def test_a_read_only_handle_reads_everything(
        self, store: ObjectStore, wrapped_handle: HandleOpener
    ) -> None:
        image = oci_image(seed=90)
        index = oci_index([image])
        write_image(store, "ro/app", "v1", image)
        write_image(store, "ro/app", "all", index, partial=True)
        staged = Blob(random_bytes(3000, 91))
        writer = store.layer(staged.digest).writer()
        writer.set_size(staged.size)
        writer.write(staged.data[:1000])
        writer.close()  # an interrupted write: staged bytes stay
        expected = _snapshot(store, self)

        reader = wrapped_handle(read_only=True)
        assert reader.read_only
        assert reader.describe()["read_only"] is True
        assert reader.exists()
        assert _snapshot(reader, self) == expected
        assert reader.manifest("ro/app", "v1").raw == image.raw
        assert reader.manifest("ro/app", str(image.digest)).raw == image.raw
        assert reader.is_partial("ro/app", str(index.digest))
        layer = image.blobs[0]
        assert reader.blob_status(layer.digest).state is BlobState.COMPLETE
        with reader.layer(layer.digest).reader() as blob_reader:
            assert blob_reader.read() == layer.data
        assert reader.layer(layer.digest).wait(timeout=5)
        assert reader.blob_status(staged.digest).state is BlobState.PARTIAL

    def test_a_read_only_handle_refuses_every_change_and_changes_nothing(
        self, store: ObjectStore, wrapped_handle: HandleOpener
    ) -> None:
        image, other = oci_image(seed=92), oci_image(seed=93)
        write_image(store, "ro/app", "v1", image)
        staged = Blob(random_bytes(3000, 94))
        writer = store.layer(staged.digest).writer()
        writer.set_size(staged.size)
        writer.write(staged.data[:1000])
        writer.close()
        for blob in other.blobs:
            write_blob(store, blob)
        expected = _snapshot(store, self)

        reader = wrapped_handle(read_only=True)
        if self.supports_list_staging:
            entries = reader.staging()
        else:  # reading is never refused by the guard: the backend's own answer comes through
            with pytest.raises(UnsupportedError):
                reader.staging()
        complete, absent = image.blobs[0].digest, Blob(random_bytes(10, 95)).digest
        changes: dict[str, Callable[[], object]] = {
            "write a manifest": lambda: reader.write_manifest("ro/app", "v2", other.manifest),
            "delete a manifest": lambda: reader.delete_manifest("ro/app", str(image.digest)),
            "delete a tag": lambda: reader.delete_tag("ro/app", "v1"),
            "write an absent blob": lambda: reader.layer(absent).writer(),
            "resume a staged blob": lambda: reader.layer(staged.digest).writer(),
            "write a complete blob": lambda: reader.layer(complete).writer(),
            "delete a blob": lambda: reader.delete_blob(complete),
            "quarantine a blob": lambda: reader.quarantine_blob(complete),
        }
        for what, change in changes.items():
            with pytest.raises(StoreReadOnlyError) as refused:
                change()
            assert "read-only" in str(refused.value), what
        if self.supports_list_staging:
            assert entries, "the interrupted write left nothing in the staging area"
            for entry in entries:
                with pytest.raises(StoreReadOnlyError):
                    reader.drop_staging(entry)
        assert _snapshot(store, self) == expected
        assert reader.blob_status(staged.digest).current_size == 1000
        # the writable handle is unaffected by the other handle's guard
        assert not store.read_only
        if self.supports_delete:
            store.delete_tag("ro/app", "v1")
            assert store.tags("ro/app") == []
        else:
            with pytest.raises(UnsupportedError):
                store.delete_tag("ro/app", "v1")

    # -- tracing -----------------------------------------------------------------------------

    def test_a_traced_handle_counts_every_operation_and_changes_no_answer(
        self, store: ObjectStore, wrapped_handle: HandleOpener
    ) -> None:
        image = oci_image(seed=96)
        traced = wrapped_handle(trace=True)
        write_image(traced, "traced/app", "v1", image)
        baseline = traced.metrics()
        assert baseline["blob_writer"].count == len(image.blobs)
        assert baseline["put_manifest"].count == 1
        assert baseline["put_manifest"].errors == 0

        assert traced.tags("traced/app") == store.tags("traced/app") == ["v1"]
        assert traced.tags("traced/app") == ["v1"]
        assert traced.manifest("traced/app", "v1").raw == image.raw
        with pytest.raises(ImageManifestNotFoundError):
            traced.manifest("traced/app", "v9")
        metrics = traced.metrics()
        assert metrics["list_tags"].count == 2
        assert metrics["list_tags"].errors == 0
        gets = baseline.get("get_manifest")
        assert metrics["get_manifest"].count == (gets.count if gets else 0) + 2
        assert metrics["get_manifest"].errors == (gets.errors if gets else 0) + 1
        for stats in metrics.values():
            assert stats.count >= 1
            assert 0 <= stats.max_seconds <= stats.total_seconds
