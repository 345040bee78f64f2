"""The command line's referrers: ``pull``/``push``/``copy``/``sync`` with ``--referrers`` and
``--referrers-type``, ``inspect --referrers`` (the tree, ``--json``), ``ls`` marks, ``gc
--keep-orphan-referrers``; the sync file's ``referrers: true``."""

from __future__ import annotations

from pathlib import Path

from regstore import open_store
from regstore.client import Client
from regstore.referrers import referrers_tag
from tests.support.cli import run_cli
from tests.support.fake_registry import FakeRegistry
from tests.support.registry import RegistryServer
from tests.support.spec_registry import SBOM, Chain, push_image, serve_spec_registry


def _seed(fake: FakeRegistry, chain: Chain) -> str:
    serve_spec_registry(fake)
    with Client(fake.url) as client:
        push_image(client, "app", chain.image, "v1")
        push_image(client, "app", chain.sig, chain.sig_tag)
        push_image(client, "app", chain.sbom)
        push_image(client, "app", chain.attestation)
    return fake.url.removeprefix("http://")


def test_mirror_a_signed_image_with_its_sbom_in_two_commands(
    tmp_path: Path, fake_registry: FakeRegistry, registry: RegistryServer
) -> None:
    chain = Chain(seed=21)
    host = _seed(fake_registry, chain)
    home, store = tmp_path / "home", str(tmp_path / "store")
    home.mkdir()

    pulled = run_cli("--json", "pull", f"{host}/app:v1", "--referrers", home=home, store=store)
    assert pulled.returncode == 0, str(pulled)
    assert set(pulled.json()["referrers"]) == {
        str(chain.sig.digest),
        str(chain.sbom.digest),
        str(chain.attestation.digest),
    }
    pushed = run_cli(
        "push", "app:v1", f"{registry.host}/mirror/app", "--referrers", home=home, store=store
    )
    assert pushed.returncode == 0, str(pushed)
    assert "3 referrer(s)" in pushed.stdout + pushed.stderr
    with Client(registry.host) as target:
        assert set(target.list_image_tags("mirror/app")) == {
            "v1",
            chain.sig_tag,
            referrers_tag(chain.image.digest),
            referrers_tag(chain.sbom.digest),
        }

    tree = run_cli("inspect", "store:app:v1", "--referrers", home=home, store=store)
    assert tree.returncode == 0, str(tree)
    lines = tree.stdout.splitlines()
    sbom_line = next(i for i, line in enumerate(lines) if SBOM in line)
    assert str(chain.sbom.digest) in lines[sbom_line]
    # the attestation hangs under the SBOM, one level deeper
    assert "application/vnd.in-toto+json" in lines[sbom_line + 1]
    assert lines[sbom_line + 1].index("──") > lines[sbom_line].index("──")
    assert any("cosign signature" in line and chain.sig_tag in line for line in lines)

    as_json = run_cli(
        "--json", "inspect", f"{registry.host}/mirror/app:v1", "--referrers", home=home
    ).json()
    # what `inspect --json` says of the image, and the tree besides
    plain_json = run_cli("--json", "inspect", f"{registry.host}/mirror/app:v1", home=home).json()
    assert {k: v for k, v in as_json.items() if k not in ("referrers", "manifests")} == plain_json
    assert {"size", "platforms", "config", "layers", "total_size"} <= set(as_json)
    assert as_json["manifests"] == []  # an image manifest lists none (as it always said)
    kinds = {r["kind"]: r for r in as_json["referrers"]}
    assert set(kinds) == {SBOM, "cosign signature"}
    assert kinds[SBOM]["referrers"][0]["digest"] == str(chain.attestation.digest)
    assert kinds[SBOM]["size"] > chain.sbom.manifest.size

    listing = run_cli("--json", "ls", "app", home=home, store=store).json()
    by_tag = {row["tag"]: row for row in listing["tags"]}
    assert by_tag["v1"]["referrers"] == 2  # the SBOM and the .sig tag
    plain = run_cli("ls", "app", home=home, store=store).stdout
    assert "+2 referrer(s)" in plain


def test_referrers_type_moves_the_sbom_not_the_signature(
    tmp_path: Path, fake_registry: FakeRegistry
) -> None:
    chain = Chain(seed=22)
    host = _seed(fake_registry, chain)
    home, store = tmp_path / "home", str(tmp_path / "store")
    home.mkdir()
    result = run_cli(
        "--json", "pull", f"{host}/app:v1", "--referrers-type", SBOM, home=home, store=store
    )
    assert result.returncode == 0, str(result)
    assert result.json()["referrers"] == [str(chain.sbom.digest)]
    with open_store(store) as opened:
        assert chain.sig_tag not in opened.tags("app")


