"""The local filesystem backend against the conformance suite (both layouts), the generic
fsspec backend on a local filesystem, and filesystem specifics (URLs, paths, the root).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regstore import open_store
from regstore.backends.filesystem import path_from_url
from regstore.backends.fsspec_store import FsspecBackend, safe_join
from regstore.engine.gc import collect_garbage, delete_image
from regstore.errors import (
    InvalidReferenceError,
    ManifestInvalidError,
    RegstoreError,
    StoreDamageError,
    StoreError,
    StoreEscapeError,
    StoreOptionError,
)
from regstore.manifest import Manifest
from regstore.store import ObjectStore
from regstore.testing.builders import oci_image, oci_index, write_blob, write_image
from regstore.testing.conformance import (
    BackendConformance,
    CrossProcessConformance,
    StoreFactory,
)


class TestFileDistributionLayout(BackendConformance, CrossProcessConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "store")  # a plain path: distribution is the default

    def test_the_layout_is_distribution(self, store: ObjectStore) -> None:
        assert store.describe()["layout"] == "distribution"


class TestFileOciLayout(BackendConformance, CrossProcessConformance):
    large_blob_size = 2 * 1024 * 1024  # the distribution class streams the full 8 MiB

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/store?layout=oci"

    def test_the_layout_is_oci(self, store: ObjectStore) -> None:
        assert store.describe()["layout"] == "oci"


class TestGenericFsspecBackend(BackendConformance):
    """FsspecBackend's own defaults (fs.open append, fs.mv, temp + mv) with no overrides."""

    large_blob_size = 2 * 1024 * 1024

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        root = tmp_path / "store"
        root.mkdir()
        opened = ObjectStore(FsspecBackend(fsspec.filesystem("file"), str(root)), url="generic")
        yield opened
        opened.close()

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        def factory() -> ObjectStore:
            backend = FsspecBackend(fsspec.filesystem("file"), str(tmp_path / "store"))
            return ObjectStore(backend, url="generic")

        return factory


