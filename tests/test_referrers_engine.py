"""Signatures, SBOMs and attestations travel with their images: pull, push and copy with
``referrers=True`` between the spec-following fake (native referrers API), the real Debian
registry (tag schema) and every kind of store; plain OCI artifacts move as images do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from regstore import ObjectStore
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage, copy, pull, push
from regstore.manifest import OCI_EMPTY, Manifest
from regstore.referrers import is_referrers_tag, referrers_tag, sigstore_tags
from regstore.testing.builders import (
    Blob,
    Image,
    cosign_signature,
    oci_artifact,
    oci_image,
    oci_index,
    serialise,
)
from tests.support.fake_registry import FakeRegistry
from tests.support.registry import RegistryServer
from tests.support.spec_registry import (
    ATTESTATION,
    SBOM,
    SpecRegistry,
    push_image,
    serve_spec_registry,
)
from tests.support.stores import STORE_KINDS


class SupplyChain:
    """A signed image in repository ``app``: ``image`` tagged ``v1``, a cosign signature under
    ``sha256-<hex>.sig``, an SBOM referring to the image, an attestation referring to the
    SBOM, and a signature of the SBOM (also a referrer)."""

    def __init__(self, seed: int = 1) -> None:
        self.image = oci_image(seed=seed)
        self.sig = cosign_signature(self.image, seed=seed)
        self.sig_tag = sigstore_tags(self.image.digest)[0]
        self.sbom = oci_artifact(self.image)
        self.attestation = oci_artifact(
            self.sbom, b'{"_type":"https://in-toto.io/Statement/v1"}', ATTESTATION
        )
        self.sbom_sig = cosign_signature(self.sbom, seed=seed + 1, with_subject=True)

    @property
    def referrers(self) -> set[str]:
        """Every manifest digest that travels with the image (the tagged signature too)."""
        return {str(x.digest) for x in (self.sig, self.sbom, self.attestation, self.sbom_sig)}

    def push_to(self, client: Client, name: str = "app") -> None:
        push_image(client, name, self.image, "v1")
        push_image(client, name, self.sig, self.sig_tag)
        for artifact in (self.sbom, self.attestation, self.sbom_sig):
            push_image(client, name, artifact)


@pytest.fixture
def native(fake_registry: FakeRegistry) -> tuple[Client, SpecRegistry, SupplyChain]:
    spec = serve_spec_registry(fake_registry, page_size=1)
    chain = SupplyChain()
    client = Client(fake_registry.url)
    chain.push_to(client)
    return client, spec, chain


def _store_digests(store: ObjectStore, name: str = "app") -> set[str]:
    """The manifests of ``name`` but the store's own referrers indexes."""
    indexes = {str(store.resolve(name, t)) for t in store.tags(name) if is_referrers_tag(t)}
    return {str(d) for d in store.manifests(name)} - indexes


def _check_store(store: ObjectStore, chain: SupplyChain) -> None:
    held = _store_digests(store)
    assert chain.referrers <= held
    assert str(chain.image.digest) in held
    assert store.resolve("app", chain.sig_tag) == chain.sig.digest
    assert {str(d.digest) for d in store.referrers("app", chain.image.digest)} == {
        str(chain.sbom.digest)
    }
    assert {str(d.digest) for d in store.referrers("app", chain.sbom.digest)} == {
        str(chain.attestation.digest),
        str(chain.sbom_sig.digest),
    }
    # the exact bytes, so every digest is the source's
    assert store.manifest("app", chain.attestation.digest).raw == chain.attestation.raw


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_pull_with_referrers_into_every_store(
    native: tuple[Client, SpecRegistry, SupplyChain],
    store_factory: Callable[[str], ObjectStore],
    kind: str,
) -> None:
    client, _, chain = native
    store = store_factory(kind)
    result = pull(client, store, "app", "v1", referrers=True)
    assert set(map(str, result.referrers)) == chain.referrers
    _check_store(store, chain)


def test_without_referrers_nothing_else_moves(
    native: tuple[Client, SpecRegistry, SupplyChain], store_factory: Callable[[str], ObjectStore]
) -> None:
    client, _, chain = native
    store = store_factory("memory")
    result = pull(client, store, "app", "v1")
    assert result.referrers == []
    assert _store_digests(store) == {str(chain.image.digest)}
    assert store.tags("app") == ["v1"]


def test_referrer_types_keep_only_those(
    native: tuple[Client, SpecRegistry, SupplyChain], store_factory: Callable[[str], ObjectStore]
) -> None:
    client, _, chain = native
    store = store_factory("memory")
    result = pull(client, store, "app", "v1", referrers=True, referrer_types=[SBOM])
    assert set(map(str, result.referrers)) == {str(chain.sbom.digest)}
    assert _store_digests(store) == {str(chain.image.digest), str(chain.sbom.digest)}
    # one type as a plain string is that type: taken apart, it matched no referrer at all
    alone = store_factory("memory")
    result = pull(client, alone, "app", "v1", referrers=True, referrer_types=SBOM)
    assert set(map(str, result.referrers)) == {str(chain.sbom.digest)}
    # and a longer type is another type, not one that contains the stored one
    found = store.referrers("app", str(chain.image.digest), SBOM + ".extra")
    assert found == [] and store.referrers("app", str(chain.image.digest), SBOM) != []


