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


def _read_into_buffer(store: Any, digest: str, size: int) -> bytes:
    """The blob read by readinto into one buffer of ``size`` (a verifying reader: the digest
    is checked)."""
    buffer, got = bytearray(size), bytearray()
    with store.layer(digest).reader() as reader:
        while n := reader.readinto(buffer):
            got += buffer[:n]
    return bytes(got)


def test_readinto_fills_the_caller_s_buffer_itself_and_resumes_a_cut_body(
    stored: Callable[[int], _Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = stored(9 * MiB + 7)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest

    def joined(self: Any, wanted: int) -> bytes:
        raise AssertionError("readinto went through the joined copy")

    monkeypatch.setattr(stream_module.ObjectStream, "_fill", joined)
    cut = proxy.cut_response(rf"/{digest[7:]}/data$", after_bytes=3 * MiB + 11, times=2)
    assert _read_into_buffer(store, digest, 2 * MiB) == data
    assert cut.hits == 2 and _blob_gets(proxy, digest) == 3


def _no_aiobotocore_body(monkeypatch: pytest.MonkeyPatch) -> None:
    def drained(self: Any, wanted: int, take: Any) -> int:
        raise AssertionError("the body was read through aiobotocore, not the presigned GET")

    monkeypatch.setattr(stream_module.ObjectStream, "_drain", drained)


def test_a_blob_is_read_by_a_presigned_get_straight_into_the_buffer(
    stored: Callable[[int], _Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GET is signed in its query string and its body read by http.client, not by
    aiohttp (a quarter of the CPU); a cut body is still resumed, same version."""
    blob = stored(7 * MiB + 3)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest
    _no_aiobotocore_body(monkeypatch)
    # (cut inside the second fill of the buffer: the stream starts over from the first's end)
    cut = proxy.cut_response(rf"/{digest[7:]}/data$", after_bytes=4 * MiB + 5, times=1)
    got = _read_into_buffer(store, digest, 3 * MiB)
    with store.layer(digest).reader(MiB + 1) as reader:
        assert reader.read(10) == data[MiB + 1 : MiB + 11]
    assert got == data and cut.hits == 1
    gets = proxy.requests_matching("GET", rf"/{digest[7:]}/data$")
    assert len(gets) == 3
    assert all("X-Amz-Signature=" in r.query for r in gets), [r.query for r in gets]
    assert gets[1].headers.get("Range") == f"bytes={3 * MiB}-"
    assert gets[1].headers.get("If-Match")
    assert gets[2].headers.get("Range") == f"bytes={MiB + 1}-"


def test_a_presigned_get_refused_is_asked_again_the_usual_way(
    stored: Callable[[int], _Stored],
) -> None:
    """Any answer but the body (here a 503) sends the GET through aiobotocore, whose retries
    and error names apply; the bytes are the same."""
    blob = stored(3 * MiB)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest
    proxy.override_status("GET", rf"/{digest[7:]}/data$", 503, times=1)
    with store.layer(digest).reader() as reader:
        assert reader.read() == data
    gets = proxy.requests_matching("GET", rf"/{digest[7:]}/data$")
    assert [r.status for r in gets] == [503, 200]
    assert "X-Amz-Signature=" in gets[0].query and "X-Amz-Signature=" not in gets[1].query


def test_a_proxy_in_the_environment_keeps_the_usual_get(
    stored: Callable[[int], _Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment's proxy settings are honoured by the aiobotocore path: the presigned
    GET steps aside rather than reimplement them."""
    from regstore_s3 import presigned

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert presigned._proxied("http://127.0.0.1:1234/bucket/key?X-Amz-Signature=x")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not presigned._proxied("http://127.0.0.1:1234/bucket/key?X-Amz-Signature=x")

    blob = stored(2 * MiB)
    monkeypatch.setattr(presigned, "_proxied", lambda url: True)
    with blob.store.layer(blob.digest).reader() as reader:
        assert reader.read() == blob.data
    gets = blob.proxy.requests_matching("GET", rf"/{blob.digest[7:]}/data$")
    assert len(gets) == 1 and "X-Amz-Signature=" not in gets[0].query


def test_a_body_from_elsewhere_than_the_offset_asked_is_never_read(
    stored: Callable[[int], _Stored],
) -> None:
    """A ranged presigned GET answered 200 (the whole object, as a server ignoring Range
    would) must not be taken for the bytes from the offset."""
    blob = stored(2 * MiB)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest
    proxy.override_status("GET", rf"/{digest[7:]}/data$", 200, times=1, body=data, forward=False)
    with store.layer(digest).reader(MiB) as reader:
        assert reader.read() == data[MiB:]
    gets = proxy.requests_matching("GET", rf"/{digest[7:]}/data$")
    assert len(gets) == 2 and "X-Amz-Signature=" not in gets[1].query


def test_a_partial_body_from_another_offset_is_never_read(
    stored: Callable[[int], _Stored],
) -> None:
    """A 206 whose Content-Range starts elsewhere than asked is not the bytes from the offset."""
    blob = stored(2 * MiB)
    proxy, store, data, digest = blob.proxy, blob.store, blob.data, blob.digest
    proxy.override_status(
        "GET",
        rf"/{digest[7:]}/data$",
        206,
        times=1,
        headers={"Content-Range": f"bytes 0-{MiB - 1}/{2 * MiB}"},
        body=data[:MiB],
    )
    with store.layer(digest).reader(MiB) as reader:
        assert reader.read() == data[MiB:]
    gets = proxy.requests_matching("GET", rf"/{digest[7:]}/data$")
    assert len(gets) == 2 and "X-Amz-Signature=" not in gets[1].query


def test_a_presigned_get_that_cannot_connect_falls_back(
    stored: Callable[[int], _Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from regstore_s3 import presigned

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    blob = stored(MiB)
    monkeypatch.setattr(
        presigned, "_presign", lambda fs, bucket, key: f"http://127.0.0.1:{dead}/{bucket}/{key}"
    )
    with blob.store.layer(blob.digest).reader() as reader:
        assert reader.read() == blob.data
    assert _blob_gets(blob.proxy, blob.digest) == 1  # the usual GET, through the proxy


def test_the_presigned_get_keeps_the_client_s_timeouts_and_trust(
    s3_bucket: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """s3fs's own timeouts (5 s to connect, 15 s per read, or the store's read_timeout), and
    the CA bundle botocore would use: the verify option, else AWS_CA_BUNDLE."""
    from regstore_s3 import presigned

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    options = {"endpoint_url": s3_bucket.endpoint_url, **CREDENTIALS}
    for extra, connect, read, ca in [
        ({}, 5, 15, str(bundle)),
        ({"read_timeout": 42}, 5, 42, str(bundle)),
        ({"verify": "false"}, 5, 15, None),
    ]:
        store = open_store(f"s3://{s3_bucket.bucket}/{uuid.uuid4().hex[:8]}", **options, **extra)
        try:
            fs = store.backend.raw_fs  # type: ignore[attr-defined]
            fs.__dict__.pop("_regstore_direct_pool", None)
            from fsspec.asyn import sync

            sync(fs.loop, fs.set_session)
            pool = presigned._pool(fs)
            assert pool.connection_pool_kw["timeout"].connect_timeout == connect
            assert pool.connection_pool_kw["timeout"].read_timeout == read
            assert pool.connection_pool_kw.get("ca_certs") == ca
            assert pool.connection_pool_kw["cert_reqs"] == (
                "CERT_NONE" if ca is None else "CERT_REQUIRED"
            )
        finally:
            store.close()


def test_aws_s_global_endpoint_outside_us_east_1_keeps_the_usual_get() -> None:
    from regstore_s3 import presigned

    class _Fs:
        endpoint_url = None
        client_kwargs: dict[str, Any] = {}

    url = "https://bucket.s3.amazonaws.com/key"
    assert presigned._global_endpoint(url, "eu-central-1", _Fs())
    assert not presigned._global_endpoint(url, "us-east-1", _Fs())
    assert not presigned._global_endpoint(
        "https://bucket.s3.eu-central-1.amazonaws.com/key", "eu-central-1", _Fs()
    )
    own = _Fs()
    own.endpoint_url = "https://minio.example"  # type: ignore[assignment]
    assert not presigned._global_endpoint(url, "eu-central-1", own)