def test_a_generic_fsspec_store_reads_a_file_in_place_of_a_directory_as_no_file(
    tmp_path: Path,
) -> None:
    """As the local store does: a stat below a file (ENOTDIR) finds no file, it is no error."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "plain").write_bytes(b"x")
    backend = FsspecBackend(fsspec.filesystem("file"), str(root))
    assert backend.file_size(str(root / "plain" / "link")) is None
    assert backend.file_size(str(root / "plain")) == 1


def test_a_subclass_may_set_its_filesystem_itself(tmp_path: Path) -> None:
    # a plugin written when ``fs`` was a plain attribute: given none, it sets its own
    class Late(FsspecBackend):
        def __init__(self, root: str) -> None:
            self.fs = fsspec.filesystem("file")
            super().__init__(self.fs, root)

    class After(FsspecBackend):
        def __init__(self, root: str) -> None:
            super().__init__(fsspec.filesystem("memory"), root)
            self.fs = fsspec.filesystem("file")

    for kind in (Late, After):
        root = tmp_path / kind.__name__
        with ObjectStore(kind(str(root)), url=kind.__name__) as store:
            write_image(store, "sub/class", "1", oci_image(seed=3))
            assert store.resolve("sub/class", "1")
        assert (root / "docker" / "registry" / "v2").is_dir()


# -- URLs and options ------------------------------------------------------------------------


def test_urls_and_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = oci_image(seed=1)
    write_image(open_store(f"file://{tmp_path}/a"), "app", "v1", image)
    assert open_store(str(tmp_path / "a")).manifest("app", "v1").raw == image.raw
    assert open_store(f"file://localhost{tmp_path}/a").tags("app") == ["v1"]
    monkeypatch.chdir(tmp_path)
    assert open_store("a").tags("app") == ["v1"]
    assert open_store("./a").tags("app") == ["v1"]
    assert path_from_url("file:///srv/with%20space") == "/srv/with space"


def test_bad_urls_and_options(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="file:///"):
        open_store(f"{tmp_path}/s3?layout=oci")  # options need a URL, not a plain path
    assert not (tmp_path / "s3?layout=oci").exists()
    with pytest.raises(StoreError, match="three slashes"):
        open_store("file://relative/path")
    with pytest.raises(StoreError, match="unknown option"):
        open_store(str(tmp_path / "s"), colour="blue")
    with pytest.raises(StoreError, match="unknown store layout"):
        open_store(f"file://{tmp_path}/s2?layout=zip")
    assert not (tmp_path / "s2").exists()  # refused before creating anything
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "file"))


def test_root_is_created_by_the_first_write_and_describe(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/deep/er/store?layout=oci")
    assert not (tmp_path / "deep").exists()  # opening creates nothing
    assert not store.exists() and store.repositories() == []
    assert not (tmp_path / "deep").exists()  # nor does reading
    write_blob(store, oci_image(seed=3).blobs[0])
    assert (tmp_path / "deep/er/store").is_dir() and store.exists()
    info = store.describe()
    assert info["backend"] == "file"
    assert info["layout"] == "oci"
    assert info["root"] == str(tmp_path / "deep/er/store")


def test_io_errors_become_store_errors(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    blob = oci_image(seed=2).blobs[0]
    # a file where the blob's directory must go: the OSError surfaces as a StoreError
    blob_dir = tmp_path / "store/docker/registry/v2/blobs/sha256" / blob.digest.hex[:2]
    blob_dir.parent.mkdir(parents=True)
    blob_dir.write_text("in the way")
    with pytest.raises(StoreError) as caught:
        write_blob(store, blob)
    assert isinstance(caught.value.__cause__, OSError)


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [("..",), ("a/../b",), ("/abs",), ("a\\b",), ("a\x00",), ("",), ("a//b",), (".x",),
     ("\uff41",), ("a", ".."), ("a/",), (None,), (1,), (["a"],), ("a", "b/")],
)  # fmt: skip
def test_safe_join_refuses_escapes(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidReferenceError):
        safe_join("/root", *parts)


def test_safe_join_builds_paths_under_the_root() -> None:
    assert safe_join("/root/", "a/b", "c.d", "_x") == "/root/a/b/c.d/_x"
    assert safe_join("bucket/prefix", "blobs") == "bucket/prefix/blobs"
    assert safe_join("/root") == "/root"
    assert safe_join("/r", "a..b", "x-y_z.1") == "/r/a..b/x-y_z.1"  # dots inside a name


def test_backend_hooks_validate_on_their_own(tmp_path: Path) -> None:
    # A wrapper plugin or a direct caller may bypass the facade: the hookimpls validate too.
    backend = open_store(str(tmp_path / "store")).backend
    with pytest.raises(InvalidReferenceError):
        backend.regstore_store_get_manifest(name="../x", reference="latest")  # type: ignore[attr-defined]
    with pytest.raises(InvalidReferenceError):
        backend.regstore_store_list_tags(name="/etc")  # type: ignore[attr-defined]
    with pytest.raises(InvalidReferenceError):
        backend.regstore_store_blob_writer(digest="sha256:../../x")  # type: ignore[attr-defined]
    with pytest.raises(InvalidReferenceError):
        backend.regstore_store_delete_tag(name="a", tag="..")  # type: ignore[attr-defined]


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


_hostile_text = st.one_of(
    st.text(min_size=0, max_size=40),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "\x00", "%2e", "\uff0e", "x:y", "B"]),
             max_size=8).map("".join),
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=_hostile_text, tag=_hostile_text, digest=_hostile_text)
def test_nothing_outside_the_root_is_touched(
    tmp_path_factory: pytest.TempPathFactory, name: str, tag: str, digest: str
) -> None:
    parent = tmp_path_factory.mktemp("parent", numbered=True)
    for layout in ("distribution", "oci"):
        root = parent / f"store-{layout}"
        store = open_store(str(root), layout=layout)
        before_parent, before_store = sorted(os.listdir(parent)), _tree(root)
        _try_everything(store, name, tag, digest)
        assert sorted(os.listdir(parent)) == before_parent
        assert _tree(root) == before_store


def _try_everything(store: ObjectStore, name: str, tag: str, digest: str) -> None:
    """Every store operation with these values; refusals and absences are expected."""
    image = oci_image(seed=3)
    operations: list[Callable[[], object]] = [
        lambda: store.manifest(name, tag),
        lambda: store.write_manifest(name, tag, image.manifest),
        lambda: store.write_manifest("ok", tag, image.manifest),
        lambda: store.tags(name),
        lambda: store.manifests(name),
        lambda: store.delete_tag(name, tag),
        lambda: store.delete_manifest(name, digest),
        lambda: store.layer(digest).writer(),
        lambda: store.layer(digest).reader(),
        lambda: store.blob_status(digest),
        lambda: store.delete_blob(digest),
        lambda: store.manifest("ok", digest),
    ]
    for operation in operations:
        with contextlib.suppress(RegstoreError):
            operation()


def test_staging_writes_back_while_the_blob_arrives_and_still_fsyncs_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every WRITEBACK_WINDOW bytes the new window is handed to writeback and the one before it
    waited for (so the last fsync is short), then that one dropped from the page cache (so
    a large blob reuses a few windows of pages instead of finding new ones); the
    fsync of the staged file still comes before the rename that publishes it."""
    import hashlib
    import os

    from regstore.backends import filesystem

    real_range, real_fsync, real_replace = filesystem._sync_file_range, os.fsync, os.replace
    real_advise = os.posix_fadvise
    assert real_range is not None, "Linux has sync_file_range"
    calls: list[tuple[str, int, int, int]] = []

    def spy_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
        calls.append(("range", offset, nbytes, flags))
        real_range(fd, offset, nbytes, flags)

    def spy_advise(fd: int, offset: int, nbytes: int, advice: int) -> None:
        calls.append(("advise", offset, nbytes, advice))
        real_advise(fd, offset, nbytes, advice)

    def spy_fsync(fd: int) -> None:
        calls.append(("fsync", 0, 0, 0))
        real_fsync(fd)

    def spy_replace(source: str, target: str) -> None:
        calls.append(("replace", 0, 0, 0))
        real_replace(source, target)

    window = 4 * 1024 * 1024
    monkeypatch.setattr(filesystem, "WRITEBACK_WINDOW", window)
    monkeypatch.setattr(filesystem, "_sync_file_range", spy_range)
    monkeypatch.setattr(os, "posix_fadvise", spy_advise)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    data = os.urandom(3 * window + 12345)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = open_store(str(tmp_path / "store"))
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(0, len(data), 1024 * 1024):
        writer.write(data[start : start + 1024 * 1024])
    writer.commit()

    writeback = [c for c in calls if c[0] in ("range", "advise")]
    start_only = filesystem.SYNC_FILE_RANGE_WRITE
    wait = (
        start_only | filesystem.SYNC_FILE_RANGE_WAIT_BEFORE | filesystem.SYNC_FILE_RANGE_WAIT_AFTER
    )
    drop = os.POSIX_FADV_DONTNEED
    assert writeback == [
        ("range", 0, window, start_only),
        ("range", window, window, start_only),
        ("range", 0, window, wait),
        ("advise", 0, window, drop),  # only once written back and waited for: clean pages
        ("range", 2 * window, window, start_only),
        ("range", window, window, wait),
        ("advise", window, window, drop),
    ]
    kinds = [c[0] for c in calls if c[0] not in ("range", "advise")]
    assert "replace" in kinds and "fsync" in kinds[: kinds.index("replace")]
    with store.layer(digest).reader() as reader:
        assert reader.read() == data


