"""Benchmark: pull one large single-layer image from a local registry into a filesystem store.

Measured in the same run, on the same registry and image:

- ``net``:      the registry's serving ceiling — one GET read to nowhere;
- ``disk``:     the disk's ceiling — writing as many bytes to a file, fsync'd;
- ``naive``:    the obvious single-stream Python job — GET + sha256 + file write (requests,
                4 MiB reads), with nothing of regstore in it;
- ``regstore``: ``regstore.pull`` into a ``file://`` store (distribution layout);
- ``skopeo``:   ``skopeo copy docker://... oci:DIR:ref`` (the peer users compare us with).

Prints a table with throughput and the ratios regstore/skopeo and regstore/limit, plus JSON
with ``--json``. Usage::

    python benchmarks/pull_vs_skopeo.py --size-mib 1024 [--runs 3] [--json]

Nothing here asserts a timing; the numbers are for people (and for the issue that asks for 3x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.engine import seed_single_layer_image  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402

from regstore import open_store  # noqa: E402
from regstore.client import Client  # noqa: E402
from regstore.engine import pull  # noqa: E402
from regstore.store import OperationStats  # noqa: E402

MiB = 1 << 20


def seed(registry: RegistryServer, work: Path, size: int) -> str:
    return seed_single_layer_image(registry.url, "bench/img", "1", work, size)


def run_net(registry: RegistryServer, digest: str, out: Path) -> None:
    buf = bytearray(4 * MiB)
    with requests.get(f"{registry.url}/v2/bench/img/blobs/{digest}", stream=True) as r:
        r.raise_for_status()
        fp = r.raw._fp  # http.client: straight into the buffer, no copies
        while fp.readinto(buf):
            pass


def run_disk(size: int, out: Path) -> None:
    block = memoryview(bytearray(4 * MiB))
    with open(out, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def run_naive(registry: RegistryServer, digest: str, out: Path) -> None:
    h = hashlib.sha256()
    buf = bytearray(4 * MiB)
    with (
        requests.get(f"{registry.url}/v2/bench/img/blobs/{digest}", stream=True) as r,
        open(out, "wb") as f,
    ):
        r.raise_for_status()
        while n := r.raw.readinto(buf):
            view = memoryview(buf)[:n]
            h.update(view)
            f.write(view)
    assert "sha256:" + h.hexdigest() == digest


#: The store operations of the last regstore run (its tracing wrapper's counts and timings).
STORE_OPERATIONS: dict[str, OperationStats] = {}


def run_regstore(registry: RegistryServer, out: Path) -> None:
    # traced: the tracing wrapper costs a clock read per store call (never per chunk), and says
    # how much of a pull is spent in store operations (stat, lock, commit, manifests)
    with open_store(str(out), trace=True) as store:
        pull(Client(registry.host), store, "bench/img", "1")
        STORE_OPERATIONS.clear()
        STORE_OPERATIONS.update(store.metrics())


def run_skopeo(registry: RegistryServer, out: Path) -> None:
    env = {**os.environ, "_CONTAINERS_ROOTLESS_UID": "1000", "XDG_DATA_HOME": str(out) + "-xdg"}
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--insecure-policy",
            "--src-tls-verify=false",
            f"docker://{registry.host}/bench/img:1",
            f"oci:{out}:bench",
        ],
        check=True,
        capture_output=True,
        env=env,
    )


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MiB
    have_skopeo = shutil.which("skopeo") is not None
    with tempfile.TemporaryDirectory(prefix="regstore-bench-") as tmp:
        work = Path(tmp)
        registry = RegistryServer(work / "registry").start()
        try:
            digest = seed(registry, work, size)
            runners = {
                "net": lambda out: run_net(registry, digest, out),
                "disk": lambda out: run_disk(size, out),
                "naive": lambda out: run_naive(registry, digest, out),
                "regstore": lambda out: run_regstore(registry, out),
            }
            if have_skopeo:
                runners["skopeo"] = lambda out: run_skopeo(registry, out)
            times: dict[str, list[float]] = {k: [] for k in runners}
            for i in range(args.runs):
                for name, fn in runners.items():
                    out = work / f"{name}-{i}"
                    times[name].append(timed(fn, out))
                    shutil.rmtree(out, ignore_errors=True)
                    if out.is_file():
                        out.unlink()
        finally:
            registry.stop()
    best = {k: min(v) for k, v in times.items()}
    rate = {k: size / t / 1e9 for k, t in best.items()}
    report = {
        "size_bytes": size,
        "runs": args.runs,
        "seconds_best": best,
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "gb_per_s": rate,
        "regstore_vs_net": rate["regstore"] / rate["net"],
        "regstore_vs_disk": rate["regstore"] / rate["disk"],
        "regstore_vs_naive": rate["regstore"] / rate["naive"],
        "regstore_vs_skopeo": rate["regstore"] / rate["skopeo"] if "skopeo" in rate else None,
        "regstore_store_operations": [m.as_dict() for m in STORE_OPERATIONS.values()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"pull of one {args.size_mib} MiB layer, best of {args.runs}:")
        for k in runners:
            print(f"  {k:9s} {best[k]:7.2f} s  {rate[k]:.3f} GB/s")
        for peer in ("net", "disk", "naive"):
            print(f"  regstore / {peer:6s}: {report[f'regstore_vs_{peer}']:.2f}")
        if report["regstore_vs_skopeo"] is not None:
            print(f"  regstore / skopeo: {report['regstore_vs_skopeo']:.2f}")
        print("store operations of the last regstore run (calls, total, max):")
        for m in STORE_OPERATIONS.values():
            total, most = m.total_seconds * 1000, m.max_seconds * 1000
            print(f"  {m.operation:18s} {m.count:5} {total:9.1f} ms {most:9.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
