"""Store backends: the fsspec-based store in its layouts, and the built-in URL schemes.

- :mod:`.base`: :class:`BackendBase`, the store hookimpls over a small core of plain methods;
- :mod:`.fsspec_store`: :class:`FsspecBackend`, the whole contract on any fsspec filesystem,
  composed of a staging part and a lock part it is handed;
- :mod:`.layouts`, :mod:`.layout_distribution`, :mod:`.layout_oci`: where keys live;
- :mod:`.staging`: the staging part (:class:`BlobStaging`, :class:`AppendStaging` from five
  primitives) and the blob handles built on it;
- :mod:`.locks`: the lock part (process-local, flock; :class:`LockManagerBase` for others);
- :mod:`.kit`: what a plugin author builds a backend from (the public, documented subset);
- :mod:`.memory` (``memory://NAME``) and :mod:`.filesystem` (``file://``, plain paths): the
  built-in backends, registered through the ``regstore`` entry-point group like any plugin.

Backends import the leaves (errors, reference, manifest, digest), hookspecs and fsspec; never
the store facade, the client or the engine.
"""

from __future__ import annotations

from .base import BackendBase
from .fsspec_store import FsspecBackend, FsspecStaging, FsspecStagingArea
from .layouts import Layout, LayoutHost
from .locks import BlobLock, FlockLockManager, LockManager, LockManagerBase, ThreadLockManager
from .staging import AppendStaging, BlobReader, BlobStaging, StagedBlobWriter, StagingStream

__all__ = [
    "AppendStaging",
    "BackendBase",
    "BlobLock",
    "BlobReader",
    "BlobStaging",
    "FlockLockManager",
    "FsspecBackend",
    "FsspecStaging",
    "FsspecStagingArea",
    "Layout",
    "LayoutHost",
    "LockManager",
    "LockManagerBase",
    "StagedBlobWriter",
    "StagingStream",
    "ThreadLockManager",
]
