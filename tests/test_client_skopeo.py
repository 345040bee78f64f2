"""Peer cross-check with skopeo: what this client pushes skopeo reads byte for byte, and what
skopeo pushes this client reads byte for byte (OCI and Docker media types, images and indexes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regstore.client import Client
from regstore.digest import digest_bytes
from regstore.testing.builders import Built, BuiltIndex, build_image, build_index
from tests.support.registry import RegistryServer
from tests.support.skopeo import push_with_skopeo, skopeo_copy, skopeo_inspect_raw
from tests.test_client_registry import make_client, push_built


def _layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


@pytest.mark.parametrize("kind", ["oci-image", "oci-index"])
def test_pushed_by_client_pulled_by_skopeo(
    basic_registry: RegistryServer, tmp_path: Path, kind: str
) -> None:
    built: Built = (
        build_image(media="oci", seed=60, layers=3, layer_size=300_000)
        if kind == "oci-image"
        else build_index(media="oci", seed=61)
    )
    client = make_client(basic_registry)
    push_built(client, "peer/app", "v1", built)
    ref = f"docker://{basic_registry.host}/peer/app:v1"
    creds = basic_registry.credentials
    assert skopeo_inspect_raw(ref, creds=creds) == built.manifest_bytes
    layout = tmp_path / "oci"
    extra = ["--all"] if isinstance(built, BuiltIndex) else []
    skopeo_copy(ref, f"oci:{layout}:v1", "--preserve-digests", *extra, creds=creds)
    index = json.loads((layout / "index.json").read_bytes())
    [entry] = index["manifests"]
    assert entry["digest"] == built.manifest_digest
    assert _layout_blob(layout, built.manifest_digest) == built.manifest_bytes
    for digest, data in built.blobs.items():
        blob = _layout_blob(layout, digest)
        assert digest_bytes(blob) == digest and blob == data


@pytest.mark.parametrize("media", ["oci", "docker"])
@pytest.mark.parametrize("shape", ["image", "index"])
def test_pushed_by_skopeo_read_by_client(
    token_registry: RegistryServer, tmp_path: Path, media: str, shape: str
) -> None:
    built: Built = (
        build_image(media=media, seed=70, layers=2)  # type: ignore[arg-type]
        if shape == "image"
        else build_index(media=media, seed=71)  # type: ignore[arg-type]
    )
    push_with_skopeo(
        built,
        f"docker://{token_registry.host}/peer/from-skopeo:v1",
        tmp_path,
        creds=token_registry.credentials,
    )
    client: Client = make_client(token_registry)
    manifest = client.get_image_manifest("peer/from-skopeo", "v1")
    assert manifest.raw == built.manifest_bytes
    assert manifest.media_type == built.manifest_media_type
    assert manifest.digest == built.manifest_digest
    for digest, (media_type, data) in built.manifests.items():
        child = client.get_image_manifest("peer/from-skopeo", digest)
        assert (child.raw, child.media_type) == (data, media_type)
    for digest, data in built.blobs.items():
        with client.get_blob("peer/from-skopeo", digest) as stream:
            assert stream.size == len(data)
            assert b"".join(stream.iter_chunks()) == data
    assert client.list_image_tags("peer/from-skopeo") == ["v1"]
