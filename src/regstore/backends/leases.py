"""Locks held as leases on a remote service: the renewal and release a lock part shares.

A lock on a medium without ``flock`` (an object store) is a lock object or a blob lease that
outlives its holder by at most its lease: while the holder lives, a daemon thread renews it
every third of its duration, and a writer checks it before it makes data visible. What differs
between services is two requests, the renewal and the holder's delete; a lock part subclasses
:class:`LeaseRenewal` with those and hands it to a :class:`HeldLease` (S3: a conditional
re-write of the lock object; Azure: Renew Lease, and Delete Blob under the lease).

The renewal thread holds only the :class:`LeaseRenewal` (not the :class:`HeldLease`), so a lease
dropped without :meth:`~HeldLease.release` (a writer the garbage collector takes) is collected,
and its finaliser stops the renewals: the service lets the lease run out.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from typing import ClassVar

from regstore.errors import StoreError

from .locks import HeldKeys

__all__ = ["HeldLease", "LeaseRenewal", "LeaseTaken"]

log = logging.getLogger("regstore.store")


class LeaseTaken(Exception):
    """The service says another writer holds the lease now (raised by the requests of a
    :class:`LeaseRenewal`)."""


class LeaseRenewal(abc.ABC):
    """What keeps one lease alive: its two requests to the service, when it was last renewed,
    and whether it was lost. Thread-safe through :attr:`lock`, which the renewal thread and the
    holder take around each request."""

    def __init__(self, name: str, duration: float) -> None:
        #: the lock's name on the service (an object key, a blob name)
        self.name = name
        #: seconds the lease lives without renewal
        self.duration = duration
        self.renewed = time.monotonic()
        #: why the lease was lost, once it was
        self.lost: str | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    @abc.abstractmethod
    def renew_once(self) -> None:
        """Renew the lease on the service now. Raises LeaseTaken when another writer holds it,
        StoreError when the service could not be asked."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Delete the lock on the service as its holder. Raises LeaseTaken when it is no longer
        ours (nothing deleted), StoreError when the service could not be asked."""

    def taken(self, answer: LeaseTaken) -> None:
        """Mark the lease lost: the service gave it to another writer."""
        self.lost = f"the lock {self.name} was taken over by another writer ({answer})"

    def renew(self) -> None:
        """Renew now; a lease another writer took, or one not renewed for longer than its
        duration, is marked lost (a failure before that is retried at the next turn)."""
        try:
            self.renew_once()
            self.renewed = time.monotonic()
        except LeaseTaken as exc:
            self.taken(exc)
        except StoreError as exc:
            if time.monotonic() - self.renewed > self.duration:
                self.lost = f"the lock {self.name} could not be renewed in time ({exc})"
            else:
                log.warning("renewing lock %s failed, retrying: %s", self.name, exc)

    def renew_loop(self) -> None:
        """The renewal thread: every third of the duration, until stopped or lost."""
        while not self.stop.wait(self.duration / 3):
            with self.lock:
                if self.stop.is_set():
                    return
                self.renew()
                if self.lost is not None:
                    log.warning("%s", self.lost)
                    return


class HeldLease:
    """A held lock: renewed in the background until :meth:`release`, and held in this
    process's ``held`` table (as ``full_key``) until then. A lock part's subclass names the
    error :meth:`check` raises once the lease is lost (:attr:`lost_error`, its own
    LeaseLostError) and its renewal threads (:attr:`thread_prefix`)."""

    #: raised by :meth:`check` once the lease is lost
    lost_error: ClassVar[type[StoreError]] = StoreError
    #: the renewal thread's name is this, a colon and the lock's name
    thread_prefix: ClassVar[str] = "regstore-lease"

    def __init__(self, renewal: LeaseRenewal, held: HeldKeys, full_key: str) -> None:
        self._renewal = renewal
        self._held = held
        self._full_key: str | None = full_key
        self._thread = threading.Thread(
            target=renewal.renew_loop, name=f"{self.thread_prefix}:{renewal.name}", daemon=True
        )
        self._thread.start()

    @property
    def lost(self) -> bool:
        """True once the lease could not be renewed (another writer may hold the key)."""
        return self._renewal.lost is not None

    @property
    def released(self) -> bool:
        """True once released or abandoned."""
        return self._full_key is None

    def still_held(self) -> bool:
        """Whether the lease is still ours, renewed first when half of it has passed: what a
        writer asks between two writes (an S3 part), where one that was frozen past its
        lease learns it lost the key. A renewal the service could not be asked for is
        tolerated while the lease lasts, as the background renewal tolerates it. Never
        raises: :meth:`check` raises ``lost_error`` once this is False."""
        renewal = self._renewal
        if renewal.lost is None and self._due():
            with renewal.lock:
                if renewal.lost is None and self._due():
                    renewal.renew()  # (marks the lease lost when taken, or out of time)
        return renewal.lost is None

    def check(self) -> None:
        """Raise ``lost_error`` if the lease was lost; used before making data visible (a
        commit), and by a writer between writes once :meth:`still_held` said no.

        When less than half of the lease is left it is renewed first, so that what follows (a
        commit) does not run into the expiry; a renewal the service could not be asked for
        then raises its StoreError (the commit waits for a lease known to last).
        """
        renewal = self._renewal
        if renewal.lost is None and self._due():  # the lock only to renew: a commit does not
            with renewal.lock:  # wait behind a renewal in flight that it does not need
                if renewal.lost is None and self._due():
                    try:
                        renewal.renew_once()
                        renewal.renewed = time.monotonic()
                    except LeaseTaken as exc:
                        renewal.taken(exc)
        if renewal.lost is not None:
            raise self.lost_error(renewal.lost)

    def _due(self) -> bool:
        return time.monotonic() - self._renewal.renewed > self._renewal.duration / 2

    def release(self) -> None:
        """Stop renewing and delete the lock on the service (if still ours). Idempotent."""
        full, self._full_key = self._full_key, None
        if full is None:
            return
        renewal = self._renewal
        renewal.stop.set()
        try:
            with renewal.lock:
                if renewal.lost is None:
                    with contextlib.suppress(LeaseTaken):  # taken meanwhile: not ours to delete
                        renewal.delete()
        finally:
            self._held.free(full)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5)

    def abandon(self) -> None:
        """Stop renewing without a request: the lease runs out and the key frees itself.

        For finalisers (a writer dropped without close); prefer :meth:`release`.
        """
        full, self._full_key = self._full_key, None
        if full is not None:
            self._held.free(full)
        self._renewal.stop.set()

    def __del__(self) -> None:
        if getattr(self, "_renewal", None) is not None and getattr(self, "_full_key", None):
            self.abandon()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._renewal.name!r}, lost={self.lost})"
