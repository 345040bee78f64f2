"""Many writers: 4 processes x 8 threads (``regstore --concurrency 8 sync FILE``) mirror
overlapping images into one filesystem store, and into one S3 prefix, for a bounded time,
while a ``regstore gc`` loop (default grace) runs beside them.

Every process works through rounds of images; in each round every image is wanted by two
processes, every blob by two to eight, and two base layers by every image of every round (and
by an old image the store already held, its blobs aged past the grace period on the
filesystem). Old garbage (an image whose tag was deleted, aged past the grace on the
filesystem; S3 cannot backdate an object) is the one thing gc may remove, and no writer wants
it again. A writer that reuses an old unreferenced blob while gc runs is the subject of the two
race tests at the end of this file (the pull claims the blob, gc decides under the same lock).

Afterwards: no damage (``regstore verify`` plus a re-hash of unreferenced blobs), every tag
that any run mirrored is present and names the registry's manifest, no process and no gc run
failed or hung (a run that does not finish in time is stopped with its threads' stacks), gc
removed only the old garbage, and the duplicate blob writes are counted twice — by the store's
commit evidence (the blobs each run reports it transferred) and by the registry's blob GETs
from offset 0 through a counting proxy — and must be zero: a second process that wants a blob
another holds waits for it (the blob's lock) instead of fetching it again.

Default size: 4 s of rounds per store kind; ``pytest --long``: 120 s. The figures are printed
as one ``MANY-WRITERS {json}`` line per store kind (``-rP``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regstore.client import Client
from regstore.engine import pull
from regstore.engine.gc import collect_garbage, delete_image
from regstore.engine.verify import verify
from regstore.errors import LayerAlreadyExistsError
from regstore.hookspecs import hookimpl
from tests.engine_support import seed_registry
from tests.support.fixtures import S3Bucket
from tests.support.images import BuiltImage, build_image, build_layer, random_blob, sha256_digest
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.support.soak import (
    CliRun,
    StorePlace,
    blob_fetches,
    cli_environment,
    file_place,
    run_cli,
    s3_place,
    verify_store,
)

KiB = 1 << 10
PROCESSES = 4
THREADS = 8
IMAGES_PER_ROUND = 8
#: (seconds of rounds, most rounds) by mode; the deadline is what normally ends the test.
SIZES = {"short": (4.0, 3), "long": (120.0, 1000)}
RUN_TIMEOUT = 300.0
AGE = 7200.0  # older than the default grace (one hour)


@functools.cache
def _base_layers() -> tuple[bytes, bytes]:
    return (
        build_layer({"base/os.bin": random_blob(512 * KiB, 9000)}),
        build_layer({"base/libs.bin": random_blob(256 * KiB, 9001)}),
    )


def _repo(i: int) -> str:
    return "mw/app" if i % 2 == 0 else "mw/tool"


def _tag(rnd: int, i: int) -> str:
    return f"r{rnd}-{i}"


@functools.cache
def _round(rnd: int) -> tuple[BuiltImage, ...]:
    """The images of one round: the base layers, a layer of the round, one shared by a pair
    of images, and one of their own."""
    mid = build_layer({"round/data.bin": random_blob(256 * KiB, 10_000 + rnd)})
    pairs = [
        build_layer({"pair/data.bin": random_blob(128 * KiB, 20_000 + rnd * 10 + p)})
        for p in range(IMAGES_PER_ROUND // 2)
    ]
    return tuple(
        build_image(
            seed=30_000 + rnd * 10 + i,
            media="oci" if i % 3 else "docker",
            shared_layers=[*_base_layers(), mid, pairs[i // 2]],
            layer_files=[{"own/data.bin": random_blob(64 * KiB, 40_000 + rnd * 10 + i)}],
        )
        for i in range(IMAGES_PER_ROUND)
    )


def _wanted(slot: int) -> list[int]:
    """The images of a round process ``slot`` mirrors: four, two shared with each neighbour."""
    return [(2 * slot + k) % IMAGES_PER_ROUND for k in range(4)]


@dataclass
class Figures:
    """What one soak did (printed for RELIABILITY.md)."""

    store: str
    processes: int = PROCESSES
    threads: int = THREADS
    seconds: float = 0.0
    sync_runs: int = 0
    rounds_done: int = 0
    images_mirrored: int = 0
    images_copied: int = 0
    blobs_committed: int = 0
    blob_fetches: int = 0
    blob_fetches_resumed: int = 0
    duplicate_writes: int = 0
    duplicate_fetches: int = 0
    gc_runs: int = 0
    gc_removed: int = 0
    gc_kept_young_max: int = 0
    verify_staging_reports: int = 0
    notes: list[str] = field(default_factory=list)


@pytest.fixture(params=["file", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def place(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StorePlace:
    if store_kind == "file":
        return file_place(tmp_path / "store")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return s3_place(bucket.endpoint_url, bucket.bucket, f"mw-{uuid.uuid4().hex[:8]}", lease=30)


def _age_blobs(root: Path) -> None:
    """Backdate every blob file of a filesystem store past the grace period."""
    past = time.time() - AGE
    for path in (root / "docker" / "registry" / "v2" / "blobs").rglob("data"):
        os.utime(path, (past, past))


def _prepare_store(place: StorePlace, registry: RegistryServer) -> set[str]:
    """The store before the writers start: an old image that keeps the base layers
    referenced, and old garbage (an image whose tag was deleted); returns the garbage."""
    old_keep = build_image(seed=50_001, shared_layers=_base_layers(), layers=1, layer_size=KiB)
    old_gone = build_image(seed=50_002, layers=2, layer_size=32 * KiB)
    seed_registry(registry.url, "old/keep", "1", old_keep)
    seed_registry(registry.url, "old/gone", "1", old_gone)
    with contextlib.closing(place.open()) as store:
        client = Client(registry.host)
        pull(client, store, "old/keep", "1")
        pull(client, store, "old/gone", "1")
        before = {b.digest for b in store.blobs()}
        delete_image(store, "old/gone", "1")
    garbage = set(old_gone.blobs) | {old_gone.manifest_digest}
    assert garbage <= before
    if place.kind == "file":
        _age_blobs(Path(place.url.removeprefix("file://")))
    return garbage


def _sync_file(path: Path, host: str, rnd: int, slot: int) -> Path:
    by_repo: dict[str, list[str]] = {}
    for i in _wanted(slot):
        by_repo.setdefault(_repo(i), []).append(_tag(rnd, i))
    repos = "".join(
        f"      - name: {repo}\n        tags: {json.dumps(tags)}\n"
        for repo, tags in by_repo.items()
    )
    path.write_text(
        f"sources:\n  - registry: {host}\n    plain_http: true\n    repositories:\n{repos}"
    )
    return path


def test_many_writers_and_gc(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    place: StorePlace,
    tmp_path: Path,
    long_mode: bool,
) -> None:
    duration, rounds = SIZES["long" if long_mode else "short"]
    figures = Figures(place.kind)
    seeded: set[int] = set()
    seed_lock = threading.Lock()

    def ensure_seeded(rnd: int) -> None:
        """Push a round's images to the registry when the first writer reaches it."""
        with seed_lock:
            if rnd not in seeded:
                for i, image in enumerate(_round(rnd)):
                    seed_registry(registry.url, _repo(i), _tag(rnd, i), image)
                seeded.add(rnd)

    ensure_seeded(0)
    old_garbage = _prepare_store(place, registry)
    proxy = fault_proxy_factory(registry)
    env = cli_environment(tmp_path / "home")

    failures: list[str] = []
    mirrored: set[tuple[str, str]] = set()
    transferred: Counter[str] = Counter()
    removed_by_gc: set[str] = set()
    lock = threading.Lock()
    writers_done = threading.Event()
    started = time.monotonic()
    deadline = started + duration

    def writer(slot: int) -> None:
        try:
            for rnd in range(rounds):
                if time.monotonic() > deadline:
                    return
                ensure_seeded(rnd)
                sync_file = _sync_file(tmp_path / f"sync-{slot}-{rnd}.yaml", proxy.host, rnd, slot)
                args = ["--store", place.url, "--json", "--concurrency", str(THREADS)]
                run = run_cli([*args, "sync", str(sync_file)], env, timeout=RUN_TIMEOUT)
                report = run.json() if run.stdout.strip() else {}
                with lock:
                    figures.sync_runs += 1
                    if run.process.returncode != 0 or not report.get("ok"):
                        failures.append(str(run))
                        return
                    for image in report["images"]:
                        i = int(image["source"].rpartition("-")[2])
                        mirrored.add((_repo(i), _tag(rnd, i)))
                        figures.images_mirrored += 1
                        figures.images_copied += image["status"] == "copied"
                        transferred.update((image["result"] or {}).get("transferred", []))
                    figures.rounds_done = max(figures.rounds_done, rnd + 1)
        except BaseException as exc:  # a hang (with stacks) or anything unexpected
            with lock:
                failures.append(f"writer {slot}: {exc}")

    def collector() -> None:
        try:
            while not writers_done.is_set():
                run = CliRun(["--store", place.url, "--json", "gc"], env)  # default grace
                run.wait(RUN_TIMEOUT)
                with lock:
                    figures.gc_runs += 1
                    if run.process.returncode != 0:
                        failures.append(f"gc failed beside the writers:\n{run}")
                        return
                    report = run.json()
                    removed_by_gc.update(b["digest"] for b in report["removed"])
                    figures.gc_kept_young_max = max(
                        figures.gc_kept_young_max, len(report["kept_young"])
                    )
                writers_done.wait(0.2)
        except BaseException as exc:
            with lock:
                failures.append(f"gc loop: {exc}")

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(PROCESSES)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writers_done.set()
    gc_thread.join()
    figures.seconds = round(time.monotonic() - started, 1)

    try:
        assert not failures, "\n\n".join(failures)
        assert figures.gc_runs >= 1 and figures.rounds_done >= 1

        # gc removed only the old garbage: nothing referenced, nothing a writer was writing.
        assert removed_by_gc <= old_garbage, removed_by_gc - old_garbage
        figures.gc_removed = len(removed_by_gc)
        if place.kind == "file":
            assert removed_by_gc == old_garbage  # aged: collected while the writers ran

        # No damage, no lost tag.
        outcome = verify_store(place, env)
        figures.verify_staging_reports = outcome.staging_reports
        assert outcome.ok, (outcome.damage, outcome.wrong_unreferenced)
        with contextlib.closing(place.open()) as store:
            for repo, tag in sorted(mirrored):
                i = int(tag.rpartition("-")[2])
                rnd = int(tag[1:].partition("-")[0])
                assert str(store.manifest(repo, tag).digest) == _round(rnd)[i].manifest_digest
            assert store.manifest("old/keep", "1") is not None

        # Duplicate writes. Commit evidence: every run reports the blobs it wrote; a blob
        # written by two runs was written twice. Fetch evidence: blob GETs from offset 0 (a
        # GET from a later offset resumes a cut body, it is not a second copy). Both must be
        # zero: the blob's lock (flock on the filesystem, a conditional-create lease on S3)
        # admits one writer, and every other process that wants the blob waits for its commit
        # and then skips it. Only a lost S3 lease (a writer stalled for longer than the lease,
        # 30 s) or gc removing a blob that is then wanted again could explain a second write;
        # neither may happen here (gc may only remove the old garbage nobody wants).
        figures.blobs_committed = sum(transferred.values())
        figures.duplicate_writes = sum(n - 1 for n in transferred.values() if n > 1)
        fetches = blob_fetches(proxy)
        figures.blob_fetches = len(fetches)
        figures.blob_fetches_resumed = sum(1 for f in fetches if f.start > 0)
        fresh = Counter(f.digest for f in fetches if f.start == 0 and f.status == 200)
        figures.duplicate_fetches = sum(n - 1 for n in fresh.values() if n > 1)
        assert figures.duplicate_writes == 0, {d: n for d, n in transferred.items() if n > 1}
        assert figures.duplicate_fetches == 0, {d: n for d, n in fresh.items() if n > 1}
        assert set(fresh) == set(transferred)  # every blob written was fetched once, and used
    finally:
        print("MANY-WRITERS " + json.dumps(asdict(figures), sort_keys=True))


