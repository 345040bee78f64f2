"""The memory backend (``memory://NAME``) against the conformance suite, plus its specifics."""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Any

import pytest

from regstore import open_store
from regstore.errors import ImageManifestNotFoundError, StoreError
from regstore.store import ObjectStore
from regstore.testing.builders import oci_image, oci_index, write_image
from regstore.testing.conformance import BackendConformance


class TestMemoryDistributionLayout(BackendConformance):
    # the store lives in memory: the blob itself, once (no copy at commit, none per reader)
    blob_copies_in_memory = 1

    @pytest.fixture
    def store_url(self, regstore_memory_url: str) -> str:
        return regstore_memory_url


class TestMemoryOciLayout(BackendConformance):
    large_blob_size = 2 * 1024 * 1024  # the distribution class streams the full 8 MiB
    blob_copies_in_memory = 1

    @pytest.fixture
    def store_url(self, regstore_memory_url: str) -> str:
        return f"{regstore_memory_url}?layout=oci"

    def test_the_layout_is_oci(self, store: ObjectStore) -> None:
        assert store.describe()["layout"] == "oci"


def test_memory_stores_are_isolated_by_name_and_shared_by_url(
    regstore_memory_url: str,
) -> None:
    image = oci_image(seed=1)
    first = open_store(regstore_memory_url)
    write_image(first, "app", "v1", image)
    again = open_store(regstore_memory_url)
    assert again.manifest("app", "v1").raw == image.raw
    other = open_store(regstore_memory_url + "-other")
    try:
        assert other.repositories() == []
        assert other.blobs() == []
    finally:
        from regstore.backends.memory import remove_store

        remove_store(regstore_memory_url.removeprefix("memory://") + "-other")


@pytest.mark.parametrize("url", ["memory://a/b", "memory://../x", "memory://-x", "memory://a%00"])
def test_bad_memory_names_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_unknown_options_are_refused(regstore_memory_url: str) -> None:
    with pytest.raises(StoreError, match="unknown option"):
        open_store(regstore_memory_url, colour="blue")
    with pytest.raises(StoreError, match="unknown store layout"):
        open_store(regstore_memory_url + "?layout=zip")


def test_describe(regstore_memory_url: str) -> None:
    info = open_store(regstore_memory_url + "?layout=oci").describe()
    assert info["backend"] == "memory"
    assert info["layout"] == "oci"
    assert info["url"] == regstore_memory_url + "?layout=oci"


