"""Faults injected by a proxy in front of a real registry: the resume paths the engine uses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from regstore.client import Client
from regstore.digest import digest_bytes
from regstore.errors import TransportError, UnexpectedHTTPStatusError
from regstore.testing.builders import build_image, random_blob
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.test_client_registry import push_built, upload


def _client(proxy: FaultProxy, sleeps: list[float] | None = None) -> Client:
    record = sleeps if sleeps is not None else []
    return Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=record.append)


def test_cut_blob_body_resumes_with_range(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    data = random_blob(3_000_000, seed=80)
    digest = upload(Client(registry.host, use_docker_config=False), "f/app", data)
    proxy = fault_proxy_factory(registry)
    proxy.cut_response(r"/blobs/sha256:", after_bytes=1_200_000)
    client = _client(proxy)
    got = bytearray()
    with client.get_blob("f/app", digest) as stream, pytest.raises(TransportError) as info:
        for chunk in stream.iter_chunks():
            got += chunk
    assert "fetching blob" in str(info.value)
    assert 0 < len(got) <= 1_200_000
    cut = len(got)
    with client.get_blob("f/app", digest, byte_offset=cut) as rest:
        assert rest.offset == cut and rest.size == len(data)
        got += rest.read()
    assert bytes(got) == data
    ranges = [r.headers.get("Range") for r in proxy.requests_matching("GET", r"/blobs/sha256:")]
    assert ranges == [None, f"bytes={cut}-"]


def test_cut_patch_then_status_and_resume(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    data = random_blob(2_000_000, seed=81)
    digest = digest_bytes(data)
    proxy = fault_proxy_factory(registry)
    client = _client(proxy)
    session = client.initiate_blob_upload("f/up")
    assert session.location is not None
    location = client.upload_blob_chunk(session.location, data[:1_000_000], 1_000_000, 0)
    proxy.cut_request(r"/blobs/uploads/", after_bytes=300_000, method="PATCH")
    with pytest.raises(TransportError, match="uploading bytes 1000000-1999999"):
        client.upload_blob_chunk(location, data[1_000_000:], 1_000_000, 1_000_000)
    assert proxy.count("PATCH") == 2  # not replayed blindly
    status = client.get_blob_upload_status(location)
    assert status.offset == 1_000_000  # the cut chunk never reached the registry
    rest = data[status.offset :]
    location = client.upload_blob_chunk(status.location, rest, len(rest), status.offset)
    assert client.finish_chunked_blob_upload(location, len(data), digest) == digest
    assert client.fetch_blob("f/up", digest) == data


def test_injected_503_and_429_on_reads_are_retried(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    built = build_image(media="oci", seed=82)
    push_built(Client(registry.host, use_docker_config=False), "f/img", "v1", built)
    proxy = fault_proxy_factory(registry)
    proxy.override_status("GET", r"/manifests/v1$", 503, times=2)
    proxy.rate_limit("HEAD", r"/manifests/v1$", times=1, retry_after=1)
    sleeps: list[float] = []
    client = _client(proxy, sleeps)
    assert client.get_image_manifest("f/img", "v1").raw == built.manifest_bytes
    info = client.head_manifest("f/img", "v1")
    assert info is not None and info.digest == built.manifest_digest
    assert proxy.count("GET", r"/manifests/v1$") == 3 and proxy.count("HEAD") == 2
    assert sleeps[-1] == 1.0 and len(sleeps) == 3
    proxy.override_status("POST", r"/blobs/uploads/", 503, times=1)
    assert client.initiate_blob_upload("f/img").location  # an empty POST is safe to repeat
    assert proxy.count("POST") == 2
    proxy.override_status("PATCH", r"/blobs/uploads/", 503, times=1)
    session = client.initiate_blob_upload("f/img")
    assert session.location is not None
    with pytest.raises(UnexpectedHTTPStatusError):
        client.upload_blob_chunk(session.location, b"abc", 3, 0)  # a chunk is never re-sent
    assert proxy.count("PATCH") == 1
