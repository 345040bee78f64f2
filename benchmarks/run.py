"""The benchmark suite: regstore against skopeo, s3fs and this machine's ceilings.

    python benchmarks/run.py            # the full run: writes benchmarks/RESULTS.md + results.png
    python benchmarks/run.py --quick    # a smoke run (small sizes, one repetition, < 2 min)

It builds its images locally, starts a real ``docker-registry`` (and a fresh one for each push
or copy), moto's S3 server, all on loopback, and runs every workload several times, each run a
fresh process measured from outside (``os.wait4``: wall time, peak RSS, CPU seconds): the
``regstore`` CLI as users run it, ``skopeo``, ``curl``, and the ceilings of
``benchmarks/ceilings.py``. It reports the median, min and max, bytes/s, peak RSS and CPU
seconds per GB, the ratios against the targets of issue 16, and which misses a ceiling
measured in the same run explains. Ratios are what count: the disk of a shared VM varies
several-fold from one run to the next.

Nothing in the test suite asserts a timing; ``--quick`` runs in CI to keep this from rotting.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.engine import seed_registry, seed_single_layer_image  # noqa: E402
from tests.support.moto_server import MotoServer  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402

from regstore.cli.syncforked import default_processes  # noqa: E402
from regstore.manifest import digest_of  # noqa: E402
from regstore.testing.builders import build_image, build_index  # noqa: E402

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
HERE = Path(__file__).resolve().parent
CEILINGS = [sys.executable, str(HERE / "ceilings.py")]
S3_OPTIONS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


@dataclass(frozen=True)
class Sizes:
    """How big the workloads are (full run or --quick)."""

    big: int  #: the single-layer image
    five_layer: int  #: the five-layer image, all layers together
    index_layer: int  #: each platform's one layer in the 10-platform index
    small_images: int  #: images of the mirror workload
    runs: int
    small: int  #: the small single-layer image of the RSS probes (peak RSS against layer size)


FULL = Sizes(
    big=1024 * MiB,
    five_layer=150 * 1000 * 1000,
    index_layer=4 * MiB,
    small_images=300,
    runs=3,
    small=10 * MiB,
)
QUICK = Sizes(
    big=24 * MiB, five_layer=10 * MiB, index_layer=256 * 1024, small_images=20, runs=1, small=MiB
)


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Sample:
    """One run of one runner: what the process cost."""

    seconds: float
    rss_mib: float
    cpu_seconds: float
    #: what the child said of its own run: the JSON object on the last line of its output,
    #: if any (a ceiling of ``ceilings.py``: ``{"seconds": ..., "direct": false}``)
    report: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds the suite's servers (registries, moto) spent during the run: the work the
    #: runner made them do, on the same cores
    server_cpu_seconds: float | None = None
    #: the share of all this machine's CPU time that was busy during the run (1.0: every core
    #: all the time), whoever used it: near 1, the CPUs were saturated
    machine_busy: float | None = None


@dataclass
class Runner:
    """One way of doing a workload: regstore, a peer or a ceiling."""

    name: str
    kind: str  #: "regstore", "peer" or "ceiling"
    command: Callable[[int], list[str]]  #: the command of run i
    prepare: Callable[[int], None] | None = None  #: fresh state for run i (not timed)
    cleanup: Callable[[int], None] | None = None
    env: dict[str, str] | None = None
    #: checks run i's result after the timed part, before cleanup (not timed); raises when
    #: the runner did not do the work (its figure would be wrong), which records an error
    verify: Callable[[int], None] | None = None
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def median(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None

    def fastest(self) -> float | None:
        return min(s.seconds for s in self.samples) if self.samples else None


@dataclass
class Workload:
    """What is moved, how many bytes, and the runners compared on it."""

    name: str
    title: str
    nbytes: int
    runners: list[Runner]
    #: (runner name, target: regstore must be at least this many times as fast) for the table
    targets: list[tuple[str, float]] = field(default_factory=list)
    rss_bound: bool = True  #: regstore's peak RSS must stay within RSS_LIMIT_MIB
    note: str = ""
    #: regstore doing the same on the small image, for its peak RSS only (issue 16: peak RSS
    #: independent of layer size); not one of the runners compared in the targets
    rss_probe: Runner | None = None
    #: run once after all runs of every runner (not timed): for outputs that must not be
    #: deleted between runs (see ``mirror-first``)
    cleanup: Callable[[], None] | None = None
    #: regstore's median wall time must stay within this many seconds (the CLI's start-up)
    time_bound_s: float | None = None
    #: rounds per run asked (``--runs``): a workload of a fraction of a second is measured
    #: this many times as often, since one run's jitter there (a neighbour's writeback, the
    #: registry's garbage collector) is as large as the differences it measures
    rounds: int = 1


RSS_LIMIT_MIB = 100.0
#: rounds per run of the workloads that take a fraction of a second (start-up, no-op re-sync)
SHORT_ROUNDS = 4
#: issue 16: ``regstore --help`` (the import of the CLI) within this many seconds
STARTUP_LIMIT_S = 0.150
#: the big image's median peak RSS must be within this fraction of the small image's
RSS_SCALING_TOLERANCE = 0.10
#: GNU time (Debian package ``time``), for the peak RSS of each run; without it the figures
#: include this process's own size (Linux carries it into a forked child's peak).
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_ticks(stat: str) -> int | None:
    """CPU clock ticks (user + system, of every thread) from the text of ``/proc/PID/stat``;
    None when it is not such a text. The command name in parentheses may hold anything, so the
    fields are counted after its last ``)``: utime and stime are the 14th and 15th fields."""
    try:
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


def machine_ticks(stat: str) -> tuple[int, int] | None:
    """(busy, total) CPU clock ticks of all CPUs from the text of ``/proc/stat``; None when it
    is not such a text. Idle and iowait are not busy; steal (time a hypervisor gave another
    guest) is; guest time is already inside user and nice."""
    first = stat.split("\n", 1)[0].split()
    if not first or first[0] != "cpu":
        return None
    try:
        values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    except ValueError:
        return None
    if len(values) < 5:
        return None
    return sum(values) - values[3] - values[4], sum(values)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:  # gone, or no /proc
        return ""


def measure(
    command: list[str], env: dict[str, str] | None = None, servers: Sequence[int] = ()
) -> Sample:
    """Run ``command`` as a child; its wall time (or its own ``{"seconds"}`` report), peak
    RSS and CPU time from ``wait4``, the CPU time the ``servers`` (process ids) spent
    meanwhile and how busy the machine was. Raises RuntimeError with its stderr when it
    fails."""
    server_ticks = {pid: process_ticks(_read(f"/proc/{pid}/stat")) for pid in servers}
    machine_before = machine_ticks(_read("/proc/stat"))
    with (
        tempfile.TemporaryFile() as out_file,
        tempfile.TemporaryFile() as err_file,
        tempfile.NamedTemporaryFile("r") as usage_file,
    ):
        # GNU time forks the command from its own small process and reports that child's
        # rusage: a child forked from this (large) process would carry its peak RSS along
        wrapped = (
            [TIME, "-q", "-f", "%M %U %S", "-o", usage_file.name, *command] if TIME else command
        )
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, stdout=out_file, stderr=err_file, env={**os.environ, **(env or {})}, cwd=ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        machine_after = machine_ticks(_read("/proc/stat"))
        server_after = {pid: process_ticks(_read(f"/proc/{pid}/stat")) for pid in server_ticks}
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
        rss_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        if TIME:
            fields = usage_file.read().split()
            with contextlib.suppress(ValueError, IndexError):
                rss_kib, cpu = int(fields[-3]), float(fields[-2]) + float(fields[-1])
    if proc.returncode != 0:
        tail = (err or out).decode(errors="replace").strip().splitlines()[-8:]
        raise RuntimeError(
            f"{' '.join(command[:4])}... exited {proc.returncode}: " + " | ".join(tail)
        )
    busy = None
    if machine_before is not None and machine_after is not None:
        total = machine_after[1] - machine_before[1]
        busy = (machine_after[0] - machine_before[0]) / total if total > 0 else None
    # unknown (None), not 0, when no server could be read, or one read at the start went
    # away meanwhile (taking its CPU time along); one already gone at the start ran no part
    started = {pid: before for pid, before in server_ticks.items() if before is not None}
    spent = [
        None if (after := server_after[pid]) is None else after - before
        for pid, before in started.items()
    ]
    server_cpu = None
    if spent and None not in spent:
        server_cpu = sum(t for t in spent if t is not None) / _CLOCK_TICKS
    # Wall time of the whole process for every runner, ceilings included: the same yardstick
    # (a ceiling's interpreter starts in ~30 ms; regstore's start-up is part of its cost).
    return Sample(
        elapsed,
        rss_kib / 1024,
        cpu,
        _own_report(out),
        server_cpu_seconds=server_cpu,
        machine_busy=busy,
    )


def _own_report(out: bytes) -> dict[str, Any]:
    """The JSON object on the last line of a child's output, else nothing."""
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def check_blob(host: str, repo: str, digest: str, size: int) -> None:
    """Raise RuntimeError unless the registry at ``host`` holds blob ``digest`` of ``size``
    bytes in ``repo``: a HEAD answering 200 with that Content-Length. A push or copy that
    left anything else (another digest, a recompressed layer) has no comparable figure."""
    conn = http.client.HTTPConnection(host, timeout=120)
    try:
        conn.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        response = conn.getresponse()
        response.read()
        length = response.getheader("Content-Length")
    finally:
        conn.close()
    if response.status != 200 or length != str(size):
        raise RuntimeError(
            f"the target does not hold {repo}@{digest} of {size} bytes (HEAD answered "
            f"{response.status}, Content-Length {length}): the run did not push the same bytes"
        )


