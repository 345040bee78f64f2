"""The client against the scripted fake registry: what registry 2.8 never does (416 on chunks,
Link pagination of tags, redirects to another host, injected 5xx/429, bad digests, odd ranges).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import urllib3

from regstore.client import Client, RateLimitPacer
from regstore.client.bodies import UploadBody
from regstore.client.errors_map import Operation
from regstore.digest import digest_bytes
from regstore.errors import (
    AuthenticationError,
    BlobUploadInvalidRangeError,
    DigestMismatchError,
    ImageManifestNotFoundError,
    TransportError,
    UnexpectedHTTPStatusError,
)
from regstore.manifest import OCI_MANIFEST
from regstore.testing.builders import build_image
from tests.support.fake_registry import ANY_QUERY, FakeRegistry
from tests.support.ports import free_port

NAME = "a/b"
BLOB = b"0123456789"
BLOB_DIGEST = digest_bytes(BLOB)
BLOB_PATH = f"/v2/{NAME}/blobs/{BLOB_DIGEST}"
UPLOADS = f"/v2/{NAME}/blobs/uploads"


class Sleeps(list[float]):
    """Records the pauses the client asked for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make(fake_registry: FakeRegistry, sleeps: Sleeps) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def build(**options: object) -> Client:
        options.setdefault("use_docker_config", False)
        options.setdefault("sleep", sleeps)
        client = Client(fake_registry.host, **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


# -- chunk upload: 416 and resume ------------------------------------------------------------------


def test_416_fills_invalid_range_error_and_upload_resumes(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    fake.expect(
        "PATCH",
        f"{UPLOADS}/u1",
        "_state=s1",
        status=416,
        headers={"Range": "0-4", "Location": f"{UPLOADS}/u2?_state=s2"},
    )
    fake.expect(
        "PATCH",
        f"{UPLOADS}/u2",
        "_state=s2",
        status=202,
        headers={"Range": "0-9", "Location": f"{UPLOADS}/u3?_state=s3"},
    )
    client = make()
    with pytest.raises(BlobUploadInvalidRangeError) as info:
        client.upload_blob_chunk(f"{fake.url}{UPLOADS}/u1?_state=s1", BLOB[7:], 3, 7)
    err = info.value
    assert (err.location, err.last_valid_range, err.blob_size) == (
        f"{fake.url}{UPLOADS}/u2?_state=s2",
        4,
        5,
    )
    assert err.http is not None and err.http.status == 416
    following = client.upload_blob_chunk(err.location, BLOB[5:], 5, err.blob_size)
    assert following == f"{fake.url}{UPLOADS}/u3?_state=s3"
    patch = fake.requests_to("PATCH", f"{UPLOADS}/u2")[0]
    assert patch.headers["Content-Range"] == "5-9"
    assert patch.headers["Content-Length"] == "5"
    assert patch.headers["Content-Type"] == "application/octet-stream"
    assert patch.body == BLOB[5:]
    assert len(fake.requests_to("PATCH")) == 2  # nothing retried


def test_416_without_range_asks_the_status(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    fake.expect("PATCH", f"{UPLOADS}/u1", status=416)
    fake.expect(
        "GET", f"{UPLOADS}/u1", status=204, headers={"Range": "0-2", "Location": f"{UPLOADS}/u9"}
    )
    with pytest.raises(BlobUploadInvalidRangeError) as info:
        make().upload_blob_chunk(f"{fake.url}{UPLOADS}/u1", b"zz", 2, 8)
    assert (info.value.location, info.value.last_valid_range, info.value.blob_size) == (
        f"{fake.url}{UPLOADS}/u9",
        2,
        3,
    )


def test_relative_locations_and_seed_range_dialect(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    fake.expect(
        "POST",
        f"{UPLOADS}/",
        status=202,
        headers={"Location": "u7?_state=a", "OCI-Chunk-Min-Length": "1024"},
    )
    fake.expect("GET", f"{UPLOADS}/u7", "_state=a", status=204, headers={"Range": "bytes=0-99/100"})
    session = make().initiate_blob_upload(NAME)
    assert session.location == f"{fake.url}{UPLOADS}/u7?_state=a"
    assert session.chunk_min_length == 1024
    status = make().get_blob_upload_status(session.location)
    assert (status.offset, status.length, status.location) == (100, 100, session.location)


def test_monolithic_put_sends_length_keeps_state_and_checks_digest(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    query = {"_state": "s1", "digest": BLOB_DIGEST}
    fake.expect(
        "PUT", f"{UPLOADS}/u1", query, status=201, headers={"Docker-Content-Digest": BLOB_DIGEST}
    )
    fake.expect(
        "PUT",
        f"{UPLOADS}/u2",
        {"digest": BLOB_DIGEST},
        status=201,
        headers={"Docker-Content-Digest": digest_bytes(b"other")},
    )
    client = make()
    assert (
        client.upload_blob(f"{fake.url}{UPLOADS}/u1?_state=s1", BLOB, 10, BLOB_DIGEST)
        == BLOB_DIGEST
    )
    put = fake.requests_to("PUT", f"{UPLOADS}/u1")[0]
    assert put.headers["Content-Length"] == "10" and "Transfer-Encoding" not in put.headers
    assert put.body == BLOB
    with pytest.raises(DigestMismatchError):
        client.upload_blob(f"{fake.url}{UPLOADS}/u2", BLOB, 10, BLOB_DIGEST)


def test_a_blob_put_is_not_retried_but_the_empty_post_is(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    fake.expect("POST", f"{UPLOADS}/", status=500, times=None)
    fake.expect("PUT", f"{UPLOADS}/u1", ANY_QUERY, status=503, times=None)
    client = make(retries=2)
    with pytest.raises(UnexpectedHTTPStatusError) as info:
        client.initiate_blob_upload(NAME)
    assert info.value.status == 500 and "starting a blob upload to a/b" in str(info.value)
    with pytest.raises(UnexpectedHTTPStatusError):
        client.upload_blob(f"{fake.url}{UPLOADS}/u1", BLOB, 10, BLOB_DIGEST)
    # an empty POST is safe to repeat (an unused session expires); a PUT with a body is not
    assert len(fake.requests_to("POST")) == 3 and len(fake.requests_to("PUT")) == 1


# -- listing --------------------------------------------------------------------------------------


def test_tag_pagination_follows_relative_links(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    path = f"/v2/{NAME}/tags/list"
    fake.expect(
        "GET",
        path,
        "n=2",
        json={"name": NAME, "tags": ["a", "b"]},
        headers={"Link": f'<{path}?last=b&n=2>; rel="next"'},
    )
    fake.expect(
        "GET",
        path,
        "last=b&n=2",
        json={"name": NAME, "tags": ["c", "d"]},
        headers={"Link": f'<{fake.url}{path}?last=d&n=2>; rel="next"'},
    )
    fake.expect("GET", path, "last=d&n=2", json={"name": NAME, "tags": ["e"]})
    assert make().list_image_tags(NAME, n=2) == ["a", "b", "c", "d", "e"]


def test_null_tags_and_unreadable_lists(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect("GET", f"/v2/{NAME}/tags/list", json={"name": NAME, "tags": None})
    assert make().list_image_tags(NAME) == []
    fake_registry.expect("GET", "/v2/_catalog", body=b"<html>")
    with pytest.raises(Exception, match="unreadable list"):
        make().catalog()


# -- redirects ----------------------------------------------------------------------------------


def test_blob_redirect_drops_authorization_and_keeps_range(
    fake_registry_factory: Callable[[], FakeRegistry], sleeps: Sleeps
) -> None:
    registry, storage = fake_registry_factory(), fake_registry_factory()
    registry.expect(
        "GET", BLOB_PATH, status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'}
    )
    presigned = f"{storage.url}/bucket/blob?X-Amz-Signature=SECRETSIG&X-Amz-Expires=60"
    registry.expect_redirect("GET", BLOB_PATH, presigned)
    storage.expect(
        "GET",
        "/bucket/blob",
        ANY_QUERY,
        status=206,
        body=BLOB[4:],
        headers={"Content-Range": "bytes 4-9/10"},
    )
    client = Client(
        registry.host, username="u", password="pw-secret", use_docker_config=False, sleep=sleeps
    )
    with client.get_blob(NAME, BLOB_DIGEST, byte_offset=4) as stream:
        assert (stream.offset, stream.length, stream.size) == (4, 6, 10)
        assert stream.read() == BLOB[4:]
    first, second = registry.requests_to("GET", BLOB_PATH)
    assert "Authorization" not in first.headers
    assert second.headers["Authorization"].startswith("Basic ")
    [far] = storage.requests
    assert "Authorization" not in far.headers
    assert far.headers["Range"] == "bytes=4-"
    assert far.headers["Accept-Encoding"] == "identity"


def test_head_blob_redirect_refused_elsewhere_falls_back_to_ranged_get(
    fake_registry_factory: Callable[[], FakeRegistry], sleeps: Sleeps
) -> None:
    registry, storage = fake_registry_factory(), fake_registry_factory()
    registry.expect_redirect("HEAD", BLOB_PATH, f"{storage.url}/obj?sig=x")
    storage.expect("HEAD", "/obj", ANY_QUERY, status=403)
    registry.expect_redirect("GET", BLOB_PATH, f"{storage.url}/obj?sig=y")
    storage.expect(
        "GET", "/obj", ANY_QUERY, status=206, body=b"0", headers={"Content-Range": "bytes 0-0/1234"}
    )
    client = Client(registry.host, use_docker_config=False, sleep=sleeps)
    assert client.blob_length(NAME, BLOB_DIGEST) == 1234
    assert storage.requests_to("GET", "/obj")[0].headers["Range"] == "bytes=0-0"


# -- retries -------------------------------------------------------------------------------------

MANIFEST = build_image(media="oci", seed=5)
MANIFEST_PATH = f"/v2/{NAME}/manifests/v1"
MANIFEST_HEADERS = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": MANIFEST.manifest_digest}


def test_500_then_200_is_retried_and_counted(
    fake_registry: FakeRegistry, make: Callable[..., Client], sleeps: Sleeps
) -> None:
    fake_registry.expect("GET", MANIFEST_PATH, status=500, body=b"{}")
    fake_registry.expect(
        "GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes
    )
    client = make(backoff=0.2)
    assert client.get_image_manifest(NAME, "v1").raw == MANIFEST.manifest_bytes
    assert len(fake_registry.requests_to("GET", MANIFEST_PATH)) == 2
    assert client.transport.counters.retries == 1
    assert len(sleeps) == 1 and 0.1 <= sleeps[0] <= 0.2  # backoff with jitter


def test_429_retry_after_is_honoured_and_capped(
    fake_registry: FakeRegistry, make: Callable[..., Client], sleeps: Sleeps
) -> None:
    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
    fake_registry.expect("GET", MANIFEST_PATH, status=429, headers={"Retry-After": "2"}, body=body)
    fake_registry.expect(
        "GET", MANIFEST_PATH, status=429, headers={"Retry-After": "7200"}, body=body
    )
    fake_registry.expect(
        "GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes
    )
    client = make(max_retry_after=30)
    assert client.get_image_manifest(NAME, "v1").digest == MANIFEST.manifest_digest
    assert sleeps == [2.0, 30.0]


def test_retries_exhausted_reports_status_and_retry_after(
    fake_registry: FakeRegistry, make: Callable[..., Client], sleeps: Sleeps
) -> None:
    fake_registry.expect(
        "HEAD", MANIFEST_PATH, status=503, headers={"Retry-After": "1"}, times=None
    )
    with pytest.raises(UnexpectedHTTPStatusError) as info:
        make(retries=2).head_manifest(NAME, "v1")
    assert info.value.status == 503 and info.value.retryable
    assert info.value.http is not None and info.value.http.retry_after == 1.0
    assert "checking manifest a/b:v1" in str(info.value)
    assert len(fake_registry.requests_to("HEAD")) == 3 and sleeps == [1.0, 1.0]


def test_connection_refused_becomes_transport_error(sleeps: Sleeps) -> None:
    client = Client(
        f"127.0.0.1:{free_port()}", retries=2, backoff=0.01, use_docker_config=False, sleep=sleeps
    )
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        client.get_image_manifest(NAME, "v1")
    assert time.monotonic() - started < 30  # sleeps are faked: only a hang takes long
    assert "fetching manifest a/b:v1" in str(info.value)
    assert "refused" in str(info.value)
    # connection retries happen here, from the policy (urllib3's adapter makes none: its own
    # ran inside each of these, with its own backoff)
    assert len(sleeps) == 2


def test_broken_body_is_a_transport_error_with_progress(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    data = bytes(range(256)) * 100
    digest = digest_bytes(data)
    fake_registry.expect_broken("GET", f"/v2/{NAME}/blobs/{digest}", data, cut_at=5000)
    with make().get_blob(NAME, digest) as stream:
        got = b""
        with pytest.raises(TransportError) as info:
            while chunk := stream.read(4096):
                got += chunk
    assert data.startswith(got)
    assert "fetching blob" in str(info.value) and "bytes" in str(info.value)


# -- digests and ranges ---------------------------------------------------------------------------


def test_manifest_digest_mismatches(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    other = build_image(media="oci", seed=6)
    fake_registry.expect(
        "GET",
        f"/v2/{NAME}/manifests/{MANIFEST.manifest_digest}",
        headers={"Content-Type": OCI_MANIFEST},
        body=other.manifest_bytes,
    )
    fake_registry.expect(
        "GET",
        MANIFEST_PATH,
        body=MANIFEST.manifest_bytes,
        headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": other.manifest_digest},
    )
    client = make()
    with pytest.raises(DigestMismatchError) as by_digest:
        client.get_image_manifest(NAME, MANIFEST.manifest_digest)
    assert by_digest.value.actual == other.manifest_digest
    with pytest.raises(DigestMismatchError, match="Docker-Content-Digest"):
        client.get_image_manifest(NAME, "v1")


@pytest.mark.parametrize(
    ("offset", "status", "headers", "body", "expect"),
    [
        (4, 206, {"Content-Range": "bytes 4-9/10"}, BLOB[4:], (4, 6, 10)),
        (4, 200, {}, BLOB, (0, 10, 10)),  # Range ignored: restart from 0
        (10, 416, {"Content-Range": "bytes */10"}, b"invalid range", (10, 0, 10)),
    ],
)
def test_ranged_get_answers(
    fake_registry: FakeRegistry,
    make: Callable[..., Client],
    offset: int,
    status: int,
    headers: dict[str, str],
    body: bytes,
    expect: tuple[int, int, int],
) -> None:
    fake_registry.expect("GET", BLOB_PATH, status=status, headers=headers, body=body)
    with make().get_blob(NAME, BLOB_DIGEST, byte_offset=offset) as stream:
        assert (stream.offset, stream.length, stream.size) == expect
        assert stream.read() == BLOB[expect[0] :]
    assert fake_registry.requests[0].headers["Range"] == f"bytes={offset}-"


@pytest.mark.parametrize(
    ("status", "headers"),
    [(206, {"Content-Range": "bytes 3-9/10"}), (416, {"Content-Range": "bytes */5"})],
)
def test_inconsistent_ranges_are_errors(
    fake_registry: FakeRegistry, make: Callable[..., Client], status: int, headers: dict[str, str]
) -> None:
    fake_registry.expect("GET", BLOB_PATH, status=status, headers=headers, body=b"xxxxxxx")
    with pytest.raises(UnexpectedHTTPStatusError):
        make().get_blob(NAME, BLOB_DIGEST, byte_offset=4)


def test_no_range_header_from_offset_zero_and_no_decoding(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    layer = gzip.compress(b"tar bytes" * 1000)
    digest = digest_bytes(layer)
    fake_registry.expect(
        "GET", f"/v2/{NAME}/blobs/{digest}", body=layer, headers={"Content-Encoding": "gzip"}
    )
    with make().get_blob(NAME, digest) as stream:
        assert stream.read() == layer  # the gzip bytes themselves, never decompressed
    assert "Range" not in fake_registry.requests[0].headers


# -- auth ------------------------------------------------------------------------------------------


def test_bearer_refresh_on_401_merges_scopes(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake = fake_registry
    realm = f'Bearer realm="{fake.url}/token",service="svc"'
    fake.expect(
        "GET",
        MANIFEST_PATH,
        status=401,
        headers={"WWW-Authenticate": f'{realm},scope="repository:a/b:pull"'},
    )
    fake.expect("GET", "/token", ANY_QUERY, json={"token": "t1", "expires_in": 3600})
    fake.expect("GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes)
    fake.expect(
        "GET",
        MANIFEST_PATH,
        status=401,
        headers={
            "WWW-Authenticate": f'{realm},scope="repository:c/d:pull",error="insufficient_scope"'
        },
    )
    fake.expect("GET", "/token", ANY_QUERY, json={"access_token": "t2"})
    fake.expect("GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes)
    client = make(username="u", password="pw")
    client.get_image_manifest(NAME, "v1")
    client.get_image_manifest(NAME, "v1")
    gets = fake.requests_to("GET", MANIFEST_PATH)
    auths = [r.headers.get("Authorization") for r in gets]
    assert auths == [None, "Bearer t1", "Bearer t1", "Bearer t2"]
    first, second = fake.requests_to("GET", "/token")
    assert first.params == {"service": ["svc"], "scope": ["repository:a/b:pull"]}
    assert sorted(second.params["scope"]) == ["repository:a/b:pull", "repository:c/d:pull"]
    assert second.headers["Authorization"].startswith("Basic ")


def test_token_server_refusal_is_clear(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect(
        "GET",
        MANIFEST_PATH,
        status=401,
        headers={"WWW-Authenticate": f'Bearer realm="{fake_registry.url}/token",service="svc"'},
    )
    fake_registry.expect("GET", "/token", ANY_QUERY, status=401)
    with pytest.raises(AuthenticationError) as info:
        make(username="alice", password="TOPSECRET").get_image_manifest(NAME, "v1")
    text = str(info.value)
    assert "TOPSECRET" not in text and "alice" in text and "refused" in text
    assert "repository:a/b:pull" in text


# -- pacing and the in-flight limit ----------------------------------------------------------------


def test_rate_limit_headers_slow_the_next_request(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    paced = Sleeps()
    pacer = RateLimitPacer(sleep=paced)
    fake_registry.expect(
        "GET", "/v2/", headers={"RateLimit-Limit": "100;w=60", "RateLimit-Remaining": "3;w=60"}
    )
    fake_registry.expect("GET", "/v2/", times=None)
    client = make(pacer=pacer)
    client.ping()
    assert paced == []
    client.ping()
    assert len(paced) == 1 and 19 < paced[0] <= 20  # 60 s / 3 remaining


def test_in_flight_limit_holds_until_stream_closed(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect("GET", BLOB_PATH, body=BLOB)
    fake_registry.expect("GET", "/v2/", times=None)
    client = make(max_in_flight=1)
    stream = client.get_blob(NAME, BLOB_DIGEST)
    done = threading.Event()

    def ping() -> None:
        client.ping()
        done.set()

    worker = threading.Thread(target=ping)
    worker.start()
    assert not done.wait(0.3)  # blocked: the open stream holds the only slot
    stream.close()
    assert done.wait(5)
    worker.join()


def test_a_request_waiting_on_429_gives_its_in_flight_slot_to_a_healthy_one(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
    fake_registry.expect("GET", MANIFEST_PATH, status=429, headers={"Retry-After": "30"}, body=body)
    fake_registry.expect(
        "GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes
    )
    fake_registry.expect("GET", "/v2/", times=None)
    waiting, healthy_done = threading.Event(), threading.Event()
    healthy_done_during_wait: list[bool] = []

    def sleep(seconds: float) -> None:
        # The Retry-After pause: it ends when the healthy request is through (or, when the
        # slot is still held and the healthy request cannot start, after the guard expires).
        waiting.set()
        healthy_done_during_wait.append(healthy_done.wait(5))

    client = make(max_in_flight=1, sleep=sleep)
    digests: list[str] = []
    throttled = threading.Thread(
        target=lambda: digests.append(client.get_image_manifest(NAME, "v1").digest)
    )
    throttled.start()
    assert waiting.wait(10)

    def healthy() -> None:
        client.ping()
        healthy_done.set()

    worker = threading.Thread(target=healthy)
    worker.start()
    worker.join(20)
    throttled.join(20)
    assert healthy_done_during_wait == [True]  # the ping finished while the other one waited
    assert digests == [MANIFEST.manifest_digest]


def test_not_found_with_plain_text_body(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    # No scripted answer: the fake answers Go's plain-text "404 page not found".
    with pytest.raises(ImageManifestNotFoundError) as info:
        make().get_image_manifest(NAME, "v1")
    assert info.value.http is not None and info.value.http.codes == ()
    assert json.dumps(info.value.http.status) == "404"


def test_identity_token_uses_the_oauth2_refresh_grant(
    fake_registry: FakeRegistry, make: Callable[..., Client], tmp_path: Path
) -> None:
    fake = fake_registry
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {fake.host: {"identitytoken": "REFRESH-SECRET"}}}))
    fake.expect(
        "GET",
        MANIFEST_PATH,
        status=401,
        headers={"WWW-Authenticate": f'Bearer realm="{fake.url}/token",service="svc"'},
    )
    fake.expect("POST", "/token", json={"access_token": "t9", "expires_in": 600})
    fake.expect("GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes)
    client = make(use_docker_config=True, docker_config=config)
    client.get_image_manifest(NAME, "v1")
    [post] = fake.requests_to("POST", "/token")
    form = parse_qs(post.body.decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["REFRESH-SECRET"]
    assert form["service"] == ["svc"] and form["scope"] == ["repository:a/b:pull"]
    assert fake.requests_to("GET", MANIFEST_PATH)[-1].headers["Authorization"] == "Bearer t9"


def test_a_cookie_the_registry_sets_is_sent_back(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    # a load balancer's affinity cookie: the next requests must carry it
    headers = {**MANIFEST_HEADERS, "Set-Cookie": "AWSALB=node-2; Path=/"}
    fake_registry.expect("GET", MANIFEST_PATH, headers=headers, body=MANIFEST.manifest_bytes)
    fake_registry.expect(
        "GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes
    )
    client = make()
    client.get_image_manifest(NAME, "v1")
    client.get_image_manifest(NAME, "v1")
    first, second = fake_registry.requests_to("GET", MANIFEST_PATH)
    assert first.headers.get("Cookie") is None
    assert second.headers.get("Cookie") == "AWSALB=node-2"


def test_an_environment_proxy_carries_requests_to_other_hosts(
    fake_registry: FakeRegistry, make: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake registry plays the proxy: a request through a proxy names the whole target URL.
    monkeypatch.setenv("HTTP_PROXY", fake_registry.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fake_registry.expect(
        "GET", MANIFEST_PATH, headers=MANIFEST_HEADERS, body=MANIFEST.manifest_bytes, times=None
    )
    with Client("registry.invalid:5000", plain_http=True, use_docker_config=False) as client:
        assert client.get_image_manifest(NAME, "v1").raw == MANIFEST.manifest_bytes
    (seen,) = fake_registry.requests_to("GET", MANIFEST_PATH)
    assert seen.headers.get("Host") == "registry.invalid:5000"
    # a loopback registry is never proxied (as docker does), even by a proxy that is down
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{free_port()}")
    assert make().get_image_manifest(NAME, "v1").raw == MANIFEST.manifest_bytes


def test_a_followed_redirect_keeps_its_connection(
    fake_registry: FakeRegistry, make: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A registry that redirects every blob GET to its storage: the redirect's body is read,
    # so both hops of both GETs share one connection instead of opening one per redirect.
    for _ in range(2):
        fake_registry.expect(  # with a short body, as distribution's redirects have
            "GET",
            BLOB_PATH,
            status=307,
            headers={"Location": "{base}/storage/blob"},
            body=b'<a href="/storage/blob">Temporary Redirect</a>.\n',
        )
        fake_registry.expect("GET", "/storage/blob", body=BLOB)
    connects: list[object] = []
    real_connect = urllib3.connection.HTTPConnection.connect

    def counting(self: urllib3.connection.HTTPConnection) -> None:
        connects.append(self)
        real_connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting)
    client = make()
    for _ in range(2):
        with client.get_blob(NAME, BLOB_DIGEST) as stream:
            assert stream.read() == BLOB
    assert len(connects) == 1


def test_an_empty_upload_body_is_sent_with_a_zero_length_not_chunked(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect("PUT", f"{UPLOADS}/u1", status=201)
    client = make()
    client.transport.request(
        "PUT", f"{fake_registry.base_url}{UPLOADS}/u1", Operation("upload", "closing an upload"),
        body=UploadBody(b"", 0),
    )  # fmt: skip
    (sent,) = fake_registry.requests_to("PUT", f"{UPLOADS}/u1")
    assert sent.headers.get("Transfer-Encoding") is None
    assert sent.headers.get("Content-Length") == "0"
