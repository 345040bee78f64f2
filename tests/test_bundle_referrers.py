"""Bundles carry referrers (issues 13 and 12): ``bundle create --referrers`` puts each
image's signatures, SBOMs and attestations (and cosign's ``.sig`` tags) in the bundle, and
``bundle import`` moves them on into a registry (tag schema on the Debian registry) or a
store (its referrers index), after their subjects."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore.bundle import (
    BundleInput,
    create_bundle,
    import_bundle,
    read_bundle,
    verify_bundle,
)
from regstore.client import Client
from regstore.engine import RegistryImage
from regstore.errors import BundleBaseMissingError, UsageError
from regstore.referrers import referrers_tag
from regstore.store import ObjectStore
from regstore.testing.builders import cosign_signature, oci_image
from tests.support.cli import run_cli
from tests.support.registry import RegistryServer
from tests.support.skopeo import skopeo_copy
from tests.support.spec_registry import SBOM, push_image
from tests.test_referrers_engine import SupplyChain, _store_digests


@pytest.fixture
def signed(registry: RegistryServer) -> tuple[Client, SupplyChain]:
    """The Debian registry (no referrers API: the tag schema) holding ``app:v1`` with a
    ``.sig`` tag, an SBOM, an attestation of the SBOM and a signature of the SBOM."""
    client = Client(registry.host)
    chain = SupplyChain(seed=1331)
    chain.push_to(client)
    return client, chain


def _index(path: Path) -> list[dict[str, object]]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        entries: list[dict[str, object]] = json.loads(member.read())["manifests"]
        return entries


def _ref_name(entry: dict[str, object]) -> str | None:
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return None
    name = annotations.get("org.opencontainers.image.ref.name")
    return None if name is None else str(name)


def _check_registry(client: Client, chain: SupplyChain, name: str = "app") -> None:
    for digest in chain.referrers:
        assert client.get_image_manifest(name, digest).digest == digest
    assert client.get_image_manifest(name, chain.sig_tag).raw == chain.sig.raw
    assert set(client.list_image_tags(name)) == {
        "v1",
        chain.sig_tag,
        referrers_tag(chain.image.digest),
        referrers_tag(chain.sbom.digest),
    }
    index = client.get_image_manifest(name, referrers_tag(chain.image.digest))
    assert [(e["digest"], e.get("artifactType")) for e in index.doc["manifests"]] == [
        (str(chain.sbom.digest), SBOM)
    ]
    index = client.get_image_manifest(name, referrers_tag(chain.sbom.digest))
    assert {e["digest"] for e in index.doc["manifests"]} == {
        str(chain.attestation.digest),
        str(chain.sbom_sig.digest),
    }


def _held(store: ObjectStore) -> set[str]:
    """The manifests of ``app`` but referrers indexes (earlier versions of one included)."""
    return {d for d in _store_digests(store) if not store.manifest("app", d).is_index}


def _check_store(store: ObjectStore, chain: SupplyChain) -> None:
    assert _held(store) == chain.referrers | {str(chain.image.digest)}
    assert store.resolve("app", chain.sig_tag) == chain.sig.digest
    assert [str(d.digest) for d in store.referrers("app", chain.image.digest)] == [
        str(chain.sbom.digest)
    ]
    assert {str(d.digest) for d in store.referrers("app", chain.sbom.digest)} == {
        str(chain.attestation.digest),
        str(chain.sbom_sig.digest),
    }
    assert store.manifest("app", chain.attestation.digest).raw == chain.attestation.raw


def test_a_signed_image_travels_with_its_referrers(
    signed: tuple[Client, SupplyChain],
    registry_factory: Callable[..., RegistryServer],
    store_factory: Callable[[str], ObjectStore],
    tmp_path: Path,
) -> None:
    client, chain = signed
    out = tmp_path / "signed.tar"
    info = create_bundle(str(out), [RegistryImage(client, "app", "v1")], referrers=True)

    assert {r.digest for r in info.referrers} == chain.referrers
    subjects = {r.digest: r.subject for r in info.referrers}
    assert subjects[str(chain.attestation.digest)] == str(chain.sbom.digest)
    assert subjects[str(chain.sbom.digest)] == str(chain.image.digest)
    assert chain.referrers <= set(info.carried)
    assert read_bundle(str(out)) == info
    assert verify_bundle(str(out)).ok

    entries = _index(out)
    named = {str(e["digest"]): _ref_name(e) for e in entries}
    assert named[str(chain.image.digest)] == "app:v1"
    assert named[str(chain.sig.digest)] == f"app:{chain.sig_tag}"
    untagged = {str(e["digest"]): e.get("artifactType") for e in entries if not _ref_name(e)}
    assert set(untagged) == chain.referrers - {str(chain.sig.digest)}
    assert len(entries) == len(chain.referrers) + 1
    assert untagged[str(chain.sbom.digest)] == SBOM

    # skopeo still reads the image (and the signature tag) out of the bundle by ref name
    for ref, raw in (("app:v1", chain.image.raw), (f"app:{chain.sig_tag}", chain.sig.raw)):
        unpacked = tmp_path / f"dir-{ref[-6:]}"
        skopeo_copy(f"oci-archive:{out}:{ref}", f"dir:{unpacked}")
        assert (unpacked / "manifest.json").read_bytes() == raw

    fresh = registry_factory()
    with Client(fresh.host) as target:
        batch = import_bundle(str(out), client=target)
        assert batch.ok, batch.as_dict()
        result = batch.outcomes[0].result
        assert result is not None and set(map(str, result.referrers)) == chain.referrers
        _check_registry(target, chain)

    store = store_factory("file-distribution")
    assert import_bundle(str(out), store=store).ok
    _check_store(store, chain)
    # a second run finds everything there
    again = import_bundle(str(out), store=store)
    assert again.ok and again.outcomes[0].status == "skipped"


def test_referrer_types_keep_only_the_sbom_and_without_the_flag_none_travel(
    registry: RegistryServer,
    signed: tuple[Client, SupplyChain],
    store_factory: Callable[[str], ObjectStore],
    tmp_path: Path,
) -> None:
    _, chain = signed
    home = tmp_path / "home"
    sbom_only = tmp_path / "sbom.tar"
    r = run_cli(
        "bundle", "create", str(sbom_only), f"{registry.host}/app:v1",
        "--referrers-type", SBOM, home=home,
    )  # fmt: skip
    assert r.returncode == 0, r
    info = read_bundle(str(sbom_only))
    assert [r.digest for r in info.referrers] == [str(chain.sbom.digest)]
    assert len(_index(sbom_only)) == 2
    listed = run_cli("bundle", "ls", str(sbom_only), home=home)
    assert listed.returncode == 0 and f"app ({SBOM})" in listed.stdout, listed
    as_json = run_cli("--json", "bundle", "ls", str(sbom_only), home=home).json()
    assert [(r["digest"], r["subject"]) for r in as_json["referrers"]] == [
        (str(chain.sbom.digest), str(chain.image.digest))
    ]
    # snake_case, as every other --json output (the bundle's own description is OCI's)
    assert as_json["referrers"][0]["artifact_type"] == SBOM
    assert as_json["referrers"][0]["media_type"] == chain.sbom.media_type
    assert (
        "mediaType" not in as_json["referrers"][0] and "artifactType" not in as_json["referrers"][0]
    )
    assert set(as_json["images"][0]) == {"name", "tag", "digest", "media_type", "size", "carried"}
    store = store_factory("file-oci")
    assert import_bundle(str(sbom_only), store=store).ok
    assert _held(store) == {str(chain.image.digest), str(chain.sbom.digest)}
    assert "v1" in store.tags("app") and chain.sig_tag not in store.tags("app")

    plain = tmp_path / "plain.tar"
    r = run_cli("bundle", "create", str(plain), f"{registry.host}/app:v1", home=home)
    assert r.returncode == 0, r
    info = read_bundle(str(plain))
    assert info.referrers == ()
    assert not chain.referrers & set(info.carried)
    assert [e["digest"] for e in _index(plain)] == [str(chain.image.digest)]
    other = store_factory("memory")
    assert import_bundle(str(plain), store=other).ok
    assert _held(other) == {str(chain.image.digest)}
    assert other.tags("app") == ["v1"]


def test_a_delta_carries_just_the_new_signature(
    signed: tuple[Client, SupplyChain],
    registry_factory: Callable[..., RegistryServer],
    store_factory: Callable[[str], ObjectStore],
    tmp_path: Path,
) -> None:
    client, chain = signed
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    first = create_bundle(str(one), [RegistryImage(client, "app", "v1")], referrers=True)
    late = cosign_signature(chain.image, seed=1332, with_subject=True)
    push_image(client, "app", late)

    second = create_bundle(
        str(two), [RegistryImage(client, "app", "v1")], referrers=True, since=[str(one)]
    )
    late_digests = {str(late.digest)} | {str(b.digest) for b in late.all_blobs()}
    assert set(second.carried) == late_digests - set(first.references)
    assert str(late.digest) in second.carried
    assert {r.digest for r in second.referrers} == chain.referrers | {str(late.digest)}
    assert [r.digest for r in second.referrers if r.carried] == [str(late.digest)]
    assert verify_bundle(str(two)).ok

    with pytest.raises(BundleBaseMissingError):
        import_bundle(str(two), store=store_factory("memory"))

    with Client(registry_factory().host) as target:
        for bundle in (one, two):
            assert import_bundle(str(bundle), client=target).ok
        index = target.get_image_manifest("app", referrers_tag(chain.image.digest))
        assert [e["digest"] for e in index.doc["manifests"]] == [
            str(chain.sbom.digest),
            str(late.digest),
        ]
        assert target.get_image_manifest("app", late.digest).raw == late.raw

    store = store_factory("file-distribution")
    assert import_bundle(str(one), store=store).ok
    batch = import_bundle(str(two), store=store)
    assert batch.ok, batch.as_dict()
    result = batch.outcomes[0].result
    assert result is not None and [str(d) for d in result.referrers] == [str(late.digest)]
    assert {str(d.digest) for d in store.referrers("app", chain.image.digest)} == {
        str(chain.sbom.digest),
        str(late.digest),
    }
    assert store.manifest("app", late.digest).raw == late.raw


def test_two_tags_of_one_signed_image_list_its_referrers_once(
    signed: tuple[Client, SupplyChain],
    store_factory: Callable[[str], ObjectStore],
    tmp_path: Path,
) -> None:
    client, chain = signed
    push_image(client, "app", chain.image, "latest")
    out = tmp_path / "both.tar"
    info = create_bundle(
        str(out),
        [RegistryImage(client, "app", "v1"), RegistryImage(client, "app", "latest")],
        referrers=True,
    )
    assert sorted(r.digest for r in info.referrers) == sorted(chain.referrers)
    names = [_ref_name(e) for e in _index(out)]
    tagged = [n for n in names if n is not None]
    assert sorted(tagged) == sorted(["app:v1", "app:latest", f"app:{chain.sig_tag}"])
    assert len(names) == len(chain.referrers) + 2
    store = store_factory("memory")
    assert import_bundle(str(out), store=store).ok
    _check_store(store, chain)


def test_from_a_sync_file_supply_chain_tags_travel_with_their_image(
    registry: RegistryServer, signed: tuple[Client, SupplyChain], tmp_path: Path
) -> None:
    """Every tag of ``app`` is listed (v1, the .sig tag, the fallback indexes): with
    --referrers only v1 is an image, the rest travels as its referrers."""
    _, chain = signed
    sync = tmp_path / "mirror.yaml"
    sync.write_text(
        f"target: {{store: '{tmp_path / 'unused'}'}}\n"
        f"sources:\n  - registry: {registry.host}\n    repositories: [app]\n"
    )
    out = tmp_path / "synced.tar"
    r = run_cli(
        "bundle", "create", str(out), "--from", str(sync), "--referrers", home=tmp_path / "home"
    )  # fmt: skip
    assert r.returncode == 0, r
    info = read_bundle(str(out))
    assert [i.ref_name for i in info.images] == ["app:v1"]
    assert {r.digest for r in info.referrers} == chain.referrers


def test_a_sync_files_own_referrers_setting_is_honoured(
    registry: RegistryServer, signed: tuple[Client, SupplyChain], tmp_path: Path
) -> None:
    """``referrers: true`` on the repository (no --referrers): its referrers travel."""
    _, chain = signed
    sync = tmp_path / "mirror.yaml"
    sync.write_text(
        f"target: {{store: '{tmp_path / 'unused'}'}}\n"
        f"sources:\n  - registry: {registry.host}\n    repositories:\n"
        "      - name: app\n        referrers: true\n"
    )
    out = tmp_path / "synced.tar"
    r = run_cli("bundle", "create", str(out), "--from", str(sync), home=tmp_path / "home")
    assert r.returncode == 0, r
    info = read_bundle(str(out))
    assert [i.ref_name for i in info.images] == ["app:v1"]
    assert {r.digest for r in info.referrers} == chain.referrers


def test_a_signature_tag_named_beside_its_image_is_taken_once(
    registry: RegistryServer,
    signed: tuple[Client, SupplyChain],
    store_factory: Callable[[str], ObjectStore],
    tmp_path: Path,
) -> None:
    """``create HOST/app:v1 HOST/app:sha256-<hex>.sig --referrers``: the .sig tag travels as
    the referrer it is (as with --from), not as a second image of the same name."""
    client, chain = signed
    home = tmp_path / "home"
    out = tmp_path / "named.tar"
    sig_ref = f"{registry.host}/app:{chain.sig_tag}"
    r = run_cli("bundle", "create", str(out), f"{registry.host}/app:v1", sig_ref, "--referrers",
                home=home)  # fmt: skip
    assert r.returncode == 0, r
    for command in ("ls", "verify"):
        done = run_cli("bundle", command, str(out), home=home)
        assert done.returncode == 0, done
    info = read_bundle(str(out))
    assert [i.ref_name for i in info.images] == ["app:v1"]
    assert {r.digest for r in info.referrers} == chain.referrers
    assert [_ref_name(e) for e in _index(out)].count(f"app:{chain.sig_tag}") == 1
    store = store_factory("memory")
    assert import_bundle(str(out), store=store).ok
    _check_store(store, chain)

    # the Python API too, whichever comes first
    api = tmp_path / "api.tar"
    images = [RegistryImage(client, "app", chain.sig_tag), RegistryImage(client, "app", "v1")]
    made = create_bundle(str(api), images, referrers=True)
    assert [i.ref_name for i in made.images] == ["app:v1"]
    assert read_bundle(str(api)) == made
    assert verify_bundle(str(api)).ok


def test_another_image_named_as_a_carried_signature_tag_is_refused_before_writing(
    signed: tuple[Client, SupplyChain], tmp_path: Path
) -> None:
    """An unrelated image the bundle would name ``app:sha256-<hex>.sig``, while --referrers
    carries app:v1's signature under that name: two manifests for one name, refused before
    anything is written. Without referrers, it is an image like any other."""
    client, chain = signed
    other = oci_image(seed=1399)
    push_image(client, "other", other, "1")
    clash = BundleInput(RegistryImage(client, "other", "1"), name=f"app:{chain.sig_tag}")
    images = [RegistryImage(client, "app", "v1"), clash]
    out = tmp_path / "clash.tar"
    with pytest.raises(UsageError, match=f"app:{chain.sig_tag}") as caught:
        create_bundle(str(out), images, referrers=True)
    assert "app:v1" in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []

    made = create_bundle(str(out), images)
    assert sorted(i.ref_name for i in made.images) == sorted(["app:v1", f"app:{chain.sig_tag}"])
    assert verify_bundle(str(out)).ok
