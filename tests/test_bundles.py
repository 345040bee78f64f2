"""Air-gap bundles (issue 13): create, import, deltas, damage, interop with skopeo."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore import open_store
from regstore.bundle import create_bundle, import_bundle, read_bundle, verify_bundle
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage
from regstore.errors import (
    BundleBaseMissingError,
    BundleInvalidError,
    DigestMismatchError,
    NotFoundError,
)
from regstore.store import ObjectStore
from regstore.testing.builders import BuiltImage, BuiltIndex, build_image, build_index
from tests.support.cli import blob_path, cli_env, flip_byte, put_image, run_cli
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.support.skopeo import skopeo_copy

Built = BuiltImage | BuiltIndex

BASE = build_image(layers=2, layer_size=40_000, seed=1301, media="docker")
TOOL = build_index(seed=1302, layer_size=20_000)
#: an image of one platform, arm64 (BASE is amd64): a sync asking for arm64 takes it whole
ARM_WEB = build_image(layers=1, layer_size=30_000, seed=1303, platform=("linux", "arm64"))
# a new tag of app/web sharing BASE's layers, plus one new image
WEB2 = build_image(
    layers=1, layer_size=30_000, seed=1303, media="docker", shared_layers=BASE.layers
)
NEW = build_image(layers=1, layer_size=25_000, seed=1304, media="oci")
WEB3 = build_image(
    layers=1, layer_size=15_000, seed=1305, media="docker", shared_layers=WEB2.layers
)


def _all_blobs(built: Built) -> dict[str, bytes]:
    blobs = dict(built.blobs)
    for digest, (_, raw) in built.manifests.items():
        blobs[digest] = raw
    return blobs


def _members(path: Path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        return {m.name: m.size for m in tar.getmembers() if m.isreg()}


def _assert_in_store(store: ObjectStore, name: str, tag: str, built: Built) -> None:
    assert store.manifest(name, tag).raw == built.manifest_bytes
    for digest, data in built.blobs.items():
        with store.layer(digest).reader() as reader:
            assert reader.read() == data, digest


def _assert_in_registry(client: Client, name: str, tag: str, built: Built) -> None:
    assert client.get_image_manifest(name, tag).raw == built.manifest_bytes
    for digest, (_, raw) in built.manifests.items():
        assert client.get_image_manifest(name, digest).raw == raw
    for digest, data in built.blobs.items():
        source = client.get_blob(name, digest)
        try:
            buf = bytearray(len(data) + 1)
            got = bytearray()
            while n := source.readinto(buf):
                got += buf[:n]
        finally:
            source.close()
        assert bytes(got) == data, digest


@pytest.fixture
def source_store(tmp_path: Path) -> ObjectStore:
    store = open_store(str(tmp_path / "source"))
    put_image(store, "app/web", "1", BASE)
    put_image(store, "tools/cli", "2", TOOL)
    put_image(store, "app/web", "2", WEB2)
    put_image(store, "team/new", "1", NEW)
    put_image(store, "app/web", "3", WEB3)
    put_image(store, "other/web", "1", WEB2)  # BASE's layers under another repository name
    put_image(store, "again/web", "1", WEB2)  # WEB2 itself, a third name, in a later delivery
    return store


def _first(store: ObjectStore) -> list[StoreImage]:
    return [StoreImage(store, "app/web", "1"), StoreImage(store, "tools/cli", "2")]


def _second(store: ObjectStore) -> list[StoreImage]:
    return [
        *_first(store),
        StoreImage(store, "app/web", "2"),
        StoreImage(store, "team/new", "1"),
        StoreImage(store, "other/web", "1"),
    ]


# -- full bundles --------------------------------------------------------------------------


def test_full_bundle_from_a_registry_reads_with_skopeo_and_imports_everywhere(
    registry: RegistryServer,
    registry_factory: Callable[..., RegistryServer],
    store_factory: Callable[[str], ObjectStore],
    tmp_path: Path,
) -> None:
    registry.push_content("app/web", "1", BASE)
    registry.push_content("tools/cli", "2", TOOL)
    client = Client(registry.host)
    out = tmp_path / "full.tar"
    info = create_bundle(
        str(out), [RegistryImage(client, "app/web", "1"), RegistryImage(client, "tools/cli", "2")]
    )

    assert [i.ref_name for i in info.images] == ["app/web:1", "tools/cli:2"]
    assert [i.digest for i in info.images] == [BASE.manifest_digest, TOOL.manifest_digest]
    assert not info.is_delta
    members = _members(out)
    everything = {**_all_blobs(BASE), **_all_blobs(TOOL)}
    assert {f"blobs/sha256/{d.split(':')[1]}" for d in everything} <= set(members)
    with tarfile.open(out) as tar:
        names = [m.name for m in tar.getmembers()]
    # what a reader needs first comes first
    assert names[:3] == ["oci-layout", "regstore-bundle.json", "index.json"]
    assert read_bundle(str(out)) == info

    for ref, built in (("app/web:1", BASE), ("tools/cli:2", TOOL)):
        target = tmp_path / f"dir-{ref.replace('/', '-').replace(':', '-')}"
        skopeo_copy(
            f"oci-archive:{out}:{ref}",
            f"dir:{target}",
            *(["--all"] if isinstance(built, BuiltIndex) else []),
        )
        assert (target / "manifest.json").read_bytes() == built.manifest_bytes

    fresh = registry_factory()
    fresh_client = Client(fresh.host)
    batch = import_bundle(str(out), client=fresh_client, prefix="mirror")
    assert batch.ok, batch.as_dict()
    _assert_in_registry(fresh_client, "mirror/app/web", "1", BASE)
    _assert_in_registry(fresh_client, "mirror/tools/cli", "2", TOOL)

    for kind in ("memory", "file-oci", "s3-distribution"):
        store = store_factory(kind)
        batch = import_bundle(str(out), store=store)
        assert batch.ok, (kind, batch.as_dict())
        _assert_in_store(store, "app/web", "1", BASE)
        _assert_in_store(store, "tools/cli", "2", TOOL)
    assert verify_bundle(str(out)).ok


def test_a_bundle_is_written_to_s3_and_imported_from_there(
    source_store: ObjectStore, s3_bucket, store_factory: Callable[[str], ObjectStore]
) -> None:
    opts = {"endpoint_url": s3_bucket.endpoint_url, "key": "testing", "secret": "testing"}
    url = f"s3://{s3_bucket.bucket}/deliveries/one.tar"
    info = create_bundle(url, _first(source_store), storage_options=opts)
    assert read_bundle(url, storage_options=opts).id == info.id
    store = store_factory("memory")
    assert import_bundle(url, store=store, storage_options=opts).ok
    _assert_in_store(store, "tools/cli", "2", TOOL)
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_bucket.endpoint_url},
                           key="testing", secret="testing")  # fmt: skip
    # only the finished bundle is left: the temporary object was renamed
    assert fs.ls(f"{s3_bucket.bucket}/deliveries") == [f"{s3_bucket.bucket}/deliveries/one.tar"]


def test_importing_a_bundle_again_restores_what_verify_moved_aside(
    source_store: ObjectStore, tmp_path: Path
) -> None:
    # Across an air gap the bundle is the only source: a re-import took the damaged image for
    # unchanged (its tag names the same digest) and left the blob verify quarantined missing
    from regstore.engine.verify import verify

    bundle = str(tmp_path / "one.tar")
    create_bundle(bundle, _first(source_store))
    root = tmp_path / "target"
    store = open_store(str(root))
    assert import_bundle(bundle, store=store).ok
    again = import_bundle(bundle, store=store)
    assert [o.status for o in again] == ["skipped", "skipped"]  # whole: nothing to do

    layer = BASE.layer_digests[0]
    flip_byte(blob_path(root, layer))
    report = verify(store, quarantine=True)
    assert [p.kind for p in report.problems] == ["damaged-blob"] and report.quarantined
    assert not store.blob_exists(layer)
    third = import_bundle(bundle, store=store)
    assert [o.status for o in third] == ["copied", "skipped"], third.as_dict()
    assert third.bytes_moved == len(BASE.blobs[layer])
    _assert_in_store(store, "app/web", "1", BASE)
    assert verify(store).ok


# -- deltas --------------------------------------------------------------------------------


def test_a_delta_leaves_out_what_the_first_bundle_holds(
    source_store: ObjectStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    one = create_bundle(str(first), _first(source_store))
    two = create_bundle(str(second), _second(source_store), since=[str(first)])

    assert two.is_delta and [b.id for b in two.base] == [one.id]
    assert set(two.carried).isdisjoint(one.carried)
    carried = {f"blobs/sha256/{d.split(':')[1]}" for d in one.carried}
    assert carried.isdisjoint(_members(second))
    # the delta is the size of what is new: WEB2's own layer, config, manifest and NEW
    new = {**_all_blobs(NEW)}
    new.update({d: b for d, b in _all_blobs(WEB2).items() if d not in _all_blobs(BASE)})
    assert sum(v for k, v in _members(second).items() if k.startswith("blobs/")) == sum(
        len(b) for b in new.values()
    )
    assert two.size == sum(len(b) for b in new.values())
    # yet it names all four images
    assert [i.ref_name for i in two.images] == [
        "app/web:1",
        "tools/cli:2",
        "app/web:2",
        "team/new:1",
        "other/web:1",
    ]
    assert verify_bundle(str(second)).ok


def test_a_delta_into_an_empty_target_is_refused_before_any_tag(
    source_store: ObjectStore, tmp_path: Path, registry: RegistryServer
) -> None:
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    one = create_bundle(str(first), _first(source_store))
    create_bundle(str(second), _second(source_store), since=[str(first)])

    store = open_store(f"memory://delta-{tmp_path.name}")
    with pytest.raises(BundleBaseMissingError) as caught:
        import_bundle(str(second), store=store)
    message = str(caught.value)
    assert "\n" not in message
    assert one.id in message
    # the first missing digests are named: BASE's manifest (app/web:1 is re-tagged in the delta)
    assert BASE.manifest_digest in message or BASE.layer_digests[0] in message, message
    assert store.repositories() == []

    client = Client(registry.host)
    with pytest.raises(BundleBaseMissingError):
        import_bundle(str(second), client=client)
    for name in ("app/web", "team/new", "tools/cli"):
        with pytest.raises(NotFoundError):
            client.list_image_tags(name)


def test_a_delta_whose_base_went_in_under_other_names_says_which_and_how(
    source_store: ObjectStore, tmp_path: Path, registry: RegistryServer
) -> None:
    """The base was imported (under the prefix, as air/app/web): the delta's other/web lacks
    BASE's layers in its own repository of the registry. The refusal names what the base
    held and the option that points the import there."""
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    create_bundle(str(first), [StoreImage(source_store, "app/web", "1")])
    create_bundle(str(second), [StoreImage(source_store, "other/web", "1")], since=[str(first)])
    client = Client(registry.host)
    assert import_bundle(str(first), client=client, prefix="air").ok

    with pytest.raises(BundleBaseMissingError) as caught:
        import_bundle(str(second), client=client, prefix="air")
    message = str(caught.value)
    assert "\n" not in message
    assert "app/web:1" in message, message
    assert "--base-repo app/web" in message, message
    assert caught.value.base_images == ["app/web:1"]
    with pytest.raises(NotFoundError):
        client.get_image_manifest("air/other/web", "1")
    batch = import_bundle(str(second), client=client, prefix="air", base_repositories=["app/web"])
    assert batch.ok, batch.as_dict()


def test_full_then_delta_then_a_third_delivery(
    source_store: ObjectStore,
    tmp_path: Path,
    registry: RegistryServer,
    store_factory: Callable[[str], ObjectStore],
) -> None:
    first, second, third = tmp_path / "one.tar", tmp_path / "two.tar", tmp_path / "three.tar"
    create_bundle(str(first), _first(source_store))
    create_bundle(str(second), _second(source_store), since=[str(first)])
    three = create_bundle(
        str(third),
        [
            *_second(source_store),
            StoreImage(source_store, "app/web", "3"),
            StoreImage(source_store, "again/web", "1"),
        ],
        since=[str(second)],  # the delta's references cover the first bundle too
    )
    assert {d for d in three.carried} == set(_all_blobs(WEB3)) - set(_all_blobs(WEB2))

    store = store_factory("file-distribution")
    client = Client(registry.host)
    # what a base delivered under another name is looked for there only when the importer
    # names that repository
    homes = ["app/web"]
    for bundle in (first, second, third):
        assert import_bundle(str(bundle), store=store, base_repositories=homes).ok
        assert import_bundle(str(bundle), client=client, prefix="air", base_repositories=homes).ok
    expected = [("app/web", "1", BASE), ("tools/cli", "2", TOOL), ("app/web", "2", WEB2),
                ("team/new", "1", NEW), ("app/web", "3", WEB3),
                # a registry keeps blobs per repository: BASE's layers come by a mount
                ("other/web", "1", WEB2),
                # its manifest too is left out: read from, and its blobs mounted from, another name
                ("again/web", "1", WEB2)]  # fmt: skip
    for name, tag, built in expected:
        _assert_in_store(store, name, tag, built)
        _assert_in_registry(client, f"air/{name}", tag, built)


# -- damage --------------------------------------------------------------------------------


def _flip_in_member(path: Path, digest: str) -> None:
    with tarfile.open(path) as tar:
        info = tar.getmember(f"blobs/sha256/{digest.split(':')[1]}")
        offset = info.offset_data + info.size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_flipped_byte_fails_on_that_blob_and_tags_nothing(
    source_store: ObjectStore, tmp_path: Path, registry: RegistryServer
) -> None:
    out = tmp_path / "one.tar"
    create_bundle(str(out), [StoreImage(source_store, "app/web", "1")])
    layer = BASE.layer_digests[1]
    _flip_in_member(out, layer)

    report = verify_bundle(str(out))
    assert not report.ok and any(layer in str(p) for p in report.problems)
    assert [(p.kind, p.subject) for p in report.problems][:1] == [("damaged-blob", layer)]
    with pytest.warns(DeprecationWarning, match="blobs_checked"):
        assert report.blobs == report.blobs_checked > 0  # the name of 0.1, kept a while
    with pytest.warns(DeprecationWarning, match="bytes_checked"):
        assert report.bytes == report.bytes_checked > 0

    store = open_store(str(tmp_path / "target"))
    batch = import_bundle(str(out), store=store)
    assert not batch.ok
    assert layer in (batch.outcomes[0].error or "")
    assert store.tags("app/web") == [] if "app/web" in store.repositories() else True
    assert not store.blob_exists(layer)

    client = Client(registry.host)
    batch = import_bundle(str(out), client=client)
    assert not batch.ok
    with pytest.raises(NotFoundError):
        client.get_image_manifest("app/web", "1")
    assert client.blob_length("app/web", layer) < 0


def test_a_truncated_bundle_fails_on_the_cut_blob_and_tags_nothing(
    source_store: ObjectStore, tmp_path: Path
) -> None:
    out = tmp_path / "one.tar"
    create_bundle(str(out), [StoreImage(source_store, "app/web", "1")])
    with tarfile.open(out) as tar:
        last = max((m for m in tar.getmembers() if m.name.startswith("blobs/") and m.size > 1000),
                   key=lambda m: m.offset_data)  # fmt: skip
        cut = last.offset_data + last.size // 2
    data = out.read_bytes()[:cut]
    out.write_bytes(data)
    digest = "sha256:" + last.name.rsplit("/", 1)[1]

    report = verify_bundle(str(out))
    assert not report.ok and any(digest in str(p) for p in report.problems), report
    store = open_store(str(tmp_path / "target"))
    # the image's manifest came after the cut: the import stops before anything moves
    with pytest.raises(BundleInvalidError, match=digest.split(":")[1]):
        import_bundle(str(out), store=store)
    assert not store.blob_exists(digest)
    with pytest.raises(NotFoundError):
        store.manifest("app/web", "1")


def test_a_tar_without_an_index_is_not_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(__file__, arcname="hello.py")
    with pytest.raises(BundleInvalidError, match=r"index\.json"):
        import_bundle(str(out), store=open_store(f"memory://x-{tmp_path.name}"))


# -- interop -------------------------------------------------------------------------------


def test_a_bundle_skopeo_wrote_imports_with_a_name(
    registry: RegistryServer, tmp_path: Path
) -> None:
    registry.push_content("app/web", "1", BASE)
    out = tmp_path / "skopeo.tar"
    skopeo_copy(f"docker://{registry.host}/app/web:1", f"oci-archive:{out}:v1")
    info = read_bundle(str(out))
    assert not info.described and [i.ref_name for i in info.images] == ["v1"]

    store = open_store(f"memory://skopeo-{tmp_path.name}")
    with pytest.raises(BundleInvalidError, match="--name"):
        import_bundle(str(out), store=store)
    assert import_bundle(str(out), store=store, name="imported/web").ok
    manifest = store.manifest("imported/web", "v1")
    # skopeo may convert the manifest to OCI: what matters is the image it names is whole
    for blob in manifest.blobs:
        assert store.blob_size(blob.digest) == blob.size
    assert verify_bundle(str(out)).ok


# -- the command line ----------------------------------------------------------------------


def test_the_two_delivery_workflow_on_the_command_line(
    registry: RegistryServer,
    registry_factory: Callable[..., RegistryServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry.push_content("app/web", "1", BASE)
    registry.push_content("app/web", "2", WEB2)
    home, store = tmp_path / "home", str(tmp_path / "store")
    one, two = str(tmp_path / "one.tar"), str(tmp_path / "two.tar")
    r = run_cli("bundle", "create", one, f"{registry.host}/app/web:1", home=home, store=store)
    assert r.returncode == 0, r
    r = run_cli(
        "bundle", "create", two, f"{registry.host}/app/web:1", f"{registry.host}/app/web:2",
        "--since", one, home=home, store=store,
    )  # fmt: skip
    assert r.returncode == 0, r

    # a delta over its own base: renamed over it, the full bundle was gone (exit 0)
    before = Path(one).read_bytes()
    for spelling in (one, f"{tmp_path}/./one.tar", f"file://{one}"):
        r = run_cli(
            "bundle", "create", spelling, f"{registry.host}/app/web:2", "--since", one,
            home=home, store=store,
        )  # fmt: skip
        assert r.returncode == 2 and "also given as --since" in r.stderr, r
    assert Path(one).read_bytes() == before
    # a directory as OUT: the bundle was moved into it as OUT/OUT.partial-*, and exit 0
    (tmp_path / "outdir").mkdir()
    into_dir = run_cli("bundle", "create", str(tmp_path / "outdir"), f"{registry.host}/app/web:2",
                       home=home, store=store)  # fmt: skip
    assert into_dir.returncode == 2 and "is a directory" in into_dir.stderr, into_dir
    assert list((tmp_path / "outdir").iterdir()) == []
    listed_dir = run_cli("bundle", "ls", str(tmp_path / "outdir"), home=home, store=store)
    assert listed_dir.returncode == 1 and "is a directory, not a bundle" in listed_dir.stderr
    assert "store URL" not in listed_dir.stderr
    twice = run_cli(
        "bundle", "create", str(tmp_path / "x.tar"), f"{registry.host}/app/web:2",
        f"{registry.host}/app/web:2", home=home, store=store,
    )  # fmt: skip
    assert twice.returncode == 2 and "named twice" in twice.stderr, twice  # usage: exit 2

    listed = run_cli("--json", "bundle", "ls", two, home=home, store=store)
    assert listed.returncode == 0, listed
    doc = listed.json()
    assert doc["delta"] is True
    assert [i["name"] + ":" + i["tag"] for i in doc["images"]] == ["app/web:1", "app/web:2"]
    assert doc["base"][0]["id"] == read_bundle(one).id
    plain = run_cli("bundle", "ls", two, home=home, store=store)
    assert "app/web:2" in plain.stdout and f"base bundle: {doc['base'][0]['id']}" in plain.stdout
    assert run_cli("bundle", "verify", two, home=home, store=store).returncode == 0

    target = registry_factory()
    refused = run_cli("bundle", "import", two, f"{target.host}/air", home=home, store=store)
    assert refused.returncode == 1, refused
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and read_bundle(one).id in lines[0], refused
    client = Client(target.host)
    with pytest.raises(NotFoundError):
        client.get_image_manifest("air/app/web", "2")

    for bundle in (one, two):
        r = run_cli("bundle", "import", bundle, f"{target.host}/air", home=home, store=store)
        assert r.returncode == 0, r
    _assert_in_registry(client, "air/app/web", "1", BASE)
    _assert_in_registry(client, "air/app/web", "2", WEB2)

    # store:NAME opened a new store ./NAME and imported there (exit 0), where copy reads
    # store:NAME as a repository of the store in use
    monkeypatch.chdir(tmp_path)
    named = run_cli("bundle", "import", one, "store:air", home=home, store=store)
    assert named.returncode == 2 and "takes no name" in named.stderr, named
    assert not (tmp_path / "air").exists()
    for bundle in (one, two):
        r = run_cli("bundle", "import", bundle, "store:", home=home, store=store)
        assert r.returncode == 0, r
    _assert_in_store(open_store(store), "app/web", "2", WEB2)


def test_sigterm_stops_bundle_create_and_leaves_no_partial_file(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # systemd, timeout and a pod's end stop a command with SIGTERM: its default action ended
    # the process on the spot and left OUT.tar.partial-* behind at every stop
    registry.push_content("app/web", "1", BASE)
    proxy = FaultProxy(registry.url).start()
    try:
        # the first blob held: the bundle is being written (a request running ends first)
        proxy.delay("GET", r"/blobs/sha256:", 5, times=1)
        out = tmp_path / "out" / "one.tar"
        home = tmp_path / "home"
        child = subprocess.Popen(
            [sys.executable, "-m", "regstore", "--plain-http", "bundle", "create", str(out),
             f"{proxy.host}/app/web:1"],
            env=cli_env(home, str(tmp_path / "store")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not proxy.requests_matching("GET", r"/blobs/sha256:"):
                assert time.monotonic() < deadline and child.poll() is None, child.stderr
                time.sleep(0.05)
            assert list(out.parent.glob("one.tar.partial-*"))  # the bundle is being written
            child.send_signal(signal.SIGTERM)
            _, stderr = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        # ended by the signal once cleaned up (systemd counts that as a clean stop; a shell
        # reports 143)
        assert child.returncode == -signal.SIGTERM, stderr
        assert "was stopped (SIGTERM)" in stderr and "Traceback" not in stderr, stderr
        assert list(out.parent.iterdir()) == []  # neither the bundle nor its partial file
    finally:
        proxy.stop()


def test_verify_on_the_command_line_fails_a_damaged_bundle(
    source_store: ObjectStore, tmp_path: Path
) -> None:
    out = tmp_path / "one.tar"
    create_bundle(str(out), [StoreImage(source_store, "app/web", "1")])
    _flip_in_member(out, BASE.layer_digests[0])
    r = run_cli("bundle", "verify", str(out), home=tmp_path / "home")
    assert r.returncode == 1 and BASE.layer_digests[0] in r.stderr, r
    # --json: the keys of `regstore verify --json`, each problem an object with its kind
    doc = run_cli("--json", "bundle", "verify", str(out), home=tmp_path / "home").json()
    assert doc["ok"] is False and doc["blobs_checked"] > 0 and doc["bytes_checked"] > 0
    assert "blobs" not in doc and "bytes" not in doc
    (problem,) = [p for p in doc["problems"] if p["kind"] == "damaged-blob"]
    assert problem["subject"] == BASE.layer_digests[0]
    assert set(problem) == {"kind", "subject", "image", "detail"}


def test_create_from_a_sync_file_with_one_platform(
    registry: RegistryServer, tmp_path: Path
) -> None:
    registry.push_content("app/web", "1", ARM_WEB)
    registry.push_content("tools/cli", "2", TOOL)
    sync = tmp_path / "mirror.yaml"
    sync.write_text(
        f"target: {{store: '{tmp_path / 'unused'}'}}\n"
        f"sources:\n  - registry: {registry.host}\n    repositories:\n"
        "      - name: app/web\n        tags: ['1']\n"
        "      - name: tools/cli\n        tags: ['2']\n"
    )
    out = tmp_path / "synced.tar"
    r = run_cli(
        "bundle", "create", str(out), "--from", str(sync), "--platform", "linux/arm64",
        home=tmp_path / "home", store=str(tmp_path / "store"),
    )  # fmt: skip
    assert r.returncode == 0, r
    info = read_bundle(str(out))
    arm = next(c for c in TOOL.children if c.platform[1] == "arm64")
    # an image of that platform, whole, and one platform of an index: the index becomes
    # that child, whole
    assert {i.ref_name: i.digest for i in info.images} == {
        "app/web:1": ARM_WEB.manifest_digest,
        "tools/cli:2": arm.manifest_digest,
    }
    target = tmp_path / "arm"
    skopeo_copy(f"oci-archive:{out}:tools/cli:2", f"dir:{target}")
    assert (target / "manifest.json").read_bytes() == arm.manifest_bytes

    # an image of another platform alone has none to give: refused, no bundle written
    registry.push_content("app/amd", "1", BASE)
    sync.write_text(
        f"target: {{store: '{tmp_path / 'unused'}'}}\n"
        f"sources:\n  - registry: {registry.host}\n    repositories:\n"
        "      - name: app/amd\n        tags: ['1']\n"
    )
    refused = tmp_path / "refused.tar"
    r = run_cli(
        "bundle", "create", str(refused), "--from", str(sync), "--platform", "linux/arm64",
        home=tmp_path / "home", store=str(tmp_path / "store"),
    )  # fmt: skip
    assert r.returncode == 1, r
    assert "no manifest for platform linux/arm64: it is an image for linux/amd64" in r.stderr
    assert not refused.exists()


def test_ls_reads_only_the_first_members(source_store: ObjectStore, tmp_path: Path) -> None:
    out = tmp_path / "one.tar"
    info = create_bundle(str(out), _first(source_store))
    with tarfile.open(out) as tar:
        index = tar.getmember("index.json")
        keep = index.offset_data + index.size
    # everything after index.json gone: the bundle manifest still says what was there
    out.write_bytes(out.read_bytes()[: keep + 512])
    assert read_bundle(str(out)) == info


def test_a_failed_create_leaves_nothing_and_keeps_an_older_bundle(
    tmp_path: Path,
) -> None:
    root = tmp_path / "source"
    store = open_store(str(root))
    put_image(store, "app/web", "1", BASE)
    out = tmp_path / "out.tar"
    out.write_bytes(b"an older delivery")
    flip_byte(blob_path(root, BASE.layer_digests[0]), offset=100)
    with pytest.raises(DigestMismatchError, match=BASE.layer_digests[0].split(":")[1]):
        create_bundle(str(out), [StoreImage(store, "app/web", "1")])
    assert out.read_bytes() == b"an older delivery"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar", "source"]

    with pytest.raises(NotFoundError):
        create_bundle(str(tmp_path / "new.tar"), [StoreImage(store, "app/web", "9")])
    assert not (tmp_path / "new.tar").exists()


# -- a flaky source ------------------------------------------------------------------------


def test_create_resumes_a_cut_blob_and_refuses_a_corrupted_one(
    registry: RegistryServer, fault_proxy_factory, tmp_path: Path
) -> None:
    built = build_image(layers=1, layer_size=3 << 20, seed=1306, media="oci")
    registry.push_content("src/app", "1", built)
    layer = built.layer_digests[0]
    proxy = fault_proxy_factory(registry)
    client = Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=lambda s: None)

    proxy.cut_response(f"/blobs/{layer}", after_bytes=1 << 20)
    out = tmp_path / "cut.tar"
    create_bundle(str(out), [RegistryImage(client, "src/app", "1")])
    # the tar member went on from where the body broke: one ranged GET, no second copy
    ranged = [r for r in proxy.requests_matching("GET", f"/blobs/{layer}") if "Range" in r.headers]
    assert ranged and ranged[-1].headers["Range"] == f"bytes={1 << 20}-"
    assert verify_bundle(str(out)).ok
    store = open_store(f"memory://cut-{tmp_path.name}")
    assert import_bundle(str(out), store=store).ok
    _assert_in_store(store, "src/app", "1", built)

    proxy.corrupt_response(f"/blobs/{layer}")
    bad = tmp_path / "bad.tar"
    with pytest.raises(DigestMismatchError, match=layer.split(":")[1]):
        create_bundle(str(bad), [RegistryImage(client, "src/app", "1")])
    assert not bad.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tar"]


def test_a_damaged_manifest_stops_the_import_before_anything_moves(
    source_store: ObjectStore, tmp_path: Path
) -> None:
    out = tmp_path / "one.tar"
    create_bundle(str(out), [StoreImage(source_store, "app/web", "1")])
    _flip_in_member(out, BASE.manifest_digest)
    store = open_store(str(tmp_path / "target"))
    with pytest.raises(DigestMismatchError, match=BASE.manifest_digest.split(":")[1]):
        import_bundle(str(out), store=store)
    assert not store.exists() or store.repositories() == []
    assert all(not store.blob_exists(d) for d in BASE.blobs)
    report = verify_bundle(str(out))
    assert any(BASE.manifest_digest in str(p) for p in report.problems), report


def test_the_bundle_place_seam_is_not_top_level_api() -> None:
    """``BundleImage`` needs an internal writer or reader and is no engine ``Image``: typed
    code cannot use it, so ``regstore`` does not offer it (``regstore.bundle`` keeps it)."""
    import regstore
    import regstore.bundle

    assert "BundleImage" not in regstore.__all__
    assert not hasattr(regstore, "BundleImage")
    assert "BundleImage" in regstore.bundle.__all__


def test_create_from_a_sync_file_honours_its_names_and_platforms(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """``as:``, the source and target prefixes, default and per-repository platforms: the
    bundle holds each image as the sync would have written it."""
    registry.push_content("app/web", "1", ARM_WEB)
    registry.push_content("tools/cli", "2", TOOL)
    registry.push_content("tools/other", "2", TOOL)
    sync = tmp_path / "mirror.yaml"
    sync.write_text(
        "defaults: {platforms: [linux/arm64]}\n"
        f"target: {{store: '{tmp_path / 'unused'}', prefix: mirror}}\n"
        f"sources:\n  - registry: {registry.host}\n    prefix: up\n    repositories:\n"
        "      - name: app/web\n        tags: ['1']\n        as: web\n"
        "      - name: tools/cli\n        tags: ['2']\n"
        "      - name: tools/other\n        tags: ['2']\n        platforms: [linux/amd64]\n"
    )
    out = tmp_path / "synced.tar"
    r = run_cli(
        "bundle", "create", str(out), "--from", str(sync),
        home=tmp_path / "home", store=str(tmp_path / "store"),
    )  # fmt: skip
    assert r.returncode == 0, r
    arm = next(c for c in TOOL.children if c.platform[1] == "arm64")
    amd = next(c for c in TOOL.children if c.platform[1] == "amd64")
    preview = run_cli("sync", str(sync), "--dry-run", "--json", home=tmp_path / "home")
    names = sorted(j["destination"].split(":", 1)[1] for j in json.loads(preview.stdout)["jobs"])
    info = read_bundle(str(out))
    assert sorted(i.ref_name for i in info.images) == names
    by_repo = {i.ref_name.rsplit("/", 1)[-1]: i.digest for i in info.images}
    assert by_repo == {
        "web:1": ARM_WEB.manifest_digest,
        "cli:2": arm.manifest_digest,  # the default platform
        "other:2": amd.manifest_digest,  # its own
    }
    assert all(i.ref_name.startswith("mirror/") for i in info.images), info.images


def test_create_from_a_sync_file_refuses_platforms_it_cannot_honour(
    registry: RegistryServer, tmp_path: Path
) -> None:
    registry.push_content("tools/cli", "2", TOOL)
    sync = tmp_path / "mirror.yaml"
    sync.write_text(
        f"target: {{store: '{tmp_path / 'unused'}'}}\n"
        f"sources:\n  - registry: {registry.host}\n    repositories:\n"
        "      - name: tools/cli\n        tags: ['2']\n        platforms: [linux/amd64]\n"
    )
    out = tmp_path / "synced.tar"
    r = run_cli(
        "bundle", "create", str(out), "--from", str(sync), "--platform", "linux/arm64",
        home=tmp_path / "home", store=str(tmp_path / "store"),
    )  # fmt: skip
    assert r.returncode != 0 and "cannot honour" in r.stderr, r
    assert not out.exists()
