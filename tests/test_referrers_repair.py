"""Referrers indexes stay true after deletes, crashes and concurrent writers: a listed referrer
that is gone is skipped, stale entries are dropped, a rerun repairs an interrupted index
update, processes sharing a store lose no update, gc keeps tagged artifacts and collects old
index versions (findings 3, 4, 5, 6, 10, 13, 14 and 16b of the referrers review)."""

from __future__ import annotations

import gc as python_gc
import inspect
import json
import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore import ObjectStore, open_store
from regstore import referrers as referrers_module
from regstore.backends.memory import MemoryBackend
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage, copy
from regstore.engine.gc import collect_garbage, delete_image
from regstore.engine.referrers import MAX_TREE_DEPTH, referrer_tree
from regstore.engine.transfer import transfer_many
from regstore.engine.verify import verify
from regstore.errors import ImageManifestNotFoundError
from regstore.events import EventKind, TransferEvent
from regstore.hookspecs import hookimpl
from regstore.manifest import Manifest
from regstore.referrers import add_referrer, index_lock, referrer_descriptor, referrers_tag
from regstore.storetypes import StoreLockHandle
from regstore.testing.builders import (
    cosign_signature,
    oci_artifact,
    oci_image,
    oci_index,
    write_blob,
    write_image,
)
from regstore.testing.processes import CHILD_SCRIPT, ChildProcess
from tests.support.cli import run_cli
from tests.support.fake_registry import FakeRegistry
from tests.support.registry import RegistryServer
from tests.support.spec_registry import push_image, serve_spec_registry

StoreFactory = Callable[[str], ObjectStore]


def _listed(store: ObjectStore, subject: object) -> list[str]:
    return [str(d.digest) for d in store.referrers("app", str(subject))]


def _signed(store: ObjectStore, seed: int, count: int = 2) -> tuple[object, list[object]]:
    image = oci_image(seed=seed)
    write_image(store, "app", "v1", image)
    refs = [oci_artifact(image, payload=b'{"n":%d}' % i) for i in range(count)]
    for ref in refs:
        write_image(store, "app", None, ref)
    return image, refs


# -- finding 3: a referrer that is gone -----------------------------------------------------------


