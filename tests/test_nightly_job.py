"""A platform engineer's nightly job, written with the Python API only (issue 17).

``nightly_job`` is what a user writes: it names every type it touches, imports all of them
from ``regstore``, and needs no ``assert x is not None`` on a success path. The test seeds a
real docker-registry, runs the job, and checks what it reports; another test runs
``mypy --strict`` on this file, so an export or a type that regresses fails here.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from regstore import (
    BatchResult,
    BlobInfo,
    BlobState,
    BlobStatus,
    Client,
    Digest,
    EventKind,
    EventSink,
    FilterError,
    Image,
    ImageManifestNotFoundError,
    ImageOutcome,
    Manifest,
    NotFoundError,
    ObjectStore,
    Problem,
    RegistryImage,
    RegstoreError,
    StoreImage,
    TagFilter,
    TransferEvent,
    TransferResult,
    UsageError,
    VerifyReport,
    open_store,
    pull,
    push,
    transfer_many,
    verify,
)
from regstore.testing.builders import oci_image, oci_index, write_image

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_TAGS = ("1.0", "1.1", "1.2-rc1", "2.0")


class Registry(Protocol):
    """What the job needs of the registry fixture."""

    @property
    def host(self) -> str: ...


# -- the job -------------------------------------------------------------------------------------


class Progress:
    """A progress callback: the engine calls it from worker threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_done = 0
        self.verified: set[str] = set()
        self.operations: set[str] = set()

    def __call__(self, event: TransferEvent) -> None:
        with self._lock:
            self.operations.add(event.operation)
            if event.kind is EventKind.PROGRESS:
                self.bytes_done += event.nbytes
            elif event.kind is EventKind.VERIFIED:
                self.verified.add(event.digest)


@dataclass
class NightlyReport:
    selected: list[str]
    pulled: list[TransferResult]
    arm64: TransferResult
    store_tags: dict[str, list[str]]
    store_blobs: list[BlobInfo]
    layer_status: BlobStatus
    backup: BatchResult
    verify_before: VerifyReport
    verify_after: VerifyReport
    damaged: Digest
    errors: list[str] = field(default_factory=list)


def _corrupt_one_blob(root: Path, digest: Digest) -> None:
    """Flip a byte of a stored blob behind the store's back (the disk went bad)."""
    (path,) = root.glob(f"**/blobs/{digest.algorithm}/*/{digest.hex}/data")
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def nightly_job(registry: str, work: Path, progress: Progress) -> NightlyReport:
    """Mirror the release tags of team/app, one platform of team/multi, back everything up."""
    client = Client(registry)
    events: EventSink = progress
    memory = open_store(f"memory://{work.name}")
    disk_root = work / "mirror"
    disk: ObjectStore = open_store(f"file://{disk_root}")

    # tags: releases of 1.x, no release candidates
    wanted = TagFilter(include=(r"^1\.",), exclude=("-rc",))
    selected = wanted.select(client.list_image_tags("team/app"))

    pulled: list[TransferResult] = []
    for tag in selected:
        pulled.append(pull(client, memory, "team/app", tag, events=events))
        pulled.append(pull(client, disk, "team/app", tag, dest_name="mirror/app", events=events))

    # one platform of an index: a partial index in the store, its digest kept
    arm64 = pull(client, disk, "team/multi", "latest", platforms=["linux/arm64"], events=events)

    # inspect the store
    store_tags = {repo: disk.tags(repo) for repo in disk.repositories()}
    top: Manifest = disk.manifest("mirror/app", selected[-1])
    first_layer = top.layers[0]
    layer_status = disk.layer(first_layer.digest).status()

    # back up every tag of every repository, in one batch
    jobs: list[tuple[Image, Image]] = [
        (RegistryImage(client, repo, tag), RegistryImage(client, f"backup/{repo}", tag))
        for repo in ("team/app", "team/multi")
        for tag in client.list_image_tags(repo)
    ]
    backup = transfer_many(jobs, events=events)

    verify_before = verify(disk, events=events)
    _corrupt_one_blob(disk_root, first_layer.digest)
    verify_after = verify(disk, quarantine=False)

    report = NightlyReport(
        selected=selected,
        pulled=pulled,
        arm64=arm64,
        store_tags=store_tags,
        store_blobs=disk.blobs(),
        layer_status=layer_status,
        backup=backup,
        verify_before=verify_before,
        verify_after=verify_after,
        damaged=first_layer.digest,
    )

    # error handling with the exception tree
    try:
        pull(client, memory, "team/app", "9.9")
    except ImageManifestNotFoundError as exc:
        report.errors.append(f"not-found:{isinstance(exc, NotFoundError)}")
    try:
        TagFilter(semver="not a range")
    except FilterError as exc:
        report.errors.append(f"filter:{isinstance(exc, UsageError)}")
    try:
        push(client, memory, "nothing/here", "1.0")
    except RegstoreError as exc:
        report.errors.append(f"push:{type(exc).__name__}")
    failed: list[ImageOutcome] = transfer_many(
        [(RegistryImage(client, "team/absent", "1.0"), StoreImage(memory, "absent"))]
    ).by_status("failed")
    for outcome in failed:
        report.errors.append(f"batch:{isinstance(outcome.exception, NotFoundError)}")
    return report


