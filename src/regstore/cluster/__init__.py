"""Sync on a Dask cluster: ``regstore sync FILE --workers N`` or ``--scheduler ADDRESS``.

Dask's ``distributed`` is an optional extra (``pip install 'regstore[dask]'``) and imported
only when a cluster is used, so regstore works without it. The layer sits between the CLI and
the engine: it composes the engine (the transfer of one image), the client and the store, as
the CLI does, and nothing in the library imports it.

Modules: :mod:`.tasks` (what a worker receives — plain, secret-free values — and runs),
:mod:`.balance` (images spread over workers by bytes) and :mod:`.runner` (starting or reaching
the cluster, planning on the submitting side, submitting, gathering, cancelling).
"""

from __future__ import annotations

from .balance import assign_by_bytes
from .runner import (
    DEFAULT_CONNECT_TIMEOUT,
    SCHEDULER_ENV,
    ClusterOptions,
    check_store_url,
    open_cluster,
    require_distributed,
    run_sync_on_cluster,
)
from .tasks import ImageTask, RegistryAccess, run_image_task

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "SCHEDULER_ENV",
    "ClusterOptions",
    "ImageTask",
    "RegistryAccess",
    "assign_by_bytes",
    "check_store_url",
    "open_cluster",
    "require_distributed",
    "run_image_task",
    "run_sync_on_cluster",
]
