"""Reading a store blob verifies it (issue 17, item 7).

A reader opened at 0 hashes what it hands over and, at the end, raises DigestMismatchError
naming the store and the blob instead of returning a damaged blob's last bytes. A push from
the store therefore fails with that error (not the registry's 400 DIGEST_INVALID), the upload
is cancelled, and nothing lands or is tagged at the registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from regstore import ObjectStore, open_store
from regstore.client import Client
from regstore.engine import push
from regstore.errors import DigestMismatchError
from regstore.testing.builders import write_blob
from tests.cli_support import blob_path, flip_byte, put_image
from tests.support.images import build_image
from tests.support.registry import RegistryServer

DATA = bytes(range(256)) * 400  # 102400 bytes


def _damaged(tmp_path: Path) -> tuple[ObjectStore, str]:
    root = tmp_path / "store"
    store = open_store(str(root))
    digest = write_blob(store, DATA)
    flip_byte(blob_path(root, digest), offset=50_000)
    return store, str(digest)


def test_an_intact_blob_reads_the_same_in_every_way(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "s")) as store:
        digest = write_blob(store, DATA)
        with store.layer(digest).reader() as reader:
            assert reader.verifying
            assert reader.read() == DATA
            assert not reader.verifying  # checked at the end
            assert reader.read() == b""
        with store.layer(digest).reader() as reader:
            assert b"".join(reader.chunks(1000)) == DATA
        with store.layer(digest).reader() as reader:
            buffer, got = bytearray(4096), bytearray()
            while count := reader.readinto(buffer):
                got += buffer[:count]
            assert bytes(got) == DATA
        empty = write_blob(store, b"")
        with store.layer(empty).reader() as reader:
            assert reader.read() == b""


def test_reading_a_damaged_blob_to_the_end_raises(tmp_path: Path) -> None:
    store, digest = _damaged(tmp_path)
    with store:
        with store.layer(digest).reader() as reader, pytest.raises(DigestMismatchError) as caught:
            reader.read()
        message = str(caught.value)
        assert digest in message and str(tmp_path / "store") in message
        assert caught.value.expected == digest and caught.value.actual != digest
        # chunk by chunk: the read that would hand over the last bytes raises
        with store.layer(digest).reader() as reader:
            got = 0
            with pytest.raises(DigestMismatchError):
                for chunk in reader.chunks(4096):
                    got += len(chunk)
            assert got < len(DATA)
            with pytest.raises(DigestMismatchError):  # and keeps saying so
                reader.read(10)
        with store.layer(digest).reader() as reader:
            buffer = bytearray(8192)
            with pytest.raises(DigestMismatchError):
                while reader.readinto(buffer):
                    pass


def test_what_cannot_or_need_not_be_checked_reads_plainly(tmp_path: Path) -> None:
    store, digest = _damaged(tmp_path)
    with store:
        with store.layer(digest).reader(100) as reader:  # a ranged read cannot check the whole
            assert not reader.verifying
            assert len(reader.read()) == len(DATA) - 100
        with store.layer(digest).reader(verify=False) as reader:  # the caller hashes
            data = reader.read()
            assert len(data) == len(DATA) and data != DATA


@pytest.mark.parametrize("threshold", [1 << 30, 0], ids=["monolithic", "chunked"])
def test_pushing_a_damaged_store_blob_fails_naming_it(
    tmp_path: Path, registry: RegistryServer, threshold: int
) -> None:
    root = tmp_path / "store"
    image = build_image(seed=17, layers=2, layer_size=20_000)
    damaged = image.layer_digests[1]
    with open_store(str(root)) as store:
        put_image(store, "team/app", "1", image)
        flip_byte(blob_path(root, damaged), offset=19_000)
        with pytest.raises(DigestMismatchError) as caught:
            push(
                Client(registry.host, use_docker_config=False),
                store,
                "team/app",
                "1",
                chunk_size=8192,
                monolithic_threshold=threshold,
                concurrency=1,
            )
    assert damaged in str(caught.value) and str(root) in str(caught.value)
    # nothing landed: not the damaged blob, no manifest, no tag
    head = requests.head(f"{registry.url}/v2/team/app/blobs/{damaged}", timeout=10)
    assert head.status_code == 404
    tags = requests.get(f"{registry.url}/v2/team/app/tags/list", timeout=10)
    assert tags.status_code == 404 or not tags.json().get("tags")
    manifest = requests.head(f"{registry.url}/v2/team/app/manifests/1", timeout=10)
    assert manifest.status_code == 404
