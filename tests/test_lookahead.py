"""A batch learns what its destinations hold before its images start (``engine/lookahead.py``):
an unchanged image costs one HEAD and nothing else, and every change is still seen, whatever
the bulk answers missed — against the real registry behind a fault proxy, into a file store.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage, transfer_many
from regstore.engine.lookahead import BULK_MIN, Known, look_ahead, unchanged
from regstore.engine.places import register_place
from regstore.engine.verify import verify
from regstore.store import ObjectStore
from regstore.testing.builders import Built, build_image
from tests.support.cli import blob_path, flip_byte
from tests.support.engine import seed_registry
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer
from tests.test_client_registry import push_built

TAGS = [f"t{i}" for i in range(BULK_MIN + 2)]


def _seed(registry: RegistryServer, seed: int = 900) -> dict[str, Built]:
    images = {}
    for i, tag in enumerate(TAGS):
        images[tag] = build_image(seed=seed + i, layers=1, layer_size=1024)
        seed_registry(registry.url, "la/app", tag, images[tag])
    return images


@contextlib.contextmanager
def _mirrored(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
    seed: int,
) -> Iterator[tuple[dict[str, Built], FaultProxy, Client, ObjectStore]]:
    """TAGS seeded into ``la/app`` and mirrored once into a file store, through a proxy:
    (the images, the proxy, its client, the store)."""
    images = _seed(registry, seed=seed)
    proxy = fault_proxy_factory(registry)
    client = _client(proxy)
    with open_store(str(tmp_path / "mirror")) as store:
        _sync(client, store)
        yield images, proxy, client, store


def _fake_images(answer: Callable[[str, str], str | None]) -> Any:
    """A kind of image (registered as a place) whose every digest question, by the image's name
    and the reference, ``answer`` answers."""

    @dataclasses.dataclass(frozen=True)
    class Fake:
        name: str
        reference: str | None = None

    class FakePlace:
        def __init__(self, image: Fake) -> None:
            self.name = image.name

        def manifest_digest(self, reference: str) -> str | None:
            return answer(self.name, reference)

    register_place(Fake, source=FakePlace, sink=FakePlace)
    return Fake


def _client(proxy: FaultProxy) -> Client:
    return Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=lambda s: None)


def _sync(client: Client, store: ObjectStore) -> list[tuple[str, str]]:
    jobs = [(RegistryImage(client, "la/app", tag), StoreImage(store, "la/app")) for tag in TAGS]
    result = transfer_many(jobs, concurrency=2)
    return [(o.destination, o.status) for o in result.outcomes]


def test_a_re_sync_asks_one_head_per_tag_and_still_sees_every_change(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    _seed(registry)
    proxy = fault_proxy_factory(registry)
    client = _client(proxy)
    with open_store(str(tmp_path / "mirror")) as store:
        assert {status for _, status in _sync(client, store)} == {"copied"}

        proxy.clear_records()
        assert {status for _, status in _sync(client, store)} == {"skipped"}
        for tag in TAGS:
            assert proxy.count("HEAD", rf"/manifests/{tag}$") == 1
        assert proxy.count("GET") == 0

        # a tag moved at the source, one lost at the destination, one pointing elsewhere there
        moved = build_image(seed=990, layers=1, layer_size=1024)
        seed_registry(registry.url, "la/app", "t2", moved)
        store.delete_tag("la/app", "t4")
        elsewhere = store.manifest("la/app", "t0")
        store.write_manifest("la/app", "t5", elsewhere)
        proxy.clear_records()
        outcomes = dict(_sync(client, store))
        assert outcomes == {
            f"store:la/app:{tag}": "copied" if tag in ("t2", "t4", "t5") else "skipped"
            for tag in TAGS
        }
        assert store.resolve("la/app", "t2") == moved.manifest_digest
        assert store.resolve("la/app", "t5") != store.resolve("la/app", "t0")
        # what was learned ahead was not asked again
        for tag in TAGS:
            assert proxy.count("HEAD", rf"/manifests/{tag}$") == (0 if tag == "t4" else 1)


def test_whatever_the_bulk_answers_missed_each_image_asks_itself(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    with _mirrored(registry, fault_proxy_factory, tmp_path, 920) as (images, proxy, client, store):
        # every HEAD after the first fails once: the bulk answers stop at the first failure
        proxy.override_status("HEAD", r"/manifests/", 503, times=len(TAGS) - 1, skip=1)
        proxy.clear_records()
        assert {status for _, status in _sync(client, store)} == {"skipped"}
        assert proxy.count("GET") == 0
        for tag in TAGS:
            assert store.resolve("la/app", tag) == images[tag].manifest_digest


def test_a_place_without_bulk_answers_learns_only_its_destinations(
    registry: RegistryServer, tmp_path: Path
) -> None:
    _seed(registry, seed=940)

    class OneByOne(Client):
        head_manifests = None  # type: ignore[assignment]

    client = OneByOne(registry.host, use_docker_config=False)
    with open_store(str(tmp_path / "mirror")) as store:
        _sync(client, store)
        jobs = [
            (RegistryImage(client, "la/app", tag), StoreImage(store, "la/app"), tag)
            for tag in [*TAGS, "absent"]
        ]
        learned = look_ahead(jobs)
        assert learned[:-1] == [Known(str(store.resolve("la/app", tag))) for tag in TAGS]
        assert learned[-1] == Known(None)
        assert {status for _, status in _sync(client, store)} == {"skipped"}


def test_a_source_named_by_digest_or_a_missing_destination_is_not_asked_ahead(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    with _mirrored(registry, fault_proxy_factory, tmp_path, 960) as (images, proxy, client, store):
        digest = str(images["t1"].manifest_digest)
        jobs = [
            (RegistryImage(client, "la/app", digest), StoreImage(store, "la/app"), "t1"),
            (RegistryImage(client, "la/app", "t0"), StoreImage(store, "la/other"), "t0"),
            *[
                (RegistryImage(client, "la/app", t), StoreImage(store, "la/app"), t)
                for t in TAGS[2:]
            ],
        ]
        proxy.clear_records()
        learned = look_ahead(jobs)
        assert learned[:2] == [Known(digest), Known(None)]
        assert learned[2:] == [
            Known(str(images[t].manifest_digest), str(images[t].manifest_digest)) for t in TAGS[2:]
        ]
        assert proxy.count("HEAD") == len(TAGS) - 2
        for tag in TAGS[2:]:
            assert proxy.count("HEAD", rf"/manifests/{tag}$") == 1

        # a repository of fewer references than a batch is worth: its images ask themselves
        few = [
            (RegistryImage(client, "la/app", t), StoreImage(store, "la/app"), t) for t in TAGS[:3]
        ]
        proxy.clear_records()
        assert look_ahead(few) == [Known(str(images[t].manifest_digest)) for t in TAGS[:3]]
        assert proxy.count("HEAD") == 0


def test_a_cluster_sync_decides_unchanged_images_in_bulk_and_starts_no_cluster(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from regstore.cluster.runner import run_sync_on_cluster
    from regstore.cluster.tasks import RegistryAccess
    from regstore.engine.sync import PlannedJob, SyncPlan

    _seed(registry, seed=980)
    asked: list[tuple[str, int]] = []

    class Counting(Client):
        def head_manifest(self, name: str, reference: str) -> Any:
            asked.append(("one", 1))
            return super().head_manifest(name, reference)

        def head_manifests(self, name: str, references: Sequence[str]) -> Any:
            asked.append(("many", len(references)))
            return super().head_manifests(name, references)

    client = Counting(registry.host, use_docker_config=False)
    url = (tmp_path / "mirror").as_uri()
    with open_store(url) as store:
        _sync(client, store)
        plan = SyncPlan(
            jobs=[
                PlannedJob(RegistryImage(client, "la/app", tag), StoreImage(store, "la/app"))
                for tag in TAGS
            ]
        )
        asked.clear()

        def no_cluster(*args: object) -> Any:
            raise AssertionError("a no-op re-sync must not start a cluster")

        result = run_sync_on_cluster(
            plan, no_cluster, access_for=lambda c: RegistryAccess(c.registry), store_url=url
        )
    assert [o.status for o in result.outcomes] == ["skipped"] * len(TAGS)
    assert asked == [("many", len(TAGS)), ("one", 1)]  # the first of the batch the usual way


def test_a_job_another_job_changes_is_not_decided_ahead(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A copy into a registry repository that a later job reads from is decided when its
    image starts, strictly in order at concurrency 1; two jobs into one tag both fail (which
    won was an accident of the run, at any concurrency but 1)."""
    client = Client(registry.host, use_docker_config=False)
    olds = {t: build_image(seed=1300 + i, layers=1, layer_size=64) for i, t in enumerate(TAGS)}
    for tag, built in olds.items():
        seed_registry(registry.url, "la/b", tag, built)
    new = build_image(seed=1400, layers=1, layer_size=64)
    seed_registry(registry.url, "la/a", "t0", new)
    with open_store(str(tmp_path / "m")) as store:
        transfer_many([(RegistryImage(client, "la/b", t), StoreImage(store, "la/m")) for t in TAGS])
        chain = [(RegistryImage(client, "la/a", "t0"), RegistryImage(client, "la/b"))]
        chain += [(RegistryImage(client, "la/b", t), StoreImage(store, "la/m")) for t in TAGS]
        outcomes = transfer_many(chain, concurrency=1).outcomes
        assert [o.status for o in outcomes[:2]] == ["copied", "copied"]
        assert {o.status for o in outcomes[2:]} == {"skipped"}
        assert store.resolve("la/m", "t0") == new.manifest_digest

        # two jobs into one tag: both fail, the tag keeps what it named; the others go on
        before = store.resolve("la/m", "t1")
        into_one = [
            (RegistryImage(client, "la/a", "t0"), StoreImage(store, "la/m", "t1")),
            (RegistryImage(client, "la/b", "t1"), StoreImage(store, "la/m", "t1")),
        ] + [(RegistryImage(client, "la/b", t), StoreImage(store, "la/m")) for t in TAGS[2:]]
        outcomes = transfer_many(into_one, concurrency=1).outcomes
        assert [o.status for o in outcomes[:2]] == ["failed", "failed"]
        assert {o.status for o in outcomes[2:]} == {"skipped"}
        assert store.resolve("la/m", "t1") == before