@pytest.mark.parametrize("how", ["url", "keyword"])
def test_page_cache_keep_writes_back_the_same_windows_and_drops_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``page_cache=keep`` (for a registry serving the store right after a pull) leaves every
    window in the page cache; writeback and the fsync before the rename are unchanged."""
    import hashlib
    import os

    from regstore.backends import filesystem

    real_range = filesystem._sync_file_range
    assert real_range is not None, "Linux has sync_file_range"
    ranges: list[int] = []
    advised: list[int] = []

    def spy_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
        ranges.append(offset)
        real_range(fd, offset, nbytes, flags)

    window = 1024 * 1024
    monkeypatch.setattr(filesystem, "WRITEBACK_WINDOW", window)
    monkeypatch.setattr(filesystem, "_sync_file_range", spy_range)
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, n, advice: advised.append(offset))
    data = os.urandom(4 * window + 3)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    root = tmp_path / "store"
    store = (
        open_store(f"{root.as_uri()}?page_cache=keep")
        if how == "url"
        else open_store(str(root), page_cache="keep")
    )
    assert store.describe()["page_cache"] == "keep"
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(0, len(data), window // 2):
        writer.write(data[start : start + window // 2])
    assert writer.commit() == digest
    assert ranges and advised == []
    with store.layer(digest).reader() as reader:
        assert reader.read() == data
    # the default drops, as the test above shows in detail
    assert open_store(str(tmp_path / "other")).describe()["page_cache"] == "drop"


def test_an_unknown_page_cache_value_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(StoreOptionError, match=r"page_cache.*drop.*keep"):
        open_store(f"{(tmp_path / 'store').as_uri()}?page_cache=never")
    with pytest.raises(StoreOptionError, match="page_cache"):
        open_store(str(tmp_path / "store"), page_cache="")
    assert not (tmp_path / "store").exists()
    # a plain path takes no query: the option is pointed to the URL form, not made a folder
    with pytest.raises(StoreError, match=r"file://.*page_cache"):
        open_store(f"{tmp_path / 'store'}?page_cache=keep")
    with pytest.raises(StoreOptionError, match=r"unknown option.*pagecache.*known: layout, page_"):
        open_store(f"{(tmp_path / 'store').as_uri()}?pagecache=keep")


@pytest.mark.parametrize("advice", ["refused", "absent"])
def test_pages_that_cannot_be_dropped_change_nothing_but_the_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, advice: str
) -> None:
    """posix_fadvise is advice: its failure (or its absence) neither fails the write nor
    changes the staged bytes."""
    import hashlib
    import os

    from regstore.backends import filesystem

    refused: list[int] = []

    def refusing_advise(fd: int, offset: int, nbytes: int, advice: int) -> None:
        refused.append(offset)
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    window = 1024 * 1024
    monkeypatch.setattr(filesystem, "WRITEBACK_WINDOW", window)
    if advice == "refused":
        monkeypatch.setattr(os, "posix_fadvise", refusing_advise)
    else:
        monkeypatch.delattr(os, "posix_fadvise")
    data = os.urandom(5 * window + 7)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = open_store(str(tmp_path / "store"))
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(0, len(data), window // 2):
        writer.write(data[start : start + window // 2])
    assert writer.commit() == digest
    if advice == "refused":
        assert refused == [0, window, 2 * window, 3 * window]  # each waited window, once
    with store.layer(digest).reader() as reader:
        assert reader.read() == data


@pytest.mark.parametrize(
    ("code", "fails"), [(errno.EIO, True), (errno.ENOSPC, True), (errno.ENOSYS, False)]
)
def test_a_writeback_error_fails_the_write_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fails: bool
) -> None:
    """sync_file_range hands the file's write error to its caller once; the fsync on close
    would not see it again, so swallowing it published a blob that never reached the disk.
    Only "not supported here" turns writeback off."""
    import hashlib
    import os

    from regstore.backends import filesystem

    def failing_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
        raise OSError(code, os.strerror(code))

    dropped: list[int] = []  # a window is dropped only once written back and waited for
    window = 1024 * 1024
    monkeypatch.setattr(filesystem, "WRITEBACK_WINDOW", window)
    monkeypatch.setattr(filesystem, "_sync_file_range", failing_range)
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, n, advice: dropped.append(offset))
    data = os.urandom(3 * window)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = open_store(str(tmp_path / "store"))
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    if fails:
        with pytest.raises(RegstoreError, match=os.strerror(code)):
            for start in range(0, len(data), window):
                writer.write(data[start : start + window])
            writer.commit()
        writer.discard()
        assert not store.layer(digest).exists()
    else:
        for start in range(0, len(data), window):
            writer.write(data[start : start + window])
        writer.commit()
        with store.layer(digest).reader() as reader:
            assert b"".join(reader.chunks()) == data
    assert dropped == []


def test_durable_makedirs_makes_the_parent_of_each_level_it_creates_durable(
    tmp_path: Path,
) -> None:
    from regstore.backends.filesystem import _makedirs_durable

    synced: list[str] = []
    deep = tmp_path / "a" / "b" / "c"
    _makedirs_durable(str(deep), synced.append)
    assert deep.is_dir()
    assert synced == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    synced.clear()
    _makedirs_durable(str(deep), synced.append)  # there already: nothing created
    _makedirs_durable(str(tmp_path / "a"), synced.append)
    assert synced == []
    _makedirs_durable(str(tmp_path / "a" / "sibling"), synced.append)  # one new level
    assert synced == [str(tmp_path / "a")]


def test_a_small_file_in_new_directories_makes_them_top_down_without_failed_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write into directories that do not exist yet (a first mirror's links) makes them
    from the first missing one down, each entry made durable, with no failed mkdir or rename;
    a directory removed after it was looked at is made again the slow way."""
    from regstore.backends import filesystem
    from regstore.backends.filesystem import LocalBackend

    root = tmp_path / "store"
    backend = LocalBackend(str(root))
    # what was looked at stays trusted through the test, however slow the machine
    monkeypatch.setattr(backend.confinement, "TRUSTED_FOR", 3600.0)
    backend.write_file(str(root / "first"), b"0")  # the root and the working directory
    failed: list[tuple[str, str]] = []
    synced: list[str] = []
    real_mkdir, real_replace = os.mkdir, os.replace

    def mkdir(path: str, *args: object) -> None:
        try:
            real_mkdir(path, *args)  # type: ignore[arg-type]
        except OSError:
            failed.append(("mkdir", path))
            raise

    def replace(source: str, target: str) -> None:
        try:
            real_replace(source, target)
        except OSError:
            failed.append(("replace", target))
            raise

    monkeypatch.setattr(filesystem.os, "mkdir", mkdir)
    monkeypatch.setattr(filesystem.os, "replace", replace)
    monkeypatch.setattr(backend.entries, "changed", synced.append)
    deep = root / "a" / "b" / "c" / "link"
    backend.write_file(str(deep), b"digest")
    assert deep.read_bytes() == b"digest"
    assert failed == []
    assert synced == [
        str(root),
        str(root / "a"),
        str(root / "a" / "b"),
        str(root / "a" / "b" / "c"),
    ]
    synced.clear()
    backend.write_file(str(root / "a" / "b" / "other"), b"1")  # its directory is there
    assert failed == [] and synced == [str(root / "a" / "b")]

    # looked at a moment ago (trusted), then removed by someone else: made again
    shutil.rmtree(root / "a")
    backend.write_file(str(deep), b"again")
    assert deep.read_bytes() == b"again"
    assert ("replace", str(deep)) in failed  # (the one failed rename it costs)
    assert not list((root / "_regstore" / "tmp").iterdir())  # no temporary file left