class _Gate:
    """Where a store wrapper holds gc: ``paused`` once it waits, until the test sets ``go``."""

    def __init__(self) -> None:
        self.paused = threading.Event()
        self.go = threading.Event()

    def hold(self) -> None:
        self.paused.set()
        assert self.go.wait(60)


class _PauseAfterDeciding(_Gate):
    """Holds gc after it has listed the blobs and read every manifest (it lists the staging
    area next)."""

    @hookimpl(wrapper=True)
    def regstore_store_list_staging(self) -> Generator[None, list[Any], list[Any]]:
        self.hold()
        return (yield)


def _race_setup(registry: RegistryServer, tmp_path: Path) -> tuple[Path, bytes, BuiltImage]:
    """A file store holding the blobs of a deleted image, aged past gc's grace: a base layer
    that a new image in the registry (``race/new:1``) shares, and the old image's own."""
    base = build_layer({"base/data.bin": random_blob(64 * KiB, 60_000)})
    old = build_image(seed=60_001, shared_layers=[base], layers=0)
    new = build_image(seed=60_002, shared_layers=[base], layers=1, layer_size=KiB)
    seed_registry(registry.url, "race/old", "1", old)
    seed_registry(registry.url, "race/new", "1", new)
    root = tmp_path / "store"
    with contextlib.closing(file_place(root).open()) as store:
        pull(Client(registry.host), store, "race/old", "1")
        delete_image(store, "race/old", "1")
    _age_blobs(root)  # the old image's blobs are garbage, older than the grace period
    return root, base, new