def check_file(path: Path, size: int) -> None:
    """Raise RuntimeError unless ``path`` is a file of ``size`` bytes (a pulled layer)."""
    found = path.stat().st_size if path.is_file() else None
    if found != size:
        raise RuntimeError(
            f"{path} holds {found} bytes, not {size}: the run did not write the same bytes"
        )


def drop_caches_hint() -> None:
    """Flush dirty pages before a run, so one run's writeback is not billed to the next."""
    os.sync()


def free_memory_for(warm: Path, nbytes: int) -> Callable[[int], None]:
    """A ``prepare`` for runners that keep a whole blob of ``nbytes`` in RAM: 1.5 times as
    much memory is touched and given back first, so that the kernel reclaims the page cache the
    earlier workloads filled (GiBs of pulled layers) now rather than while the run allocates;
    then ``warm`` (the source registry's copy of the blob) is read, so that every run is served
    from the cache alike."""

    def prepare(i: int) -> None:  # run_all syncs right after it (drop_caches_hint)
        size = nbytes + nbytes // 2
        scratch = bytearray(size)
        # one write per page: a fresh bytearray this large is mapped, not yet touched, memory
        scratch[::4096] = b"\1" * len(range(0, size, 4096))
        del scratch
        read_in(warm)

    return prepare


def read_in(*roots: Path) -> None:
    """Read every file under ``roots`` (or the files themselves) into the page cache: a
    ``prepare`` that gives every runner of a workload the same cache state. A pull drops what
    the file store writes from the page cache as it writes it, so without this whichever
    runner read the pushed files first read them from the disk, the others from memory."""
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            with path.open("rb") as f:
                while f.read(8 * MiB):
                    pass


# -- the world: registries, S3, images ---------------------------------------------------------


