"""Conformance tests: what the kit promises of every backend beyond single operations (mixed
into BackendConformance): blobs stream through bounded memory, and each capability switch of
the test class tells the truth.
"""

from __future__ import annotations

from collections.abc import Callable

from regstore.errors import UnsupportedError
from regstore.store import ObjectStore

from ._suite import CAPABILITIES, MIN_MEMORY_CHECK_SIZE, SuiteSettings
from .builders import Blob, oci_image, random_bytes, write_blob, write_image
from .memory import MemoryReport, stream_blob_through
from .processes import CHILD_SCRIPT, ChildProcess

__all__ = ["KitTests"]

_MIB = 1024 * 1024


class KitTests(SuiteSettings):
    """Bounded memory for a large blob; the capability switches against the backend."""

    def test_a_large_blob_streams_through_bounded_memory(
        self, store: ObjectStore, store_url: str | None
    ) -> None:
        size = self.memory_check_blob_size
        assert size >= MIN_MEMORY_CHECK_SIZE, (
            f"memory_check_blob_size = {size} cannot tell a backend that streams from one that "
            f"buffers: it must be at least {MIN_MEMORY_CHECK_SIZE // _MIB} MiB"
        )
        if store_url is not None:  # a fresh process, where nothing else allocates
            child = ChildProcess(CHILD_SCRIPT, store_url, "memory", str(size),
                                 str(self.chunk_size), "75", timeout=self.process_timeout,
                                 plugins=self.child_plugins)  # fmt: skip
            try:
                word, baseline, peak = child.read().split()
                assert word == "memory"
                child.finish()
            finally:
                child.stop()
            report = MemoryReport(int(baseline), int(peak))
        else:  # no URL to open elsewhere: measured here, with the peak reset first
            report = stream_blob_through(store, size, self.chunk_size, 75)
        allowed = self.blob_copies_in_memory * size + size // 2
        assert report.growth < allowed, (
            f"moving one {size // _MIB} MiB blob through the writer and the reader took "
            f"{report.growth // _MIB} MiB of memory at its peak (allowed: under "
            f"{allowed // _MIB} MiB, blob_copies_in_memory = {self.blob_copies_in_memory}): "
            "the backend holds whole blobs in memory instead of streaming them"
        )

    def test_switched_off_capabilities_raise_unsupported_error(self, store: ObjectStore) -> None:
        image = oci_image(seed=76)
        write_image(store, "kit/capabilities", "v1", image)
        aside, doomed = Blob(random_bytes(1000, 77)), Blob(random_bytes(1000, 78))
        write_blob(store, aside)
        write_blob(store, doomed)
        manifest = str(image.digest)
        operations: dict[str, list[Callable[[], object]]] = {
            "supports_list_blobs": [store.blobs],
            "supports_list_staging": [store.staging],
            "supports_quarantine": [lambda: store.quarantine_blob(aside.digest)],
            "supports_delete": [
                lambda: store.delete_tag("kit/capabilities", "v1"),
                lambda: store.delete_manifest("kit/capabilities", manifest),
                lambda: store.delete_blob(doomed.digest),
            ],
        }
        assert set(operations) | {"supports_manifests_as_blobs"} == set(CAPABILITIES)
        for capability, calls in operations.items():
            switched_on = getattr(self, capability)
            for call in calls:
                try:
                    call()
                except UnsupportedError as exc:
                    assert not switched_on, (
                        f"{capability} is True but the backend says: {exc} "
                        f"(set {capability} = False)"
                    )
                else:
                    assert switched_on, (
                        f"{capability} is False but the backend did it: switch it on"
                    )
