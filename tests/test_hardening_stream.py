"""Blob streams that lie (hardening issue 10, items 4 and 6).

Item 4: bytes a misbehaving source left staged must not fail the next, genuine pull of the
same blob: a resumed write that does not verify is discarded and fetched once more from 0 in
the same run, on every kind of store.

Item 6: a schema1 blob (no size in the manifest) served with chunked transfer encoding (no
``Content-Length``) is streamed to its end and verified by digest; an endless one stops at the
client's ``max_unknown_blob_size`` with a clear error, and nothing of it stays staged.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from regstore import ObjectStore, open_store
from regstore.client import Client
from regstore.engine import pull
from regstore.errors import BlobTooLargeError, DigestMismatchError
from regstore.hookspecs import BlobState
from regstore.manifest import DOCKER_MANIFEST_V1
from regstore.testing.builders import build_image, random_blob, sha256_digest
from tests.support.engine import seed_registry
from tests.support.fake_registry import FakeRegistry, FakeRequest, Responder
from tests.support.ports import LoopbackHTTPServer, QuietHandler
from tests.support.registry import RegistryServer
from tests.support.stores import STORE_KINDS

KiB = 1 << 10
MiB = 1 << 20
NAME = "old/img"
TAG = "1"
#: What the endless junk stream sends at most, so a client without a bound still finishes.
JUNK_CAP = 16 * MiB


def plant_staged_prefix(store: ObjectStore, digest: str, data: bytes) -> None:
    """Leave ``data`` staged for ``digest`` the way a failed transfer does (written, not
    committed, writer closed: the bytes stay for a resume)."""
    writer = store.layer(digest).writer()
    writer.write(data)
    writer.close()
    assert store.blob_status(digest).state is BlobState.PARTIAL


def schema1_manifest(digests: list[str]) -> bytes:
    """An unsigned schema1 manifest: layers by ``blobSum``, without sizes."""
    return json.dumps(
        {
            "schemaVersion": 1,
            "name": NAME,
            "tag": TAG,
            "architecture": "amd64",
            "fsLayers": [{"blobSum": d} for d in digests],
            "history": [{"v1Compatibility": "{}"} for _ in digests],
        }
    ).encode()


# -- a registry that streams blobs chunked ------------------------------------------------------


class _ChunkedHandler(QuietHandler):
    server: ChunkedRegistry

    def do_GET(self) -> None:
        registry = self.server
        path = urlsplit(self.path).path
        if path == "/v2/":
            self.send_simple(200, b"{}", {"Content-Type": "application/json"})
            return
        if path == f"/v2/{NAME}/manifests/{TAG}":
            self.send_simple(200, registry.manifest, {"Content-Type": DOCKER_MANIFEST_V1})
            return
        digest = path.rpartition("/")[2]
        if path != f"/v2/{NAME}/blobs/{digest}" or digest not in registry.blobs:
            self.send_simple(404, b"404 page not found\n", {"Content-Type": "text/plain"})
            return
        with registry.lock:
            registry.gets[digest] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in registry.chunks(digest):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up (it hit its bound)
            self.close_connection = True


class ChunkedRegistry(LoopbackHTTPServer):
    """Serves ``NAME:TAG`` as a schema1 manifest and its blobs with chunked transfer encoding,
    never with a ``Content-Length``; a blob given as None is endless junk (up to JUNK_CAP)."""

    def __init__(self, blobs: Mapping[str, bytes | None]) -> None:
        super().__init__(_ChunkedHandler)
        self.blobs = dict(blobs)
        self.manifest = schema1_manifest(list(blobs))
        self.gets: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def chunks(self, digest: str) -> Iterator[bytes]:
        data = self.blobs[digest]
        if data is None:
            junk = random_blob(64 * KiB, seed=7)
            for _ in range(JUNK_CAP // len(junk)):
                yield junk
            return
        for start in range(0, len(data), 64 * KiB):
            yield data[start : start + 64 * KiB]


@pytest.fixture
def chunked_registry() -> Iterator[Callable[[Mapping[str, bytes | None]], ChunkedRegistry]]:
    servers: list[ChunkedRegistry] = []

    def start(blobs: Mapping[str, bytes | None]) -> ChunkedRegistry:
        server = ChunkedRegistry(blobs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- item 6: unknown-length blobs ---------------------------------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_schema1_blob_served_chunked_is_pulled_and_verified(
    kind: str, store_factory: Callable[[str], ObjectStore], chunked_registry
) -> None:
    layer = random_blob(3 * MiB + 5, seed=61)
    digest = sha256_digest(layer)
    server = chunked_registry({digest: layer})
    store = store_factory(kind)

    with Client(server.host, use_docker_config=False) as client:
        pull(client, store, NAME, TAG)

    with store.layer(digest).reader() as reader:
        assert reader.size == len(layer)
        assert reader.read() == layer
    assert store.manifest(NAME, TAG).raw == server.manifest
    assert server.gets[digest] == 1


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_an_endless_unsized_blob_stops_at_the_bound_and_leaves_nothing_staged(
    kind: str, store_factory: Callable[[str], ObjectStore], chunked_registry
) -> None:
    digest = sha256_digest(b"what the manifest promised")
    server = chunked_registry({digest: None})
    store = store_factory(kind)

    client = Client(server.host, use_docker_config=False, max_unknown_blob_size=MiB)
    with client, pytest.raises(BlobTooLargeError) as caught:
        pull(client, store, NAME, TAG)

    error = caught.value
    assert (error.digest, error.limit) == (digest, MiB)
    assert f"more than {MiB} bytes" in str(error) and "max_unknown_blob_size" in str(error)
    assert store.blob_status(digest).state is BlobState.ABSENT
    assert server.gets[digest] == 1  # stopped, not retried
    assert not store.has_manifest(NAME, TAG)


def test_finite_unsized_junk_fails_verification_and_leaves_nothing_staged(
    store_factory: Callable[[str], ObjectStore], chunked_registry
) -> None:
    digest = sha256_digest(b"what the manifest promised")
    server = chunked_registry({digest: random_blob(2 * MiB, seed=3)})
    store = store_factory("file-distribution")

    client = Client(server.host, use_docker_config=False)
    with client, pytest.raises(DigestMismatchError):
        pull(client, store, NAME, TAG)

    assert store.blob_status(digest).state is BlobState.ABSENT
    assert server.gets[digest] == 1


def test_a_blob_stream_of_unknown_length_hands_over_exactly_the_bound(chunked_registry) -> None:
    digest = sha256_digest(b"anything")
    server = chunked_registry({digest: None})
    bound = 300 * KiB + 7
    received = 0

    client = Client(server.host, use_docker_config=False, max_unknown_blob_size=bound)
    with client, client.get_blob(NAME, digest) as stream:
        assert (stream.length, stream.size) == (None, None)
        with pytest.raises(BlobTooLargeError):
            for chunk in stream.iter_chunks(64 * KiB):
                received += len(chunk)

    assert received == bound


# -- item 4: a stale staged prefix --------------------------------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_wrong_staged_prefix_is_refetched_from_zero_in_the_same_run(
    kind: str,
    store_factory: Callable[[str], ObjectStore],
    registry: RegistryServer,
    fault_proxy_factory,
) -> None:
    built = build_image(layers=1, layer_size=MiB, seed=104, media="docker")
    seed_registry(registry.url, "stale/img", "1", built)
    layer = built.layer_digests[0]
    store = store_factory(kind)
    plant_staged_prefix(store, layer, random_blob(300 * KiB, seed=5))
    proxy = fault_proxy_factory(registry)

    pull(Client(proxy.host), store, "stale/img", "1")

    with store.layer(layer).reader() as reader:
        assert reader.read() == built.blobs[layer]
    gets = proxy.requests_matching("GET", f"/blobs/{layer}")
    assert [g.headers.get("Range") for g in gets] == [f"bytes={300 * KiB}-", None]
    assert store.resolve("stale/img", "1") == built.manifest_digest


def test_more_bytes_staged_than_the_blob_has_are_discarded(
    store_factory: Callable[[str], ObjectStore], registry: RegistryServer
) -> None:
    built = build_image(layers=1, layer_size=64 * KiB, seed=105, media="oci")
    seed_registry(registry.url, "stale/long", "1", built)
    layer = built.layer_digests[0]
    store = store_factory("file-oci")
    plant_staged_prefix(store, layer, random_blob(len(built.blobs[layer]) + 100, seed=6))

    pull(Client(registry.host), store, "stale/long", "1")

    with store.layer(layer).reader() as reader:
        assert reader.read() == built.blobs[layer]


def ranged(body: bytes) -> Responder:
    """Serve ``body`` honouring ``Range: bytes=N-`` (416 past the end), as registries do."""

    def answer(request: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        wanted = request.headers.get("Range")
        if wanted is None:
            return 200, {}, body
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        if start >= len(body):
            return 416, {"Content-Range": f"bytes */{len(body)}"}, b""
        end = len(body) - 1
        return 206, {"Content-Range": f"bytes {start}-{end}/{len(body)}"}, body[start:]

    return answer


def test_a_stale_prefix_past_the_end_of_a_schema1_blob_is_discarded(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    layer = random_blob(40 * KiB, seed=62)
    digest = sha256_digest(layer)
    fake_registry.expect(
        "GET", f"/v2/{NAME}/manifests/{TAG}", body=schema1_manifest([digest]),
        headers={"Content-Type": DOCKER_MANIFEST_V1}, times=None,
    )  # fmt: skip
    fake_registry.expect("GET", f"/v2/{NAME}/blobs/{digest}", body=ranged(layer), times=None)
    store = open_store(str(tmp_path / "store"))
    plant_staged_prefix(store, digest, random_blob(len(layer) + 10, seed=8))

    with Client(fake_registry.host, use_docker_config=False) as client:
        pull(client, store, NAME, TAG)

    with store.layer(digest).reader() as reader:
        assert reader.read() == layer
    gets = fake_registry.requests_to("GET", f"/v2/{NAME}/blobs/{digest}")
    assert [g.headers.get("Range") for g in gets] == [f"bytes={len(layer) + 10}-", None]


@pytest.mark.parametrize("planted", [True, False], ids=["resumed", "fresh"])
def test_a_source_that_sends_wrong_bytes_fails_after_at_most_one_restart(
    planted: bool, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    built = build_image(layers=1, layer_size=32 * KiB, seed=106, media="docker")
    layer = built.layer_digests[0]
    wrong = random_blob(len(built.blobs[layer]), seed=9)
    fake_registry.expect(
        "GET", f"/v2/{NAME}/manifests/{TAG}", body=built.manifest_bytes,
        headers={"Content-Type": built.manifest_media_type}, times=None,
    )  # fmt: skip
    fake_registry.expect(
        "GET", f"/v2/{NAME}/blobs/{built.config_digest}", body=built.config, times=None
    )
    fake_registry.expect("GET", f"/v2/{NAME}/blobs/{layer}", body=ranged(wrong), times=None)
    store = open_store(str(tmp_path / "store"))
    if planted:
        plant_staged_prefix(store, layer, built.blobs[layer][: 10 * KiB])

    client = Client(fake_registry.host, use_docker_config=False)
    with client, pytest.raises(DigestMismatchError):
        pull(client, store, NAME, TAG)

    gets = fake_registry.requests_to("GET", f"/v2/{NAME}/blobs/{layer}")
    assert len(gets) == (2 if planted else 1)
    assert store.blob_status(layer).state is BlobState.ABSENT
