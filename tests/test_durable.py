"""Directory entries made durable in groups (regstore.backends.durable) and where the file
store asks for durability: before a manifest becomes visible, after its tag, on close."""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore import open_store
from regstore.backends import durable
from regstore.backends.durable import EntrySync
from regstore.backends.filesystem import LocalBackend
from regstore.errors import StoreError
from regstore.store import ObjectStore
from regstore.testing.builders import oci_image, write_blob, write_image


def _recording_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real = durable.fsync_dir

    def recording(path: str) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(durable, "fsync_dir", recording)
    return synced


class _Syncfs:
    """A syncfs that records its calls, can be held at the next call, and can fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail: OSError | None = None

    def __call__(self, fd: int) -> None:
        os.fstat(fd)  # a real, open descriptor
        self.calls.append(fd)
        self.entered.set()
        assert self.hold.wait(10)
        if self.fail is not None:
            raise self.fail


def test_outside_a_deferring_block_an_entry_is_fsynced_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _recording_fsyncs(monkeypatch)
    syncfs = _Syncfs()
    entries = EntrySync(str(tmp_path), syncfs=syncfs)
    entries.changed(str(tmp_path))
    assert synced == [str(tmp_path)]
    entries.flush()  # nothing deferred: no sync
    assert syncfs.calls == [] and entries.syncs == 0


def test_deferred_entries_are_made_durable_by_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _recording_fsyncs(monkeypatch)
    syncfs = _Syncfs()
    entries = EntrySync(str(tmp_path), syncfs=syncfs)
    with entries.deferring():
        for name in "abc":
            entries.changed(str(tmp_path / name))
    assert synced == [] and syncfs.calls == []
    entries.flush()
    assert len(syncfs.calls) == 1 and synced == []
    entries.flush()  # nothing new: no second sync
    assert len(syncfs.calls) == 1
    entries.close()


def test_without_syncfs_nothing_is_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _recording_fsyncs(monkeypatch)
    entries = EntrySync(str(tmp_path), syncfs=None)
    with entries.deferring():
        entries.changed(str(tmp_path))  # another process's blobs would not be covered
    assert synced == [str(tmp_path)]
    entries.flush(barrier=True)
    assert entries.syncs == 0


def test_where_syncfs_does_not_cover_the_store_nothing_is_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _recording_fsyncs(monkeypatch)
    monkeypatch.setattr(durable, "syncfs_covers", lambda root: False)
    monkeypatch.setattr(durable, "_syncfs", _Syncfs())
    entries = EntrySync(str(tmp_path))
    with entries.deferring():
        entries.changed(str(tmp_path))
    assert synced == [str(tmp_path)]
    entries.flush(barrier=True)
    assert entries.syncs == 0


_MOUNTS = """\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
24 22 0:21 / /proc rw shared:12 - proc proc rw
30 22 0:25 / /srv/nfs rw - nfs4 server:/export rw
31 22 0:26 / /srv/my\\040mirror rw - xfs /dev/vdb rw
32 22 0:27 / /srv/fuse rw - fuse.sshfs host: rw
33 22 252:0 / /data rw - ext4 /dev/vdc rw
34 33 0:28 / /data/mirror/inner rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("root", "kernel", "covered"),
    [
        ("/var/lib/regstore", "6.1.0-18-amd64", True),  # ext4 on /
        ("/var/lib/regstore", "5.8.0", True),
        ("/var/lib/regstore", "5.4.0-150-generic", False),  # syncfs dropped errors before 5.8
        ("/var/lib/regstore", "4.18.0-553.el8", False),
        ("/srv/nfs/mirror", "6.1.0", False),  # a network filesystem
        ("/srv/fuse/mirror", "6.1.0", False),  # FUSE: no directory sync to its daemon
        ("/srv/my mirror/store", "6.1.0", True),  # xfs, the mount point escaped in mountinfo
        ("/data/other", "6.1.0", True),
        ("/data/mirror", "6.1.0", False),  # a filesystem mounted inside the store
        ("/data/mirror/inner/x", "6.1.0", True),  # tmpfs
    ],
)
def test_syncfs_covers_a_store_on_a_known_local_filesystem_with_nothing_mounted_inside(
    root: str, kernel: str, covered: bool
) -> None:
    assert durable.syncfs_covers(root, _MOUNTS, kernel) is covered