class World:
    """The servers and images of one suite run, under one temporary directory."""

    def __init__(self, work: Path, sizes: Sizes) -> None:
        self.work = work
        self.sizes = sizes
        self.servers: list[Any] = []
        self.source = self.registry("source")
        self.moto = MotoServer(work / "moto").start()
        self.servers.append(self.moto)
        self.bucket = "regstore-bench"
        self.moto.create_bucket(self.bucket)
        self.nbytes: dict[str, int] = {}
        #: every distinct blob of the mirror workload's images (what a first mirror fetches)
        self.mirror_blobs: list[str] = []

    def registry(self, name: str) -> RegistryServer:
        server = RegistryServer(self.work / f"registry-{name}-{time.monotonic_ns()}").start()
        self.servers.append(server)
        return server

    def server_pids(self) -> list[int]:
        """The process ids of the servers running now (a push's fresh target included)."""
        return [s.pid for s in self.servers if s.running and s.pid is not None]

    def close(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()

    def seed(self) -> None:
        """Push every image of the suite into the source registry."""
        s, url = self.sizes, self.source.url
        seed_single_layer_image(url, "bench/big", "1", self.work, s.big)
        self.nbytes["big"] = s.big
        seed_single_layer_image(url, "bench/small", "1", self.work, s.small)
        self.nbytes["small"] = s.small
        five = build_image(layers=5, layer_size=s.five_layer // 5, seed=5, media="oci")
        seed_registry(url, "bench/five", "1", five)
        self.nbytes["five"] = sum(len(b) for b in five.blobs.values())
        index = build_index(
            media="oci", platforms=PLATFORMS, layers=1, layer_size=s.index_layer, seed=10
        )
        seed_registry(url, "bench/index", "1", index)
        self.nbytes["index"] = sum(len(b) for b in index.blobs.values())
        base = build_image(layers=1, layer_size=MiB, seed=300, media="oci")
        total = sum(len(b) for b in base.blobs.values())
        blobs: dict[str, None] = {}
        for i in range(s.small_images):
            image = build_image(
                layers=1,
                layer_size=16 * 1024,
                seed=1000 + i,
                media="oci",
                shared_layers=base.layers,
            )
            seed_registry(url, "mirror/app", f"t{i}", image)
            total += sum(len(b) for d, b in image.blobs.items() if d not in base.blobs)
            blobs.update(dict.fromkeys(image.blobs))
        self.nbytes["mirror"] = total
        self.mirror_blobs = list(blobs)

    def s3_url(self, prefix: str) -> str:
        query = "&".join(
            f"{k}={v}" for k, v in {**S3_OPTIONS, "endpoint_url": self.moto.endpoint_url}.items()
        )
        return f"s3://{self.bucket}/{prefix}?{query}"


PLATFORMS = [
    ("linux", arch)
    for arch in ("amd64", "arm64", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64")
] + [("linux", "arm", "v6"), ("linux", "arm", "v7")]


def regstore_cli(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "regstore"
    head = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from regstore.cli import main; main()"]
    )
    return [*head, "-q", *args]


def skopeo(subcommand: str, *args: str) -> list[str]:
    """A skopeo ``copy`` or ``sync`` that moves the very bytes regstore moves: without
    ``--preserve-digests`` skopeo gzips every layer labelled tar+gzip whose bytes are not
    gzip (the suite's generated layers), so it would write and push other, smaller blobs."""
    return ["skopeo", "--insecure-policy", subcommand, "--preserve-digests", *args]


def fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# -- the workloads -----------------------------------------------------------------------------


def workloads(world: World, have_skopeo: bool) -> list[Workload]:
    w, host = world.work, world.source.host
    src = world.source.url
    skopeo_env = {"XDG_DATA_HOME": str(w / "xdg"), "_CONTAINERS_ROOTLESS_UID": str(os.getuid())}
    big_digest = _layer_digest(world, "bench/big", "1")
    small_digest = _layer_digest(world, "bench/small", "1")
    small_name = f"regstore, {_size(world.nbytes['small'])} image"
    out: list[Workload] = []

    def peer(name: str, command: Callable[[int], list[str]], **kw: Any) -> list[Runner]:
        return [Runner(name, "peer", command, env=skopeo_env, **kw)] if have_skopeo else []

    def pull_workload(key: str, repo: str, title: str, *, all_platforms: bool = False) -> Workload:
        d = w / f"pull-{key}"
        copy_all = ["--all"] if all_platforms else []
        nbytes = world.nbytes[key]

        def write_ceiling(name: str, kind: str, file: str) -> Runner:
            """Writing as many bytes as the pull into one file (ceilings.py ``kind``)."""
            return Runner(
                name,
                "ceiling",
                lambda i: [*CEILINGS, kind, str(d / file), str(nbytes)],
                prepare=lambda i: d.mkdir(parents=True, exist_ok=True),
                cleanup=lambda i: fresh(d / file),
            )

        return Workload(
            f"pull-{key}",
            title,
            nbytes,
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli("--store", str(d / f"r{i}"), "pull", f"{host}/{repo}:1"),
                    prepare=lambda i: fresh(d / f"r{i}"),
                    cleanup=lambda i: fresh(d / f"r{i}"),
                ),
                *peer(
                    "skopeo",
                    lambda i: skopeo(
                        "copy",
                        *copy_all,
                        "--src-tls-verify=false",
                        f"docker://{host}/{repo}:1",
                        f"oci:{d / f's{i}'}:bench",
                    ),
                    prepare=lambda i: fresh(d / f"s{i}"),
                    cleanup=lambda i: fresh(d / f"s{i}"),
                ),
                write_ceiling("fsync'd write", "write", "ceil.bin"),
                write_ceiling("direct write", "write-direct", "direct.bin"),
            ],
            targets=[("skopeo", 3.0), ("fsync'd write", 0.9)],
        )

    # 0. the CLI's start-up: ``--help`` (issue 16's bound), and what a sync pays on top
    out.append(
        Workload(
            "startup",
            "regstore --help (start-up)",
            0,
            [
                Runner("regstore", "regstore", lambda i: regstore_cli("--help")),
                Runner(
                    "regstore sync --help", "regstore", lambda i: regstore_cli("sync", "--help")
                ),
                *peer("skopeo --help", lambda i: ["skopeo", "--help"]),
                Runner("interpreter", "ceiling", lambda i: [sys.executable, "-c", "pass"]),
            ],
            time_bound_s=STARTUP_LIMIT_S,
            rounds=SHORT_ROUNDS,
            note="the bound is on `regstore --help`, which imports no command; "
            "`regstore sync --help` also imports the sync command and the sync file's "
            "reader (the store, requests and the engine come when the command runs): not "
            "bounded, shown for what a command really pays; "
            "interpreter: this Python starting and doing nothing "
            "(site-packages included)",
        )
    )

    # 1. pulls into the file store
    big = pull_workload(
        "big", "bench/big", f"pull {_size(world.nbytes['big'])} single layer -> file store"
    )
    # the pulls of the big layer wrote it whole (the regstore store's own layout; skopeo's
    # OCI layout), so that no runner's figure is of other bytes
    pulled = w / "pull-big"
    big.runners[0].verify = lambda i: check_file(
        _blob_path(pulled / f"r{i}", big_digest), world.nbytes["big"]
    )
    if have_skopeo:
        big.runners[1].verify = lambda i: check_file(
            pulled / f"s{i}" / "blobs" / "sha256" / big_digest.split(":", 1)[1],
            world.nbytes["big"],
        )
    big.runners += [
        Runner(
            "loopback GET",
            "ceiling",
            lambda i: [*CEILINGS, "get", f"{src}/v2/bench/big/blobs/{big_digest}"],
        ),
        Runner("sha256", "ceiling", lambda i: [*CEILINGS, "sha256", str(world.nbytes["big"])]),
    ]
    probe_dir = w / "pull-small"
    big.rss_probe = Runner(
        small_name,
        "probe",
        lambda i: regstore_cli(
            "--store", str(probe_dir / f"r{i}"), "pull", f"{host}/bench/small:1"
        ),
        prepare=lambda i: fresh(probe_dir / f"r{i}"),
        cleanup=lambda i: fresh(probe_dir / f"r{i}"),
    )
    out.append(big)
    out.append(
        pull_workload(
            "five", "bench/five", f"pull {_size(world.nbytes['five'])} in 5 layers -> file store"
        )
    )
    out.append(
        pull_workload(
            "index",
            "bench/index",
            f"pull 10-platform index ({_size(world.nbytes['index'])}) -> file store",
            all_platforms=True,
        )
    )

    # 2. into memory://
    assert world.source.root is not None  # a filesystem registry
    warm_big = free_memory_for(_blob_path(world.source.root, big_digest), world.nbytes["big"])
    out.append(
        Workload(
            "pull-big-memory",
            f"pull {_size(world.nbytes['big'])} -> memory://",
            world.nbytes["big"],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli(
                        "--store", f"memory://bench{i}", "pull", f"{host}/bench/big:1"
                    ),
                    prepare=warm_big,
                ),
                Runner(
                    "GET + sha256",
                    "ceiling",
                    lambda i: [*CEILINGS, "get-hash", f"{src}/v2/bench/big/blobs/{big_digest}"],
                    prepare=warm_big,
                ),
                Runner(
                    "GET + sha256 + kept in RAM",
                    "ceiling",
                    lambda i: [
                        *CEILINGS,
                        "get-hash-keep",
                        f"{src}/v2/bench/big/blobs/{big_digest}",
                    ],
                    prepare=warm_big,
                ),
            ],
            targets=[("GET + sha256", 0.8), ("GET + sha256 + kept in RAM", 0.9)],
            rss_bound=False,
            note="memory:// holds the blob in the process by design: no RSS bound; before "
            "each run of each runner 1.5 times the blob's size is allocated, touched and freed, "
            "and the source registry's copy of the blob read, so that no run's allocations wait "
            "for the kernel to reclaim the page cache the earlier workloads filled",
        )
    )

    # 3. push from the file store into a fresh registry each run
    store = w / "push-source"
    oci_dir = w / "push-source-oci"

    def push_sources(reference: str) -> None:
        """Pull ``reference`` into the store regstore pushes from and, for skopeo, into an OCI
        layout: skopeo pushes from a layout regstore wrote, the seeded layers' very bytes (a
        `skopeo copy docker:// oci:` of the big layer rewrote it into a 97 KiB blob, and
        skopeo then "pushed 1 GiB" in 0.13 s)."""
        source = f"{host}/{reference}"
        subprocess.run(regstore_cli("--store", str(store), "pull", source), check=True)
        if have_skopeo:
            layout = f"{oci_dir.as_uri()}?layout=oci"
            subprocess.run(regstore_cli("--store", layout, "pull", source), check=True)

    push_sources("bench/big:1")
    subprocess.run(regstore_cli("--store", str(store), "pull", f"{host}/bench/small:1"), check=True)
    # curl PUTs the very file regstore pushes (read-only): a copy of it stayed in the page cache
    # while the store's own file, written by a pull, was dropped from it as it was written, and
    # the ceiling read from memory what regstore read from the disk
    blob_file = _blob_path(store, big_digest)
    targets: dict[int, RegistryServer] = {}

    def new_target(i: int) -> None:
        """The ``prepare`` of every push and copy: a fresh target, and what any runner reads
        (the store, the OCI layout, the source registry's big blob) in the page cache alike."""
        read_in(store, oci_dir, _blob_path(world.source.root, big_digest))
        targets[i] = world.registry(f"target{i}")

    def stop_target(i: int) -> None:
        server = targets.pop(i, None)
        if server is not None:
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)

    def target(i: int) -> str:
        return targets[i].host

    def holds_big(i: int) -> None:
        """The verify of a push or copy into run i's target: it holds the big layer, whole."""
        check_blob(target(i), "bench/big", big_digest, world.nbytes["big"])

    def holds_small(i: int) -> None:
        check_blob(target(i), "bench/small", small_digest, world.nbytes["small"])

    def push_probe(command: Callable[[int], list[str]]) -> Runner:
        """regstore pushing or copying the small image into a fresh target (RSS probe)."""
        return Runner(
            small_name,
            "probe",
            command,
            prepare=new_target,
            cleanup=stop_target,
            verify=holds_small,
        )

    curl_put = (
        'set -e; up="$1/v2/bench/big/blobs/uploads/"; '
        'loc=$(curl -s -o /dev/null -w "%{redirect_url}" -X POST "$up"); '
        '[ -n "$loc" ] || loc=$(curl -s -D - -o /dev/null -X POST "$up" '
        "| tr -d '\\r' | sed -n 's/^[Ll]ocation: //p'); "
        'case "$loc" in /*) loc="$1$loc";; esac; '
        'curl -s -f -o /dev/null -X PUT -H "Content-Type: application/octet-stream" '
        '-T "$2" "$loc&digest=$3"'
    )

    def ingest_ceiling() -> Runner:
        """The registry's own ingest of the big blob: one monolithic curl PUT into a fresh
        target (a new Runner each time: runners keep their samples)."""
        return Runner(
            "curl PUT (ingest)",
            "ceiling",
            lambda i: [
                "bash",
                "-c",
                curl_put,
                "curl-put",
                f"http://{target(i)}",
                str(blob_file),
                big_digest,
            ],
            prepare=new_target,
            cleanup=stop_target,
            verify=holds_big,
        )

    out.append(
        Workload(
            "push-big",
            f"push {_size(world.nbytes['big'])} file store -> fresh registry",
            world.nbytes["big"],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli(
                        "--store", str(store), "push", "bench/big:1", f"{target(i)}/bench/big:1"
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_big,
                ),
                *peer(
                    "skopeo",
                    lambda i: skopeo(
                        "copy",
                        "--dest-tls-verify=false",
                        f"oci:{oci_dir}:bench/big:1",
                        f"docker://{target(i)}/bench/big:1",
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_big,
                ),
                ingest_ceiling(),
            ],
            targets=[("curl PUT (ingest)", 0.95)],
            rss_probe=push_probe(
                lambda i: regstore_cli(
                    "--store", str(store), "push", "bench/small:1", f"{target(i)}/bench/small:1"
                )
            ),
        )
    )

    # 3b. the five-layer image and the 10-platform index, pushed the same way
    def push_workload(key: str, repo: str, title: str) -> Workload:
        """Push of ``repo:1`` from the file store (skopeo: from an OCI layout regstore wrote)
        into a fresh registry each run, against the registry's ingest of the same image."""
        push_sources(f"{repo}:1")
        image = _source_image(world, repo, "1")
        ingest = _ingest_script(w / f"push-{key}-ingest", store, repo, image)

        def holds_image(i: int) -> None:
            """The target serves the tag as the source's very manifest (docker-registry takes
            a manifest only once all it references is in the repository) and holds every
            blob whole."""
            served = _manifest_digest(f"http://{target(i)}", repo, "1")
            if served != image.digest:
                raise RuntimeError(
                    f"the target serves {repo}:1 as {served}, the source as {image.digest}: "
                    "the run did not push the same image"
                )
            for digest, size in image.blobs.items():
                check_blob(target(i), repo, digest, size)

        copy_all = ["--all"] if image.children else []
        return Workload(
            f"push-{key}",
            f"{title}, file store -> fresh registry",
            world.nbytes[key],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli(
                        "--store", str(store), "push", f"{repo}:1", f"{target(i)}/{repo}:1"
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_image,
                ),
                *peer(
                    "skopeo",
                    lambda i: skopeo(
                        "copy",
                        *copy_all,
                        "--dest-tls-verify=false",
                        f"oci:{oci_dir}:{repo}:1",
                        f"docker://{target(i)}/{repo}:1",
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_image,
                ),
                Runner(
                    "curl PUT (ingest)",
                    "ceiling",
                    lambda i: ["bash", str(ingest), f"http://{target(i)}"],
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_image,
                ),
            ],
            targets=[("curl PUT (ingest)", 0.95)],
            note=f"curl PUT (ingest): the registry taking the image as a plain client pushes "
            f"it: its {len(image.blobs)} blobs (configs and layers) by one monolithic PUT each "
            "(POST, then PUT with the digest; four at once, as regstore's default "
            f"--concurrency 4), then its {len(image.children) + 1} manifest(s), children first, "
            "one curl each (each blob's upload costs it a bash and two curl processes, "
            "a few ms)",
        )

    out.append(
        push_workload("five", "bench/five", f"push {_size(world.nbytes['five'])} in 5 layers")
    )
    out.append(
        push_workload(
            "index", "bench/index", f"push 10-platform index ({_size(world.nbytes['index'])})"
        )
    )

    # 4. registry -> registry
    out.append(
        Workload(
            "copy-big",
            f"copy {_size(world.nbytes['big'])} registry -> registry",
            world.nbytes["big"],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli(
                        "copy", f"{host}/bench/big:1", f"{target(i)}/bench/big:1"
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_big,
                ),
                *peer(
                    "skopeo",
                    lambda i: skopeo(
                        "copy",
                        "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        f"docker://{host}/bench/big:1",
                        f"docker://{target(i)}/bench/big:1",
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_big,
                ),
                ingest_ceiling(),
            ],
            targets=[("skopeo", 1.0)],
            rss_probe=push_probe(
                lambda i: regstore_cli(
                    "copy", f"{host}/bench/small:1", f"{target(i)}/bench/small:1"
                )
            ),
        )
    )

    # 5. many small images
    n = world.sizes.small_images
    syncfile = w / "mirror.yaml"
    mirror = w / "mirror"

    def write_syncfile(dest: Path) -> None:
        syncfile.write_text(
            json.dumps(
                {
                    "target": {"store": dest.as_uri()},
                    "sources": [
                        {
                            "registry": host,
                            "plain_http": True,
                            "repositories": [{"name": "mirror/app"}],
                        }
                    ],
                }
            )
        )

    def first_mirror(i: int) -> None:
        fresh(mirror / f"r{i}")
        write_syncfile(mirror / f"r{i}")

    def clear_first_mirrors() -> None:
        for path in mirror.iterdir():
            if path.name != "kept":
                fresh(path)

    # The store the no-op re-sync runs on; mirroring it also counts regstore's fsync calls:
    # the durability floor of a crash-safe mirror (skopeo's dir: destination fsyncs nothing).
    kept = mirror / "kept"
    write_syncfile(kept)
    # (in one process: the counting lives in this one. The mirror writes the same files, and
    # fsyncs each, in one process as in several; its directory fsyncs and syncfs calls, made
    # in groups, may differ by a few in several processes, each grouping its own)
    counted = subprocess.run(
        [*CEILINGS, "count-fsyncs", "-q", "sync", "--processes", "1", str(syncfile)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    durability = json.loads(counted.stdout.strip().splitlines()[-1])
    fsyncs, dir_fsyncs, syncfs = (int(durability[k]) for k in ("fsyncs", "dir_fsyncs", "syncfs"))
    # regstore's first mirror runs in this many processes, each moving 4 blobs at once (its
    # default --concurrency): the fsync floor makes its calls from as many threads
    processes = default_processes(n)
    fsync_threads = 4 * processes
    # The registry's own floor of a first mirror: the GETs it answers (each manifest by its
    # tag, each distinct blob once), from one curl over 8 parallel kept-alive connections
    # into /dev/null: what is left of regstore's time is its own work and the disk's.
    gets = w / "mirror-gets.curl"
    gets.write_text(
        "".join(
            f'url = "{src}/v2/mirror/app/{kind}/{ref}"\noutput = "/dev/null"\n'
            for kind, refs in (
                ("manifests", [f"t{k}" for k in range(n)]),
                ("blobs", world.mirror_blobs),
            )
            for ref in refs
        )
    )
    n_gets = n + len(world.mirror_blobs)

    out.append(
        Workload(
            "mirror-first",
            f"first mirror of {n} small images (shared base)",
            world.nbytes["mirror"],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli("sync", str(syncfile)),
                    prepare=first_mirror,
                ),
                *peer(
                    "skopeo sync",
                    lambda i: skopeo(
                        "sync",
                        "--src",
                        "docker",
                        "--dest",
                        "dir",
                        "--src-tls-verify=false",
                        f"{host}/mirror/app",
                        str(mirror / f"s{i}"),
                    ),
                    prepare=lambda i: fresh(mirror / f"s{i}"),
                ),
                Runner(
                    "registry GETs",
                    "ceiling",
                    lambda i: [
                        "curl",
                        "-sS",
                        "-f",
                        "--parallel",
                        "--parallel-max",
                        "8",
                        "-H",
                        f"Accept: {OCI_MANIFEST}",
                        "-K",
                        str(gets),
                    ],
                ),
                Runner(
                    "fsync floor",
                    "ceiling",
                    lambda i: [
                        *CEILINGS,
                        "fsyncs",
                        str(mirror / f"f{i}"),
                        str(fsyncs),
                        str(dir_fsyncs),
                        str(syncfs),
                        str(fsync_threads),
                    ],
                    prepare=lambda i: fresh(mirror / f"f{i}"),
                ),
            ],
            targets=[("skopeo sync", 3.0), ("registry GETs", 0.9), ("fsync floor", 0.9)],
            # Deleted after the last run, not between runs: this disk's ext4 has no journal,
            # and its inode allocator then skips every inode freed in the last 60 s (300 s if
            # its block is still dirty), one by one; a run right after the deletion of the
            # previous run's ~12,000 files spent about half of its CPU there (perf:
            # recently_deleted under ext4_create and ext4_mkdir), whichever tool ran.
            cleanup=clear_first_mirrors,
            note=f"regstore ran in {processes} process(es) (its default on this machine: "
            "`--processes`; peak RSS is that of the largest, CPU time that of all) and made "
            f"{fsyncs} file fsyncs (each file before its rename), "
            f"{dir_fsyncs} directory fsyncs and {syncfs} syncfs calls (its new directory "
            "entries, in groups) for a crash-safe mirror; the fsync floor makes as many of each "
            f"on small files (written, fsync'd, renamed) from {fsync_threads} threads, as "
            "many as regstore's processes move blobs at once (--concurrency 4 each); skopeo's "
            "dir: destination makes none. registry GETs: the source "
            f"registry answering the {n_gets} GETs of a first mirror ({n} manifests by tag, "
            f"{len(world.mirror_blobs)} distinct blobs) from one curl process (8 parallel "
            "kept-alive connections), written nowhere",
        )
    )
    resync_target = world.registry("resync")
    if have_skopeo:
        subprocess.run(
            skopeo(
                "sync",
                "--src",
                "docker",
                "--dest",
                "docker",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"{host}/mirror/app",
                f"{resync_target.host}/m",
            ),
            check=True,
            capture_output=True,
            env={**os.environ, **skopeo_env},
        )
    # The registry's own floor of a no-op re-sync: the same HEADs, pipelined by one curl over
    # kept-alive connections (curl -I prints the headers even with -o: hence the redirection)
    head_urls = [f"{src}/v2/mirror/app/manifests/t{k}" for k in range(n)]
    curl_heads = 'curl -sS -f -I --parallel --parallel-max 8 -H "Accept: $1" "${@:2}" >/dev/null'
    out.append(
        Workload(
            "mirror-noop",
            f"no-op re-sync of {n} tags",
            0,
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli("sync", str(syncfile)),
                    prepare=lambda i: write_syncfile(kept),
                ),
                *peer(
                    "skopeo sync (2nd run)",
                    lambda i: skopeo(
                        "sync",
                        "--src",
                        "docker",
                        "--dest",
                        "docker",
                        "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        f"{host}/mirror/app",
                        f"{resync_target.host}/m",
                    ),
                ),
                Runner(
                    "registry HEADs",
                    "ceiling",
                    lambda i: ["bash", "-c", curl_heads, "curl-heads", OCI_MANIFEST, *head_urls],
                ),
                Runner(
                    "start-up + HEADs",
                    "ceiling",
                    lambda i: [
                        "bash",
                        "-c",
                        f'{shlex.quote(sys.executable)} -c "import requests" && {curl_heads}',
                        "start-up-heads",
                        OCI_MANIFEST,
                        *head_urls,
                    ],
                ),
            ],
            targets=[
                ("skopeo sync (2nd run)", 10.0),
                ("registry HEADs", 0.9),
                ("start-up + HEADs", 0.9),
            ],
            rounds=SHORT_ROUNDS,
            note=f"registry HEADs: the source registry answering the {n} manifest HEADs of a "
            "no-op re-sync, from one curl process (8 parallel kept-alive connections); "
            "start-up + HEADs: the same after this Python starts and imports requests, which "
            "any client on regstore's HTTP stack does before its first request (regstore's "
            "own start-up and work are the rest; it settles the unchanged tags before it "
            f"would fork its {processes} process(es), so it forks none here)",
        )
    )

    # 6. S3 (moto) and back
    s3_options = json.dumps({**S3_OPTIONS, "endpoint_url": world.moto.endpoint_url})
    ceiling_key = f"{world.bucket}/ceiling/big.bin"
    # for curl: a signed GET of the ceiling object (anonymous ones are refused)
    presigned_ceiling = world.moto.client().generate_presigned_url(
        "get_object",
        Params={"Bucket": world.bucket, "Key": ceiling_key.partition("/")[2]},
        ExpiresIn=6 * 3600,
    )
    out.append(
        Workload(
            "s3-pull",
            f"pull {_size(world.nbytes['big'])} -> s3:// (moto)",
            world.nbytes["big"],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli(
                        "--store", world.s3_url(f"pull{i}"), "pull", f"{host}/bench/big:1"
                    ),
                ),
                Runner(
                    "s3fs upload",
                    "ceiling",
                    lambda i: [*CEILINGS, "s3-put", str(blob_file), ceiling_key, s3_options],
                ),
            ],
            targets=[("s3fs upload", 0.9)],
            rss_probe=Runner(
                small_name,
                "probe",
                lambda i: regstore_cli(
                    "--store", world.s3_url(f"small{i}"), "pull", f"{host}/bench/small:1"
                ),
            ),
        )
    )

    def get_into_put(name: str, before: str) -> Runner:
        """The big blob streamed by curl from S3 into a curl PUT to a fresh registry, after
        the shell commands ``before`` (which must end with ``;`` and exit on failure: the
        pipeline's script is several commands, so ``&&`` would guard only the first)."""
        pipeline = curl_put.replace(
            "curl -s -f -o /dev/null -X PUT", 'curl -sf "$4" | curl -s -f -o /dev/null -X PUT'
        ).replace('-T "$2"', "-T -")
        return Runner(
            name,
            "ceiling",
            lambda i: [
                "bash",
                "-c",
                f"set -o pipefail; {before}{pipeline}",
                "s3-get-put",
                f"http://{target(i)}",
                "-",
                big_digest,
                presigned_ceiling,
            ],
            prepare=new_target,
            cleanup=stop_target,
            verify=holds_big,
        )

    out.append(
        Workload(
            "s3-push",
            f"push {_size(world.nbytes['big'])} s3:// (moto) -> fresh registry",
            world.nbytes["big"],
            [
                Runner(
                    "regstore",
                    "regstore",
                    lambda i: regstore_cli(
                        "--store",
                        world.s3_url("pull0"),
                        "push",
                        "bench/big:1",
                        f"{target(i)}/bench/big:1",
                    ),
                    prepare=new_target,
                    cleanup=stop_target,
                    verify=holds_big,
                ),
                Runner(
                    "S3 streamed GET",
                    "ceiling",
                    lambda i: [*CEILINGS, "s3-get", ceiling_key, s3_options],
                ),
                # a push from anywhere cannot outrun the registry taking the bytes in
                ingest_ceiling(),
                # nor, from S3, the same bytes streamed from the S3 server straight into it
                get_into_put("curl GET from S3 into curl PUT", ""),
                # nor that after the start-up every client on regstore's stacks has (as the
                # no-op's floor): a Python that imports requests and s3fs
                get_into_put(
                    "start-up + GET into PUT",
                    f'{shlex.quote(sys.executable)} -c "import requests, s3fs" || exit 1; ',
                ),
            ],
            targets=[("S3 streamed GET", 0.9)],
            note="curl GET from S3 into curl PUT: the blob's bytes from moto straight into the "
            "registry, neither side starting anything; start-up + GET into PUT: the same after "
            "this Python starts and imports requests and s3fs, which any client on regstore's "
            "HTTP and S3 stacks does before its first request",
            rss_probe=push_probe(
                lambda i: regstore_cli(
                    "--store",
                    world.s3_url("small0"),
                    "push",
                    "bench/small:1",
                    f"{target(i)}/bench/small:1",
                )
            ),
        )
    )
    return out


