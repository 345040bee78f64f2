"""Hardening of the store's upkeep (issue 10, items 5 and 8 and the reading-commands risk).

- A blob ``verify`` finds damaged is quarantined, so a plain ``pull`` of the image fetches it
  again and the next ``verify`` passes; ``pull --repair`` does the same without a verify.
- What a killed pull leaves in the staging area (staged bytes, locks, S3 part objects, lock
  objects and incomplete multipart uploads) is reported by ``verify`` and collected by ``gc``;
  a re-run aborts the multipart upload a writer killed mid-commit left on the blob's key.
- Reading commands on a URL where there is no store fail (exit 1) and create nothing.

File stores and S3 (moto's server, through the regstore-s3 plugin), driven through the real
command line where the issue describes a user's command.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.client import Client
from regstore.digest import digest_bytes
from regstore.engine import pull
from regstore.engine.gc import collect_garbage
from regstore.errors import StoreNotFoundError
from regstore.hookspecs import BlobState
from regstore.testing.builders import build_image, oci_image, write_image
from tests.support.cli import CliResult, blob_path, flip_byte, run_cli
from tests.support.engine import env_without_ca_bundle, seed_registry
from tests.support.fixtures import S3Bucket
from tests.support.moto_server import make_s3_client
from tests.support.registry import RegistryServer

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


# -- two kinds of store, one interface -----------------------------------------------------------


@dataclass
class Place:
    """A store under test: its URL, and ways to reach behind regstore's back."""

    url: str
    kind: str
    root: Path | None = None  # file stores
    s3: Any = None  # a boto3 client (S3 stores)
    bucket: str = ""
    prefix: str = ""

    def blob_key(self, digest: str) -> str:
        hex_ = digest.split(":", 1)[1]
        return f"{self.prefix}/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"

    def corrupt(self, digest: str) -> None:
        """Flip one byte of a stored blob, keeping its size (bit rot, a bad disk)."""
        if self.root is not None:
            flip_byte(blob_path(self.root, digest))
            return
        key = self.blob_key(digest)
        data = bytearray(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        data[10 % len(data)] ^= 0xFF
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    def truncate(self, digest: str, size: int) -> None:
        """Cut a stored blob to ``size`` bytes (a copy or a restore that stopped short)."""
        if self.root is not None:
            path = blob_path(self.root, digest)
            path.write_bytes(path.read_bytes()[:size])
            return
        key = self.blob_key(digest)
        data = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data[:size])

    def work_files(self) -> list[str]:
        """Every file (object) under ``_regstore``, relative to it."""
        if self.root is not None:
            work = self.root / "_regstore"
            if not work.exists():
                return []
            return sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
        work = f"{self.prefix}/_regstore/"
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=work).get("Contents", [])
        return sorted(item["Key"][len(work) :] for item in listed)

    def multipart_uploads(self) -> list[dict[str, Any]]:
        found = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=f"{self.prefix}/")
        return list(found.get("Uploads", []))


def _s3_place(bucket: S3Bucket, **options: str) -> Place:
    prefix = f"hard-{uuid.uuid4().hex[:8]}"
    query = {
        "endpoint_url": bucket.endpoint_url,
        "key": "testing",
        "secret": "testing",
        "region": "us-east-1",
        **options,
    }
    url = f"s3://{bucket.bucket}/{prefix}?{urllib.parse.urlencode(query)}"
    client = make_s3_client(bucket.endpoint_url)
    return Place(url, "s3", s3=client, bucket=bucket.bucket, prefix=prefix)