def test_push_and_copy_keep_every_digest(
    native: tuple[Client, SpecRegistry, SupplyChain],
    registry: RegistryServer,
    fake_registry_factory: Callable[[], FakeRegistry],
    store_factory: Callable[[str], ObjectStore],
) -> None:
    client, _, chain = native
    store = store_factory("file-distribution")
    pull(client, store, "app", "v1", referrers=True)
    with Client(registry.host) as debian:
        # store -> the Debian registry (no referrers API: the client keeps the tag schema)
        pushed = push(debian, store, "app", "v1", referrers=True)
        assert set(map(str, pushed.referrers)) == chain.referrers
        tags = set(debian.list_image_tags("app"))
        assert tags == {
            "v1",
            chain.sig_tag,
            referrers_tag(chain.image.digest),
            referrers_tag(chain.sbom.digest),
        }
        index = debian.get_image_manifest("app", referrers_tag(chain.sbom.digest))
        assert {e["digest"] for e in index.doc["manifests"]} == {
            str(chain.attestation.digest),
            str(chain.sbom_sig.digest),
        }
        # registry (tag schema) -> a fresh registry with the native API
        fresh = fake_registry_factory()
        fresh_spec = serve_spec_registry(fresh)
        with Client(fresh.url) as target:
            copied = copy(
                RegistryImage(debian, "app", "v1"),
                RegistryImage(target, "mirror/app"),
                referrers=True,
            )
            assert set(map(str, copied.referrers)) == chain.referrers
            for digest in chain.referrers:
                assert target.get_image_manifest("mirror/app", digest).digest == digest
            found = {str(d.digest) for d in target.referrers("mirror/app", chain.image.digest)}
        assert found == {str(chain.sbom.digest)}
        # the native registry processed subject: no fallback tags were written there
        assert fresh_spec.tags("mirror/app") == sorted(["v1", chain.sig_tag])


def test_a_no_op_resync_without_referrers_costs_one_request(
    native: tuple[Client, SpecRegistry, SupplyChain],
    fake_registry: FakeRegistry,
    store_factory: Callable[[str], ObjectStore],
) -> None:
    from regstore.engine.transfer import transfer_many

    client, _, _ = native
    store = store_factory("memory")
    jobs = [(RegistryImage(client, "app", "v1"), StoreImage(store, "app"))]
    transfer_many(jobs, referrers=True)
    fake_registry.requests.clear()
    again = transfer_many(jobs)
    assert again.outcomes[0].status == "skipped"
    assert len(fake_registry.requests) == 1  # one HEAD of the tag
    fake_registry.requests.clear()
    with_referrers = transfer_many(jobs, referrers=True)
    assert with_referrers.outcomes[0].status == "skipped"
    result = with_referrers.outcomes[0].result
    assert result is not None and result.referrers == []  # all there already

    # a new signature since: the image is unchanged, what it carries is not (it said
    # skipped, unchanged, and moved the signature)
    late = oci_artifact(native[2].image, b'{"late":1}', "application/vnd.example.sig")
    push_image(client, "app", late)
    moved = transfer_many(jobs, referrers=True)
    assert moved.outcomes[0].status == "copied"
    result = moved.outcomes[0].result
    assert result is not None and not result.unchanged and result.bytes_moved > 0
    assert result.referrers == [late.digest] and result.media_type
    assert transfer_many(jobs, referrers=True).outcomes[0].status == "skipped"


def test_index_children_carry_their_own_referrers(
    fake_registry: FakeRegistry, store_factory: Callable[[str], ObjectStore]
) -> None:
    serve_spec_registry(fake_registry)
    amd, arm = oci_image(seed=5), oci_image(seed=6)
    index = oci_index([amd, arm])
    amd_sbom, index_sig = oci_artifact(amd), cosign_signature(index, with_subject=True)
    with Client(fake_registry.url) as client:
        push_image(client, "multi", index, "v1")
        push_image(client, "multi", amd_sbom)
        push_image(client, "multi", index_sig)
        store = store_factory("memory")
        result = pull(client, store, "multi", "v1", referrers=True)
        assert set(map(str, result.referrers)) == {str(amd_sbom.digest), str(index_sig.digest)}
        # a platform filter leaves arm64 out, and the index is kept partial: its own
        # referrers and those of the child taken still travel
        other = store_factory("memory")
        pull(client, other, "multi", "v1", platforms=["linux/arm64"], referrers=True)
        assert str(amd_sbom.digest) not in _store_digests(other, "multi")