def test_a_directory_removed_while_its_children_are_made_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory above the first missing one goes (another process's gc) just before the
    first mkdir: every level is made the slow way, each entry made durable."""
    from regstore.backends import filesystem
    from regstore.backends.filesystem import LocalBackend

    root = tmp_path / "store"
    backend = LocalBackend(str(root))
    monkeypatch.setattr(backend.confinement, "TRUSTED_FOR", 3600.0)
    (root / "a").mkdir(parents=True)
    backend.write_file(str(root / "first"), b"0")
    deep = root / "a" / "b" / "c" / "link"
    real_mkdir = os.mkdir
    removed: list[str] = []

    def mkdir(path: str, *args: object) -> None:
        if path == str(root / "a" / "b") and not removed:
            os.rmdir(root / "a")  # gone between the look and the mkdir
            removed.append(path)
        real_mkdir(path, *args)  # type: ignore[arg-type]

    synced: list[str] = []
    monkeypatch.setattr(filesystem.os, "mkdir", mkdir)
    monkeypatch.setattr(backend.entries, "changed", synced.append)
    backend.write_file(str(deep), b"digest")
    assert removed and deep.read_bytes() == b"digest"
    levels = [root, root / "a", root / "a" / "b", root / "a" / "b" / "c"]
    assert synced == [str(level) for level in levels]


def test_a_small_file_below_a_file_is_an_error_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    from regstore.backends.filesystem import LocalBackend

    root = tmp_path / "store"
    backend = LocalBackend(str(root))
    backend.write_file(str(root / "file"), b"x")
    with pytest.raises(NotADirectoryError):
        backend.write_file(str(root / "file" / "below" / "link"), b"y")
    assert not list((root / "_regstore" / "tmp").iterdir())


def test_temporary_names_are_fresh_in_a_forked_child() -> None:
    from regstore.backends import fsspec_store

    names = fsspec_store._temp_names
    mine = {names.next() for _ in range(3)}
    assert len(mine) == 3 and all(len(n) == 32 and int(n, 16) >= 0 for n in mine)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, names.next().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    after = names.next()
    assert child[:16] != after[:16]  # another prefix: no name of the parent's again
    assert len({child, after, *mine}) == 5


def test_durable_makedirs_through_a_file_is_an_error(tmp_path: Path) -> None:
    from regstore.backends.filesystem import _makedirs_durable

    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        _makedirs_durable(str(tmp_path / "file" / "below"))


def test_the_local_primitives_are_plain_system_calls_that_never_follow_a_link(
    tmp_path: Path,
) -> None:
    """The file store's own system calls (they replaced fsspec's on the hot path): a missing
    path is no error, a directory goes only when asked, a link is removed itself and is never
    listed as a directory (a loop of links must not make a walk endless), the path of a file
    has no entries."""
    from regstore.backends.filesystem import LocalBackend

    root = tmp_path / "store"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"0123456789")
    (root / "d" / "loop").symlink_to(root / "d")
    (root / "d" / "alias").symlink_to(root / "d" / "e")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    (root / "link").symlink_to(outside)
    backend = LocalBackend(str(root))

    assert sorted(backend.list_dir(str(root / "d"))) == [
        ("alias", False),
        ("e", True),
        ("f", False),
        ("loop", False),
    ]
    assert sorted(backend.list_dir(str(root))) == [("d", True), ("link", False)]
    assert backend.list_dir(str(root / "missing")) == []
    assert backend.list_dir(str(root / "d" / "f")) == []  # not a directory
    assert backend.exists(str(root / "d" / "f")) and not backend.exists(str(root / "d" / "x"))
    with backend.open_blob_file(str(root / "d" / "f"), 4) as stream:
        assert stream.read() == b"456789"
    with pytest.raises(FileNotFoundError):
        backend.open_blob_file(str(root / "d" / "x"), 0)

    backend.remove(str(root / "d" / "missing"))  # nothing to do
    with pytest.raises(IsADirectoryError):
        backend.remove(str(root / "d"))
    assert (root / "d" / "f").exists()
    backend.remove(str(root / "link"), recursive=True)
    assert not (root / "link").is_symlink() and (outside / "keep").exists()
    backend.remove(str(root / "d" / "f"))
    assert not (root / "d" / "f").exists()
    backend.remove(str(root / "d"), recursive=True)
    assert not (root / "d").exists()
    assert backend._filesystem is None  # none of it needed an fsspec filesystem


def test_links_back_among_the_repositories_and_links_to_no_directory_are_not_walked(
    tmp_path: Path,
) -> None:
    """Two links back to the repositories directory made the listing exponential when a link
    counted as a directory; a link back up the walk leads nowhere new. They are passed over,
    as are links to a file, links into a loop of links, and links the walk would not go into
    anyway (``_uploads``, a name regstore takes for no repository), wherever they lead. Only
    gc, which keeps what a registry serves under names regstore refuses, stops at a link of
    such a name that leads out of the store: a repository behind it would lose its blobs."""
    store = open_store(str(tmp_path / "store"))
    image = oci_image(seed=62)
    write_image(store, "team/app", "1", image)
    repositories = tmp_path / "store" / "docker" / "registry" / "v2" / "repositories"
    (repositories / "x").symlink_to(repositories)
    (repositories / "y").symlink_to(repositories)
    (repositories / "team" / "loop").symlink_to(repositories / "team")
    (repositories / "team" / "app" / "up").symlink_to("..")
    (repositories / "file").write_text("not a repository")
    (repositories / "tofile").symlink_to(repositories / "file")
    (repositories / "ping").symlink_to(repositories / "pong")
    (repositories / "pong").symlink_to(repositories / "ping")
    (repositories / "team" / "app" / "_uploads").symlink_to(tmp_path)
    (repositories / "Not-A-Name").symlink_to(tmp_path)
    assert store.repositories() == ["team/app"]
    with pytest.raises(StoreEscapeError, match="Not-A-Name"):
        collect_garbage(store, grace=0, now=time.time() + 3600)
    (repositories / "Not-A-Name").unlink()
    assert collect_garbage(store, grace=0, now=time.time() + 3600).removed == []


def test_what_repositories_under_names_regstore_refuses_link_is_kept_by_gc(
    tmp_path: Path,
) -> None:
    """A registry writes repositories under names regstore refuses (``Team/app``: capitals in
    a first component): gc keeps what they link, their index's children and layer links
    included, wherever they are in the tree, and stops at damage there."""
    root = tmp_path / "store"
    store = open_store(str(root))
    ours, index, loose = oci_image(seed=63), oci_index([oci_image(seed=64)]), oci_image(seed=65)
    write_image(store, "team/app", "1", ours)
    write_image(store, "stage/a", "1", index)
    tagged = oci_image(seed=66)
    write_image(store, "stage/b", "1", tagged)
    for blob in loose.blobs:
        write_blob(store, blob)
    repositories = root / "docker/registry/v2/repositories"
    (repositories / "Team").mkdir()
    (repositories / "stage/a").rename(repositories / "Team/app")  # the index, tag and revisions
    (repositories / "team/Deep").mkdir()
    (repositories / "stage/b").rename(repositories / "team/Deep/b")
    (repositories / "team/Deep/b/_manifests/revisions").rename(tmp_path / "revisions")
    layer_links = repositories / "team/Deep/b/_layers/sha256"
    for blob in loose.blobs:  # a layer pushed, its manifest not yet
        (layer_links / blob.digest.split(":")[1]).mkdir()
    assert store.repositories() == ["team/app"]
    kept = {str(d) for d in store.outside_references()}
    for image in (index, *index.children, tagged):  # tagged: by its tag, its revision gone
        assert {str(image.digest), *(str(b.digest) for b in image.all_blobs())} <= kept
    assert {str(b.digest) for b in loose.blobs} <= kept
    assert not {str(b.digest) for b in ours.blobs} & kept
    assert collect_garbage(store, grace=0, now=time.time() + 3600).removed == []

    # bytes no manifest: what they keep is unknown, so gc deletes nothing
    data = root / "docker/registry/v2/blobs/sha256" / index.digest[7:9] / index.digest[7:] / "data"
    data.write_bytes(b"not json")
    with pytest.raises(StoreDamageError, match="which is no manifest"):
        collect_garbage(store, grace=0, now=time.time() + 3600)


def _moved_and_linked(root: Path, name: str, to: Path, *, relative: bool = False) -> Path:
    """Move the repository directory ``name`` of the store at ``root`` to ``to`` and leave a
    symbolic link to it in its place (as an operator short of space on one disk does)."""
    repository = root / "docker" / "registry" / "v2" / "repositories" / name
    to.parent.mkdir(parents=True, exist_ok=True)
    repository.rename(to)
    repository.symlink_to(os.path.relpath(to, repository.parent) if relative else to)
    return repository


@pytest.mark.parametrize(
    "how", ["absolute", "relative", "store-reached-through-links", "manifests-linked"]
)
def test_a_repository_linked_from_inside_the_store_is_listed_and_its_blobs_kept(
    tmp_path: Path, how: str
) -> None:
    """docker-registry lists and serves a repository whose directory is a link (it follows
    links); passed over by the listing, it was invisible to gc, which deleted every blob only
    it used (tests/test_cli.py checks what the registry serves). Links on the way to the
    repositories (the root, ``docker``) change nothing."""
    root = tmp_path / "store"
    store = open_store(str(root))
    write_image(store, "team/app", "1", oci_image(seed=63))
    linked = oci_image(seed=64)
    digest = write_image(store, "other/b", "1", linked)
    if how == "manifests-linked":  # the repository's _manifests alone moved and linked back
        _moved_and_linked(root, "other/b/_manifests", root / "moved" / "m", relative=True)
    else:
        _moved_and_linked(root, "other", root / "moved" / "other", relative=how == "relative")
    # an alias of a repository listed anyway: listed under both names, as the registry does
    (root / "docker/registry/v2/repositories/alias").symlink_to(
        root / "docker/registry/v2/repositories/team/app"
    )
    if how == "store-reached-through-links":
        (root / "docker").rename(root / "data")
        (root / "docker").symlink_to("data")
        root.rename(tmp_path / "real")
        root.symlink_to(tmp_path / "real")
    reopened = open_store(str(root))
    assert reopened.repositories() == ["alias", "other/b", "team/app"]
    assert reopened.tags("other/b") == ["1"]
    assert collect_garbage(reopened, grace=0, now=time.time() + 3600).removed == []
    assert reopened.manifest("other/b", "1").digest == digest
    for descriptor in linked.manifest.references:
        assert reopened.blob_size(str(descriptor.digest)) == descriptor.size


def _out_of_the_root(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    return _moved_and_linked(root, "other", tmp_path / "elsewhere" / "other"), tmp_path


def _moved_below_a_link(root: Path, away: Path, link: str) -> tuple[Path, Path]:
    """The repository ``other`` moved into ``away``, and a link ``link`` among the repositories
    to the directory that holds ``away``."""
    away.mkdir()
    (root / "docker/registry/v2/repositories/other").rename(away / "other")
    linked = root / "docker/registry/v2/repositories" / link
    linked.symlink_to(away.parent)
    return linked, away.parent


def _above_the_root(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    return _moved_below_a_link(root, tmp_path / "elsewhere", "up")


def _above_the_repositories(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    return _moved_below_a_link(root, root / "moved", "team/all")


def _inside_a_linked_directory(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    # "other" behind a link; inside it a link back up to where "x" now lives alone
    _moved_and_linked(root, "other", root / "moved" / "other")
    (root / "docker/registry/v2/repositories/x").rename(root / "moved" / "x")
    link = root / "moved" / "other" / "all"
    link.symlink_to(root / "moved")
    return root / "docker/registry/v2/repositories/other/all", root / "moved"


def _to_nothing(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    # moved to another disk and linked back; that disk is not mounted now
    link = _moved_and_linked(root, "other", root / "disk" / "other")
    (root / "disk").rename(root / "unmounted")
    return link, root / "disk" / "other"


@pytest.mark.parametrize(
    ("arrange", "error", "says"),
    [
        (_to_nothing, StoreError, "leads to nothing"),
        (_out_of_the_root, StoreEscapeError, "leads out of the store root"),
        (_above_the_root, StoreEscapeError, "leads out of the store root"),
        (_above_the_repositories, StoreError, "leads above it"),
        (_inside_a_linked_directory, StoreError, "one link deep"),
    ],
    ids=[
        "to-nothing",
        "out-of-the-root",
        "above-the-root",
        "above-the-repositories",
        "in-a-linked-directory",
    ],
)
def test_a_link_the_listing_cannot_follow_stops_it_and_gc_deletes_nothing(
    tmp_path: Path,
    arrange: Callable[[Path, Path], tuple[Path, Path]],
    error: type[StoreError],
    says: str,
) -> None:
    """The registry serves a repository behind each of these links; the store either cannot
    read through them (out of its root) or cannot walk them safely (above the repositories it
    would take in the whole store; links among linked directories could make a walk endless
    or exponential). What the repository refers to is then unknown: the listing says so,
    naming the link, and gc deletes nothing (it deleted the blobs only that repository used)."""
    root = tmp_path / "store"
    store = open_store(str(root))
    write_image(store, "team/app", "1", oci_image(seed=65))
    hidden = [oci_image(seed=66), oci_image(seed=67)]
    write_image(store, "other/b", "1", hidden[0])
    write_image(store, "x/c", "1", hidden[1])
    link, target = arrange(tmp_path, root)
    reopened = open_store(str(root))
    with pytest.raises(error, match=says) as listed:
        reopened.repositories()
    assert str(link) in str(listed.value) and str(target) in str(listed.value)
    with pytest.raises(error):
        collect_garbage(reopened, grace=0, now=time.time() + 3600)
    for image in hidden:
        for descriptor in image.manifest.references:
            assert reopened.blob_size(str(descriptor.digest)) == descriptor.size


def test_a_link_whose_target_cannot_be_looked_at_stops_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (os.path.isdir took it for no directory: the repository behind it vanished)
    root = tmp_path / "store"
    store = open_store(str(root))
    image = oci_image(seed=68)
    write_image(store, "other/b", "1", image)
    link = _moved_and_linked(root, "other", root / "moved" / "other")
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path) == str(link):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    reopened = open_store(str(root))
    with pytest.raises(StoreError, match="cannot tell where the symbolic link") as listed:
        reopened.repositories()
    assert str(link) in str(listed.value) and "Permission denied" in str(listed.value)
    with pytest.raises(StoreError, match="cannot tell where the symbolic link"):
        collect_garbage(reopened, grace=0, now=time.time() + 3600)
    monkeypatch.undo()
    assert all(reopened.blob_exists(str(d.digest)) for d in image.manifest.references)


def test_a_tag_directory_that_is_a_link_is_a_tag_and_keeps_its_manifest(tmp_path: Path) -> None:
    # passed over, it let the deletion of another tag of the same manifest take the manifest
    # (and gc its blobs), while the registry still listed and served the tag
    root = tmp_path / "store"
    store = open_store(str(root))
    image = oci_image(seed=69)
    digest = write_image(store, "team/app", "2", image)
    tags = root / "docker/registry/v2/repositories/team/app/_manifests/tags"
    (root / "moved").mkdir()
    (tags / "2").rename(root / "moved" / "1")
    (tags / "1").symlink_to(root / "moved" / "1")
    write_image(store, "team/app", "2", image)
    assert store.tags("team/app") == ["1", "2"]
    assert store.manifest("team/app", "1").digest == digest
    assert delete_image(store, "team/app", "2") == []  # tag 1 still names the manifest
    assert collect_garbage(store, grace=0, now=time.time() + 3600).removed == []
    assert store.manifest("team/app", "1").digest == digest


@pytest.mark.parametrize("layout", ["distribution", "oci"])
@pytest.mark.parametrize(
    "damage",
    [b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
     b'{"schemaVersion": 2, "mediaType": 7}', b"[]", b"\x00 not json",
     b'{"schemaVersion": 2, "mediaType": "Application/vnd.oci.image.manifest.v1+json"}'],
    ids=["no-config", "type-not-a-string", "not-an-object", "not-json", "type-in-capitals"],
)  # fmt: skip
def test_a_damaged_stored_manifest_is_reported_as_parsing_it_reports_it(
    tmp_path: Path, layout: str, damage: bytes
) -> None:
    # The layout only sniffs a stored manifest's type (the OCI layout when index.json names
    # none); the facade's parse finds the damage and says what a parse of the bytes says. Read
    # by tag, the bytes are first found not to be the ones the tag names.
    store = open_store(f"file://{tmp_path}/store?layout={layout}")
    image = oci_image(media_type_field=False)
    digest = write_image(store, "app", "v1", image)
    assert store.manifest("app", "v1").raw == image.manifest.raw
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    if layout == "oci":
        index_path = tmp_path / "store" / "index.json"
        index = json.loads(index_path.read_bytes())
        for entry in index["manifests"]:
            del entry["mediaType"]
        index_path.write_text(json.dumps(index))
    Path(backend.layout.blob_path(digest)).write_bytes(damage)
    with pytest.raises(ManifestInvalidError) as parsed:
        Manifest.parse(damage)
    with pytest.raises(ManifestInvalidError) as read:
        store.manifest("app", str(digest))
    assert str(read.value) == str(parsed.value)
    with pytest.raises(ManifestInvalidError, match="app:v1 is damaged: its bytes hash to"):
        store.manifest("app", "v1")
    store.close()


def test_a_partial_marker_that_cannot_be_examined_is_an_error_not_a_whole_index(
    tmp_path: Path,
) -> None:
    """Whether an index is partial is read from its marker file; a marker that cannot be
    looked at (here a loop of links) must not pass for a missing one, which would make a
    partial index look whole and its children never be fetched."""
    store = open_store(str(tmp_path / "store"))
    half = oci_index([oci_image(seed=21), oci_image(seed=22)])
    digest = write_image(store, "app", "1", half, partial=True)
    assert store.is_partial("app", digest) is True
    (marker,) = (tmp_path / "store").rglob("regstore-partial")
    marker.unlink()
    marker.symlink_to(marker)
    with pytest.raises(StoreError):
        store.is_partial("app", digest)
    marker.unlink()
    assert store.is_partial("app", digest) is False


def test_gc_refuses_a_store_whose_revision_links_it_cannot_read_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    """A revision link gc cannot look at (a loop of links) must not pass for an absent
    revision: the blobs only that manifest references would look unreferenced and go."""
    store = open_store(str(tmp_path / "store"))
    image = oci_image(seed=31)
    digest = write_image(store, "app", "1", image)
    (link,) = (
        p for p in (tmp_path / "store").rglob("link") if f"revisions/sha256/{digest[7:]}" in str(p)
    )
    link.unlink()
    link.symlink_to(link)
    before = sorted(b.digest for b in store.blobs())
    with pytest.raises(StoreError):
        collect_garbage(store, grace=0, now=time.time() + 3600)
    assert sorted(b.digest for b in store.blobs()) == before
    assert set(before) >= {str(b.digest) for b in image.blobs}


def test_gc_keeps_the_blobs_of_a_manifest_whose_revision_directory_is_a_link(
    tmp_path: Path,
) -> None:
    """A revision directory that is a link to another place in the store is still a revision:
    listed as one, and gc keeps what its manifest references (an untagged manifest's blobs
    were collected when the link was skipped as no directory)."""
    store = open_store(str(tmp_path / "store"))
    image = oci_image(seed=33)
    digest = write_image(store, "app", "1", image)
    store.delete_tag("app", "1")  # untagged: only its revision keeps it
    (revision,) = (
        p for p in (tmp_path / "store").rglob(digest[7:]) if "revisions/sha256" in str(p)
    )
    moved = tmp_path / "store" / "kept-elsewhere"
    revision.rename(moved)
    revision.symlink_to(moved)
    assert store.manifests("app") == [digest]
    assert "app" in store.repositories()
    before = sorted(b.digest for b in store.blobs())
    assert set(before) >= {str(b.digest) for b in image.blobs}
    collect_garbage(store, grace=0, now=time.time() + 3600)
    assert sorted(b.digest for b in store.blobs()) == before
    assert store.manifest("app", digest).raw == image.manifest.raw


def test_a_revision_link_out_of_the_store_fails_gc_and_deletes_nothing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    image = oci_image(seed=34)
    digest = write_image(store, "app", "1", image)
    store.delete_tag("app", "1")
    (revision,) = (
        p for p in (tmp_path / "store").rglob(digest[7:]) if "revisions/sha256" in str(p)
    )
    outside = tmp_path / "outside"
    revision.rename(outside)
    revision.symlink_to(outside)
    store.close()  # a store opened now: its directories are not taken on trust yet
    store = open_store(str(tmp_path / "store"))
    before = sorted(b.digest for b in store.blobs())
    with pytest.raises(StoreError):
        collect_garbage(store, grace=0, now=time.time() + 3600)
    assert sorted(b.digest for b in store.blobs()) == before


def test_the_working_area_is_walked_as_fsspec_walks_it(tmp_path: Path) -> None:
    # the file store walks its working area with os.scandir (a sync looks at the quarantine
    # without importing fsspec): its answer is fsspec's, links and unreadable places included
    import fsspec

    from regstore.backends.filesystem import LocalBackend

    root = tmp_path / "store"
    base = root / "_regstore" / "quarantine"
    (base / "sha256").mkdir(parents=True)
    (base / "sha256" / ("a" * 64)).write_bytes(b"12345")
    (base / "deep" / "er").mkdir(parents=True)
    (base / "deep" / "er" / "f").write_bytes(b"x")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    (base / "sha256" / ("b" * 64)).symlink_to(outside)
    (base / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    locked = base / "locked"
    locked.mkdir()
    (locked / "g").write_bytes(b"y")
    backend = LocalBackend(str(root))
    fs = fsspec.filesystem("file")
    try:
        locked.chmod(0)
        ours = backend.walk_files(str(base))
        found = fs.find(str(base), detail=True)
    finally:
        locked.chmod(0o755)
    theirs = sorted(
        (str(p)[len(str(base)) + 1 :], int(i["size"]), float(i["mtime"]))
        for p, i in found.items()
        if i["type"] == "file"  # (fsspec calls a symbolic link "other")
    )
    assert [(n, s) for n, s, _ in ours] == [(n, s) for n, s, _ in theirs]
    # (root reads the directory it may not read)
    readable = ["locked/g"] if os.geteuid() == 0 else []
    assert [n for n, _, _ in ours] == ["deep/er/f", *readable, f"sha256/{'a' * 64}"]
    assert backend.walk_files(str(root / "nothing-here")) == []
