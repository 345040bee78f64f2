"""``inspect`` says which platforms of a stored index are missing; ``verify`` names the images
to pull again.

A newcomer pulled one platform of an index and ``inspect`` listed both platforms without a
word (``ls`` said partial); ``verify`` told them to "pull the affected images again" and named
only a repository and a blob digest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from regstore import open_store
from regstore.manifest import Manifest
from regstore.testing.builders import BuiltIndex, build_image, build_index

from .support.cli import CliResult, blob_path, flip_byte, only_lines, put_image, run_cli


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _cli(tmp_path: Path, *args: str, expect: int = 0) -> CliResult:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    result = run_cli(*args, home=home, store=str(tmp_path / "store"))
    assert result.returncode == expect, str(result)
    return result


def _error_line(result: CliResult) -> str:
    (line,) = [x for x in only_lines(result.stderr) if x.startswith("regstore: error:")]
    return line


def _put_one_platform(store_root: Path, index: BuiltIndex, keep: int) -> None:
    """Store ``index`` as a pull with --platform does: one child, the index marked partial."""
    child = index.children[keep]
    with open_store(str(store_root)) as store:
        put_image(store, "team/multi", None, child)
        top = Manifest.parse(index.manifest_bytes, index.manifest_media_type)
        store.write_manifest("team/multi", "1", top, partial=True)


# -- inspect ---------------------------------------------------------------------------------------


def test_inspect_marks_a_partial_index_and_the_platforms_it_lacks(
    tmp_path: Path, store_root: Path
) -> None:
    index = build_index(seed=61, media="oci")  # linux/amd64 and linux/arm64
    _put_one_platform(store_root, index, keep=1)
    kept, left = index.children[1].manifest_digest, index.children[0].manifest_digest

    doc = _cli(tmp_path, "--json", "inspect", "store:team/multi:1").json()
    assert doc["partial"] is True
    stored = {m["digest"]: m["stored"] for m in doc["manifests"]}
    assert stored == {kept: True, left: False}
    assert doc["platforms"] == ["linux/amd64", "linux/arm64"]  # what the index lists, as before

    text = _cli(tmp_path, "inspect", "store:team/multi:1").stdout
    (type_line,) = [line for line in text.splitlines() if line.startswith("Type:")]
    assert "partial: 1 of 2 manifests stored" in type_line
    (platforms,) = [line for line in text.splitlines() if line.startswith("Platforms:")]
    assert "linux/amd64 (not stored)" in platforms
    assert "linux/arm64 (not stored)" not in platforms and "linux/arm64" in platforms
    rows = {line.split()[1]: line.split()[-1] for line in text.splitlines() if "sha256:" in line}
    assert rows[kept] == "yes" and rows[left] == "no"


def test_inspect_of_a_whole_stored_index_says_every_platform_is_stored(
    tmp_path: Path, store_root: Path
) -> None:
    index = build_index(seed=62, media="oci")
    with open_store(str(store_root)) as store:
        put_image(store, "team/multi", "1", index)

    doc = _cli(tmp_path, "--json", "inspect", "store:team/multi:1").json()
    assert doc["partial"] is False
    assert all(m["stored"] for m in doc["manifests"])
    text = _cli(tmp_path, "inspect", "store:team/multi:1").stdout
    assert "partial" not in text and "not stored" not in text


# -- verify ----------------------------------------------------------------------------------------


def test_verify_names_the_tags_of_a_damaged_blob_and_the_pull_that_mends_them(
    tmp_path: Path, store_root: Path
) -> None:
    image = build_image(seed=63, layers=2, layer_size=4096)
    other = build_image(seed=64, layers=1, layer_size=4096)
    with open_store(str(store_root)) as store:
        put_image(store, "team/app", "1.2", image)
        put_image(store, "team/app", "latest", image)
        put_image(store, "team/other", "1", other)  # intact: never named
    flip_byte(blob_path(store_root, image.layer_digests[0]))

    human = _cli(tmp_path, "verify", expect=1)
    (row,) = [line for line in human.stdout.splitlines() if line.startswith("damaged-blob")]
    assert "team/app:1.2" in row and "team/app:latest" in row
    error = _error_line(human)
    assert "team/app:1.2" in error and "team/app:latest" in error
    assert "`regstore pull REGISTRY/team/app:1.2`" in error
    assert "team/other" not in human.stdout + error


def test_verify_names_the_tag_of_an_index_whose_platform_lost_a_blob(
    tmp_path: Path, store_root: Path
) -> None:
    # the damaged blob is a child's: the problem names the child manifest, the tag its index
    index = build_index(seed=65, media="oci")
    with open_store(str(store_root)) as store:
        put_image(store, "team/multi", "1", index)
    child = index.children[1]
    flip_byte(blob_path(store_root, child.layer_digests[0]))

    doc = _cli(tmp_path, "--json", "verify", "--no-quarantine", expect=1).json()
    (problem,) = doc["problems"]
    assert problem["referenced_by"] == [child.manifest_digest]  # kept as it was
    assert problem["images"] == ["team/multi:1"]
    human = _cli(tmp_path, "verify", "--no-quarantine", expect=1)
    error = _error_line(human)
    assert "team/multi:1" in error
    assert "`regstore pull REGISTRY/team/multi:1 --repair`" in error


def test_verify_names_an_untagged_image_by_its_digest(tmp_path: Path, store_root: Path) -> None:
    image = build_image(seed=66, layers=1, layer_size=4096)
    with open_store(str(store_root)) as store:
        put_image(store, "team/app", None, image)  # pulled by digest: no tag
    flip_byte(blob_path(store_root, image.layer_digests[0]))

    doc = _cli(tmp_path, "--json", "verify", expect=1).json()
    (problem,) = doc["problems"]
    assert problem["images"] == [f"team/app@{image.manifest_digest}"]
    error = _error_line(_cli(tmp_path, "verify", expect=1))
    assert f"team/app@{image.manifest_digest}" in error