@dataclass(frozen=True)
class SourceImage:
    """An image of the source registry as a plain client would push it."""

    digest: str  #: of the manifest (or index) the tag names
    raw: bytes
    media_type: str
    #: an index's child manifests: digest -> (bytes, media type)
    children: dict[str, tuple[bytes, str]]
    #: every config and layer (of every child): digest -> size
    blobs: dict[str, int]


def _get_manifest(url: str, repo: str, reference: str) -> tuple[bytes, str]:
    """The bytes and media type the registry at ``url`` serves ``repo:reference`` as."""
    import urllib.request

    request = urllib.request.Request(
        f"{url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
    )
    with urllib.request.urlopen(request) as response:
        return response.read(), response.headers.get_content_type()


def _manifest_digest(url: str, repo: str, tag: str) -> str | None:
    """The digest of what the registry at ``url`` serves ``repo:tag`` as (None: not there)."""
    import urllib.error

    try:
        raw, _ = _get_manifest(url, repo, tag)
    except urllib.error.HTTPError:
        return None
    return str(digest_of(raw))


def _source_image(world: World, repo: str, tag: str) -> SourceImage:
    """``repo:tag`` of the source registry: its manifest, an index's children, its blobs."""
    raw, media_type = _get_manifest(world.source.url, repo, tag)
    doc = json.loads(raw)
    children = {
        m["digest"]: _get_manifest(world.source.url, repo, m["digest"])
        for m in doc.get("manifests", [])
    }
    blobs: dict[str, int] = {}
    for manifest in [json.loads(r) for r, _ in children.values()] if children else [doc]:
        for blob in [manifest["config"], *manifest["layers"]]:
            blobs[blob["digest"]] = int(blob["size"])
    return SourceImage(str(digest_of(raw)), raw, media_type, children, blobs)


