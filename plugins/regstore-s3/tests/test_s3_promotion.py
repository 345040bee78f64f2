"""The Promotion of a blob's staged parts, against a small in-process fake of S3Objects: how
many copies run ahead, a failed copy tried once more, failures that abort the upload.

(The same paths against moto's server: test_s3_specific.py and test_s3_commit.py.)
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from regstore.errors import StoreError

from regstore_s3.client import ObjectInfo
from regstore_s3.promotion import COPY_AHEAD, Promotion

MiB = 1024 * 1024


class FakeObjects:
    """Records the multipart calls; ``fail`` maps a part number to how many of its copies
    fail; ``gate`` (when set) holds every copy until it is opened."""

    def __init__(self, fail: dict[int, int] | None = None) -> None:
        self.fail = dict(fail or {})
        self.gate: threading.Event | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self.create_fails = 0

    def create_multipart(self, key: str) -> str:
        with self.lock:
            self.calls.append(("create", key))
            if self.create_fails:
                self.create_fails -= 1
                raise StoreError("cannot start a multipart upload (injected)")
        return "upload-1"

    def copy_part(
        self, key: str, upload_id: str, number: int, source: str, *, if_match: str | None = None
    ) -> str:
        if self.gate is not None:
            assert self.gate.wait(10)
        with self.lock:
            self.calls.append(("copy", number, source, if_match))
            if self.fail.get(number, 0) > 0:
                self.fail[number] -= 1
                raise StoreError(f"cannot copy {source} into part {number} of {key} (injected)")
        return f'"etag-{number}"'

    def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        with self.lock:
            self.calls.append(("complete", upload_id, tuple(etags)))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with self.lock:
            self.calls.append(("abort", upload_id))

    def head(self, key: str) -> None:
        return None

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def _parts(n: int) -> list[ObjectInfo]:
    return [ObjectInfo(f"staging/part-{i:05d}", 5 * MiB, f'"p{i}"', 0.0) for i in range(1, n + 1)]


def _promotion(objects: FakeObjects) -> Promotion:
    return Promotion(objects, "blobs/data")  # type: ignore[arg-type]


def test_at_most_copy_ahead_copies_run_while_the_blob_is_written() -> None:
    objects = FakeObjects()
    objects.gate = threading.Event()
    promotion = _promotion(objects)
    parts = _parts(6)
    promotion.copy_ahead(parts[:4])
    assert promotion.copied == COPY_AHEAD  # the others wait for a later part or the commit
    promotion.copy_ahead(parts[:5])
    assert promotion.copied == COPY_AHEAD  # still in flight: nothing more started
    objects.gate.set()
    checked: list[bool] = []
    promotion.finish(parts, before_complete=lambda: checked.append(True))
    assert checked == [True]
    copies = [call for call in objects.calls if call[0] == "copy"]
    assert sorted(call[1] for call in copies) == [1, 2, 3, 4, 5, 6]
    assert all(call[2] == f"staging/part-{call[1]:05d}" for call in copies)
    assert all(call[3] == f'"p{call[1]}"' for call in copies)  # the staged ETag, if-match
    assert objects.calls[-1] == ("complete", "upload-1", tuple(f'"etag-{i}"' for i in range(1, 7)))
    assert objects.kinds().count("create") == 1
    assert "abort" not in objects.kinds()


def test_a_copy_that_failed_ahead_is_made_again_at_the_commit() -> None:
    objects = FakeObjects(fail={2: 1})
    promotion = _promotion(objects)
    parts = _parts(3)
    promotion.copy_ahead(parts[:2])
    promotion.finish(parts, before_complete=lambda: None)
    copies_of_2 = [call for call in objects.calls if call[:2] == ("copy", 2)]
    assert len(copies_of_2) == 2
    assert objects.calls[-1][0] == "complete"


def test_a_copy_that_fails_twice_aborts_the_upload_and_completes_nothing() -> None:
    objects = FakeObjects(fail={3: 2})
    promotion = _promotion(objects)
    with pytest.raises(StoreError, match="part 3"):
        promotion.finish(_parts(4), before_complete=lambda: None)
    assert "complete" not in objects.kinds()
    assert objects.kinds()[-1] == "abort"
    with pytest.raises(StoreError, match="aborted"):
        promotion.finish(_parts(4), before_complete=lambda: None)  # no new upload after it


def test_a_lease_lost_before_the_completion_aborts_the_upload() -> None:
    objects = FakeObjects()
    promotion = _promotion(objects)

    def lost() -> None:
        raise StoreError("the lease was lost (injected)")

    with pytest.raises(StoreError, match="lease"):
        promotion.finish(_parts(2), before_complete=lost)
    assert "complete" not in objects.kinds()
    assert objects.kinds()[-1] == "abort"


def test_an_upload_that_cannot_be_started_ahead_is_started_by_the_commit() -> None:
    objects = FakeObjects()
    objects.create_fails = 1
    promotion = _promotion(objects)
    parts = _parts(3)
    promotion.copy_ahead(parts[:2])  # no error: copying ahead is only an optimisation
    assert promotion.copied == 0
    promotion.copy_ahead(parts[:3])
    assert promotion.copied == 0  # it stopped for good
    promotion.finish(parts, before_complete=lambda: None)
    assert objects.kinds().count("create") == 2
    assert objects.calls[-1] == ("complete", "upload-1", ('"etag-1"', '"etag-2"', '"etag-3"'))
