"""Kill loops: the real CLI (``python -m regstore``) is SIGKILLed at random points of pull,
sync, push and gc, into (and out of) a filesystem store and an S3 store on moto.

Every kill is followed by ``regstore verify --json`` plus a re-hash of the blobs no manifest
references yet: no visible blob may have a wrong digest and no tag may point at missing
content (staging a killed writer left behind is reported by newer verifies and is not damage:
it is never visible). The next run of the same command is the rerun: it must not fetch a blob
the store already holds, must resume every staged blob exactly where its staging ends, and so
fetches at most the bytes the store does not have yet. The loop ends with a run that completes.

Where a kill lands is chosen by a seeded RNG: mostly when the registry has sent a random
number of the bytes still missing (so the kill lands mid-blob), otherwise after a random delay
(start-up, manifests, the tag). gc is killed when a random number of its garbage blobs are
gone. The default size is short (10 kills in all); ``pytest --long`` runs >= 50 per store kind
(RELIABILITY.md). Each test prints one ``KILL-LOOP {json}`` line with its figures (``-rP``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import requests

from regstore import ObjectStore
from regstore.client import Client
from regstore.engine import pull
from regstore.engine.gc import delete_image, referenced_digests
from regstore.testing.builders import random_bytes, write_blob
from tests.engine_support import blob_digest_in_registry, seed_registry
from tests.support.fixtures import S3Bucket
from tests.support.images import BuiltImage, build_image, random_blob
from tests.support.long import is_long
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.support.soak import (
    CliRun,
    StorePlace,
    blob_fetches,
    blob_uploads,
    cli_environment,
    file_place,
    run_cli,
    s3_place,
    snapshot_blobs,
    verify_store,
)

MiB = 1 << 20
#: Kills per operation: the short default, and ``--long`` (>= 50 per store kind).
SHORT_KILLS = {"pull": 2, "sync": 1, "push": 1, "gc": 1}
LONG_KILLS = {"pull": 15, "sync": 15, "push": 10, "gc": 10}
#: A run that neither finishes nor gets killed in this time is stuck.
RUN_TIMEOUT = 240.0
#: Share of kills placed by elapsed time rather than by bytes moved.
TIME_KILLS = 0.25


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The kill count is a parameter (visible in the test id), never a skip: small by
    default, large with ``--long``."""
    if "kills" in metafunc.fixturenames:
        op = metafunc.function.__name__.removeprefix("test_kill_loop_")
        table = LONG_KILLS if is_long(metafunc.config) else SHORT_KILLS
        metafunc.parametrize("kills", [table[op]], ids=[f"{table[op]}kills"])


