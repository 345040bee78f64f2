"""The client's referrers: the OCI 1.1 API (pages, artifactType filter, OCI-Filters-Applied,
OCI-Subject) against the spec-following fake, and the referrers tag schema against the real
Debian registry 2.8 (no referrers route)."""

from __future__ import annotations

import hashlib
import threading

from regstore.client import Client
from regstore.manifest import OCI_INDEX, Manifest
from regstore.referrers import referrers_tag
from regstore.testing.builders import Image, cosign_signature, oci_artifact, oci_image
from tests.support.fake_registry import FakeRegistry, FakeRequest, HeaderSpec
from tests.support.registry import RegistryServer
from tests.support.spec_registry import (
    ATTESTATION,
    SBOM,
    SpecRegistry,
    serve_spec_registry,
)
from tests.support.spec_registry import push_image as push


def supply_chain() -> tuple[Image, Image, Image, Image]:
    """An image, an SBOM and a signature of it (referrers), an attestation of the SBOM."""
    image = oci_image(seed=1)
    sbom = oci_artifact(image)
    signature = cosign_signature(image, with_subject=True)
    attestation = oci_artifact(sbom, b'{"_type":"https://in-toto.io/Statement/v1"}', ATTESTATION)
    return image, sbom, signature, attestation


def test_native_api_pages_and_filters(fake_registry: FakeRegistry) -> None:
    spec = serve_spec_registry(fake_registry, page_size=1)
    image, sbom, signature, attestation = supply_chain()
    with Client(fake_registry.url) as client:
        for artifact in (image, sbom, signature, attestation):
            push(client, "app", artifact)
        fake_registry.requests.clear()
        found = client.referrers("app", image.digest)
        assert {d.digest for d in found} == {sbom.digest, signature.digest}
        pages = [r for r in fake_registry.requests if "/referrers/" in r.path]
        assert len(pages) == 2  # one descriptor per page: the Link was followed
        by_digest = {d.digest: d for d in found}
        assert by_digest[sbom.digest].artifact_type == SBOM
        assert by_digest[sbom.digest].annotations == sbom.manifest.doc["annotations"]
        assert by_digest[signature.digest].size == signature.manifest.size
        only = client.referrers("app", image.digest, artifact_type=SBOM)
        assert [d.digest for d in only] == [sbom.digest]
        assert [d.digest for d in client.referrers("app", sbom.digest)] == [attestation.digest]
    # the registry answered OCI-Subject: no fallback tag was written
    assert spec.tags("app") == []


def test_unapplied_filter_is_applied_by_the_client(fake_registry: FakeRegistry) -> None:
    serve_spec_registry(fake_registry, apply_filter=False)
    image, sbom, signature, _ = supply_chain()
    with Client(fake_registry.url) as client:
        for artifact in (image, sbom, signature):
            push(client, "app", artifact)
        only = client.referrers("app", image.digest, artifact_type=SBOM)
    assert [d.digest for d in only] == [sbom.digest]


def test_without_the_api_the_client_keeps_the_tag_schema(fake_registry: FakeRegistry) -> None:
    spec = serve_spec_registry(fake_registry, referrers_api=False)
    image, sbom, signature, _ = supply_chain()
    with Client(fake_registry.url) as client:
        for artifact in (image, sbom, signature):
            push(client, "app", artifact)
        push(client, "app", sbom)  # pushed again: listed once
        found = client.referrers("app", image.digest)
    assert spec.tags("app") == [referrers_tag(image.digest)]
    index = Manifest.parse(spec.manifest_bytes("app", referrers_tag(image.digest)))
    assert [d.digest for d in index.manifests] == [sbom.digest, signature.digest]
    assert [d.digest for d in found] == [sbom.digest, signature.digest]
    assert index.manifests[0].artifact_type == SBOM
    # cosign's signature has no artifactType: the spec says to list its config's media type
    assert index.manifests[1].artifact_type == signature.manifest.config.media_type  # type: ignore[union-attr]


