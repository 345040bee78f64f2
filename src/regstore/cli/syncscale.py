"""``regstore sync`` beyond one process: ``--shard I/N`` and a Dask cluster (``--workers N``,
``--scheduler ADDRESS``). The options, and the glue from the run's settings to
:mod:`regstore.cluster` (the command itself is in :mod:`.synccmd`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from regstore.engine.shards import Shard
from regstore.errors import UsageError

from .output import format_size

if TYPE_CHECKING:
    from regstore.cluster import ClusterOptions, RegistryAccess
    from regstore.engine.model import BatchResult, ImageOutcome, RegistryClient
    from regstore.engine.sync import ConnectionSpec, SyncPlan
    from regstore.store import ObjectStore

    from .app import AppState

__all__ = ["SHARED_BACKENDS", "ClusterRun", "cluster_options", "scale_options", "shares_store"]

F = TypeVar("F", bound=Callable[..., Any])

#: Store backends whose writes other processes see (through the filesystem).
SHARED_BACKENDS = frozenset({"file"})


def shares_store(store: ObjectStore) -> bool:
    """Whether forked processes can write into ``store`` together: its writes reach the
    others through the filesystem (a memory store's would stay in the child that made them;
    an object store's client may hold a thread of its own, which forking cannot take along).
    (Here, not with the fork: a sync checks it before it loads the engine.)"""
    return store.describe().get("backend") in SHARED_BACKENDS


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def scale_options(f: F) -> F:
    """``--processes N``, ``--shard I/N``, ``--workers N``, ``--scheduler ADDRESS``,
    ``--connect-timeout S``."""
    options = [
        click.option(
            "--processes",
            type=click.IntRange(1, 64),
            metavar="N",
            help="Move the images in N processes of this machine, each with a share and "
            "--concurrency blobs at once (Linux; into a directory store). Default: one per "
            "CPU (at most 4, one per 16 images) for a sync of 32 images or more into a "
            "directory store when no concurrency is given (option or sync file) and not "
            "--fail-fast; else 1.",
        ),
        click.option(
            "--shard",
            metavar="I/N",
            callback=_shard,
            help="Take only share I of N of the planned images (by a hash of each source "
            "reference: stable across runs); for Indexed Jobs, job arrays, CI matrices.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(1, 512),
            metavar="N",
            help="Move images on a local Dask cluster of N worker processes "
            "(pip install 'regstore[dask]').",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            envvar="DASK_SCHEDULER_ADDRESS",
            show_envvar=True,
            help="Move images on the existing Dask cluster of this scheduler, e.g. "
            "tcp://10.0.0.5:8786 (workers read registry and store credentials from their "
            "own environment).",
        ),
        click.option(
            "--connect-timeout",
            type=click.FloatRange(0.1, 3600),
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="How long to wait for --scheduler to answer.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def cluster_options(
    workers: int | None,
    scheduler: str | None,
    connect_timeout: float,
    processes: int | None = None,
) -> ClusterOptions | None:
    """What the options ask for: a cluster, or None (run here). ``--workers`` and
    ``--processes`` win over a scheduler named only by the environment
    (``DASK_SCHEDULER_ADDRESS``); ``--workers`` and ``--scheduler`` both on the command line
    is a usage error."""
    ctx = click.get_current_context()
    if scheduler is not None and (workers is not None or processes is not None):
        source = ctx.get_parameter_source("scheduler")
        if source is not None and source.name == "ENVIRONMENT":
            scheduler = None
        elif workers is not None:
            raise click.UsageError("--workers and --scheduler exclude each other")
    if workers is None and scheduler is None:
        return None
    from regstore.cluster import ClusterOptions

    return ClusterOptions(workers=workers, scheduler=scheduler, connect_timeout=connect_timeout)


class ClusterRun:
    """The CLI side of a cluster sync: registry access without secrets for each client the
    planner made, and the run itself with progress on this terminal."""

    def __init__(self, state: AppState, options: ClusterOptions) -> None:
        s = state.settings
        if s.username is not None:
            raise click.UsageError(
                "--username/--password-stdin cannot be used with --workers/--scheduler: the "
                "password would travel to every worker. Name it in the sync file "
                "(username + password_env, read by each worker from its environment) or log "
                "the workers in (regstore login / docker login)"
            )
        self.state = state
        self.options = options
        self._access: dict[int, RegistryAccess] = {}
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        click.get_current_context().call_on_close(self.close)

    def remember(self, client: RegistryClient, conn: ConnectionSpec) -> None:
        """Note how workers reach the registry of ``client`` (made for ``conn``)."""
        from regstore.cluster import RegistryAccess

        s = self.state.settings
        insecure = s.insecure or not conn.tls_verify
        verify: bool | str = False if insecure else (conn.ca_cert or s.ca_cert or True)
        self._access.setdefault(
            id(client),
            RegistryAccess(
                registry=conn.registry,
                plain_http=True if s.plain_http else conn.plain_http,
                verify=verify,
                username=conn.username,
                password_env=conn.password_env,
                retries=s.retries,
            ),
        )

    def access_for(self, client: RegistryClient) -> RegistryAccess:
        return self._access[id(client)]

    def start(self, store_url: str | None) -> None:
        """Check what can be checked before planning (minutes of tag listing for a big sync
        file): the store URL (``store_url``, None for a registry target) carries no secret,
        and an existing scheduler answers. A local cluster is started only when there is an
        image to move (a no-op resync never starts one)."""
        self._check(store_url)
        if self.options.scheduler is not None:
            self._connect()

    @staticmethod
    def _check(store_url: str | None) -> None:
        from regstore.cluster import check_store_url

        if store_url is not None:
            try:
                check_store_url(store_url)
            except UsageError as exc:
                raise click.UsageError(str(exc)) from None

    def _connect(self) -> Any:
        if self._client is None:
            from regstore.cluster import open_cluster

            self._client = self._stack.enter_context(open_cluster(self.options))
        return self._client

    def close(self) -> None:
        """Close the client, and a local cluster with its worker processes."""
        self._client = None
        self._stack.close()

    def run(
        self,
        plan: SyncPlan,
        store_url: str | None,
        keep_going: bool,
        referrer_types: tuple[str, ...] = (),
    ) -> BatchResult:
        """Run ``plan`` on the cluster, with progress on stderr (bytes, rate, images done)."""
        from regstore.cluster import run_sync_on_cluster

        state = self.state
        self._check(store_url)
        display = state.progress()
        started = time.monotonic()

        def on_outcome(outcome: ImageOutcome, done: int, total: int) -> None:
            if display.mode == "off":
                return
            elapsed = max(time.monotonic() - started, 1e-3)
            rate = display.totals.snapshot().bytes_done / elapsed
            where = f" on {outcome.worker}" if outcome.worker else ""
            display.note(
                f"image {done}/{total} {outcome.status}: {outcome.source}{where} "
                f"({format_size(int(rate))}/s overall)"
            )

        try:
            with display:
                return run_sync_on_cluster(
                    plan,
                    self._connect,
                    access_for=self.access_for,
                    store_url=store_url,
                    concurrency=state.settings.concurrency,  # (else the sync file's)
                    chunk_size=state.chunk_size,
                    monolithic_threshold=state.monolithic_threshold,
                    events=display.sink,
                    keep_going=keep_going,
                    on_outcome=on_outcome,
                    referrer_types=referrer_types,
                )
        finally:
            self.close()
