"""A push through a flaky proxy: 5xx and 429 answers to the upload requests (POST, chunk PATCH,
closing PUT, monolithic PUT) and to the manifest PUT are recovered from — through the upload's
status and a HEAD of the blob, never by re-sending a chunk blindly — within a per-blob budget
whose exhaustion is one clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from regstore import ObjectStore, open_store
from regstore.client import Client
from regstore.engine import RegistryImage, copy, push
from regstore.errors import RetriesExhaustedError, UnexpectedHTTPStatusError
from regstore.testing.builders import BuiltImage, build_image
from tests.support.cli import put_image
from tests.support.engine import blob_digest_in_registry, raw_manifest, seed_registry
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer

MiB = 1 << 20
UPLOADS = r"/blobs/uploads/"
#: Chunked above 1 MiB, in 1 MiB chunks: the 3 MiB layer takes three PATCHes and a PUT.
SMALL = {"chunk_size": MiB, "monolithic_threshold": MiB}

ProxyFactory = Callable[..., FaultProxy]


def _store_with(tmp_path: Path, built: BuiltImage, name: str = "src/app") -> ObjectStore:
    store = open_store(str(tmp_path / "store"))
    put_image(store, name, "1", built)
    return store


def _client(proxy: FaultProxy, sleeps: list[float], **options: Any) -> Client:
    return Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=sleeps.append, **options)


def _image(seed: int) -> BuiltImage:
    return build_image(layers=1, layer_size=3 * MiB, seed=seed, media="oci")


def _assert_pushed(registry: RegistryServer, name: str, built: BuiltImage) -> None:
    for digest in built.blobs:
        assert blob_digest_in_registry(registry.url, name, digest) == digest
    raw = raw_manifest(registry.url, name, "1", built.manifest_media_type)
    assert raw == built.manifest_bytes


def _chunks(built: BuiltImage) -> int:
    """Chunks of 1 MiB the image's one layer is pushed in."""
    return -(-len(built.layers[0]) // MiB)


def _content_ranges(proxy: FaultProxy) -> list[str]:
    return [p.headers["Content-Range"] for p in proxy.requests_matching("PATCH", UPLOADS)]


# -- one push through faults, then what must hold ------------------------------------------------


@dataclass(frozen=True)
class FaultyPush:
    """One push of ``src/app:1`` to ``dst/app`` through the proxy: the image, the faults the
    proxy injects, the client's options, and what must hold once the image has landed whole."""

    image: Callable[[], BuiltImage]
    inject: Callable[[FaultProxy, BuiltImage], None]
    check: Callable[[FaultProxy, BuiltImage, list[float]], None]
    client: Mapping[str, Any] = field(default_factory=dict)
    #: pushed in 1 MiB chunks (SMALL), else with the engine's default sizes
    chunked: bool = True


def _500_on_the_second_chunk(proxy: FaultProxy, built: BuiltImage) -> None:
    # the second chunk is answered 500 without reaching the registry (the first case)
    proxy.override_status("PATCH", UPLOADS, 500, times=1, skip=1)


def _resumed_from_the_registry_status(
    proxy: FaultProxy, built: BuiltImage, sleeps: list[float]
) -> None:
    assert proxy.count("GET", UPLOADS) >= 1  # it asked where the upload stands
    ranges = _content_ranges(proxy)
    starts = [int(r.split("-")[0]) for r in ranges]
    assert starts[0] == 0 and starts == sorted(starts)  # never a chunk at a wrong offset
    assert len(set(starts)) == _chunks(built)  # every chunk, once landed
    assert len(starts) == _chunks(built) + 1  # and the one refused, sent again
    assert len(sleeps) >= 1


def _503_after_the_closing_put_landed(proxy: FaultProxy, built: BuiltImage) -> None:
    # the registry completes the upload, but the answer is lost behind a 503
    layer = built.layer_digests[0]
    proxy.override_status("PUT", UPLOADS, 503, times=1, forward=True, query_regex=layer)


def _checked_the_blob_and_did_not_put_again(
    proxy: FaultProxy, built: BuiltImage, sleeps: list[float]
) -> None:
    layer = built.layer_digests[0]
    closing = [p for p in proxy.requests_matching("PUT", UPLOADS) if layer in unquote(p.query)]
    assert len(closing) == 1  # the blob landed: no second PUT
    assert proxy.count("HEAD", f"/blobs/{layer}") == 2  # before the upload, and after the 503


def _503_instead_of_the_closing_put(proxy: FaultProxy, built: BuiltImage) -> None:
    layer = built.layer_digests[0]
    proxy.override_status(
        "PUT", UPLOADS, 503, times=1, headers={"Retry-After": "1"}, query_regex=layer
    )


def _put_again_without_the_chunks(
    proxy: FaultProxy, built: BuiltImage, sleeps: list[float]
) -> None:
    layer = built.layer_digests[0]
    closing = [p for p in proxy.requests_matching("PUT", UPLOADS) if layer in unquote(p.query)]
    assert len(closing) == 2
    assert proxy.count("PATCH", UPLOADS) == _chunks(built)  # the chunks were not sent again
    assert 1.0 in sleeps  # Retry-After honoured


def _429_on_the_post_and_the_manifest_put(proxy: FaultProxy, built: BuiltImage) -> None:
    proxy.rate_limit("POST", UPLOADS, times=2, retry_after=1)
    proxy.rate_limit("PUT", r"/manifests/", times=1, retry_after=2)


def _waited_as_told(proxy: FaultProxy, built: BuiltImage, sleeps: list[float]) -> None:
    assert sleeps.count(1.0) == 2 and sleeps.count(2.0) == 1


def _500_after_a_monolithic_put_landed_then_502(proxy: FaultProxy, built: BuiltImage) -> None:
    proxy.override_status("PUT", UPLOADS, 500, times=1, forward=True)
    proxy.override_status("PUT", UPLOADS, 502, times=1)  # the next one never got there


def _only_the_lost_put_sent_again(
    proxy: FaultProxy, built: BuiltImage, sleeps: list[float]
) -> None:
    # three blobs: one PUT each, plus one again for the blob whose PUT never arrived
    assert proxy.count("PUT", UPLOADS) == 4


def _upload_session_forgotten(proxy: FaultProxy, built: BuiltImage) -> None:
    proxy.override_status("PATCH", UPLOADS, 503, times=1)
    # the registry has forgotten the session when asked where it stands
    proxy.override_status(
        "GET",
        UPLOADS,
        404,
        times=1,
        body='{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}',
    )


def _that_blob_restarted_only(proxy: FaultProxy, built: BuiltImage, sleeps: list[float]) -> None:
    layer = built.layer_digests[0]
    posts = proxy.count("POST", UPLOADS)
    assert posts == len(built.blobs) + 1  # one new session, for the layer only
    ranges = _content_ranges(proxy)
    assert ranges[0] == f"0-{MiB - 1}" and ranges.count(f"0-{MiB - 1}") == 2
    assert len(built.blobs[layer]) > 2 * MiB


def _429_for_an_hour(proxy: FaultProxy, built: BuiltImage) -> None:
    proxy.rate_limit("PUT", UPLOADS, times=1, retry_after=3600)


def _waited_the_cap(proxy: FaultProxy, built: BuiltImage, sleeps: list[float]) -> None:
    assert 2.5 in sleeps and max(sleeps) == 2.5


FAULTY_PUSHES = [
    pytest.param(
        FaultyPush(
            lambda: _image(300), _500_on_the_second_chunk, _resumed_from_the_registry_status
        ),
        id="a_500_on_a_chunk_patch_resumes_from_the_registry_status",
    ),
    pytest.param(
        FaultyPush(
            lambda: _image(301),
            _503_after_the_closing_put_landed,
            _checked_the_blob_and_did_not_put_again,
        ),
        id="a_503_on_the_closing_put_checks_the_blob_before_sending_again",
    ),
    pytest.param(
        FaultyPush(
            lambda: _image(302), _503_instead_of_the_closing_put, _put_again_without_the_chunks
        ),
        id="a_503_on_the_closing_put_that_did_not_land_is_sent_again",
    ),
    pytest.param(
        FaultyPush(lambda: _image(303), _429_on_the_post_and_the_manifest_put, _waited_as_told),
        id="a_429_on_the_upload_post_and_on_the_manifest_put_are_retried",
    ),
    pytest.param(
        FaultyPush(
            lambda: build_image(layers=2, layer_size=64 * 1024, seed=304, media="docker"),
            _500_after_a_monolithic_put_landed_then_502,
            _only_the_lost_put_sent_again,
            chunked=False,
        ),
        id="a_500_on_a_monolithic_put_that_landed_is_not_uploaded_again",
    ),
    pytest.param(
        FaultyPush(lambda: _image(305), _upload_session_forgotten, _that_blob_restarted_only),
        id="a_lost_upload_session_restarts_that_blob_only",
    ),
    pytest.param(
        FaultyPush(
            lambda: build_image(layers=1, layer_size=1024, seed=307, media="oci"),
            _429_for_an_hour,
            _waited_the_cap,
            client={"max_retry_after": 2.5},
            chunked=False,
        ),
        id="retry_after_is_capped",
    ),
]


@pytest.mark.parametrize("case", FAULTY_PUSHES)
def test_a_push_through_faults_recovers(
    case: FaultyPush,
    registry: RegistryServer,
    tmp_path: Path,
    fault_proxy_factory: ProxyFactory,
) -> None:
    built = case.image()
    store = _store_with(tmp_path, built)
    proxy = fault_proxy_factory(registry)
    case.inject(proxy, built)

    sleeps: list[float] = []
    options = SMALL if case.chunked else {}
    client = _client(proxy, sleeps, **case.client)
    push(client, store, "src/app", "1", dest_name="dst/app", **options)

    _assert_pushed(registry, "dst/app", built)
    case.check(proxy, built, sleeps)


def test_a_registry_that_keeps_failing_ends_in_one_clear_error_naming_the_blob(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory: ProxyFactory
) -> None:
    built = _image(306)
    store = _store_with(tmp_path, built)
    layer = built.layer_digests[0]
    proxy = fault_proxy_factory(registry)
    proxy.override_status("PATCH", UPLOADS, 500, times=None)

    sleeps: list[float] = []
    client = _client(proxy, sleeps, retries=3)
    with pytest.raises(RetriesExhaustedError) as info:
        push(client, store, "src/app", "1", dest_name="dst/app", **SMALL)

    err = info.value
    text = str(err)
    assert layer in text  # the blob
    assert "PATCH http://" in text and "/blobs/uploads/" in text  # the request
    assert "_state=REDACTED" in text or "?" not in text.split("PATCH ", 1)[1].split()[0]
    assert "-> 500" in text  # the last answer
    assert err.http is not None and err.http.status == 500
    # bounded per blob, not per request: 3 retries plus two per extra chunk
    assert err.retries == 3 + 2 * (_chunks(built) - 1)
    assert proxy.count("PATCH", UPLOADS) == err.retries + 1
    # one pause per retry, growing: exponential backoff (with jitter) while nothing moves
    assert len(sleeps) == err.retries and sleeps == sorted(sleeps)


def test_a_source_cut_inside_a_chunk_resumes_the_source_not_the_upload(
    registry_factory: Callable[..., RegistryServer], fault_proxy_factory: ProxyFactory
) -> None:
    source, destination = registry_factory(), registry_factory()
    built = _image(308)
    seed_registry(source.url, "src/app", "1", built)
    layer = built.layer_digests[0]
    proxy = fault_proxy_factory(source)
    cut_at = MiB + MiB // 2  # in the middle of the second chunk
    proxy.cut_response(f"/blobs/{layer}", after_bytes=cut_at)
    dest = fault_proxy_factory(destination)  # only watches

    copy(
        RegistryImage(_client(proxy, []), "src/app", "1"),
        RegistryImage(_client(dest, []), "dst/app", "1"),
        **SMALL,
    )

    _assert_pushed(destination, "dst/app", built)
    gets = proxy.requests_matching("GET", f"/blobs/{layer}")
    assert [g.headers.get("Range") for g in gets] == [None, f"bytes={cut_at}-"]
    # the upload never noticed: each chunk went up once, in one session
    ranges = _content_ranges(dest)
    assert len(ranges) == _chunks(built) == len(set(ranges))
    assert dest.count("POST", UPLOADS) == len(built.blobs)
    assert proxy.bytes_sent(f"/blobs/{layer}") == len(built.blobs[layer])


def test_requests_made_inside_an_active_budget_share_it(
    registry: RegistryServer, fault_proxy_factory: ProxyFactory
) -> None:
    proxy = fault_proxy_factory(registry)
    proxy.override_status("HEAD", r"/blobs/", 503, times=None)
    sleeps: list[float] = []
    client = _client(proxy, sleeps, retries=4)
    digest = "sha256:" + "ab" * 32

    with pytest.raises(UnexpectedHTTPStatusError):
        client.blob_length("a/b", digest)  # a request of its own: 4 retries
    assert proxy.count("HEAD") == 5

    with client.retry_policy.budget("one unit of work", retries=2) as budget:
        for _ in range(2):
            with pytest.raises(UnexpectedHTTPStatusError):
                client.blob_length("a/b", digest)
    assert proxy.count("HEAD") == 5 + 3 + 1  # the second request found the budget spent
    assert budget.left == 0 and "HTTP 503" in budget.last
    assert len(sleeps) == 4 + 2


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_token_revoked_mid_upload_is_renewed_and_the_push_goes_on(
    method: str,
    token_registry: RegistryServer,
    tmp_path: Path,
    fault_proxy_factory: ProxyFactory,
) -> None:
    # One 401 with a Bearer challenge (an expired or revoked token) on a chunk PATCH or the
    # closing PUT: the transport fetched a new token but could not send the streamed body
    # again, and the push failed with an AuthenticationError.
    import requests

    from tests.support.fixtures import DEFAULT_PASSWORD, DEFAULT_USER

    built = _image(9601)
    store = _store_with(tmp_path, built)
    challenge = requests.post(f"{token_registry.url}/v2/dst/app/blobs/uploads/", timeout=10)
    assert challenge.status_code == 401
    proxy = fault_proxy_factory(token_registry)
    proxy.override_status(
        method,
        UPLOADS,
        401,
        times=1,
        skip=1 if method == "PATCH" else 0,
        headers={"WWW-Authenticate": challenge.headers["WWW-Authenticate"]},
        body='{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}',
        query_regex=None if method == "PATCH" else built.layer_digests[0],
    )
    sleeps: list[float] = []
    client = _client(proxy, sleeps, username=DEFAULT_USER, password=DEFAULT_PASSWORD)
    push(client, store, "src/app", "1", dest_name="dst/app", **SMALL)
    refused = [r for r in proxy.records if r.status == 401 and r.method == method]
    assert len(refused) == 1  # the injected one; the push went on past it
    authed = Client(token_registry.host, username=DEFAULT_USER, password=DEFAULT_PASSWORD)
    assert str(authed.get_image_manifest("dst/app", "1").digest) == built.manifest_digest
    assert authed.blob_length("dst/app", built.layer_digests[0]) == len(built.layers[0])
