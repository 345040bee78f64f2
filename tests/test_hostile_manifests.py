"""An index whose child descriptor names the wrong size.

docker-registry takes such an index; a mirror of it is refused by clients that check
descriptor sizes (containerd among them). A pull refuses it, as it refuses a blob of the wrong
size, and ``verify`` reports one already stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from regstore import ManifestInvalidError, open_store, pull
from regstore.client import Client
from regstore.engine.verify import verify
from regstore.manifest import Manifest
from regstore.testing.builders import BuiltImage, build_image, write_blob

from .support.engine import seed_registry
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
    assert problems == [("damaged-manifest", str(bad.digest))]
    (problem,) = report.problems
    size = len(child.manifest_bytes)
    assert f"with size {size + 10}, but that manifest is {size} bytes" in problem.detail
