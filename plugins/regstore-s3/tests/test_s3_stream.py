"""Reading a blob from S3 is one streamed GET, resumed (same version) when its body is cut.

Against moto's server, through the fault proxy that counts and cuts the requests.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from regstore import open_store
from regstore.errors import BlobNotFoundError, StoreError
from regstore.reference import Digest
from tests.support.proxy import FaultProxy

from regstore_s3 import stream as stream_module

MiB = 1024 * 1024
CREDENTIALS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


@dataclass
class _Stored:
    proxy: FaultProxy
    store: Any
    data: bytes
    digest: str


@pytest.fixture
def stored(
    s3_bucket: Any, fault_proxy_factory: Callable[..., FaultProxy]
) -> Iterator[Callable[[int], _Stored]]:
    """Stores a blob of the given size in a fresh prefix reached through the fault proxy (its
    records cleared afterwards); the stores are closed at the end of the test."""
    proxy = fault_proxy_factory(s3_bucket.endpoint_url, preserve_host=True)
    stores: list[Any] = []

    def store_blob(size: int) -> _Stored:
        url = f"s3://{s3_bucket.bucket}/{uuid.uuid4().hex[:8]}"
        store = open_store(url, endpoint_url=proxy.url, retries=0, **CREDENTIALS)
        stores.append(store)
        data = os.urandom(size)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with store.layer(digest).writer() as writer:
            writer.write(data)
            writer.commit(len(data))
        proxy.clear_records()
        return _Stored(proxy, store, data, digest)

    yield store_blob
    for store in stores:
        store.close()


def _blob_gets(proxy: FaultProxy, digest: str) -> int:
    return proxy.count("GET", rf"/blobs/sha256/{digest[7:9]}/{digest[7:]}/data$")


def test_a_blob_is_read_with_one_get_however_small_the_reads(
    stored: Callable[[int], _Stored],
) -> None:
    blob = stored(12 * MiB + 5)
    store, data, digest = blob.store, blob.data, blob.digest
    with store.layer(digest).reader() as reader:
        got = b"".join(iter(lambda: reader.read(256 * 1024), b""))
    assert got == data
    assert _blob_gets(blob.proxy, digest) == 1  # s3fs's 4 MiB blocks made 4 here
    with store.layer(digest).reader(5 * MiB + 1) as reader:
        assert reader.read() == data[5 * MiB + 1 :]
    with store.layer(digest).reader(len(data)) as reader:
        assert reader.read() == b""  # from the very end: nothing, and no error


def test_a_cut_body_is_resumed_from_where_it_stopped(stored: Callable[[int], _Stored]) -> None:
    blob = stored(9 * MiB)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest
    cut = proxy.cut_response(rf"/{digest[7:]}/data$", after_bytes=3 * MiB + 11, times=2)
    with store.layer(digest).reader() as reader:  # a verifying reader: the digest is checked
        got = b"".join(iter(lambda: reader.read(MiB), b""))
    assert got == data
    assert cut.hits == 2
    resumed = proxy.requests_matching("GET", rf"/{digest[7:]}/data$")
    assert len(resumed) == 3
    ranges = [r.headers.get("Range") for r in resumed]
    assert ranges[0] is None and ranges[1] is not None and ranges[2] is not None
    assert all(r.headers.get("If-Match") for r in resumed[1:])  # the same version only


def test_a_body_cut_more_often_than_the_resumes_is_a_store_error(
    stored: Callable[[int], _Stored],
) -> None:
    blob = stored(6 * MiB)
    proxy, store, digest = blob.proxy, blob.store, blob.digest
    proxy.cut_response(rf"/{digest[7:]}/data$", after_bytes=MiB, times=None)
    with pytest.raises(StoreError), store.layer(digest).reader() as reader:
        while reader.read(MiB):
            pass
    assert _blob_gets(proxy, digest) == 1 + stream_module.MAX_RESUMES


def test_a_missing_blob_is_blob_not_found(stored: Callable[[int], _Stored]) -> None:
    blob = stored(1)
    with pytest.raises(BlobNotFoundError):
        blob.store.layer("sha256:" + "ab" * 32).reader()


def test_a_stream_closed_under_a_read_sends_no_other_get(
    s3_bucket: Any, stored: Callable[[int], _Stored]
) -> None:
    blob = stored(6 * MiB)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest
    key = store.backend.key_of(store.backend.final_blob_path(Digest(digest)))  # type: ignore[attr-defined]
    stream = stream_module.ObjectStream(store.backend.raw_fs, s3_bucket.bucket, key)  # type: ignore[attr-defined]
    assert stream.read(MiB) == data[:MiB]
    stream.close()
    # what a reader thread sees when the stream is closed under its read: the failed read
    # goes to _resume, which must not open another GET that nobody would ever close
    with pytest.raises(StoreError, match="closed"):
        stream._resume(ConnectionError("the body was closed"))
    assert _blob_gets(proxy, digest) == 1


def test_readinto_fills_the_caller_s_buffer_itself_and_resumes_a_cut_body(
    stored: Callable[[int], _Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = stored(9 * MiB + 7)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest

    def joined(self: Any, wanted: int) -> bytes:
        raise AssertionError("readinto went through the joined copy")

    monkeypatch.setattr(stream_module.ObjectStream, "_fill", joined)
    cut = proxy.cut_response(rf"/{digest[7:]}/data$", after_bytes=3 * MiB + 11, times=2)
    buffer = bytearray(2 * MiB)
    got = bytearray()
    with store.layer(digest).reader() as reader:  # a verifying reader: the digest is checked
        while n := reader.readinto(buffer):
            got += buffer[:n]
    assert got == data
    assert cut.hits == 2 and _blob_gets(proxy, digest) == 3
