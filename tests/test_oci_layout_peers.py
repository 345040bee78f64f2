"""An OCI-layout store that skopeo and umoci write into too (``file://DIR?layout=oci``).

- skopeo's ``copy --all ... oci:DIR:NAME:TAG`` adds the index alone to ``index.json`` (its
  children are plain blobs): the repository holds those children, gc keeps what they use;
- skopeo's ``addManifest`` replaces regstore's unnamed descriptor of an index child with its
  own (no repository annotation): the child stays held through regstore's index;
- umoci's ``tag``/``config --tag`` copy regstore's repository annotation onto a descriptor with
  a bare ref name: that one is umoci's, and regstore's writes and ``gc --untagged`` keep it;
- a Docker manifest (list) gets the OCI type in its descriptor (skopeo looks ref names up only
  among OCI-typed ones), and still reads back with its own type.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.client import Client
from regstore.engine import pull
from regstore.engine.gc import collect_garbage, delete_image
from regstore.engine.verify import verify
from regstore.errors import RegstoreError
from regstore.manifest import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
)
from regstore.store import ObjectStore
from regstore.testing.builders import BuiltIndex, build_image, build_index
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer
from tests.support.skopeo import UMOCI, skopeo_copy, skopeo_inspect_raw

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY = "io.regstore.repository"
#: a time after every grace period: gc takes whatever nothing keeps
LATER = 3600.0


def _entries(root: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((root / "index.json").read_bytes())["manifests"]
    return entries


def _umoci(*args: str) -> None:
    subprocess.run([UMOCI, *args], check=True, capture_output=True, timeout=120)


def _blob(root: Path, digest: str) -> Path:
    algorithm, hex_ = digest.split(":")
    return root / "blobs" / algorithm / hex_


def _assert_sound(store: ObjectStore) -> None:
    """Every tag reads and lists whole, and verify finds nothing wrong."""
    unreadable: list[tuple[str, str, RegstoreError]] = []
    store.images(unreadable=unreadable)
    assert unreadable == []
    report = verify(store, quarantine=False)
    assert report.problems == []


def _gc(store: ObjectStore, *, untagged: bool = False) -> list[str]:
    report = collect_garbage(store, grace=0, now=time.time() + LATER, untagged=untagged)
    assert report.untagged_removed == []
    return [b.digest for b in report.removed]


def _children(index: BuiltIndex) -> list[str]:
    return [child.manifest_digest for child in index.children]


def test_an_index_skopeo_names_in_a_repository_holds_its_children(
    registry: RegistryServer, tmp_path: Path
) -> None:
    index = build_index(media="oci", seed=300, layer_size=200)
    ours = build_image(layers=1, layer_size=200, seed=301, media="oci")
    seed_registry(registry.url, "team/multi", "1", index)
    seed_registry(registry.url, "team/app", "1", ours)
    root = tmp_path / "layout"
    with open_store(f"file://{root}?layout=oci") as store:
        pull(Client(registry.host), store, "team/app", "1")
    skopeo_copy(
        f"docker://{registry.host}/team/multi:1",
        f"oci:{root}:skopeo/multi:1",
        "--all",
        "--preserve-digests",
    )
    # skopeo names the index alone; its children are plain blobs
    assert [e["digest"] for e in _entries(root) if e["digest"] in _children(index)] == []

    with open_store(f"file://{root}?layout=oci") as store:
        listed = {str(d) for d in store.manifests("skopeo/multi")}
        assert listed == {index.manifest_digest, *_children(index)}
        for child in index.children:
            read = store.manifest("skopeo/multi", child.manifest_digest)
            assert read.raw == child.manifest_bytes
            assert not store.is_partial("skopeo/multi", child.manifest_digest)
        assert store.repositories() == ["skopeo/multi", "team/app"]
        _assert_sound(store)
        assert _gc(store) == []
        assert _gc(store, untagged=True) == []
    out = tmp_path / "copied"
    skopeo_copy(f"oci:{root}:skopeo/multi:1", f"dir:{out}", "--all", "--preserve-digests")
    assert (out / "manifest.json").read_bytes() == index.manifest_bytes

    # the children go with their index: deleted, gc takes all of it (and leaves ours)
    with open_store(f"file://{root}?layout=oci") as store:
        assert delete_image(store, "skopeo/multi", "1") == [index.manifest_digest]
        assert store.repositories() == ["team/app"]
        removed = set(_gc(store))
    assert removed == set(index.blobs) | set(index.manifests)
    assert skopeo_inspect_raw(f"oci:{root}:team/app:1") == ours.manifest_bytes


def test_a_child_skopeo_tags_and_umoci_untags_stays_held_by_its_index(
    registry: RegistryServer, tmp_path: Path
) -> None:
    index = build_index(media="oci", seed=310, layer_size=200)
    seed_registry(registry.url, "team/multi", "latest", index)
    root = tmp_path / "layout"
    with open_store(f"file://{root}?layout=oci") as store:
        pull(Client(registry.host), store, "team/multi", "latest")
    child = index.children[0].manifest_digest
    # skopeo's addManifest replaces our unnamed descriptor of that child with its own
    skopeo_copy(
        f"docker://{registry.host}/team/multi@{child}",
        f"oci:{root}:amd64-only",
        "--preserve-digests",
    )
    assert [e["annotations"] for e in _entries(root) if e["digest"] == child] == [
        {REF_NAME: "amd64-only"}
    ]
    with open_store(f"file://{root}?layout=oci") as store:
        assert store.manifest("team/multi", child).raw == index.children[0].manifest_bytes
        _assert_sound(store)
    _umoci("rm", "--image", f"{root}:amd64-only")
    assert child not in {e["digest"] for e in _entries(root)}

    with open_store(f"file://{root}?layout=oci") as store:
        _assert_sound(store)
        assert _gc(store, untagged=True) == []
        # a regstore write of the child gives it its own unnamed descriptor again
        store.write_manifest("team/multi", None, store.manifest("team/multi", child))
        assert [e["annotations"] for e in _entries(root) if e["digest"] == child] == [
            {REPOSITORY: "team/multi"}
        ]
        _assert_sound(store)
    out = tmp_path / "copied"
    skopeo_copy(f"oci:{root}:team/multi:latest", f"dir:{out}", "--all", "--preserve-digests")
    assert all((out / digest.split(":")[1]).is_file() for digest in index.blobs)


def test_tags_umoci_makes_from_regstore_entries_are_umoci_s(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = build_image(layers=1, layer_size=200, seed=320, media="oci")
    other = build_image(layers=1, layer_size=200, seed=321, media="oci")
    seed_registry(registry.url, "team/app", "2.0", image)
    seed_registry(registry.url, "team/app", "1.0", other)
    root = tmp_path / "layout"
    with open_store(f"file://{root}?layout=oci") as store:
        pull(Client(registry.host), store, "team/app", "2.0")
    # umoci copies our repository annotation onto the descriptors it adds
    _umoci("tag", "--image", f"{root}:team/app:2.0", "stable")
    _umoci("config", "--image", f"{root}:team/app:2.0", "--tag", "custom", "--config.env", "X=1")
    _umoci("tag", "--image", f"{root}:team/app:2.0", "moved/app:3")
    by_ref = {e["annotations"][REF_NAME]: e for e in _entries(root)}
    assert by_ref["stable"]["annotations"][REPOSITORY] == "team/app"
    custom = by_ref["custom"]["digest"]

    with open_store(f"file://{root}?layout=oci") as store:
        assert store.tags("team/app") == ["2.0"]
        assert custom not in {str(d) for d in store.manifests("team/app")}
        # a NAME:TAG ref name says whose it is, before the annotation
        assert store.tags("moved/app") == ["3"]
        pull(Client(registry.host), store, "team/app", "1.0")  # rewrites index.json
        assert {"stable", "custom", "moved/app:3"} <= {
            e["annotations"].get(REF_NAME) for e in _entries(root)
        }
        _assert_sound(store)
        assert _gc(store, untagged=True) == []
        assert _gc(store) == []
    assert {"stable", "custom"} <= {e["annotations"].get(REF_NAME) for e in _entries(root)}
    assert skopeo_inspect_raw(f"oci:{root}:stable") == image.manifest_bytes
    skopeo_copy(f"oci:{root}:custom", f"dir:{tmp_path / 'custom'}")
    _umoci("stat", "--image", f"{root}:custom")


def test_docker_manifests_in_the_layout_are_read_by_skopeo(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = build_image(layers=1, layer_size=200, seed=330, media="docker")
    listing = build_index(media="docker", seed=331, layer_size=200)
    seed_registry(registry.url, "team/app", "1.0", image)
    seed_registry(registry.url, "team/multi", "v1", listing)
    root = tmp_path / "layout"
    with open_store(f"file://{root}?layout=oci") as store:
        pull(Client(registry.host), store, "team/app", "1.0")
        pull(Client(registry.host), store, "team/multi", "v1")
    types = {e["digest"]: e["mediaType"] for e in _entries(root)}
    assert types[image.manifest_digest] == OCI_MANIFEST
    assert types[listing.manifest_digest] == OCI_INDEX
    assert {types[d] for d in _children(listing)} == {OCI_MANIFEST}
    assert _blob(root, image.manifest_digest).read_bytes() == image.manifest_bytes

    assert skopeo_inspect_raw(f"oci:{root}:team/app:1.0") == image.manifest_bytes
    assert skopeo_inspect_raw(f"oci:{root}:team/multi:v1") == listing.manifest_bytes
    out = tmp_path / "copied"
    skopeo_copy(f"oci:{root}:team/app:1.0", f"dir:{out}", "--preserve-digests")
    assert (out / "manifest.json").read_bytes() == image.manifest_bytes
    # (skopeo 1.9 writes a list read from an oci: layout as an OCI index: its children as they
    # are, the list itself converted)
    out = tmp_path / "copied-list"
    skopeo_copy(f"oci:{root}:team/multi:v1", f"dir:{out}", "--all")
    for child in listing.children:
        hex_ = child.manifest_digest.split(":")[1]
        assert (out / f"{hex_}.manifest.json").read_bytes() == child.manifest_bytes

    with open_store(f"file://{root}?layout=oci") as store:
        # read back with the type the bytes declare
        assert store.manifest("team/app", "1.0").media_type == DOCKER_MANIFEST_V2
        assert store.manifest("team/multi", "v1").media_type == DOCKER_MANIFEST_LIST
        first = _children(listing)[0]
        assert store.manifest("team/multi", first).media_type == DOCKER_MANIFEST_V2
        _assert_sound(store)


@pytest.mark.parametrize("written", [DOCKER_MANIFEST_V2, ""])
def test_a_layout_with_docker_types_in_its_entries_still_reads(
    tmp_path: Path, written: str
) -> None:
    """A layout an earlier regstore wrote (the Docker type in the descriptor), or one whose
    descriptor has no type: read as before; a write of the image gives it the OCI type."""
    image = build_image(layers=1, layer_size=200, seed=340, media="docker")
    manifest = Manifest.parse(image.manifest_bytes)
    root = tmp_path / "layout"
    with open_store(f"file://{root}?layout=oci") as store:
        for digest, data in image.blobs.items():
            with store.layer(digest).writer() as writer:
                writer.write(data)
                writer.commit(len(data))
        store.write_manifest("team/app", "1.0", manifest)
    doc = json.loads((root / "index.json").read_bytes())
    doc["manifests"][0]["mediaType"] = written
    (root / "index.json").write_text(json.dumps(doc))
    with open_store(f"file://{root}?layout=oci") as store:
        assert store.manifest("team/app", "1.0").media_type == DOCKER_MANIFEST_V2
        _assert_sound(store)
        store.write_manifest("team/app", "1.0", manifest)
    assert [e["mediaType"] for e in _entries(root)] == [OCI_MANIFEST]
