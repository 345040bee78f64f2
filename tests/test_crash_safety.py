"""Crash safety of the local filesystem backend: killed writers, stale locks, torn updates.

A writer process is killed with SIGKILL (no cleanup of any kind runs): no half blob may ever
be visible, the kernel must have dropped its flock (no stale lock), and the bytes it staged
must let the next writer resume and commit the right digest. Cross-process exclusion and
lost-update checks for every layout live in the conformance suite
(``CrossProcessConformance``, run by tests/test_backends_filesystem.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from regstore import open_store
from regstore.errors import BlobNotFoundError
from regstore.storetypes import BlobState
from regstore.testing import ChildProcess, hold_writer, stream_writer
from regstore.testing.builders import Blob, oci_image, random_bytes, write_image

LAYOUTS = ["distribution", "oci"]

TAGGER = r"""
import sys
from regstore import open_store
from regstore.manifest import Manifest
url, path = sys.argv[1:3]
store = open_store(url)
manifest = Manifest.parse(open(path, "rb").read())
print("tagging", flush=True)
i = 0
while True:
    store.write_manifest("crash/repo", f"t{i}", manifest)
    i += 1
"""


def _url(root: Path, layout: str) -> str:
    return f"file://{root}?layout={layout}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_killed_writer_leaves_no_blob_and_no_stale_lock(tmp_path: Path, layout: str) -> None:
    blob = Blob(random_bytes(64 * 1024, 1))
    url = _url(tmp_path / "store", layout)
    child = hold_writer(url, blob.digest, blob.data)  # half written
    try:
        store = open_store(url)
        assert store.blob_status(blob.digest).state is BlobState.WRITING
    finally:
        child.kill()  # SIGKILL: no close, no release
    status = store.blob_status(blob.digest)
    assert status.state is BlobState.PARTIAL  # not WRITING: the lock died with the process
    assert status.current_size == blob.size // 2
    with pytest.raises(BlobNotFoundError):
        store.layer(blob.digest).reader()
    assert blob.digest not in [b.digest for b in store.blobs()]
    writer = store.layer(blob.digest).writer()  # no LayerLockedError: no stale lock
    assert writer.current_size == blob.size // 2
    writer.set_size(blob.size)
    writer.write(blob.data[blob.size // 2 :])
    assert writer.commit() == blob.digest
    with store.layer(blob.digest).reader() as reader:
        assert reader.read() == blob.data


@pytest.mark.parametrize("layout", LAYOUTS)
def test_writer_killed_mid_stream_resumes_from_what_it_staged(tmp_path: Path, layout: str) -> None:
    blob = Blob(random_bytes(4 * 1024 * 1024, 2))
    url = _url(tmp_path / "store", layout)
    child = stream_writer(url, blob.digest, blob.data)
    store = open_store(url)
    try:
        deadline = time.monotonic() + 30
        while store.blob_status(blob.digest).current_size < 64 * 1024:  # killed mid-stream
            assert time.monotonic() < deadline, "the writer never staged anything"
            time.sleep(0.01)
    finally:
        child.kill()
    status = store.blob_status(blob.digest)
    assert status.state is BlobState.PARTIAL
    assert 0 < status.current_size < blob.size
    writer = store.layer(blob.digest).writer()
    resumed = writer.current_size
    assert resumed == status.current_size
    writer.set_size(blob.size)
    writer.write(blob.data[resumed:])
    writer.commit()
    assert store.blob_size(blob.digest) == blob.size


def test_killed_oci_tagger_leaves_a_valid_index_and_no_stale_mutex(tmp_path: Path) -> None:
    url = _url(tmp_path / "store", "oci")
    store = open_store(url)
    image = oci_image(seed=3)
    write_image(store, "crash/repo", "first", image)
    (tmp_path / "manifest.json").write_bytes(image.raw)
    child = ChildProcess(TAGGER, url, str(tmp_path / "manifest.json"))
    try:
        child.expect("tagging")
        deadline = time.monotonic() + 30
        while len(store.tags("crash/repo")) < 10:
            assert time.monotonic() < deadline, "the tagger made no progress"
            time.sleep(0.01)
    finally:
        child.kill()
    index = json.loads((tmp_path / "store" / "index.json").read_bytes())  # whole, valid JSON
    refs = [d["annotations"].get("org.opencontainers.image.ref.name") for d in index["manifests"]]
    named = [r for r in refs if r]
    assert len(named) == len(set(named))  # one descriptor per ref name
    tags = store.tags("crash/repo")
    assert "first" in tags and len(tags) >= 10
    store.write_manifest("crash/repo", "after", image.manifest)  # the mutex is free again
    assert "after" in store.tags("crash/repo")


def test_no_temporary_files_are_left_by_normal_operation(tmp_path: Path) -> None:
    for layout in LAYOUTS:
        root = tmp_path / layout
        store = open_store(_url(root, layout))
        write_image(store, "app", "v1", oci_image(seed=4))
        store.delete_tag("app", "v1")
        leftovers = [
            p for p in (root / "_regstore").rglob("*") if p.is_file()
        ]  # only the OCI index mutex file may remain
        assert [p.name for p in leftovers] in ([], ["oci-index.lock"]), leftovers
        assert not os.listdir(root / "_regstore" / "uploads" / "sha256")