def _ingest_script(directory: Path, store: Path, repo: str, image: SourceImage) -> Path:
    """A bash script (its one argument: the target registry's URL) that pushes ``image`` as a
    plain client does, with curl: every blob by one monolithic upload (POST, then PUT with the
    digest), four at once, then the child manifests by digest and the manifest by tag ``1``.
    The blobs are read where ``store`` keeps them, as regstore's push reads them (a copy would
    be in the page cache); the manifests are written into ``directory``. Any failed request
    fails it."""
    directory.mkdir(parents=True, exist_ok=True)
    pairs: list[str] = []
    for digest in image.blobs:
        pairs += [str(_blob_path(store, digest)), digest]
    manifests = [(d, raw, media) for d, (raw, media) in image.children.items()]
    manifests.append(("1", image.raw, image.media_type))
    puts = []
    for k, (reference, raw, media) in enumerate(manifests):
        path = directory / f"manifest-{k}.json"
        path.write_bytes(raw)
        puts.append(
            f"curl -sS -f -o /dev/null -X PUT -H {shlex.quote('Content-Type: ' + media)} "
            f'--data-binary @{shlex.quote(str(path))} "$target/v2/$repo/manifests/{reference}"'
        )
    script = directory / "ingest.sh"
    script.write_text(
        "\n".join(
            [
                "set -euo pipefail",
                f'target="$1"; repo={shlex.quote(repo)}',
                "put_blob() {  # FILE DIGEST",
                '  local loc sep up="$target/v2/$repo/blobs/uploads/"',
                '  loc=$(curl -sS -f -D - -o /dev/null -X POST "$up" | tr -d "\\r" '
                "| sed -n 's/^[Ll]ocation: //p')",
                '  [ -n "$loc" ] || { echo "no upload location for $2" >&2; return 1; }',
                '  case "$loc" in /*) loc="$target$loc";; esac',
                '  case "$loc" in *"?"*) sep="&";; *) sep="?";; esac',
                '  curl -sS -f -o /dev/null -X PUT -H "Content-Type: application/octet-stream" '
                '-T "$1" "$loc${sep}digest=$2"',
                "}",
                "export -f put_blob; export target repo",
                f"printf '%s\\0' {' '.join(shlex.quote(a) for a in pairs)} "
                '| xargs -0 -P 4 -n 2 bash -c \'set -euo pipefail; put_blob "$1" "$2"\' _',
                *puts,
                "",
            ]
        )
    )
    return script


