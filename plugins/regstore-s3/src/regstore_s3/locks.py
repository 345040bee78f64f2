"""Writer exclusion on S3: a lock object per key, created conditionally and held as a lease.

S3 has no ``flock``, and a process holding a lock may die without a word, so a lock here is an
object ``<root>/_regstore/locks/<key>.lock`` holding who owns it and for how long::

    {"owner": "<host>:<pid>:<uuid>", "lease": 30.0, "acquired": 1700000000.0}

- **Taking it** is a ``PutObject`` with ``If-None-Match: *``: S3 creates the object for
  exactly one of any number of concurrent contenders and answers the others 412. The winner
  reads it back once (its ETag), for endpoints whose conditional create is not atomic.
- **Holding it** means renewing it: a daemon thread re-writes the object every third of the
  lease with ``If-Match: <our ETag>`` (so a holder whose lease was broken learns it, instead of
  clobbering the new holder's lock).
- **A stale lock** (its holder crashed: the object was not renewed for longer than its lease)
  is broken with a ``PutObject`` carrying ``If-Match: <the stale ETag>``: of several processes
  breaking the same stale lock, exactly one wins.
- **Releasing it** deletes the object with ``If-Match: <our ETag>``.

Expiry is judged on the *server's* clock: the age of a lock is the ``Date`` of the response
that read it minus the object's ``LastModified``, both stamped by S3, so clock skew between the
writers' hosts does not matter (the resolution is one second). Locks of this process are also
kept in a process-wide table, so two stores opened on the same bucket and prefix in one process
exclude each other without a request, and ``is_held`` answers for them at once.

The endpoint must implement conditional writes (AWS S3 since 2024, MinIO, Ceph RGW recent,
moto 5). :class:`S3LeaseLockManager` satisfies :class:`regstore.backends.locks.LockManager`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid

from regstore.backends.kit import (
    BlobLock,
    HeldKeys,
    HeldLease,
    LeaseRenewal,
    LeaseTaken,
    LockManagerBase,
    check_lock_key,
)
from regstore.errors import StoreError

from .client import PreconditionFailed, S3Objects, is_not_found

__all__ = ["DEFAULT_LEASE", "LeaseLostError", "S3Lease", "S3LeaseLockManager"]

log = logging.getLogger(__name__)

#: Seconds a lock lives without renewal (renewed every third of it while its holder lives).
DEFAULT_LEASE = 30.0
#: The shortest lease accepted (S3's clocks have one-second resolution).
MIN_LEASE = 1.0
#: How long mutex() waits for a contended key by default.
MUTEX_TIMEOUT = 120.0

# keys in the process-wide table: "<bucket>/<object key>"
_held = HeldKeys()


class LeaseLostError(StoreError):
    """This process's lease on a lock ran out or was broken: another writer may hold it now."""


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class _Renewal(LeaseRenewal):
    """The lock object's requests: a re-write, and a delete, both conditional on our ETag."""

    def __init__(self, objects: S3Objects, key: str, etag: str, body: bytes, lease: float) -> None:
        super().__init__(key, lease)
        self.objects = objects
        self.etag = etag
        self.body = body

    def renew_once(self) -> None:
        try:
            self.etag = self.objects.put(self.name, self.body, if_match=self.etag)
        except PreconditionFailed as exc:
            raise LeaseTaken(str(exc)) from exc
        except StoreError as exc:
            # the lock object is gone: another writer broke the lapsed lock (and has released
            # it since), which is a takeover too, not a renewal worth retrying
            if is_not_found(exc):
                raise LeaseTaken("the lock object is gone") from exc
            raise

    def delete(self) -> None:
        try:
            self.objects.delete(self.name, if_match=self.etag)
        except PreconditionFailed as exc:
            raise LeaseTaken(str(exc)) from exc


class S3Lease(HeldLease):
    """A held lock object; renewed in the background until :meth:`release`."""

    lost_error = LeaseLostError
    thread_prefix = "regstore-s3-lease"

    @property
    def key(self) -> str:
        """The lock object's key in the bucket."""
        return self._renewal.name


