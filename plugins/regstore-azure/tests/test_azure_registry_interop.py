"""Round trips through real peers: a stock ``docker-registry`` and an S3 (moto) store.

- pull/push: an image pushed to one registry is pulled by ``regstore pull`` into an Azure
  store (Azurite), pushed by ``regstore push`` to a second registry, and skopeo sees the very
  same manifest bytes and blobs there;
- ``regstore copy`` from an S3 store (moto's server) to an Azure store and back to another S3
  prefix: every manifest and blob byte-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from regstore import ObjectStore, open_store
from regstore.testing.builders import BuiltImage, build_image
from tests.support.cli import put_image, run_cli
from tests.support.fixtures import S3Bucket
from tests.support.registry import RegistryServer
from tests.support.skopeo import skopeo_copy, skopeo_inspect_raw

CREDENTIALS = "key=testing&secret=testing&region=us-east-1"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _assert_holds(store: ObjectStore, name: str, tag: str, image: BuiltImage) -> None:
    assert store.manifest(name, tag).raw == image.manifest_bytes
    for digest, data in image.blobs.items():
        with store.layer(digest).reader() as reader:
            assert reader.read() == data


@pytest.mark.slow
def test_pull_into_azure_and_push_out_keeps_every_byte(
    registry_factory: Callable[..., RegistryServer],
    azure_url_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    source, target = registry_factory(), registry_factory()
    # one layer over a block (4 MiB), so a blob of several staged blocks travels too
    image = build_image(layers=2, layer_size=5 * 1024 * 1024, seed=51, media="oci")
    source.push_content("team/app", "1", image)
    url = azure_url_factory("mirror")

    pulled = run_cli("pull", f"{source.host}/team/app:1", home=tmp_path, store=url)
    assert pulled.returncode == 0, str(pulled)
    store = open_store(url)
    try:
        _assert_holds(store, "team/app", "1", image)
    finally:
        store.close()
    pushed = run_cli(
        "push", "store:team/app:1", f"{target.host}/team/app:1", home=tmp_path, store=url
    )
    assert pushed.returncode == 0, str(pushed)

    assert skopeo_inspect_raw(f"docker://{target.host}/team/app:1") == image.manifest_bytes
    dest = tmp_path / "pulled"
    skopeo_copy(f"docker://{target.host}/team/app:1", f"dir:{dest}")
    assert _sha256((dest / "manifest.json").read_bytes()) == image.manifest_digest
    for digest, data in image.blobs.items():
        assert (dest / digest.split(":", 1)[1]).read_bytes() == data


def test_copy_between_s3_and_azure_is_byte_identical(
    s3_bucket: S3Bucket, azure_url_factory: Callable[..., str], tmp_path: Path
) -> None:
    endpoint, bucket = s3_bucket
    s3_url = f"s3://{bucket}/source?endpoint_url={endpoint}&{CREDENTIALS}"
    back_url = f"s3://{bucket}/back?endpoint_url={endpoint}&{CREDENTIALS}&layout=oci"
    azure_url = azure_url_factory("copied", layout="oci")
    image = build_image(layers=2, layer_size=4 * 1024 * 1024 + 17, seed=52, media="docker")
    source = open_store(s3_url)
    try:
        put_image(source, "team/app", "1", image)
    finally:
        source.close()
    for src, dest in [(s3_url, azure_url), (azure_url, back_url)]:
        copied = run_cli(
            "copy", "--src-store", src, "--dest-store", dest, "store:team/app:1",
            "store:team/app:1", home=tmp_path,
        )  # fmt: skip
        assert copied.returncode == 0, str(copied)
    for url in (azure_url, back_url):
        store = open_store(url)
        try:
            _assert_holds(store, "team/app", "1", image)
            assert store.tags("team/app") == ["1"]
        finally:
            store.close()
