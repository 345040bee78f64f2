"""The shortcuts taken for speed (issue 16) keep what they shortcut.

- A directory store trusts a directory it saw to be no link for a second only: a link swapped
  in later is still refused.
- The transport reads the environment's proxy settings once per origin, and still honours them.
- ``transfer_many`` plans more images at once than it moves blobs, except at concurrency 1.
- A chunked push uses the library's chunk size; a download's retry budget does not follow it.
- A blob read to its end hands its connection back to the pool.
- An upload reads its source ahead in a thread of its own, in order, failing where it broke.
- ``--chunk-size`` bounds every request body of a push.
- A large chunk is hashed beside its write, the write (in the writer's thread) starting once
  the hash has begun.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3.connection

from regstore import Client, open_store
from regstore.backends import filesystem
from regstore.client.transport import _Session
from regstore.digest import digest_bytes
from regstore.engine import blobs as engine_blobs
from regstore.engine.transfer import MAX_IMAGE_WORKERS, image_workers
from regstore.errors import StoreEscapeError, TransportError
from regstore.reference import Digest
from regstore.testing.builders import build_image
from tests.support.cli import put_image, run_cli
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer

MiB = 1 << 20


def _blob_dir(root: Path, digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    return root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2]


def _write_blob(store: Any, data: bytes) -> str:
    digest = str(digest_bytes(data))
    with store.layer(digest).writer() as writer:
        writer.write(data)
        writer.commit(len(data))
    return digest


def test_a_link_swapped_in_after_the_trust_window_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    data = b"bytes that must only be read from inside the store"
    with open_store(str(root)) as store:
        digest = _write_blob(store, data)
        with store.layer(digest).reader() as reader:
            assert reader.read() == data  # the store's directories are now trusted
        # Move the blob's directory out of the store and leave a link to it in its place.
        blob_dir = _blob_dir(root, digest)
        shutil.copytree(blob_dir, outside)
        shutil.rmtree(blob_dir)
        blob_dir.symlink_to(outside)
        later = time.monotonic() + filesystem._Confinement.TRUSTED_FOR + 1
        monkeypatch.setattr(
            filesystem, "time", types.SimpleNamespace(monotonic=lambda: later, time=time.time)
        )
        with pytest.raises(StoreEscapeError) as caught:
            store.layer(digest).reader()
        assert str(blob_dir) in str(caught.value)


def test_a_link_found_on_first_use_is_refused_and_one_inside_is_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    with open_store(str(root)) as store:
        inside = _write_blob(store, b"kept in the store")
        escaping = _write_blob(store, b"moved away")
    # A store that arrives with links: one leading elsewhere in the store, one out of it.
    escaping_dir = _blob_dir(root, escaping)
    shutil.copytree(escaping_dir, outside)
    shutil.rmtree(escaping_dir)
    escaping_dir.symlink_to(outside)
    inside_dir = _blob_dir(root, inside)
    moved = root / "moved-here"
    inside_dir.rename(moved)
    inside_dir.symlink_to(moved)
    with open_store(str(root)) as store:
        with store.layer(inside).reader() as reader:
            assert reader.read() == b"kept in the store"
        with pytest.raises(StoreEscapeError):
            store.layer(escaping).reader()


def test_a_trusted_directory_never_outlives_the_trust_of_those_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deep directory first seen late in its parents' trust window must not vouch for them
    # after their window ended: a link swapped in above it is found then.
    root, outside = tmp_path / "store", tmp_path / "outside"
    (root / "a" / "b" / "c").mkdir(parents=True)
    clock = [1000.0]
    monkeypatch.setattr(
        filesystem, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    )
    confinement = filesystem._Confinement(str(root))
    confinement.check(str(root / "a" / "b" / "file"))  # trusts a and a/b until 1001
    clock[0] = 1000.9
    confinement.check(str(root / "a" / "b" / "c" / "file"))  # c: not past 1001 either
    (root / "a").rename(outside)
    (root / "a").symlink_to(outside)
    clock[0] = 1001.5
    with pytest.raises(StoreEscapeError):
        confinement.check(str(root / "a" / "b" / "c" / "file"))
    # within a window the parent alone is looked up, and a final link is still refused
    clock[0] = 2000.0
    (root / "a").unlink()
    (root / "a").mkdir()
    (root / "a" / "inside").mkdir()
    confinement.check(str(root / "a" / "inside" / "x"))
    (root / "a" / "inside" / "x").symlink_to(outside)
    with pytest.raises(StoreEscapeError):
        confinement.check(str(root / "a" / "inside" / "x"))


def test_many_directories_do_not_grow_the_trust_table_without_bound(tmp_path: Path) -> None:
    confinement = filesystem._Confinement(str(tmp_path))
    for i in range(5000):
        path = tmp_path / f"d{i}"
        path.mkdir()
        confinement.check(str(path / "file"))
    assert len(confinement._real_dirs) <= 4096


def test_the_environment_is_read_once_per_origin_and_still_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = requests.Session.merge_environment_settings

    def counting(self: requests.Session, url: Any, *args: Any) -> Any:
        calls.append(url)
        return original(self, url, *args)

    monkeypatch.setattr(requests.Session, "merge_environment_settings", counting)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = _Session()
    # (requests.Session.request hands over a dict of its own: {} when none was given)
    first = session.merge_environment_settings(
        "https://registry.example/v2/a/manifests/1", {}, True, True, None
    )
    second = session.merge_environment_settings(
        "https://registry.example/v2/b/manifests/2", {}, True, True, None
    )
    other = session.merge_environment_settings("https://mirror.example/v2/", {}, True, True, None)
    assert len(calls) == 2  # one per origin
    assert first["proxies"]["https"] == "http://proxy.invalid:3128"
    assert other["proxies"]["https"] == "http://proxy.invalid:3128"
    first["proxies"]["https"] = "changed by a caller"
    assert second["proxies"]["https"] == "http://proxy.invalid:3128"  # copies, not the cache
    bypass = session.merge_environment_settings(
        "https://registry.example/v2/", {"https": None}, True, True, None
    )
    assert len(calls) == 3  # other explicit proxies: another entry
    assert bypass["proxies"].get("https") is None


def test_images_are_planned_wider_than_blobs_move_except_at_concurrency_one() -> None:
    assert image_workers(1) == 1
    assert image_workers(2) == 4
    assert image_workers(4) == 8
    assert image_workers(8) == MAX_IMAGE_WORKERS
    assert image_workers(32) == 32  # never fewer image slots than blob slots


def test_pushes_chunk_by_the_library_size_and_downloads_budget_by_their_own_span() -> None:
    assert engine_blobs.DEFAULT_CHUNK_SIZE == 512 << 20
    assert engine_blobs.RETRY_SPAN == 32 << 20
    policy = types.SimpleNamespace(retries=5)
    push = engine_blobs._push_retries
    # A 1 GiB push keeps the budget it had in 128 MiB chunks, in larger ones too ...
    for chunk in (128 << 20, engine_blobs.DEFAULT_CHUNK_SIZE, 1 << 30):
        assert push(policy, 1 << 30, chunk) == 5 + 2 * 7, chunk  # type: ignore[arg-type]
    # ... smaller chunks get two per chunk, one PUT the policy's own, no policy none.
    assert push(policy, 1 << 30, 64 << 20) == 5 + 2 * 15  # type: ignore[arg-type]
    assert push(policy, 1 << 30, None) == 5  # type: ignore[arg-type]
    assert push(types.SimpleNamespace(retries=0), 1 << 30, 64 << 20) == 0  # type: ignore[arg-type]
    # A 1 GiB download keeps its budget of two retries per 32 MiB after the first.
    assert engine_blobs._blob_retries(policy, 1 << 30, engine_blobs.RETRY_SPAN) == 5 + 2 * 31  # type: ignore[arg-type]


def test_a_push_takes_its_retry_budget_from_its_size_and_chunks() -> None:
    class Stop(Exception):
        pass

    seen: list[int | None] = []

    class Policy:
        retries = 5

        def budget(self, subject: str, retries: int | None = None) -> None:
            seen.append(retries)
            raise Stop

    client = types.SimpleNamespace(retry_policy=Policy(), registry="registry.example")
    cases = [(1 << 30, engine_blobs.DEFAULT_CHUNK_SIZE), (1 << 30, 64 << 20), (1 << 20, None)]
    for size, chunk in cases:
        with pytest.raises(Stop):
            engine_blobs.upload_blob(
                client,  # type: ignore[arg-type]
                "team/app",
                "sha256:" + "0" * 64,
                size,
                lambda offset: None,  # type: ignore[arg-type,return-value]
                None,  # type: ignore[arg-type]
                chunk_size=chunk or engine_blobs.DEFAULT_CHUNK_SIZE,
            )
    assert seen == [5 + 2 * 7, 5 + 2 * 15, 5]  # 128 MiB spans, 64 MiB chunks, one PUT


def test_blobs_read_to_their_end_leave_the_connection_for_the_next_request(
    registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = build_image(layers=4, layer_size=300 * 1024, seed=16, media="oci")
    seed_registry(registry.url, "fast/conn", "1", image)
    connects = 0
    connect = urllib3.connection.HTTPConnection.connect

    def counting(self: urllib3.connection.HTTPConnection) -> None:
        nonlocal connects
        connects += 1
        connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting)
    client = Client(registry.host)
    try:
        for digest, data in image.blobs.items():
            with client.get_blob("fast/conn", digest) as stream:
                buffer = bytearray(len(data) + 10)
                got = bytearray()
                while n := stream.readinto(buffer):  # the direct path into a caller's buffer
                    got += buffer[:n]
            assert bytes(got) == data
    finally:
        client.close()
    assert len(image.blobs) >= 5
    assert connects == 1  # one kept-alive connection, not one per blob


class _Source:
    """A blob source of ``data`` in reads of ``step`` bytes; read number ``gate_at`` (1-based)
    waits for ``gate``; ``fail_at`` makes the read starting at that position raise."""

    def __init__(self, data: bytes, step: int, fail_at: int | None = None) -> None:
        self.data, self.step, self.fail_at = data, step, fail_at
        self.offset, self.size = 0, len(data)
        self.position, self.reads, self.closed = 0, 0, False
        self.started = [threading.Event() for _ in range(8)]
        self.gate = threading.Event()
        self.gate_at: int | None = None

    def readinto(self, buffer: bytearray | memoryview) -> int:
        self.reads += 1
        if self.reads <= len(self.started):
            self.started[self.reads - 1].set()
        if self.gate_at == self.reads:
            self.gate.wait(30)
        if self.closed:
            raise ValueError("read of a closed source")
        if self.fail_at is not None and self.position >= self.fail_at:
            raise TransportError("the source broke")
        n = min(len(buffer), self.step, len(self.data) - self.position)
        memoryview(buffer)[:n] = self.data[self.position : self.position + n]
        self.position += n
        return n

    def close(self) -> None:
        self.closed = True
        self.gate.set()


def _drain(source: Any, size: int) -> bytes:
    out, buffer = bytearray(), bytearray(size)
    while n := source.readinto(buffer):
        out += buffer[:n]
    return bytes(out)


def test_a_read_ahead_source_gives_every_byte_in_order() -> None:
    data = os.urandom(5 * MiB + 123)
    ahead = engine_blobs._ReadAhead(_Source(data, 700 * 1024))  # type: ignore[arg-type]
    try:
        assert _drain(ahead, 300 * 1024) == data
    finally:
        ahead.close()


def test_a_pull_takes_the_read_ahead_ring_buffers_themselves() -> None:
    # the pipelined pull and the read-ahead push are one piece: a pull's views are the ring's
    # own buffers (no copy per chunk), never more of them than PIPELINE_DEPTH
    data = os.urandom(5 * MiB + 7)
    ahead = engine_blobs._ReadAhead(_Source(data, MiB), MiB)  # type: ignore[arg-type]
    got, buffers = bytearray(), set()
    try:
        for view in ahead.views():
            assert isinstance(view.obj, bytearray) and len(view.obj) == MiB
            buffers.add(id(view.obj))
            got += view
    finally:
        ahead.close()
    assert bytes(got) == data
    assert len(buffers) == engine_blobs.PIPELINE_DEPTH


def test_the_next_read_starts_before_the_caller_asks_for_it() -> None:
    data = os.urandom(3 * MiB)
    source = _Source(data, MiB)
    ahead = engine_blobs._ReadAhead(source)  # type: ignore[arg-type]
    try:
        buffer = bytearray(MiB)
        assert ahead.readinto(buffer) == MiB  # the first read's bytes, handed over...
        # ... while the second read is already under way in the reader's thread
        assert source.started[1].wait(30)
        assert _drain(ahead, MiB) == data[MiB:]
    finally:
        ahead.close()


def test_a_broken_source_fails_where_it_broke_after_the_bytes_before() -> None:
    data = os.urandom(4 * MiB)
    ahead = engine_blobs._ReadAhead(_Source(data, MiB, fail_at=2 * MiB))  # type: ignore[arg-type]
    got = bytearray()
    buffer = bytearray(512 * 1024)
    with pytest.raises(TransportError):
        while n := ahead.readinto(buffer):
            got += buffer[:n]
    assert bytes(got) == data[: 2 * MiB]
    ahead.close()


def test_closing_never_waits_for_a_reader_blocked_on_its_source() -> None:
    source = _Source(os.urandom(4 * MiB), MiB)
    source.gate_at = 2  # the read after the first blocks until the gate opens
    ahead = engine_blobs._ReadAhead(source)  # type: ignore[arg-type]
    assert ahead.readinto(bytearray(MiB)) == MiB
    assert source.started[1].wait(30)
    closer = threading.Thread(target=ahead.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive()  # close() returned while the read was still blocked
    assert not source.closed  # a source is never closed under a read in progress ...
    source.gate.set()
    assert ahead.thread is not None
    ahead.thread.join(30)
    assert not ahead.thread.is_alive()
    assert source.closed  # ... the reader closes it once its read returns
    with pytest.raises(ValueError):
        ahead.readinto(bytearray(10))


def test_closing_an_idle_read_ahead_closes_its_source() -> None:
    source = _Source(os.urandom(MiB), MiB)
    engine_blobs._ReadAhead(source).close()  # type: ignore[arg-type]
    assert source.closed
    finished = _Source(os.urandom(MiB), MiB)
    ahead = engine_blobs._ReadAhead(finished)  # type: ignore[arg-type]
    assert _drain(ahead, MiB) == finished.data
    assert ahead.thread is not None
    ahead.thread.join(30)
    ahead.close()  # the reader is done: close() itself closes the source
    assert finished.closed


def test_chunk_size_bounds_every_request_body_of_a_cli_push(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory: Any
) -> None:
    built = build_image(layers=1, layer_size=3 * MiB + 5, seed=17, media="oci")
    store_path = str(tmp_path / "store")
    with open_store(store_path) as store:
        put_image(store, "src/app", "1", built)
    proxy = fault_proxy_factory(registry)
    result = run_cli(
        "--chunk-size",
        "1MiB",
        "push",
        "src/app:1",
        f"{proxy.host}/dst/app:1",
        home=tmp_path / "home",
        store=store_path,
    )
    assert result.returncode == 0, result.stderr
    bodies = [r.request_bytes for r in proxy.requests_matching(None, r"/blobs/uploads/")]
    assert max(bodies) <= MiB  # the 3 MiB layer too: in PATCHes, no monolithic PUT
    assert len(proxy.requests_matching("PATCH", r"/blobs/uploads/")) >= 4
    refused = run_cli(
        "--chunk-size",
        "10",
        "push",
        "src/app:1",
        f"{proxy.host}/x:1",
        home=tmp_path / "home",
        store=store_path,
    )
    assert refused.returncode == 2 and "outside 1MiB" in refused.stderr


def test_a_large_chunk_is_written_once_its_hash_has_begun_in_the_writers_own_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A memory store's append holds the GIL: written first, it kept the hash from starting
    # until it ended, and the two ran one after the other.
    from regstore import store as store_module
    from regstore.backends import memory
    from regstore.errors import BlobNotFoundError

    data = os.urandom(3 * MiB)
    digest = str(digest_bytes(data))
    events: list[tuple[str, int]] = []
    begin, update, append = (
        store_module.LayerWriter._hash_chunk,
        store_module.Digester.update,
        memory._StagedBlob.append,
    )

    def beginning(self: Any, chunk: Any, started: threading.Event) -> None:
        events.append(("hash", threading.get_ident()))  # before the writer may go on
        begin(self, chunk, started)

    def hashing(self: Any, chunk: Any) -> None:
        events.append(("hashed by", threading.get_ident()))
        update(self, chunk)

    def writing(self: Any, chunk: Any) -> None:
        events.append(("write", threading.get_ident()))
        append(self, chunk)

    monkeypatch.setattr(store_module.LayerWriter, "_hash_chunk", beginning)
    monkeypatch.setattr(store_module.Digester, "update", hashing)
    monkeypatch.setattr(memory._StagedBlob, "append", writing)
    store = open_store("memory://overlap-order")
    try:
        with store.layer(digest).writer() as writer:
            for start in range(0, len(data), MiB):
                writer.write(memoryview(data)[start : start + MiB])
            writer.commit(len(data))
        assert [kind for kind, _ in events if kind != "hashed by"] == ["hash", "write"] * 3
        writers = {ident for kind, ident in events if kind == "write"}
        hashers = {ident for kind, ident in events if kind == "hashed by"}
        assert writers == {threading.get_ident()} and hashers
        assert threading.get_ident() not in hashers
        with store.layer(digest).reader() as reader:
            assert reader.read() == data
    finally:
        with contextlib.suppress(BlobNotFoundError):
            store.delete_blob(digest)
        store.close()


def test_a_memory_listing_that_met_a_concurrent_write_is_taken_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    from regstore.backends import memory

    calls = 0
    find = MemoryFileSystem.find

    def racing(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls < 3:  # what a concurrent insert during the dict's copy raises
            raise RuntimeError("dictionary changed size during iteration")
        return find(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "find", racing)
    fs = memory._memory_filesystem()
    fs.pipe_file("/regstore-fastpath/a/b", b"x")
    try:
        assert fs.find("/regstore-fastpath") == ["/regstore-fastpath/a/b"]
        assert calls == 3
        monkeypatch.setattr(
            MemoryFileSystem, "find", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other"))
        )
        with pytest.raises(RuntimeError, match="other"):  # any other error is the caller's
            fs.find("/regstore-fastpath")
    finally:
        monkeypatch.setattr(MemoryFileSystem, "find", find)
        fs.rm("/regstore-fastpath", recursive=True)


def test_a_batch_into_a_registry_pushes_a_shared_blob_once_and_asks_once(
    registry: RegistryServer, fault_proxy_factory: Any
) -> None:
    # images of one batch share a blob another image already pushed: a registry needs no claim
    # (a store does, for gc), so the finished move is shared and no HEAD asks about it again
    from regstore.engine import RegistryImage, StoreImage
    from regstore.engine.transfer import transfer_many

    built = build_image(layers=1, layer_size=64 * 1024, seed=23, media="oci")
    source = open_store("memory://fast-paths-shared")
    for tag in ("a", "b", "c"):
        put_image(source, "app", tag, built)
    proxy = fault_proxy_factory(registry)
    client = Client(proxy.host)
    try:
        jobs = [
            (StoreImage(source, "app", tag), RegistryImage(client, "shared/app")) for tag in "abc"
        ]
        assert transfer_many(jobs, concurrency=1).ok  # one image after the other
    finally:
        client.close()
        source.close()
    layer = built.layer_digests[0]
    assert proxy.count("HEAD", rf"/shared/app/blobs/{layer}$") == 1


def test_a_small_file_in_an_existing_directory_is_written_without_mkdir_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(str(tmp_path / "store"))
    backend = store.backend
    assert isinstance(backend, filesystem.LocalBackend)
    first = backend.path("repositories", "a", "link")
    backend.write_file(first, b"one")  # makes the working directory and the link's
    made: list[str] = []
    real = os.mkdir

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        made.append(str(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    backend.write_file(backend.path("repositories", "a", "other"), b"two")
    backend.write_file(first, b"three")  # replaced in place
    assert made == []
    deep = backend.path("repositories", "b", "c", "link")
    backend.write_file(deep, b"four")  # a new directory and its parent: made when missing
    parent, grandparent = os.path.dirname(deep), os.path.dirname(os.path.dirname(deep))
    assert made == [grandparent, parent]  # from the first missing one down: none fails
    assert Path(first).read_bytes() == b"three" and Path(deep).read_bytes() == b"four"
    store.close()


@pytest.mark.parametrize("trusted", [False, True], ids=["first-look", "trusted-directory"])
def test_a_final_link_is_followed_inside_the_store_and_refused_out_of_it(
    tmp_path: Path, trusted: bool
) -> None:
    # Reads, sizes and existence look at the last component with the access itself (lstat,
    # O_NOFOLLOW): meeting a link there, they take the slow way, as a check first did.
    root, outside = tmp_path / "store", tmp_path / "outside"
    d = root / "d"
    d.mkdir(parents=True)
    (d / "real").write_bytes(b"inside")
    (d / "in").symlink_to(d / "real")
    outside.write_bytes(b"secret")
    (d / "out").symlink_to(outside)
    (d / "dangling").symlink_to(d / "nothing")
    (d / "loop").symlink_to(d / "loop")
    backend = filesystem.LocalBackend(str(root))
    if trusted:
        assert backend.read_file(str(d / "real")) == b"inside"
        assert str(d) in backend.confinement._real_dirs
    assert backend.read_file(str(d / "in")) == b"inside"
    assert backend.file_size(str(d / "in")) == 6
    assert backend.exists(str(d / "in"))
    for look in (backend.read_file, backend.file_size, backend.exists):
        with pytest.raises(StoreEscapeError):
            look(str(d / "out"))
    assert backend.read_file(str(d / "dangling")) is None
    assert backend.file_size(str(d / "dangling")) is None
    assert not backend.exists(str(d / "dangling"))
    assert backend.exists(str(d)) and backend.file_size(str(d)) is None  # a directory
    assert not backend.exists(str(d / "loop"))  # as os.path.exists: no error, not there
    for nothing in (root / "x" / "y", d / "real" / "below", d / "nothing"):
        assert backend.file_size(str(nothing)) is None
        assert not backend.exists(str(nothing))
    assert backend.read_file(str(root / "x" / "y")) is None
    assert backend.read_file(str(d / "nothing")) is None
    with pytest.raises(NotADirectoryError):  # a damaged store: a file where a directory was
        backend.read_file(str(d / "real" / "below"))
    with pytest.raises(IsADirectoryError) as caught:
        backend.read_file(str(d))
    assert caught.value.filename == str(d)


def test_a_look_at_a_path_costs_one_system_call_and_none_below_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(  # no trust runs out on a slow machine
        filesystem, "time", types.SimpleNamespace(monotonic=lambda: 1000.0, time=time.time)
    )
    store = open_store(str(tmp_path / "store"))
    backend = store.backend
    assert isinstance(backend, filesystem.LocalBackend)
    present = _write_blob(store, b"present")
    absent = str(digest_bytes(b"absent"))
    backend.complete_size(Digest(present))  # the blob directories are trusted now
    calls: list[str] = []
    for name in ("lstat", "stat", "open"):
        real = getattr(os, name)

        def counted(path: Any, *args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(path, *args)

        monkeypatch.setattr(os, name, counted)
    assert backend.complete_size(Digest(present)) == len(b"present")
    assert calls == ["lstat"]
    calls.clear()
    assert backend.complete_size(Digest(absent)) is None  # its own directory is missing
    assert calls == ["lstat"]  # that directory, not the blob's path below it
    calls.clear()
    assert backend.read_file(backend.layout.blob_path(Digest(present))) == b"present"
    assert calls == ["open"]
    monkeypatch.undo()
    store.close()


def test_a_directory_looked_at_or_made_is_never_trusted_longer_than_those_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for check(): the primitives that look at a path themselves (sizes, existence, reads)
    # and the directories regstore makes must not extend the trust of the directories above.
    root, outside = tmp_path / "store", tmp_path / "outside"
    clock = [1000.0]
    monkeypatch.setattr(
        filesystem, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    )
    backend = filesystem.LocalBackend(str(root))
    backend.ensure_parent(str(root / "a" / "b" / "file"))  # makes a and a/b: trusted to 1001
    assert backend.confinement._real_dirs == {str(root / "a"): 1001.0,
                                              str(root / "a" / "b"): 1001.0}  # fmt: skip
    (root / "a" / "b" / "seen").mkdir()
    clock[0] = 1000.9
    assert backend.exists(str(root / "a" / "b" / "seen"))  # looked at: not past 1001 either
    backend.ensure_parent(str(root / "a" / "b" / "made" / "file"))  # made: nor this one
    assert backend.confinement._real_dirs[str(root / "a" / "b" / "seen")] == 1001.0
    assert backend.confinement._real_dirs[str(root / "a" / "b" / "made")] == 1001.0
    (root / "a").rename(outside)
    (root / "a").symlink_to(outside)
    (outside / "b" / "seen" / "file").write_bytes(b"outside")
    clock[0] = 1001.5
    for below in ("seen", "made"):
        path = str(root / "a" / "b" / below / "file")
        for look in (backend.read_file, backend.file_size, backend.exists):
            with pytest.raises(StoreEscapeError):
                look(path)


def test_staging_and_locks_make_their_directories_again_when_they_are_gone(
    tmp_path: Path,
) -> None:
    # Their directories are made when an open finds them missing, not asked for each time.
    root = tmp_path / "store"
    with open_store(str(root)) as store:
        _write_blob(store, b"first")
        shutil.rmtree(root / "_regstore" / "uploads")
        shutil.rmtree(root / "_regstore" / "locks")
        digest = _write_blob(store, b"second")
        with store.layer(digest).reader() as reader:
            assert reader.read() == b"second"
        assert (root / "_regstore" / "uploads").is_dir()
        assert store.blob_status(digest).state.value == "complete"
