"""Self-checks of the test infrastructure in ``tests/support`` (no regstore code involved).

Run alone with ``python -m pytest -p tests.support.fixtures tests/test_support_selfcheck.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from regstore.testing.builders import (
    DOCKER_MANIFEST,
    EMPTY_GZIP_TAR,
    EMPTY_GZIP_TAR_DIGEST,
    OCI_INDEX,
    OCI_MANIFEST,
    build_image,
    build_index,
    build_layer,
    layer_diff_id,
    random_blob,
    sha256_digest,
    write_oci_layout,
)
from tests.support.fake_registry import ANY_QUERY, FakeRegistry
from tests.support.fixtures import S3Bucket
from tests.support.moto_server import MotoServer, make_s3_client
from tests.support.ports import ServerStartError, free_port, wait_for_http
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer, serve_directory
from tests.support.skopeo import (
    ToolError,
    push_with_skopeo,
    skopeo_copy,
    skopeo_inspect_raw,
    umoci_unpack,
)
from tests.support.soak import CliRun
from tests.support.token_server import TokenServer, parse_scope

MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def _challenge_params(header: str) -> dict[str, str]:
    """Parse ``Scheme k="v",k="v"`` (enough for the registry's simple challenges)."""
    _, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        params[key] = value.strip('"')
    return params


def _push_blob(
    base: str, name: str, data: bytes, headers: dict[str, str] | None = None
) -> requests.Response:
    """Monolithic upload with plain requests: POST, then PUT ?digest= with the body."""
    headers = headers or {}
    post = requests.post(f"{base}/v2/{name}/blobs/uploads/", headers=headers, timeout=10)
    assert post.status_code == 202, post.text
    location = requests.compat.urljoin(base, post.headers["Location"])
    return requests.put(
        location,
        params={"digest": sha256_digest(data)},
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=10,
    )


# -- ports -------------------------------------------------------------------------------------
def test_free_port_is_bindable_and_wait_for_http_times_out() -> None:
    port = free_port()
    assert 0 < port < 65536
    with pytest.raises(ServerStartError):
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=0.3)