def test_debian_registry_fallback_index(registry: RegistryServer) -> None:
    image, sbom, signature, attestation = supply_chain()
    with Client(registry.host) as client:
        for artifact in (image, sbom, signature, attestation):
            push(client, "app", artifact)
        assert client.referrers("app", image.digest, SBOM)[0].digest == sbom.digest
        assert client.referrers("app", sbom.digest)[0].digest == attestation.digest
        assert client.referrers("app", attestation.digest) == []
        tags = client.list_image_tags("app")
        index = client.get_image_manifest("app", referrers_tag(image.digest))
    assert sorted(tags) == sorted([referrers_tag(image.digest), referrers_tag(sbom.digest)])
    entries = index.doc["manifests"]
    assert [e["digest"] for e in entries] == [str(sbom.digest), str(signature.digest)]
    assert entries[0]["artifactType"] == SBOM
    assert entries[0]["annotations"] == sbom.manifest.doc["annotations"]
    assert entries[0]["size"] == sbom.manifest.size


def test_concurrent_referrers_on_the_fallback_registry_lose_neither(
    registry: RegistryServer,
) -> None:
    image = oci_image(seed=2)
    referrers = [oci_artifact(image, f'{{"n":{i}}}'.encode()) for i in range(6)]
    with Client(registry.host) as client:
        push(client, "app", image)
        for r in referrers:  # blobs first, so the threads race only on the index
            for blob in r.all_blobs():
                if not client.blob_exists("app", blob.digest):
                    session = client.initiate_blob_upload("app")
                    assert session.location is not None
                    client.upload_blob(session.location, blob.data, blob.size, blob.digest)
    errors: list[BaseException] = []
    start = threading.Barrier(len(referrers))

    def one(r: Image) -> None:
        try:
            with Client(registry.host) as own:  # separate clients, as separate pushes are
                start.wait(timeout=60)
                own.put_image_manifest("app", str(r.digest), r.manifest)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(r,)) for r in referrers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    with Client(registry.host) as client:
        listed = {d.digest for d in client.referrers("app", image.digest)}
    assert listed == {r.digest for r in referrers}


def _force_tag(spec: SpecRegistry, name: str, tag: str, raw: bytes) -> None:
    """Write ``raw`` under ``tag`` behind the client's back (another process's PUT)."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    spec.repos[name].manifests[digest] = (OCI_INDEX, raw)
    spec.repos[name].tags[tag] = digest


def test_a_concurrent_overwrite_is_repaired(fake_registry: FakeRegistry) -> None:
    """Another writer replaces the index right after our write: the read-back misses our
    descriptor and the update is redone on top of theirs."""
    spec = serve_spec_registry(fake_registry, referrers_api=False)
    image = oci_image(seed=3)
    mine, theirs = oci_artifact(image, b'{"who":"me"}'), oci_artifact(image, b'{"who":"them"}')
    tag = referrers_tag(image.digest)
    with Client(fake_registry.url) as client:
        for artifact in (image, theirs):
            push(client, "app", artifact)
        for blob in mine.all_blobs():
            if not client.blob_exists("app", blob.digest):
                session = client.initiate_blob_upload("app")
                assert session.location is not None
                client.upload_blob(session.location, blob.data, blob.size, blob.digest)
        theirs_only = spec.manifest_bytes("app", tag)
        original = spec._manifests
        raced: list[str] = []

        def racing(request: FakeRequest, name: str, ref: str) -> tuple[int, HeaderSpec, bytes]:
            answer = original(request, name, ref)
            if request.method == "PUT" and ref == tag and not raced:
                raced.append(ref)
                _force_tag(spec, name, tag, theirs_only)  # their slower write lands last
            return answer

        spec._manifests = racing  # type: ignore[method-assign]
        client.put_image_manifest("app", str(mine.digest), mine.manifest)
        listed = [d.digest for d in client.referrers("app", image.digest)]
    assert raced == [tag]
    assert listed == [theirs.digest, mine.digest]
