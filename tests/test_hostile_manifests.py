"""Manifests a registry takes but a mirror must not: an index whose child descriptor names the
wrong size, a layer the registry does not hold because its manifest says to fetch it from
elsewhere (a foreign layer).

docker-registry takes such an index; a mirror of it is refused by clients that check
descriptor sizes (containerd among them). A pull refuses it, as it refuses a blob of the wrong
size, and ``verify`` reports one already stored. A foreign layer the source lacks is named as
such.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from regstore import (
    BlobNotFoundError,
    ManifestInvalidError,
    UnsupportedError,
    open_store,
    pull,
)
from regstore.client import Client
from regstore.engine.verify import verify
from regstore.manifest import Manifest
from regstore.testing.builders import BuiltImage, build_image, write_blob

from .support.cli import run_cli
from .support.engine import push_raw_blob, seed_registry
from .support.registry import RegistryServer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _index(child: BuiltImage, extra: int) -> bytes:
    descriptor = child.descriptor(with_platform=True)
    descriptor["size"] += extra
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
    ).encode()


@pytest.mark.parametrize("extra", [10, -1])
def test_a_pull_refuses_an_index_listing_a_child_with_the_wrong_size(
    registry: RegistryServer, tmp_path: Path, extra: int
) -> None:
    child = build_image(seed=5, layers=1, layer_size=300, media="oci")
    name = f"lie/app{extra + 1}"
    seed_registry(registry.url, name, None, child)
    put = requests.put(
        f"{registry.url}/v2/{name}/manifests/v1",
        data=_index(child, extra),
        headers={"Content-Type": OCI_INDEX},
    )
    assert put.status_code == 201  # the registry itself takes it
    store = open_store(str(tmp_path / "store"))

    with pytest.raises(ManifestInvalidError) as info:
        pull(Client(registry.host), store, name, "v1")
    size = len(child.manifest_bytes)
    assert f"with size {size + extra}, but that manifest is {size} bytes" in str(info.value)
    assert name not in store.repositories()  # nothing visible


def test_verify_reports_a_stored_index_listing_a_child_with_the_wrong_size(
    tmp_path: Path,
) -> None:
    child = build_image(seed=6, layers=1, layer_size=300, media="oci")
    store = open_store(str(tmp_path / "store"))
    for data in child.blobs.values():
        write_blob(store, data)
    store.write_manifest("lie/app", None, Manifest(child.manifest_bytes))
    good = Manifest(_index(child, 0))
    bad = Manifest(_index(child, 10))
    store.write_manifest("lie/app", "good", good)
    store.write_manifest("lie/app", "bad", bad)

    report = verify(store, quarantine=False)

    problems = [(p.kind, p.subject) for p in report.problems]
    assert problems == [("wrong-child-size", str(bad.digest))]
    (problem,) = report.problems
    size = len(child.manifest_bytes)
    assert f"with size {size + 10}, but that manifest is {size} bytes" in problem.detail
    # and the command line does not send its user to pull it again
    said = run_cli("verify", home=tmp_path / "home", store=str(tmp_path / "store"))
    assert said.returncode == 1
    assert "lie/app:bad" in said.stderr and "pulling again does not mend it" in said.stderr


@pytest.fixture(scope="module")
def foreign_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry that takes manifests with foreign layers (their URLs allowed)."""
    allow = {"validation": {"manifests": {"urls": {"allow": ["^https?://"]}}}}
    server = RegistryServer(tmp_path_factory.mktemp("foreign"), extra_config=allow).start()
    yield server
    server.stop()


def test_a_foreign_layer_the_registry_does_not_hold_is_named_as_such(
    foreign_registry: RegistryServer, tmp_path: Path
) -> None:
    # it failed with a bare "No blob found": nothing said the layer is fetched from elsewhere
    image = build_image(seed=7, layers=1, layer_size=300, media="docker")
    for digest, data in image.blobs.items():
        push_raw_blob(foreign_registry.url, "foreign/app", digest, data, len(data))
    manifest = image.manifest
    foreign = "sha256:" + "ab" * 32
    manifest["layers"].append(
        {
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": foreign,
            "size": 1234,
            "urls": ["https://example.invalid/layer.tar.gz"],
        }
    )
    put = requests.put(
        f"{foreign_registry.url}/v2/foreign/app/manifests/v1",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": image.manifest_media_type},
        timeout=30,
    )
    assert put.status_code == 201, put.text
    store = open_store(str(tmp_path / "store"))

    with pytest.raises(UnsupportedError) as info:
        pull(Client(foreign_registry.host), store, "foreign/app", "v1")
    message = str(info.value)
    assert f"layer {foreign} of foreign/app is non-distributable" in message
    assert "https://example.invalid/layer.tar.gz" in message
    assert isinstance(info.value.__cause__, BlobNotFoundError)
    assert "foreign/app" not in store.repositories()