def test_a_failure_of_any_kind_while_looking_ahead_fails_only_its_images(
    registry: RegistryServer,
) -> None:
    def down(name: str, reference: str) -> str | None:
        raise OSError("the backend is down")

    Broken = _fake_images(down)
    _seed(registry, seed=1500)
    client = Client(registry.host, use_docker_config=False)
    jobs = [(RegistryImage(client, "la/app", tag), Broken(f"x{i}")) for i, tag in enumerate(TAGS)]
    assert look_ahead([(s, d, "t") for s, d in jobs]) == [None] * len(jobs)
    result = transfer_many(jobs)  # type: ignore[arg-type]
    assert [o.status for o in result.outcomes] == ["failed"] * len(jobs)
    assert all("the backend is down" in (o.error or "") for o in result.outcomes)


def test_what_was_learned_is_trusted_for_a_while_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from regstore.engine import lookahead

    asked: list[str] = []

    class Place:
        def __init__(self, digest: str) -> None:
            self.digest = digest

        def manifest_digest(self, reference: str) -> str | None:
            asked.append(self.digest)
            return self.digest

    source, sink = Place("sha256:new"), Place("sha256:old")
    known = Known("sha256:new", "sha256:new")
    assert unchanged(known, source, sink, "t", "t") == "sha256:new"  # type: ignore[arg-type]
    assert asked == []
    monkeypatch.setattr(lookahead, "MAX_AGE", 0.0)
    assert unchanged(known, source, sink, "t", "t") is None  # type: ignore[arg-type]
    assert asked == ["sha256:old", "sha256:new"]


