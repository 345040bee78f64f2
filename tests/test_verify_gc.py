"""verify, gc and delete_image through the ObjectStore facade, on memory and file stores."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from regstore import ObjectStore, open_store
from regstore.backends.fsspec_store import FsspecBackend
from regstore.backends.layout_distribution import DistributionLayout
from regstore.digest import digest_bytes
from regstore.engine import StoreImage, transfer_one
from regstore.engine.gc import collect_garbage, delete_image, referenced_digests
from regstore.engine.transfer import transfer_many
from regstore.engine.verify import verify
from regstore.errors import (
    DamagedTagError,
    ImageManifestNotFoundError,
    InvalidReferenceError,
    ManifestInvalidError,
    RegstoreError,
    StoreDamageError,
    StoreError,
)
from regstore.hookspecs import hookimpl
from regstore.manifest import OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest
from regstore.reference import Digest
from regstore.referrers import add_referrer, referrer_descriptor, referrers_tag, sigstore_tags
from regstore.store import _INDEX_PRUNE_TAG_LIMIT
from regstore.testing.builders import Image as BuiltImage
from regstore.testing.builders import (
    build_image,
    build_index,
    cosign_signature,
    oci_artifact,
    oci_image,
    oci_index,
    random_blob,
    sha256_digest,
    write_blob,
    write_image,
)

from .support.cli import (
    blob_path,
    damage_tag_link,
    flip_byte,
    put_directory_in_place,
    put_image,
)


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    # the damage a layout can hold, on every host the layout code runs on (S3's, moto's
    # server, stands for the object stores: Azure's shares the same layout and host calls)
    options: dict[str, str] = {}
    if request.param == "memory":
        url = f"memory://verify-{uuid.uuid4().hex}"
    elif request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        url = f"s3://{bucket.bucket}/store"
        options = {"endpoint_url": bucket.endpoint_url, "key": "testing", "secret": "testing"}
    else:
        url = str(tmp_path / "store")
    with open_store(url, **options) as opened:
        yield opened


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[tuple[ObjectStore, Path]]:
    root = tmp_path / "store"
    with open_store(str(root)) as opened:
        yield opened, root


def add_blob(store: ObjectStore, data: bytes) -> str:
    digest = sha256_digest(data)
    with store.layer(digest).writer() as writer:
        writer.write(data)
        writer.commit(len(data))
    return digest


# -- verify --------------------------------------------------------------------------------------


def test_an_intact_store_verifies(store: ObjectStore) -> None:
    image, index = build_image(seed=1), build_index(seed=2)
    put_image(store, "team/app", "1", image)
    put_image(store, "team/app", "2", image)  # two tags, one manifest
    put_image(store, "team/multi", "m", index)
    events: list[str] = []
    report = verify(store, events=lambda e: events.append(e.kind.value))
    assert report.ok, report.problems
    assert report.repositories == ["team/app", "team/multi"]
    assert report.manifests_checked == 1 + 3
    assert report.tags_checked == 3
    assert report.blobs_checked == len(image.blobs) + len(index.blobs)
    assert report.bytes_checked == sum(map(len, image.blobs.values())) + sum(
        map(len, index.blobs.values())
    )
    assert events.count("verified") == report.blobs_checked
    assert "started" in events and "progress" in events
    only = verify(store, "team/app")
    assert only.repositories == ["team/app"] and only.blobs_checked == len(image.blobs)
    assert only.as_dict()["ok"] is True


def test_verify_reports_a_corrupted_and_a_missing_blob(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    image = build_image(seed=3, layers=3)
    put_image(store, "team/app", "1", image)
    damaged, missing = image.layer_digests[0], image.layer_digests[2]
    flip_byte(blob_path(root, damaged))
    store.delete_blob(missing)
    report = verify(store)
    kinds = {(p.kind, p.subject) for p in report.problems}
    assert kinds == {("damaged-blob", damaged), ("missing-blob", missing)}
    damaged_problem = next(p for p in report.problems if p.kind == "damaged-blob")
    assert "hashes to sha256:" in damaged_problem.detail
    assert damaged_problem.referenced_by == (image.manifest_digest,)
    assert not report.ok
    assert report.as_dict()["problems"][0]["kind"] in ("damaged-blob", "missing-blob")


def test_verify_reports_a_damaged_manifest_and_a_truncated_blob(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    image = build_image(seed=4)
    put_image(store, "team/app", "1", image)
    flip_byte(blob_path(root, image.manifest_digest), offset=40)
    truncated = blob_path(root, image.layer_digests[0])
    truncated.write_bytes(truncated.read_bytes()[:-5])
    report = verify(store)
    kinds = sorted(p.kind for p in report.problems)
    # the manifest is unreadable, so its blobs are unknown: the tag says it is damaged too
    assert "damaged-manifest" in kinds
    assert all(k in ("damaged-manifest", "damaged-blob") for k in kinds)


def test_verify_checks_index_children_unless_the_index_is_partial(store: ObjectStore) -> None:
    index = build_index(seed=5)
    child = index.children[1]
    # the full index written, then one child removed behind its back
    put_image(store, "team/multi", "full", index)
    store.delete_manifest("team/multi", child.manifest_digest)
    report = verify(store)
    assert [(p.kind, p.subject) for p in report.problems] == [
        ("missing-manifest", child.manifest_digest)
    ]
    assert "linux/arm64" in report.problems[0].detail


def test_verify_of_a_partial_index_is_clean(store: ObjectStore) -> None:
    from regstore import Manifest

    index = build_index(seed=6)
    first = index.children[0]
    put_image(store, "team/multi", None, first)
    store.write_manifest(
        "team/multi",
        "one",
        Manifest.parse(index.manifest_bytes, index.manifest_media_type),
        partial=True,
    )
    assert verify(store).ok


# -- gc ------------------------------------------------------------------------------------------


def _age(root: Path, digest: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(blob_path(root, digest), (then, then))


def test_gc_keeps_referenced_and_young_blobs(file_store: tuple[ObjectStore, Path]) -> None:
    store, root = file_store
    image, index = build_image(seed=7), build_index(seed=8)
    put_image(store, "team/app", "1", image)
    put_image(store, "team/multi", "1", index)
    old = add_blob(store, random_blob(100, seed=1))
    young = add_blob(store, random_blob(100, seed=2))
    _age(root, old, 7200)
    for digest in [*image.blobs, *index.blobs]:
        _age(root, digest, 7200)  # old but referenced

    referenced = referenced_digests(store)
    assert set(image.blobs) | set(index.blobs) | {image.manifest_digest} <= referenced
    assert {c.manifest_digest for c in index.children} <= referenced

    dry = collect_garbage(store, dry_run=True)
    assert [b.digest for b in dry.removed] == [old]
    assert [b.digest for b in dry.kept_young] == [young]
    assert store.blob_exists(old)

    done = collect_garbage(store)
    assert [b.digest for b in done.removed] == [old] and done.bytes_removed == 100
    assert not store.blob_exists(old) and store.blob_exists(young)
    assert collect_garbage(store, grace=0).as_dict()["removed"] == [{"digest": young, "size": 100}]
    assert verify(store).ok


def test_gc_grace_uses_the_commit_time(store: ObjectStore) -> None:
    orphan = add_blob(store, b"orphan")
    assert collect_garbage(store).removed == []
    later = collect_garbage(store, now=time.time() + 7200)
    assert [b.digest for b in later.removed] == [orphan]
    with pytest.raises(ValueError, match="negative"):
        collect_garbage(store, grace=-1)


def test_gc_untagged_keeps_a_manifest_claimed_within_the_grace(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # A pull that finds an untagged manifest's bytes stored claims them before it tags them
    # again (write_manifest): gc decides under the claim's lock and keeps them.
    store, root = file_store
    first, second = build_image(seed=31), build_image(seed=32)
    put_image(store, "team/app", "1", first)
    put_image(store, "team/app", "1", second)  # the tag moves on: first is untagged
    for digest in [first.manifest_digest, *first.blobs]:
        _age(root, digest, 7200)
    store.claim_blob(first.manifest_digest)
    report = collect_garbage(store, untagged=True)  # old bytes, but claimed just now
    assert report.untagged_kept == [f"team/app@{first.manifest_digest}"]
    assert report.untagged_removed == [] and report.removed == []
    assert store.has_manifest("team/app", first.manifest_digest)

    later = collect_garbage(store, untagged=True, now=time.time() + 7200)
    assert later.untagged_removed == [f"team/app@{first.manifest_digest}"]
    assert later.as_dict()["untagged_removed"] == later.untagged_removed
    assert set(first.blobs) - set(second.blobs) <= {b.digest for b in later.removed}
    assert not store.has_manifest("team/app", first.manifest_digest)
    assert store.has_manifest("team/app", "1") and verify(store).ok


def test_gc_untagged_deletes_nested_indexes_outer_first(store: ObjectStore) -> None:
    image = oci_image(seed=51)
    inner = oci_index([image])
    outer = oci_index([inner])
    write_image(store, "team/nest", "keep", oci_image(seed=52))
    write_image(store, "team/nest", None, outer)
    report = collect_garbage(store, grace=0, untagged=True)
    assert report.untagged_removed == [
        f"team/nest@{d}" for d in (outer.digest, inner.digest, image.digest)
    ]
    assert verify(store).ok


def test_a_claimed_blob_is_dated_by_its_reuse(file_store: tuple[ObjectStore, Path]) -> None:
    # claim_blob (a pull reusing a blob it found present) makes gc's grace count from now
    store, root = file_store
    reused = add_blob(store, random_blob(100, seed=3))
    unused = add_blob(store, random_blob(100, seed=4))
    _age(root, reused, 7200)
    _age(root, unused, 7200)
    used_before = store.blob_used_at(reused)
    assert used_before is not None and used_before < time.time() - 7000
    before = time.time()
    assert store.claim_blob(reused) == 100
    used = store.blob_used_at(reused)
    assert used is not None and used >= before - 1
    report = collect_garbage(store)
    assert [b.digest for b in report.removed] == [unused]
    assert [b.digest for b in report.kept_young] == [reused]
    assert store.blob_exists(reused)
    assert store.claim_blob(unused) is None  # gone: the caller fetches it again


def test_a_blob_another_user_owns_is_claimed_with_a_marker(
    file_store: tuple[ObjectStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a shared store: touching another user's blob is refused (EPERM); a marker dates the claim
    store, root = file_store
    digest = add_blob(store, random_blob(100, seed=5))
    _age(root, digest, 7200)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "utime", refused)
    assert store.claim_blob(digest) == 100
    backend: Any = store.backend
    assert backend.stat_file(backend.used_marker_path(Digest(digest))) is not None
    assert [b.digest for b in collect_garbage(store).kept_young] == [digest]


def test_claims_on_an_object_store_are_markers_gc_removes_with_the_blob() -> None:
    # the generic fsspec path (memory here; S3 and Azure take the same one)
    with open_store(f"memory://claims-{uuid.uuid4().hex}") as store:
        backend: Any = store.backend
        digest = add_blob(store, b"reused blob")
        marker = backend.used_marker_path(Digest(digest))
        assert backend.stat_file(marker) is None
        assert store.claim_blob("sha256:" + "cd" * 32) is None  # absent: nothing marked
        assert store.claim_blob(digest) == len(b"reused blob")
        assert backend.stat_file(marker) is not None
        # the blob itself committed two hours ago (as if garbage): the claim's marker keeps it
        stored = backend.fs.store[
            backend.fs._strip_protocol(backend.layout.blob_path(Digest(digest)))
        ]
        stored.created = datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(
            hours=2
        )
        assert collect_garbage(store, dry_run=True).removed == []
        report = collect_garbage(store)
        assert report.removed == [] and [b.digest for b in report.kept_young] == [digest]
        used = store.blob_used_at(digest)
        assert used is not None and used > time.time() - 600
        assert [b.digest for b in collect_garbage(store, grace=0).removed] == [digest]
        assert backend.stat_file(marker) is None  # the marker went with its blob
        assert store.blob_used_at(digest) is None


class _Marks:
    """Records the digests a store is asked to mark used."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    @hookimpl(wrapper=True)
    def regstore_store_mark_blob_used(self, digest: str) -> Generator[None, None, None]:
        self.digests.append(str(digest))
        return (yield)


