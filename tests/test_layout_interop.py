"""On-disk layouts other tools read: exact paths and file contents (protocol-notes §4).

These are the structural checks; the tests that point skopeo, umoci and a stock registry at
a store use the shared fixtures of tests/support and live beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.manifest import OCI_INDEX
from regstore.store import ObjectStore
from regstore.testing.builders import (
    Image,
    docker_image,
    docker_manifest_list,
    oci_image,
    oci_index,
    write_image,
)

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY = "io.regstore.repository"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _link(digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"{algorithm}/{hex_}/link"


def _blob(digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"blobs/{algorithm}/{hex_[:2]}/{hex_}/data"


# -- distribution ----------------------------------------------------------------------------


@pytest.fixture
def distribution(tmp_path: Path) -> tuple[ObjectStore, Path]:
    return open_store(f"file://{tmp_path}/store"), tmp_path / "store" / "docker/registry/v2"


def test_distribution_layout_of_one_tagged_image(
    distribution: tuple[ObjectStore, Path],
) -> None:
    store, v2 = distribution
    image = docker_image(layers=2, seed=1)
    write_image(store, "library/app", "1.0", image)
    repo = "repositories/library/app"
    expected = {_blob(str(image.digest))}
    for blob in image.blobs:  # every layer AND the config: data and a _layers link
        expected |= {_blob(str(blob.digest)), f"{repo}/_layers/{_link(str(blob.digest))}"}
    expected |= {
        f"{repo}/_manifests/revisions/{_link(str(image.digest))}",
        f"{repo}/_manifests/tags/1.0/current/link",
        f"{repo}/_manifests/tags/1.0/index/{_link(str(image.digest))}",
    }
    assert _files(v2) == expected
    for path in (p for p in expected if p.endswith("/link")):
        # _layers/<alg>/<hex>/link names its blob; every _manifests link here the image
        target = f"sha256:{path.split('/')[-2]}" if "_layers" in path else str(image.digest)
        assert (v2 / path).read_bytes() == target.encode(), f"{path}: the digest, no newline"
    assert (v2 / _blob(str(image.digest))).read_bytes() == image.raw
    for blob in image.blobs:
        assert (v2 / _blob(str(blob.digest))).read_bytes() == blob.data


def test_distribution_index_links_children_and_marks_partial(
    distribution: tuple[ObjectStore, Path],
) -> None:
    store, v2 = distribution
    children = [docker_image(seed=2), docker_image(seed=3)]
    index = docker_manifest_list(children)
    # store the children through another repository only: the index links them here
    write_image(store, "other/repo", None, children[0])
    write_image(store, "other/repo", None, children[1])
    store.write_manifest("multi/app", "all", index.manifest, partial=True)
    repo = v2 / "repositories/multi/app"
    for child in children:
        assert (repo / "_manifests/revisions" / _link(str(child.digest))).read_bytes() == (
            str(child.digest).encode()
        )
        for blob in child.blobs:
            assert (repo / "_layers" / _link(str(blob.digest))).is_file()
    revision = repo / "_manifests/revisions" / _link(str(index.digest))
    marker = revision.parent / "regstore-partial"
    assert marker.is_file()  # a file the registry ignores (it reads only `link`)
    assert store.is_partial("multi/app", str(index.digest))
    store.write_manifest("multi/app", "all", index.manifest)
    assert not marker.exists()


def test_distribution_retag_delete_and_catalog_rule(
    distribution: tuple[ObjectStore, Path],
) -> None:
    store, v2 = distribution
    first, second = oci_image(seed=4), oci_image(seed=5)
    write_image(store, "app", "v1", first)
    write_image(store, "app", "v1", second)
    tag = v2 / "repositories/app/_manifests/tags/v1"
    assert (tag / "current/link").read_bytes() == str(second.digest).encode()
    # the index keeps every digest the tag ever pointed to, like the registry
    assert (tag / "index" / _link(str(first.digest))).is_file()
    assert (tag / "index" / _link(str(second.digest))).is_file()
    store.delete_manifest("app", str(second.digest))
    assert not tag.exists()
    assert not (v2 / "repositories/app/_manifests/revisions" / _link(str(second.digest))).exists()
    # a directory without _manifests is no repository (the registry's catalog rule)
    (v2 / "repositories/not-a-repo/_layers").mkdir(parents=True)
    assert store.repositories() == ["app"]


# -- OCI image layout ------------------------------------------------------------------------


@pytest.fixture
def oci(tmp_path: Path) -> tuple[ObjectStore, Path]:
    return open_store(f"file://{tmp_path}/store?layout=oci"), tmp_path / "store"


def _index(root: Path) -> list[dict[str, Any]]:
    doc = json.loads((root / "index.json").read_bytes())
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == OCI_INDEX
    entries: list[dict[str, Any]] = doc["manifests"]
    return entries


def _descriptor(image: Image, **annotations: str) -> dict[str, Any]:
    return {"mediaType": image.media_type, "digest": str(image.digest),
            "size": image.manifest.size, "annotations": annotations}  # fmt: skip


def test_oci_layout_files(oci: tuple[ObjectStore, Path]) -> None:
    store, root = oci
    image = oci_image(seed=6)
    write_image(store, "library/alpine", "3.19", image)
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    for digest in [image.digest, *(b.digest for b in image.blobs)]:
        algorithm, hex_ = digest.split(":")
        assert (root / "blobs" / algorithm / hex_).is_file()  # flat: no fan-out
    assert (root / "blobs/sha256" / image.digest.hex).read_bytes() == image.raw
    assert _index(root) == [
        _descriptor(image, **{REPOSITORY: "library/alpine", REF_NAME: "library/alpine:3.19"})
    ]
    assert {p.name for p in root.iterdir()} == {"oci-layout", "index.json", "blobs", "_regstore"}


def test_oci_index_entries_for_children_untagged_and_retagged(
    oci: tuple[ObjectStore, Path],
) -> None:
    store, root = oci
    children = [oci_image(seed=7), oci_image(seed=8)]
    index = oci_index(children)
    write_image(store, "app", "multi", index)
    other = oci_image(seed=9)
    write_image(store, "app", None, other)
    entries = _index(root)
    assert _descriptor(index, **{REPOSITORY: "app", REF_NAME: "app:multi"}) in entries
    for untagged in (*children, other):  # listable by digest: repository, no ref name
        assert _descriptor(untagged, **{REPOSITORY: "app"}) in entries
    assert len(entries) == 4
    # retagging moves the ref name; the old manifest keeps an unnamed descriptor
    write_image(store, "app", "multi", other)
    entries = _index(root)
    named = [e for e in entries if REF_NAME in e["annotations"]]
    assert named == [_descriptor(other, **{REPOSITORY: "app", REF_NAME: "app:multi"})]
    assert _descriptor(index, **{REPOSITORY: "app"}) in entries
    assert len(entries) == 4
    assert store.manifest("app", "multi").raw == other.raw
    store.write_manifest("app", "multi", index.manifest, partial=True)
    flagged = [e for e in _index(root) if e["digest"] == str(index.digest)]
    assert flagged[0]["annotations"]["io.regstore.partial"] == "true"


def test_oci_reads_refs_written_by_other_tools(oci: tuple[ObjectStore, Path]) -> None:
    store, root = oci
    image = oci_image(seed=10)
    write_image(store, "seed/repo", None, image)
    doc = json.loads((root / "index.json").read_bytes())
    # what skopeo copy oci:DIR:foo/bar:1.0 writes: a ref name, none of our annotations
    doc["manifests"].append({"mediaType": image.media_type, "digest": str(image.digest),
                             "size": image.manifest.size,
                             "annotations": {REF_NAME: "foo/bar:1.0"}})  # fmt: skip
    doc["manifests"].append({"mediaType": image.media_type, "digest": str(image.digest),
                             "size": image.manifest.size,
                             "annotations": {REF_NAME: "plain-tag"}})  # fmt: skip
    (root / "index.json").write_text(json.dumps(doc))
    assert store.manifest("foo/bar", "1.0").raw == image.raw
    assert store.repositories() == ["foo/bar", "seed/repo"]
    # our updates keep what we cannot attribute
    write_image(store, "foo/bar", "2.0", image)
    refs = [e["annotations"].get(REF_NAME) for e in _index(root)]
    assert "plain-tag" in refs and "foo/bar:1.0" in refs and "foo/bar:2.0" in refs