# -- registries in the three auth modes --------------------------------------------------------
def test_registry_without_auth_answers_v2(registry: RegistryServer) -> None:
    resp = requests.get(f"{registry.url}/v2/", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert registry.host == f"127.0.0.1:{registry.port}"
    assert registry.root is not None and registry.root.is_dir()
    assert registry.username is None and registry.credentials is None


def test_basic_registry_challenges_and_checks_credentials(basic_registry: RegistryServer) -> None:
    anonymous = requests.get(f"{basic_registry.url}/v2/", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert (
        requests.get(
            f"{basic_registry.url}/v2/", auth=basic_registry.credentials, timeout=5
        ).status_code
        == 200
    )
    wrong = (basic_registry.username or "", "not-the-password")
    assert requests.get(f"{basic_registry.url}/v2/", auth=wrong, timeout=5).status_code == 401


def test_token_registry_sends_bearer_challenge(
    token_registry: RegistryServer, token_server: TokenServer
) -> None:
    resp = requests.get(f"{token_registry.url}/v2/", timeout=5)
    assert resp.status_code == 401
    header = resp.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    params = _challenge_params(header)
    assert params["realm"] == token_server.realm
    assert params["service"] == token_server.service
    assert token_registry.token_server is token_server


def test_token_grants_pull_and_push(
    token_registry: RegistryServer, token_server: TokenServer
) -> None:
    name = "selfcheck/tokens"
    resp = requests.get(
        token_server.realm,
        params={"service": token_server.service, "scope": f"repository:{name}:pull,push"},
        auth=token_registry.credentials,
        timeout=5,
    )
    assert resp.status_code == 200
    payload = resp.json()
    assert payload["token"] == payload["access_token"]
    assert payload["expires_in"] > 0 and payload["issued_at"].endswith("Z")
    bearer = {"Authorization": f"Bearer {payload['token']}"}

    assert requests.get(f"{token_registry.url}/v2/", headers=bearer, timeout=5).status_code == 200
    data = b"tiny blob pushed with a token"
    assert _push_blob(token_registry.url, name, data, bearer).status_code == 201
    got = requests.get(
        f"{token_registry.url}/v2/{name}/blobs/{sha256_digest(data)}", headers=bearer, timeout=5
    )
    assert got.status_code == 200 and got.content == data

    # The request log lets tests count token fetches.
    assert token_server.token_count == 1
    assert token_server.requests[-1].had_auth
    assert token_server.requests[-1].scopes == [f"repository:{name}:pull,push"]


def test_token_server_rejects_bad_credentials_and_limits_anonymous(
    registry_factory: Callable[..., RegistryServer],
) -> None:
    reg = registry_factory(auth="token", anonymous_pull=True)
    ts = reg.token_server
    assert ts is not None
    name = "selfcheck/anon"
    _push_blob(reg.url, name, b"seed", reg.auth_headers(name))  # make the repository exist

    bad = requests.get(
        ts.realm, params={"service": ts.service}, auth=("regstore", "wrong"), timeout=5
    )
    assert bad.status_code == 401

    anon = requests.get(
        ts.realm, params={"service": ts.service, "scope": f"repository:{name}:pull,push"}, timeout=5
    ).json()
    bearer = {"Authorization": f"Bearer {anon['token']}"}
    pulled = requests.get(
        f"{reg.url}/v2/{name}/blobs/{sha256_digest(b'seed')}", headers=bearer, timeout=5
    )
    assert pulled.status_code == 200
    push = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", headers=bearer, timeout=5)
    assert push.status_code == 401  # anonymous tokens carry pull only

    ts.anonymous_pull = False  # now an anonymous token has no access at all
    empty = requests.get(
        ts.realm, params={"service": ts.service, "scope": f"repository:{name}:pull"}, timeout=5
    ).json()
    denied = requests.get(
        f"{reg.url}/v2/{name}/blobs/{sha256_digest(b'seed')}",
        headers={"Authorization": f"Bearer {empty['token']}"},
        timeout=5,
    )
    assert denied.status_code == 401


def test_parse_scope_keeps_ports_in_names() -> None:
    scope = parse_scope("repository:127.0.0.1:5000/foo:pull,push")
    assert scope is not None
    assert (scope.type, scope.name, scope.actions) == (
        "repository",
        "127.0.0.1:5000/foo",
        ("pull", "push"),
    )
    assert parse_scope("nonsense") is None


# -- images, skopeo, umoci ---------------------------------------------------------------------
def test_images_are_deterministic_and_valid() -> None:
    a = build_image(layers=2, layer_size=3000, seed=7, media="oci")
    b = build_image(layers=2, layer_size=3000, seed=7, media="oci")
    c = build_image(layers=2, layer_size=3000, seed=8, media="oci")
    assert a.manifest_bytes == b.manifest_bytes and a.manifest_digest == b.manifest_digest
    assert a.manifest_digest != c.manifest_digest
    assert a.manifest_digest == "sha256:" + hashlib.sha256(a.manifest_bytes).hexdigest()
    config = json.loads(a.config)
    assert config["rootfs"]["diff_ids"] == [layer_diff_id(layer) for layer in a.layers]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    for layer in a.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
            assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert set(a.blobs) == {a.config_digest, *a.layer_digests}
    assert build_layer({"x": b"1"}) == build_layer({"x": b"1"})
    assert random_blob(100, 1) == random_blob(100, 1) != random_blob(100, 2)

    with_empty = build_image(layers=0, empty_layer=True)
    assert with_empty.layer_digests == [EMPTY_GZIP_TAR_DIGEST] == [sha256_digest(EMPTY_GZIP_TAR)]

    index = build_index(media="oci", seed=1)
    entries = index.manifest["manifests"]
    assert [e["platform"]["architecture"] for e in entries] == ["amd64", "arm64"]
    assert [e["digest"] for e in entries] == [child.manifest_digest for child in index.children]

    artifact = build_image(media="oci", artifact_subject=a, layers=1, layer_size=10)
    assert artifact.manifest["subject"]["digest"] == a.manifest_digest
    assert artifact.manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"


@pytest.mark.parametrize("fixture_name", ["registry", "token_registry"])
def test_skopeo_pushes_oci_layout_byte_identical(
    fixture_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    reg: RegistryServer = request.getfixturevalue(fixture_name)
    image = build_image(layers=2, layer_size=2048, seed=11, media="oci")
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    ref = f"docker://{reg.host}/selfcheck/oci:v1"
    skopeo_copy(f"oci:{layout}:v1", ref, "--preserve-digests", creds=reg.credentials)
    assert skopeo_inspect_raw(ref, creds=reg.credentials) == image.manifest_bytes

    # The registry serves exactly those bytes (full Accept list, see the reference notes).
    headers = {**reg.auth_headers("selfcheck/oci", "pull"), "Accept": MANIFEST_ACCEPT}
    resp = requests.get(f"{reg.url}/v2/selfcheck/oci/manifests/v1", headers=headers, timeout=5)
    assert resp.content == image.manifest_bytes
    assert resp.headers["Docker-Content-Digest"] == image.manifest_digest


def test_docker_media_index_pushes_via_dir_transport(
    registry: RegistryServer, tmp_path: Path
) -> None:
    index = build_index(media="docker", seed=3)
    push_with_skopeo(index, f"docker://{registry.host}/selfcheck/list:v1", tmp_path)
    assert skopeo_inspect_raw(f"docker://{registry.host}/selfcheck/list:v1") == index.manifest_bytes
    child = index.children[1]
    raw = skopeo_inspect_raw(f"docker://{registry.host}/selfcheck/list@{child.manifest_digest}")
    assert raw == child.manifest_bytes


def test_push_content_over_plain_http(basic_registry: RegistryServer) -> None:
    image = build_image(media="docker", seed=21, empty_layer=True)
    digest = basic_registry.push_content("selfcheck/plain", "t1", image)
    raw = skopeo_inspect_raw(
        f"docker://{basic_registry.host}/selfcheck/plain:t1", creds=basic_registry.credentials
    )
    assert digest == image.manifest_digest and raw == image.manifest_bytes


def test_umoci_unpacks_written_layout(tmp_path: Path) -> None:
    image = build_image(
        media="oci",
        layer_files=[{"etc/hello.txt": b"hello\n"}, {"usr/share/data.bin": b"\x00\x01"}],
    )
    layout = write_oci_layout(tmp_path / "layout", image, "library/test:1.0")
    rootfs = umoci_unpack(layout, "library/test:1.0", tmp_path / "bundle")
    assert (rootfs / "etc/hello.txt").read_bytes() == b"hello\n"
    assert (rootfs / "usr/share/data.bin").read_bytes() == b"\x00\x01"


def test_tool_errors_carry_stderr(tmp_path: Path) -> None:
    with pytest.raises(ToolError) as info:
        skopeo_inspect_raw(f"oci:{tmp_path}/missing:nothing")
    assert info.value.stderr


# -- a registry serving an existing directory --------------------------------------------------
def test_registry_serves_an_existing_storage_root(registry: RegistryServer, tmp_path: Path) -> None:
    image = build_image(media="oci", seed=5)
    registry.push_content("selfcheck/reuse", "v1", image)
    registry.stop()
    assert not registry.running
    assert registry.root is not None
    assert (registry.root / "docker/registry/v2/repositories/selfcheck/reuse/_manifests").is_dir()

    second = serve_directory(registry.root, tmp_path / "second")
    try:
        assert (
            skopeo_inspect_raw(f"docker://{second.host}/selfcheck/reuse:v1") == image.manifest_bytes
        )
    finally:
        second.stop()


def test_registry_start_failure_shows_log(tmp_path: Path) -> None:
    broken = RegistryServer(
        tmp_path, extra_config={"storage": {"nosuchdriver": {}}}, start_timeout=5
    )
    with pytest.raises(ServerStartError) as info:
        broken.start()
    assert "nosuchdriver" in str(info.value)
    assert not broken.running


# -- the fault proxy ---------------------------------------------------------------------------
def test_proxy_passes_through_and_rewrites_location(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(registry)
    post = requests.post(f"{proxy.url}/v2/selfcheck/proxy/blobs/uploads/", timeout=5)
    assert post.status_code == 202
    assert post.headers["Location"].startswith(proxy.url + "/v2/selfcheck/proxy/blobs/uploads/")

    data = random_blob(200_000, 3)
    assert _push_blob(proxy.url, "selfcheck/proxy", data).status_code == 201
    blob_path = f"/v2/selfcheck/proxy/blobs/{sha256_digest(data)}"
    got = requests.get(proxy.url + blob_path, timeout=5)
    assert got.content == data
    ranged = requests.get(proxy.url + blob_path, headers={"Range": "bytes=100-"}, timeout=5)
    assert ranged.status_code == 206 and ranged.content == data[100:]
    head = requests.head(proxy.url + blob_path, timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)

    gets = proxy.requests_matching("GET", r"/blobs/sha256:")
    assert len(gets) == 2 and gets[1].headers["Range"] == "bytes=100-"
    assert proxy.bytes_sent(r"/blobs/sha256:") == 2 * len(data) - 100


def test_proxy_cuts_a_download_then_passes(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    data = random_blob(100_000, 4)
    _push_blob(registry.url, "selfcheck/cut", data)
    proxy = fault_proxy_factory(registry.url)
    proxy.cut_response(r"/blobs/sha256:", after_bytes=1000, times=1)
    missing = requests.get(
        f"{proxy.url}/v2/selfcheck/cut/blobs/{sha256_digest(b'none')}", timeout=5
    )
    assert missing.status_code == 404  # error answers do not use up the fault
    proxy.clear_records()
    url = f"{proxy.url}/v2/selfcheck/cut/blobs/{sha256_digest(data)}"
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        requests.get(url, timeout=5).content  # noqa: B018 - reading the body is the point
    assert proxy.bytes_sent(r"/blobs/sha256:") == 1000
    assert requests.get(url, timeout=5).content == data  # only the first request was cut


def test_proxy_cuts_an_upload_before_the_upstream(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(registry)
    post = requests.post(f"{proxy.url}/v2/selfcheck/up/blobs/uploads/", timeout=5)
    location = post.headers["Location"]
    proxy.cut_request(r"/blobs/uploads/", after_bytes=10)
    chunk = random_blob(50_000, 5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.patch(
            location, data=chunk, headers={"Content-Type": "application/octet-stream"}, timeout=5
        )
    status = requests.get(location, timeout=5)
    assert (
        status.status_code == 204 and status.headers["Range"] == "0-0"
    )  # nothing arrived upstream
    ok = requests.patch(
        location, data=chunk, headers={"Content-Type": "application/octet-stream"}, timeout=5
    )
    assert ok.status_code == 202 and ok.headers["Range"] == f"0-{len(chunk) - 1}"


def test_proxy_status_overrides_and_corruption(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    data = random_blob(5000, 6)
    _push_blob(registry.url, "selfcheck/faults", data)
    proxy = fault_proxy_factory(registry)
    url = f"{proxy.url}/v2/selfcheck/faults/blobs/{sha256_digest(data)}"
    proxy.override_status("GET", r"/blobs/", 500, times=1)
    proxy.rate_limit("GET", r"/blobs/", times=1, retry_after=1)
    proxy.corrupt_response(r"/blobs/", times=1, offset=10)
    with requests.Session() as session:  # one keep-alive connection through all of it
        assert session.get(url, timeout=5).status_code == 500
        limited = session.get(url, timeout=5)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        corrupted = session.get(url, timeout=5).content
        assert len(corrupted) == len(data) and corrupted[10] == data[10] ^ 0xFF
        assert corrupted[:10] + corrupted[11:] == data[:10] + data[11:]
        assert session.get(url, timeout=5).content == data
    assert proxy.count("GET", r"/blobs/") == 4


# -- the fake registry -------------------------------------------------------------------------
def test_fake_registry_fifo_and_404(fake_registry: FakeRegistry) -> None:
    fake_registry.expect("GET", "/v2/hello/world/tags/list", status=200, body=b"first")
    fake_registry.expect("GET", "/v2/hello/world/tags/list", status=500, body=b"second")
    fake_registry.expect(
        "POST", "/v2/hello/world/blobs/uploads/", status=202,
        headers={"Location": "{base}/v2/hello/world/blobs/test-uuid"},
    )  # fmt: skip
    fake_registry.expect(
        "PUT", "/v2/hello/world/blobs/test-uuid", query={"digest": "sha256:abc"}, status=201
    )
    fake_registry.expect("GET", "/v2/any", query=ANY_QUERY, body="anything", times=None)

    url = fake_registry.url
    first = requests.get(f"{url}/v2/hello/world/tags/list", timeout=5)
    second = requests.get(f"{url}/v2/hello/world/tags/list", timeout=5)
    third = requests.get(f"{url}/v2/hello/world/tags/list", timeout=5)
    assert (first.status_code, first.content) == (200, b"first")
    assert (second.status_code, second.content) == (500, b"second")
    assert (third.status_code, third.text) == (404, "404 page not found\n")

    post = requests.post(f"{url}/v2/hello/world/blobs/uploads/", timeout=5)
    assert post.headers["Location"] == f"{url}/v2/hello/world/blobs/test-uuid"
    assert (
        requests.put(
            post.headers["Location"], params={"digest": "sha256:abc"}, data=b"xyz", timeout=5
        ).status_code
        == 201
    )
    assert requests.get(f"{url}/v2/any?x=1", timeout=5).text == "anything"
    assert requests.get(f"{url}/v2/any?y=2", timeout=5).text == "anything"

    put = fake_registry.requests_to("PUT")[0]
    assert put.body == b"xyz" and put.params == {"digest": ["sha256:abc"]}
    assert [r.path for r in fake_registry.unmatched] == ["/v2/hello/world/tags/list"]
    assert fake_registry.pending() == {"GET /v2/any?*": -1}


def test_fake_registry_broken_body_and_dynamic(fake_registry: FakeRegistry) -> None:
    content = b"some contents"
    fake_registry.expect_broken("GET", "/v2/hello/world/blobs/d1", content, cut_at=6)
    fake_registry.expect("GET", "/v2/hello/world/blobs/d1", body=content[6:])
    fake_registry.expect("HEAD", "/v2/hello/world/blobs/d1", headers={"Content-Length": "13"})
    fake_registry.expect(
        "GET",
        "/v2/echo",
        body=lambda req: (200, {"X-Range": req.headers.get("Range") or ""}, req.method),
    )
    url = f"{fake_registry.url}/v2/hello/world/blobs/d1"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=5).content  # noqa: B018
    assert requests.get(url, headers={"Range": "bytes=6-"}, timeout=5).content == content[6:]
    assert requests.get(url, timeout=5).status_code == 404
    assert requests.head(url, timeout=5).headers["Content-Length"] == "13"
    echo = requests.get(f"{fake_registry.url}/v2/echo", headers={"Range": "bytes=1-"}, timeout=5)
    assert echo.headers["X-Range"] == "bytes=1-" and echo.text == "GET"
    assert fake_registry.requests[1].headers["Range"] == "bytes=6-"


def test_two_fakes_model_a_cross_host_redirect(
    fake_registry_factory: Callable[[], FakeRegistry],
) -> None:
    registry, storage = fake_registry_factory(), fake_registry_factory()
    registry.expect_redirect("GET", "/v2/hello/world/blobs/d1", f"{storage.url}/blob-d1?sig=abc")
    storage.expect("GET", "/blob-d1", query={"sig": "abc"}, body=b"redirected bytes")
    resp = requests.get(
        f"{registry.url}/v2/hello/world/blobs/d1",
        headers={"Authorization": "Bearer secret"},
        timeout=5,
    )
    assert resp.content == b"redirected bytes"
    assert registry.requests[0].headers["Authorization"] == "Bearer secret"
    assert storage.requests[0].headers["Authorization"] is None  # requests strips it across hosts


# -- moto and the S3-backed registry -----------------------------------------------------------
def test_moto_subprocess_put_and_get(moto_server: MotoServer, s3_bucket: S3Bucket) -> None:
    endpoint_url, bucket = s3_bucket
    assert endpoint_url == moto_server.endpoint_url
    client = make_s3_client(endpoint_url)
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello moto")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello moto"
    assert moto_server.running and moto_server._proc is not None
    assert moto_server._proc.pid != os.getpid()  # a separate process, not a thread


def test_registry_on_moto_s3_accepts_a_blob(
    s3_registry: RegistryServer, s3_bucket: S3Bucket
) -> None:
    data = random_blob(20_000, 9)
    assert _push_blob(s3_registry.url, "selfcheck/s3", data).status_code == 201
    got = requests.get(f"{s3_registry.url}/v2/selfcheck/s3/blobs/{sha256_digest(data)}", timeout=10)
    assert got.status_code == 200 and got.content == data
    client = make_s3_client(s3_bucket.endpoint_url)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket.bucket).get("Contents", [])]
    hexdigest = sha256_digest(data)[7:]
    assert f"registry/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data" in keys


def test_a_run_that_exits_before_its_kill_keeps_its_output() -> None:
    # kill_when's condition can come true just as the process exits; kill() then found it gone
    # and returned without collecting stdout, so a kill loop read "" from a completed --json run
    run = CliRun(["--version"], dict(os.environ))
    deadline = time.monotonic() + 60
    while run.process.poll() is None:  # exited, output not yet collected
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert run.kill() is False
    assert run.process.returncode == 0
    assert "regstore" in run.stdout
