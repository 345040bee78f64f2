"""The client against a real Debian ``docker-registry`` 2.8: the same matrix without auth,
with Basic auth and with token auth (a real token server)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regstore.client import BlobData, Client, UploadSession
from regstore.digest import digest_bytes
from regstore.errors import (
    AuthenticationError,
    BlobNotFoundError,
    BlobUploadNotFoundError,
    ImageManifestNotFoundError,
    RegistryError,
    RepositoryNotFoundError,
)
from regstore.manifest import Manifest
from regstore.reference import Digest
from regstore.testing.builders import (
    EMPTY_GZIP_TAR,
    EMPTY_GZIP_TAR_DIGEST,
    Built,
    BuiltIndex,
    build_image,
    build_index,
    random_blob,
)
from tests.support.registry import RegistryServer

AUTH_MODES = ("none", "basic", "token")


@pytest.fixture(params=AUTH_MODES)
def reg(request: pytest.FixtureRequest) -> RegistryServer:
    """Each test runs against a no-auth, a Basic-auth and a token-auth registry."""
    fixture = {"none": "registry", "basic": "basic_registry", "token": "token_registry"}
    server: RegistryServer = request.getfixturevalue(fixture[request.param])
    return server


def make_client(server: RegistryServer, **options: object) -> Client:
    """A client for ``server`` with its credentials and no docker config (hermetic)."""
    creds = server.credentials
    return Client(
        server.host,
        username=creds[0] if creds else None,
        password=creds[1] if creds else None,
        use_docker_config=False,
        backoff=0.01,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(reg: RegistryServer) -> Iterator[Client]:
    with make_client(reg) as c:
        yield c


def push_built(client: Client, name: str, tag: str, built: Built) -> None:
    """Push an image or index with the client alone: blobs, children, then the tag."""
    for digest, data in built.blobs.items():
        if client.blob_exists(name, digest):
            continue
        session = client.initiate_blob_upload(name)
        assert session.location is not None
        client.upload_blob(session.location, data, len(data), digest)
    if isinstance(built, BuiltIndex):
        for child in built.children:
            child_manifest = Manifest(child.manifest_bytes, child.manifest_media_type)
            client.put_image_manifest(name, child.manifest_digest, child_manifest)
    top = Manifest(built.manifest_bytes, built.manifest_media_type)
    assert client.put_image_manifest(name, tag, top) == built.manifest_digest


def upload(client: Client, name: str, data: bytes) -> Digest:
    session = client.initiate_blob_upload(name)
    assert session.location is not None
    return client.upload_blob(session.location, data, len(data), digest_bytes(data))


# -- basics ------------------------------------------------------------------------------------


def test_ping(client: Client) -> None:
    client.ping()


@pytest.mark.parametrize("kind", ["bytes", "file", "chunks"])
def test_monolithic_upload_and_reads(client: Client, tmp_path: Path, kind: str) -> None:
    data = random_blob(3 * 1024 * 1024 + 17, seed=1)
    digest = digest_bytes(data)
    assert client.blob_length("t/app", digest) == -1
    assert not client.blob_exists("t/app", digest)
    session = client.initiate_blob_upload("t/app")
    assert session.location is not None and not session.mounted
    assert client.get_blob_upload_status(session.location).offset == 0
    source: BlobData
    if kind == "bytes":
        source = data
    elif kind == "file":
        path = tmp_path / "blob"
        path.write_bytes(b"HEADER" + data)
        source = open(path, "rb")  # noqa: SIM115 - closed below
        source.seek(6)
    else:
        source = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    try:
        assert client.upload_blob(session.location, source, len(data), digest) == digest
    finally:
        if isinstance(source, io.IOBase):
            source.close()
    assert client.blob_length("t/app", digest) == len(data)
    assert client.head_blob("t/app", digest) == len(data)
    with client.get_blob("t/app", digest) as stream:
        assert (stream.offset, stream.length, stream.size) == (0, len(data), len(data))
        got = b"".join(stream.iter_chunks())
    assert got == data
    with client.get_blob("t/app", digest, byte_offset=1000) as stream:
        assert (stream.offset, stream.length, stream.size) == (1000, len(data) - 1000, len(data))
        buf = bytearray(4096)
        n = stream.readinto(buf)
        assert bytes(buf[:n]) == data[1000 : 1000 + n]
        assert n + len(stream.read()) == len(data) - 1000
    with client.get_blob("t/app", digest, byte_offset=len(data)) as stream:
        assert (stream.offset, stream.length, stream.size) == (len(data), 0, len(data))
        assert stream.read() == b""


def test_empty_and_small_blobs(client: Client) -> None:
    for data in (b"", b"x", EMPTY_GZIP_TAR):
        digest = upload(client, "t/small", data)
        assert client.blob_length("t/small", digest) == len(data)
        assert client.fetch_blob("t/small", digest) == data
    assert digest == EMPTY_GZIP_TAR_DIGEST


def test_chunked_upload_with_status_and_resume(client: Client) -> None:
    data = random_blob(2_500_000, seed=2)
    digest = digest_bytes(data)
    session = client.initiate_blob_upload("t/chunked")
    location = session.location
    assert location is not None
    sizes = [1_000_000, 700_000]
    pos = 0
    for size in sizes:
        location = client.upload_blob_chunk(location, data[pos : pos + size], size, pos)
        pos += size
        status = client.get_blob_upload_status(location)
        assert status.offset == pos
        location = status.location
    # "Resume": a new process only knows the location; it asks where to continue.
    status = client.get_blob_upload_status(location)
    rest = data[status.offset :]
    location = client.upload_blob_chunk(status.location, rest, len(rest), status.offset)
    assert client.finish_chunked_blob_upload(location, len(data), digest) == digest
    assert client.fetch_blob("t/chunked", digest) == data
    with pytest.raises(BlobUploadNotFoundError):
        client.get_blob_upload_status(location)


def test_single_byte_first_chunk_is_not_ambiguous(client: Client) -> None:
    data = b"ab"
    session = client.initiate_blob_upload("t/tiny")
    assert session.location is not None
    location = client.upload_blob_chunk(session.location, data[:1], 1, 0)
    assert client.get_blob_upload_status(location).offset == 1  # "0-0" after one byte sent
    location = client.upload_blob_chunk(location, data[1:], 1, 1)
    assert client.finish_chunked_blob_upload(location, 2, digest_bytes(data)) == digest_bytes(data)


def test_registry_28_appends_out_of_order_chunks_and_client_notices(client: Client) -> None:
    """2.8 ignores Content-Range (never 416): the client detects the spoilt upload."""
    session = client.initiate_blob_upload("t/order")
    assert session.location is not None
    location = client.upload_blob_chunk(session.location, b"a" * 100, 100, 0)
    with pytest.raises(RegistryError, match="did not honour Content-Range"):
        client.upload_blob_chunk(location, b"b" * 100, 100, 50)


def test_cancel_then_location_is_unknown(client: Client) -> None:
    session = client.initiate_blob_upload("t/cancel")
    assert session.location is not None
    location = client.upload_blob_chunk(session.location, b"z" * 10, 10, 0)
    client.cancel_blob_upload(location)
    with pytest.raises(BlobUploadNotFoundError) as info:
        client.get_blob_upload_status(location)
    assert info.value.location == location
    with pytest.raises(BlobUploadNotFoundError):
        client.upload_blob_chunk(location, b"y", 1, 10)
    with pytest.raises(BlobUploadNotFoundError):
        client.upload_blob(location, b"y", 1, digest_bytes(b"y"))
    with pytest.raises(BlobUploadNotFoundError):
        client.cancel_blob_upload(location)


def test_cross_repository_mount(client: Client) -> None:
    data = random_blob(5000, seed=3)
    digest = upload(client, "t/source", data)
    mounted = client.initiate_blob_upload("t/target", mount=digest, from_="t/source")
    assert mounted == UploadSession("t/target", None, mounted=True, digest=digest)
    assert client.blob_length("t/target", digest) == len(data)
    missing = digest_bytes(b"not there")
    session = client.initiate_blob_upload("t/target", mount=missing, from_="t/source")
    assert not session.mounted and session.location is not None
    assert client.upload_blob(session.location, b"not there", 9, missing) == missing


# -- manifests -----------------------------------------------------------------------------------

CONTENT: dict[str, Callable[[], Built]] = {
    "oci-image": lambda: build_image(media="oci", seed=10),
    "docker-image": lambda: build_image(media="docker", seed=11, empty_layer=True),
    "oci-index": lambda: build_index(media="oci", seed=12),
    "docker-list": lambda: build_index(media="docker", seed=13),
}


@pytest.mark.parametrize("kind", sorted(CONTENT))
def test_manifest_round_trip(client: Client, kind: str) -> None:
    built = CONTENT[kind]()
    push_built(client, "t/img", "v1", built)
    for reference in ("v1", built.manifest_digest):
        manifest = client.get_image_manifest("t/img", reference)
        assert manifest.raw == built.manifest_bytes
        assert manifest.media_type == built.manifest_media_type
        assert manifest.digest == built.manifest_digest
        info = client.head_manifest("t/img", reference)
        assert info is not None
        assert (info.digest, info.media_type, info.size) == (
            built.manifest_digest,
            built.manifest_media_type,
            len(built.manifest_bytes),
        )
    if isinstance(built, BuiltIndex):
        for child in built.children:
            got = client.get_image_manifest("t/img", child.manifest_digest)
            assert got.raw == child.manifest_bytes
    for digest, data in built.blobs.items():
        assert client.fetch_blob("t/img", digest) == data


def test_missing_things(client: Client) -> None:
    push_built(client, "t/here", "v1", build_image(media="oci", seed=20))
    with pytest.raises(ImageManifestNotFoundError) as manifest_err:
        client.get_image_manifest("t/here", "nope")
    assert (manifest_err.value.name, manifest_err.value.tag) == ("t/here", "nope")
    assert client.head_manifest("t/here", "nope") is None
    absent = digest_bytes(b"absent")
    with pytest.raises(BlobNotFoundError) as blob_err:
        client.get_blob("t/here", absent)
    assert blob_err.value.digest == absent
    with pytest.raises(BlobNotFoundError):
        client.fetch_blob("t/here", absent)
    assert client.blob_length("t/here", absent) == -1
    with pytest.raises(RepositoryNotFoundError):
        client.list_image_tags("t/nowhere")


def test_tags_many_and_catalog(client: Client) -> None:
    built = build_image(media="docker", seed=30)
    push_built(client, "t/tags", "v0", built)
    manifest = Manifest(built.manifest_bytes, built.manifest_media_type)
    tags = {f"v{i}" for i in range(30)}
    for tag in sorted(tags - {"v0"}):
        client.put_image_manifest("t/tags", tag, manifest)
    assert sorted(client.list_image_tags("t/tags")) == sorted(tags)
    assert sorted(client.list_image_tags("t/tags", n=7)) == sorted(tags)  # 2.8 ignores n
    push_built(client, "t/other", "x", built)
    assert {"t/tags", "t/other"} <= set(client.catalog())
    assert {"t/tags", "t/other"} <= set(client.catalog(n=1))  # 2.8 pages the catalog via Link


def test_delete_by_tag_falls_back_to_digest(client: Client) -> None:
    built = build_image(media="oci", seed=40)
    push_built(client, "t/del", "a", built)
    manifest = Manifest(built.manifest_bytes, built.manifest_media_type)
    client.put_image_manifest("t/del", "b", manifest)
    other = build_image(media="oci", seed=41)
    push_built(client, "t/del", "keep", other)
    client.delete_image("t/del", "a")
    for tag in ("a", "b"):  # the digest went, and with it every tag on it
        assert client.head_manifest("t/del", tag) is None
    assert client.head_manifest("t/del", "keep") is not None
    client.delete_image("t/del", other.manifest_digest)
    with pytest.raises(ImageManifestNotFoundError):
        client.get_image_manifest("t/del", other.manifest_digest)
    with pytest.raises(ImageManifestNotFoundError):
        client.delete_image("t/del", other.manifest_digest)
    with pytest.raises(ImageManifestNotFoundError):
        client.delete_image("t/del", "never")


def test_delete_blob(client: Client) -> None:
    digest = upload(client, "t/blobdel", b"delete me")
    client.delete_blob("t/blobdel", digest)
    assert not client.blob_exists("t/blobdel", digest)


# -- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_wrong_credentials(request: pytest.FixtureRequest, mode: str) -> None:
    server: RegistryServer = request.getfixturevalue(f"{mode}_registry")
    secret = "wrong-password-XYZZY"
    client = Client(server.host, username="regstore", password=secret, use_docker_config=False)
    with pytest.raises(AuthenticationError) as info:
        client.get_image_manifest("t/app", "v1")
    text = str(info.value)
    assert secret not in text and secret not in repr(info.value) and secret not in repr(client)
    assert "fetching manifest t/app:v1" in text and server.host in text
    assert "regstore login" in text and "--password-stdin" in text  # (no --password)
    if mode == "token":
        assert "repository:t/app:pull" in text


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_anonymous_access_refused(request: pytest.FixtureRequest, mode: str) -> None:
    server: RegistryServer = request.getfixturevalue(f"{mode}_registry")
    client = Client(server.host, use_docker_config=False)
    with pytest.raises(AuthenticationError, match="regstore login"):
        client.list_image_tags("t/app")


def test_credentials_callable_is_used(basic_registry: RegistryServer) -> None:
    asked: list[str] = []

    def provider(registry: str) -> tuple[str, str] | None:
        asked.append(registry)
        return basic_registry.credentials

    client = Client(basic_registry.host, credentials=provider, use_docker_config=False)
    client.ping()
    client.ping()
    assert asked == [basic_registry.host]


def test_tokens_are_cached_per_scope(token_registry: RegistryServer) -> None:
    assert token_registry.token_server is not None
    client = make_client(token_registry)
    push_built(client, "t/cache", "v1", build_image(media="oci", seed=50))
    token_registry.token_server.clear_requests()
    for _ in range(5):  # the pull token the push got is reused
        client.get_image_manifest("t/cache", "v1")
        client.head_manifest("t/cache", "v1")
    assert token_registry.token_server.token_count == 0
    fresh = make_client(token_registry)
    for _ in range(5):
        fresh.get_image_manifest("t/cache", "v1")
        fresh.head_manifest("t/cache", "v1")
    assert token_registry.token_server.token_count == 1  # one pull token, then reused
    assert fresh.transport.auth.token_fetches == 1