# -- the tests -----------------------------------------------------------------------------------


def _seed(registry: str) -> None:
    """team/app at four tags and team/multi, a three-platform index, pushed with regstore."""
    client = Client(registry)
    staging = open_store("memory://nightly-seed")
    for i, tag in enumerate(APP_TAGS):
        write_image(staging, "team/app", tag, oci_image(layers=2, layer_size=2048, seed=40 + i))
        push(client, staging, "team/app", tag)
    children = [oci_image(layers=1, layer_size=1024, seed=50 + i) for i in range(3)]
    write_image(staging, "team/multi", "latest", oci_index(children))
    push(client, staging, "team/multi", "latest")


def test_nightly_job_against_the_real_registry(registry: Registry, tmp_path: Path) -> None:
    _seed(registry.host)
    progress = Progress()

    report = nightly_job(registry.host, tmp_path, progress)

    assert report.selected == ["1.0", "1.1"]
    assert len(report.pulled) == 4
    for result in report.pulled:
        assert result.manifest_digest.startswith("sha256:")  # a Digest, no Optional
        assert all(d.algorithm == "sha256" for d in result.transferred + result.skipped)
    # the second pull of each tag (into the other store) moved its blobs too
    assert report.pulled[0].manifest_digest == report.pulled[1].manifest_digest
    assert progress.bytes_done > 0 and progress.verified
    assert report.arm64.partial
    assert report.arm64.manifests[-1] == report.arm64.manifest_digest
    assert len(report.arm64.manifests) == 2  # the arm64 child and the index
    assert report.store_tags == {"mirror/app": ["1.0", "1.1"], "team/multi": ["latest"]}
    assert report.layer_status.state is BlobState.COMPLETE
    assert report.damaged in {b.digest for b in report.store_blobs}

    assert report.backup.ok, report.backup.as_dict()
    assert len(report.backup.by_status("copied")) == len(APP_TAGS) + 1
    assert sorted(r.destination.split("/", 1)[1] for r in report.backup.results) == [
        *(f"backup/team/app:{t}" for t in sorted(APP_TAGS)),
        "backup/team/multi:latest",
    ]
    assert "copy" in progress.operations and "pull" in progress.operations

    assert report.verify_before.ok, [str(p) for p in report.verify_before.problems]
    problems: list[Problem] = report.verify_after.problems
    assert [(p.kind, p.subject) for p in problems] == [("damaged-blob", report.damaged)]
    assert problems[0].quarantined is None  # quarantine=False only reports

    assert report.errors == [
        "not-found:True",
        "filter:True",
        "push:ImageManifestNotFoundError",
        "batch:True",
    ]


def test_nightly_job_passes_mypy_strict() -> None:
    """Every name the job uses is exported and typed well enough for ``mypy --strict``."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", __file__],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_by_status_refuses_an_unknown_status() -> None:
    batch = BatchResult([ImageOutcome("a", "b", "cancelled")])
    assert batch.by_status("cancelled") == batch.outcomes
    with pytest.raises(ValueError, match="unknown image status 'fail'"):
        batch.by_status("fail")  # type: ignore[arg-type]
