"""Stores keep referrers: an index per subject that a stock registry serving the store shows as
the referrers tag schema (file and S3), the OCI layout's index.json, verify's referrer closure,
and gc keeping a referrer while its subject lives."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore import ObjectStore, open_store
from regstore.client import Client
from regstore.engine import StoreImage, pull
from regstore.engine.gc import collect_garbage, delete_image
from regstore.engine.transfer import transfer_many
from regstore.engine.verify import verify
from regstore.referrers import is_referrers_tag, referrers_tag
from regstore.testing.builders import oci_artifact, oci_image, oci_index, write_image
from tests.support.fake_registry import FakeRegistry
from tests.support.fixtures import S3Bucket
from tests.support.registry import RegistryServer, serve_directory
from tests.support.spec_registry import (
    ATTESTATION,
    SBOM,
    Chain,
    push_image,
    serve_spec_registry,
)


def _pull_chain_into(store: ObjectStore, fake: FakeRegistry, chain: Chain) -> None:
    serve_spec_registry(fake)
    with Client(fake.url) as client:
        push_image(client, "app", chain.image, "v1")
        push_image(client, "app", chain.sig, chain.sig_tag)
        push_image(client, "app", chain.sbom)
        push_image(client, "app", chain.attestation)
        pull(client, store, "app", "v1", referrers=True)


def _check_served(served: RegistryServer, chain: Chain) -> None:
    with Client(served.host) as client:
        tags = set(client.list_image_tags("app"))
        assert tags == {
            "v1",
            chain.sig_tag,
            referrers_tag(chain.image.digest),
            referrers_tag(chain.sbom.digest),
        }
        assert client.get_image_manifest("app", chain.sig_tag).raw == chain.sig.raw
        index = client.get_image_manifest("app", referrers_tag(chain.image.digest))
        assert [e["digest"] for e in index.doc["manifests"]] == [str(chain.sbom.digest)]
        assert index.doc["manifests"][0]["artifactType"] == SBOM
        # our client reads the served store through the tag schema (registry 2.8: no API)
        found = client.referrers("app", chain.sbom.digest)
        assert [d.digest for d in found] == [chain.attestation.digest]


def test_a_stock_registry_serving_the_file_store_shows_the_tags(
    tmp_path: Path, fake_registry: FakeRegistry
) -> None:
    chain = Chain()
    root = tmp_path / "store"
    with open_store(str(root)) as store:
        _pull_chain_into(store, fake_registry, chain)
    served = serve_directory(root, tmp_path / "served")
    try:
        _check_served(served, chain)
    finally:
        served.stop()


def test_a_stock_registry_serving_the_s3_store_shows_the_tags(
    s3_registry: RegistryServer, s3_bucket: S3Bucket, fake_registry: FakeRegistry
) -> None:
    chain = Chain(seed=12)
    with open_store(
        f"s3://{s3_bucket.bucket}/registry",
        endpoint_url=s3_bucket.endpoint_url,
        key="testing",
        secret="testing",
    ) as store:
        _pull_chain_into(store, fake_registry, chain)
    _check_served(s3_registry, chain)


def test_the_oci_layout_lists_artifacts_in_index_json(
    tmp_path: Path, store_factory: Callable[[str], ObjectStore]
) -> None:
    chain = Chain(seed=13)
    root = tmp_path / "oci"
    with open_store(str(root), layout="oci") as store:
        chain.write(store)
        assert [d.digest for d in store.referrers("app", chain.image.digest)] == [chain.sbom.digest]
    entries = json.loads((root / "index.json").read_text())["manifests"]
    by_digest = {e["digest"]: e for e in entries}
    assert by_digest[str(chain.sbom.digest)]["artifactType"] == SBOM
    assert by_digest[str(chain.attestation.digest)]["artifactType"] == ATTESTATION
    assert str(chain.sig.digest) in by_digest


@pytest.mark.parametrize("kind", ["memory", "file-distribution", "file-oci"])
def test_gc_keeps_referrers_while_their_subject_lives(
    store_factory: Callable[[str], ObjectStore], kind: str
) -> None:
    chain = Chain(seed=14)
    store = store_factory(kind)
    chain.write(store)
    report = collect_garbage(store, grace=0)
    assert report.referrers_removed == []
    held = {str(d) for d in store.manifests("app")}
    for artifact in (chain.sbom, chain.attestation, chain.sig):
        assert str(artifact.digest) in held
    assert verify(store).ok

    # the image goes: its referrers, their referrers, the index and the .sig tag follow
    delete_image(store, "app", "v1")
    assert any(p.kind == "missing-subject" for p in verify(store).problems)
    dry = collect_garbage(store, grace=0, dry_run=True)
    assert {r.split("@", 1)[1] for r in dry.referrers_removed} >= {
        str(chain.sbom.digest),
        str(chain.attestation.digest),
        str(chain.sig.digest),
    }
    assert str(chain.sbom.digest) in {str(d) for d in store.manifests("app")}  # dry run
    assert {b.digest for b in dry.removed} >= {b.digest for b in chain.sbom.blobs}
    report = collect_garbage(store, grace=0)
    assert sorted(report.referrers_removed) == sorted(dry.referrers_removed)
    assert "app" not in store.repositories()  # nothing was left in it
    assert {b.digest for b in report.removed} >= {b.digest for b in chain.sbom.blobs}


@pytest.mark.parametrize("kind", ["memory", "file-distribution", "file-oci", "s3-distribution"])
def test_gc_untagged_removes_what_no_tag_reaches_and_keeps_what_tags_and_referrers_do(
    store_factory: Callable[[str], ObjectStore], kind: str
) -> None:
    # A mirror of a moving tag kept every earlier image, and their blobs, for ever.
    store = store_factory(kind)
    kept = Chain(seed=21)  # v1, its .sig tag, an SBOM and an attestation of the SBOM
    kept.write(store)
    earlier = Chain(seed=22)
    earlier.write(store)  # the same, under v1 too: then v1 moves on
    now_image = oci_image(seed=23)
    write_image(store, "app", "v1", now_image)
    write_image(store, "app", "v0", kept.image)  # the first chain stays tagged
    shared, alone = oci_image(seed=24), oci_image(seed=25)
    multi = oci_index([shared, oci_image(seed=26)])
    write_image(store, "app", "multi", multi)
    loose = oci_index([shared, alone])  # an index pulled by digest: untagged
    write_image(store, "app", None, loose)
    before = {str(d) for d in store.manifests("app")}

    young = collect_garbage(store, untagged=True)  # the default grace: all of it is young
    assert young.untagged_removed == [] and young.referrers_removed == []
    assert {str(d) for d in store.manifests("app")} == before

    dry = collect_garbage(store, grace=0, untagged=True, dry_run=True)
    assert {str(d) for d in store.manifests("app")} == before  # a dry run
    untagged = [earlier.image.digest, loose.digest, alone.digest]
    assert sorted(dry.untagged_removed) == sorted(f"app@{d}" for d in untagged)
    # an index before its children: stopped half-way, no index is left short of one
    assert dry.untagged_removed.index(f"app@{loose.digest}") < dry.untagged_removed.index(
        f"app@{alone.digest}"
    )
    # its referrers (the SBOM its referrers index lists, the signature its .sig tag names,
    # the SBOM's attestation) go with the image, as referrers whose subject is gone
    referrers = [earlier.sbom.digest, earlier.attestation.digest, earlier.sig.digest]
    assert {f"app@{d}" for d in referrers} <= set(dry.referrers_removed)
    assert not {f"app@{d}" for d in (kept.sbom.digest, kept.sig.digest)} & set(
        dry.referrers_removed
    )
    gone = [*untagged, *referrers]

    report = collect_garbage(store, grace=0, untagged=True)
    assert sorted(report.untagged_removed) == sorted(dry.untagged_removed)
    assert sorted(report.referrers_removed) == sorted(dry.referrers_removed)
    assert {b.digest for b in report.removed} == {b.digest for b in dry.removed}
    held = {str(d) for d in store.manifests("app")}
    assert not held & {str(d) for d in gone}
    assert {
        str(d)
        for d in (
            kept.image.digest,
            kept.sig.digest,
            kept.sbom.digest,
            kept.attestation.digest,
            now_image.digest,
            multi.digest,
            shared.digest,
        )
    } <= held
    tags = set(store.tags("app"))
    assert earlier.sig_tag not in tags and referrers_tag(earlier.image.digest) not in tags
    assert {kept.sig_tag, referrers_tag(kept.image.digest)} <= tags
    removed = {b.digest for b in report.removed}
    assert {str(b.digest) for b in earlier.image.blobs} <= removed
    assert not {str(b.digest) for b in shared.blobs} & removed
    assert verify(store).ok
    again = collect_garbage(store, grace=0, untagged=True)
    assert again.untagged_removed == again.referrers_removed == again.removed == []


@pytest.mark.parametrize("kind", ["memory", "file-distribution"])
def test_gc_untagged_keeps_an_image_a_tagged_artifact_refers_to_and_what_orphans_would_lose(
    store_factory: Callable[[str], ObjectStore], kind: str
) -> None:
    # An SBOM pushed under its own tag (as oras does) keeps its image, as plain gc keeps it:
    # --untagged deleted the image, and verify then found the store damaged.
    store = store_factory(kind)
    image, moved_on = oci_image(seed=41), oci_image(seed=42)
    sbom = oci_artifact(image)
    write_image(store, "app", "v1", image)
    write_image(store, "app", "v1-sbom", sbom)
    write_image(store, "app", "v1", moved_on)  # the image is untagged now
    report = collect_garbage(store, grace=0, untagged=True)
    assert report.untagged_removed == [] and report.referrers_removed == []
    assert str(image.digest) in {str(d) for d in store.manifests("app")}
    assert verify(store).ok

    # --keep-orphan-referrers: an untagged image with referrers stays with them
    lone = oci_image(seed=43)
    write_image(store, "app", None, lone)
    write_image(store, "app", None, oci_artifact(lone))
    kept = collect_garbage(store, grace=0, untagged=True, keep_orphan_referrers=True)
    assert kept.untagged_removed == [] and verify(store).ok
    gone = collect_garbage(store, grace=0, untagged=True)
    assert gone.untagged_removed == [f"app@{lone.digest}"]
    assert f"app@{oci_artifact(lone).digest}" in gone.referrers_removed  # (and its index)
    assert verify(store).ok


def test_gc_can_keep_orphan_referrers(store_factory: Callable[[str], ObjectStore]) -> None:
    chain = Chain(seed=15)
    store = store_factory("memory")
    chain.write(store)
    delete_image(store, "app", "v1")
    report = collect_garbage(store, grace=0, keep_orphan_referrers=True)
    assert report.referrers_removed == []
    held = {str(d) for d in store.manifests("app")}
    assert {str(chain.sbom.digest), str(chain.attestation.digest)} <= held


def test_verify_reports_a_referrer_whose_subject_is_missing(
    store_factory: Callable[[str], ObjectStore],
) -> None:
    image = oci_image(seed=16)
    sbom = oci_artifact(image)
    store = store_factory("file-distribution")
    write_image(store, "app", None, sbom)  # its subject was never stored
    problems = verify(store).problems
    assert [(p.kind, p.subject) for p in problems] == [("missing-subject", str(sbom.digest))]
    assert [t for t in store.tags("app") if is_referrers_tag(t)] == [referrers_tag(image.digest)]


def test_rewriting_a_referrer_repairs_its_index(
    store_factory: Callable[[str], ObjectStore],
) -> None:
    """A crash between the referrer's manifest write and its index update leaves it unlisted;
    the next pull (the image and its referrers already stored, so skipped) lists it."""
    chain = Chain(seed=17)
    source = store_factory("memory")
    chain.write(source)
    store = store_factory("file-distribution")
    jobs = [(StoreImage(source, "app", "v1"), StoreImage(store, "app"))]
    transfer_many(jobs, referrers=True)
    store.delete_tag("app", referrers_tag(chain.image.digest))  # as if the crash hit there
    assert store.referrers("app", chain.image.digest) == []
    problems = [(p.kind, p.subject) for p in verify(store).problems]
    assert problems == [("unindexed-referrer", str(chain.sbom.digest))]
    again = transfer_many(jobs, referrers=True)
    assert again.outcomes[0].status == "skipped"  # nothing moved: only the index was repaired
    assert [d.digest for d in store.referrers("app", chain.image.digest)] == [chain.sbom.digest]
    assert verify(store).ok
