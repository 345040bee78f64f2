"""Platform-filtered copies to a registry, as crane's ``WithPlatform`` does: one platform lands
as its own image manifest under the tag (the source child's digest), several as a new index
listing exactly those children (a new digest, reported as rewritten); stores keep the exact
partial index. skopeo reads what was written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from regstore import ObjectStore
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage, copy, transfer_many
from regstore.testing.builders import BuiltIndex, build_index
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer
from tests.support.skopeo import skopeo_inspect_raw

THREE = [("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x")]


def _seeded(registry: RegistryServer) -> BuiltIndex:
    index = build_index(media="oci", seed=61, platforms=THREE, layer_size=512)
    seed_registry(registry.url, "team/multi", "1", index)
    return index


def test_one_platform_lands_as_the_child_manifest_under_the_tag(registry: RegistryServer) -> None:
    index = _seeded(registry)
    client = Client(registry.host)
    arm = index.children[1]

    result = copy(
        RegistryImage(client, "team/multi", "1"),
        RegistryImage(client, "backup/multi", "arm"),
        platforms=["linux/arm64"],
    )

    assert result.manifest_digest == arm.manifest_digest
    assert result.rewritten_from == index.manifest_digest
    assert result.as_dict()["rewritten_from"] == index.manifest_digest
    raw = skopeo_inspect_raw(f"docker://{registry.host}/backup/multi:arm")
    assert raw == arm.manifest_bytes


def test_two_platforms_land_as_a_new_index_of_exactly_those(registry: RegistryServer) -> None:
    index = _seeded(registry)
    client = Client(registry.host)
    amd, s390x = index.children[0], index.children[2]

    result = copy(
        RegistryImage(client, "team/multi", "1"),
        RegistryImage(client, "backup/multi", "two"),
        platforms=["linux/amd64", "linux/s390x"],
    )

    assert result.rewritten_from == index.manifest_digest
    assert result.manifest_digest != index.manifest_digest
    raw = skopeo_inspect_raw(f"docker://{registry.host}/backup/multi:two")
    doc = json.loads(raw)
    assert [m["digest"] for m in doc["manifests"]] == [amd.manifest_digest, s390x.manifest_digest]
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "s390x"]
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == result.manifest_digest
    for child in (amd, s390x):
        child_raw = skopeo_inspect_raw(
            f"docker://{registry.host}/backup/multi@{child.manifest_digest}"
        )
        assert child_raw == child.manifest_bytes
    # a second run (skip_unchanged) finds the same new index under the tag and moves nothing
    job = (RegistryImage(client, "team/multi", "1"), RegistryImage(client, "backup/multi", "two"))
    again = transfer_many([job], platforms=["linux/amd64", "linux/s390x"]).outcomes[0].result
    assert again is not None and again.unchanged
    assert again.manifest_digest == result.manifest_digest


def test_a_store_keeps_the_partial_index_with_its_exact_digest(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    index = _seeded(registry)
    store = store_factory("memory")

    result = copy(
        RegistryImage(Client(registry.host), "team/multi", "1"),
        StoreImage(store, "mirror/multi"),
        platforms=["linux/amd64", "linux/s390x"],
    )

    assert result.rewritten_from is None and result.partial
    assert result.manifest_digest == index.manifest_digest
    assert store.manifest("mirror/multi", "1").raw == index.manifest_bytes