@pytest.fixture(params=["file", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "file":
        root = tmp_path / "store"
        return Place(str(root), "file", root=root)
    return _s3_place(request.getfixturevalue("s3_bucket"), part_size="5MiB", lease="2")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(home: Path) -> Callable[..., CliResult]:
    def run(*args: str, store: str, expect: int | None = 0) -> CliResult:
        result = run_cli(*args, home=home, store=store)
        if expect is not None:
            assert result.returncode == expect, str(result)
        return result

    return run


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL


def _staging(report: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in report["staging"] if kind is None or e["kind"] == kind]


# -- item 5: a damaged blob is quarantined, so a plain pull fetches it again ---------------------


def test_a_pull_fetches_again_a_stored_blob_cut_short(
    place: Place, registry: RegistryServer, cli: Callable[..., CliResult]
) -> None:
    # it took the blob for there (skipped), then failed at the manifest: "has 1000 bytes in
    # the store, the manifest says ...", with no way out but --repair
    built = build_image(layers=2, layer_size=64 * 1024, seed=511, media="oci")
    seed_registry(registry.url, "hard/cut", "1", built)
    with open_store(place.url) as store:
        pull(Client(registry.host), store, "hard/cut", "1")
    cut = built.layer_digests[0]
    place.truncate(cut, 1000)
    again = cli("pull", f"{registry.host}/hard/cut:1", store=place.url)
    assert "1 blob(s)" in again.stdout  # fetched again
    assert "regstore: warning: stored blob" in again.stderr  # shown without -v
    assert "was damaged (1000 bytes" in again.stderr
    report = cli("verify", "--json", store=place.url).json()
    assert report["ok"] is True
    [aside] = _staging(report, "quarantine")
    assert aside["digest"] == cut and aside["size"] == 1000


def test_verify_quarantines_a_damaged_blob_and_a_plain_pull_fetches_it_again(
    place: Place, registry: RegistryServer, cli: Callable[..., CliResult]
) -> None:
    built = build_image(layers=2, layer_size=64 * 1024, seed=510, media="oci")
    seed_registry(registry.url, "hard/q", "1", built)
    with open_store(place.url) as store:
        pull(Client(registry.host), store, "hard/q", "1")
    damaged = built.layer_digests[0]
    place.corrupt(damaged)

    first = cli("verify", "--json", store=place.url, expect=1)
    [problem] = first.json()["problems"]
    assert (problem["kind"], problem["subject"]) == ("damaged-blob", damaged)
    assert problem["quarantined"] and damaged.split(":")[1] in problem["quarantined"]
    assert "quarantine" in first.stderr or "moved aside" in first.stderr
    with open_store(place.url) as store:
        assert store.blob_status(damaged).state is BlobState.ABSENT

    again = cli("pull", f"{registry.host}/hard/q:1", "--json", store=place.url).json()
    assert again["transferred"] == [damaged]  # not "already there"
    assert damaged not in again["skipped"]

    second = cli("verify", "--json", store=place.url).json()
    assert second["ok"] is True and second["problems"] == []
    # the damaged bytes are kept aside (not a problem) until gc's grace has passed
    [aside] = _staging(second, "quarantine")
    assert aside["digest"] == damaged and aside["size"] == len(built.blobs[damaged])
    with open_store(place.url) as store:
        assert collect_garbage(store).staging_removed == []  # default grace: an hour
        gone = collect_garbage(store, grace=0)
        assert [e.kind.value for e in gone.staging_removed] == ["quarantine"]
        assert store.staging() == []
        with store.layer(damaged).reader() as reader:
            assert reader.read() == built.blobs[damaged]


def test_a_sync_after_verify_fetches_again_the_blobs_it_moved_aside(
    place: Place, registry: RegistryServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # A nightly sync + verify: verify moved the damaged blob aside and said "pull to fetch it
    # again"; every later sync found the tag naming the same digest and skipped the image, so
    # the mirror stayed short of the blob for ever.
    built = build_image(layers=2, layer_size=64 * 1024, seed=513, media="oci")
    seed_registry(registry.url, "hard/cron", "1", built)
    other = build_image(layers=1, layer_size=4096, seed=514, media="oci")
    seed_registry(registry.url, "hard/cron", "2", other)
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(
        f"sources:\n  - registry: '{registry.host}'\n    plain_http: true\n"
        "    repositories: [{name: hard/cron}]\n"
    )
    first = cli("sync", str(sync_file), "--json", store=place.url).json()
    assert first["copied"] == 2
    damaged = built.layer_digests[1]
    place.corrupt(damaged)
    cli("verify", "--json", store=place.url, expect=1)

    preview = cli("sync", str(sync_file), "--dry-run", "--json", store=place.url).json()
    assert {j["source"].rsplit(":", 1)[1]: j["action"] for j in preview["jobs"]} == {
        "1": "copy",
        "2": "skip",  # the other image lacks nothing
    }
    healed = cli("sync", str(sync_file), "--json", store=place.url).json()
    assert (healed["copied"], healed["skipped"]) == (1, 1)
    [copied] = [i for i in healed["images"] if i["result"] and i["result"]["transferred"]]
    assert copied["result"]["transferred"] == [damaged]
    assert cli("verify", "--json", store=place.url).json()["ok"] is True
    # the damaged copy stays aside until gc's grace has passed; the image is whole again
    again = cli("sync", str(sync_file), "--json", store=place.url).json()
    assert (again["copied"], again["skipped"]) == (0, 2)


def test_pull_repair_rehashes_the_image_without_a_verify(
    place: Place, registry: RegistryServer, cli: Callable[..., CliResult]
) -> None:
    built = build_image(layers=3, layer_size=32 * 1024, seed=511, media="docker")
    seed_registry(registry.url, "hard/r", "1", built)
    with open_store(place.url) as store:
        pull(Client(registry.host), store, "hard/r", "1")
    for digest in (built.layer_digests[1], built.manifest_digest):
        place.corrupt(digest)

    plain = cli("pull", f"{registry.host}/hard/r:1", "--json", store=place.url).json()
    assert plain["transferred"] == []  # without --repair the damaged layer is "there"
    with open_store(place.url) as store:  # the manifest's bytes are small: written again
        assert store.manifest("hard/r", "1").raw == built.manifest_bytes

    repaired = cli("pull", f"{registry.host}/hard/r:1", "--repair", "--json", store=place.url)
    report = repaired.json()
    assert report["quarantined"] == [built.layer_digests[1]]
    assert report["transferred"] == [built.layer_digests[1]]
    assert cli("verify", "--json", store=place.url).json()["ok"] is True
    with open_store(place.url) as store:
        assert store.manifest("hard/r", "1").raw == built.manifest_bytes
    human = cli("pull", f"{registry.host}/hard/r:1", "--repair", store=place.url)
    assert "damaged" not in human.stdout  # an intact image: nothing to repair


# -- item 8: staging left by killed writers is reported and collected ----------------------------

PULLER = """
import sys
from regstore import open_store
from regstore.client import Client
from regstore.engine import pull
from regstore.engine.gc import collect_garbage
pull(Client(sys.argv[1]), open_store(sys.argv[2]), sys.argv[3], "1", concurrency=1)
"""


def test_a_killed_pull_leaves_staging_that_verify_reports_and_gc_collects(
    tmp_path: Path,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., Any],
    cli: Callable[..., CliResult],
) -> None:
    built = build_image(layers=1, layer_size=3 * MiB, seed=520, media="docker")
    seed_registry(registry.url, "hard/kill", "1", built)
    layer = built.layer_digests[0]
    proxy = fault_proxy_factory(registry)
    proxy.cut_response(f"/blobs/{layer}", after_bytes=MiB, times=None)  # retries until killed
    root = tmp_path / "store"
    child = subprocess.Popen(
        [sys.executable, "-c", PULLER, proxy.host, str(root), "hard/kill"],
        cwd=ROOT,
        env=env_without_ca_bundle(),
        text=True,
    )
    place = Place(str(root), "file", root=root)
    try:
        staged = root / "_regstore" / "uploads" / "sha256" / layer.split(":")[1]
        _wait_until(lambda: staged.exists() and staged.stat().st_size >= MiB, "bytes are staged")
    finally:
        _kill(child)

    report = cli("verify", "--json", store=place.url).json()
    assert report["ok"] is True  # leftovers are not damage
    [upload] = _staging(report, "upload")
    assert upload["digest"] == layer and upload["size"] >= MiB and not upload["active"]
    assert upload["location"].startswith("file://") and "_regstore/uploads" in upload["location"]
    assert all(not e["active"] for e in report["staging"])  # its flock died with it
    human = cli("verify", store=place.url)
    assert "upload" in human.stdout and "gc" in human.stdout

    young = cli("gc", "--json", store=place.url).json()  # the default grace protects them
    assert young["staging_removed"] == [] and len(young["staging_kept"]) == len(report["staging"])
    dry = cli("gc", "--grace", "0", "--dry-run", "--json", store=place.url).json()
    assert {e["kind"] for e in dry["staging_removed"]} == {e["kind"] for e in report["staging"]}
    assert place.work_files() != []
    done = cli("gc", "--grace", "0", "--json", store=place.url).json()
    assert done["staging_bytes_removed"] >= MiB
    assert [f for f in place.work_files() if not f.startswith("locks/oci-index")] == []
    assert cli("verify", "--json", store=place.url).json()["staging"] == []

    proxy.clear_faults()
    with open_store(place.url) as store:  # and the image still pulls, from zero
        pull(Client(proxy.host), store, "hard/kill", "1")
        with store.layer(layer).reader() as reader:
            assert reader.read() == built.blobs[layer]


WRITER = """
import sys, time
from regstore import open_store
url, digest, path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(path, "rb").read()
writer = open_store(url).layer(digest).writer()
writer.set_size(len(data))
writer.write(data[:count])
print("staged", flush=True)
time.sleep(120)
"""


def _killed_writer(url: str, tmp_path: Path, data: bytes, digest: str, count: int) -> None:
    """A process writes ``count`` bytes of a blob and is killed (SIGKILL) while holding it."""
    path = tmp_path / f"blob-{uuid.uuid4().hex[:6]}"
    path.write_bytes(data)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, digest, str(path), str(count)],
        cwd=ROOT,
        env=env_without_ca_bundle(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "staged"
    finally:
        _kill(child)


def _rerun_commits(place: Place, digest: str, data: bytes, *, resumed_at: int) -> None:
    """A re-run after a killed writer: it takes the blob up at ``resumed_at`` bytes, commits,
    reads it back, and leaves no multipart upload and no work files behind."""
    with open_store(place.url) as store:
        writer = store.layer(digest).writer()
        assert writer.current_size == resumed_at
        writer.write(data[resumed_at:])
        writer.commit(len(data))
        with store.layer(digest).reader() as reader:
            assert reader.read() == data
    assert place.multipart_uploads() == []
    assert place.work_files() == []


def _stale_multipart(place: Place, digest: str) -> str:
    """The multipart upload a writer killed between create and complete leaves on the key."""
    key = place.blob_key(digest)
    upload = place.s3.create_multipart_upload(Bucket=place.bucket, Key=key)["UploadId"]
    place.s3.upload_part(
        Bucket=place.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * (5 * MiB)
    )
    return str(upload)


def _no_live_lease(url: str) -> Callable[[], bool]:
    def check() -> bool:
        with open_store(url) as store:
            return not any(e.active for e in store.staging())

    return check


def test_s3_staging_of_a_killed_writer_is_reported_and_collected(
    s3_bucket: S3Bucket, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    # the lease must outlast a CLI run on a loaded machine (the gc below must see it live)
    # staging=parts: the staged bytes are objects of their own (a direct write's are in its
    # upload, the multipart entry)
    place = _s3_place(s3_bucket, part_size="5MiB", lease="8", staging="parts")
    data = random.Random(530).randbytes(7 * MiB)
    digest = str(digest_bytes(data))
    _killed_writer(place.url, tmp_path, data, digest, 6 * MiB)  # one part staged, 1 MiB lost
    _stale_multipart(place, digest)  # as if it had died while committing

    with open_store(place.url) as store:
        held = store.staging()
    assert {e.kind.value for e in held} == {"upload", "lock", "multipart"}
    assert all(e.active for e in held)  # its lease still runs
    kept = cli("gc", "--grace", "0", "--json", store=place.url).json()
    assert kept["staging_removed"] == []  # a live lease is never collected

    _wait_until(_no_live_lease(place.url), "the dead writer's lease ran out")
    report = cli("verify", "--json", store=place.url).json()
    by_kind = {e["kind"]: e for e in report["staging"]}
    assert set(by_kind) == {"upload", "lock", "multipart"}
    assert by_kind["upload"]["size"] == 5 * MiB and by_kind["upload"]["digest"] == digest
    assert by_kind["multipart"]["size"] == 5 * MiB
    assert by_kind["lock"]["location"].endswith(".lock")

    done = cli("gc", "--grace", "0", "--json", store=place.url).json()
    assert {e["kind"] for e in done["staging_removed"]} == {"upload", "lock", "multipart"}
    assert place.work_files() == []
    assert place.multipart_uploads() == []


def test_s3_rerun_aborts_the_upload_of_a_writer_killed_mid_commit(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    place = _s3_place(s3_bucket, part_size="5MiB", lease="2", staging="parts")
    data = random.Random(531).randbytes(12 * MiB)
    digest = str(digest_bytes(data))
    _killed_writer(place.url, tmp_path, data, digest, 11 * MiB)
    _stale_multipart(place, digest)
    _wait_until(_no_live_lease(place.url), "the dead writer's lease ran out")

    # the re-run resumes the parts; what the killed commit left is aborted, and the parts and
    # the lock object are gone too
    _rerun_commits(place, digest, data, resumed_at=10 * MiB)


def test_s3_direct_upload_of_a_killed_writer_is_reported_and_sent_again(
    s3_bucket: S3Bucket, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    # staging=direct (the default): the part sent is in the blob's upload, which a small
    # record under _regstore/uploads/ names
    place = _s3_place(s3_bucket, part_size="5MiB", lease="8")
    data = random.Random(533).randbytes(7 * MiB)
    digest = str(digest_bytes(data))
    _killed_writer(place.url, tmp_path, data, digest, 6 * MiB)  # one part sent, 1 MiB lost
    with open_store(place.url) as store:
        held = store.staging()
    assert sorted(e.kind.value for e in held) == ["lock", "multipart", "upload"]
    assert all(e.active for e in held)  # its lease still runs
    kept = cli("gc", "--grace", "0", "--json", store=place.url).json()
    assert kept["staging_removed"] == []  # a live lease is never collected

    _wait_until(_no_live_lease(place.url), "the dead writer's lease ran out")
    report = cli("verify", "--json", store=place.url).json()
    by_kind = {e["kind"]: e for e in report["staging"]}
    assert set(by_kind) == {"upload", "lock", "multipart"}
    assert 0 < by_kind["upload"]["size"] < 1024 and by_kind["upload"]["digest"] == digest
    assert by_kind["multipart"]["size"] == 5 * MiB and by_kind["multipart"]["digest"] == digest
    _rerun_commits(place, digest, data, resumed_at=0)  # a re-run instead of gc: sends all


def test_s3_gc_collects_the_upload_of_a_killed_direct_writer(
    s3_bucket: S3Bucket, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    place = _s3_place(s3_bucket, part_size="5MiB", lease="2")
    data = random.Random(534).randbytes(12 * MiB)
    digest = str(digest_bytes(data))
    _killed_writer(place.url, tmp_path, data, digest, 11 * MiB)  # two parts sent
    _wait_until(_no_live_lease(place.url), "the dead writer's lease ran out")
    done = cli("gc", "--grace", "0", "--json", store=place.url).json()
    assert sorted(e["kind"] for e in done["staging_removed"]) == ["lock", "multipart", "upload"]
    assert place.multipart_uploads() == []
    assert place.work_files() == []


def test_file_rerun_after_a_killed_writer_leaves_no_staging(tmp_path: Path) -> None:
    root = tmp_path / "store"
    place = Place(str(root), "file", root=root)
    data = random.Random(532).randbytes(MiB)
    digest = str(digest_bytes(data))
    _killed_writer(place.url, tmp_path, data, digest, MiB // 2)
    assert any(f.startswith("uploads/") for f in place.work_files())
    assert any(f.startswith("locks/blob/") for f in place.work_files())
    with open_store(place.url) as store:  # the re-run resumes what the killed writer staged
        writer = store.layer(digest).writer()
        assert writer.current_size == MiB // 2
        writer.write(data[writer.current_size :])
        writer.commit(len(data))
        assert store.staging() == []
    assert place.work_files() == []  # its staged bytes and its lock file are gone


# -- the risk: reading commands never create a store --------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("ls", "team/app"),
        ("verify",),
        ("inspect", "store:team/app:1"),
        ("gc", "--dry-run"),
        ("gc",),
        ("delete", "store:team/app:1"),
    ],
)
def test_reading_a_mistyped_file_store_fails_and_creates_nothing(
    tmp_path: Path, cli: Callable[..., CliResult], args: tuple[str, ...]
) -> None:
    typo = tmp_path / "mirorr" / "store"
    result = cli(*args, store=str(typo), expect=1)
    assert "no store at" in result.stderr and str(typo) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mirorr").exists()


def test_reading_an_empty_s3_prefix_fails(
    s3_bucket: S3Bucket, cli: Callable[..., CliResult]
) -> None:
    place = _s3_place(s3_bucket)
    for args in (("ls",), ("verify",)):
        result = cli(*args, store=place.url, expect=1)
        assert "no store at s3://" in result.stderr
        assert "secret=testing" not in result.stderr  # the URL is shown redacted
    assert place.work_files() == []


def test_reading_commands_on_an_s3_prefix_that_holds_no_store_of_their_layout_fail(
    s3_bucket: S3Bucket, cli: Callable[..., CliResult]
) -> None:
    # the bucket's root, a parent prefix, the other layout: each said "checked 0 ... OK"
    base, _, query = _s3_place(s3_bucket).url.partition("?")
    url = f"{base}/inner?{query}"
    with open_store(url) as store:
        write_image(store, "team/app", "1", oci_image(seed=64))
    for wrong in (f"s3://{s3_bucket.bucket}?{query}", f"{base}?{query}"):
        for command in (["verify"], ["ls"], ["gc", "--dry-run"]):
            assert "no store at" in cli(*command, store=wrong, expect=1).stderr
    other = cli("verify", store=f"{url}&layout=oci", expect=1)
    assert "holds a store of the distribution layout" in other.stderr
    assert cli("verify", store=url).returncode == 0


def test_open_store_must_exist(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="no store at"):
        open_store(str(tmp_path / "nothing"), must_exist=True)
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(StoreNotFoundError):
        open_store(f"memory://absent-{uuid.uuid4().hex}", must_exist=True)
    store = open_store(str(tmp_path / "made"))
    assert not store.exists()
    data = b"a blob"
    with store.layer(digest_bytes(data)).writer() as writer:
        writer.write(data)
        writer.commit(len(data))
    open_store(str(tmp_path / "made"), must_exist=True).close()


def test_writing_commands_still_create_the_store(
    tmp_path: Path, registry: RegistryServer, cli: Callable[..., CliResult]
) -> None:
    built = build_image(layers=1, layer_size=1024, seed=540)
    seed_registry(registry.url, "hard/new", "1", built)
    root = tmp_path / "fresh" / "store"
    cli("pull", f"{registry.host}/hard/new:1", "-q", store=str(root))
    listing = cli("ls", "--json", store=str(root)).json()
    assert [r["name"] for r in listing["repositories"]] == ["hard/new"]


# -- the layouts' readers do not mind the working area -------------------------------------------


def test_quarantine_and_staging_leave_the_layouts_readable_by_peers(
    registry: RegistryServer, registry_factory: Callable[..., RegistryServer], tmp_path: Path
) -> None:
    from tests.support.engine import blob_digest_in_registry, raw_manifest
    from tests.support.registry import serve_directory
    from tests.support.skopeo import skopeo_copy, skopeo_inspect_raw

    intact = build_image(layers=1, layer_size=4096, seed=550, media="oci")
    damaged = build_image(layers=1, layer_size=4096, seed=551, media="oci")
    seed_registry(registry.url, "peer/intact", "1", intact)
    seed_registry(registry.url, "peer/damaged", "1", damaged)
    leftover = random.Random(552).randbytes(5000)
    roots = {"distribution": tmp_path / "dist", "oci": tmp_path / "oci"}
    for layout, root in roots.items():
        with open_store(f"file://{root}", layout=layout) as store:
            for name in ("peer/intact", "peer/damaged"):
                pull(Client(registry.host), store, name, "1")
            assert store.quarantine_blob(damaged.layer_digests[0])
            writer = store.layer(digest_bytes(leftover)).writer()
            writer.write(leftover[:100])
            writer.close()
            kinds = {e.kind.value for e in store.staging()}
            assert kinds == {"quarantine", "upload"}

    served = serve_directory(roots["distribution"], tmp_path / "served")
    try:
        assert skopeo_inspect_raw(f"docker://{served.host}/peer/intact:1") == (
            intact.manifest_bytes
        )
        for digest in intact.blobs:
            assert blob_digest_in_registry(served.url, "peer/intact", digest) == digest
    finally:
        served.stop()
    oci = roots["oci"]
    assert skopeo_inspect_raw(f"oci:{oci}:peer/intact:1") == intact.manifest_bytes
    target = registry_factory()
    skopeo_copy(f"oci:{oci}:peer/intact:1", f"docker://{target.host}/copied/intact:1")
    assert raw_manifest(target.url, "copied/intact", "1", intact.manifest_media_type) == (
        intact.manifest_bytes
    )


# -- backends without the housekeeping operations -------------------------------------------------


def test_verify_and_gc_still_work_on_a_backend_without_housekeeping() -> None:
    from regstore import ObjectStore
    from regstore.backends.memory import MemoryBackend, remove_store
    from regstore.engine.verify import verify
    from regstore.errors import UnsupportedError
    from regstore.hookspecs import StagingEntry
    from regstore.reference import Digest
    from regstore.store import DELETED_NOT_MOVED
    from tests.support.cli import put_image

    class Bare(MemoryBackend):
        backend_name = "bare"

        def list_staging(self) -> list[StagingEntry]:
            raise UnsupportedError("bare stores cannot list their staging area")

        def quarantine_blob(self, digest: Digest) -> str:
            raise UnsupportedError("bare stores cannot quarantine blobs")

    name = f"bare-{uuid.uuid4().hex[:8]}"
    backend = Bare(name)
    store = ObjectStore(backend, url=f"memory://{name}")
    try:
        image = build_image(layers=1, layer_size=2048, seed=560)
        put_image(store, "bare/app", "1", image)
        layer = image.layer_digests[0]
        path = backend.layout.blob_path(Digest(layer))
        data = bytearray(backend.fs.cat_file(path))
        data[5] ^= 0xFF
        backend.fs.pipe_file(path, bytes(data))

        report = verify(store)
        [problem] = report.problems
        # not moved aside but deleted: while it was there a pull skipped it, and no command
        # could take it out (gc keeps what a manifest references)
        assert problem.quarantined == DELETED_NOT_MOVED and "nowhere: deleted" in str(problem)
        assert report.staging == [] and "cannot list" in (report.staging_error or "")
        assert not store.blob_exists(layer)  # for the next pull to fetch again
        gc = collect_garbage(store, grace=0)
        assert gc.removed == [] and "cannot list" in (gc.staging_error or "")
    finally:
        store.close()
        remove_store(name)


def test_quarantine_never_moves_a_blob_out_of_the_root_through_a_symlink(tmp_path: Path) -> None:
    from regstore.errors import StoreEscapeError

    root, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    data = b"a blob that verify found damaged"
    digest = str(digest_bytes(data))
    with open_store(str(root)) as store:
        with store.layer(digest).writer() as writer:
            writer.write(data)
            writer.commit(len(data))
        (root / "_regstore").mkdir(exist_ok=True)
        (root / "_regstore" / "quarantine").symlink_to(outside)
        with pytest.raises(StoreEscapeError):
            store.quarantine_blob(digest)
        assert store.blob_exists(digest)  # left in place
        with pytest.raises(StoreEscapeError):
            store.staging()
    assert list(outside.iterdir()) == []