def test_a_referrer_of_another_subject_is_not_copied(
    fake_registry: FakeRegistry, store_factory: Callable[[str], ObjectStore]
) -> None:
    """A fallback index that lists a manifest whose subject is another image (stale or
    hostile) does not drag that manifest along."""
    spec = serve_spec_registry(fake_registry, referrers_api=False)
    image, other = oci_image(seed=7), oci_image(seed=8)
    stray = oci_artifact(other)
    with Client(fake_registry.url) as client:
        push_image(client, "app", image, "v1")
        push_image(client, "app", other, "v2")
        push_image(client, "app", stray)
        # make image's fallback index list the other image's referrer
        raw = spec.manifest_bytes("app", referrers_tag(other.digest))
        client.put_image_manifest("app", referrers_tag(image.digest), Manifest.parse(raw))
        store = store_factory("memory")
        result = pull(client, store, "app", "v1", referrers=True)
    assert result.referrers == []
    assert str(stray.digest) not in _store_digests(store)


def _artifact(artifact_type: str, layer_type: str, payload: bytes, config: Blob) -> Image:
    layer = Blob(payload, layer_type)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Image(Manifest.parse(serialise(doc)), (config, layer))


@pytest.mark.parametrize("kind", ["memory", "file-distribution", "file-oci"])
def test_plain_artifacts_move_as_images_do(
    fake_registry: FakeRegistry,
    registry: RegistryServer,
    store_factory: Callable[[str], ObjectStore],
    kind: str,
) -> None:
    serve_spec_registry(fake_registry)
    wasm = _artifact(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        b"\0asm\1\0\0\0",
        Blob(b"{}", OCI_EMPTY),
    )
    helm = _artifact(
        "application/vnd.cncf.helm.chart.v1",
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        b"chart bytes",
        Blob(b'{"name":"demo","version":"1.0.0"}', "application/vnd.cncf.helm.config.v1+json"),
    )
    store = store_factory(kind)
    with Client(fake_registry.url) as source, Client(registry.host) as target:
        push_image(source, "wasm", wasm, "1.0")
        push_image(source, "charts/demo", helm, "1.0.0")
        for name, tag, artifact in (("wasm", "1.0", wasm), ("charts/demo", "1.0.0", helm)):
            pulled = pull(source, store, name, tag)
            assert pulled.manifest_digest == artifact.digest
            assert store.manifest(name, tag).raw == artifact.raw
            pushed = push(target, store, name, tag)
            assert pushed.manifest_digest == artifact.digest
            got = target.get_image_manifest(name, tag)
            assert got.raw == artifact.raw and got.artifact_type == artifact.manifest.artifact_type


def test_the_sync_file_takes_referrers_per_source_and_repository() -> None:
    from regstore.engine.sync import parse_sync_text
    from regstore.errors import SyncFileError

    spec = parse_sync_text(
        "sources:\n"
        "  - registry: 127.0.0.1:5000\n"
        "    referrers: true\n"
        "    repositories:\n"
        "      - team/app\n"
        "      - {name: team/quiet, referrers: false}\n"
    )
    source = spec.sources[0]
    assert source.referrers is True
    assert [r.referrers for r in source.repositories] == [None, False]
    with pytest.raises(SyncFileError, match="referrers"):
        parse_sync_text(
            "sources:\n  - registry: 127.0.0.1:5000\n    referrers: 'yes'\n"
            "    repositories: [team/app]\n"
        )


class _ListingClient:
    """Tags only: what planning a sync asks of a registry."""

    registry = "127.0.0.1:5000"

    def list_image_tags(self, name: str, *, complete: bool = False) -> list[str]:
        subject = "sha256:" + "ab" * 32
        return ["v1", referrers_tag(subject), *sigstore_tags(subject)]


def test_sync_plans_supply_chain_tags_as_images_only_without_referrers(
    store_factory: Callable[[str], ObjectStore],
) -> None:
    from regstore.engine.sync import parse_sync_text, plan_sync

    spec = parse_sync_text(
        "sources:\n"
        "  - registry: 127.0.0.1:5000\n"
        "    referrers: true\n"
        "    repositories:\n"
        "      - team/app\n"
        "      - {name: team/quiet, referrers: false}\n"
    )
    plan = plan_sync(
        spec,
        client_for=lambda conn: _ListingClient(),  # type: ignore[arg-type,return-value]
        target_store=store_factory("memory"),
    )
    jobs = {(j.source.name, j.source.reference): j.referrers for j in plan.jobs}
    assert jobs[("team/app", "v1")] is True
    # with referrers, the signature and index tags travel with v1, not as images of their own
    assert [tag for name, tag in jobs if name == "team/app"] == ["v1"]
    assert len([tag for name, tag in jobs if name == "team/quiet"]) == 5
    assert jobs[("team/quiet", "v1")] is False