def _layer_digest(world: World, repo: str, tag: str) -> str:
    raw, _ = _get_manifest(world.source.url, repo, tag)
    return str(json.loads(raw)["layers"][0]["digest"])


def _blob_path(store: Path, digest: str) -> Path:
    """Where a file store in the distribution layout keeps a blob."""
    hexdigest = digest.split(":", 1)[1]
    return store / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def _size(nbytes: int) -> str:
    if nbytes >= 1 << 30:
        return f"{nbytes / (1 << 30):.0f} GiB"
    if nbytes >= MiB:
        return f"{nbytes / MiB:.0f} MiB"
    return f"{nbytes / 1024:.0f} KiB"


# -- running -----------------------------------------------------------------------------------


def _rotated(runners: list[Runner], i: int) -> list[Runner]:
    """``runners`` in round ``i``'s order: the same cycle, started at runner ``i``."""
    k = i % len(runners) if runners else 0
    return runners[k:] + runners[:k]


def run_all(
    items: list[Workload],
    runs: int,
    log: Callable[[str], None],
    servers: Callable[[], Sequence[int]] = tuple,
) -> None:
    """Every runner of every workload, ``runs`` times, interleaved (run 1 of each, then run
    2 ...) so that a slow spell of the machine hits all runners alike; each round starts one
    runner further on, so that each runner takes every place of the order in turn, the first
    included (right after the previous round's last runner: the writeback of a 1 GiB push,
    say). The cycle itself stays: a runner follows the same neighbour in every round but the
    one it starts. ``servers`` names the server processes running at a given moment (their
    CPU time is measured with each run)."""
    for item in items:
        probes = [item.rss_probe] if item.rss_probe is not None else []
        for i in range(runs * item.rounds):
            for runner in [*_rotated(item.runners, i), *probes]:
                if runner.error is not None:
                    continue
                try:
                    if runner.prepare is not None:
                        runner.prepare(i)
                    drop_caches_hint()
                    sample = measure(runner.command(i), runner.env, servers())
                    if runner.verify is not None:
                        runner.verify(i)  # a run that did not do the work has no figure
                    runner.samples.append(sample)
                    log(
                        f"  {item.name:16s} {runner.name:22s} run {i + 1}: {sample.seconds:7.2f} s "
                        f"{sample.rss_mib:6.1f} MiB"
                    )
                except Exception as exc:  # recorded in the results, the suite goes on
                    runner.error = str(exc)[-600:]
                    log(f"  {item.name:16s} {runner.name:22s} FAILED: {runner.error}")
                finally:
                    if runner.cleanup is not None:
                        with contextlib.suppress(Exception):
                            runner.cleanup(i)
        if item.cleanup is not None:
            with contextlib.suppress(Exception):
                item.cleanup()


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for dist in ("regstore", "regstore-s3", "requests", "fsspec", "s3fs", "moto"):
        with contextlib.suppress(Exception):
            found[dist] = version(dist)
    for tool, args in (
        ("skopeo", ["--version"]),
        ("docker-registry", ["--version"]),
        ("curl", ["--version"]),
    ):
        with contextlib.suppress(Exception):
            text = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
            found[tool] = (text.stdout or text.stderr).splitlines()[0].strip()
    return found


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "kernel": platform.release()}