def _pull_beside_a_deciding_gc(
    registry: RegistryServer, root: Path, repo: str
) -> tuple[Any, Any, list[str]]:
    """Pull ``repo:1`` while a gc (default grace) that has already decided what is garbage
    waits; then let gc finish. Returns the pull's result, gc's report and verify's problems."""
    store = file_place(root).open()
    pause = _PauseAfterDeciding()
    gc_store = file_place(root).open()
    gc_store.add_wrapper(pause)
    reports: list[Any] = []
    gc = threading.Thread(target=lambda: reports.append(collect_garbage(gc_store)))
    gc.start()
    try:
        assert pause.paused.wait(60)
        result = pull(Client(registry.host), store, repo, "1")
    finally:
        pause.go.set()
        gc.join(60)
    problems = [str(p) for p in verify(store).problems]
    store.close()
    gc_store.close()
    (report,) = reports
    return result, report, problems


def test_gc_keeps_an_old_blob_that_a_running_pull_reuses(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # gc has decided (the base layer is unreferenced and old) when a pull reuses the layer: the
    # pull's claim dates it as used, and gc, looking again under the claim's lock, keeps it
    root, base, _ = _race_setup(registry, tmp_path)
    result, report, problems = _pull_beside_a_deciding_gc(registry, root, "race/new")
    assert sha256_digest(base) in result.skipped  # reused, not fetched again
    assert sha256_digest(base) in [b.digest for b in report.kept_young]
    assert report.removed  # the old image's own config and manifest went
    assert sha256_digest(base) not in [b.digest for b in report.removed]
    assert problems == []


def test_gc_keeps_an_old_manifest_that_a_running_pull_writes_again(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # the deleted image itself pulled again: its manifest's bytes are still there as garbage
    # (and its config and layer): writing the manifest claims them too, and gc keeps them all
    root, _, _ = _race_setup(registry, tmp_path)
    result, report, problems = _pull_beside_a_deciding_gc(registry, root, "race/old")
    assert result.transferred == []  # everything reused
    assert report.removed == []
    assert str(result.manifest_digest) in [b.digest for b in report.kept_young]
    assert problems == []


class _PauseInDelete(_Gate):
    """Holds gc inside its deletion of one blob (under the claim lock, before the delete)."""

    def __init__(self, digest: str) -> None:
        super().__init__()
        self.digest = digest

    @hookimpl(wrapper=True)
    def regstore_store_delete_blob(self, digest: str) -> Generator[None, None, None]:
        if digest == self.digest:
            self.hold()
        return (yield)


class _SeesPresent:
    """Notes when a writer of one blob is refused because the blob is already there."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.seen = threading.Event()

    @hookimpl(wrapper=True)
    def regstore_store_blob_writer(self, digest: str) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except LayerAlreadyExistsError:
            if digest == self.digest:
                self.seen.set()
            raise


def test_a_pull_fetches_again_a_blob_gc_deleted_before_its_claim(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # the other order: gc decided to delete the base layer (under the claim lock) just as a
    # pull found it present; the pull's claim waits for gc, finds the layer gone, fetches it
    root, base, new = _race_setup(registry, tmp_path)
    digest = sha256_digest(base)
    pause, sees = _PauseInDelete(digest), _SeesPresent(digest)
    gc_store = file_place(root).open()
    gc_store.add_wrapper(pause)
    store = file_place(root).open()
    store.add_wrapper(sees)
    gc = threading.Thread(target=collect_garbage, args=(gc_store,))
    gc.start()
    results: list[Any] = []
    puller = threading.Thread(
        target=lambda: results.append(pull(Client(registry.host), store, "race/new", "1"))
    )
    try:
        assert pause.paused.wait(60)  # gc holds the claim lock, about to delete the layer
        puller.start()
        assert sees.seen.wait(60)  # the pull found the layer present, and now claims it
    finally:
        pause.go.set()
        gc.join(60)
        if puller.ident is not None:
            puller.join(60)
    (result,) = results
    assert digest in result.transferred  # fetched again, not reused
    assert str(store.manifest("race/new", "1").digest) == new.manifest_digest
    check = verify(store)
    store.close()
    gc_store.close()
    assert check.ok, [str(p) for p in check.problems]
