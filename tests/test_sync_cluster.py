"""Sync beyond one process: on a Dask cluster (``--workers``, ``--scheduler``) and in shares
(``--shard I/N``), many writers into one store.

Real components throughout: docker-registry behind the counting fault proxy, the moto S3
server, filesystem stores, Dask clusters of worker *processes* on 127.0.0.1. Duplicate blob
writes are counted twice, as in tests/test_many_writers.py: by commit evidence (the blobs each
image reports it transferred: a blob written by two workers shows up twice) and by the
registry's blob GETs from offset 0 (a GET from a later offset resumes staged bytes).

One in-process LocalCluster (2 worker processes) serves the tests that look inside the
cluster (the pickled task graph, a worker killed mid-blob, S3); the CLI tests start their own
with ``--workers 2``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import distributed
import psutil
import pytest

from regstore.client import Client
from regstore.cluster import RegistryAccess, assign_by_bytes, run_sync_on_cluster
from regstore.engine import RegistryImage, copy
from regstore.engine.shards import Shard, shard_index
from regstore.engine.sync import load_sync_file, plan_sync
from regstore.engine.verify import verify
from regstore.errors import UsageError
from regstore.manifest import Manifest
from regstore.referrers import referrers_tag
from regstore.store import ObjectStore
from tests.engine_support import seed_registry
from tests.support.fake_registry import FakeRegistry
from tests.support.fixtures import DEFAULT_PASSWORD, DEFAULT_USER, S3Bucket
from tests.support.images import BuiltImage, build_image, build_layer, random_blob
from tests.support.proxy import FaultProxy
from tests.support.random_faults import Fault, RandomFaults
from tests.support.registry import RegistryServer
from tests.support.soak import (
    CliRun,
    StorePlace,
    blob_fetches,
    cli_environment,
    file_place,
    run_cli,
    s3_place,
)
from tests.support.spec_registry import Chain, push_image, serve_spec_registry

KiB = 1 << 10
MiB = 1 << 20
PASSWORD_ENV = "REGSTORE_TEST_CLUSTER_PASSWORD"
CLUSTER_GROUP = pytest.mark.xdist_group("dask-cluster")
WORKERS = ("--workers", "2")


# -- images ------------------------------------------------------------------------------------


def _images(seed: int, count: int = 6) -> dict[tuple[str, str], BuiltImage]:
    """``count`` images over two repositories: a base layer every image has, a layer shared by
    each pair, and one of their own."""
    base = build_layer({"base/os.bin": random_blob(256 * KiB, seed)})
    pairs = [
        build_layer({"pair/data.bin": random_blob(96 * KiB, seed + 10 + p)})
        for p in range((count + 1) // 2)
    ]
    return {
        ("cl/app" if i % 2 == 0 else "cl/tool", f"v{i}"): build_image(
            seed=seed + 100 + i,
            media="oci" if i % 3 else "docker",
            shared_layers=[base, pairs[i // 2]],
            layer_files=[{"own/data.bin": random_blob(32 * KiB, seed + 200 + i)}],
        )
        for i in range(count)
    }


def _seed(registry: RegistryServer, images: dict[tuple[str, str], BuiltImage]) -> None:
    for (name, tag), image in images.items():
        seed_registry(registry.url, name, tag, image)


def _sync_file(
    path: Path, host: str, images: dict[tuple[str, str], BuiltImage], auth: bool = False
) -> Path:
    by_repo: dict[str, list[str]] = {}
    for name, tag in images:
        by_repo.setdefault(name, []).append(tag)
    repos = "".join(
        f"      - name: {name}\n        tags: {json.dumps(tags)}\n"
        for name, tags in by_repo.items()
    )
    creds = f"    username: {DEFAULT_USER}\n    password_env: {PASSWORD_ENV}\n" if auth else ""
    path.write_text(
        f"sources:\n  - registry: {host}\n    plain_http: true\n{creds}    repositories:\n{repos}"
    )
    return path


def _s3_place(bucket: S3Bucket, lease: float = 3.0, staging: str = "direct") -> StorePlace:
    """An S3 store whose URL carries no credentials (the workers take them from the
    environment, AWS_ACCESS_KEY_ID...; a URL with key=/secret= is refused on a cluster)."""
    prefix = f"cl-{uuid.uuid4().hex[:8]}"
    query = f"endpoint_url={bucket.endpoint_url}&lease={lease:g}&staging={staging}"
    return StorePlace("s3", f"s3://{bucket.bucket}/{prefix}?{query}")


def _duplicates(report: dict[str, Any], proxy: FaultProxy) -> tuple[Counter[str], Counter[str]]:
    """(blobs transferred per digest by the report, fresh GETs per digest at the proxy)."""
    transferred: Counter[str] = Counter()
    for image in report["images"]:
        transferred.update((image["result"] or {}).get("transferred", []))
    fresh = Counter(f.digest for f in blob_fetches(proxy) if f.start == 0 and f.status == 200)
    return transferred, fresh


def _assert_written_once(report: dict[str, Any], proxy: FaultProxy) -> None:
    transferred, fresh = _duplicates(report, proxy)
    assert transferred, report
    assert {d: n for d, n in transferred.items() if n > 1} == {}
    assert {d: n for d, n in fresh.items() if n > 1} == {}
    assert set(fresh) == set(transferred)


def _verified(place: StorePlace) -> bool:
    """``verify`` finds every manifest and blob of the store whole (digests re-hashed)."""
    with contextlib.closing(place.open()) as store:
        report = verify(store)
    assert report.ok, [str(p) for p in report.problems]
    return True


def _assert_images(store: ObjectStore, images: dict[tuple[str, str], BuiltImage]) -> None:
    for (name, tag), image in images.items():
        assert str(store.manifest(name, tag).digest) == image.manifest_digest


def _split_evenly(
    images: dict[tuple[str, str], BuiltImage], host: str, count: int
) -> dict[tuple[str, str], BuiltImage]:
    """The images under tags chosen so that image i falls in share i % count (the reference
    includes the registry's port, which differs between runs)."""
    out = {}
    for i, ((name, tag), image) in enumerate(images.items()):
        k = 0
        while shard_index(f"{host}/{name}:{tag}-{k}", count) != i % count:
            k += 1
        out[(name, f"{tag}-{k}")] = image
    return out


class _SlowBlob(RandomFaults):
    """The first whole-body GET of one blob trickles out (``step`` bytes every 50 ms): long
    enough to act while a worker is in the middle of it. Everything else passes untouched."""

    def __init__(self, digest: str, size: int, step: int = 64 * KiB) -> None:
        super().__init__(seed=0, rate=1.0, drip_bytes=size, drip_step=step, drip_pause=0.05)
        self.digest = digest
        self.fired = False

    def decide(self, method: str, path: str, query: str, headers: Any) -> Fault | None:
        if method != "GET" or not path.endswith(self.digest) or headers.get("Range"):
            return None
        with self._lock:
            if self.fired:
                return None
            self.fired = True
        return Fault("drip")


# -- shards and balancing (no cluster) ---------------------------------------------------------


def test_shard_parse_refuses_what_is_not_i_of_n() -> None:
    assert Shard.parse("2/8") == Shard(2, 8)
    assert str(Shard.parse(" 1 / 1 ")) == "1/1"
    for bad in ("0/2", "3/2", "1/0", "x/2", "1-2", "", "-1/2", "1/2/3"):
        with pytest.raises(UsageError):
            Shard.parse(bad)


def test_shards_are_stable_disjoint_and_complete() -> None:
    refs = [f"127.0.0.1:5000/team/app{i % 7}:{i}" for i in range(300)]
    shares = [Shard(i, 4) for i in range(1, 5)]
    taken = [{r for r in refs if s.takes(r)} for s in shares]
    assert set().union(*taken) == set(refs)
    assert sum(len(t) for t in taken) == len(refs)  # disjoint
    assert all(len(t) > 30 for t in taken)  # roughly even
    # a pure function of the reference: pinned, so a change of hash breaks running shards loudly
    assert shard_index("127.0.0.1:5000/team/app:1", 4) == shard_index(
        "127.0.0.1:5000/team/app:1", 4
    )
    assert [shard_index(f"r/x:{i}", 3) for i in range(6)] == [
        int.from_bytes(hashlib.sha256(f"r/x:{i}".encode()).digest()[:8], "big") % 3
        for i in range(6)
    ]


def test_largest_first_onto_the_least_loaded_worker() -> None:
    sizes = [10 * MiB] * 50 + [5 * 1024 * MiB]
    chosen = assign_by_bytes(sizes, ["a", "b"])
    assert chosen[-1] == "a"  # the big one alone on one worker
    assert set(chosen[:-1]) == {"b"}  # the fifty small ones on the other
    loads = Counter[str]()
    sizes = [7, 5, 4, 3, 3, 2]
    for size, worker in zip(sizes, assign_by_bytes(sizes, "xyz"), strict=True):
        loads[worker] += size
    assert sorted(loads.values()) == [7, 8, 9]  # {7,2}, {5,3}, {4,3}: the optimum here
    with pytest.raises(ValueError):
        assign_by_bytes([1], [])


def test_cli_shard_option_is_validated(tmp_path: Path) -> None:
    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    env = cli_environment(tmp_path / "home")
    run = run_cli(["--store", str(tmp_path / "st"), "sync", str(sync), "--shard", "3/2"], env)
    assert run.process.returncode == 2, str(run)
    assert "the index must be 1 to 2" in run.stderr


def test_two_shards_at_once_into_one_prefix(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    s3_bucket: S3Bucket,
    tmp_path: Path,
) -> None:
    proxy = fault_proxy_factory(registry)
    images = _split_evenly(_images(7000, count=6), proxy.host, 2)
    _seed(registry, images)
    sync = _sync_file(tmp_path / "sync.yaml", proxy.host, images)
    place = s3_place(
        s3_bucket.endpoint_url, s3_bucket.bucket, f"sh-{uuid.uuid4().hex[:8]}", lease=30
    )
    env = cli_environment(tmp_path / "home")
    args = ["--store", place.url, "--json", "--concurrency", "4", "sync", str(sync)]

    runs = [CliRun([*args, "--shard", f"{i}/2"], env) for i in (1, 2)]
    for run in runs:
        assert run.wait(180) == 0, str(run)
    reports = [run.json() for run in runs]
    sources = [{i["source"] for i in r["images"]} for r in reports]
    assert len(sources[0]) == len(sources[1]) == 3  # as _split_evenly chose the tags
    assert not sources[0] & sources[1]
    assert sources[0] | sources[1] == {f"{proxy.host}/{n}:{t}" for n, t in images}
    merged = {"images": reports[0]["images"] + reports[1]["images"]}
    _assert_written_once(merged, proxy)
    assert _verified(place)
    with contextlib.closing(place.open()) as store:
        _assert_images(store, images)

    again = [CliRun([*args, "--shard", f"{i}/2"], env) for i in (1, 2)]
    for run in again:
        assert run.wait(180) == 0, str(run)
        report = run.json()
        assert report["copied"] == 0 and report["bytes_moved"] == 0
        assert {i["status"] for i in report["images"]} == {"skipped"}


# -- a local cluster through the CLI -----------------------------------------------------------


def _normalised(report: dict[str, Any]) -> dict[str, Any]:
    """A sync report without what legitimately differs between a local run and a cluster run:
    the worker, and which of the images sharing a blob wrote it (the other skipped it)."""
    out = {k: v for k, v in report.items() if k != "images"}
    images = []
    for image in report["images"]:
        image = {k: v for k, v in image.items() if k != "worker"}
        result = dict(image["result"] or {})
        if result:
            result["blobs"] = sorted(result.pop("transferred") + result.pop("skipped"))
            result.pop("bytes_moved")
        image["result"] = result
        images.append(image)
    out["images"] = images
    return out


def test_cli_workers_sync_matches_a_local_sync(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    images = _images(8000)
    _seed(registry, images)
    proxy = fault_proxy_factory(registry)
    sync = _sync_file(tmp_path / "sync.yaml", proxy.host, images)
    env = cli_environment(tmp_path / "home")
    place = file_place(tmp_path / "cluster-store")

    run = run_cli(
        ["--store", place.url, "--json", "sync", str(sync), "--workers", "2"], env, timeout=300
    )
    assert run.process.returncode == 0, str(run)
    report = run.json()
    assert report["ok"] and report["copied"] == len(images)
    assert len({i["worker"] for i in report["images"]}) >= 2, report["images"]
    assert all(i["worker"].startswith("tcp://127.0.0.1:") for i in report["images"])
    _assert_written_once(report, proxy)
    assert _verified(place)
    with contextlib.closing(place.open()) as store:
        _assert_images(store, images)

    local = run_cli(["--store", str(tmp_path / "local-store"), "--json", "sync", str(sync)], env)
    assert local.process.returncode == 0, str(local)
    assert "worker" not in local.stdout
    assert _normalised(report) == _normalised(local.json())
    assert report["bytes_moved"] == local.json()["bytes_moved"]

    # a resync: the submitting side finds every tag unchanged; no cluster is even started
    again = run_cli(
        ["--store", place.url, "--json", "sync", str(sync), "--workers", "2"], env, timeout=300
    )
    assert again.process.returncode == 0, str(again)
    assert again.json()["skipped"] == len(images) and again.json()["bytes_moved"] == 0
    assert {i["status"] for i in again.json()["images"]} == {"skipped"}
    assert "worker" not in again.stdout  # decided here, not on a worker

    # --prune: the submitting side deletes what the source lost, after the cluster's run
    with contextlib.closing(place.open()) as store:
        stale = build_image(seed=8999, layers=1, layer_size=1024)
        for digest, data in stale.blobs.items():
            with store.layer(digest).writer() as writer:
                writer.write(data)
                writer.commit(len(data))
        store.write_manifest("cl/app", "v99", Manifest.parse(stale.manifest_bytes))
    by_pattern = tmp_path / "by-pattern.yaml"
    by_pattern.write_text(re.sub(r"tags: \[.*\]", "tags: {include: ['^v']}", sync.read_text()))
    pruned = run_cli(
        ["--store", place.url, "--json", "sync", str(by_pattern), "--prune", "--workers", "2"],
        env,
        timeout=300,
    )
    assert pruned.process.returncode == 0, str(pruned)
    assert (pruned.json()["pruned"], pruned.json()["skipped"]) == (1, len(images))
    with contextlib.closing(place.open()) as store:
        assert "v99" not in store.tags("cl/app")
        _assert_images(store, images)


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


#: ``python -m regstore`` as started from a terminal. A shell starts a background job (a CI
#: run, say) with SIGINT ignored, its children inherit that, and Python then leaves it ignored:
#: the test's Ctrl-C would reach nothing. (regstore keeps an ignored SIGINT ignored, as it must.)
_WITH_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('regstore', run_name='__main__', alter_sys=True)"
)


def test_ctrl_c_cancels_the_cluster_cleanly(
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    big = build_image(seed=8500, layers=1, layer_size=6 * MiB)
    images = {("cl/big", "1"): big, **_images(8600, count=2)}
    _seed(registry, images)
    proxy = fault_proxy_factory(registry)
    layer = max(big.blobs, key=lambda d: len(big.blobs[d]))
    proxy.random = _SlowBlob(layer, len(big.blobs[layer]))
    sync = _sync_file(tmp_path / "sync.yaml", proxy.host, images)
    env = cli_environment(tmp_path / "home")
    place = file_place(tmp_path / "store")
    process = subprocess.Popen(
        [sys.executable, "-c", _WITH_CTRL_C, "--store", place.url, "sync", str(sync), *WORKERS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    lines: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 240
        # mid-run: the big blob trickles in on one worker, the small images are done
        while not (
            any(f.nbytes > 256 * KiB for f in blob_fetches(proxy) if f.digest == layer)
            and sum(line.startswith("image ") for line in list(lines)) >= 2
        ):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        workers = _descendants(process.pid)
        assert len(workers) >= 2  # the worker processes (and their helpers)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(60)
    err = "".join(lines)
    # progress on this terminal: the workers' blob events, and each image with the rate so far
    assert any(line.startswith("copied sha256:") for line in lines), err
    done = [line for line in lines if line.startswith("image ")]
    assert all(re.fullmatch(r"image [12]/3 copied: \S+ on tcp://127\.0\.0\.1:\d+ "
                            r"\(.+/s overall\)\n", line) for line in done), done  # fmt: skip
    assert process.returncode == 130, err
    assert "was interrupted" in err, err
    assert "Traceback" not in err, err
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, [p.cmdline() for p in alive]
    with contextlib.closing(place.open()) as store:
        # no tag names content that was not all written
        assert "cl/big" not in store.repositories() or store.tags("cl/big") == []


# -- a scheduler that does not answer ----------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("answering", ["silent", "refused"])
def test_a_scheduler_that_does_not_answer(answering: str, silent_port: int, tmp_path: Path) -> None:
    if answering == "refused":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
    else:
        port = silent_port
    sync = tmp_path / "s.yaml"  # the scheduler is asked before any registry
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    env = cli_environment(tmp_path / "home")
    address = f"tcp://127.0.0.1:{port}"
    args = ["--store", str(tmp_path / "st"), "sync", str(sync), "--connect-timeout", "2"]
    if answering == "silent":
        run = run_cli([*args, "--scheduler", address], env, timeout=120)
    else:  # named by Dask's own environment variable
        run = run_cli(args, {**env, "DASK_SCHEDULER_ADDRESS": address}, timeout=120)
    assert run.process.returncode == 1, str(run)
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, run.stderr
    assert f"cannot reach the Dask scheduler at {address} within 2 s" in errors[0]


def test_processes_win_over_a_scheduler_named_only_by_the_environment(
    silent_port: int, tmp_path: Path
) -> None:
    # DASK_SCHEDULER_ADDRESS in a CI environment made `--processes` a usage error ("exclude
    # each other") though only --processes was written; --workers already won over it
    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    env = {**cli_environment(tmp_path / "home"), "REGSTORE_RETRIES": "0"}
    env["DASK_SCHEDULER_ADDRESS"] = f"tcp://127.0.0.1:{silent_port}"
    args = ["--store", str(tmp_path / "st"), "--retries", "0", "sync", str(sync)]
    run = run_cli([*args, "--processes", "2"], env, timeout=120)
    assert run.process.returncode == 1, str(run)  # the registry at port 1: not the options
    assert "exclude each other" not in run.stderr and "scheduler" not in run.stderr
    assert "127.0.0.1:1" in run.stderr
    both = run_cli([*args, "--processes", "2", "--scheduler", "tcp://127.0.0.1:1"], env)
    assert both.process.returncode == 2 and "exclude each other" in both.stderr


def test_without_the_extra_the_error_names_it(tmp_path: Path) -> None:
    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from regstore.cli import main\n"
        f"main(['--store', {str(tmp_path / 'st')!r}, 'sync', {str(sync)!r}, "
        "'--scheduler', 'tcp://127.0.0.1:1'])\n"
    )
    env = cli_environment(tmp_path / "home")
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stderr
    assert "pip install 'regstore[dask]'" in run.stderr


def test_a_store_url_with_credentials_is_refused(tmp_path: Path) -> None:
    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    env = cli_environment(tmp_path / "home")
    url = "s3://bucket/p?key=AKIAEXAMPLEKEY&secret=very-secret-value"
    run = run_cli(["--store", url, "sync", str(sync), "--workers", "1"], env)
    assert run.process.returncode == 2, str(run)
    assert "carries credentials" in run.stderr
    assert "very-secret-value" not in run.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [("memory://mirror", "lives in one process"), ("mirror/store", "is relative"),
     ("file://mirror", "is relative")],
)  # fmt: skip
def test_a_store_the_workers_cannot_share_is_refused(tmp_path: Path, url: str, says: str) -> None:
    # each worker process would fill its own memory:// (lost when the cluster closes) or its
    # own relative directory, while the report said every image had moved
    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    env = cli_environment(tmp_path / "home")
    run = run_cli(["--store", url, "sync", str(sync), "--workers", "1"], env)
    assert run.process.returncode == 2, str(run)
    assert says in run.stderr


# -- inside a cluster (in-process LocalCluster, 2 worker processes) ----------------------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[distributed.Client]:
    """A local cluster of 2 worker processes; they inherit the registry password's variable
    and S3 credentials from this environment (as workers would from their own)."""
    names = (PASSWORD_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(
        {
            PASSWORD_ENV: DEFAULT_PASSWORD,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=2,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        client.close()
        cluster.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Recording:
    """A Dask client that keeps the pickled bytes of every task it submits."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        self.pickled: list[bytes] = []

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.pickled.append(pickle.dumps((fn, args, kwargs)))
        return self._client.submit(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _plan(sync: Path, store: ObjectStore | None) -> tuple[Any, Callable[[Any], RegistryAccess]]:
    """The plan of ``sync`` made here, and the secret-free access for its clients."""
    spec = load_sync_file(sync)
    access: dict[int, RegistryAccess] = {}

    def client_for(conn: Any) -> Client:
        client = Client(
            conn.registry,
            plain_http=conn.plain_http,
            username=conn.username,
            password=conn.password(),
        )
        access[id(client)] = RegistryAccess(
            conn.registry,
            plain_http=conn.plain_http,
            username=conn.username,
            password_env=conn.password_env,
        )
        return client

    plan = plan_sync(spec, client_for=client_for, target_store=store)
    return plan, lambda client: access[id(client)]


@CLUSTER_GROUP
def test_credentials_never_travel_in_the_task_graph(
    dask_client: distributed.Client,
    registry: RegistryServer,
    basic_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    images = _images(9000, count=4)
    _seed(registry, images)
    open_client = Client(registry.host)
    authed = Client(basic_registry.host, username=DEFAULT_USER, password=DEFAULT_PASSWORD)
    for name, tag in images:  # the registry that needs the password gets the images
        copy(RegistryImage(open_client, name, tag), RegistryImage(authed, name, tag))
    sync = _sync_file(tmp_path / "sync.yaml", basic_registry.host, images, auth=True)
    place = file_place(tmp_path / "store")
    store = place.open()
    recording = _Recording(dask_client)
    try:
        plan, access_for = _plan(sync, store)
        batch = run_sync_on_cluster(plan, recording, access_for=access_for, store_url=place.url)
    finally:
        store.close()
    assert batch.ok, [o.error for o in batch.outcomes]
    assert len(recording.pickled) == len(images)
    for blob in recording.pickled:
        assert DEFAULT_PASSWORD.encode() not in blob
        assert PASSWORD_ENV.encode() in blob  # the variable's name travels, not its value
    assert len({o.worker for o in batch.outcomes}) >= 2
    with contextlib.closing(place.open()) as check:
        _assert_images(check, images)


@CLUSTER_GROUP
def test_cluster_into_s3_writes_each_blob_once(
    dask_client: distributed.Client,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    s3_bucket: S3Bucket,
    tmp_path: Path,
) -> None:
    images = _images(9100, count=6)
    _seed(registry, images)
    proxy = fault_proxy_factory(registry)
    sync = _sync_file(tmp_path / "sync.yaml", proxy.host, images)
    place = _s3_place(s3_bucket, lease=30)
    events: list[Any] = []
    lock = threading.Lock()

    def sink(event: Any) -> None:
        with lock:
            events.append(event)

    with contextlib.closing(place.open()) as store:
        plan, access_for = _plan(sync, store)
        batch = run_sync_on_cluster(
            plan, dask_client, access_for=access_for, store_url=place.url, events=sink
        )
        assert batch.ok, [o.error for o in batch.outcomes]
        _assert_images(store, images)
    report = batch.as_dict()
    assert len({i["worker"] for i in report["images"]}) >= 2
    _assert_written_once(report, proxy)
    assert _verified(place)
    with lock:  # the workers' events reached this side: every blob written was verified
        verified = {e.digest for e in events if e.kind.value == "verified"}
    assert verified == set(_duplicates(report, proxy)[0])


@CLUSTER_GROUP
@pytest.mark.parametrize("kind", ["file", "s3-parts", "s3-direct"])
def test_a_worker_killed_mid_blob(
    kind: str,
    dask_client: distributed.Client,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The killed writer's staged bytes are resumed by the worker that runs the task next:
    at once on a local disk (the kernel drops the dead writer's flock), after the lease on S3
    (3 s here: the dead writer's lock object is not renewed). A direct S3 write cannot re-read
    the parts in its upload: the next worker reads the blob again from the start."""
    # the engine writes what it read in buffers of 4 MiB and S3 stages parts of 5 MiB: a
    # 12 MiB blob has 4 MiB or more staged while the rest still trickles in (about 2.5 MB/s)
    big = build_image(seed=9200, layers=1, layer_size=12 * MiB)
    images = {("cl/big", "1"): big, **_images(9300, count=3)}
    _seed(registry, images)
    proxy = fault_proxy_factory(registry)
    layer = max(big.blobs, key=lambda d: len(big.blobs[d]))
    proxy.random = _SlowBlob(layer, len(big.blobs[layer]), step=128 * KiB)
    sync = _sync_file(tmp_path / "sync.yaml", proxy.host, images)
    if kind == "file":
        place = file_place(tmp_path / "store")
    else:
        staging = kind.partition("-")[2]
        place = _s3_place(request.getfixturevalue("s3_bucket"), lease=3, staging=staging)
    pids = dask_client.run(os.getpid)

    result: dict[str, Any] = {}
    with contextlib.closing(place.open()) as store:
        plan, access_for = _plan(sync, store)
        big_index = next(i for i, j in enumerate(plan.jobs) if j.source.name == "cl/big")

        def run() -> None:
            try:
                result["batch"] = run_sync_on_cluster(
                    plan, dask_client, access_for=access_for, store_url=place.url
                )
            except BaseException as exc:
                result["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 180
        victim = None
        while victim is None:
            assert time.monotonic() < deadline and thread.is_alive(), result
            staged = sum(e.size for e in store.staging() if e.digest == layer) >= 4 * MiB
            if staged:
                for address, keys in dask_client.processing().items():
                    if any(str(k).endswith(f"-{big_index}") for k in keys):
                        victim = address
            time.sleep(0.02)
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(240)
        assert not thread.is_alive()
    assert "error" not in result, result
    batch = result["batch"]
    assert batch.ok, [o.error for o in batch.outcomes]
    fetches = [f for f in blob_fetches(proxy) if f.digest == layer]
    if kind == "s3-direct":  # read again from the start by the next worker
        assert [f.start for f in fetches] == [0, 0], fetches
    else:
        assert any(f.start > 0 for f in fetches), fetches  # the next worker resumed them
        assert sum(1 for f in fetches if f.start == 0) == 1
    assert _verified(place)
    with contextlib.closing(place.open()) as store:
        _assert_images(store, images)


@CLUSTER_GROUP
@pytest.mark.parametrize("keep_going", [True, False])
def test_keep_going_and_fail_fast_on_the_cluster(
    keep_going: bool,
    dask_client: distributed.Client,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    images = _images(9400, count=4)
    _seed(registry, images)
    missing = {("cl/app", "gone"): images[("cl/app", "v0")]}  # listed in the file, not pushed
    sync = _sync_file(tmp_path / "sync.yaml", registry.host, {**missing, **images})
    place = file_place(tmp_path / "store")
    with contextlib.closing(place.open()) as store:
        plan, access_for = _plan(sync, store)
        batch = run_sync_on_cluster(
            plan, dask_client, access_for=access_for, store_url=place.url, keep_going=keep_going
        )
    statuses = Counter(o.status for o in batch.outcomes)
    assert not batch.ok
    assert statuses["failed"] == 1
    failed = batch.by_status("failed")[0]
    assert failed.source.endswith("/cl/app:gone") and failed.error
    if keep_going:
        assert statuses["copied"] == len(images)
    else:  # the rest is either done already or cancelled: nothing else failed
        assert statuses["copied"] + statuses["cancelled"] == len(images)
        assert all(o.error for o in batch.by_status("cancelled"))
        # a task a worker had started may finish after its cancellation: never "not attempted"
        assert all("not attempted" not in (o.error or "") for o in batch.by_status("cancelled"))
        with contextlib.closing(place.open()) as store:
            tagged = {f"store:{n}:{t}" for n in store.repositories() for t in store.tags(n)}
        for outcome in batch.by_status("cancelled"):
            if outcome.destination in tagged:
                assert "may have moved it already" in (outcome.error or "")


@CLUSTER_GROUP
def test_the_sync_files_concurrency_holds_on_the_workers(
    dask_client: distributed.Client,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    # defaults: {concurrency: 1} (a rate-limited registry) held in one process; every task
    # of a cluster sync moved 4 blobs at once
    images = _images(9450, count=2)
    _seed(registry, images)
    sync = _sync_file(tmp_path / "sync.yaml", registry.host, images)
    sync.write_text("defaults: {concurrency: 1}\n" + sync.read_text())
    place = file_place(tmp_path / "store")
    with contextlib.closing(place.open()) as store:
        plan, access_for = _plan(sync, store)
        graph: list[Any] = []
        batch = run_sync_on_cluster(
            plan,
            _RecordingClient(dask_client, graph),
            access_for=access_for,
            store_url=place.url,
        )
    assert batch.ok and len(graph) == 2
    assert {task.concurrency for task in graph} == {1}
    with contextlib.closing(place.open()) as store:
        plan, access_for = _plan(sync, store)
        graph.clear()
        run_sync_on_cluster(
            plan,
            _RecordingClient(dask_client, graph),
            access_for=access_for,
            store_url=place.url,
            concurrency=3,  # --concurrency wins
            skip_unchanged=False,
        )
    assert {task.concurrency for task in graph} == {3}


class _RecordingClient:
    """A Dask client that keeps the image tasks submitted to it (as the scheduler gets them)."""

    def __init__(self, client: distributed.Client, graph: list[Any]) -> None:
        self._client = client
        self._graph = graph

    def submit(self, function: Any, task: Any, **options: Any) -> Any:
        self._graph.append(pickle.loads(pickle.dumps(task)))
        return self._client.submit(function, task, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_an_image_a_worker_cannot_start_is_reported_as_a_local_sync_reports_it(
    tmp_path: Path,
) -> None:
    # its destination was the bare repository name ("sec/app0"), a local sync's is
    # "store:sec/app0:t0": tooling matching --json entries by destination missed it
    from regstore.cluster.tasks import ImageTask, run_image_task

    access = RegistryAccess("127.0.0.1:1", plain_http=True, retries=0)
    task = ImageTask(access, "sec/app0", "t0", "sec/app0", "t0", store_url="nosuch:///x")
    outcome = run_image_task(task)
    assert outcome.status == "failed" and "nosuch" in (outcome.error or "")
    assert (outcome.source, outcome.destination) == ("127.0.0.1:1/sec/app0:t0", "store:sec/app0:t0")
    by_digest = ImageTask(access, "a", "sha256:" + "0" * 64, "b", "sha256:" + "0" * 64,
                          target=RegistryAccess("127.0.0.1:2", plain_http=True, retries=0),
                          store_url=None)  # fmt: skip
    failed = run_image_task(by_digest)
    assert failed.status == "failed"
    assert failed.source == f"127.0.0.1:1/a@sha256:{'0' * 64}"
    assert failed.destination == f"127.0.0.1:2/b@sha256:{'0' * 64}"


@CLUSTER_GROUP
def test_chunk_size_bounds_the_workers_uploads_into_a_registry_target(
    dask_client: distributed.Client,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    # --chunk-size (a proxy capping request bodies) holds on the workers too
    big = build_image(seed=9500, layers=1, layer_size=3 * MiB + 5, media="oci")
    seed_registry(registry.url, "cl/big", "1", big)
    proxy = fault_proxy_factory(registry)
    sync = tmp_path / "sync.yaml"
    sync.write_text(
        f"target:\n  registry: {proxy.host}\n  plain_http: true\n  prefix: chunked\n"
        f"sources:\n  - registry: {registry.host}\n    plain_http: true\n"
        "    repositories:\n      - name: cl/big\n        tags: ['1']\n"
    )
    plan, access_for = _plan(sync, None)
    batch = run_sync_on_cluster(
        plan, dask_client, access_for=access_for, chunk_size=MiB, monolithic_threshold=MiB
    )
    assert batch.ok, [o.error for o in batch.outcomes]
    assert [o.worker for o in batch.outcomes if o.worker]  # moved on a worker, not here
    bodies = [r.request_bytes for r in proxy.requests_matching(None, r"/blobs/uploads/")]
    assert bodies and max(bodies) <= MiB  # the 3 MiB layer too: PATCHes, no monolithic PUT
    assert len(proxy.requests_matching("PATCH", r"/chunked/cl/big/blobs/uploads/")) >= 4
    copied = Client(registry.host).get_image_manifest("chunked/cl/big", "1")
    assert str(copied.digest) == big.manifest_digest


def test_cli_credentials_are_refused_on_a_cluster(tmp_path: Path) -> None:
    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:1\n    repositories: [a]\n")
    env = cli_environment(tmp_path / "home")
    options = ["--store", str(tmp_path / "st"), "--username", "u", "--password-stdin"]
    run = subprocess.run(
        [sys.executable, "-m", "regstore", *options, "sync", str(sync), *WORKERS],
        input="a-password-that-must-stay-here\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "cannot be used with --workers/--scheduler" in run.stderr
    assert "password_env" in run.stderr


@CLUSTER_GROUP
def test_cli_submits_to_an_existing_scheduler(
    dask_client: distributed.Client,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    images = _images(9500, count=4)
    _seed(registry, images)
    proxy = fault_proxy_factory(registry)
    sync = _sync_file(tmp_path / "sync.yaml", proxy.host, images)
    place = file_place(tmp_path / "store")
    env = cli_environment(tmp_path / "home")
    address = dask_client.scheduler.address
    run = run_cli(["--store", place.url, "--json", "sync", str(sync), "--scheduler", address], env)
    assert run.process.returncode == 0, str(run)
    report = run.json()
    assert report["ok"] and report["copied"] == len(images)
    assert {i["worker"] for i in report["images"]} <= set(dask_client.ncores())
    _assert_written_once(report, proxy)
    assert _verified(place)
    with contextlib.closing(place.open()) as store:
        _assert_images(store, images)


@CLUSTER_GROUP
def test_referrers_travel_on_the_cluster(
    dask_client: distributed.Client, fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    """A sync file's ``referrers: true`` holds on a cluster too: the worker moves the image's
    signature, SBOM and attestation; an unchanged image is still handed to a worker, which
    looks for new referrers."""
    chain = Chain(seed=31)
    serve_spec_registry(fake_registry)
    with Client(fake_registry.url) as client:
        push_image(client, "app", chain.image, "v1")
        push_image(client, "app", chain.sig, chain.sig_tag)
        push_image(client, "app", chain.sbom)
        push_image(client, "app", chain.attestation)
    host = fake_registry.url.removeprefix("http://")
    sync = tmp_path / "sync.yaml"
    sync.write_text(
        f"sources:\n  - registry: {host}\n    referrers: true\n    repositories: [app]\n"
    )
    place = file_place(tmp_path / "store")
    for run in (1, 2):
        with contextlib.closing(place.open()) as store:
            plan, access_for = _plan(sync, store)
            batch = run_sync_on_cluster(
                plan, dask_client, access_for=access_for, store_url=place.url
            )
            assert batch.ok, [o.error for o in batch.outcomes]
            (outcome,) = batch.outcomes
            assert outcome.worker in set(dask_client.ncores())  # a worker ran it both times
            assert outcome.status == ("copied" if run == 1 else "skipped")
            assert set(store.tags("app")) == {
                "v1",
                chain.sig_tag,
                referrers_tag(chain.image.digest),
                referrers_tag(chain.sbom.digest),
            }
            assert [d.digest for d in store.referrers("app", chain.sbom.digest)] == [
                chain.attestation.digest
            ]
