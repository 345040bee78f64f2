"""A real peer reads what the S3 backend wrote: a stock Debian ``docker-registry`` with its S3
storage driver, pointed at the bucket and prefix of a regstore store in the distribution
layout, serves every image, and skopeo pulls each one with identical digests.

Images are written through the ObjectStore facade only (no engine): blobs with layer writers,
manifests with ``write_manifest`` — index children by digest first, the tag last. The registry
gets ``storage.redirect.disable: true`` and no ``AWS_*`` variables (the fixtures see to both).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from regstore import ObjectStore
from regstore.manifest import Manifest
from regstore.testing.builders import BuiltImage, BuiltIndex, build_image, build_index
from tests.support.fixtures import S3Bucket
from tests.support.registry import RegistryServer, S3Storage
from tests.support.skopeo import skopeo_copy, skopeo_inspect_raw, skopeo_list_tags

ROOT = "registry"  # the store's prefix = the registry's rootdirectory


def _write_blob(store: ObjectStore, digest: str, data: bytes) -> None:
    layer = store.layer(digest)
    if layer.exists():
        return
    writer = layer.writer()
    writer.set_size(len(data))
    for start in range(0, len(data), 64 * 1024):
        writer.write(data[start : start + 64 * 1024])
    writer.commit()


def _write_image(store: ObjectStore, name: str, tag: str | None, image: BuiltImage) -> None:
    for digest, data in image.blobs.items():
        _write_blob(store, digest, data)
    store.write_manifest(name, tag, Manifest.parse(image.manifest_bytes, image.manifest_media_type))


def _write_index(store: ObjectStore, name: str, tag: str, index: BuiltIndex) -> None:
    for child in index.children:
        _write_image(store, name, None, child)
    store.write_manifest(name, tag, Manifest.parse(index.manifest_bytes, index.manifest_media_type))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _pull_and_check(registry: RegistryServer, ref: str, image: BuiltImage, dest: Path) -> None:
    """skopeo copies ``ref`` to a ``dir:`` layout; manifest and blobs keep their digests."""
    skopeo_copy(f"docker://{registry.host}/{ref}", f"dir:{dest}")
    manifest = (dest / "manifest.json").read_bytes()
    assert _sha256(manifest) == image.manifest_digest
    for digest, data in image.blobs.items():
        pulled = (dest / digest.split(":", 1)[1]).read_bytes()
        assert _sha256(pulled) == digest
        assert pulled == data


@pytest.mark.slow
def test_registry_serves_a_store_written_on_s3(
    s3_bucket: S3Bucket,
    s3_store_factory: Callable[..., ObjectStore],
    registry_factory: Callable[..., RegistryServer],
    tmp_path: Path,
) -> None:
    store = s3_store_factory(ROOT, layout="distribution", part_size="5MiB")
    docker_image = build_image(layers=2, layer_size=4096, seed=41, media="docker")
    oci_image = build_image(layers=1, layer_size=2048, seed=42, media="oci")
    # one layer over 5 MiB, so a multipart-completed object is served too
    big_image = build_image(layers=1, layer_size=6 * 1024 * 1024, seed=43, media="oci")
    index = build_index(media="oci", seed=44, layers=1, layer_size=1024)
    _write_image(store, "library/hello", "v1", docker_image)
    _write_image(store, "library/hello", "oci", oci_image)
    _write_image(store, "team/big", "latest", big_image)
    _write_index(store, "multi/arch", "1.0", index)

    registry = registry_factory(
        s3=S3Storage(s3_bucket.endpoint_url, s3_bucket.bucket, rootdirectory=f"/{ROOT}")
    )
    assert registry.config["storage"]["redirect"] == {"disable": True}

    assert sorted(skopeo_list_tags(f"docker://{registry.host}/library/hello")) == ["oci", "v1"]
    for ref, image in [
        ("library/hello:v1", docker_image),
        ("library/hello:oci", oci_image),
        ("team/big:latest", big_image),
    ]:
        raw = skopeo_inspect_raw(f"docker://{registry.host}/{ref}")
        assert raw == image.manifest_bytes, f"{ref}: the registry changed the manifest bytes"
        _pull_and_check(registry, ref, image, tmp_path / ref.replace("/", "_").replace(":", "_"))

    raw_index = skopeo_inspect_raw(f"docker://{registry.host}/multi/arch:1.0")
    assert raw_index == index.manifest_bytes
    listed = [m["digest"] for m in json.loads(raw_index)["manifests"]]
    assert listed == [child.manifest_digest for child in index.children]
    for i, child in enumerate(index.children):
        _pull_and_check(
            registry, f"multi/arch@{child.manifest_digest}", child, tmp_path / f"child-{i}"
        )
