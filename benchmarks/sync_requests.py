"""Request budget of a sync, measured: the figures behind docs/scale.md.

``python benchmarks/sync_requests.py --tags 100 [--json]`` seeds a local ``docker-registry``
with ``--tags`` small images (2 layers each, one shared by all) and syncs them with
``regstore sync`` into a filesystem store and into S3 (a moto server), each behind a counting
proxy (tests/support/proxy.py), then resyncs (a no-op). It reports, per image: registry
requests of the first sync and of the no-op resync, S3 requests of the first sync and of the
resync (by method), and seconds per 100 tags of the no-op resync. Nothing asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.engine import seed_registry  # noqa: E402
from tests.support.images import build_image, build_layer, random_blob  # noqa: E402
from tests.support.moto_server import MotoServer  # noqa: E402
from tests.support.proxy import FaultProxy  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402


def _sync(store: str, sync: Path, env: dict[str, str]) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "regstore", "--store", store, "--json", "sync", str(sync)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    seconds = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit(f"sync failed:\n{run.stdout}\n{run.stderr}")
    return seconds, json.loads(run.stdout)


def _by_method(proxy: FaultProxy) -> dict[str, int]:
    return dict(Counter(r.method for r in proxy.records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.tags
    work = Path(tempfile.mkdtemp(prefix="regstore-scale-"))
    registry = RegistryServer(work / "registry", access_log=False).start()
    moto = MotoServer(work / "moto").start()
    try:
        base = build_layer({"base.bin": random_blob(64 << 10, 1)})
        for i in range(n):
            image = build_image(seed=1000 + i, layers=1, layer_size=4 << 10, shared_layers=[base])
            seed_registry(registry.url, "scale/app", f"t{i}", image)
        reg_proxy = FaultProxy(registry.url).start()
        s3_proxy = FaultProxy(moto.endpoint_url, preserve_host=True).start()
        sync = work / "sync.yaml"
        sync.write_text(
            f"sources:\n  - registry: {reg_proxy.host}\n    plain_http: true\n"
            "    repositories: [scale/app]\n"
        )
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
               "AWS_DEFAULT_REGION": "us-east-1", "HOME": str(work / "home")}  # fmt: skip
        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        moto.create_bucket(bucket)
        stores = {
            "file": (work / "store").as_uri(),
            "s3": f"s3://{bucket}/m?endpoint_url={s3_proxy.url}&lease=30",
        }
        figures: dict[str, object] = {"tags": n}
        for kind, url in stores.items():
            for phase in ("first", "noop"):
                reg_proxy.clear_records()
                s3_proxy.clear_records()
                seconds, report = _sync(url, sync, env)
                figures[f"{kind}_{phase}"] = {
                    "seconds": round(seconds, 2),
                    "seconds_per_100_tags": round(seconds * 100 / n, 2),
                    "registry_requests": len(reg_proxy.records),
                    "registry_requests_per_tag": round(len(reg_proxy.records) / n, 2),
                    "registry_by_method": _by_method(reg_proxy),
                    "s3_requests": len(s3_proxy.records),
                    "s3_requests_per_tag": round(len(s3_proxy.records) / n, 2),
                    "s3_by_method": _by_method(s3_proxy),
                    "copied": report["copied"],
                    "skipped": report["skipped"],
                }
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            for key, value in figures.items():
                print(f"{key}: {value}")
    finally:
        moto.stop()
        registry.stop()


if __name__ == "__main__":
    main()