def rss_scaling(big: Runner | None, small: Runner | None) -> dict[str, Any] | None:
    """Peak RSS against layer size: regstore's median peak RSS on the big image and on the
    small one, their ratio, and whether the big one is within RSS_SCALING_TOLERANCE of the
    small one (issue 16: within 10%). None without a probe; ``within`` is None when either
    side has no sample or failed (a failed run's RSS says nothing)."""
    if big is None or small is None:
        return None
    big_rss = statistics.median(s.rss_mib for s in big.samples) if big.samples else None
    small_rss = statistics.median(s.rss_mib for s in small.samples) if small.samples else None
    ratio = big_rss / small_rss if big_rss is not None and small_rss else None
    failed = big.error is not None or small.error is not None
    return {
        "small_runner": small.name,
        "big_rss_mib": big_rss,
        "small_rss_mib": small_rss,
        "ratio": ratio,
        # compared as products, not as abs(ratio - 1), which misjudges 44 against 40 in floats
        "within": None
        if big_rss is None or small_rss is None or failed
        else small_rss * (1 - RSS_SCALING_TOLERANCE)
        <= big_rss
        <= small_rss * (1 + RSS_SCALING_TOLERANCE),
        "error": small.error,
    }


def _median_of(samples: list[Sample], name: str) -> float | None:
    """The median of one figure over the samples that have it; None when none has."""
    values = [v for s in samples if (v := getattr(s, name)) is not None]
    return statistics.median(values) if values else None


