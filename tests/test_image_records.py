"""The store lists its images as typed records with sizes (issue 17, item 3).

``ObjectStore.images()`` / ``image()`` and ``regstore ls`` give the same records: each blob
and manifest counted once per image (an index whose platforms share a layer is not counted
twice), ``unique_size`` what no other image of the listing references, the platforms of an
image (from its config) or of an index, and whether an index is partial.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from regstore import ObjectStore, open_store
from regstore.errors import ImageManifestNotFoundError, RepositoryNotFoundError
from regstore.imagelist import ImageRecord
from regstore.manifest import OCI_CONFIG, OCI_MANIFEST, Manifest
from regstore.testing.builders import Blob, Image, oci_index, random_bytes, serialise, write_image
from tests.cli_support import run_cli
from tests.support.stores import STORE_KINDS

SHARED = Blob(random_bytes(3000, 1))


def _image(seed: int, layers: Sequence[Blob], arch: str = "amd64") -> Image:
    """An OCI image of ``layers`` whose config names linux/``arch`` (and the seed)."""
    config = Blob(
        json.dumps(
            {"architecture": arch, "os": "linux", "config": {"Labels": {"s": str(seed)}}}
        ).encode(),
        OCI_CONFIG,
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in layers],
    }
    return Image(Manifest.parse(serialise(doc)), (config, *layers))


def _size(*parts: Image | Blob) -> int:
    return sum(p.manifest.size if isinstance(p, Image) else p.size for p in parts)


class Scenario:
    """Three images sharing a base layer, one tagged twice, and a partial index."""

    def __init__(self) -> None:
        self.a = Blob(random_bytes(1000, 2))
        self.b = Blob(random_bytes(2000, 3))
        self.x = Blob(random_bytes(500, 4))
        self.y = Blob(random_bytes(700, 5))
        self.img1 = _image(1, [SHARED, self.a])
        self.img2 = _image(2, [SHARED, self.b])
        self.c1 = _image(3, [SHARED, self.x])
        self.c2 = _image(4, [SHARED, self.y], arch="arm64")
        self.index = oci_index([self.c1, self.c2])
        self.filtered = oci_index([_image(5, [self.a]), _image(6, [self.b])])

    def write(self, store: ObjectStore) -> None:
        write_image(store, "team/app", "1", self.img1)
        write_image(store, "team/app", "2", self.img2)
        write_image(store, "team/app", "latest", self.img2)
        write_image(store, "team/multi", "1", self.index)
        write_image(store, "team/multi", "partial", self.filtered, partial=True)


def _by_ref(records: list[ImageRecord]) -> dict[str, ImageRecord]:
    return {f"{r.name}:{r.tag}": r for r in records}


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_records_with_sizes_of_a_multi_image_store(
    kind: str, store_factory: Callable[[str], ObjectStore]
) -> None:
    store = store_factory(kind)
    s = Scenario()
    s.write(store)
    records = store.images()
    assert [(r.name, r.tag) for r in records] == [
        ("team/app", "1"),
        ("team/app", "2"),
        ("team/app", "latest"),
        ("team/multi", "1"),
        ("team/multi", "partial"),
    ]
    got = _by_ref(records)
    cfg = {n: i.blobs[0] for n, i in vars(s).items() if isinstance(i, Image) and i.blobs}

    app1 = got["team/app:1"]
    assert app1.digest == s.img1.digest and app1.media_type == OCI_MANIFEST
    assert app1.platforms == ("linux/amd64",)
    assert app1.size == _size(s.img1, cfg["img1"], SHARED, s.a)
    assert app1.unique_size == _size(s.img1, cfg["img1"], s.a)  # the base layer is shared
    assert (app1.partial, app1.referrers) == (False, 0)

    # two tags of one manifest are one image: they do not share each other's bytes away
    assert got["team/app:2"].unique_size == got["team/app:latest"].unique_size
    assert got["team/app:2"].unique_size == _size(s.img2, cfg["img2"], s.b)

    multi = got["team/multi:1"]
    assert multi.platforms == ("linux/amd64", "linux/arm64/v8")
    assert not multi.partial
    # the base layer both platforms hold is counted once
    children = _size(s.c1, cfg["c1"], s.x, s.c2, cfg["c2"], s.y)
    assert multi.size == _size(s.index, SHARED) + children
    assert multi.unique_size == _size(s.index) + children

    partial = got["team/multi:partial"]
    assert partial.partial and partial.platforms == ()
    assert partial.size == partial.unique_size == _size(s.filtered)

    # one repository: sizes are relative to that listing
    assert [r.tag for r in store.images("team/app")] == ["1", "2", "latest"]
    assert store.images("team/app")[0] == app1
    # one image, by tag or by digest (a record without a tag)
    alone = store.image("team/multi", "1")
    assert alone == store.images("team/multi")[0]
    # within team/multi nothing else holds the base layer: now it is the index's own
    assert alone.size == multi.size and alone.unique_size == multi.size
    by_digest = store.image("team/app", str(s.img1.digest))
    assert by_digest.tag is None and by_digest.digest == s.img1.digest
    assert (by_digest.size, by_digest.unique_size) == (app1.size, app1.unique_size)
    with pytest.raises(ImageManifestNotFoundError):
        store.image("team/app", "nope")
    with pytest.raises(RepositoryNotFoundError):
        store.images("team/none")


def test_ls_prints_the_same_records(tmp_path: Path) -> None:
    root = tmp_path / "store"
    s = Scenario()
    with open_store(str(root)) as store:
        s.write(store)
        expected = [r.as_dict() for r in store.images("team/multi")]
    listed = run_cli("--json", "ls", "team/multi", home=tmp_path / "home", store=str(root))
    assert listed.returncode == 0, listed
    rows = listed.json()["tags"]
    assert rows == [{k: v for k, v in e.items() if k != "name"} for e in expected]
    assert rows[0]["platforms"] == ["linux/amd64", "linux/arm64/v8"] and rows[1]["partial"]
    table = run_cli("ls", "team/multi", home=tmp_path / "home", store=str(root))
    assert table.returncode == 0, table
    header = table.stdout.splitlines()[0].split()
    assert header == ["TAG", "DIGEST", "TYPE", "PLATFORMS", "SIZE", "UNIQUE"]
    assert "linux/amd64,linux/arm64/v8" in table.stdout and "(partial)" in table.stdout