def test_sync_file_referrers(tmp_path: Path, fake_registry: FakeRegistry) -> None:
    chain = Chain(seed=23)
    host = _seed(fake_registry, chain)
    home, store = tmp_path / "home", str(tmp_path / "store")
    home.mkdir()
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(
        f"sources:\n  - registry: {host}\n    referrers: true\n    repositories: [app]\n"
    )
    result = run_cli("--json", "sync", str(sync_file), home=home, store=store)
    assert result.returncode == 0, str(result)
    with open_store(store) as opened:
        # the .sig tag came with its image, not as an image of its own
        assert set(opened.tags("app")) == {
            "v1",
            chain.sig_tag,
            referrers_tag(chain.image.digest),
            referrers_tag(chain.sbom.digest),
        }
        assert [d.digest for d in opened.referrers("app", chain.sbom.digest)] == [
            chain.attestation.digest
        ]
    images = result.json()["images"]
    assert [o["source"] for o in images] == [f"{host}/app:v1"]
    assert len(images[0]["result"]["referrers"]) == 3


def test_inspect_referrers_json_puts_each_childs_referrers_in_its_entry() -> None:
    """For an index, `inspect --referrers --json` keeps `inspect --json`'s entries (platform,
    size, stored) and adds each child's referrers to its own entry."""
    from regstore.cli.storecmds import _with_referrers

    info = {
        "reference": "store:app:v1",
        "digest": "sha256:" + "1" * 64,
        "manifests": [
            {"digest": "sha256:" + "a" * 64, "platform": "linux/amd64", "size": 9, "stored": True},
            {"digest": "sha256:" + "b" * 64, "platform": "linux/arm64", "size": 9, "stored": False},
        ],
    }
    sig = {"digest": "sha256:" + "c" * 64, "kind": "cosign signature", "referrers": []}
    tree = {
        "digest": info["digest"],
        "referrers": [],
        "manifests": [{"digest": "sha256:" + "a" * 64, "platform": "linux/amd64",
                       "referrers": [sig]}],
    }  # fmt: skip
    described = _with_referrers(info, tree)
    assert described["referrers"] == []
    assert [m["referrers"] for m in described["manifests"]] == [[sig], []]
    assert [m["stored"] for m in described["manifests"]] == [True, False]
    assert "truncated" not in described
    assert _with_referrers(info, {**tree, "truncated": True})["truncated"] is True


def test_inspect_referrers_json_reads_the_image_manifest_once(
    tmp_path: Path, fake_registry: FakeRegistry
) -> None:
    """The description and the tree come from one read of the tag (a manifest GET counts as
    a pull on Docker Hub, and a tag moved between two reads would mix two images)."""
    chain = Chain(seed=24)
    host = _seed(fake_registry, chain)
    home = tmp_path / "home"
    home.mkdir()
    before = len(fake_registry.requests_to("GET", "/v2/app/manifests/v1"))
    doc = run_cli("--json", "inspect", f"{host}/app:v1", "--referrers", home=home).json()
    assert doc["digest"] == str(chain.image.digest) and doc["referrers"]
    assert len(fake_registry.requests_to("GET", "/v2/app/manifests/v1")) - before == 1


def test_inspect_referrers_json_of_an_index_puts_a_childs_sbom_in_its_entry(
    tmp_path: Path, fake_registry: FakeRegistry
) -> None:
    from regstore.testing.builders import oci_artifact, oci_image, oci_index

    serve_spec_registry(fake_registry)
    amd, arm = oci_image(seed=25), oci_image(seed=26)
    index = oci_index([amd, arm])
    sbom = oci_artifact(amd)
    with Client(fake_registry.url) as client:
        push_image(client, "multi", index, "v1")
        push_image(client, "multi", sbom)
    host = fake_registry.url.removeprefix("http://")
    home = tmp_path / "home"
    home.mkdir()
    plain = run_cli("--json", "inspect", f"{host}/multi:v1", home=home).json()
    doc = run_cli("--json", "inspect", f"{host}/multi:v1", "--referrers", home=home).json()
    assert doc["digest"] == str(index.digest) and doc["referrers"] == []
    entries = {m["digest"]: m for m in doc["manifests"]}
    assert set(entries) == {str(amd.digest), str(arm.digest)}
    assert [r["digest"] for r in entries[str(amd.digest)]["referrers"]] == [str(sbom.digest)]
    assert entries[str(arm.digest)]["referrers"] == []
    # each entry as inspect --json has it, and its referrers besides
    for entry in plain["manifests"]:
        assert {k: v for k, v in entries[entry["digest"]].items() if k != "referrers"} == entry
