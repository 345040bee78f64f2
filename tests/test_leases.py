"""A lock held as a lease (``regstore.backends.kit``: HeldLease, LeaseRenewal): renewed in the
background, lost when taken or not renewed in time, checked before a commit, released once.
A fake service here; the S3 (moto) and Azure (Azurite) lock parts run it against real ones in
their plugins' tests.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest

from regstore.backends.kit import HeldKeys, HeldLease, LeaseRenewal, LeaseTaken
from regstore.errors import StoreError

DURATION = 0.3  # renewed every 0.1 s


class _Lost(StoreError):
    pass


class _Lease(HeldLease):
    lost_error = _Lost
    thread_prefix = "test-lease"


class _Service(LeaseRenewal):
    """Counts renewals and deletes; ``answer`` decides what the next request meets."""

    def __init__(self, duration: float = DURATION) -> None:
        super().__init__("locks/k.lock", duration)
        self.renewals = 0
        self.deletes = 0
        self.answer: Exception | None = None
        self.renewed_event = threading.Event()

    def renew_once(self) -> None:
        if self.answer is not None:
            raise self.answer
        self.renewals += 1
        self.renewed_event.set()

    def delete(self) -> None:
        if self.answer is not None:
            raise self.answer
        self.deletes += 1


def _held(service: _Service) -> tuple[_Lease, HeldKeys]:
    table = HeldKeys()
    assert table.claim("k")
    return _Lease(service, table, "k"), table


def test_a_held_lease_is_renewed_in_the_background_and_released_once() -> None:
    service = _Service()
    lease, table = _held(service)
    assert any(t.name == "test-lease:locks/k.lock" for t in threading.enumerate())
    assert service.renewed_event.wait(5)
    lease.check()
    lease.release()
    lease.release()
    assert (service.deletes, lease.released, "k" in table) == (1, True, False)
    renewals = service.renewals
    time.sleep(DURATION / 2)
    assert service.renewals == renewals  # no renewal after the release


def test_a_lease_another_writer_took_is_lost_checked_and_not_deleted() -> None:
    service = _Service()
    lease, _ = _held(service)
    service.answer = LeaseTaken("412 Precondition Failed")
    deadline = time.monotonic() + 5
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lease.lost
    with pytest.raises(_Lost, match="taken over by another writer"):
        lease.check()
    service.answer = None
    lease.release()
    assert service.deletes == 0  # not ours any more: nothing deleted


def test_failed_renewals_lose_the_lease_only_once_it_ran_out() -> None:
    service = _Service(duration=1.5)  # renewed every 0.5 s
    lease, _ = _held(service)
    service.answer = StoreError("connection refused")
    time.sleep(0.6)
    assert not lease.lost  # a failed turn is retried at the next
    deadline = time.monotonic() + 5
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(_Lost, match="could not be renewed in time"):
        lease.check()
    lease.release()


def test_check_renews_a_half_spent_lease_first_and_fails_when_it_cannot() -> None:
    service = _Service(duration=60.0)  # no background renewal during the test
    lease, _ = _held(service)
    lease.check()
    assert service.renewals == 0  # plenty left: no request
    service.renewed -= 31  # more than half of it spent
    lease.check()
    assert service.renewals == 1
    service.renewed -= 31
    service.answer = StoreError("connection reset")
    with pytest.raises(StoreError, match="connection reset"):  # the commit waits
        lease.check()
    assert not lease.lost
    service.answer = None
    lease.release()


def test_a_dropped_lease_stops_renewing_and_frees_its_key() -> None:
    service = _Service()
    lease, table = _held(service)
    assert service.renewed_event.wait(5)
    del lease
    gc.collect()
    assert "k" not in table and service.stop.is_set()
    assert service.deletes == 0  # left to run out on the service


def test_still_held_renews_when_due_and_tolerates_a_failed_renewal_while_the_lease_lasts() -> None:
    """What a writer asks between two parts: a frozen writer whose lease was taken learns it;
    a renewal the service could not answer once (a 503) does not fail a write while the lease
    still lasts, as the background renewal does not either."""
    service = _Service(duration=60.0)  # no background renewal during the test
    lease, _ = _held(service)
    try:
        assert lease.still_held() and service.renewals == 0  # not due: nothing asked
        service.renewed = time.monotonic() - 40  # past half the lease (a process stopped)
        service.answer = StoreError("503 Slow Down")
        assert lease.still_held()  # tolerated: 20 s of the lease are left
        service.answer = LeaseTaken("412 Precondition Failed")
        assert not lease.still_held()  # taken meanwhile: lost
        with pytest.raises(_Lost, match="taken over by another writer"):
            lease.check()
    finally:
        lease.release()

    service = _Service(duration=60.0)
    lease, _ = _held(service)
    try:
        service.renewed = time.monotonic() - 61  # frozen past the whole lease
        service.answer = StoreError("connection refused")
        assert not lease.still_held()
        with pytest.raises(_Lost, match="could not be renewed in time"):
            lease.check()
        service.answer = None
    finally:
        lease.release()