@pytest.mark.parametrize("mode", ["registry", "token_registry"])
def test_a_registry_to_registry_re_sync_asks_each_side_in_bulk(
    request: pytest.FixtureRequest, mode: str
) -> None:
    from tests.test_client_registry import make_client

    server: RegistryServer = request.getfixturevalue(mode)
    client = make_client(server)
    for i, tag in enumerate(TAGS):
        push_built(client, "la/src", tag, build_image(seed=1600 + i, layers=1, layer_size=64))
    jobs = [(RegistryImage(client, "la/src", t), RegistryImage(client, "la/dst")) for t in TAGS]
    assert {o.status for o in transfer_many(jobs).outcomes} == {"copied"}
    asked: list[tuple[str, int]] = []
    real = client.head_manifests

    def counting(name: str, references: Sequence[str]) -> Any:
        asked.append((name, len(references)))
        return real(name, references)

    client.head_manifests = counting  # type: ignore[method-assign]
    before = client.transport.counters.requests
    assert {o.status for o in transfer_many(jobs).outcomes} == {"skipped"}
    assert sorted(asked) == [("la/dst", len(TAGS)), ("la/src", len(TAGS))]
    # one HEAD per tag on each side (and perhaps a token challenge for the destination)
    assert client.transport.counters.requests - before <= 2 * len(TAGS) + 1


