"""Store backends: the fsspec-based store in its layouts, and the built-in URL schemes.

- :mod:`.base`: :class:`BackendBase`, the store hookimpls over a small core of plain methods;
- :mod:`.fsspec_store`: :class:`FsspecBackend`, the whole contract on any fsspec filesystem
  (with the staging-strategy extension points object stores override);
- :mod:`.layouts`, :mod:`.layout_distribution`, :mod:`.layout_oci`: where keys live;
- :mod:`.staging`: the blob handles and the staging-strategy protocol they drive;
- :mod:`.locks`: blob write locks (process-local, flock);
- :mod:`.memory` (``memory://NAME``) and :mod:`.filesystem` (``file://``, plain paths): the
  built-in backends, registered through the ``regstore`` entry-point group like any plugin.

Backends import the leaves (errors, reference, manifest, digest), hookspecs and fsspec; never
the store facade, the client or the engine.
"""

from __future__ import annotations

from .base import BackendBase
from .fsspec_store import FsspecBackend
from .layouts import Layout, LayoutHost
from .locks import BlobLock, FlockLockManager, LockManager, ThreadLockManager
from .staging import BlobReader, StagedBlobWriter, StagingStrategy, StagingStream

__all__ = [
    "BackendBase",
    "BlobLock",
    "BlobReader",
    "FlockLockManager",
    "FsspecBackend",
    "Layout",
    "LayoutHost",
    "LockManager",
    "StagedBlobWriter",
    "StagingStrategy",
    "StagingStream",
    "ThreadLockManager",
]