def test_a_blob_is_copied_once_on_its_way_in_and_never_on_its_way_out(
    regstore_memory_url: str,
) -> None:
    """Appends go into one growing file that becomes the blob itself (no copy of a growing
    buffer per chunk, none at commit, none per reader): the Python heap's peak while a blob is
    written in 64 chunks, committed, stat'ed and read back stays near one copy of it."""
    import hashlib
    import tracemalloc

    from regstore.backends import memory
    from regstore.reference import Digest

    size, chunk = 32 * 1024 * 1024, 512 * 1024
    data = bytes(range(256)) * (size // 256)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = open_store(regstore_memory_url)
    view = memoryview(data)
    tracemalloc.start()
    try:
        writer = store.layer(digest).writer()
        writer.set_size(size)
        for start in range(0, size, chunk):
            writer.write(view[start : start + chunk])
        staged = next(s for (_, d), s in memory._staging.items() if d == digest)
        writer.commit()
        assert store.blob_size(digest) == size
        read = 0
        with store.layer(digest).reader() as reader:
            while part := reader.read(chunk):
                read += len(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == size
    backend = store.backend
    path = backend.final_blob_path(Digest(digest))
    stored = backend.fs.store[backend.fs._strip_protocol(path)]
    assert peak < size * 1.4, f"{peak / size:.2f} copies of the blob at the peak"
    assert stored is getattr(staged, "file", staged), "the staged file was copied at commit"


def _recorded_info_calls(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths asked of the memory filesystem's ``info`` from now on (each a scan of every
    path of the process)."""
    real_info = backend.fs.info
    scans: list[str] = []

    def counted(path: str, **kwargs: object) -> object:
        scans.append(path)
        return real_info(path, **kwargs)

    monkeypatch.setattr(backend.fs, "info", counted)
    return scans


def test_a_file_is_looked_at_without_a_pass_over_every_path(
    regstore_memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec's memory filesystem answers ``info`` (and ``exists``, ``rm``) by scanning every
    path of the process: a store's stat of a file, its existence check of a file and its
    removal of a path do without it, and answer as ``info`` would."""
    from regstore.backends.fsspec_store import info_mtime

    store = open_store(regstore_memory_url)
    image = oci_image(seed=7)
    write_image(store, "app", "v1", image)
    backend = store.backend
    first = image.blobs[0]
    blob = backend.final_blob_path(first.digest)
    directory = blob.rsplit("/", 1)[0]
    missing = blob + "-nothing"
    described = backend.fs.info(blob)
    assert described["type"] == "file"
    assert described["size"] == len(first.data)
    assert info_mtime(described) > 0
    assert backend.fs.info(directory)["type"] == "directory"

    scans = _recorded_info_calls(backend, monkeypatch)
    assert backend.stat_file(blob) == (described["size"], info_mtime(described))
    assert backend.exists(blob) is True
    assert store.blob_size(str(first.digest)) == len(first.data)
    assert backend.stat_file(directory) is None
    assert backend.stat_file(missing) is None
    # a non-recursive remove: a missing path and a directory of files are left as they are
    # (as fsspec's own rm leaves them), a file goes
    backend.remove(missing)
    backend.remove(directory)
    assert backend.stat_file(blob) is not None
    backend.remove(blob)
    assert backend.stat_file(blob) is None
    assert scans == []
    # what is no file is still asked of fsspec (a directory exists while files are below it)
    assert backend.exists(missing) is False
    assert backend.exists(directory) is False  # its only file is gone
    assert backend.exists(backend.final_blob_path(image.blobs[1].digest)) is True
    assert scans == [missing, directory]


def test_asking_about_manifests_scans_no_paths(
    regstore_memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether an index is partial, whether a revision is stored: the layout asks about link
    files and markers, and a missing marker (the usual answer) costs no pass over every path."""
    store = open_store(regstore_memory_url)
    whole = oci_index([oci_image(seed=11), oci_image(seed=12)])
    half = oci_index([oci_image(seed=13), oci_image(seed=14)])
    whole_digest = write_image(store, "app", "1", whole)
    half_digest = write_image(store, "app", "2", half, partial=True)
    scans = _recorded_info_calls(store.backend, monkeypatch)
    assert store.is_partial("app", whole_digest) is False
    assert store.is_partial("app", half_digest) is True
    with pytest.raises(ImageManifestNotFoundError):
        store.delete_manifest("app", "sha256:" + "0" * 64)
    assert sorted(store.manifests("app")) == sorted(
        [whole_digest, half_digest, *(str(c.digest) for c in whole.children)]
    )
    assert scans == []


def _prefaulting() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "regstore-prefault" and t.is_alive()]


def _staged(digest: str) -> Any:
    from regstore.backends import memory

    return next(s for (_, d), s in memory._staging.items() if d == digest)


def _stored_file(store: ObjectStore, digest: str) -> Any:
    from regstore.reference import Digest

    backend: Any = store.backend
    return backend.fs.store[backend.fs._strip_protocol(backend.final_blob_path(Digest(digest)))]


def _big_blob(size: int) -> tuple[bytes, str]:
    data = random.Random(size).randbytes(size)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_large_blob_of_declared_size_gets_its_buffer_whole_and_its_pages_ahead(
    regstore_memory_url: str,
) -> None:
    """A declared large blob is written into one reserved buffer whose pages a helper thread
    faults in ahead of the writer; the blob stored is exactly its bytes, the helper gone."""
    from regstore.backends import memory

    size = memory.RESERVE_MIN + 3 * 1024 * 1024 + 5
    data, digest = _big_blob(size)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(size)
    writer.write(data[: 1 << 20])
    staged = _staged(digest)
    assert staged.reserved == size
    for start in range(1 << 20, size, 3 << 20):
        writer.write(data[start : start + (3 << 20)])
    writer.commit()
    assert not _prefaulting()
    assert store.blob_size(digest) == size
    assert _stored_file(store, digest).size == size
    with store.layer(digest).reader() as reader:
        assert reader.read() == data


def test_a_reservation_larger_than_the_blob_is_cut_to_its_bytes(regstore_memory_url: str) -> None:
    """The declared size was too large, and the writer commits with the true one: no zero
    byte of the reservation stays in the blob."""
    from regstore.backends import memory

    size = memory.RESERVE_MIN + 1000
    data, digest = _big_blob(size)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(size + 4 * 1024 * 1024)
    writer.write(data)
    assert _staged(digest).reserved == size + 4 * 1024 * 1024
    writer.commit(size)
    assert _stored_file(store, digest).size == size
    with store.layer(digest).reader() as reader:
        assert reader.read() == data
    assert not _prefaulting()


def test_a_blob_outgrowing_its_reservation_stays_whole(regstore_memory_url: str) -> None:
    """The declared size grew after the bytes began (set_size again): the buffer grows past
    its reservation, the helper having stopped first, and every byte arrives."""
    from regstore.backends import memory

    size = memory.RESERVE_MIN * 2
    data, digest = _big_blob(size)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(memory.RESERVE_MIN)
    writer.write(data[: memory.RESERVE_MIN // 2])
    writer.set_size(size)
    writer.write(data[memory.RESERVE_MIN // 2 :])
    assert _staged(digest).prefault is None
    writer.commit()
    with store.layer(digest).reader() as reader:
        assert reader.read() == data


def test_an_interrupted_reserved_blob_resumes_and_a_discarded_one_leaves_nothing(
    regstore_memory_url: str,
) -> None:
    from regstore.backends import memory

    size = memory.RESERVE_MIN + 12345
    data, digest = _big_blob(size)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(size)
    writer.write(data[: size // 2])
    writer.close()  # interrupted: the bytes stay for a resume
    assert not _prefaulting()
    writer = store.layer(digest).writer()
    assert writer.current_size == size // 2
    writer.set_size(size)
    writer.write(data[size // 2 :])
    writer.commit()
    with store.layer(digest).reader() as reader:
        assert reader.read() == data

    other, other_digest = _big_blob(size + 1)
    writer = store.layer(other_digest).writer()
    writer.set_size(size + 1)
    writer.write(other[: 1 << 20])
    writer.discard()
    assert not _prefaulting()
    assert store.layer(other_digest).writer().current_size == 0


def test_a_writer_that_declares_a_size_and_writes_nothing_leaves_nothing(
    regstore_memory_url: str,
) -> None:
    from regstore.backends import memory

    data, digest = _big_blob(memory.RESERVE_MIN)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    writer.close()
    assert not [key for key in memory._staging if key[1] == digest]
    assert [entry for entry in store.staging() if entry.key == digest] == []


class _WatchedHelper:
    """Stands in for the Prefaulter: records its calls, and checks at ``stop`` that the
    staged file still has the buffer it was started on (same address, same length): the real
    helper works on that raw address, so it must be stopped before the buffer moves."""

    made: list[_WatchedHelper] = []

    def __init__(self, address: int, length: int) -> None:
        self.address, self.length = address, length
        self.file: Any = None
        self.advanced: list[int] = []
        self.stops: list[tuple[int, int]] = []
        _WatchedHelper.made.append(self)

    def advance(self, written: int) -> None:
        self.advanced.append(written)

    def stop(self) -> None:
        from regstore.backends.prefault import buffer_address

        if self.file is not None:
            with self.file.getbuffer() as view:
                self.stops.append((buffer_address(view), len(view)))
        else:
            self.stops.append((self.address, self.length))

    def stopped_in_time(self) -> bool:
        return bool(self.stops) and self.stops[0] == (self.address, self.length)


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> list[_WatchedHelper]:
    from regstore.backends import memory

    _WatchedHelper.made = []
    monkeypatch.setattr(memory, "Prefaulter", _WatchedHelper)
    monkeypatch.setattr(memory, "populate_call", lambda: lambda address, length: True)
    return _WatchedHelper.made


def _started(watched: list[_WatchedHelper], digest: str) -> _WatchedHelper:
    assert len(watched) == 1, "one helper per reserved blob, from its first byte"
    helper = watched[0]
    helper.file = _staged(digest).file
    return helper


@pytest.mark.parametrize("ending", ["grow", "shrink", "close", "discard", "remove_store"])
def test_the_helper_is_stopped_before_the_buffer_moves_or_goes(
    regstore_memory_url: str, watched: list[_WatchedHelper], ending: str
) -> None:
    from regstore.backends import memory

    size = memory.RESERVE_MIN + 4096
    data, digest = _big_blob(size)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(size - 100 if ending == "grow" else size + 100 if ending == "shrink" else size)
    writer.write(data[: 1 << 20])
    helper = _started(watched, digest)
    assert helper.advanced == [1 << 20] and helper.stops == []
    if ending == "grow":
        writer.set_size(size)
        writer.write(data[1 << 20 :])  # past the reservation: the buffer grows, and may move
        writer.commit()
    elif ending == "shrink":
        writer.write(data[1 << 20 :])
        writer.commit(size)  # the true size is smaller: the buffer is cut to it
        assert _stored_file(store, digest).size == size
    elif ending == "close":
        writer.close()
    elif ending == "discard":
        writer.discard()
    else:
        memory.remove_store(regstore_memory_url.split("://", 1)[1])
    assert helper.stopped_in_time(), helper.stops
    if ending in ("grow", "shrink"):
        with store.layer(digest).reader() as reader:
            assert reader.read() == data


def test_a_blob_larger_than_the_helper_s_reach_is_populated_as_it_is_written(
    regstore_memory_url: str,
) -> None:
    """Larger than AHEAD: the real helper follows the writer and is gone once it commits."""
    from regstore.backends import prefault

    size = prefault.AHEAD * 2 + 12345
    data, digest = _big_blob(size)
    store = open_store(regstore_memory_url)
    writer = store.layer(digest).writer()
    writer.set_size(size)
    chunk = 4 << 20
    for start in range(0, size, chunk):
        writer.write(data[start : start + chunk])
    helper = _staged(digest).prefault
    writer.commit()
    assert not _prefaulting()
    if helper is not None and helper.populated:  # (Linux 5.14+: it populated as it went)
        assert helper.populated > prefault.AHEAD
    with store.layer(digest).reader() as reader:
        assert reader.read() == data
