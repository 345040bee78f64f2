"""An index's child manifests are read ahead of the walk that plans them (each read is a round
trip to a registry), while the plan stays what reading them one by one made: children before
the indexes listing them, each manifest read once, a failed read failing the plan with its own
error. The read-ahead is bounded per index level, never makes a walk wait behind other images'
reads, and survives a fork."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest

import regstore.engine.manifestreads as manifestreads
from regstore import open_store
from regstore.engine import StoreImage
from regstore.engine.options import TransferOptions
from regstore.engine.places import register_place
from regstore.engine.storeplace import StorePlace
from regstore.engine.transfer import ImagePlan, plan_image
from regstore.errors import ImageManifestNotFoundError
from regstore.manifest import Manifest
from regstore.store import ObjectStore
from regstore.testing.builders import Image, oci_image, oci_index, write_image

#: How long each counted read takes: long enough for reads started together to overlap.
READ_SECONDS = 0.05
#: The longest a test waits for something that takes milliseconds (a hang, not a slow run).
PATIENCE = 60.0


@dataclass
class _Reads:
    """What the counted place saw: every reference read, the most reads at once, failures.
    With ``gate``, child reads wait until it is set."""

    seen: list[str] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    gate: threading.Event | None = None
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settled(self) -> None:
        """Wait until no read runs (reads left over by a failed plan end in the background)."""
        deadline = time.monotonic() + PATIENCE
        while self.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.running, "a read never ended"


@dataclass(frozen=True)
class CountedImage(StoreImage):
    """A store image whose manifest reads are slow and counted (in ``reads``)."""

    reads: _Reads | None = None


class CountedPlace(StorePlace):
    def __init__(self, image: CountedImage) -> None:
        super().__init__(image)
        assert image.reads is not None
        self.reads = image.reads

    def manifest(self, reference: str) -> Manifest:
        reads = self.reads
        with reads.lock:
            reads.seen.append(reference)
            reads.threads.add(threading.current_thread().name)
            reads.running += 1
            reads.most = max(reads.most, reads.running)
        try:
            if reads.gate is not None and reference.startswith("sha256:"):
                reads.gate.wait()  # the test sets it, whatever happens
            time.sleep(READ_SECONDS)
            if reference in reads.fail:
                raise ImageManifestNotFoundError(self.name, reference)
            return super().manifest(reference)
        finally:
            with reads.lock:
                reads.running -= 1


register_place(CountedImage, source=CountedPlace)


def _store(image: Image) -> ObjectStore:
    store = open_store(f"memory://index-reads-{uuid.uuid4().hex}")
    write_image(store, "team/app", "1", image)
    return store


def _index(count: int, seed: int = 0) -> tuple[ObjectStore, list[Image]]:
    children = [oci_image(layers=1, seed=seed + i) for i in range(count)]
    return _store(oci_index(children)), children


def _plan(store: ObjectStore, reads: _Reads, platforms: list[str] | None = None) -> ImagePlan:
    image = CountedImage(store, "team/app", "1", reads=reads)
    return plan_image(image, TransferOptions.build(platforms=platforms))


def _shape(plan: ImagePlan) -> tuple[list[str], list[str], bool]:
    return [str(c.digest) for c in plan.children], list(plan.blobs), plan.partial


def test_the_children_of_an_index_are_read_ahead_into_the_same_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, children = _index(6)
    reads = _Reads()
    plan = _plan(store, reads)
    assert reads.most >= 2, "the children were read one after another"
    assert any(name.startswith("regstore-manifest") for name in reads.threads)
    assert sorted(reads.seen[1:]) == sorted(str(c.digest) for c in children)  # each once
    assert [str(c.digest) for c in plan.children] == [str(c.digest) for c in children]

    monkeypatch.setattr(manifestreads, "READS_AHEAD", 0)
    one_by_one = _Reads()
    assert _shape(_plan(store, one_by_one)) == _shape(plan)
    assert one_by_one.most == 1 and one_by_one.seen == reads.seen[:1] + [
        str(c.digest) for c in children
    ]


def test_a_large_index_is_read_a_few_children_ahead_only() -> None:
    store, _ = _index(40)
    reads = _Reads()
    plan = _plan(store, reads)
    assert len(plan.children) == 40 and len(reads.seen) == 41
    # the pool's reads plus the walk's own: never the whole index queued at once
    assert 2 <= reads.most <= manifestreads.READS_AHEAD + 1


def test_a_failed_child_read_fails_the_plan_with_its_own_error_and_little_reading_behind() -> None:
    store, children = _index(40)
    missing = str(children[3].digest)
    reads = _Reads(fail={missing})
    with pytest.raises(ImageManifestNotFoundError, match=missing.split(":")[1][:12]):
        _plan(store, reads)
    reads.settled()
    # the top, the children up to the failed one, and at most one window read ahead of it
    assert len(reads.seen) <= 1 + 4 + manifestreads.READS_AHEAD, reads.seen


def test_children_left_out_by_platform_are_not_read() -> None:
    store, children = _index(3)  # amd64, arm64, s390x
    reads = _Reads()
    plan = _plan(store, reads, platforms=["linux/arm64"])
    assert [str(c.digest) for c in plan.children] == [str(children[1].digest)]
    assert reads.seen[1:] == [str(children[1].digest)]
    assert plan.partial


@pytest.mark.parametrize("read_ahead", [True, False])
def test_a_child_listed_twice_in_a_nested_index_is_read_once_and_planned_first(
    read_ahead: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not read_ahead:
        monkeypatch.setattr(manifestreads, "READS_AHEAD", 0)
    shared = oci_image(layers=1, seed=40)
    inner = oci_index([shared, oci_image(layers=1, seed=41), oci_image(layers=1, seed=42)])
    top = oci_index([inner, shared, oci_image(layers=1, seed=43)])  # ``shared`` after ``inner``
    store = _store(top)
    reads = _Reads()

    plan = _plan(store, reads)

    reads.settled()
    assert sorted(reads.seen[1:]) == sorted(
        {str(inner.digest), str(top.children[2].digest), *(str(c.digest) for c in inner.children)}
    )
    children = [str(c.digest) for c in plan.children]
    # every manifest after the ones it lists: written in this order, an index never precedes
    # a child of its own
    assert children.index(str(shared.digest)) < children.index(str(inner.digest))
    assert len(children) == len(set(children)) == 5


def test_a_plan_does_not_wait_behind_another_plans_stalled_reads() -> None:
    gate = threading.Event()
    stalled_store, _ = _index(8, seed=100)
    stalled = _Reads(gate=gate)
    store, children = _index(6, seed=200)
    plans: dict[str, ImagePlan] = {}
    first = threading.Thread(target=lambda: plans.update(stalled=_plan(stalled_store, stalled)))
    free = _Reads()
    second = threading.Thread(
        target=lambda: plans.update(free=_plan(store, free)), name="second-plan"
    )
    first.start()
    try:
        deadline = time.monotonic() + PATIENCE
        while stalled.running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the shared pool is busy with reads that do not end
        assert stalled.running >= 2
        # the second plan's walk makes the reads the busy pool has not started
        second.start()
        second.join(PATIENCE)
        assert not second.is_alive(), "a plan waited behind another plan's stalled reads"
        assert [str(c.digest) for c in plans["free"].children] == [str(c.digest) for c in children]
        assert "stalled" not in plans  # the other plan is still stalled meanwhile
    finally:
        gate.set()
        first.join(PATIENCE)
        second.join(PATIENCE)
    assert len(plans["stalled"].children) == 8


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_process_plans_an_index_after_the_parent_did() -> None:
    store, _ = _index(6, seed=300)
    _plan(store, _Reads())  # the parent's pool has threads now; a fork has none of them
    pid = os.fork()
    if pid == 0:  # pragma: no cover  # the child reports by its exit code only
        try:
            reads = _Reads()
            plan = _plan(store, reads)
            # the read-ahead works there too: a pool of its own, not the parent's dead one
            os._exit(0 if len(plan.children) == 6 and reads.most >= 2 else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + PATIENCE
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked process hung planning the index")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_read_ahead_threads_do_not_hold_up_the_end_of_the_program() -> None:
    store, _ = _index(4, seed=400)
    _plan(store, _Reads())
    threads = [t for t in threading.enumerate() if t.name.startswith("regstore-manifest")]
    assert threads and all(t.daemon for t in threads)


def test_the_pool_takes_a_read_only_when_a_thread_is_free() -> None:
    pool = manifestreads._ReadPool(2)
    gate = threading.Event()
    busy = [pool.try_submit(gate.wait) for _ in range(2)]
    assert all(f is not None for f in busy)
    assert pool.try_submit(lambda: "queued") is None  # nothing waits behind busy threads
    gate.set()
    assert [f.result(PATIENCE) for f in busy if f is not None] == [True, True]
    deadline = time.monotonic() + PATIENCE
    while (taken := pool.try_submit(lambda: "read")) is None and time.monotonic() < deadline:
        time.sleep(0.01)  # a thread that finished is free again
    assert taken is not None and taken.result(PATIENCE) == "read"
    deadline = time.monotonic() + PATIENCE
    while (cancelled := pool.try_submit(gate.wait)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled is not None
    cancelled.cancel()  # taken back before it ran, or run: either way the thread comes back
    deadline = time.monotonic() + PATIENCE
    while (again := pool.try_submit(lambda: "again")) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert again is not None and again.result(PATIENCE) == "again"


class _SilentPool:
    """A pool that accepts every read and never runs one (a pool forked without threads)."""

    def __init__(self) -> None:
        self.accepted: list[Future[Any]] = []

    def try_submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self.accepted.append(future)
        return future


def test_a_read_the_pool_has_not_started_is_taken_back_by_the_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = _SilentPool()
    monkeypatch.setattr(manifestreads, "_read_pool", lambda: silent)
    store, children = _index(6, seed=500)
    plans: list[ImagePlan] = []
    walk = threading.Thread(target=lambda: plans.append(_plan(store, _Reads())), daemon=True)
    walk.start()
    walk.join(PATIENCE)
    assert not walk.is_alive(), "the walk waited for a read the pool never started"
    assert [str(c.digest) for c in plans[0].children] == [str(c.digest) for c in children]
    assert silent.accepted and all(f.cancelled() for f in silent.accepted)


def test_a_failed_plan_drops_the_reads_it_did_not_use(monkeypatch: pytest.MonkeyPatch) -> None:
    silent = _SilentPool()
    monkeypatch.setattr(manifestreads, "_read_pool", lambda: silent)
    store, children = _index(12, seed=700)
    reads = _Reads(fail={str(children[1].digest)})
    with pytest.raises(ImageManifestNotFoundError):
        _plan(store, reads)
    # the reads started ahead of the failure are dropped, not left pending
    assert len(silent.accepted) >= 2
    assert all(f.cancelled() for f in silent.accepted)


def test_a_child_a_nested_index_planned_first_is_not_read_again() -> None:
    late = oci_image(layers=1, seed=800)
    nested = oci_index([late])
    others = [oci_image(layers=1, seed=801 + i) for i in range(5)]
    # the top lists ``late`` beyond the first window, after the index that plans it
    store = _store(oci_index([nested, *others, late]))
    reads = _Reads()
    plan = _plan(store, reads)
    reads.settled()
    children = reads.seen[1:]
    assert len(children) == len(set(children)) == 7, children  # each read once
    assert len(plan.children) == 7


def test_without_threads_to_be_had_the_walk_reads_every_child_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(manifestreads, "_pool", manifestreads._ReadPool(4))  # no threads yet
    monkeypatch.setattr(threading.Thread, "start", refuse)
    store, children = _index(5, seed=600)
    reads = _Reads()
    plan = _plan(store, reads)
    assert [str(c.digest) for c in plan.children] == [str(c.digest) for c in children]
    assert reads.threads == {threading.current_thread().name}
