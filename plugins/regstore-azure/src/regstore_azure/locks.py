"""Writer exclusion on Azure: a lock blob per key, held by a blob lease.

Azure leases are the service's own exclusive locks: of any number of clients asking for a
lease on one blob, exactly one gets it, and a lease that is not renewed expires on the
service's clock after its duration (15 to 60 seconds). So a lock here is a small blob
``<root>/_regstore/locks/<key>.lock`` and holding the lock means holding its lease:

- **taking it**: create the lock blob if it is missing (Put Blob with ``If-None-Match: *``;
  losing that race is fine), then Lease Blob ``acquire``; a held lease answers 409
  ``LeaseAlreadyPresent``: someone else holds the key;
- **holding it**: a daemon thread renews the lease every third of its duration; a renewal the
  service refuses (the lease expired and another writer took it) marks the lock lost, and a
  writer checks that before it makes a blob visible;
- **releasing it**: Delete Blob with the lease id (only the holder can), so no lock blobs pile
  up; ``regstore gc`` removes those of killed writers once their lease ran out;
- **a killed writer**: nothing to break: its lease simply expires, and the key is free again.

Locks of this process are also kept in a process-wide table, so two stores opened on the same
container and prefix in one process exclude each other without a request.
:class:`AzureLeaseLockManager` is a :class:`regstore.backends.kit.LockManagerBase`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
import weakref
from typing import Any

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

from .client import AzureObjects, Conflict, translate_azure_errors

__all__ = [
    "DEFAULT_LEASE",
    "MAX_LEASE",
    "MIN_LEASE",
    "AzureLease",
    "AzureLeaseLockManager",
    "LeaseLostError",
]

log = logging.getLogger(__name__)

#: Azure's range of lease durations, in seconds, and regstore's default.
MIN_LEASE = 15
MAX_LEASE = 60
DEFAULT_LEASE = 30
#: How long mutex() waits for a contended key by default.
MUTEX_TIMEOUT = 120.0
#: Lease states in which someone holds the blob (``breaking`` holds until the break ends).
_HELD_STATES = ("leased", "breaking")

# keys in the process-wide table: "<account url>/<container>/<lock blob name>"
_held = HeldKeys()


class LeaseLostError(StoreError):
    """This process's lease on a lock expired or was taken: another writer may hold it now."""


def check_lease(value: Any) -> int:
    """A lease duration option: whole seconds from 15 to 60 (Azure's range)."""
    lease = int(value)
    if not MIN_LEASE <= lease <= MAX_LEASE:
        raise ValueError(f"lease must be {MIN_LEASE} to {MAX_LEASE} seconds, not {lease}")
    return lease


class _Renewal(LeaseRenewal):
    """The lease's requests: Renew Lease, and Delete Blob under the lease."""

    def __init__(self, objects: AzureObjects, lease_client: Any, name: str, duration: int) -> None:
        super().__init__(name, duration)
        self.objects = objects
        self.client = lease_client

    def renew_once(self) -> None:
        try:
            with translate_azure_errors(f"cannot renew the lease of {self.name}"):
                self.client.renew()
        except Conflict as exc:  # expired, and leased by another writer
            raise LeaseTaken(str(exc)) from exc

    def delete(self) -> None:
        try:
            self.objects.delete(self.name, lease=self.client)
        except Conflict as exc:
            raise LeaseTaken(str(exc)) from exc


class AzureLease(HeldLease):
    """A held lock blob lease; renewed in the background until :meth:`release`."""

    lost_error = LeaseLostError
    thread_prefix = "regstore-azure-lease"

    @property
    def name(self) -> str:
        """The lock blob's name in the container."""
        return self._renewal.name


class AzureLeaseLockManager(LockManagerBase):
    """Exclusive locks by key as leased blobs under ``prefix`` in a container.

    ``lease`` is the lease duration in seconds (15 to 60): how long a killed writer's lock
    outlives it. :meth:`mutex` polls for up to two minutes, backing off to half a second, and
    checks the lease is still ours before it releases.
    """

    mutex_timeout = MUTEX_TIMEOUT
    mutex_backoff = (0.02, 0.5)

    def __init__(self, objects: AzureObjects, prefix: str, *, lease: int = DEFAULT_LEASE) -> None:
        self.objects = objects
        self.prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        self.lease = check_lease(lease)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._namespace = f"{objects.container.url}/"
        #: this manager's leases by lock blob name (for :meth:`check_held`)
        self._leases: weakref.WeakValueDictionary[str, AzureLease] = weakref.WeakValueDictionary()

    def _blob_name(self, key: str) -> str:
        check_lock_key(key)
        return f"{self.prefix}{key}.lock"

    def _take(self, name: str) -> Any | None:
        """Lease the lock blob (creating it first if needed); the lease client, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.objects.blob(name)
        body = json.dumps({"owner": self.owner, "lease": self.lease}).encode()
        for _ in range(3):
            with contextlib.suppress(Conflict):  # exists already (perhaps leased): lease it
                self.objects.put(name, body, if_absent=True)
            try:
                with translate_azure_errors(f"cannot lease {name}"):
                    return blob.acquire_lease(lease_duration=self.lease)
            except Conflict:
                return None  # LeaseAlreadyPresent: held by someone else
            except StoreError as exc:
                if not isinstance(exc.__cause__, ResourceNotFoundError):
                    raise
                # released (deleted) between our create and our lease: try again
        return None

    def try_acquire(self, key: str) -> AzureLease | None:
        """Take ``key``, or return None if another writer (thread or process) holds it."""
        name = self._blob_name(key)
        full = self._namespace + name
        if not _held.claim(full):
            return None
        try:
            lease_client = self._take(name)
        except BaseException:
            _held.free(full)
            raise
        if lease_client is None:
            _held.free(full)
            return None
        lease = AzureLease(_Renewal(self.objects, lease_client, name, self.lease), _held, full)
        self._leases[name] = lease
        return lease

    def is_held(self, key: str) -> bool:
        """True if a live lease holds ``key`` (here, or in any other process or host)."""
        name = self._blob_name(key)
        if self._namespace + name in _held:
            return True
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with translate_azure_errors(f"cannot inspect the lock {name}"):
                props = self.objects.blob(name).get_blob_properties()
        except StoreError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return False
            raise
        return str(props.lease.state) in _HELD_STATES

    def check_held(self, key: str) -> None:
        """Raise LeaseLostError unless this manager holds ``key`` with a live lease (checked,
        and renewed if half of it has run out, before a staged blob is made visible)."""
        lease = self._leases.get(self._blob_name(key))
        if lease is None or lease.released:
            raise LeaseLostError(f"the lock {key} is not held by this writer")
        lease.check()

    def before_release(self, lock: BlobLock) -> None:
        """A mutex body that outlived its lease must not pass as exclusive: raise then."""
        if isinstance(lock, AzureLease):
            lock.check()

    def __repr__(self) -> str:
        return f"AzureLeaseLockManager({self.objects.where}, lease={self.lease})"
