"""A pull through a flaky proxy: 503 and 429 answers to a blob GET and bodies cut short are
recovered from under the client's one retry policy, within a budget per blob (shared by the
blob's GETs and the resumes of its body) whose exhaustion is one clear error naming the blob.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.client import Client
from regstore.engine import pull
from regstore.errors import NotFoundError, RetriesExhaustedError
from regstore.testing.builders import BuiltImage, build_image
from tests.support.engine import seed_registry
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer

MiB = 1 << 20
ProxyFactory = Callable[..., FaultProxy]


def _client(proxy: FaultProxy, sleeps: list[float], **options: Any) -> Client:
    return Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=sleeps.append, **options)


def _seeded(registry: RegistryServer, seed: int) -> tuple[BuiltImage, str]:
    built = build_image(layers=1, layer_size=2 * MiB, seed=seed, media="oci")
    seed_registry(registry.url, "src/app", "1", built)
    return built, built.layer_digests[0]


def _read(store: Any, digest: str) -> bytes:
    reader = store.layer(digest).reader()
    try:
        chunks = []
        while chunk := reader.read(MiB):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        reader.close()


def test_a_blob_get_answered_503_and_429_in_a_row_completes_byte_identical(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory: ProxyFactory
) -> None:
    built, layer = _seeded(registry, 400)
    proxy = fault_proxy_factory(registry)
    blob = f"/blobs/{layer}"
    proxy.override_status("GET", blob, 503, times=2, headers={"Retry-After": "1"})
    proxy.rate_limit("GET", blob, times=2, retry_after=1)
    store = open_store(str(tmp_path / "store"))

    sleeps: list[float] = []
    # four failures in a row fit a budget of four retries; Retry-After is honoured, capped
    pull(_client(proxy, sleeps, retries=4, max_retry_after=0.25), store, "src/app", "1")

    assert [r.status for r in proxy.requests_matching("GET", blob)] == [503, 503, 429, 429, 200]
    assert sleeps == [0.25] * 4
    for digest, data in built.blobs.items():
        assert _read(store, digest) == data
    assert store.manifest("src/app", "1").raw == built.manifest_bytes


def test_a_blob_get_that_keeps_failing_ends_in_one_error_naming_the_blob(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory: ProxyFactory
) -> None:
    built, layer = _seeded(registry, 401)
    proxy = fault_proxy_factory(registry)
    blob = f"/blobs/{layer}"
    proxy.override_status("GET", blob, 503, times=None)
    store = open_store(str(tmp_path / "store"))

    sleeps: list[float] = []
    with pytest.raises(RetriesExhaustedError) as info:
        pull(_client(proxy, sleeps, retries=3), store, "src/app", "1")

    err = info.value
    text = str(err)
    size = len(built.blobs[layer])
    assert f"pulling blob {layer} ({size} bytes) from src/app on {proxy.host}" in text
    assert "GET http://" in text and blob in text  # the last request
    assert "-> 503" in text  # and its answer
    assert err.http is not None and err.http.status == 503
    assert err.retries == 3 and len(sleeps) == 3
    assert proxy.count("GET", blob) == 4
    # nothing visible: neither the blob nor the manifest or tag that would reference it
    assert store.blob_size(layer) is None
    with pytest.raises(NotFoundError):
        store.manifest("src/app", "1")


def test_the_budget_is_per_blob_a_cut_body_and_the_resume_share_it(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory: ProxyFactory
) -> None:
    built, layer = _seeded(registry, 402)
    proxy = fault_proxy_factory(registry)
    blob = f"/blobs/{layer}"
    proxy.cut_response(blob, after_bytes=MiB)
    # each request alone stays within three retries; the blob as a whole does not
    proxy.override_status("GET", blob, 503, times=3, skip=1)
    store = open_store(str(tmp_path / "store"))

    with pytest.raises(RetriesExhaustedError) as info:
        pull(_client(proxy, [], retries=3), store, "src/app", "1")

    err = info.value
    assert layer in str(err) and err.retries == 3
    assert err.http is not None and err.http.status == 503
    # the cut GET, then three 503s on the resume
    assert [r.status for r in proxy.requests_matching("GET", blob)] == [200, 503, 503, 503]
    assert store.blob_size(layer) is None
    # the bytes before the cut stay staged: a later run resumes from them
    sleeps: list[float] = []
    pull(_client(proxy, sleeps, retries=3), store, "src/app", "1")
    assert _read(store, layer) == built.blobs[layer]
    ranged = [r for r in proxy.requests_matching("GET", blob) if "Range" in r.headers]
    assert ranged and ranged[-1].headers["Range"] == f"bytes={MiB}-"
