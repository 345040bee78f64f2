"""gc and index children a repository does not list, whose bytes are still stored.

A registry serving a store takes an API DELETE of an index child by digest: it removes the
child's revision link only, and still serves the index (and the child through it). gc read
only the manifests a repository lists, and deleted the child's config and layers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from regstore import ObjectStore, open_store
from regstore.engine.gc import collect_garbage
from regstore.errors import StoreError
from regstore.manifest import Manifest
from regstore.testing.builders import BuiltIndex, build_index, write_blob

from .support.registry import serve_directory


def _stored_index(root: Path) -> tuple[ObjectStore, BuiltIndex]:
    built = build_index(seed=31, layers=1, layer_size=2048)
    store = open_store(str(root))
    for child in built.children:
        for data in child.blobs.values():
            write_blob(store, data)
        store.write_manifest("team/multi", None, Manifest(child.manifest_bytes))
    store.write_manifest("team/multi", "latest", Manifest(built.manifest_bytes))
    return store, built


def _delete_through_a_registry(root: Path, workdir: Path, digest: str) -> None:
    served = serve_directory(root, workdir)
    try:
        answer = requests.delete(f"{served.url}/v2/team/multi/manifests/{digest}", timeout=30)
        assert answer.status_code == 202, answer.text
    finally:
        served.stop()


def test_gc_keeps_what_a_child_deleted_through_a_registry_references(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, built = _stored_index(root)
    child = built.children[0]
    _delete_through_a_registry(root, tmp_path / "served", child.manifest_digest)
    assert child.manifest_digest not in {str(d) for d in store.manifests("team/multi")}

    report = collect_garbage(store, grace=0)

    assert {b.digest for b in report.removed} == set()
    for digest, data in child.blobs.items():
        with store.layer(digest).reader() as reader:
            assert reader.read() == data


def test_gc_refuses_while_such_a_child_is_damaged(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, built = _stored_index(root)
    child = built.children[1]
    _delete_through_a_registry(root, tmp_path / "served", child.manifest_digest)
    hexpart = child.manifest_digest.split(":")[1]
    data = root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    data.write_bytes(b"{" + data.read_bytes()[1:-1] + b" ")  # same size, other bytes

    with pytest.raises(StoreError, match="a child of an index of team/multi"):
        collect_garbage(store, grace=0)
    for digest in child.blobs:
        assert store.layer(digest).exists()


def test_what_a_tag_reaches_counts_an_unreadable_manifest_without_its_children() -> None:
    """verify names images by what their tags reach: a manifest that cannot be read counts
    there (its children unknown), while a deletion's walk still refuses to pass over it."""
    from regstore.engine.gc import _reachable, manifests_reached
    from regstore.errors import ManifestInvalidError
    from regstore.testing.builders import oci_image, oci_index

    amd, arm = oci_image(seed=61), oci_image(seed=62)
    index = oci_index([amd, arm])

    class Store:
        def manifest(self, name: str, digest: str) -> object:
            if digest == str(index.digest):
                return index.manifest
            if digest == str(amd.digest):
                raise StoreError("the read timed out")
            raise ManifestInvalidError("damaged bytes")

    top = str(index.digest)
    reached = manifests_reached(Store(), "app", top)  # type: ignore[arg-type]
    assert reached == {top, str(amd.digest), str(arm.digest)}
    with pytest.raises(StoreError, match="timed out"):
        _reachable(Store(), "app", {top}, damaged_as_leaf=True)  # type: ignore[arg-type]
