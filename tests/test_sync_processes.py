"""``regstore sync --processes N``: a sync's images moved by forked processes of this machine,
against the real registry into a directory store, reported as one run; and when a sync takes
more than one process by itself (``auto_processes``).

The CLI runs as a subprocess here: it forks only where no other thread runs, and a pytest
worker has some.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.cli.syncforked import AUTO_MIN_IMAGES, auto_processes
from regstore.engine.sync import PlannedJob, SyncPlan
from regstore.testing.builders import Built, build_image

from .support.cli import CliResult, run_cli
from .support.engine import seed_registry
from .support.registry import RegistryServer

TAGS = [f"v{i}" for i in range(12)]


def _seed(registry: RegistryServer) -> dict[str, Built]:
    base = build_image(layers=1, layer_size=64 * 1024, seed=7000, media="oci")
    images = {}
    for i, tag in enumerate(TAGS):
        images[tag] = build_image(
            layers=1, layer_size=4096, seed=7100 + i, media="oci", shared_layers=base.layers
        )
        seed_registry(registry.url, "fork/app", tag, images[tag])
    return images


def _sync_file(path: Path, host: str, store: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "target": {"store": store},
                "sources": [
                    {"registry": host, "plain_http": True, "repositories": [{"name": "fork/app"}]}
                ],
            }
        )
    )
    return path


def _sync(tmp_path: Path, *args: str) -> CliResult:
    return run_cli("sync", *args, home=tmp_path / "home", subprocess=True, timeout=180)


def _copied_lines(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if re.match(r"copied sha256:", line))


def test_a_sync_in_two_processes_moves_and_reports_every_image_once(
    registry: RegistryServer, tmp_path: Path
) -> None:
    images = _seed(registry)
    forked_store, alone_store = tmp_path / "forked", tmp_path / "alone"
    forked = _sync_file(tmp_path / "forked.yaml", registry.host, forked_store.as_uri())
    alone = _sync_file(tmp_path / "alone.yaml", registry.host, alone_store.as_uri())

    report = _sync(tmp_path, "--json", "--processes", "2", str(forked))
    assert report.returncode == 0, report
    doc = report.json()
    assert doc["processes"] == 2
    assert (doc["copied"], doc["failed"]) == (len(TAGS), 0)
    assert sorted(i["destination"] for i in doc["images"]) == sorted(
        f"store:fork/app:{t}" for t in TAGS
    )
    with open_store(str(forked_store)) as store:
        for tag, built in images.items():
            assert store.resolve("fork/app", tag) == built.manifest_digest
    assert run_cli("--store", str(forked_store), "verify", home=tmp_path / "home").returncode == 0

    # the same report as one process makes: every image in plan order, once
    one = _sync(tmp_path, "--json", "--processes", "1", str(alone))
    assert one.returncode == 0, one
    assert "processes" not in one.json()
    assert [(i["source"], i["destination"], i["status"]) for i in doc["images"]] == [
        (i["source"], i["destination"], i["status"]) for i in one.json()["images"]
    ]

    # the progress lines of the children reach this process's display: as one process prints
    lines = _sync(tmp_path, "--processes", "2", str(_sync_file(
        tmp_path / "third.yaml", registry.host, (tmp_path / "third").as_uri()
    )))  # fmt: skip
    assert lines.returncode == 0, lines
    again = _sync(tmp_path, "--processes", "1", str(_sync_file(
        tmp_path / "fourth.yaml", registry.host, (tmp_path / "fourth").as_uri()
    )))  # fmt: skip
    assert _copied_lines(lines.stderr) and _copied_lines(lines.stderr) == _copied_lines(
        again.stderr
    )

    # a second run finds every image there before forking, and forks nothing
    second = _sync(tmp_path, "--json", "--processes", "2", str(forked)).json()
    assert "processes" not in second
    assert (second["skipped"], second["copied"]) == (len(TAGS), 0)


def test_a_re_sync_shares_out_only_the_images_that_changed(
    registry: RegistryServer, tmp_path: Path
) -> None:
    _seed(registry)
    forked_store = tmp_path / "forked"
    forked = _sync_file(tmp_path / "forked.yaml", registry.host, forked_store.as_uri())
    assert _sync(tmp_path, "--processes", "1", str(forked)).returncode == 0
    moved = {
        tag: build_image(layers=1, layer_size=4096, seed=7300 + i, media="oci")
        for i, tag in enumerate(TAGS[3:5])
    }
    for tag, built in moved.items():
        seed_registry(registry.url, "fork/app", tag, built)

    # four processes asked for twelve images: the ten unchanged are settled before forking,
    # and the two moved ones are all the children get (one each)
    report = _sync(tmp_path, "--json", "--processes", "4", str(forked))
    assert report.returncode == 0, report
    doc = report.json()
    assert (doc["processes"], doc["copied"], doc["skipped"]) == (2, 2, len(TAGS) - 2)
    assert [(i["destination"], i["status"]) for i in doc["images"]] == [
        (f"store:fork/app:{t}", "copied" if t in moved else "skipped") for t in TAGS
    ]  # in plan order, as one process reports
    with open_store(str(forked_store)) as store:
        for tag, built in moved.items():
            assert store.resolve("fork/app", tag) == built.manifest_digest


def test_processes_refuse_a_store_other_processes_cannot_see_and_fail_fast(
    registry: RegistryServer, tmp_path: Path
) -> None:
    sync_file = _sync_file(tmp_path / "m.yaml", registry.host, "memory://forked")
    result = _sync(tmp_path, "--processes", "2", str(sync_file))
    assert result.returncode == 2, result
    assert "--processes needs a directory store as the target" in result.stderr
    both = _sync(tmp_path, "--processes", "2", "--workers", "2", str(sync_file))
    assert both.returncode == 2 and "exclude each other" in both.stderr
    fast = _sync_file(tmp_path / "f.yaml", registry.host, (tmp_path / "f").as_uri())
    fail_fast = _sync(tmp_path, "--processes", "2", "--fail-fast", str(fast))
    assert fail_fast.returncode == 2 and "--fail-fast" in fail_fast.stderr
    traced = run_cli(
        "-vv", "sync", "--processes", "2", str(fast), home=tmp_path / "home", subprocess=True
    )
    assert traced.returncode == 2 and "-vv prints the store metrics" in traced.stderr
    assert not (tmp_path / "f").exists()  # refused before anything moved


def test_processes_asked_while_a_thread_runs_fall_back_to_one_and_say_so(
    registry: RegistryServer, tmp_path: Path
) -> None:
    import threading

    _seed(registry)
    sync_file = _sync_file(tmp_path / "t.yaml", registry.host, (tmp_path / "t").as_uri())
    stop = threading.Event()
    waiting = threading.Thread(target=stop.wait)  # forking now would be unsafe
    waiting.start()
    try:
        result = run_cli("--json", "sync", "--processes", "2", str(sync_file), home=tmp_path / "h")
    finally:
        stop.set()
        waiting.join()
    assert result.returncode == 0, result
    assert "the images are moved in one process" in result.stderr
    doc = result.json()
    assert "processes" not in doc and doc["copied"] == len(TAGS)


def test_a_registry_target_stays_in_one_process(registry_factory: Any, tmp_path: Path) -> None:
    source, target = registry_factory(), registry_factory()
    images = _seed(source)
    sync_file = tmp_path / "r.yaml"
    sync_file.write_text(
        json.dumps(
            {
                "target": {"registry": target.host, "plain_http": True},
                "sources": [
                    {"registry": source.host, "plain_http": True,
                     "repositories": [{"name": "fork/app"}]}
                ],
            }
        )
    )  # fmt: skip
    # processes pushing a blob their shares share can race: refused before anything moves
    asked = _sync(tmp_path, "--processes", "2", str(sync_file))
    assert asked.returncode == 2 and "not a registry" in asked.stderr, asked
    # by default a registry target is synced in one process, however many images
    report = _sync(tmp_path, "--json", str(sync_file))
    assert report.returncode == 0, report
    assert "processes" not in report.json() and report.json()["copied"] == len(TAGS)
    from regstore.client import Client

    with Client(target.host, plain_http=True, use_docker_config=False) as client:
        for tag, built in images.items():
            info = client.head_manifest("fork/app", tag)
            assert info is not None and info.digest == built.manifest_digest


def test_more_processes_asked_than_images_fork_one_per_image(
    registry: RegistryServer, tmp_path: Path
) -> None:
    _seed(registry)
    sync_file = _sync_file(tmp_path / "m.yaml", registry.host, (tmp_path / "m").as_uri())
    report = _sync(tmp_path, "--json", "--processes", "64", str(sync_file))
    assert report.returncode == 0, report
    assert (report.json()["processes"], report.json()["copied"]) == (len(TAGS), len(TAGS))


# -- when a sync takes more than one process by itself ------------------------------------------


@dataclass
class _Settings:
    concurrency: int | None = None
    verbose: int = 0


@dataclass
class _State:
    settings: _Settings = field(default_factory=_Settings)


def _plan(n: int) -> SyncPlan:
    job: Any = PlannedJob(None, None)  # type: ignore[arg-type]  # only counted here
    return SyncPlan(jobs=[job] * n)


@pytest.mark.parametrize(
    ("jobs", "settings", "keep_going", "store", "cpus", "expected"),
    [
        (AUTO_MIN_IMAGES, _Settings(), True, "file", 2, 2),
        (300, _Settings(), True, "file", 8, 4),  # at most AUTO_MOST
        (300, _Settings(), True, None, 2, 1),  # a registry target: only when asked
        (AUTO_MIN_IMAGES - 1, _Settings(), True, "file", 2, 1),  # too few images
        (300, _Settings(concurrency=4), True, "file", 2, 1),  # a bound on the whole run
        (300, _Settings(), False, "file", 2, 1),  # --fail-fast
        (300, _Settings(verbose=2), True, "file", 2, 1),  # -vv: one process's store metrics
        (300, _Settings(), True, "memory", 2, 1),  # writes no other process sees
        (300, _Settings(), True, "file", 1, 1),  # one CPU
        (300, _Settings(), True, "file-concurrency", 2, 1),  # the sync file's concurrency
    ],
)
def test_auto_processes(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    jobs: int,
    settings: _Settings,
    keep_going: bool,
    store: str | None,
    cpus: int,
    expected: int,
) -> None:
    from regstore.cli import syncforked

    monkeypatch.setattr(syncforked, "_cpus", lambda: cpus)
    target = None
    plan = _plan(jobs)
    if store and store.startswith("file"):
        target = open_store(str(tmp_path / "s"))
    elif store == "memory":
        target = open_store("memory://auto-processes")
    if store == "file-concurrency":
        plan.concurrency = 3  # defaults: {concurrency: 3}: a bound on the whole run
    state: Any = _State(settings)
    assert auto_processes(state, plan, target, keep_going=keep_going) == expected


def test_the_cpu_quota_of_the_process_s_cgroup_and_those_above_it(tmp_path: Path) -> None:
    from regstore.cli.syncforked import quota_cpus

    root, own = tmp_path / "cgroup", tmp_path / "self-cgroup"
    (root / "a" / "b").mkdir(parents=True)
    own.write_text("0::/a/b\n")
    assert quota_cpus(root, own) is None  # no cpu.max anywhere
    (root / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert quota_cpus(root, own) is None  # no limit
    (root / "a" / "cpu.max").write_text("150000 100000\n")
    assert quota_cpus(root, own) == 2  # 1.5 CPUs above it, rounded up
    (root / "a" / "b" / "cpu.max").write_text("50000 100000\n")
    assert quota_cpus(root, own) == 1  # the strictest on the way up
    own.write_text("12:cpu,cpuacct:/docker/x\n")  # cgroup v1 only: the root's own file
    (root / "cpu.max").write_text("300000 100000\n")
    assert quota_cpus(root, own) == 3
    assert quota_cpus(root, tmp_path / "missing") == 3
