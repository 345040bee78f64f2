"""``delete`` (and a sync's prune, which deletes the same way) beside a writer tagging the same
image.

``delete_image`` deletes a tag, reads the remaining tags again and deletes the manifests they
no longer reach. A pull tagging one of those manifests right after that read lost its tag:
dangling in the distribution layout, gone without a trace in an OCI layout (and gc then
collected the image's blobs), while the pull reported success.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.engine import gc
from regstore.engine.gc import collect_garbage, delete_image
from regstore.engine.verify import verify
from regstore.manifest import Manifest
from regstore.testing.builders import build_image, build_index, write_blob


@pytest.mark.parametrize("layout", ["distribution", "oci"])
def test_a_tag_written_as_a_delete_decides_keeps_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    store = open_store((tmp_path / "store").as_uri() + ("?layout=oci" if layout == "oci" else ""))
    built = build_image(seed=41, layers=1, layer_size=1024, media="oci")
    for data in built.blobs.values():
        write_blob(store, data)
    manifest = Manifest(built.manifest_bytes)
    store.write_manifest("team/app", "two", manifest)

    reads: list[int] = []
    real: Callable[..., Any] = gc._tag_targets

    def tag_targets(store_: Any, name: str) -> Any:
        targets = real(store_, name)
        reads.append(1)
        if len(reads) == 2:  # the tags read again after the delete: now the pull tags it
            store.write_manifest("team/app", "one", manifest)
        return targets

    monkeypatch.setattr(gc, "_tag_targets", tag_targets)

    assert delete_image(store, "team/app", "two") == []

    assert len(reads) == 2
    assert store.tags("team/app") == ["one"]
    assert store.manifest("team/app", "one") == manifest
    assert verify(store, quarantine=False).ok
    assert collect_garbage(store, grace=0).removed == []


def test_a_delete_with_no_writer_beside_it_still_deletes_the_manifest(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    built = build_image(seed=42, layers=1, layer_size=1024, media="oci")
    for data in built.blobs.values():
        write_blob(store, data)
    store.write_manifest("team/app", "two", Manifest(built.manifest_bytes))

    assert delete_image(store, "team/app", "two") == [built.manifest_digest]
    assert "team/app" not in store.repositories()


@pytest.mark.parametrize("layout", ["distribution", "oci"])
def test_an_index_a_pull_tags_again_keeps_the_children_it_claimed_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    # a pull claims an index's children, then writes the index: a delete deciding between the
    # two kept the index (claimed after it decided) and deleted its children
    store = open_store((tmp_path / "store").as_uri() + ("?layout=oci" if layout == "oci" else ""))
    built = build_index(seed=43, layers=1, layer_size=1024)
    for child in built.children:
        for data in child.blobs.values():
            write_blob(store, data)
        store.write_manifest("team/multi", None, Manifest(child.manifest_bytes))
    index = Manifest(built.manifest_bytes)
    store.write_manifest("team/multi", "two", index)

    reads: list[int] = []
    real: Callable[..., Any] = gc._tag_targets

    def tag_targets(store_: Any, name: str) -> Any:
        targets = real(store_, name)
        reads.append(1)
        if len(reads) == 1:  # before the delete decides: the pull claims the children
            for child in built.children:
                store.claim_blob(child.manifest_digest)
        if len(reads) == 2:  # after it: the pull writes and tags the index
            store.write_manifest("team/multi", "one", index)
        return targets

    monkeypatch.setattr(gc, "_tag_targets", tag_targets)
    delete_image(store, "team/multi", "two")

    assert store.tags("team/multi") == ["one"]
    for child in built.children:
        assert store.has_manifest("team/multi", child.manifest_digest)
    assert verify(store, quarantine=False).ok