def test_a_listed_referrer_that_is_gone_is_skipped_with_a_warning(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = store_factory("memory"), store_factory("memory")
    image = oci_image(seed=31)
    write_image(src, "app", "v1", image)
    gone, kept = oci_artifact(image, payload=b'{"n":1}'), oci_artifact(image, payload=b'{"n":2}')
    write_image(src, "app", None, gone)
    write_image(src, "app", None, kept)
    src.delete_manifest("app", str(gone.digest))  # behind the index's back
    events: list[TransferEvent] = []
    with caplog.at_level(logging.WARNING, logger="regstore.engine"):
        result = copy(
            StoreImage(src, "app", "v1"),
            StoreImage(dst, "app"),
            referrers=True,
            events=events.append,
        )
    assert [str(d) for d in result.referrers] == [str(kept.digest)]
    assert _listed(dst, image.digest) == [str(kept.digest)]
    warnings = [e for e in events if e.kind is EventKind.WARNING]
    assert [e.digest for e in warnings] == [str(gone.digest)]
    assert "missing" in (warnings[0].error or "")
    assert str(gone.digest) in caplog.text


def test_a_missing_manifest_by_digest_is_named_a_digest() -> None:
    digest = "sha256:" + "ab" * 32
    assert f"Digest: {digest}" in str(ImageManifestNotFoundError("app", digest))
    assert "Tag: v1" in str(ImageManifestNotFoundError("app", "v1"))


@pytest.mark.parametrize("kind", ["memory", "file-distribution", "file-oci"])
def test_deleting_a_referrer_removes_it_from_its_index(
    store_factory: StoreFactory, kind: str
) -> None:
    store = store_factory(kind)
    image, (first, second) = _signed(store, seed=32)
    assert delete_image(store, "app", str(first.digest)) == [str(first.digest)]
    assert _listed(store, image.digest) == [str(second.digest)]
    assert verify(store).ok, verify(store).problems
    third = oci_artifact(image, payload=b'{"n":3}')
    write_image(store, "app", None, third)
    assert _listed(store, image.digest) == [str(second.digest), str(third.digest)]
    other = store_factory("memory")
    copy(StoreImage(store, "app", "v1"), StoreImage(other, "app"), referrers=True)
    assert sorted(_listed(other, image.digest)) == sorted([str(second.digest), str(third.digest)])


def test_deleting_the_last_referrer_removes_its_index_tag(store_factory: StoreFactory) -> None:
    store = store_factory("file-distribution")
    image, (only,) = _signed(store, seed=33, count=1)
    delete_image(store, "app", str(only.digest))
    assert store.tags("app") == ["v1"]
    assert store.manifests("app") == [image.digest]
    assert verify(store).ok


def test_an_index_update_drops_entries_whose_manifest_is_gone(store_factory: StoreFactory) -> None:
    store = store_factory("memory")
    image, (first, second) = _signed(store, seed=34)
    store.delete_manifest("app", str(first.digest))  # leaves the index listing it
    third = oci_artifact(image, payload=b'{"n":3}')
    write_image(store, "app", None, third)
    assert _listed(store, image.digest) == [str(second.digest), str(third.digest)]


def test_add_referrer_keeps_what_exists_and_the_new_entry() -> None:
    image = oci_image(seed=35)
    a, b = oci_artifact(image, payload=b"1"), oci_artifact(image, payload=b"2")
    index = add_referrer(None, referrer_descriptor(a.manifest))
    assert index is not None
    assert add_referrer(index, referrer_descriptor(a.manifest), lambda d: True) is None
    pruned = add_referrer(index, referrer_descriptor(b.manifest), lambda d: False)
    assert pruned is not None and [str(d.digest) for d in pruned.manifests] == [str(b.digest)]


def test_a_stale_fallback_index_on_the_debian_registry(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    """registry 2.8 refuses an index naming a deleted manifest (MANIFEST_BLOB_UNKNOWN): the
    next referrer's push drops the stale entry, and a copy skips it."""
    image = oci_image(seed=36)
    gone, new = oci_artifact(image, payload=b'{"n":1}'), oci_artifact(image, payload=b'{"n":2}')
    with Client(registry.host) as client:
        push_image(client, "app", image, "v1")
        push_image(client, "app", gone)
        client.delete_image("app", str(gone.digest))
        store = store_factory("memory")
        batch = transfer_many(
            [(RegistryImage(client, "app", "v1"), StoreImage(store, "app"))], referrers=True
        )
        assert batch.outcomes[0].status == "copied", batch.outcomes[0].error
        push_image(client, "app", new)  # used to fail: 400 MANIFEST_BLOB_UNKNOWN
        assert [str(d.digest) for d in client.referrers("app", str(image.digest))] == [
            str(new.digest)
        ]


# -- finding 4: a crash between a referrer and its index --------------------------------------


@pytest.mark.parametrize("kind", ["memory", "file-distribution", "file-oci"])
def test_a_rerun_repairs_an_index_update_a_crash_interrupted(
    store_factory: StoreFactory, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = store_factory("memory"), store_factory(kind)
    image, (sbom,) = _signed(src, seed=37, count=1)
    real = ObjectStore._index_referrer
    crashes = []

    def crash_once(self: ObjectStore, name: str, manifest: Manifest) -> None:
        if self is dst and not crashes:
            crashes.append(manifest.digest)
            raise KeyboardInterrupt("killed between the referrer and its index")
        real(self, name, manifest)

    monkeypatch.setattr(ObjectStore, "_index_referrer", crash_once)
    jobs = [(StoreImage(src, "app", "v1"), StoreImage(dst, "app"))]
    with pytest.raises(KeyboardInterrupt):
        transfer_many(jobs, referrers=True)
    assert crashes == [sbom.digest]
    assert dst.has_manifest("app", str(sbom.digest)) and _listed(dst, image.digest) == []
    assert [p.kind for p in verify(dst).problems] == ["unindexed-referrer"]
    transfer_many(jobs, referrers=True)  # the rerun verify's advice names
    assert _listed(dst, image.digest) == [str(sbom.digest)]
    assert verify(dst).ok, verify(dst).problems


def test_a_rerun_repairs_a_registrys_fallback_index(
    registry: RegistryServer, store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regstore.client.referrers import ReferrersMixin

    src = store_factory("memory")
    image, (sbom,) = _signed(src, seed=38, count=1)
    real = ReferrersMixin._keep_fallback_index
    crashes = []

    def crash_once(self: ReferrersMixin, name: str, manifest: Manifest) -> None:
        if not crashes:
            crashes.append(manifest.digest)
            raise KeyboardInterrupt("killed between the referrer and its index")
        real(self, name, manifest)

    monkeypatch.setattr(ReferrersMixin, "_keep_fallback_index", crash_once)
    with Client(registry.host) as client:
        jobs = [(StoreImage(src, "app", "v1"), RegistryImage(client, "app"))]
        with pytest.raises(KeyboardInterrupt):
            transfer_many(jobs, referrers=True)
        assert client.referrers("app", str(image.digest)) == []
        transfer_many(jobs, referrers=True)
        assert [str(d.digest) for d in client.referrers("app", str(image.digest))] == [
            str(sbom.digest)
        ]


def test_writing_a_listed_referrer_again_reads_the_index_once(store_factory: StoreFactory) -> None:
    store = store_factory("memory")
    image, (sbom,) = _signed(store, seed=39, count=1)
    before = store.manifest("app", referrers_tag(str(image.digest))).digest
    store.index_referrer("app", store.manifest("app", str(sbom.digest)))
    assert store.manifest("app", referrers_tag(str(image.digest))).digest == before


# -- finding 5: processes sharing a store -----------------------------------------------------


def test_referrers_written_by_several_processes_into_a_file_store_are_all_indexed(
    tmp_path: Path, store_factory: StoreFactory, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "shared")
    store = open_store(url)
    request.addfinalizer(store.close)
    subject = oci_image(seed=76)
    write_image(store, "app", "v1", subject)
    write_blob(store, oci_artifact(subject).blobs[0])  # the empty config all of them share
    workers, count = 3, 8
    children = [
        ChildProcess(CHILD_SCRIPT, url, "referrers", "app", "76", str(w), str(count), timeout=120)
        for w in range(workers)
    ]
    for child in children:
        request.addfinalizer(child.stop)
    for child in children:
        child.expect("ready")
    for child in children:
        child.send("go")
    for child in children:
        child.expect("done")
        child.finish()
    assert len(store.referrers("app", str(subject.digest))) == workers * count
    assert verify(store).ok, verify(store).problems


def test_composed_backends_have_a_store_lock(store_factory: StoreFactory) -> None:
    for kind in ("memory", "file-distribution"):
        with store_factory(kind).lock("referrers/app/x") as across_processes:
            assert across_processes is True


# -- finding 6 and 10: gc -----------------------------------------------------------------------


def test_gc_keeps_a_tagged_artifact_whose_subject_is_not_stored(
    store_factory: StoreFactory,
) -> None:
    store = store_factory("memory")
    sbom = oci_artifact(oci_image(seed=40))
    write_image(store, "app", "sbom-v1", sbom)  # pulled by its own tag, without its image
    collect_garbage(store, grace=0)
    assert store.has_manifest("app", "sbom-v1")
    assert store.resolve("app", "sbom-v1") == sbom.digest


@pytest.mark.parametrize("kind", ["memory", "file-distribution", "file-oci"])
def test_an_index_update_deletes_its_previous_version(
    store_factory: StoreFactory, kind: str
) -> None:
    store = store_factory(kind)
    image, refs = _signed(store, seed=41, count=3)
    index = store.resolve("app", referrers_tag(str(image.digest)))
    assert sorted(map(str, store.manifests("app"))) == sorted(
        [str(image.digest), str(index)] + [str(r.digest) for r in refs]
    )


def test_gc_collects_old_referrers_index_versions(store_factory: StoreFactory) -> None:
    store = store_factory("file-distribution")
    image, (first, second) = _signed(store, seed=42)
    # an earlier version left untagged (as every update did before)
    old = add_referrer(None, referrer_descriptor(store.manifest("app", str(first.digest))))
    assert old is not None
    store.write_manifest("app", None, old)
    unrelated = oci_index([oci_image(seed=43)])  # an untagged index of images stays
    write_image(store, "app", None, unrelated)
    report = collect_garbage(store, grace=0)
    assert report.referrers_removed == [f"app@{old.digest}"]
    assert not store.has_manifest("app", str(old.digest))
    assert store.has_manifest("app", str(unrelated.digest))
    assert sorted(_listed(store, image.digest)) == sorted([str(first.digest), str(second.digest)])
    assert verify(store).ok, verify(store).problems


def test_gc_after_the_subject_is_deleted_leaves_a_clean_store(store_factory: StoreFactory) -> None:
    store = store_factory("memory")
    _signed(store, seed=44, count=3)
    keep = oci_image(seed=45)
    write_image(store, "app", "keep", keep)
    delete_image(store, "app", "v1")
    collect_garbage(store, grace=0)
    assert store.manifests("app") == [keep.digest]
    assert verify(store).ok, verify(store).problems


# -- finding 13: a deep chain -------------------------------------------------------------------


def test_a_deep_chain_of_referrers_is_cut_with_a_warning(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A chain longer than the interpreter's recursion limit (the review's was 1,200 long; the
    limit is lowered here so that a short chain, quick to build, is one)."""
    store = store_factory("memory")
    image = oci_image(seed=46)
    write_image(store, "app", "v1", image)
    previous = image
    for i in range(180):
        artifact = oci_artifact(previous, payload=b'{"n":%d}' % i)
        write_image(store, "app", None, artifact)
        previous = artifact
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 150)
    try:
        with caplog.at_level(logging.WARNING, logger="regstore.engine"):
            tree = referrer_tree(StoreImage(store, "app", "v1"))
    finally:
        sys.setrecursionlimit(limit)
    assert tree.truncated and tree.count == MAX_TREE_DEPTH
    assert "deeper than" in caplog.text
    assert json.loads(json.dumps(tree.as_dict()))["truncated"] is True


# -- finding 14: a rewritten index --------------------------------------------------------------


def test_a_platform_filtered_copy_to_a_registry_names_the_referrers_left_out(
    fake_registry: FakeRegistry, store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    serve_spec_registry(fake_registry)
    src = store_factory("memory")
    amd, arm = oci_image(seed=47), oci_image(seed=48)
    index = oci_index([amd, arm])
    signature = cosign_signature(index, with_subject=True)
    write_image(src, "multi", "v1", index)
    write_image(src, "multi", None, signature)
    events: list[TransferEvent] = []
    with Client(fake_registry.url) as client, caplog.at_level(logging.WARNING):
        result = copy(
            StoreImage(src, "multi", "v1"),
            RegistryImage(client, "multi"),
            platforms=["linux/amd64"],
            referrers=True,
            events=events.append,
        )
    assert result.rewritten_from == index.digest
    warnings = [e for e in events if e.kind is EventKind.WARNING]
    assert [e.digest for e in warnings] == [str(index.digest)]
    assert str(signature.digest) in (warnings[0].error or "")
    assert str(signature.digest) in caplog.text


# -- finding 16b: the in-process locks ----------------------------------------------------------


def test_index_locks_are_forgotten_once_unused() -> None:
    for i in range(50):
        with index_lock(("test-forgotten", i)):
            pass
    python_gc.collect()
    assert not [k for k in list(referrers_module._locks.keys()) if k[0] == "test-forgotten"]
    held = index_lock(("test-forgotten", "held"))
    python_gc.collect()
    assert index_lock(("test-forgotten", "held")) is held  # kept while someone holds it


class _NoLockBackend(MemoryBackend):
    """A backend that answers the store-lock hook with None: "unsupported"."""

    @hookimpl
    def regstore_store_lock(self, key: str, timeout: float | None) -> StoreLockHandle | None:
        return None


def test_a_backend_without_a_store_lock_falls_back_to_the_in_process_lock() -> None:
    store = ObjectStore(_NoLockBackend(f"no-lock-{uuid.uuid4().hex}"), url="memory://no-lock")
    with store.lock("referrers/app/x") as across_processes:
        assert across_processes is False
    image, refs = _signed(store, seed=49, count=2)
    assert sorted(_listed(store, image.digest)) == sorted(str(r.digest) for r in refs)


def test_inspect_draws_a_deep_chain_cut_where_it_stops(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    image = oci_image(seed=50)
    write_image(store, "app", "v1", image)
    previous = image
    for i in range(MAX_TREE_DEPTH + 3):
        artifact = oci_artifact(previous, payload=b'{"n":%d}' % i)
        write_image(store, "app", None, artifact)
        previous = artifact
    store.close()
    shown = run_cli("inspect", "store:app:v1", "--referrers", home=tmp_path, store=str(store_dir))
    assert shown.returncode == 0, str(shown)
    assert "deeper referrers not shown" in shown.stdout
    assert f"{MAX_TREE_DEPTH} referrer(s)" in shown.stdout + shown.stderr
