"""The total of a transfer's progress is its whole plan, known before the first byte moves.

A newcomer's pull of a three-layer image showed the "total" bar at 100 % three times: the
total counted only the blobs that had started. The engine now announces every blob of a plan
(``planned`` events) first, so a snapshot taken at any event says 100 % only once every blob
is done; blobs the destination already holds, or another image of the batch moved, count as
done, never as a total that jumps.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from regstore import ObjectStore
from regstore.client import Client
from regstore.engine import Progress, RegistryImage, StoreImage, pull, transfer_many
from regstore.events import EventKind, TransferEvent
from regstore.testing.builders import BuiltImage, build_image
from tests.support.cli import put_image
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer

#: One observation per event: (blobs started or settled so far, bytes done, bytes total).
Seen = list[tuple[int, int, int]]

_TOUCHED = {EventKind.STARTED, EventKind.VERIFIED, EventKind.SKIPPED, EventKind.MOUNTED}


def _watching(
    progress_of: Callable[[], tuple[int, int]], seen: Seen
) -> Callable[[TransferEvent], None]:
    """A ``then`` callback recording, after each event but a plan's announcements (the
    ``planned`` events sent before the first blob moves), how many blobs had started or
    settled and the (done, total) bytes of ``progress_of``."""
    touched: set[str] = set()

    def record(event: TransferEvent) -> None:
        if event.kind.value == "planned":
            return
        if event.kind in _TOUCHED:
            touched.add(event.digest)
        seen.append((len(touched), *progress_of()))

    return record


def _assert_honest(seen: Seen, blobs: int, size: int) -> None:
    """The total is the whole plan from the first blob event on, never shrinks, and done
    reaches it only once every one of ``blobs`` has started or settled (the last one's last
    bytes may be moved before it is verified)."""
    totals = [total for _, _, total in seen if total]
    assert totals, "no total was ever known"
    assert totals[0] == size  # the whole plan from the first blob event on
    assert totals == sorted(totals)  # it only grows (here it never changes)
    early = [(n, done, total) for n, done, total in seen if n < blobs and done >= total > 0]
    assert early == []  # 100 % while a blob had not even started
    assert seen[-1][1:] == (size, size)


def _image(seed: int, shared: Sequence[bytes] = ()) -> BuiltImage:
    return build_image(layers=3, layer_size=5000, seed=seed, media="oci", shared_layers=shared)


def test_the_total_is_the_whole_image_before_its_first_blob_ends(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    built = _image(401)
    seed_registry(registry.url, "totals/one", "1", built)
    seen: Seen = []
    progress = Progress(then=_watching(lambda: _bytes(progress), seen))

    pull(Client(registry.host), store_factory("memory"), "totals/one", "1", concurrency=1,
         events=progress)  # fmt: skip

    size = sum(len(b) for b in built.blobs.values())
    _assert_honest(seen, len(built.blobs), size)
    snap = progress.snapshot()
    assert snap.blobs_total == snap.blobs_done == len(built.blobs)


def test_blobs_the_store_already_holds_count_as_done_not_as_a_total_that_jumps(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    first = _image(402)
    second = _image(403, shared=first.layers)  # its first three layers are first's
    seed_registry(registry.url, "totals/shared", "1", first)
    seed_registry(registry.url, "totals/shared", "2", second)
    store = store_factory("memory")
    client = Client(registry.host)
    pull(client, store, "totals/shared", "1")
    seen: Seen = []
    progress = Progress(then=_watching(lambda: _bytes(progress), seen))

    result = pull(client, store, "totals/shared", "2", concurrency=1, events=progress)

    assert len(result.skipped) == len(first.layers)  # the shared layers were not fetched
    _assert_honest(seen, len(second.blobs), sum(len(b) for b in second.blobs.values()))


def test_a_blob_another_image_of_the_batch_moved_counts_as_done_for_both(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    # into a registry, an image that wants a blob another one already moved shares that move
    # (no events of its own): its planned blob must still end as done, or 100 % never comes
    store = store_factory("memory")
    first = _image(404)
    second = _image(405, shared=first.layers[:1])
    put_image(store, "totals/src", "1", first)
    put_image(store, "totals/src", "2", second)
    client = Client(registry.host)
    progress = Progress()
    jobs = [
        (StoreImage(store, "totals/src", tag), RegistryImage(client, "totals/dst", tag))
        for tag in ("1", "2")
    ]

    batch = transfer_many(jobs, concurrency=1, events=progress, operation="push")

    assert batch.ok, batch
    snap = progress.snapshot()
    assert len(snap.images) == 2
    for name, image in snap.images.items():
        assert image.blobs_done == image.blobs_total > 0, name
        assert image.bytes_done == image.bytes_total > 0, name
    assert snap.bytes_done == snap.bytes_total


def test_the_terminal_bar_is_the_whole_plan_and_full_only_at_the_end(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    from regstore.cli.progress import ProgressDisplay

    built = _image(406)
    seed_registry(registry.url, "totals/bar", "1", built)
    seen: Seen = []
    with ProgressDisplay("bars", io.StringIO()) as display:
        record = _watching(display.overall, seen)

        def sink(event: TransferEvent) -> None:
            display(event)
            record(event)

        pull(Client(registry.host), store_factory("memory"), "totals/bar", "1", concurrency=1,
             events=sink)  # fmt: skip

    _assert_honest(seen, len(built.blobs), sum(len(b) for b in built.blobs.values()))


def test_planned_blobs_print_no_line_of_their_own(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    from regstore.cli.progress import ProgressDisplay

    built = _image(407)
    seed_registry(registry.url, "totals/lines", "1", built)
    stream = io.StringIO()
    kinds: list[EventKind] = []
    with ProgressDisplay("lines", stream) as display:

        def sink(event: TransferEvent) -> None:
            kinds.append(event.kind)
            display(event)

        pull(Client(registry.host), store_factory("memory"), "totals/lines", "1", events=sink)

    assert kinds.count(EventKind.PLANNED) == len(built.blobs)
    lines = stream.getvalue().splitlines()
    assert len([line for line in lines if line.startswith("pulled ")]) == len(built.blobs)
    assert all(line.split()[0] in ("pulled", "wrote") for line in lines), lines


def _bytes(progress: Progress) -> tuple[int, int]:
    snap = progress.snapshot()
    return snap.bytes_done, snap.bytes_total