def test_quick_destinations_are_read_in_order_and_slow_ones_at_once() -> None:
    import threading
    import time

    from regstore.engine import lookahead

    threads: dict[str, set[str]] = {"quick": set(), "slow": set()}

    def timed(name: str, reference: str) -> str | None:
        threads[name].add(threading.current_thread().name)
        if name == "slow":
            time.sleep(lookahead.SLOW * 2)
        return None

    Timed = _fake_images(timed)
    for kind in ("quick", "slow"):
        jobs = [(Timed("src", f"t{i}"), Timed(kind), f"t{i}") for i in range(20)]
        assert look_ahead(jobs) == [Known(None)] * 20  # type: ignore[arg-type]
    assert threads["quick"] == {threading.current_thread().name}
    # the first SLOW_IN_ROW here, the rest on the look-ahead's threads
    assert len(threads["slow"]) > 2


def test_one_slow_answer_of_a_quick_store_keeps_its_reads_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hiccup (a local disk's first read, a moment without CPU) is not a slow store: the
    reads stay in order on the caller's thread instead of fighting over the GIL."""
    import threading
    import time

    from regstore.engine import lookahead

    threads: set[str] = set()
    calls = [0]
    # a long SLOW: only the hiccups below are slow, whatever this machine's load
    monkeypatch.setattr(lookahead, "SLOW", 0.05)

    def hiccup(name: str, reference: str) -> str | None:
        if name == "quick":
            threads.add(threading.current_thread().name)
            calls[0] += 1
            if calls[0] in (1, 5, 6):  # never SLOW_IN_ROW in a row
                time.sleep(lookahead.SLOW * 2)
        return None

    Timed = _fake_images(hiccup)
    jobs = [(Timed("src", f"t{i}"), Timed("quick"), f"t{i}") for i in range(20)]
    assert look_ahead(jobs) == [Known(None)] * 20  # type: ignore[arg-type]
    assert calls[0] == 20
    assert threads == {threading.current_thread().name}


def test_a_plan_settles_its_unchanged_images_before_any_starts(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    """What forked processes and a cluster's workers are spared: each unchanged image is
    settled here (skipped, unchanged); what changed, what moves referrers, what another job
    changes, and what could not be asked are left for the run."""
    from regstore.engine.sync import PlannedJob, SyncPlan, settle_unchanged

    with _mirrored(registry, fault_proxy_factory, tmp_path, 1700) as (images, proxy, client, store):
        seed_registry(registry.url, "la/app", "t2", build_image(seed=1790, layers=1, layer_size=64))

        def job(tag: str, into: str = "la/app", **kw: Any) -> PlannedJob:
            return PlannedJob(RegistryImage(client, "la/app", tag), StoreImage(store, into), **kw)

        jobs = [job(t) for t in TAGS]
        jobs[5] = job("t5", referrers=True)  # its new referrers are the run's to look for
        # two jobs into one tag: the last one's image is what the tag names, decided in turn
        jobs.append(
            PlannedJob(RegistryImage(client, "la/app", "t7"), StoreImage(store, "la/app", "t6"))
        )
        # ... and so when the other one moves referrers (it is not asked about, but writes)
        jobs.append(
            PlannedJob(
                RegistryImage(client, "la/app", "t9"),
                StoreImage(store, "la/app", "t8"),
                referrers=True,
            )
        )
        proxy.clear_records()
        settled = settle_unchanged(SyncPlan(jobs=jobs))
        left = {2, 5, 6, 8, len(TAGS), len(TAGS) + 1}
        assert sorted(settled) == [i for i in range(len(TAGS)) if i not in left]
        for i, outcome in settled.items():
            assert (outcome.status, outcome.destination) == ("skipped", f"store:la/app:{TAGS[i]}")
            assert outcome.result is not None and outcome.result.unchanged
            assert outcome.result.manifest_digest == images[TAGS[i]].manifest_digest
        assert proxy.count("GET") == 0  # one HEAD per source, no manifest read

        # a repository too small for a batch: its sources are asked one by one, and settled
        few = SyncPlan(jobs=[job(t) for t in TAGS[:2]])
        proxy.clear_records()
        assert sorted(settle_unchanged(few)) == [0, 1]
        assert proxy.count("HEAD") == 2

        # a registry that fails: nothing is settled, nothing raised (the run reports it)
        proxy.override_status("HEAD", r"/manifests/", 503, times=100)
        assert settle_unchanged(few) == {}


def test_a_batch_fetches_again_what_verify_moved_aside_seen_from_either_store_object(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tags name the same digests as before: only the quarantine tells that an image lacks
    # a blob. Once through the store object that moved it aside, once through another one
    # (another process's verify) whose listing of the quarantine is older than its age.
    with _mirrored(registry, fault_proxy_factory, tmp_path, seed=960) as (images, _, client, store):
        first, second = images[TAGS[0]].layer_digests[0], images[TAGS[1]].layer_digests[0]
        assert store.quarantined() == frozenset()
        flip_byte(blob_path(tmp_path / "mirror", first))
        assert [p.subject for p in verify(store).quarantined] == [first]
        assert store.quarantined() == {first}
        healed = dict(_sync(client, store))
        assert healed.pop(f"store:la/app:{TAGS[0]}") == "copied"
        assert set(healed.values()) == {"skipped"}
        assert store.blob_exists(first) and verify(store).ok

        with open_store(str(tmp_path / "mirror")) as other:
            flip_byte(blob_path(tmp_path / "mirror", second))
            assert [p.subject for p in verify(other).quarantined] == [second]
        assert second not in store.quarantined()  # listed a moment ago
        monkeypatch.setattr("regstore.store._QUARANTINE_LISTED_FOR", 0.0)
        assert store.quarantined() == {second}  # first was fetched again: not lost
        healed = dict(_sync(client, store))
        assert healed.pop(f"store:la/app:{TAGS[1]}") == "copied"
        assert set(healed.values()) == {"skipped"}
        assert verify(store).ok
