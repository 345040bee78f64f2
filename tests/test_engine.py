"""The engine against the real registry and every store kind: round trips, sharing, platforms,
many images through one pool, corrupt blobs, copy between any two places.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from regstore import (
    DigestMismatchError,
    ImageManifestNotFoundError,
    ObjectStore,
    PlatformNotFoundError,
)
from regstore.cli.output import hint_for
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage, copy, pull, push, transfer_many
from regstore.engine.sync import parse_sync_text, plan_sync, preview_job, run_sync
from regstore.hookspecs import BlobState
from regstore.manifest import Manifest
from regstore.referrers import referrers_tag
from regstore.testing.builders import Built, build_image, build_index
from tests.support.engine import blob_digest_in_registry, raw_manifest, seed_registry
from tests.support.registry import RegistryServer
from tests.support.skopeo import skopeo_inspect_raw
from tests.support.stores import STORE_KINDS

StoreFactory = Callable[[str], ObjectStore]


def _image(kind: str) -> Built:
    if kind == "docker":
        return build_image(layers=2, layer_size=4096, seed=1, media="docker")
    if kind == "oci":
        return build_image(layers=2, layer_size=4096, seed=2, media="oci")
    if kind == "oci-index":
        return build_index(media="oci", seed=3)
    if kind == "docker-list":
        return build_index(media="docker", seed=4)
    if kind == "empty-layer":
        return build_image(layers=1, layer_size=2048, seed=5, media="docker", empty_layer=True)
    if kind == "artifact":
        subject = build_image(layers=1, layer_size=1024, seed=6, media="oci")
        return build_image(layers=1, layer_size=512, seed=7, media="oci", artifact_subject=subject)
    raise ValueError(kind)


IMAGE_KINDS = ("docker", "oci", "oci-index", "docker-list", "empty-layer", "artifact")
ROUND_TRIPS = [(s, i) for s in ("memory", "file-distribution") for i in IMAGE_KINDS] + [
    (s, i) for s in STORE_KINDS[2:] for i in ("docker", "oci-index", "artifact")
]


@pytest.mark.parametrize(("store_kind", "image_kind"), ROUND_TRIPS)
def test_round_trip_registry_store_registry(
    registry: RegistryServer, store_factory: StoreFactory, store_kind: str, image_kind: str
) -> None:
    built = _image(image_kind)
    seed_registry(registry.url, "src/img", "v1", built)
    client = Client(registry.host)
    store = store_factory(store_kind)

    pulled = pull(client, store, "src/img", "v1")

    assert pulled.manifest_digest == built.manifest_digest
    assert store.manifest("src/img", "v1").raw == built.manifest_bytes
    # a referrer (the artifact) is indexed under its subject's referrers tag, as registries
    # without the referrers API keep it
    subject = Manifest.parse(built.manifest_bytes).subject
    expected_tags = ["v1"] if subject is None else sorted(["v1", referrers_tag(subject.digest)])
    assert store.tags("src/img") == expected_tags
    assert sorted(pulled.transferred) == sorted(built.blobs)
    for digest, data in built.blobs.items():
        with store.layer(digest).reader() as reader:
            assert reader.read() == data

    pushed = push(client, store, "src/img", "v1", dest_name="copy/img")
    assert pushed.manifest_digest == built.manifest_digest
    # a real peer reads exactly the same bytes back
    assert skopeo_inspect_raw(f"docker://{registry.host}/copy/img:v1") == built.manifest_bytes
    for digest in built.blobs:
        assert blob_digest_in_registry(registry.url, "copy/img", digest) == digest
    for digest, (media_type, raw) in built.manifests.items():
        assert raw_manifest(registry.url, "copy/img", digest, media_type) == raw


def test_second_pull_and_push_of_shared_layers_move_no_layer_bytes(
    registry: RegistryServer, store_factory: StoreFactory, fault_proxy_factory
) -> None:
    base = build_image(layers=2, layer_size=64 * 1024, seed=10, media="oci")
    first = build_image(layers=1, layer_size=1024, seed=11, media="oci", shared_layers=base.layers)
    second = build_image(layers=1, layer_size=1024, seed=12, media="oci", shared_layers=base.layers)
    seed_registry(registry.url, "team/one", "1", first)
    seed_registry(registry.url, "team/two", "1", second)
    proxy = fault_proxy_factory(registry)
    client = Client(proxy.host)
    store = store_factory("file-distribution")

    pull(client, store, "team/one", "1")
    proxy.clear_records()
    again = pull(client, store, "team/two", "1")

    shared = set(second.layer_digests) & set(first.layer_digests)
    assert len(shared) == 2
    assert shared <= set(again.skipped)
    for digest in shared:
        assert proxy.count("GET", f"/blobs/{digest}") == 0
    unique = sum(len(d) for k, d in second.blobs.items() if k not in shared)
    assert again.bytes_moved == unique

    push(client, store, "team/one", "1", dest_name="mirror/one")
    proxy.clear_records()
    pushed = push(client, store, "team/two", "1", dest_name="mirror/two", mount_from=["mirror/one"])
    assert shared <= set(pushed.mounted)
    assert pushed.bytes_moved == unique
    # only the unique blobs went up: one monolithic PUT each, nothing for the shared ones
    assert proxy.count("PUT", "/blobs/uploads/") == len(second.blobs) - len(shared)
    assert proxy.count("PATCH", "/blobs/uploads/") == 0
    for digest in shared:
        assert blob_digest_in_registry(registry.url, "mirror/two", digest) == digest


def test_platform_filter_pulls_only_matching_children(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    index = build_index(media="oci", seed=20, platforms=[("linux", "amd64"), ("linux", "arm64")])
    seed_registry(registry.url, "multi/app", "2", index)
    store = store_factory("file-oci")

    result = pull(Client(registry.host), store, "multi/app", "2", platforms=["linux/arm64"])

    arm = index.children[1]
    amd = index.children[0]
    assert result.partial
    assert store.is_partial("multi/app", index.manifest_digest)
    assert store.manifest("multi/app", "2").raw == index.manifest_bytes
    assert all(store.blob_exists(d) for d in arm.blobs)
    assert not any(store.blob_exists(d) for d in amd.blobs)
    assert store.has_manifest("multi/app", arm.manifest_digest)
    assert not store.has_manifest("multi/app", amd.manifest_digest)


def test_platform_filter_matching_nothing_is_a_clear_error(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    index = build_index(media="oci", seed=21)
    seed_registry(registry.url, "multi/none", "1", index)
    store = store_factory("memory")
    with pytest.raises(ImageManifestNotFoundError, match="s390x"):
        pull(Client(registry.host), store, "multi/none", "1", platforms=["linux/s390x"])
    assert store.repositories() == []


def test_a_single_platform_image_of_another_platform_is_refused_not_stored(
    registry: RegistryServer, store_factory: StoreFactory, fault_proxy_factory: Any
) -> None:
    # An image of one platform has no index to choose from: its config says its platform,
    # and a mirror asked for arm64 stored amd64 under the tag without a word.
    amd = build_image(seed=22, layers=1, media="oci", platform=("linux", "amd64"))
    arm = build_image(seed=23, layers=1, media="oci", platform=("linux", "arm64", "v8"))
    sbom = build_image(seed=24, layers=1, media="oci", artifact_subject=amd)
    seed_registry(registry.url, "single/app", "amd", amd)
    seed_registry(registry.url, "single/app", "arm", arm)
    seed_registry(registry.url, "single/app", "sbom", sbom)
    store = store_factory("file-distribution")
    with Client(registry.host) as client:
        with pytest.raises(
            PlatformNotFoundError,
            match="single/app@amd has no manifest for platform linux/arm64, linux/s390x: it is "
            "an image for linux/amd64",
        ):
            pull(client, store, "single/app", "amd", platforms=["linux/arm64", "linux/s390x"])
        with pytest.raises(PlatformNotFoundError, match="an image for linux/arm64/v8"):
            pull(client, store, "single/app", "arm", platforms=["linux/arm64/v7"])
        assert store.repositories() == []
        # one of the platforms asked (a variant left out matches any) is taken as it is
        pull(client, store, "single/app", "arm", platforms=["linux/amd64", "linux/arm64"])
        pull(client, store, "single/app", "arm", platforms=["linux/arm64/v8"])
        pull(client, store, "single/app", "amd", platforms=["linux/amd64"])
        pull(client, store, "single/app", "sbom", platforms=["linux/arm64"])  # no platform
    for tag, built in (("arm", arm), ("amd", amd), ("sbom", sbom)):
        assert str(store.manifest("single/app", tag).digest) == built.manifest_digest
    # a store source is held to it too, into a registry
    with pytest.raises(PlatformNotFoundError, match="an image for linux/amd64"):
        copy(
            StoreImage(store, "single/app", "amd"),
            RegistryImage(Client(registry.host), "single/copy", "amd"),
            platforms=["linux/arm64"],
        )

    # a sync given platforms: an image stored before is unchanged (its referrers looked for
    # too); one it would copy is refused by the run, and by the dry run before it
    text = (
        "defaults: {platforms: [linux/arm64]}\n"
        f"sources: [{{registry: '{registry.host}', referrers: true,\n"
        "            repositories: [{name: single/app, tags: [amd, arm]}]}]\n"
    )
    with Client(registry.host) as client:
        plan = plan_sync(parse_sync_text(text), client_for=lambda conn: client, target_store=store)
        assert [o.status for o in run_sync(plan)] == ["skipped", "skipped"]
        fresh = store_factory("memory")
        plan = plan_sync(parse_sync_text(text), client_for=lambda conn: client, target_store=fresh)
        with pytest.raises(PlatformNotFoundError, match="an image for linux/amd64"):
            preview_job(plan.jobs[0])
        assert preview_job(plan.jobs[1]) == "copy"
        outcomes = run_sync(plan).outcomes
        assert [o.status for o in outcomes] == ["failed", "copied"]
        assert "no manifest for platform linux/arm64" in (outcomes[0].error or "")
    refusal = PlatformNotFoundError("a", "1", ["linux/arm64"], ["linux/amd64"], single=True)
    assert hint_for(refusal) == "ask for --platform linux/amd64, or leave out --platform"

    # the config read to tell is read again when the connection breaks, as any blob is
    cut = fault_proxy_factory(registry)
    cut.cut_response(f"/blobs/{amd.config_digest}", 5, times=1)
    taken = store_factory("memory")
    pull(Client(cut.host), taken, "single/app", "amd", platforms=["linux/amd64"])
    assert str(taken.manifest("single/app", "amd").digest) == amd.manifest_digest

    # and checked against its digest as any blob is
    proxy = fault_proxy_factory(registry)
    proxy.corrupt_response(f"/blobs/{amd.config_digest}", times=None)
    other = store_factory("memory")
    with pytest.raises(DigestMismatchError, match=amd.config_digest):
        pull(Client(proxy.host), other, "single/app", "amd", platforms=["linux/amd64"])
    assert other.repositories() == []


def test_platforms_into_a_registry_holding_the_whole_index_write_the_child_there(
    registry: RegistryServer, fault_proxy_factory: Any
) -> None:
    # A tag that names the source's whole index was taken as unchanged when platforms were
    # asked: the same request wrote the one child by a single copy, and kept every platform
    # through a batch (a tag filter, a sync).
    index = build_index(media="oci", seed=40, platforms=[("linux", "amd64"), ("linux", "arm64")])
    amd = index.children[0]
    seed_registry(registry.url, "src/app", "v1", index)
    spec = parse_sync_text(
        f"target: {{registry: '{registry.host}'}}\ndefaults: {{platforms: [linux/amd64]}}\n"
        f"sources: [{{registry: '{registry.host}',\n"
        "            repositories: [{name: src/app, as: dst/app}]}]\n"
    )
    with Client(registry.host) as client:
        source, dest = (
            RegistryImage(client, "src/app", "v1"),
            RegistryImage(client, "dst/app", "v1"),
        )
        assert transfer_many([(source, dest)]).ok
        assert str(client.head_manifest("dst/app", "v1").digest) == index.manifest_digest
        job = plan_sync(spec, client_for=lambda conn: client).jobs[0]
        assert preview_job(job) == "copy"

        [one] = transfer_many([(source, dest)], platforms=["linux/amd64"]).outcomes
        assert one.status == "copied" and one.result is not None
        assert one.result.rewritten_from == index.manifest_digest
        assert str(client.head_manifest("dst/app", "v1").digest) == amd.manifest_digest
        [again] = transfer_many([(source, dest)], platforms=["linux/amd64"]).outcomes
        assert again.status == "skipped"
        assert preview_job(job) == "skip"
        assert [o.status for o in run_sync(plan_sync(spec, client_for=lambda conn: client))] == [
            "skipped"
        ]

        # an image of one platform is never rewritten: unchanged costs no manifest or config
        # read more than without platforms (one HEAD of each side, one manifest GET)
        single = build_image(seed=41, layers=1, media="oci", platform=("linux", "amd64"))
        seed_registry(registry.url, "src/one", "v1", single)
        pair = (RegistryImage(client, "src/one", "v1"), RegistryImage(client, "dst/one", "v1"))
        assert transfer_many([pair], platforms=["linux/amd64"]).ok
        proxy = fault_proxy_factory(registry)
        via = Client(proxy.host)
        again_pair = (RegistryImage(via, "src/one", "v1"), RegistryImage(via, "dst/one", "v1"))
        [outcome] = transfer_many([again_pair], platforms=["linux/amd64"]).outcomes
        assert outcome.status == "skipped"
        assert not proxy.requests_matching("GET", r"/blobs/")
        assert len(proxy.requests_matching("GET", r"/manifests/")) <= 1

        # every platform asked: the index itself, copied back once, then unchanged
        both = ["linux/amd64", "linux/arm64"]
        assert [o.status for o in transfer_many([(source, dest)], platforms=both)] == ["copied"]
        assert str(client.head_manifest("dst/app", "v1").digest) == index.manifest_digest
        assert [o.status for o in transfer_many([(source, dest)], platforms=both)] == ["skipped"]


def test_corrupt_blob_fails_with_digest_mismatch_and_leaves_nothing(
    registry: RegistryServer, store_factory: StoreFactory, fault_proxy_factory
) -> None:
    built = build_image(layers=1, layer_size=256 * 1024, seed=30, media="docker")
    seed_registry(registry.url, "bad/img", "1", built)
    layer = built.layer_digests[0]
    proxy = fault_proxy_factory(registry)
    proxy.corrupt_response(f"/blobs/{layer}", times=None)
    store = store_factory("file-distribution")

    with pytest.raises(DigestMismatchError) as info:
        pull(Client(proxy.host), store, "bad/img", "1")

    assert layer in str(info.value)
    assert store.blob_status(layer).state is BlobState.ABSENT
    assert store.repositories() == []


def test_many_images_share_one_pool_and_fetch_each_digest_once(
    registry: RegistryServer, store_factory: StoreFactory, fault_proxy_factory
) -> None:
    base = build_image(layers=2, layer_size=32 * 1024, seed=40, media="docker")
    images = [
        build_image(
            layers=1, layer_size=1024, seed=41 + i, media="docker", shared_layers=base.layers
        )
        for i in range(3)
    ]
    for i, img in enumerate(images):
        seed_registry(registry.url, f"fleet/app{i}", "1", img)
    proxy = fault_proxy_factory(registry)
    client = Client(proxy.host)
    store = store_factory("memory")
    jobs = [
        (RegistryImage(client, f"fleet/app{i}", "1"), StoreImage(store, f"fleet/app{i}"))
        for i in range(3)
    ]

    batch = transfer_many(jobs, concurrency=4)

    assert batch.ok, batch.as_dict()
    assert [o.status for o in batch.outcomes] == ["copied"] * 3
    for digest in base.layer_digests:
        assert proxy.count("GET", f"/blobs/{digest}") == 1
    # a second run moves nothing and costs one manifest HEAD per image
    proxy.clear_records()
    again = transfer_many(jobs, concurrency=4)
    assert [o.status for o in again.outcomes] == ["skipped"] * 3
    assert proxy.count("GET", "/blobs/") == 0


def test_one_failed_image_does_not_stop_the_others(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    good = build_image(layers=1, layer_size=1024, seed=50)
    seed_registry(registry.url, "ok/img", "1", good)
    client = Client(registry.host)
    store = store_factory("memory")
    batch = transfer_many(
        [
            (RegistryImage(client, "missing/img", "1"), StoreImage(store, "missing/img")),
            (RegistryImage(client, "ok/img", "1"), StoreImage(store, "ok/img")),
        ]
    )
    assert not batch.ok
    assert [o.status for o in batch.outcomes] == ["failed", "copied"]
    assert batch.outcomes[0].error
    assert store.tags("ok/img") == ["1"]


def test_copy_registry_to_registry_with_rename_and_store_to_store(
    registry: RegistryServer, registry_factory, store_factory: StoreFactory
) -> None:
    built = build_index(media="docker", seed=60)
    seed_registry(registry.url, "orig/app", "1.0", built)
    other = registry_factory()
    src, dst = Client(registry.host), Client(other.host)

    result = copy(RegistryImage(src, "orig/app", "1.0"), RegistryImage(dst, "other/name", "new"))

    assert result.manifest_digest == built.manifest_digest
    assert raw_manifest(other.url, "other/name", "new", built.manifest_media_type) == (
        built.manifest_bytes
    )
    for digest in built.blobs:
        assert blob_digest_in_registry(other.url, "other/name", digest) == digest

    a, b = store_factory("memory"), store_factory("file-oci")
    pull(src, a, "orig/app", "1.0")
    copy(StoreImage(a, "orig/app", "1.0"), StoreImage(b, "renamed/app", "latest"))
    assert b.manifest("renamed/app", "latest").raw == built.manifest_bytes
    assert all(b.blob_exists(d) for d in built.blobs)


def test_copy_within_one_registry_mounts_instead_of_uploading(
    registry: RegistryServer,
) -> None:
    built = build_image(layers=2, layer_size=8192, seed=70)
    seed_registry(registry.url, "here/a", "1", built)
    client = Client(registry.host)
    result = copy(RegistryImage(client, "here/a", "1"), RegistryImage(client, "here/b", "1"))
    assert sorted(result.mounted) == sorted(built.blobs)
    assert result.bytes_moved == 0


def test_pull_by_digest_stores_untagged_and_events_are_reported(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    built = build_image(layers=2, layer_size=4096, seed=80, media="oci")
    seed_registry(registry.url, "by/digest", "1", built)
    store = store_factory("memory")
    events = []
    lock = threading.Lock()

    def observe(event: object) -> None:
        with lock:
            events.append(event)

    pull(Client(registry.host), store, "by/digest", built.manifest_digest, events=observe)

    assert store.manifest("by/digest", built.manifest_digest).raw == built.manifest_bytes
    assert store.tags("by/digest") == []
    kinds = {(e.kind.value, e.digest) for e in events}
    for digest in built.blobs:
        assert ("started", digest) in kinds
        assert ("verified", digest) in kinds
    assert ("manifest", built.manifest_digest) in kinds
    progressed = sum(e.nbytes for e in events if e.kind.value == "progress")
    assert progressed == sum(len(b) for b in built.blobs.values())


def test_a_destination_digest_the_image_does_not_have_is_refused(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    # it said copied, named dest@<that digest>, and wrote nothing there and no tag
    from regstore.errors import UsageError

    built = build_image(layers=1, layer_size=1024, seed=81, media="oci")
    seed_registry(registry.url, "dest/digest", "1", built)
    store = store_factory("memory")
    client = Client(registry.host)
    wrong = "sha256:" + "b" * 64
    source = RegistryImage(client, "dest/digest", "1")
    with pytest.raises(UsageError, match="names a digest the image moved does not have"):
        copy(source, StoreImage(store, "c/app", wrong))
    with pytest.raises(UsageError, match=built.manifest_digest):
        pull(client, store, "dest/digest", "1", dest_tag=wrong)
    with pytest.raises(UsageError):
        copy(source, RegistryImage(client, "c/app", wrong))
    assert store.repositories() == [] and store.blobs() == []
    # its own digest is fine: stored untagged
    copy(source, StoreImage(store, "c/app", built.manifest_digest))
    assert store.manifest("c/app", built.manifest_digest).raw == built.manifest_bytes
    assert store.tags("c/app") == []


def test_a_batch_whose_images_write_one_tag_fails_them(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    # both said copied, the last one won, and a re-run reported the other unchanged
    from regstore.errors import UsageError

    one, two = build_image(seed=82, layer_size=512), build_image(seed=83, layer_size=512)
    seed_registry(registry.url, "clash/a", "1", one)
    seed_registry(registry.url, "clash/b", "1", two)
    client = Client(registry.host)
    store, other = store_factory("memory"), store_factory("memory")
    a, b = RegistryImage(client, "clash/a", "1"), RegistryImage(client, "clash/b", "1")
    batch = transfer_many(
        [(a, StoreImage(store, "m/app", "1")), (b, StoreImage(store, "m/app", "1"))]
    )
    assert [o.status for o in batch] == ["failed", "failed"]
    assert all(isinstance(o.exception, UsageError) for o in batch)
    assert "clash/a" in batch.outcomes[0].error and "clash/b" in batch.outcomes[0].error
    assert store.repositories() == []
    # the same image twice, or one tag in each of two stores: no clash
    alike = transfer_many(
        [(a, StoreImage(store, "m/app", "1")), (a, StoreImage(store, "m/app", "1"))]
    )
    assert alike.ok
    apart = transfer_many([(a, StoreImage(store, "m/x", "1")), (b, StoreImage(other, "m/x", "1"))])
    assert apart.ok and store.resolve("m/x", "1") != other.resolve("m/x", "1")
    # one name and tag in two stores are two images: a clash when both go to one tag
    twins = [(StoreImage(s, "m/x", "1"), StoreImage(store, "m/y", "1")) for s in (store, other)]
    assert [o.status for o in transfer_many(twins)] == ["failed", "failed"]


def test_misused_arguments_are_refused_where_they_are_given(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    from regstore.errors import UsageError

    client = Client(registry.host)
    # a URL for a store failed as an AttributeError deep in the engine
    with pytest.raises(TypeError, match="open_store"):
        pull(client, "memory://x", "clash/a", "1")  # type: ignore[arg-type]
    # no blob at a time was taken for one at a time
    with pytest.raises(UsageError, match="concurrency"):
        pull(client, store_factory("memory"), "clash/a", "1", concurrency=0)


def test_events_reach_plugin_observers_without_a_callback(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    from regstore.hookspecs import hookimpl
    from regstore.plugins import get_plugin_manager, register_plugin

    class Observer:
        def __init__(self) -> None:
            self.events: list[object] = []
            self.lock = threading.Lock()

        @hookimpl
        def regstore_transfer_event(self, event: object) -> None:
            with self.lock:
                self.events.append(event)

    built = build_image(layers=1, layer_size=4096, seed=81)
    seed_registry(registry.url, "observed/img", "1", built)
    observer = Observer()
    register_plugin(observer, name="test-observer")
    try:
        pull(Client(registry.host), store_factory("memory"), "observed/img", "1")
    finally:
        get_plugin_manager().unregister(observer)
    verified = {e.digest for e in observer.events if e.kind.value == "verified"}
    assert verified == set(built.blobs)
    assert all(e.operation == "pull" and "observed/img" in e.image for e in observer.events)


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_pull_and_push_with_mount_through_authenticated_registries(
    registry_factory, store_factory: StoreFactory, auth: str
) -> None:
    secured = registry_factory(auth=auth)
    built = build_image(layers=2, layer_size=8192, seed=85, media="oci")
    client = Client(secured.host, username=secured.username, password=secured.password)
    store = store_factory("memory")
    store2 = store_factory("memory")
    # seed through regstore itself: a store → registry push of a locally pulled copy
    open_registry = registry_factory()
    seed_registry(open_registry.url, "seed/img", "1", built)
    pull(Client(open_registry.host), store, "seed/img", "1")

    first = push(client, store, "seed/img", "1", dest_name="secure/one")
    second = push(client, store, "seed/img", "1", dest_name="secure/two", mount_from=["secure/one"])
    back = pull(client, store2, "secure/two", "1")

    assert sorted(first.transferred) == sorted(built.blobs)
    assert sorted(second.mounted) == sorted(built.blobs)
    assert back.manifest_digest == built.manifest_digest
    assert store2.manifest("secure/two", "1").raw == built.manifest_bytes


def test_fail_fast_cancels_the_images_not_yet_started(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    good = build_image(layers=1, layer_size=1024, seed=51)
    seed_registry(registry.url, "ok/img", "1", good)
    client = Client(registry.host)
    store = store_factory("memory")
    jobs = [
        (RegistryImage(client, "missing/img", "1"), StoreImage(store, "missing/img")),
        (RegistryImage(client, "ok/img", "1"), StoreImage(store, "ok/img")),
    ]
    batch = transfer_many(jobs, concurrency=1, keep_going=False)
    assert [o.status for o in batch.outcomes] == ["failed", "cancelled"]
    assert batch.as_dict()["cancelled"] == 1 and not batch.ok
    assert store.repositories() == []


def test_a_platform_filtered_index_moves_between_stores_and_reaches_a_registry_as_its_child(
    registry: RegistryServer, store_factory: StoreFactory
) -> None:
    index = build_index(media="oci", seed=22, platforms=[("linux", "amd64"), ("linux", "arm64")])
    seed_registry(registry.url, "multi/part", "1", index)
    store, other = store_factory("memory"), store_factory("file-distribution")
    pull(Client(registry.host), store, "multi/part", "1", platforms=["linux/arm64"])
    arm = index.children[1]

    copied = copy(StoreImage(store, "multi/part", "1"), StoreImage(other, "multi/part"))
    assert copied.partial and other.is_partial("multi/part", index.manifest_digest)
    assert copied.rewritten_from is None  # a store holds the partial index: the digest stays
    assert other.manifest("multi/part", "1").raw == index.manifest_bytes
    assert other.has_manifest("multi/part", arm.manifest_digest)

    # a registry refuses an index whose manifests are missing: it gets the one child held
    pushed = push(Client(registry.host), store, "multi/part", "1", dest_name="pushed/part")
    assert pushed.manifest_digest == arm.manifest_digest
    assert pushed.rewritten_from == index.manifest_digest
    assert raw_manifest(registry.url, "pushed/part", "1", arm.manifest_media_type) == (
        arm.manifest_bytes
    )