@functools.cache
def _images() -> tuple[BuiltImage, BuiltImage]:
    """Two images sharing a base layer; ``a``'s 6 MiB layer takes two S3 staging parts."""
    base = build_image(layer_files=[{"base/data.bin": random_blob(3 * MiB // 2, 1100)}]).layers[0]
    a = build_image(
        seed=1101,
        media="docker",
        shared_layers=[base],
        layer_files=[{"a/big.bin": random_blob(6 * MiB, 1101)}, {"a/small": random_blob(MiB, 2)}],
    )
    b = build_image(
        seed=1102,
        media="oci",
        shared_layers=[base],
        layer_files=[{"b/data.bin": random_blob(5 * MiB // 2, 1102)}],
    )
    return a, b


IMAGES = {"kill/a": 0, "kill/b": 1}


def _image(name: str) -> BuiltImage:
    return _images()[IMAGES[name]]


def _sizes() -> dict[str, int]:
    out: dict[str, int] = {}
    for image in _images():
        out.update({d: len(b) for d, b in image.blobs.items()})
    return out


@dataclass
class Figures:
    """What one loop did (printed for RELIABILITY.md)."""

    op: str
    store: str
    seed: int
    kills: int = 0
    kills_by_bytes: int = 0
    kills_by_time: int = 0
    kills_mid_work: int = 0
    runs_completed: int = 0
    cycles: int = 0
    verifies: int = 0
    verify_damage: int = 0
    verify_staging_reports: int = 0
    bytes_needed: int = 0
    bytes_moved: int = 0
    bytes_refetched: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def report(self) -> None:
        figures = asdict(self)
        # fetched (or uploaded) but not yet persisted when a kill came: moved again later
        figures["bytes_lost_at_kills"] = self.bytes_moved - self.bytes_needed
        print("KILL-LOOP " + json.dumps(figures, sort_keys=True))


@dataclass
class Loop:
    """Shared state of one kill loop."""

    op: str
    make_place: Callable[[int], StorePlace]
    env: dict[str, str]
    proxy: FaultProxy
    rng: random.Random
    figures: Figures
    place: StorePlace = field(init=False)
    _by_bytes: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.place = self.make_place(0)

    def new_cycle(self) -> None:
        self.figures.cycles += 1
        self.place = self.make_place(self.figures.cycles)

    def kill_condition(
        self, run: CliRun, remaining: int, progress: Callable[[], int]
    ) -> Callable[[], bool]:
        """Kill after ``progress()`` passes a random share of ``remaining``, or (sometimes, and
        always when nothing remains to move) after a random delay."""
        if remaining > 0 and self.rng.random() >= TIME_KILLS:
            threshold = self.rng.randrange(remaining)
            self._by_bytes = True
            return lambda: progress() > threshold
        # a run's length: S3 runs are slower (moto, lease waits after a kill)
        delay = self.rng.uniform(0.0, 2.0 if self.place.kind == "file" else 4.0)
        self._by_bytes = False
        return lambda: time.monotonic() - run.started >= delay

    def killed(self, *, mid_work: bool) -> None:
        """Count a kill that landed (by the rule :meth:`kill_condition` chose last)."""
        self.figures.kills += 1
        if self._by_bytes:
            self.figures.kills_by_bytes += 1
        else:
            self.figures.kills_by_time += 1
        if mid_work:
            self.figures.kills_mid_work += 1

    def check_after_kill(self) -> None:
        outcome = verify_store(self.place, self.env)
        self.figures.verifies += 1
        self.figures.verify_staging_reports += outcome.staging_reports
        if not outcome.ok:
            self.figures.verify_damage += 1
        assert outcome.ok, (
            f"damage after kill {self.figures.kills} of {self.op} ({self.place.url}): "
            f"{outcome.damage} wrong unreferenced blobs: {outcome.wrong_unreferenced}"
        )


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(params=["file", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_place(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[int], StorePlace]:
    """``make(cycle)``: a fresh, empty store of the kind (a new directory or S3 prefix)."""
    if store_kind == "file":
        return lambda cycle: file_place(tmp_path / f"store-{cycle}")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    run = uuid.uuid4().hex[:8]
    return lambda cycle: s3_place(bucket.endpoint_url, bucket.bucket, f"{run}/c{cycle}")


@pytest.fixture
def seeded(registry: RegistryServer) -> RegistryServer:
    for name in IMAGES:
        seed_registry(registry.url, name, "1", _image(name))
    return registry


@pytest.fixture
def loop_factory(
    seeded: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    make_place: Callable[[int], StorePlace],
    store_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[str], Loop]]:
    loops: list[Loop] = []
    started = time.monotonic()

    def make(op: str) -> Loop:
        seed = sum(map(ord, f"{op}-{store_kind}")) * 7919  # fixed: a failure replays
        loop = Loop(
            op,
            make_place,
            cli_environment(tmp_path / "home"),
            fault_proxy_factory(seeded),
            random.Random(seed),
            Figures(op, store_kind, seed),
        )
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.figures.seconds = round(time.monotonic() - started, 1)
        loop.figures.report()


# -- registry -> store: pull and sync ----------------------------------------------------------


def _fetch_step(loop: Loop, args: list[str], names: list[str], *, kill: bool) -> bool:
    """One run of a registry → store command; True if it was killed.

    Checks the rerun property on the traffic of this run: no blob the store held complete was
    fetched, every staged blob was resumed at the end of its staging, and so no more bytes were
    fetched than the store was missing.
    """
    sizes = _sizes()
    digests = sorted({d for n in names for d in _image(n).blobs})
    with contextlib.closing(loop.place.open()) as store:
        snap = snapshot_blobs(store, digests)
    remaining = sum(sizes[d] - snap.staged.get(d, 0) for d in digests if d not in snap.complete)
    loop.proxy.clear_records()
    run = CliRun(["--store", loop.place.url, "--json", *args], loop.env)
    moved = lambda: sum(f.nbytes for f in blob_fetches(loop.proxy))  # noqa: E731
    if kill:
        killed = run.kill_when(loop.kill_condition(run, remaining, moved), timeout=RUN_TIMEOUT)
    else:
        run.wait(RUN_TIMEOUT)
        killed = False
    fetches = blob_fetches(loop.proxy)
    refetched_complete = [f for f in fetches if f.digest in snap.complete]
    assert not refetched_complete, f"finished blobs fetched again: {refetched_complete}"
    first: dict[str, int] = {}
    for f in fetches:
        first.setdefault(f.digest, f.start)
    for digest, start in first.items():
        staged = snap.staged.get(digest, 0)
        loop.figures.bytes_refetched += max(0, staged - start)
        assert start == staged, f"{digest}: resumed at {start}, {staged} bytes were staged"
    total = sum(f.nbytes for f in fetches)
    loop.figures.bytes_moved += total
    assert total <= remaining, f"fetched {total} bytes, only {remaining} were missing"
    if killed:
        loop.killed(mid_work=total > 0)
        loop.check_after_kill()
    else:
        assert run.process.returncode == 0, str(run)
        loop.figures.runs_completed += 1
    return killed


def _check_images(place: StorePlace, names: list[str]) -> None:
    with contextlib.closing(place.open()) as store:
        for name in names:
            image = _image(name)
            assert store.manifest(name, "1").raw == image.manifest_bytes
            for digest, data in image.blobs.items():
                with store.layer(digest).reader() as reader:
                    assert reader.read() == data


def _fetch_loop(loop: Loop, kills: int, steps: list[tuple[list[str], list[str]]]) -> None:
    """Run the cycle's steps in order, killing runs, until ``kills`` kills; then finish."""
    needed = sum(len(b) for b in {d: b for i in _images() for d, b in i.blobs.items()}.values())
    step = 0
    loop.figures.bytes_needed = needed
    while loop.figures.kills < kills:
        args, names = steps[step]
        if not _fetch_step(loop, args, names, kill=True):
            step += 1
            if step == len(steps):  # the cycle is complete: start over in a fresh store
                _check_images(loop.place, [n for _, ns in steps for n in ns])
                loop.new_cycle()
                loop.figures.bytes_needed += needed
                step = 0
    for args, names in steps[step:]:  # the rerun that completes
        assert not _fetch_step(loop, args, names, kill=False)
    outcome = verify_store(loop.place, loop.env)
    assert outcome.ok and outcome.report["ok"] in (True, False), outcome
    assert outcome.report["tags_checked"] == 2
    _check_images(loop.place, [n for _, ns in steps for n in ns])
    # Across the loop, bytes fetched beyond what the images needed were in flight at a kill.
    assert loop.figures.bytes_refetched == 0


def test_kill_loop_pull(loop_factory: Callable[[str], Loop], kills: int) -> None:
    loop = loop_factory("pull")
    host = loop.proxy.host
    steps = [(["pull", f"{host}/{name}:1"], [name]) for name in IMAGES]
    _fetch_loop(loop, kills, steps)


def test_kill_loop_sync(loop_factory: Callable[[str], Loop], kills: int, tmp_path: Path) -> None:
    loop = loop_factory("sync")
    sync_file = tmp_path / "mirror.yaml"
    repos = "".join(f"      - name: {name}\n        tags: ['1']\n" for name in IMAGES)
    sync_file.write_text(
        f"sources:\n  - registry: {loop.proxy.host}\n    plain_http: true\n"
        f"    repositories:\n{repos}"
    )
    _fetch_loop(loop, kills, [(["sync", str(sync_file)], list(IMAGES))])


# -- store -> registry: push -------------------------------------------------------------------


def _registry_has_blob(registry: RegistryServer, repo: str, digest: str) -> bool:
    return requests.head(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=30).status_code == 200


def _check_registry_tag(registry: RegistryServer, repo: str, image: BuiltImage) -> bool:
    """If ``repo:1`` exists, it is the image and every blob it names is there; True if so."""
    reply = requests.get(
        f"{registry.url}/v2/{repo}/manifests/1",
        headers={"Accept": image.manifest_media_type},
        timeout=30,
    )
    if reply.status_code == 404:
        return False
    assert reply.status_code == 200, reply.text
    assert reply.content == image.manifest_bytes
    missing = [d for d in image.blobs if not _registry_has_blob(registry, repo, d)]
    assert not missing, f"{repo}:1 is tagged but the registry lacks {missing}"
    return True


def _push_step(loop: Loop, registry: RegistryServer, name: str, dest: str, *, kill: bool) -> bool:
    """One ``regstore push``; True if it was killed. No blob the destination already had may
    be uploaded again, and no more bytes uploaded than it was missing."""
    image = _image(name)
    present = {d for d in image.blobs if _registry_has_blob(registry, dest, d)}
    remaining = sum(len(b) for d, b in image.blobs.items() if d not in present)
    loop.proxy.clear_records()
    args = [
        "--store",
        loop.place.url,
        "--json",
        "push",
        f"store:{name}:1",
        f"{loop.proxy.host}/{dest}:1",
    ]
    run = CliRun(args, loop.env)
    uploaded = lambda: sum(n for _, n in blob_uploads(loop.proxy))  # noqa: E731
    if kill:
        killed = run.kill_when(loop.kill_condition(run, remaining, uploaded), timeout=RUN_TIMEOUT)
    else:
        run.wait(RUN_TIMEOUT)
        killed = False
    uploads = blob_uploads(loop.proxy)
    again = [d for d, _ in uploads if d in present]
    assert not again, f"blobs the registry had were uploaded again: {again}"
    total = sum(n for _, n in uploads)
    loop.figures.bytes_moved += total
    assert total <= remaining, f"uploaded {total} bytes, the registry missed only {remaining}"
    if killed:
        loop.killed(mid_work=total > 0)
        loop.check_after_kill()  # the source store: a push only reads it
        _check_registry_tag(registry, dest, image)
    else:
        assert run.process.returncode == 0, str(run)
        loop.figures.runs_completed += 1
        assert _check_registry_tag(registry, dest, image)
    return killed


def _dest(loop: Loop, name: str) -> str:
    """This cycle's destination repository for ``name`` (a new one once all were pushed)."""
    return f"pushed/c{loop.figures.cycles}-{name.rpartition('/')[2]}"


def test_kill_loop_push(
    loop_factory: Callable[[str], Loop], kills: int, seeded: RegistryServer
) -> None:
    loop = loop_factory("push")
    for name in IMAGES:  # the source store (not killed)
        done = run_cli(["--store", loop.place.url, "pull", f"{seeded.host}/{name}:1"], loop.env)
        assert done.process.returncode == 0, str(done)
    needed = sum(len(b) for i in _images() for b in i.blobs.values())  # per repository
    loop.figures.bytes_needed = needed
    names = list(IMAGES)
    step = 0
    while loop.figures.kills < kills:
        name = names[step]
        if not _push_step(
            loop, seeded, name, f"pushed/c{loop.figures.cycles}-{name[5:]}", kill=True
        ):
            step += 1
            if step == len(names):  # every image is in this cycle's repositories: new ones
                loop.figures.cycles += 1
                loop.figures.bytes_needed += needed
                step = 0
    for name in names[step:]:
        assert not _push_step(
            loop, seeded, name, f"pushed/c{loop.figures.cycles}-{name[5:]}", kill=False
        )
    for name in names:
        dest = f"pushed/c{loop.figures.cycles}-{name[5:]}"
        for digest in _image(name).blobs:
            assert blob_digest_in_registry(seeded.url, dest, digest) == digest


# -- gc ----------------------------------------------------------------------------------------


def _make_garbage(store: ObjectStore, registry: RegistryServer, count: int, seed: int) -> set[str]:
    """Small unreferenced blobs, plus ``kill/b`` pulled and deleted again: its own blobs are
    garbage, its base layer is still referenced by ``kill/a``."""
    for i in range(count):
        write_blob(store, random_bytes(2048 + i, seed * 10_000 + i))
    pull(Client(registry.host), store, "kill/b", "1")
    delete_image(store, "kill/b", "1")
    return {b.digest for b in store.blobs()} - referenced_digests(store)


def _present(place: StorePlace) -> set[str]:
    with contextlib.closing(place.open()) as store:
        return {b.digest for b in store.blobs()}


def test_kill_loop_gc(
    loop_factory: Callable[[str], Loop], kills: int, seeded: RegistryServer, store_kind: str
) -> None:
    loop = loop_factory("gc")
    done = run_cli(["--store", loop.place.url, "pull", f"{seeded.host}/kill/a:1"], loop.env)
    assert done.process.returncode == 0, str(done)
    count = 40 if store_kind == "file" else 24  # enough that a kill can land mid-collection
    with contextlib.closing(loop.place.open()) as store:
        garbage = _make_garbage(store, seeded, count, 0)
        kept = referenced_digests(store)
    while True:
        before = garbage & _present(loop.place)
        if not before:  # a kill came after the last deletion: new garbage, a new cycle
            loop.figures.cycles += 1
            with contextlib.closing(loop.place.open()) as store:
                garbage = _make_garbage(store, seeded, count, loop.figures.cycles)
            before = garbage & _present(loop.place)
        run = CliRun(["--store", loop.place.url, "--json", "gc", "--grace", "0"], loop.env)
        if loop.figures.kills < kills:
            removed = lambda before=before: len(before - _present(loop.place))  # noqa: E731
            killed = run.kill_when(
                loop.kill_condition(run, len(before), removed), timeout=RUN_TIMEOUT, interval=0.01
            )
        else:
            run.wait(RUN_TIMEOUT)
            killed = False
        after = _present(loop.place)
        assert kept <= after, f"gc removed referenced blobs: {kept - after}"
        if killed:
            loop.killed(mid_work=bool(before & after and before - after))
            loop.check_after_kill()
            continue
        assert run.process.returncode == 0, str(run)
        loop.figures.runs_completed += 1
        assert not garbage & after, "a completed gc left garbage"
        assert {b["digest"] for b in run.json()["removed"]} == before
        if loop.figures.kills >= kills:
            break
        loop.figures.cycles += 1
        with contextlib.closing(loop.place.open()) as store:
            garbage = _make_garbage(store, seeded, count, loop.figures.cycles)
    outcome = verify_store(loop.place, loop.env)
    assert outcome.ok and outcome.report["ok"], outcome
    assert _present(loop.place) == kept
    _check_images(loop.place, ["kill/a"])