def test_a_referrers_index_written_again_claims_its_old_bytes(tmp_path: Path) -> None:
    # the index's earlier version with these very bytes is garbage gc may be collecting
    with open_store(str(tmp_path / "store")) as store:
        image = oci_image(seed=21)
        write_image(store, "app", "v1", image)
        sbom = oci_artifact(image)
        write_image(store, "app", None, sbom)
        index = store.manifest("app", referrers_tag(str(image.digest))).digest
        store.delete_tag("app", referrers_tag(str(image.digest)))  # its bytes stay
        marks = _Marks()
        store.add_wrapper(marks)
        store.write_manifest("app", None, sbom.manifest)  # lists the referrer again
        assert str(index) in marks.digests


def test_an_image_reusing_a_blob_moved_earlier_in_the_run_claims_it(tmp_path: Path) -> None:
    # a long sync: the grace that keeps gc off a shared layer counts from each image that
    # reuses it, not from the image that moved it first (perhaps hours earlier)
    source = open_store(f"memory://claims-{uuid.uuid4().hex}")
    image = oci_image(seed=31)
    write_image(source, "app", "a", image)
    write_image(source, "app", "b", image)
    with open_store(str(tmp_path / "store")) as store, contextlib.closing(source):
        marks = _Marks()
        store.add_wrapper(marks)
        jobs = [(StoreImage(source, "app", tag), StoreImage(store, "app")) for tag in "ab"]
        batch = transfer_many(jobs, concurrency=1)  # one image after the other
        assert batch.ok
        layers = {str(blob.digest) for blob in image.blobs}
        assert layers <= set(marks.digests)  # "b" claimed what "a" had moved


def test_gc_refuses_when_a_manifest_is_unreadable(file_store: tuple[ObjectStore, Path]) -> None:
    store, root = file_store
    image = build_image(seed=9)
    put_image(store, "team/app", "1", image)
    flip_byte(blob_path(root, image.manifest_digest), offset=40)
    with pytest.raises(StoreError, match="cannot collect garbage"):
        collect_garbage(store, grace=0)
    assert all(store.blob_exists(d) for d in image.blobs)


def _scribble_tag_link(store: ObjectStore, name: str, tag: str) -> Callable[[], bytes | None]:
    """Overwrite the link of ``name:tag`` through the store's own distribution layout (a file
    store's file, a memory store's entry: the layout every fsspec store shares); returns a
    reader of the link's bytes."""
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    layout = backend.layout
    assert isinstance(layout, DistributionLayout)
    path = layout._tag(name, tag, "current", "link")
    backend.write_file(path, b"sha256:not-a-digest")
    return lambda: backend.read_file(path)


def test_a_damaged_tag_link_is_reported_kept_from_gc_and_rewritten_by_a_copy(
    store: ObjectStore, tmp_path: Path
) -> None:
    # One scribbled link file stopped every listing of the store (ls, verify, sync), and
    # nothing but a hand edit could remove or rewrite it.
    a, b, other = build_image(seed=20), build_image(seed=21), build_image(seed=22)
    put_image(store, "team/app", "a", a)
    put_image(store, "team/app", "b", b)
    put_image(store, "other", "1", other)
    link = _scribble_tag_link(store, "team/app", "a")

    assert store.repositories() == ["other", "team/app"]
    assert sorted(store.tags("team/app")) == ["a", "b"]  # listed, as the registry lists it
    with pytest.raises(StoreDamageError, match="corrupt link file"):
        store.manifest("team/app", "a")
    assert store.resolve("team/app", "b") == Digest(b.manifest_digest)
    with pytest.raises(DamagedTagError):  # read as a source; a copy into it writes it again
        store.manifest_digest("team/app", "a")
    with pytest.raises(StoreDamageError):
        store.images("team/app")  # bundles and sizes never leave an image out unasked
    unreadable: list[tuple[str, str, RegstoreError]] = []
    assert [r.tag for r in store.images("team/app", unreadable=unreadable)] == ["b"]
    assert [(n, t, type(e)) for n, t, e in unreadable] == [("team/app", "a", DamagedTagError)]

    report = verify(store)
    assert [(p.kind, p.repository, p.subject) for p in report.problems] == [
        ("damaged-tag", "team/app", "a")
    ]
    assert report.manifests_checked == 3 and report.tags_checked == 3  # the rest was checked

    # what the damaged tag named is unknown: gc deletes nothing, not even an old stray blob
    stray = add_blob(store, random_blob(500, seed=23))
    with pytest.raises(StoreDamageError):
        collect_garbage(store, grace=0)
    assert store.blob_exists(stray)

    with open_store(str(tmp_path / "out")) as out:  # out of it: a clear failure, nothing moved
        batch = transfer_many([(StoreImage(store, "team/app", "a"), StoreImage(out, "x"))])
        assert not batch.ok and "tag a of team/app is damaged" in (batch.outcomes[0].error or "")
        assert out.repositories() == []
    with open_store(str(tmp_path / "source")) as source:
        put_image(source, "team/app", "a", a)
        batch = transfer_many(
            [(StoreImage(source, "team/app", "a"), StoreImage(store, "team/app"))]
        )
    assert batch.ok
    assert link() == a.manifest_digest.encode()
    assert store.resolve("team/app", "a") == Digest(a.manifest_digest)
    assert verify(store).ok


def _distribution_layout(store: ObjectStore) -> DistributionLayout:
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    assert isinstance(backend.layout, DistributionLayout)
    return backend.layout


