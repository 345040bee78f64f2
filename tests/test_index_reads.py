"""An index's child manifests are read at once (each read is a round trip to a registry), while
the plan stays what reading them one by one made: children before the indexes listing them,
each manifest read once, a failed read failing the plan with its own error."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

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


@dataclass
class _Reads:
    """What the counted place saw: every reference read, the most reads at once, failures."""

    seen: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reads(fail: set[str] | None = None) -> _Reads:
    return _Reads(fail=fail or set())


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
            reads.running += 1
            reads.most = max(reads.most, reads.running)
        try:
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


def _shape(plan: ImagePlan) -> tuple[list[str], list[str]]:
    return [str(c.digest) for c in plan.children], list(plan.blobs)


def test_the_children_of_an_index_are_read_at_once_into_the_same_plan() -> None:
    children = [oci_image(layers=1, seed=seed) for seed in range(6)]
    index = oci_index(children)
    store = _store(index)
    reads = _reads()

    plan = plan_image(CountedImage(store, "team/app", "1", reads=reads), TransferOptions())

    assert reads.most >= 2, "the children were read one after another"
    assert sorted(reads.seen[1:]) == sorted(str(c.digest) for c in children)  # each once
    # the plan is the one a walk reading them one by one makes
    assert _shape(plan) == _shape(plan_image(StoreImage(store, "team/app", "1"), TransferOptions()))
    assert [str(c.digest) for c in plan.children] == [str(c.digest) for c in children]


def test_children_left_out_by_platform_are_not_read() -> None:
    children = [oci_image(layers=1, seed=seed) for seed in range(3)]  # amd64, arm64, s390x
    store = _store(oci_index(children))
    reads = _reads()

    plan = plan_image(
        CountedImage(store, "team/app", "1", reads=reads),
        TransferOptions.build(platforms=["linux/arm64"]),
    )

    assert [str(c.digest) for c in plan.children] == [str(children[1].digest)]
    assert reads.seen[1:] == [str(children[1].digest)]
    assert plan.partial


def test_a_child_listed_twice_in_a_nested_index_is_read_once_and_written_first() -> None:
    shared = oci_image(layers=1, seed=40)
    inner = oci_index([shared, oci_image(layers=1, seed=41)])
    top = oci_index([inner, shared])  # the top lists ``shared`` after the index holding it
    store = _store(top)
    reads = _reads()

    plan = plan_image(CountedImage(store, "team/app", "1", reads=reads), TransferOptions())

    read = reads.seen[1:]
    assert sorted(read) == sorted({str(inner.digest), *(str(c.digest) for c in inner.children)})
    children = [str(c.digest) for c in plan.children]
    # every manifest comes after the ones it lists: written in this order, an index never
    # precedes a child of its own
    assert children.index(str(shared.digest)) < children.index(str(inner.digest))
    assert len(children) == len(set(children)) == 3


def test_a_failed_child_read_fails_the_plan_with_its_own_error() -> None:
    children = [oci_image(layers=1, seed=seed) for seed in range(5)]
    store = _store(oci_index(children))
    missing = str(children[3].digest)
    reads = _reads(fail={missing})

    with pytest.raises(ImageManifestNotFoundError, match=missing.split(":")[1][:12]):
        plan_image(CountedImage(store, "team/app", "1", reads=reads), TransferOptions())