def _in_thread(call: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _held_sync(
    tmp_path: Path, syncfs: _Syncfs | None = None
) -> tuple[EntrySync, _Syncfs, threading.Thread, list[BaseException]]:
    """An entry recorded, and a flush of it in a thread whose sync is running, held."""
    syncfs = syncfs or _Syncfs()
    entries = EntrySync(str(tmp_path), syncfs=syncfs)
    with entries.deferring():
        entries.changed(str(tmp_path))
    syncfs.hold.clear()
    thread, errors = _in_thread(entries.flush)
    assert syncfs.entered.wait(10)
    return entries, syncfs, thread, errors


def test_a_flush_during_a_running_sync_waits_for_the_next_one_shared_by_all_waiters(
    tmp_path: Path,
) -> None:
    entries, syncfs, first, first_errors = _held_sync(tmp_path)  # the first sync runs, held
    # entries made now may have missed the running sync: their flushes need a later one
    with entries.deferring():
        entries.changed(str(tmp_path / "late"))
    waiters = [_in_thread(entries.flush) for _ in range(3)]
    for thread, _ in waiters:
        thread.join(0.2)
        assert thread.is_alive()  # not served by the sync that started before them
    syncfs.hold.set()
    for thread, errors in [(first, first_errors), *waiters]:
        thread.join(10)
        assert not thread.is_alive() and errors == []
    assert len(syncfs.calls) == 2  # one more sync served all three waiters


def test_a_flush_with_nothing_new_waits_for_the_running_sync_that_holds_other_entries(
    tmp_path: Path,
) -> None:
    entries, syncfs, first, _ = _held_sync(tmp_path)  # it holds the entry, none pending now
    second, errors = _in_thread(entries.flush)
    second.join(0.2)
    assert second.is_alive()  # the entry it may depend on is not durable yet
    syncfs.hold.set()
    for thread in (first, second):
        thread.join(10)
        assert not thread.is_alive()
    assert errors == []


def test_a_barrier_syncs_even_with_nothing_recorded(tmp_path: Path) -> None:
    """Another process's (or a thread's not yet recorded) entries are covered too."""
    syncfs = _Syncfs()
    entries = EntrySync(str(tmp_path), syncfs=syncfs)
    entries.flush()
    assert syncfs.calls == []
    entries.flush(barrier=True)
    assert len(syncfs.calls) == 1
    entries.close()


def test_a_failed_sync_fails_its_waiters_and_every_later_flush(tmp_path: Path) -> None:
    failing = _Syncfs()
    failing.fail = OSError(errno.EIO, "Input/output error")
    entries, syncfs, first, first_errors = _held_sync(tmp_path, failing)
    with entries.deferring():
        entries.changed(str(tmp_path / "late"))
    waiter, waiter_errors = _in_thread(entries.flush)
    syncfs.hold.set()
    for thread in (first, waiter):
        thread.join(10)
        assert not thread.is_alive()
    for errors in (first_errors, waiter_errors):
        assert len(errors) == 1 and isinstance(errors[0], StoreError)
        assert "could not make its writes durable" in str(errors[0])
    syncfs.fail = None  # a sync that works now proves nothing about the entries lost
    with pytest.raises(StoreError, match="Input/output error"):
        entries.flush()
    assert len(syncfs.calls) == 1


def test_an_interrupted_sync_is_owed_not_failed(tmp_path: Path) -> None:
    class Interrupting(_Syncfs):
        def __call__(self, fd: int) -> None:
            super().__call__(fd)
            if len(self.calls) == 1:
                raise KeyboardInterrupt

    syncfs = Interrupting()
    entries = EntrySync(str(tmp_path), syncfs=syncfs)
    with entries.deferring():
        entries.changed(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        entries.flush()
    entries.flush()  # the entry is still owed: a sync runs, and the store is not failed
    assert len(syncfs.calls) == 2
    entries.flush()
    assert len(syncfs.calls) == 2


def test_close_waits_for_a_running_sync_before_releasing_the_descriptor(tmp_path: Path) -> None:
    entries, syncfs, flushing, flush_errors = _held_sync(tmp_path)
    closing, close_errors = _in_thread(entries.close)
    closing.join(0.2)
    assert closing.is_alive()  # the running sync still uses the descriptor
    os.fstat(syncfs.calls[0])  # still open
    syncfs.hold.set()
    for thread in (flushing, closing):
        thread.join(10)
        assert not thread.is_alive()
    assert flush_errors == close_errors == []
    with pytest.raises(OSError):
        os.fstat(syncfs.calls[0])


# -- the file store --------------------------------------------------------------------------


def _events(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[str, str]], list[str]]:
    """Record renames and syncs of ``backend`` in order, and the directory fsyncs made."""
    events: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        real_replace(source, target)
        events.append(("rename", os.path.relpath(target, backend.root)))

    def syncfs(fd: int) -> None:
        real = durable._platform_syncfs()
        if real is not None:
            real(fd)
        events.append(("sync", ""))

    monkeypatch.setattr(os, "replace", replace)
    # the store's own syncfs, recorded (and real where the platform has one), trusted to
    # cover the store whatever filesystem the test's temporary directory is on
    monkeypatch.setattr(backend.entries, "_syncfs", syncfs)
    monkeypatch.setattr(backend.entries, "_check", False)
    return events, _recording_fsyncs(monkeypatch)


def _local(url: str) -> tuple[ObjectStore, LocalBackend]:
    store = open_store(url)
    assert isinstance(store.backend, LocalBackend)
    return store, store.backend


def _index(events: list[tuple[str, str]], predicate: Callable[[str], bool]) -> int:
    return next(i for i, (kind, path) in enumerate(events) if kind == "rename" and predicate(path))


def test_a_manifest_becomes_visible_only_after_what_it_references_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, backend = _local(str(tmp_path / "store"))
    image = oci_image(layers=2, seed=7)
    events, dir_fsyncs = _events(backend, monkeypatch)
    for blob in image.blobs:
        write_blob(store, blob)
    store.write_manifest("team/app", "v1", image.manifest)

    digest = image.digest.hex
    blobs = [_index(events, lambda p, b=b: p.endswith(f"{b.digest.hex}/data")) for b in image.blobs]
    layer_links = [
        _index(events, lambda p, b=b: f"_layers/sha256/{b.digest.hex}/link" in p)
        for b in image.blobs
    ]
    revision = _index(events, lambda p: p.endswith(f"revisions/sha256/{digest}/link"))
    tag = _index(events, lambda p: p.endswith("tags/v1/current/link"))
    syncs = [i for i, (kind, _) in enumerate(events) if kind == "sync"]
    # blobs and their links, then a sync, then the revision link and the tag, then a sync
    assert any(max(blobs + layer_links) < s < revision for s in syncs)
    assert revision < tag < syncs[-1] == len(events) - 1
    assert len(syncs) == 2
    # every entry of the layout went into a group (the staging area, made once, did not)
    assert [d for d in dir_fsyncs if "_regstore" not in d] == []
    store.close()


def test_the_oci_layout_index_is_written_after_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, backend = _local(f"file://{tmp_path}/store?layout=oci")
    image = oci_image(layers=1, seed=8)
    write_blob(store, image.blobs[0])  # prepares the layout first
    events, _ = _events(backend, monkeypatch)
    write_blob(store, image.blobs[1])
    store.write_manifest("team/app", "v1", image.manifest)
    blob = _index(events, lambda p: p.endswith(image.blobs[1].digest.hex))
    index = _index(events, lambda p: p == "index.json")
    assert any(kind == "sync" and blob < i < index for i, (kind, _) in enumerate(events))
    assert events[-1] == ("sync", "")
    store.close()


def test_a_blob_written_alone_is_made_durable_when_the_store_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, backend = _local(str(tmp_path / "store"))
    image = oci_image(layers=1, seed=9)
    events, dir_fsyncs = _events(backend, monkeypatch)
    write_blob(store, image.blobs[0])
    assert [kind for kind, _ in events] == ["rename"]  # visible, its entry not yet durable
    store.close()
    assert [kind for kind, _ in events] == ["rename", "sync"]
    assert [d for d in dir_fsyncs if "_regstore" not in d] == []


def test_a_pulled_image_round_trips_after_grouped_durability(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    image = oci_image(layers=3, seed=10)
    write_image(store, "team/app", "v1", image)
    store.close()
    reopened = open_store(str(tmp_path / "store"))
    assert reopened.manifest("team/app", "v1").raw == image.raw
    for blob in image.blobs:
        assert reopened.blob_exists(blob.digest)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's libc calls")
def test_a_checked_libc_call_raises_oserror_with_its_errno_and_a_missing_one_is_none() -> None:
    import ctypes

    from regstore.backends.libc import checked_linux_call

    syncfs = checked_linux_call("syncfs", [ctypes.c_int])
    assert syncfs is not None
    with pytest.raises(OSError) as caught:
        syncfs(-1)
    assert caught.value.errno == errno.EBADF
    assert checked_linux_call("no_such_call_in_libc", [ctypes.c_int]) is None