def summarise(items: list[Workload]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        by_name = {r.name: r for r in item.runners}
        mine = by_name.get("regstore")
        mine_median = mine.median() if mine else None
        runners = []
        for r in item.runners:
            med = r.median()
            runners.append(
                {
                    "name": r.name,
                    "kind": r.kind,
                    "error": r.error,
                    "median_s": med,
                    "min_s": min((s.seconds for s in r.samples), default=None),
                    "max_s": max((s.seconds for s in r.samples), default=None),
                    "bytes_per_s": item.nbytes / med if med and item.nbytes else None,
                    "rss_mib": max((s.rss_mib for s in r.samples), default=None),
                    "cpu_s_per_gb": (
                        statistics.median(s.cpu_seconds for s in r.samples) / (item.nbytes / 1e9)
                    )
                    if r.samples and item.nbytes
                    else None,
                    "cpu_s": _median_of(r.samples, "cpu_seconds"),
                    "server_cpu_s": _median_of(r.samples, "server_cpu_seconds"),
                    "machine_busy": _median_of(r.samples, "machine_busy"),
                    "samples": [asdict(s) for s in r.samples],
                    # write-direct where O_DIRECT was refused wrote the buffered way
                    "buffered": any(s.report.get("direct") is False for s in r.samples),
                }
            )
        verdicts = []
        failed = mine is not None and mine.error is not None
        for other, target in item.targets:
            ref = by_name.get(other)
            # a runner that failed a run (or its verify) has no figure to compare
            if (
                ref is None
                or mine_median is None
                or ref.median() is None
                or failed
                or ref.error is not None
            ):
                verdicts.append(
                    {
                        "against": other,
                        "target": target,
                        "ratio": None,
                        "met": None,
                        "explained_by": None,
                        "failed": failed or (ref is not None and ref.error is not None),
                    }
                )
                continue
            ratio = ref.median() / mine_median  # type: ignore[operator]
            met = ratio >= target
            explained = None
            if not met:
                # Explained only when meeting the target needs a time below even the fastest
                # run of a ceiling, and regstore itself is within 0.9x of that ceiling (else
                # regstore's own distance to the ceiling is the gap, not the ceiling). A target
                # set against a ceiling can be explained by another, stricter ceiling of the
                # same run (a memory store must also keep the bytes it hashes), never by itself.
                needed = ref.median() / target  # type: ignore[operator]
                for c in item.runners:
                    fastest, cm = c.fastest(), c.median()
                    if (
                        c.kind == "ceiling"
                        and c is not ref
                        and c.error is None
                        and fastest is not None
                        and cm is not None
                        and needed < fastest
                        and cm / mine_median >= 0.9
                    ):
                        explained = (
                            f"{c.name} ({fastest:.2f} s at best > the {needed:.2f} s needed)"
                        )
                        break
            verdicts.append(
                {
                    "against": other,
                    "target": target,
                    "ratio": ratio,
                    "met": met,
                    "explained_by": explained,
                    "failed": False,
                }
            )
        rss = max((s.rss_mib for s in mine.samples), default=None) if mine else None
        rows.append(
            {
                "workload": item.name,
                "title": item.title,
                "bytes": item.nbytes,
                "note": item.note,
                "runners": runners,
                "targets": verdicts,
                "rss_ok": None if rss is None or not item.rss_bound else rss <= RSS_LIMIT_MIB,
                "rss_scaling": rss_scaling(mine, item.rss_probe),
                "time_bound": None
                if item.time_bound_s is None
                else {
                    "bound_s": item.time_bound_s,
                    "ok": None
                    if mine_median is None or failed
                    else mine_median <= item.time_bound_s,
                    "failed": failed,
                },
            }
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _regstore_of(row: dict[str, Any]) -> dict[str, Any]:
    """The figures of a workload's regstore runner (empty when it has none)."""
    return next((r for r in row["runners"] if r["name"] == "regstore"), {})


def _met_cell(met: bool | None, failed: bool | None) -> str:
    if failed:
        return "**a run failed** (see All figures)"
    return {True: "yes", False: "**no**", None: "—"}[met]


def write_markdown(path: Path, report: dict[str, Any], chart: str | None) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if report['quick'] else ''}` on "
        f"{report['date']} ({report['runs']} run(s) of each runner, {SHORT_ROUNDS} times as "
        "many for the workloads of a fraction of a second (start-up, no-op re-sync), "
        "interleaved; medians, "
        "min-max in brackets). Each run is a fresh process measured from outside: wall time "
        "of the whole process, peak RSS, CPU seconds (per GB moved, and in all), the CPU "
        "seconds the suite's servers spent meanwhile and how busy the machine was.",
        "",
        f"**Machine**: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"{report['machine']['memory']} RAM, Linux {report['machine']['kernel']}. "
        f"**Load average** before / after: {report['load_before']} / {report['load_after']}"
        + (
            " — the machine was shared with other work: absolute figures are noisy, the ratios "
            "of one run are what counts."
            if report["load_before"][0] > 1.0
            else ""
        ),
        "",
        "**Versions**: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        "## Targets",
        "",
        "| workload | regstore | against | ratio (x as fast) | target | met "
        "| miss explained by a ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["workloads"]:
        mine = _regstore_of(row)
        for t in row["targets"]:
            met = _met_cell(t["met"], t.get("failed"))
            lines.append(
                f"| {row['title']} | {_fmt(mine.get('median_s'), '.2f')} s | {t['against']} | "
                f"{_fmt(t['ratio'], '.2f')} | ≥ {t['target']:g} | {met} | "
                f"{t['explained_by'] or ''} |"
            )
    for row in report["workloads"]:
        bound = row.get("time_bound")
        if bound is None:
            continue
        mine = _regstore_of(row)
        met = _met_cell(bound["ok"], bound.get("failed"))
        lines.append(
            f"| {row['title']} | {_fmt(mine.get('median_s'), '.3f')} s | time bound | — | "
            f"≤ {bound['bound_s']:g} s | {met} |  |"
        )
    lines += ["", f"Peak RSS of regstore (bound {RSS_LIMIT_MIB:.0f} MiB):", ""]
    for row in report["workloads"]:
        mine = _regstore_of(row)
        ok = {True: "within", False: "**over**", None: "not bounded"}[row["rss_ok"]]
        lines.append(
            f"- {row['title']}: {_fmt(mine.get('rss_mib'), '.1f')} MiB ({ok})"
            + (f" — {row['note']}" if row["note"] else "")
        )
    scaling = [row for row in report["workloads"] if row.get("rss_scaling")]
    if scaling:
        lines += [
            "",
            "## Peak RSS against layer size",
            "",
            f"regstore's median peak RSS on the {_size(report['sizes']['big'])} image against "
            f"the same on a {_size(report['sizes']['small'])} single-layer image (issue 16: "
            f"within {RSS_SCALING_TOLERANCE:.0%}).",
            "",
            f"| workload | {_size(report['sizes']['big'])} image MiB "
            f"| {_size(report['sizes']['small'])} image MiB | ratio "
            f"| within {RSS_SCALING_TOLERANCE:.0%} |",
            "|---|---|---|---|---|",
        ]
        for row in scaling:
            sc = row["rss_scaling"]
            within = _met_cell(sc["within"], failed=False)
            if sc["error"]:
                within += f" (small image run failed: {sc['error'][:200]})"
            lines.append(
                f"| {row['title']} | {_fmt(sc['big_rss_mib'], '.1f')} | "
                f"{_fmt(sc['small_rss_mib'], '.1f')} | {_fmt(sc['ratio'], '.2f')} | {within} |"
            )
    lines += [
        "",
        "## All figures",
        "",
        "Medians over the runs, each column on its own, but for peak RSS: the largest of the runs "
        "(the figure the 100 MiB bound is held to). CPU s: the runner's own CPU seconds "
        "(its children's included). Servers CPU s: what the suite's servers (registries, moto) "
        "spent meanwhile, in whole clock ticks (10 ms); kernel work done for them in another "
        "context (loopback receives, page-cache writeback) is not theirs here. Machine busy: "
        f"the share of all {report['machine']['cores']} CPUs' time in use during the run "
        "(steal included), by the runner, the servers or anything else: near 100%, the run "
        "was CPU-bound or competed for CPU; over a run of a few tenths of a second it is good "
        "to about 5 points.",
        "",
        "| workload | runner | median s [min-max] | MB/s | peak RSS MiB | CPU s/GB | CPU s "
        "| servers CPU s | machine busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["workloads"]:
        for r in row["runners"]:
            if r["error"] and r["median_s"] is None:
                lines.append(
                    f"| {row['title']} | {r['name']} | failed: {r['error'][:200]} | | | | | | |"
                )
                continue
            rate = r["bytes_per_s"]
            failed = f" — a later run failed: {r['error'][:200]}" if r["error"] else ""
            if r.get("buffered"):
                failed += " — O_DIRECT refused here: written the buffered way"
            lines.append(
                f"| {row['title']} | {r['name']} ({r['kind']}) | {_fmt(r['median_s'], '.2f')} "
                f"[{_fmt(r['min_s'], '.2f')}-{_fmt(r['max_s'], '.2f')}]{failed} | "
                f"{_fmt(rate / 1e6 if rate else None, '.0f')} | {_fmt(r['rss_mib'], '.1f')} | "
                f"{_fmt(r['cpu_s_per_gb'], '.2f')} | {_fmt(r.get('cpu_s'), '.2f')} | "
                f"{_fmt(r.get('server_cpu_s'), '.2f')} | {_percent(r.get('machine_busy'))} |"
            )
    if chart:
        lines += ["", f"![regstore against each peer and ceiling]({chart})"]
    lines.append("")
    path.write_text("\n".join(lines))


def write_chart(path: Path, report: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["workloads"] if any(x["median_s"] for x in r["runners"])]
    cols = 2
    fig, axes = plt.subplots(
        (len(rows) + cols - 1) // cols,
        cols,
        figsize=(12, 2.2 * ((len(rows) + cols - 1) // cols)),
        squeeze=False,
    )
    colours = {"regstore": "#1f77b4", "peer": "#ff7f0e", "ceiling": "#7f7f7f"}
    for ax, row in zip(axes.flat, rows, strict=False):
        runners = [r for r in row["runners"] if r["median_s"]]
        names = [r["name"] for r in runners]
        values = [r["median_s"] for r in runners]
        ax.barh(names, values, color=[colours[r["kind"]] for r in runners])
        for y, r in enumerate(runners):
            if r["min_s"] is not None:
                ax.plot([r["min_s"], r["max_s"]], [y, y], color="black", linewidth=1)
        ax.invert_yaxis()
        ax.set_title(row["title"], fontsize=9)
        ax.set_xlabel("seconds (lower is better)", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle("regstore (blue) against peers (orange) and this machine's ceilings (grey)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (CI smoke)")
    parser.add_argument("--runs", type=int, help="repetitions of each runner")
    parser.add_argument("--only", action="append", help="run only workloads starting with this")
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for RESULTS.md, results.json and "
        "results.png (default: benchmarks/ for a full run, a temporary one "
        "for --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    runs = args.runs or sizes.runs
    have_skopeo = shutil.which("skopeo") is not None
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="regstore-bench-"))
    out_dir = args.out or (
        HERE if not args.quick else Path(tempfile.mkdtemp(prefix="regstore-bench-out-"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Children run with their bytecode cached, as after `pip install` (an environment with
    # PYTHONDONTWRITEBYTECODE would compile regstore's modules at every start of the CLI);
    # the cache lives in the work directory, not in the source tree.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "src"),
         str(ROOT / "plugins" / "regstore-s3" / "src")],
        check=False,
        capture_output=True,
    )  # fmt: skip
    world = World(work, sizes)
    try:
        log(f"building and pushing the images ({'quick' if args.quick else 'full'} sizes) ...")
        world.seed()
        items = workloads(world, have_skopeo)
        if args.only:
            names = [i.name for i in items]
            items = [i for i in items if any(i.name.startswith(p) for p in args.only)]
            if not items:
                raise SystemExit(f"--only {args.only} selects none of: {', '.join(names)}")
        log(f"running {len(items)} workloads, {runs} run(s) each ...")
        run_all(items, runs, log, world.server_pids)
    finally:
        world.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": runs,
        "machine": _machine(),
        "versions": _versions(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - started, 1),
        "sizes": asdict(sizes),
        "workloads": summarise(items),
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    chart = "results.png" if write_chart(out_dir / "results.png", report) else None
    write_markdown(out_dir / "RESULTS.md", report, chart)
    log(f"done in {report['seconds']} s: {out_dir / 'RESULTS.md'}")
    failed = [
        f"{row['workload']}/{r['name']}"
        for row in report["workloads"]
        for r in row["runners"]
        if r["error"]
    ] + [
        f"{row['workload']}/{row['rss_scaling']['small_runner']}"
        for row in report["workloads"]
        if row["rss_scaling"] and row["rss_scaling"]["error"]
    ]
    if failed:
        log("failed runners: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