class S3LeaseLockManager(LockManagerBase):
    """Exclusive locks by key as lease objects under ``<prefix>`` in a bucket.

    ``prefix`` is the key prefix of the lock objects (``<root>/_regstore/locks/``). ``lease``
    is how long a lock outlives its holder's last renewal. :meth:`mutex` (from
    :class:`~regstore.backends.kit.LockManagerBase`) polls for up to two minutes, backing off
    to half a second, and checks the lease is still ours before it releases.
    """

    mutex_timeout = MUTEX_TIMEOUT
    mutex_backoff = (0.02, 0.5)

    def __init__(self, objects: S3Objects, prefix: str, *, lease: float = DEFAULT_LEASE) -> None:
        if lease < MIN_LEASE:
            raise ValueError(f"lease must be at least {MIN_LEASE:g} s, not {lease:g}")
        self.objects = objects
        self.prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        self.lease = float(lease)
        self.owner = _owner_id()

    def _object_key(self, key: str) -> str:
        check_lock_key(key)
        return f"{self.prefix}{key}.lock"

    def _full(self, object_key: str) -> str:
        return f"{self.objects.bucket}/{object_key}"

    def _body(self) -> bytes:
        record = {"owner": self.owner, "lease": self.lease, "acquired": time.time()}
        return json.dumps(record, sort_keys=True).encode()

    def _read(self, object_key: str) -> tuple[str, bool] | None:
        """``(etag, expired)`` of the lock object, or None if there is none."""
        found = self.objects.get(object_key)
        if found is None:
            return None
        body, info, server_now = found
        lease = self.lease
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            lease = float(json.loads(body)["lease"])
        # both times come from S3's clock; LastModified and Date have 1 s resolution
        expired = server_now - info.mtime > lease + 1.0
        return info.etag, expired

    def _still_ours(self, object_key: str, etag: str) -> bool:
        """Read the lock back after creating it: False if another writer's PUT replaced it.

        On S3 a conditional create is atomic and this always holds; some S3 implementations
        (moto's server among them) check ``If-None-Match`` and store in two steps, so two
        simultaneous creators can both be told "created". The later write wins there, and
        its author is the only one that reads its own ETag back.
        """
        info = self.objects.head(object_key)
        return info is not None and (not info.etag or not etag or info.etag == etag)

    def _take(self, object_key: str) -> tuple[str, bytes] | None:
        """Create the lock object (or break a stale one); ``(etag, body)`` or None if held."""
        for _ in range(3):
            body = self._body()
            try:
                etag = self.objects.put(object_key, body, if_none_match=True)
            except PreconditionFailed:
                pass
            else:
                return (etag, body) if self._still_ours(object_key, etag) else None
            current = self._read(object_key)
            if current is None:
                continue  # released meanwhile: try to create it again
            etag, expired = current
            if not expired:
                return None
            try:
                etag = self.objects.put(object_key, body, if_match=etag)
            except PreconditionFailed:
                continue  # renewed, released or broken by someone else meanwhile: look again
            log.info("broke the stale lock %s (its holder stopped renewing it)", object_key)
            return etag, body
        return None

    def try_acquire(self, key: str) -> S3Lease | None:
        """Take ``key``, or return None if another writer (thread or process) holds it."""
        object_key = self._object_key(key)
        full = self._full(object_key)
        if not _held.claim(full):
            return None
        try:
            taken = self._take(object_key)
        except BaseException:
            _held.free(full)
            raise
        if taken is None:
            _held.free(full)
            return None
        etag, body = taken
        return S3Lease(_Renewal(self.objects, object_key, etag, body, self.lease), _held, full)

    def is_held(self, key: str) -> bool:
        """True if a live lock exists for ``key`` (held here, or unexpired elsewhere)."""
        object_key = self._object_key(key)
        if self._full(object_key) in _held:
            return True
        current = self._read(object_key)
        return current is not None and not current[1]

    def before_release(self, lock: BlobLock) -> None:
        """A mutex body that outlived its lease must not pass as exclusive: raise then."""
        if isinstance(lock, S3Lease):
            lock.check()

    def __repr__(self) -> str:
        return f"S3LeaseLockManager(s3://{self.objects.bucket}/{self.prefix}, lease={self.lease:g})"