def _reads_of(layout: DistributionLayout, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``layout`` reads from now on, in order."""
    read: list[str] = []
    real_read = layout.host.read_file

    def read_file(path: str) -> bytes | None:
        read.append(path)
        return real_read(path)

    monkeypatch.setattr(layout.host, "read_file", read_file)
    return read


def test_listing_a_memory_stores_tags_reads_no_link_either(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with open_store(f"memory://list-{uuid.uuid4().hex}") as store:
        for tag in ("whole", "damaged", "unlinked"):
            put_image(store, "team/app", tag, build_image(seed=46))
        _scribble_tag_link(store, "team/app", "damaged")
        layout = _distribution_layout(store)
        layout.host.remove(layout._tag("team/app", "unlinked", "current", "link"))
        assert sorted(layout._tags("team/app")) == ["damaged", "whole"]
        read = _reads_of(layout, monkeypatch)
        assert sorted(store.tags("team/app")) == ["damaged", "whole"]
        assert [Path(p).parts[-3] for p in read] == ["unlinked"]


def test_listing_tags_reads_no_link_and_lists_as_reading_them_would(
    file_store: tuple[ObjectStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, root = file_store
    for tag in ("whole", "damaged", "in-place", "unlinked"):
        put_image(store, "team/app", tag, build_image(seed=45))
    tags = root / "docker/registry/v2/repositories/team/app/_manifests/tags"
    (tags / "damaged/current/link").write_bytes(b"sha256:not-a-digest")
    put_directory_in_place(tags / "in-place/current/link")
    (tags / "unlinked/current/link").unlink()  # a tag directory without a link: no tag
    (tags / "a-file").write_bytes(b"named like a tag, and no directory")
    layout = _distribution_layout(store)
    expected = ["damaged", "in-place", "whole"]
    assert sorted(layout._tags("team/app")) == expected  # the way that reads every link
    read = _reads_of(layout, monkeypatch)
    assert sorted(store.tags("team/app")) == expected
    # only the entries whose link is no file are read, to decide them as reading decides
    assert sorted(Path(p).parts[-3] for p in read) == ["a-file", "in-place", "unlinked"]


@pytest.mark.parametrize("link_of", ["tag", "revision"])
def test_a_directory_where_a_link_belongs_is_damage_a_copy_replaces(
    file_store: tuple[ObjectStore, Path], tmp_path: Path, link_of: str
) -> None:
    # A directory in a tag link's place (EISDIR) once stopped store.tags(), and with it ls,
    # verify and every sync of the repository; a copy into the tag could not write it.
    store, root = file_store
    a, b = build_image(seed=40), build_image(seed=41)
    put_image(store, "team/app", "a", a)
    put_image(store, "team/app", "b", b)
    manifests = root / "docker/registry/v2/repositories/team/app/_manifests"
    link = {
        "tag": manifests / "tags/a/current/link",
        "revision": manifests / "revisions/sha256" / a.manifest_digest.split(":")[1] / "link",
    }[link_of]
    put_directory_in_place(link)
    (link / "stray").write_bytes(b"what the damage left")

    assert sorted(store.tags("team/app")) == ["a", "b"]
    problem = {"tag": ("damaged-tag", "a"), "revision": ("dangling-tag", "a")}[link_of]
    assert [(p.kind, p.subject) for p in verify(store).problems] == [problem]
    if link_of == "tag":
        with pytest.raises(DamagedTagError, match="a directory stands where the link file"):
            store.manifest("team/app", "a")

    with open_store(str(tmp_path / "source")) as source:
        put_image(source, "team/app", "a", a)
        batch = transfer_many(
            [(StoreImage(source, "team/app", "a"), StoreImage(store, "team/app"))]
        )
    assert batch.ok, batch.outcomes
    assert link.is_file() and link.read_bytes() == a.manifest_digest.encode()
    assert verify(store).ok

    if link_of == "tag":  # and deleting the tag takes such a link away too
        put_directory_in_place(link)
        store.delete_tag("team/app", "a")
        assert store.tags("team/app") == ["b"]


def _blob_link(store: ObjectStore, name: str, digest: str) -> str:
    """The path of the ``_layers`` link of ``digest`` in ``name``, in the store's own
    distribution layout (a file store's file, a memory store's entry)."""
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    layout = backend.layout
    assert isinstance(layout, DistributionLayout)
    return layout._blob_link(name, Digest(digest))


@pytest.mark.parametrize("damage", ["missing", "another blob", "torn", "newline"])
def test_a_blob_its_repository_does_not_link_is_reported_and_a_copy_links_it(
    store: ObjectStore, tmp_path: Path, damage: str
) -> None:
    # A registry serving the store reaches a blob of a repository through its _layers link
    # only (and serves the blob the link names): without it, it answers 404 there, while
    # verify said the store was fine.
    image = build_image(seed=50, layers=2)
    put_image(store, "team/app", "1", image)
    put_image(store, "mirror/app", "1", image)  # the same blobs, linked in another repository
    layer, config = image.layer_digests[1], image.config_digest
    assert store.unlinked_blobs("team/app", [layer, config]) == {}
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    link = _blob_link(store, "team/app", layer)
    served, newline = "a registry serving the store", layer.encode() + b"\n"
    if damage == "missing":
        backend.remove(link)
    elif damage == "another blob":
        backend.write_file(link, config.encode())
    elif damage == "torn":
        backend.write_file(link, b"sha256:not-a-digest")
    else:  # our tag links are read leniently; the registry reads a link as exactly a digest
        backend.write_file(link, newline)

    why = {
        "missing": f"this repository has no link to it: {served} answers 404 for it here",
        "another blob": f"its link in this repository names {config}: {served} answers with "
        "that blob's bytes for it here (or fails, where that blob is not linked either)",
        "torn": f"its link in this repository holds b'sha256:not-a-digest', no digest: {served} "
        "fails on it here",
        "newline": f"its link in this repository holds {newline!r}, no digest: "
        f"{served} fails on it here",
    }[damage]
    unlinked = store.unlinked_blobs("team/app", [layer, config, layer])
    assert unlinked == {Digest(layer): why}
    assert store.unlinked_blobs("mirror/app", [layer, config]) == {}

    report = verify(store)
    assert [(p.kind, p.repository, p.subject) for p in report.problems] == [
        ("unlinked-blob", "team/app", layer)
    ]
    problem = report.problems[0]
    assert problem.detail.startswith(f"{why}; pull or copy the image into this repository")
    assert problem.referenced_by == (image.manifest_digest,)
    assert problem.quarantined is None and store.blob_exists(layer)  # the blob is sound
    assert report.blobs_checked == len(image.blobs) and not report.ok
    assert verify(store, "mirror/app").ok

    # writing the image into the repository again links it (a single image's copy writes its
    # manifest again even when the tag already names it)
    with open_store(str(tmp_path / "source")) as source:
        put_image(source, "team/app", "1", image)
        result = transfer_one(StoreImage(source, "team/app", "1"), StoreImage(store, "team/app"))
    assert result.manifest_digest == Digest(image.manifest_digest) and not result.unchanged
    assert backend.read_file(link) == layer.encode()
    assert store.unlinked_blobs("team/app", [layer, config]) == {}
    assert verify(store).ok


def test_a_blob_link_in_a_directorys_place_or_unreadable_is_reported_as_such(
    file_store: tuple[ObjectStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = file_store
    image = build_image(seed=53, layers=2)
    put_image(store, "team/app", "1", image)
    first, second = image.layer_digests
    backend = store.backend
    assert isinstance(backend, FsspecBackend)
    put_directory_in_place(Path(_blob_link(store, "team/app", first)))
    unreadable = _blob_link(store, "team/app", second)
    read_file = backend.read_file

    def failing(path: str) -> bytes | None:
        if path == unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return read_file(path)

    monkeypatch.setattr(backend, "read_file", failing)
    problems = {(p.kind, p.subject): p for p in verify(store).problems}
    assert sorted(problems) == [("unlinked-blob", first), ("unreadable", second)]
    assert problems["unlinked-blob", first].detail.startswith(
        "a directory stands where its link in this repository belongs"
    )
    assert "its link: " in problems["unreadable", second].detail
    assert "Permission denied" in problems["unreadable", second].detail
    assert problems["unreadable", second].referenced_by == (image.manifest_digest,)


def test_blob_links_that_cannot_be_read_in_an_outage_fail_the_verify(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = build_image(seed=54)
    put_image(store, "team/app", "1", image)
    listed = store.manifests
    calls: list[str] = []

    def unreadable(name: str, digests: Any) -> dict[Digest, str]:
        raise StoreError("the store went away")

    def listing(name: str) -> list[Digest]:
        calls.append(name)
        if len(calls) > 1:  # (the first is verify's own listing)
            raise StoreError("the store went away")
        return listed(name)

    monkeypatch.setattr(store, "unlinked_blobs", unreadable)
    monkeypatch.setattr(store, "manifests", listing)
    with pytest.raises(StoreError, match="went away"):
        verify(store)


def test_unlinked_blobs_names_only_what_a_layout_with_links_can_miss(tmp_path: Path) -> None:
    # the OCI layout keeps one blob directory for every repository: nothing to link, nothing
    # missed; nor are blobs that are not stored at all (verify's missing-blob) asked about
    image = build_image(seed=52)
    with open_store(f"file://{tmp_path / 'oci'}", layout="oci") as oci:
        put_image(oci, "team/app", "1", image)
        assert oci.unlinked_blobs("team/app", list(image.blobs)) == {}
        assert verify(oci).ok
    with open_store(str(tmp_path / "dist")) as dist:
        put_image(dist, "team/app", "1", image)
        stray = sha256_digest(b"never stored")
        assert list(dist.unlinked_blobs("team/app", [stray])) == [Digest(stray)]
        assert dist.unlinked_blobs("team/app", []) == {}
        with pytest.raises(InvalidReferenceError):
            dist.unlinked_blobs("team/app", ["sha256:short"])


@pytest.mark.parametrize("damaged", [("sig",), ("index",), ("sig", "index")])
def test_damaged_signature_and_referrers_tags_fail_a_copy_out_and_are_written_by_one_in(
    tmp_path: Path, damaged: tuple[str, ...]
) -> None:
    # a damaged cosign tag once left the copy "ok" without its signature, and a damaged
    # referrers index stopped verify, ls and every later write of a referrer
    image = oci_image(seed=30)
    sig, sbom = cosign_signature(image, seed=30), oci_artifact(image)
    tags = {"sig": sigstore_tags(str(image.digest))[0], "index": referrers_tag(str(image.digest))}
    sig_tag = tags["sig"]
    with contextlib.ExitStack() as stack:
        source, store, out = (
            stack.enter_context(open_store(str(tmp_path / where)))
            for where in ("source", "store", "out")
        )
        for place in (source, store):
            write_image(place, "app", "v1", image)
            write_image(place, "app", sig_tag, sig)
            write_image(place, "app", None, sbom)
        for which in damaged:
            damage_tag_link(tmp_path / "store", "app", tags[which])

        report = verify(store)  # each damaged tag once, and nothing about the SBOM's index
        assert sorted((p.kind, p.subject) for p in report.problems) == sorted(
            ("damaged-tag", tags[which]) for which in damaged
        )

        batch = transfer_many(
            [(StoreImage(store, "app", "v1"), StoreImage(out, "app"))], referrers=True
        )
        assert not batch.ok and "is damaged" in (batch.outcomes[0].error or "")

        batch = transfer_many(
            [(StoreImage(source, "app", "v1"), StoreImage(store, "app"))], referrers=True
        )
        assert batch.ok, batch.outcomes
        assert store.resolve("app", sig_tag) == sig.digest
        assert [d.digest for d in store.referrers("app", str(image.digest))] == [sbom.digest]
        assert verify(store).ok


@pytest.mark.parametrize("damage", ["torn", "directory"])
def test_a_damaged_referrers_index_is_rebuilt_from_the_stored_referrers(
    file_store: tuple[ObjectStore, Path], damage: str
) -> None:
    # A referrers index whose tag was damaged used to be written anew with the next referrer
    # alone: the earlier ones dropped out of it (verify: unindexed-referrer) until a copy with
    # referrers listed them again.
    store, root = file_store
    image, other = oci_image(seed=60), oci_image(seed=61)
    first, second = oci_artifact(image, b'{"n": 1}'), oci_artifact(image, b'{"n": 2}')
    about_other = oci_artifact(other, b'{"n": 3}')
    write_image(store, "app", "v1", image)
    write_image(store, "app", "v2", other)
    for referrer in (first, second, about_other):
        write_image(store, "app", None, referrer)
    tag = referrers_tag(str(image.digest))
    link = damage_tag_link(root, "app", tag)
    if damage == "directory":
        put_directory_in_place(link)
    with pytest.raises(DamagedTagError):
        store.referrers("app", str(image.digest))

    third = oci_artifact(image, b'{"n": 4}')
    write_image(store, "app", None, third)
    listed = [d.digest for d in store.referrers("app", str(image.digest))]
    assert sorted(listed) == sorted([first.digest, second.digest, third.digest])
    assert [d.digest for d in store.referrers("app", str(other.digest))] == [about_other.digest]
    assert verify(store).ok

    # and a removal from a damaged index keeps the others
    damage_tag_link(root, "app", tag)
    store.delete_manifest("app", str(second.digest))
    store.unindex_referrer("app", str(image.digest), str(second.digest))
    listed = [d.digest for d in store.referrers("app", str(image.digest))]
    assert sorted(listed) == sorted([first.digest, third.digest])
    # the versions each damage hid (no writer knew to delete them) list the deleted referrer:
    # gc collects them as the old index versions they are
    assert {p.kind for p in verify(store).problems} == {"missing-manifest"}
    removed = collect_garbage(store, grace=0).referrers_removed
    assert len(removed) == 2 and all(r.startswith("app@sha256:") for r in removed)
    assert verify(store).ok
    assert sorted(d.digest for d in store.referrers("app", str(image.digest))) == sorted(
        [first.digest, third.digest]
    )


def test_rebuilding_a_damaged_referrers_index_passes_over_what_it_cannot_read(
    file_store: tuple[ObjectStore, Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, root = file_store
    image, other = oci_image(seed=62), oci_image(seed=63)
    first, second = oci_artifact(image, b'{"n": 1}'), oci_artifact(image, b'{"n": 2}')
    for tag, built in (("v1", image), ("v2", other), (None, first), (None, second)):
        write_image(store, "app", tag, built)
    put_directory_in_place(blob_path(root, str(other.digest)))  # one manifest unreadable
    damage_tag_link(root, "app", referrers_tag(str(image.digest)))

    third = oci_artifact(image, b'{"n": 3}')
    with caplog.at_level("WARNING", logger="regstore.store"):
        write_image(store, "app", None, third)
    listed = sorted(d.digest for d in store.referrers("app", str(image.digest)))
    assert listed == sorted([first.digest, second.digest, third.digest])
    assert f"rebuilding the referrers index {referrers_tag(str(image.digest))}" in caplog.text


def test_a_damaged_referrers_index_of_a_sha512_subject_is_rebuilt_too(store: ObjectStore) -> None:
    # its tag keeps 64 of the digest's 128 hex characters: the subject is found by that tag
    subject = {"mediaType": OCI_MANIFEST, "digest": "sha512:" + "ab" * 64, "size": 321}
    tag = referrers_tag(subject["digest"])
    assert len(tag) < len(subject["digest"])

    def referrer(seed: int) -> Manifest:
        built = oci_artifact(oci_image(seed=seed), json.dumps({"n": seed}).encode())
        for blob in built.blobs:
            if not store.blob_exists(str(blob.digest)):
                write_blob(store, blob)
        doc = {**built.manifest.doc, "subject": subject}
        return Manifest.parse(json.dumps(doc).encode())

    first = referrer(1)
    store.write_manifest("app", None, first)
    _scribble_tag_link(store, "app", tag)
    second = referrer(2)
    store.write_manifest("app", None, second)
    listed = sorted(d.digest for d in store.referrers("app", subject["digest"]))
    assert listed == sorted([first.digest, second.digest])


def test_rebuilding_a_damaged_referrers_index_stops_when_the_store_stops_answering(
    file_store: tuple[ObjectStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a read error while the store still lists the repository passes over that manifest; one
    # after which it no longer answers is an outage: nothing is written (a smaller index
    # would lose entries for good)
    store, root = file_store
    image = oci_image(seed=66)
    first = oci_artifact(image, b'{"n": 1}')
    write_image(store, "app", "v1", image)
    write_image(store, "app", None, first)
    tag = referrers_tag(str(image.digest))
    link = damage_tag_link(root, "app", tag)
    torn = link.read_bytes()
    listings = []
    manifests, manifest = store.manifests, store.manifest

    def listing(name: str) -> list[Digest]:
        listings.append(name)
        if len(listings) > 1:
            raise StoreError("the store went away")
        return manifests(name)

    def reading(name: str, reference: str) -> Any:
        if reference == str(first.digest):
            raise StoreError("cannot read it now")
        return manifest(name, reference)

    monkeypatch.setattr(store, "manifests", listing)
    monkeypatch.setattr(store, "manifest", reading)
    with pytest.raises(StoreError, match="cannot read it now"):
        write_image(store, "app", None, oci_artifact(image, b'{"n": 2}'))
    assert link.read_bytes() == torn  # nothing written over it


def test_a_damaged_referrers_tag_whose_referrers_are_all_gone_is_removed(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # (it stayed damaged, and gc refused to run while it was there)
    store, root = file_store
    image = oci_image(seed=64)
    referrer = oci_artifact(image)
    write_image(store, "app", "v1", image)
    write_image(store, "app", None, referrer)
    tag = referrers_tag(str(image.digest))
    damage_tag_link(root, "app", tag)
    store.delete_manifest("app", str(referrer.digest))
    store.unindex_referrer("app", str(image.digest), str(referrer.digest))
    assert store.tags("app") == ["v1"]
    assert store.referrers("app", str(image.digest)) == []
    collect_garbage(store, grace=0)  # no longer refused
    # what is left: the index version the damaged tag named (no writer could know it), listing
    # the deleted referrer; it names no stored referrer, so no subject, and gc leaves it
    problems = verify(store).problems
    assert [(p.kind, p.subject) for p in problems] == [("missing-manifest", str(referrer.digest))]


def test_gc_collects_old_index_versions_listing_a_deleted_referrer_and_nothing_like_them(
    store: ObjectStore,
) -> None:
    # In a repository of many tags each referrers index update leaves its previous version
    # for gc; one listing a referrer deleted since was never collected (and verify called it
    # missing-manifest for ever). Indexes that only look alike stay.
    image = oci_image(seed=70)
    write_image(store, "app", "v1", image)
    for i in range(_INDEX_PRUNE_TAG_LIMIT):
        store.write_manifest("app", f"t{i}", image.manifest)
    a, b = oci_artifact(image, b'{"n": 1}'), oci_artifact(image, b'{"n": 2}')
    write_image(store, "app", None, a)
    write_image(store, "app", None, b)
    first = add_referrer(None, referrer_descriptor(a.manifest))
    assert first is not None
    second = add_referrer(first, referrer_descriptor(b.manifest))
    assert second is not None and store.has_manifest("app", str(first.digest))

    gone = Descriptor(OCI_MANIFEST, Digest(sha256_digest(b"never stored")), 12)
    alike = add_referrer(first, gone)  # a referrer as listed, and a manifest not stored
    assert alike is not None
    store.write_manifest("app", None, alike, partial=True)  # stored so on purpose: kept
    plain = oci_index([oci_image(seed=71)])  # an index of a plain image, untagged: kept
    write_image(store, "app", None, plain)
    listed = referrer_descriptor(a.manifest).to_json()
    looser = {k: v for k, v in listed.items() if k != "artifactType"}  # not as we list it
    docker = "application/vnd.docker.distribution.manifest.list.v2+json"
    kept = [
        Manifest.parse(json.dumps(doc).encode())
        for doc in (
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [looser]},
            {"schemaVersion": 2, "mediaType": docker, "manifests": [listed]},
        )
    ]
    for index in kept:  # whole, listing a referrer of the image: yet not as we list it
        store.write_manifest("app", None, index)

    store.delete_manifest("app", str(b.digest))
    store.unindex_referrer("app", str(image.digest), str(b.digest))
    assert {p.subject for p in verify(store).problems} == {str(b.digest)}  # in old versions

    removed = collect_garbage(store, grace=0).referrers_removed
    assert removed == [f"app@{second.digest}"]  # (the index is back to the bytes of the first)
    assert store.resolve("app", referrers_tag(str(image.digest))) == first.digest
    assert store.has_manifest("app", str(alike.digest))
    assert store.has_manifest("app", str(plain.digest))
    assert all(store.has_manifest("app", str(index.digest)) for index in kept)
    assert [d.digest for d in store.referrers("app", str(image.digest))] == [a.digest]
    assert verify(store).ok


def test_gc_keeps_what_only_looks_like_an_old_index_version(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = oci_image(seed=73)
    write_image(store, "app", "v1", image)
    for i in range(_INDEX_PRUNE_TAG_LIMIT):  # each index update leaves its previous version
        store.write_manifest("app", f"t{i}", image.manifest)
    a, b, c = (oci_artifact(image, f'{{"n": {n}}}'.encode()) for n in (1, 2, 3))
    for referrer in (a, b, c):
        write_image(store, "app", None, referrer)
    only_a = add_referrer(None, referrer_descriptor(a.manifest))
    assert only_a is not None
    a_and_b = add_referrer(only_a, referrer_descriptor(b.manifest))
    assert a_and_b is not None and store.has_manifest("app", str(a_and_b.digest))

    # an index listing a as a referrers index does, but signed: a version never is
    signed = Manifest.parse(
        json.dumps({**only_a.doc, "annotations": {"signed": "yes"}}).encode(), OCI_INDEX
    )
    store.write_manifest("app", None, signed)
    signature = oci_artifact(BuiltImage(signed), b'{"sig": 1}')
    write_image(store, "app", None, signature)

    # a version listing b, which the listing misses (written since, or stored elsewhere)
    listed = store.manifests
    monkeypatch.setattr(store, "manifests", lambda name: [d for d in listed(name) if d != b.digest])
    removed = collect_garbage(store, grace=0).referrers_removed
    assert f"app@{a_and_b.digest}" not in removed
    assert f"app@{signed.digest}" not in removed and f"app@{signature.digest}" not in removed
    assert store.has_manifest("app", str(signed.digest))
    assert store.has_manifest("app", str(signature.digest))


def test_delete_refuses_a_platform_of_an_index_a_tag_keeps(store: ObjectStore) -> None:
    # deleted, it left the index damaged: verify said missing-manifest, a push of it failed
    index = build_index(seed=9)
    put_image(store, "team/multi", "1", index)
    child = next(d for d in index.manifests if d != index.manifest_digest)
    before = set(store.manifests("team/multi"))
    with pytest.raises(StoreError, match=f"refusing to delete team/multi@{child}") as refused:
        delete_image(store, "team/multi", child)
    assert index.manifest_digest in str(refused.value) and "tags 1" in str(refused.value)
    assert set(store.manifests("team/multi")) == before
    assert verify(store).ok
    deleted = delete_image(store, "team/multi", index.manifest_digest)  # the index: it may go
    assert set(deleted) == set(index.manifests)


def test_gc_refuses_while_a_tag_names_a_manifest_its_repository_does_not_hold(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # a lost revision link: the tag dangles, yet the manifest's bytes and blobs are stored,
    # and gc deleted them all (a pull with --repair would have linked them again)
    store, root = file_store
    kept, lost = build_image(seed=34), build_image(seed=35)
    put_image(store, "team/app", "kept", kept)
    put_image(store, "team/app", "lost", lost)
    _lose_revision(root, "team/app", lost.manifest_digest)
    assert [(p.kind, p.subject) for p in verify(store).problems] == [("dangling-tag", "lost")]
    for dry_run in (True, False):
        with pytest.raises(StoreError, match="tag lost of team/app names a manifest"):
            collect_garbage(store, grace=0, now=time.time() + 3600, dry_run=dry_run)
    assert all(blob_path(root, d).exists() for d in [lost.manifest_digest, *lost.blobs])
    delete_image(store, "team/app", "lost")
    removed = {b.digest for b in collect_garbage(store, grace=0, now=time.time() + 3600).removed}
    assert removed == {lost.manifest_digest, *lost.blobs} - set(kept.blobs)


def test_delete_image_refuses_while_another_tag_is_damaged_and_passes_over_a_dangling_one(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    a, b, c = build_image(seed=31), build_image(seed=32), build_image(seed=33)
    for tag, image in (("a", a), ("same", a), ("b", b), ("c", c)):
        put_image(store, "team/app", tag, image)
    # dangling: c's manifest is gone. One such tag once emptied the set of what the other tags
    # name, and deleting "a" took the manifest "same" still named.
    revisions = root / "docker/registry/v2/repositories/team/app/_manifests/revisions/sha256"
    (revisions / c.manifest_digest.split(":")[1] / "link").unlink()
    assert delete_image(store, "team/app", "a") == []
    assert store.resolve("team/app", "same") == Digest(a.manifest_digest)

    damage_tag_link(root, "team/app", "b")
    before = set(store.manifests("team/app"))
    with pytest.raises(DamagedTagError):  # "b" might name what would go: nothing is deleted
        delete_image(store, "team/app", a.manifest_digest)
    assert set(store.manifests("team/app")) == before
    assert store.resolve("team/app", "same") == Digest(a.manifest_digest)


class _Outage:
    """Every manifest read fails, and with ``listings`` every listing of manifests after the
    first: a network store that went away once verify had listed what to check (or, without,
    one whose reads alone are refused: a permission, a disabled key)."""

    def __init__(self, listings: bool) -> None:
        self.fail_listings = listings
        self.listings = 0

    @hookimpl(wrapper=True)
    def regstore_store_get_manifest(self, name: str, reference: str) -> Generator[None, Any, Any]:
        yield  # the backend answered; the answer never arrives
        raise StoreError("connection refused")

    @hookimpl(wrapper=True)
    def regstore_store_list_manifests(self, name: str) -> Generator[None, Any, Any]:
        found = yield
        self.listings += 1
        if self.fail_listings and self.listings > 1:
            raise StoreError("connection refused")
        return found


@pytest.mark.parametrize("listings", [True, False], ids=["gone", "reads-refused"])
def test_verify_fails_when_the_store_stops_answering(
    file_store: tuple[ObjectStore, Path], listings: bool
) -> None:
    # an outage after the listing is no damage: verify fails with its error, as it did
    store, _ = file_store
    put_image(store, "team/app", "a", build_image(seed=34))
    put_image(store, "team/app", "b", build_image(seed=35))
    store.add_wrapper(_Outage(listings))
    with pytest.raises(StoreError, match="connection refused"):
        verify(store)


def test_a_file_that_cannot_be_read_is_reported_and_the_rest_verified(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # an I/O error on one manifest stopped the whole verify (a directory where the manifest's
    # file belongs fails the read as EISDIR does, for root too)
    store, root = file_store
    a, b = build_image(seed=28), build_image(seed=29)
    put_image(store, "team/app", "a", a)
    put_image(store, "other", "b", b)
    put_directory_in_place(blob_path(root, a.manifest_digest))
    report = verify(store)
    assert sorted((p.kind, p.repository, p.subject) for p in report.problems) == [
        ("unreadable", "team/app", "a"),
        ("unreadable", "team/app", a.manifest_digest),
    ]
    assert all(f"[Errno {errno.EISDIR}]" in p.detail for p in report.problems)
    assert report.manifests_checked == 2 and report.blobs_checked == len(b.blobs)
    with pytest.raises(StoreError, match="cannot collect garbage"):
        collect_garbage(store, grace=0)
    assert all(store.blob_exists(d) for d in a.blobs if d != a.manifest_digest)


@pytest.mark.parametrize("which", ["layer", "manifest"])
def test_a_directory_where_a_blob_belongs_is_replaced_by_a_copy(
    file_store: tuple[ObjectStore, Path], tmp_path: Path, which: str
) -> None:
    # the copy that should mend it failed: its rename onto the directory (EISDIR)
    store, root = file_store
    image = build_image(seed=44, layers=2)
    put_image(store, "team/app", "1", image)
    put_image(store, "other", "1", build_image(seed=45))  # (a store that still reads)
    victim = image.layer_digests[0] if which == "layer" else image.manifest_digest
    put_directory_in_place(blob_path(root, victim))
    (blob_path(root, victim) / "stray").write_bytes(b"what the damage left")
    found = {(p.kind, p.subject) for p in verify(store).problems}
    assert found == (
        {("missing-blob", victim)}
        if which == "layer"
        else {("unreadable", victim), ("unreadable", "1")}
    )

    with open_store(str(tmp_path / "source")) as source:
        put_image(source, "team/app", "1", image)
        batch = transfer_many(
            [(StoreImage(source, "team/app", "1"), StoreImage(store, "team/app", "2"))]
        )
    assert batch.ok, batch.outcomes
    assert blob_path(root, victim).is_file() and verify(store).ok


class _BlobOutage(_Outage):
    """Reads of the blobs in ``failing`` fail (manifests read); with ``gone`` every listing of
    a repository's manifests after the first fails too: a network store that went away once
    verify had listed them."""

    def __init__(self, failing: set[str], gone: bool) -> None:
        super().__init__(listings=gone)
        self.failing = failing

    @hookimpl(wrapper=True)
    def regstore_store_get_manifest(self, name: str, reference: str) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def regstore_store_open_blob(self, digest: str, offset: int) -> Generator[None, Any, Any]:
        handle = yield
        if digest not in self.failing:
            return handle
        handle.close()
        raise StoreError("connection reset by peer")


@pytest.mark.parametrize("case", ["gone", "reads-refused", "one-unreadable"])
def test_blob_read_errors_fail_the_verify_unless_the_store_still_answers(
    file_store: tuple[ObjectStore, Path], case: str
) -> None:
    # every blob after an outage was reported damaged: an outage is no damage
    store, _ = file_store
    image = build_image(seed=43, layers=2)
    put_image(store, "team/app", "1", image)
    layers = image.layer_digests
    failing = {"gone": set(layers), "reads-refused": set(image.blobs)}.get(case, {layers[0]})
    store.add_wrapper(_BlobOutage({str(d) for d in failing}, gone=case == "gone"))
    if case == "one-unreadable":  # the store lists, other blobs read: the one is reported
        report = verify(store)
        assert [(p.kind, p.subject) for p in report.problems] == [("unreadable", layers[0])]
        assert "connection reset by peer" in report.problems[0].detail
        assert report.problems[0].referenced_by == (image.manifest_digest,)
        assert report.blobs_checked == len(image.blobs)  # the others read, and found sound
        assert store.blob_exists(layers[0])  # not quarantined: its bytes are not known bad
        return
    with pytest.raises(StoreError, match="connection reset by peer"):
        verify(store)


@pytest.mark.parametrize("damage", ["torn", "missing", "digest", "no digest", "entry"])
def test_a_damaged_oci_index_stops_the_store_and_is_kept_as_it_is(
    tmp_path: Path, damage: str
) -> None:
    # a missing index.json read as an empty store: verify said OK, gc deleted every blob, and
    # the next write started a new index over them
    root = tmp_path / "oci"
    image = build_image(seed=26)
    with open_store(f"file://{root}?layout=oci") as store:
        put_image(store, "app", "1", image)
    torn = (root / "index.json").read_bytes()[:40]
    if damage == "torn":
        (root / "index.json").write_bytes(torn)
    elif damage == "missing":
        (root / "index.json").unlink()
    else:
        # an entry whose digest is scribbled over was passed over: the image left every
        # listing, verify said OK and gc deleted its blobs
        index = json.loads((root / "index.json").read_bytes())
        if damage == "digest":
            index["manifests"][0]["digest"] = "sha256:zzzz"
        elif damage == "no digest":
            del index["manifests"][0]["digest"]
        else:
            index["manifests"].append("not a descriptor")
        torn = json.dumps(index).encode()
        (root / "index.json").write_bytes(torn)
    says = {"missing": r"index\.json is missing, yet", "torn": r"corrupt .*index\.json"}.get(
        damage, r"corrupt .*index\.json: its entry \d names no valid digest"
    )
    with open_store(f"file://{root}?layout=oci") as store:
        for action in (
            store.repositories,
            lambda: verify(store),
            lambda: collect_garbage(store, grace=0, now=time.time() + 3600),
            lambda: put_image(store, "app", "2", build_image(seed=27)),
        ):
            with pytest.raises(StoreDamageError, match=says) as raised:
                action()
            assert raised.value.path.endswith("index.json")
        assert all(store.blob_exists(digest) for digest in image.blobs)
    if damage != "missing":
        assert (root / "index.json").read_bytes() == torn  # left for a restore or a hand repair
    else:
        assert not (root / "index.json").exists()


def _store_as_another_tool(
    store: ObjectStore, root: Path, data: bytes, media_type: str, ref_name: str
) -> None:
    """Store ``data`` as a blob of the OCI layout at ``root`` and name it in ``index.json``
    as skopeo or oras would: by a bare ref name, in no repository."""
    with store.layer(sha256_digest(data)).writer() as writer:
        writer.write(data)
        writer.commit(len(data))
    index = json.loads((root / "index.json").read_bytes())
    index["manifests"].append(
        {
            "mediaType": media_type,
            "digest": sha256_digest(data),
            "size": len(data),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }
    )
    (root / "index.json").write_text(json.dumps(index))


def test_gc_refuses_while_another_tool_s_oci_entry_names_no_manifest_it_can_read(
    tmp_path: Path,
) -> None:
    # what such an entry keeps in use is unknown: nothing is collected
    root = tmp_path / "oci"
    stray = random_blob(300, seed=44)
    with open_store(f"file://{root}?layout=oci") as store:
        put_image(store, "app", "1", build_image(seed=45))
        _store_as_another_tool(store, root, stray, OCI_MANIFEST, "v2")
        with pytest.raises(StoreDamageError, match=r"which is no manifest .* remove that entry"):
            collect_garbage(store, grace=0, now=time.time() + 3600)
        assert store.blob_exists(sha256_digest(stray))


def test_verify_answers_for_a_damaged_and_an_unreadable_manifest_together(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # a damaged manifest is an answer of the store: verify reports both, it does not fail
    store, root = file_store
    a, b = build_image(seed=36), build_image(seed=37)
    put_image(store, "team/app", "a", a)
    put_image(store, "team/app", "b", b)
    put_directory_in_place(blob_path(root, a.manifest_digest))
    flip_byte(blob_path(root, b.manifest_digest), offset=40)
    kinds = sorted({p.kind for p in verify(store, quarantine=False).problems})
    assert kinds == ["damaged-manifest", "unreadable"]


# -- delete_image --------------------------------------------------------------------------------


class _FailsFrom:
    """Reads of manifest ``digest`` fail from the ``nth`` on (a read timed out)."""

    def __init__(self, digest: str, nth: int) -> None:
        self.digest, self.nth = digest, nth
        self.reads = 0

    @hookimpl(wrapper=True)
    def regstore_store_get_manifest(self, name: str, reference: str) -> Generator[None, Any, Any]:
        answer = yield
        if reference == self.digest:
            self.reads += 1
            if self.reads >= self.nth:
                raise StoreError("read timed out")
        return answer


def test_a_referrer_deleted_leaves_its_index_whatever_a_later_read_of_it_would_do(
    tmp_path: Path,
) -> None:
    # delete_image read each manifest to delete once more, apart from its walk, for its
    # subject, and passed over a failure there: a read that timed out left the deleted
    # referrer listed in its subject's referrers index. Now the walk's reads are the only ones.
    image = oci_image(seed=40)
    sbom = oci_artifact(image)
    with open_store(str(tmp_path / "store")) as store:
        write_image(store, "app", "v1", image)
        write_image(store, "app", None, sbom)
        store.add_wrapper(_FailsFrom(str(sbom.digest), 4))  # after the target's and walks' reads
        assert delete_image(store, "app", str(sbom.digest)) == [str(sbom.digest)]
        assert store.referrers("app", str(image.digest)) == []
    with open_store(str(tmp_path / "walk")) as store:  # a failing read in a walk: nothing goes
        write_image(store, "app", "v1", image)
        write_image(store, "app", None, sbom)
        store.add_wrapper(_FailsFrom(str(sbom.digest), 2))
        with pytest.raises(StoreError, match="read timed out"):
            delete_image(store, "app", str(sbom.digest))
        assert sbom.digest in store.manifests("app")


def test_delete_image_knows_what_stays_before_it_deletes_anything(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    a, index = build_image(seed=38), build_index(seed=39)
    put_image(store, "team/app", "a", a)
    put_image(store, "team/app", "multi", index)
    damaged = index.children[0].manifest_digest
    flip_byte(blob_path(root, damaged), offset=40)
    # what "multi" keeps cannot be told whole: deleting "a" stops before anything goes (it
    # once deleted the tag, then failed)
    with pytest.raises(ManifestInvalidError):
        delete_image(store, "team/app", "a")
    assert sorted(store.tags("team/app")) == ["a", "multi"]
    # within the image deleted, the damaged child goes as it is
    deleted = delete_image(store, "team/app", "multi")
    assert set(deleted) == {index.manifest_digest} | {c.manifest_digest for c in index.children}
    assert delete_image(store, "team/app", "a") == [a.manifest_digest]


def test_delete_image_of_a_damaged_tag_deletes_the_tag_alone(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    a, b = build_image(seed=24), build_image(seed=25)
    put_image(store, "team/app", "a", a)
    put_image(store, "team/app", "b", b)
    damage_tag_link(root, "team/app", "a")
    assert delete_image(store, "team/app", "a") == []  # what it named is unknown: kept
    assert store.tags("team/app") == ["b"]
    assert set(store.manifests("team/app")) == {
        Digest(a.manifest_digest),
        Digest(b.manifest_digest),
    }
    assert verify(store).ok
    with pytest.raises(ImageManifestNotFoundError):
        delete_image(store, "team/app", "a")


def test_delete_image_removes_what_only_it_reached(store: ObjectStore) -> None:
    image, index = build_image(seed=10), build_index(seed=11)
    put_image(store, "team/app", "a", image)
    put_image(store, "team/app", "b", image)
    put_image(store, "team/app", "multi", index)

    assert delete_image(store, "team/app", "a") == []  # "b" still points at it
    assert delete_image(store, "team/app", "b") == [image.manifest_digest]
    deleted = delete_image(store, "team/app", index.manifest_digest)
    assert set(deleted) == {index.manifest_digest} | {c.manifest_digest for c in index.children}
    assert "team/app" not in store.repositories()
    with pytest.raises(ImageManifestNotFoundError):
        delete_image(store, "team/app", "a")
    removed = {b.digest for b in collect_garbage(store, grace=0).removed}
    assert set(image.blobs) | set(index.blobs) <= removed


def test_a_missing_blob_two_repositories_use_is_told_with_both(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # the problem named one repository only (the first), and a reader mended that one alone
    store, root = file_store
    image = build_image(seed=46)
    put_image(store, "team/app", "1", image)
    put_image(store, "a/b/deep", "1", image)
    missing = image.layer_digests[0]
    blob_path(root, missing).unlink()
    problems = [p for p in verify(store).problems if p.subject == missing]
    assert [(p.kind, p.repository) for p in problems] == [("missing-blob", "a/b/deep")]
    assert problems[0].detail.endswith("used in 2 repositories: a/b/deep, team/app")


def _lose_revision(root: Path, name: str, digest: str, *, whole: bool = False) -> None:
    revisions = root / f"docker/registry/v2/repositories/{name}/_manifests/revisions/sha256"
    if whole:
        shutil.rmtree(revisions)
    else:
        (revisions / digest.split(":")[1] / "link").unlink()


def test_gc_refuses_a_dangling_tag_before_it_deletes_any_referrer(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # the orphan pass came first: the SBOM of the image whose revision was lost went, then gc
    # refused (and pull --repair of the image did not bring the SBOM back)
    store, root = file_store
    image = oci_image(seed=47)
    write_image(store, "lib/a", "v1", image)
    sbom = oci_artifact(image)
    write_image(store, "lib/a", None, sbom)
    _lose_revision(root, "lib/a", str(image.digest))
    with pytest.raises(StoreError, match="tag v1 of lib/a names a manifest"):
        collect_garbage(store, grace=0, now=time.time() + 3600)
    assert store.has_manifest("lib/a", str(sbom.digest))


def test_a_repository_with_a_tag_and_no_revision_left_is_listed_and_kept(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # not listed, verify said OK and gc deleted the bytes and blobs the tag still named
    store, root = file_store
    image = build_image(seed=48)
    put_image(store, "lib/one", "v1", image)
    _lose_revision(root, "lib/one", image.manifest_digest, whole=True)
    assert store.repositories() == ["lib/one"]
    assert [(p.kind, p.subject) for p in verify(store).problems] == [("dangling-tag", "v1")]
    with pytest.raises(StoreError, match="tag v1 of lib/one names a manifest"):
        collect_garbage(store, grace=0, now=time.time() + 3600)
    assert all(blob_path(root, d).exists() for d in [image.manifest_digest, *image.blobs])


def test_a_file_named_like_a_tag_among_the_tags_is_no_tag(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    put_image(store, "lib/a", "v1", build_image(seed=49))
    (root / "docker/registry/v2/repositories/lib/a/_manifests/tags/stray").write_text("x")
    assert store.tags("lib/a") == ["v1"]  # it failed the whole repository
    assert verify(store).ok


def test_damaged_manifest_bytes_stop_no_referrer_write_and_a_tag_of_them_can_be_deleted(
    file_store: tuple[ObjectStore, Path],
) -> None:
    store, root = file_store
    v1, v2 = oci_image(seed=50), oci_image(seed=51)
    write_image(store, "lib/a", "v1", v1)
    write_image(store, "lib/a", "v2", v2)
    flip_byte(blob_path(root, str(v1.digest)), offset=40)  # v1's bytes, damaged in place
    first, second = oci_artifact(v2, b'{"n": 1}'), oci_artifact(v2, b'{"n": 2}')
    write_image(store, "lib/a", None, first)  # the old index version's pruning read v1: raised
    index_tag = referrers_tag(str(v2.digest))
    flip_byte(blob_path(root, str(store.manifest("lib/a", index_tag).digest)), offset=30)
    write_image(store, "lib/a", None, second)  # the damaged index is mended, not raised on
    listed = {str(d.digest) for d in store.referrers("lib/a", str(v2.digest))}
    assert listed == {str(first.digest), str(second.digest)}
    assert delete_image(store, "lib/a", "v1") == []  # the tag alone: its bytes list nothing known
    assert store.tags("lib/a") == sorted(["v2", index_tag])


def test_another_tools_artifact_manifest_keeps_its_blobs(tmp_path: Path) -> None:
    # an OCI artifact manifest (oras 1.0) is no manifest regstore parses: gc was stopped for good
    root = tmp_path / "oci"
    payload = random_blob(300, seed=52)
    with open_store(f"file://{root}?layout=oci") as store:
        with store.layer(sha256_digest(payload)).writer() as writer:
            writer.write(payload)
            writer.commit(len(payload))
        artifact = json.dumps(
            {
                "mediaType": "application/vnd.oci.artifact.manifest.v1+json",
                "artifactType": "application/x-example",
                "blobs": [
                    {
                        "mediaType": "application/octet-stream",
                        "digest": sha256_digest(payload),
                        "size": len(payload),
                    }
                ],
            }
        ).encode()
        put_image(store, "app", "1", build_image(seed=53))
        artifact_type = "application/vnd.oci.artifact.manifest.v1+json"
        _store_as_another_tool(store, root, artifact, artifact_type, "v1")
        kept = {str(d) for d in store.outside_references()}
        assert kept == {sha256_digest(artifact), sha256_digest(payload)}
        assert collect_garbage(store, grace=0, now=time.time() + 3600).removed == []


def test_the_refusal_to_delete_a_platform_names_the_tag_of_an_index_of_indexes(
    store: ObjectStore,
) -> None:
    inner = build_index(seed=54)
    put_image(store, "team/multi", None, inner)
    outer = Manifest.parse(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {"mediaType": OCI_INDEX, "digest": inner.manifest_digest, "size": inner.size}
                ],
            }
        ).encode()
    )
    store.write_manifest("team/multi", "top", outer)
    child = next(d for d in inner.manifests if d != inner.manifest_digest)
    with pytest.raises(StoreError, match="lists it, kept by tags top;"):
        delete_image(store, "team/multi", child)


def test_an_image_under_a_tag_shaped_like_a_referrers_tag_is_kept_by_gc(
    file_store: tuple[ObjectStore, Path],
) -> None:
    # gc took any manifest tagged sha256-<hex> for the referrers index of that digest, and
    # deleted an image so tagged once the digest was gone: only an index is a referrers index
    store, _ = file_store
    gone, image = oci_image(seed=50), oci_image(seed=51)
    write_image(store, "lib/a", "v1", gone)
    shaped = referrers_tag(str(gone.digest))
    write_image(store, "lib/a", shaped, image)
    cosigned = cosign_signature(gone)
    write_image(store, "lib/a", sigstore_tags(str(gone.digest))[0], cosigned)
    delete_image(store, "lib/a", str(gone.digest))
    report = collect_garbage(store, grace=0, now=time.time() + 3600)
    assert store.manifest_digest("lib/a", shaped) == image.digest
    assert all(store.blob_exists(str(b.digest)) for b in image.blobs)
    # a cosign signature of the deleted image still goes with it, as before
    assert not store.has_manifest("lib/a", str(cosigned.digest))
    assert f"lib/a@{cosigned.digest}" in report.referrers_removed


@pytest.mark.parametrize("damage", ["gone", "damaged"])
@pytest.mark.parametrize("layout", ["distribution", "oci"])
def test_a_manifest_whose_bytes_are_gone_or_damaged_can_be_deleted_and_gc_goes_on(
    tmp_path: Path, layout: str, damage: str
) -> None:
    # gc refused for the manifest (rightly: what it kept is unknown) and told to delete it;
    # delete by digest said no such manifest (gone) or raised ManifestInvalidError (damaged),
    # and no command could free the store for gc
    root = tmp_path / "store"
    url = f"file://{root}" + ("?layout=oci" if layout == "oci" else "")
    kept, lost = build_image(seed=52), build_image(seed=53)
    with open_store(url) as store:
        put_image(store, "app", "1", kept)
        put_image(store, "app", "2", lost)
        digest = lost.manifest_digest
        data = root / ("blobs/sha256" if layout == "oci" else "docker/registry/v2/blobs/sha256")
        hex_ = digest[7:]
        bytes_file = data / hex_ if layout == "oci" else data / hex_[:2] / hex_ / "data"
        if damage == "gone":
            bytes_file.unlink()
        else:
            bytes_file.write_bytes(b"{ damaged }")
        if layout == "distribution" or damage == "damaged":
            with pytest.raises(StoreError, match="regstore delete store:app:2"):
                collect_garbage(store, grace=0, now=time.time() + 3600)
        assert delete_image(store, "app", "2") == []  # the tag alone: the manifest stays
        with pytest.raises(StoreError, match=f"regstore delete store:app@{digest}"):
            collect_garbage(store, grace=0, now=time.time() + 3600)
        assert delete_image(store, "app", digest) == [digest]
        assert digest not in store.manifests("app") and store.tags("app") == ["1"]
        report = collect_garbage(store, grace=0, now=time.time() + 3600)
        gone = set(lost.blobs) - set(kept.blobs) | ({digest} if damage == "damaged" else set())
        assert {b.digest for b in report.removed} == gone
        assert store.manifest("app", "1").raw == kept.manifest_bytes
        with pytest.raises(ImageManifestNotFoundError):
            delete_image(store, "app", digest)  # not listed any more


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_an_index_whose_child_is_missing_or_damaged_is_unreadable_and_the_rest_listed(
    file_store: tuple[ObjectStore, Path], damage: str
) -> None:
    # a damaged child stopped the listing of every tag of the repository; a missing one was
    # passed over as if a platform filter had left it out: the index listed as whole
    store, root = file_store
    index, plain = build_index(seed=54, media="oci"), build_image(seed=55)
    put_image(store, "team/idx", "multi", index)
    put_image(store, "team/idx", "plain", plain)
    child = index.children[1].manifest_digest
    data = blob_path(root, child)
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes() + b" ")
    with pytest.raises((StoreDamageError, ManifestInvalidError)):
        store.images("team/idx")
    unreadable: list[tuple[str, str, RegstoreError]] = []
    assert [r.tag for r in store.images("team/idx", unreadable=unreadable)] == ["plain"]
    assert [(n, t) for n, t, _ in unreadable] == [("team/idx", "multi")]
    assert child in str(unreadable[0][2])
    # one image asked about: the other's damage is no concern of its record
    assert store.image("team/idx", "plain").digest == plain.manifest_digest
    assert store.image("team/idx", plain.manifest_digest).tag is None
    with pytest.raises((StoreDamageError, ManifestInvalidError)):
        store.image("team/idx", "multi")
    # an index a platform filter stored partial still lists what it holds, without a word
    partial = build_index(seed=56, media="oci")
    for blob_digest, blob in partial.children[0].blobs.items():
        with store.layer(blob_digest).writer() as writer:
            writer.write(blob)
            writer.commit(len(blob))
    store.write_manifest("team/part", None, Manifest.parse(partial.children[0].manifest_bytes))
    store.write_manifest("team/part", "1", Manifest.parse(partial.manifest_bytes), partial=True)
    [record] = store.images("team/part")
    assert record.partial and record.platforms == ("linux/amd64",)


@pytest.mark.parametrize("damage", ["gone", "damaged"])
def test_a_platform_whose_bytes_are_lost_is_not_deleted_from_under_its_tagged_index(
    file_store: tuple[ObjectStore, Path], damage: str
) -> None:
    # deleted by digest, it left the tagged index short of a child, and gc took its blobs
    store, root = file_store
    index = build_index(seed=59, media="oci")
    put_image(store, "app", "1", index)
    child = index.children[0].manifest_digest
    if damage == "gone":
        blob_path(root, child).unlink()
    else:
        blob_path(root, child).write_bytes(b"{ damaged }")
    with pytest.raises(StoreError, match=f"refusing to delete app@{child}: the index"):
        delete_image(store, "app", child)
    assert child in store.manifests("app") and store.tags("app") == ["1"]


def test_gc_spares_a_blob_whose_resumed_commit_is_recent_though_its_bytes_are_old(
    tmp_path: Path,
) -> None:
    # A pull killed after the last byte of a layer, before its commit; the next pull resumes it
    # a day later and commits at once. The rename kept the staged file's date: gc's grace
    # counted from yesterday and deleted the blob before the pull wrote its manifest.
    data = os.urandom(64 * 1024)
    digest = digest_bytes(data)
    with open_store(str(tmp_path / "s")) as store:
        writer = store.layer(digest).writer()
        writer.set_size(len(data))
        writer.write(data)
        writer.close()
        [staged] = [e for e in store.staging() if e.kind.value == "upload"]
        day_ago = time.time() - 86400
        for path in (tmp_path / "s").rglob("*"):
            if path.is_file() and digest.split(":")[1] in str(path):
                os.utime(path, (day_ago, day_ago))
        assert staged.digest == digest
        writer = store.layer(digest).writer()
        assert writer.current_size == len(data)
        writer.set_size(len(data))
        writer.commit()
        report = collect_garbage(store)  # the default grace: an hour
        assert digest not in {b.digest for b in report.removed}
        assert digest in {b.digest for b in report.kept_young}
        assert store.blob_exists(digest)


def _no_quarantine(root: Path) -> Any:
    """A file store's backend that cannot quarantine (deleting it can)."""
    from regstore.backends.filesystem import LocalBackend
    from regstore.errors import UnsupportedError

    class NoQuarantine(LocalBackend):
        def quarantine_blob(self, digest: Digest) -> str:
            raise UnsupportedError("this store cannot quarantine blobs")

    return NoQuarantine(str(root))


def test_a_store_that_cannot_quarantine_deletes_a_damaged_blob_for_the_pull(
    tmp_path: Path,
) -> None:
    # verify said "pull ... --repair" and the repair failed: "cannot quarantine blobs"; no
    # command could take the damaged blob out, and gc keeps it (referenced) for ever
    from regstore.engine.repair import repair_blobs
    from regstore.errors import BlobNotFoundError
    from regstore.store import DELETED_NOT_MOVED

    root = tmp_path / "s"
    data = os.urandom(4096)
    digest = digest_bytes(data)
    store = ObjectStore(_no_quarantine(root), url=str(root))
    try:
        with store.layer(digest).writer() as writer:
            writer.write(data)
            writer.commit(len(data))
        flip_byte(blob_path(root, digest))
        report = repair_blobs(store, [digest])  # pull --repair's first step
        assert report.quarantined == {digest: DELETED_NOT_MOVED}
        assert not store.blob_exists(digest)  # the pull that follows fetches it again
        with pytest.raises(BlobNotFoundError):
            store.set_aside(digest)
    finally:
        store.close()


def test_verify_on_a_store_that_deletes_what_it_cannot_quarantine_says_a_pull_heals_it(
    tmp_path: Path,
) -> None:
    # its hint said "or the next `regstore sync`": a sync learns what is missing from the
    # quarantine, which such a store does not have
    from click.testing import CliRunner

    from regstore import plugins
    from regstore.cli import cli
    from tests.support.cli import put_image

    class Plugin:
        @hookimpl
        def regstore_register_backends(self, register: Any) -> None:
            register("noq", lambda url, **o: _no_quarantine(Path(url.removeprefix("noq://"))))

    root = tmp_path / "s"
    built = build_image(layers=1, layer_size=4096, seed=9700)
    plugins.reset_plugin_manager()
    plugins.register_plugin(Plugin(), name="noq-test")
    try:
        with open_store(f"noq://{root}") as store:
            put_image(store, "noq/app", "1", built)
        flip_byte(blob_path(root, built.layer_digests[0]))
        result = CliRunner().invoke(cli, ["--store", f"noq://{root}", "verify"])
    finally:
        plugins.reset_plugin_manager()
    assert result.exit_code == 1, result.output
    assert "were deleted (this store cannot move blobs aside)" in result.stderr
    assert "`regstore pull REF`" in result.stderr and "next `regstore sync`" not in result.stderr
    assert not blob_path(root, built.layer_digests[0]).exists()  # for the pull to fetch again
