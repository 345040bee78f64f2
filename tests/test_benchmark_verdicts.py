"""The benchmark suite's verdicts (benchmarks/run.py ``summarise``): when a missed target
counts as explained by a ceiling measured in the same run. No timing is measured here: the
runners get made-up samples."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regstore_bench_run", ROOT / "benchmarks/run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _runner(bench: Any, name: str, kind: str, times: list[float], rss: float = 10.0) -> Any:
    r = bench.Runner(name, kind, command=lambda i: ["true"])
    r.samples = [bench.Sample(t, rss, 0.1) for t in times]
    return r


def _targets(
    bench: Any,
    runners: list[tuple[str, str, list[float]]],
    targets: list[tuple[str, float]],
) -> dict[str, Any]:
    """The verdicts of one workload of these runners (name, kind, seconds of each run) on
    these targets, by the runner each target is against."""
    work = bench.Workload(
        "w", "a workload", 2**30, [_runner(bench, *r) for r in runners], targets=targets
    )
    (row,) = bench.summarise([work])
    return {t["against"]: t for t in row["targets"]}


def _verdict(bench: Any, regstore: list[float], peer: list[float], ceiling: list[float]) -> Any:
    runners = [("regstore", "regstore", regstore), ("peer", "peer", peer)]
    target = _targets(bench, [*runners, ("disk", "ceiling", ceiling)], [("peer", 3.0)])["peer"]
    assert target["met"] is False
    return target["explained_by"]


def test_a_ceiling_slower_than_the_target_needs_explains_a_miss_regstore_nearly_reaches(
    bench: Any,
) -> None:
    # 3x a 9 s peer needs 3 s; the disk never took under 3.5 s; regstore is at 0.95x of it
    assert _verdict(bench, [4.0, 4.0, 4.0], [9.0, 9.0, 9.0], [3.6, 3.8, 3.5]) is not None


def test_a_ceiling_that_was_once_fast_enough_explains_nothing(bench: Any) -> None:
    # its median (3.4 s) is above the 3 s needed, but one run took 2.9 s
    assert _verdict(bench, [3.6, 3.6, 3.6], [9.0, 9.0, 9.0], [2.9, 3.4, 3.5]) is None


def test_regstore_far_from_the_ceiling_is_its_own_gap(bench: Any) -> None:
    # the disk is out of reach of the target, but regstore is at 0.5x of the disk
    assert _verdict(bench, [8.0, 8.0, 8.0], [9.0, 9.0, 9.0], [4.0, 4.0, 4.0]) is None


def _against_ceilings(bench: Any, regstore: list[float], strict: list[float]) -> dict[str, Any]:
    """A target against one ceiling (GET + sha256, 0.8x) beside a stricter ceiling that adds
    work every such store must do (keeping the bytes in RAM)."""
    runners = [
        ("regstore", "regstore", regstore),
        ("GET + sha256", "ceiling", [1.0, 1.0, 1.0]),
        ("GET + sha256 + kept in RAM", "ceiling", strict),
    ]
    return _targets(bench, runners, [("GET + sha256", 0.8), ("GET + sha256 + kept in RAM", 0.9)])


def test_a_miss_against_a_ceiling_is_explained_by_a_stricter_ceiling_regstore_reaches(
    bench: Any,
) -> None:
    # 0.8x a 1.0 s ceiling needs 1.25 s; keeping the bytes never took under 1.6 s, and
    # regstore (1.7 s) is within 0.9x of that
    verdicts = _against_ceilings(bench, [1.7, 1.7, 1.7], [1.6, 1.65, 1.7])
    get_hash = verdicts["GET + sha256"]
    assert get_hash["met"] is False
    assert get_hash["explained_by"] is not None
    assert get_hash["explained_by"].startswith("GET + sha256 + kept in RAM")


def test_a_stricter_ceiling_within_reach_explains_nothing(bench: Any) -> None:
    # keeping the bytes took 1.1 s once: the 1.25 s needed was within reach
    verdicts = _against_ceilings(bench, [1.3, 1.3, 1.3], [1.1, 1.2, 1.2])
    assert verdicts["GET + sha256"]["met"] is False
    assert verdicts["GET + sha256"]["explained_by"] is None


# -- the no-op re-sync's ceiling: the registry answering the same manifest HEADs ---------------


def _noop(bench: Any, regstore: list[float], heads: list[float]) -> dict[str, Any]:
    runners = [
        ("regstore", "regstore", regstore),
        ("skopeo sync (2nd run)", "peer", [2.7, 2.7, 2.7]),
        ("registry HEADs", "ceiling", heads),
    ]
    return _targets(bench, runners, [("skopeo sync (2nd run)", 10.0), ("registry HEADs", 0.9)])


def test_the_registry_heads_ceiling_explains_a_10x_miss_regstore_nearly_reaches(
    bench: Any,
) -> None:
    # 10x a 2.7 s skopeo needs 0.27 s; the registry alone never answered the HEADs under
    # 0.28 s, and regstore (0.30 s) is within 0.9x of it: the miss is the registry's
    verdicts = _noop(bench, [0.30, 0.30, 0.30], [0.28, 0.29, 0.28])
    skopeo = verdicts["skopeo sync (2nd run)"]
    assert skopeo["met"] is False
    assert skopeo["explained_by"] is not None
    assert skopeo["explained_by"].startswith("registry HEADs")
    assert verdicts["registry HEADs"]["met"] is True


def test_registry_heads_fast_enough_for_the_target_explain_nothing(bench: Any) -> None:
    # the registry answered in 0.10 s: 0.27 s was within reach, regstore's 0.30 s is its own
    verdicts = _noop(bench, [0.30, 0.30, 0.30], [0.10, 0.10, 0.10])
    assert verdicts["skopeo sync (2nd run)"]["explained_by"] is None
    assert verdicts["registry HEADs"]["met"] is False


# -- verify: a run that did not do the work has no figure ---------------------------------------


def test_a_run_whose_verify_fails_is_an_error_without_a_figure(bench: Any) -> None:
    checked: list[int] = []

    def verify(i: int) -> None:
        checked.append(i)
        raise RuntimeError("the target does not hold the layer")

    runner = bench.Runner("skopeo", "peer", command=lambda i: ["true"], verify=verify)
    bench.run_all([bench.Workload("push-big", "push", 2**30, [runner])], 2, lambda text: None)
    assert checked == [0]  # checked after the first run; no second run once failed
    assert runner.samples == []
    assert runner.error is not None and "does not hold the layer" in runner.error


def test_a_run_whose_verify_passes_keeps_its_figure(bench: Any) -> None:
    checked: list[int] = []
    runner = bench.Runner("regstore", "regstore", command=lambda i: ["true"], verify=checked.append)
    bench.run_all([bench.Workload("push-big", "push", 2**30, [runner])], 2, lambda text: None)
    assert checked == [0, 1]
    assert len(runner.samples) == 2
    assert runner.error is None


def test_a_child_s_own_report_travels_with_its_sample(bench: Any) -> None:
    said = 'print("progress"); print(\'{"seconds": 0.5, "direct": false}\')'
    sample = bench.measure([sys.executable, "-c", said])
    assert sample.report == {"seconds": 0.5, "direct": False}
    assert bench.measure([sys.executable, "-c", 'print("no report")']).report == {}
    assert bench.measure(["true"]).report == {}


def test_a_direct_write_that_was_refused_is_flagged_in_all_figures(
    bench: Any, tmp_path: Path
) -> None:
    def markdown(direct: list[bool]) -> str:
        runner = _runner(bench, "direct write", "ceiling", [0.7] * len(direct))
        for sample, flag in zip(runner.samples, direct, strict=True):
            sample.report = {"direct": flag}
        work = bench.Workload("pull-big", "pull 1 GiB", 2**30, [runner])
        report = {
            "quick": False, "date": "today", "runs": len(direct),
            "machine": {"cpu": "cpu", "cores": 2, "memory": "1 kB", "kernel": "6"},
            "load_before": [0.0, 0.0, 0.0], "load_after": [0.0, 0.0, 0.0], "versions": {},
            "workloads": bench.summarise([work]),
        }  # fmt: skip
        bench.write_markdown(tmp_path / "RESULTS.md", report, None)
        return (tmp_path / "RESULTS.md").read_text()

    assert "O_DIRECT refused" in markdown([True, False, True])
    assert "O_DIRECT refused" not in markdown([True, True, True])


def test_reading_in_reads_every_file_below_a_root_and_a_file_itself(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "store" / "a" / "b").mkdir(parents=True)
    for name in ("store/a/one", "store/a/b/two", "alone"):
        (tmp_path / name).write_bytes(name.encode())
    read: list[str] = []
    real_open = Path.open

    def opened(self: Path, *args: Any, **kwargs: Any) -> Any:
        read.append(self.relative_to(tmp_path).as_posix())
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", opened)
    bench.read_in(tmp_path / "store", tmp_path / "alone", tmp_path / "missing")
    assert read == ["store/a/b/two", "store/a/one", "alone"]


def test_a_workload_cleanup_runs_once_after_every_run_of_every_runner(bench: Any) -> None:
    events: list[str] = []

    def runner(name: str) -> Any:
        return bench.Runner(
            name,
            "peer",
            command=lambda i: ["true"],
            verify=lambda i: events.append(f"{name} run {i}"),
            cleanup=lambda i: events.append(f"{name} cleanup {i}"),
        )

    workload = bench.Workload(
        "mirror-first",
        "mirror",
        1,
        [runner("a"), runner("b")],
        cleanup=lambda: events.append("workload cleanup"),
    )
    bench.run_all([workload], 2, lambda text: None)
    assert events == [
        *("a run 0", "a cleanup 0", "b run 0", "b cleanup 0"),
        *("b run 1", "b cleanup 1", "a run 1", "a cleanup 1"),  # round 2 starts at b
        "workload cleanup",
    ]


def test_a_short_workload_runs_its_rounds_times_as_often(bench: Any) -> None:
    ran: list[int] = []
    runner = bench.Runner("a", "peer", command=lambda i: ["true"], verify=ran.append)
    bench.run_all([bench.Workload("mirror-noop", "no-op", 0, [runner], rounds=3)], 2, print)
    assert ran == list(range(6)) and len(runner.samples) == 6


def test_each_round_starts_one_runner_further_on(bench: Any) -> None:
    runners = [_runner(bench, name, "peer", [1.0]) for name in ("a", "b", "c")]
    orders = [[r.name for r in bench._rotated(runners, i)] for i in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_a_target_against_a_failed_runner_is_not_met_nor_missed(bench: Any) -> None:
    peer = _runner(bench, "skopeo", "peer", [0.13])
    peer.error = "the target does not hold the layer"
    work = bench.Workload(
        "push-big",
        "push",
        2**30,
        [_runner(bench, "regstore", "regstore", [7.0]), peer],
        targets=[("skopeo", 1.0)],
    )
    (row,) = bench.summarise([work])
    (target,) = row["targets"]
    assert target["met"] is None
    assert target["ratio"] is None
    assert target["failed"] is True


class _BlobHead(http.server.BaseHTTPRequestHandler):
    """A registry's blob HEAD: 200 with a Content-Length for the one blob it holds."""

    held = ("/v2/bench/big/blobs/sha256:aa", 1000)

    def do_HEAD(self) -> None:
        if self.path == self.held[0]:
            self.send_response(200)
            self.send_header("Content-Length", str(self.held[1]))
        else:
            self.send_response(404)
            self.send_header("Content-Length", "157")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def blob_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BlobHead)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=60)


def test_check_blob_passes_when_the_target_holds_the_layer_whole(
    bench: Any, blob_server: str
) -> None:
    bench.check_blob(blob_server, "bench/big", "sha256:aa", 1000)


@pytest.mark.parametrize(
    ("digest", "size"),
    [("sha256:bb", 1000), ("sha256:aa", 99_000)],
    ids=["another-digest", "another-size"],
)
def test_check_blob_fails_when_the_target_holds_other_bytes(
    bench: Any, blob_server: str, digest: str, size: int
) -> None:
    with pytest.raises(RuntimeError, match="did not push the same bytes"):
        bench.check_blob(blob_server, "bench/big", digest, size)


# -- peak RSS against layer size ---------------------------------------------------------------


def _rss(bench: Any, values: list[float], name: str = "regstore") -> Any:
    r = bench.Runner(name, "regstore", command=lambda i: ["true"])
    r.samples = [bench.Sample(1.0, v, 0.1) for v in values]
    return r


@pytest.mark.parametrize(
    ("big", "small", "within"),
    [
        ([43.0, 44.0, 90.0], [40.0, 40.0, 41.0], True),  # medians 44 and 40: exactly 10%
        ([45.0, 45.0, 45.0], [40.0, 40.0, 40.0], False),  # 12.5% more
        ([36.0, 36.0, 36.0], [40.0, 40.0, 40.0], True),  # 10% less
        ([30.0, 30.0, 30.0], [40.0, 40.0, 40.0], False),  # 25% less: not independent either
    ],
    ids=["at-10pc", "over", "below-within", "far-below"],
)
def test_peak_rss_within_10pc_of_the_small_image(
    bench: Any, big: list[float], small: list[float], within: bool
) -> None:
    result = bench.rss_scaling(_rss(bench, big), _rss(bench, small, "small"))
    assert result["within"] is within
    assert result["big_rss_mib"] == sorted(big)[1]  # medians, not the peaks of one run
    assert result["small_rss_mib"] == sorted(small)[1]


def test_peak_rss_scaling_has_no_verdict_without_a_probe_or_after_a_failure(bench: Any) -> None:
    assert bench.rss_scaling(_rss(bench, [40.0]), None) is None
    failed = _rss(bench, [40.0], "small")
    failed.error = "exited 1"
    assert bench.rss_scaling(_rss(bench, [40.0]), failed)["within"] is None
    assert bench.rss_scaling(_rss(bench, [40.0]), _rss(bench, [], "small"))["within"] is None


def test_the_small_image_probe_is_no_runner_of_the_targets(bench: Any) -> None:
    probe = _rss(bench, [40.0], "regstore, 10 MiB image")
    work = bench.Workload(
        "push-big",
        "push",
        2**30,
        [_runner(bench, "regstore", "regstore", [7.0], rss=42.0)],
        rss_probe=probe,
    )
    (row,) = bench.summarise([work])
    assert [r["name"] for r in row["runners"]] == ["regstore"]
    assert row["rss_scaling"]["small_rss_mib"] == 40.0
    assert row["rss_scaling"]["big_rss_mib"] == 42.0
    assert row["rss_scaling"]["within"] is True


# -- the start-up bound: regstore's median wall time against an absolute limit ----------------


def _startup_row(bench: Any, times: list[float], error: str | None = None) -> dict[str, Any]:
    mine = _runner(bench, "regstore", "regstore", times)
    mine.error = error
    work = bench.Workload(
        "startup",
        "regstore --help (start-up)",
        0,
        [mine, _runner(bench, "interpreter", "ceiling", [0.01])],
        time_bound_s=0.15,
    )
    (row,) = bench.summarise([work])
    return row  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("times", "ok"),
    [([0.07, 0.08, 0.30], True), ([0.14, 0.16, 0.16], False), ([0.10, 0.15, 0.20], True)],
    ids=["median-within", "median-over", "at-the-bound"],
)
def test_the_start_up_bound_judges_regstore_s_median(
    bench: Any, times: list[float], ok: bool
) -> None:
    assert _startup_row(bench, times)["time_bound"] == {"bound_s": 0.15, "ok": ok, "failed": False}


def test_the_start_up_bound_has_no_verdict_after_a_failed_run(bench: Any) -> None:
    failed = _startup_row(bench, [0.07], error="exited 1")["time_bound"]
    assert failed["ok"] is None and failed["failed"] is True
    assert _startup_row(bench, [])["time_bound"]["ok"] is None


def test_the_start_up_bound_is_a_row_of_the_targets_table(bench: Any, tmp_path: Path) -> None:
    report = {
        "quick": False,
        "date": "today",
        "runs": 3,
        "machine": {"cpu": "cpu", "cores": 2, "memory": "1 kB", "kernel": "6"},
        "load_before": [0.0, 0.0, 0.0],
        "load_after": [0.0, 0.0, 0.0],
        "versions": {},
        "workloads": [_startup_row(bench, [0.16, 0.17, 0.18])],
    }
    bench.write_markdown(tmp_path / "RESULTS.md", report, None)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| regstore --help (start-up) | 0.170 s | time bound | — | ≤ 0.15 s | **no** |" in text
    report["workloads"] = [_startup_row(bench, [0.07], error="exited 1")]
    bench.write_markdown(tmp_path / "RESULTS.md", report, None)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| time bound | — | ≤ 0.15 s | **a run failed** (see All figures) |" in text


# -- the fsync floor: as many fsyncs as regstore, from as many threads as its --concurrency -----


@pytest.fixture(scope="module")
def ceilings() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "regstore_bench_ceilings", ROOT / "benchmarks/ceilings.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("count", [7, 8])
def test_the_fsync_floor_makes_its_fsyncs_from_several_threads(
    ceilings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    real = os.fsync
    calls: list[tuple[int, bool]] = []
    lock = threading.Lock()
    # the first two fsyncs wait for each other: made serially, the second never comes and
    # the barrier breaks (after a generous timeout) instead of the test passing
    meet = threading.Barrier(2, timeout=120)

    def fsync(fd: int) -> None:
        with lock:
            calls.append((threading.get_ident(), os.path.isdir(f"/proc/self/fd/{fd}")))
            first_two = len(calls) <= 2
        if first_two:
            meet.wait()
        real(fd)

    monkeypatch.setattr(ceilings.os, "fsync", fsync)
    assert ceilings.FSYNC_THREADS == 4  # regstore's default --concurrency
    files, dirs = (count + 1) // 2, count // 2
    made = ceilings._fsyncs(str(tmp_path / "f"), files, ceilings.FSYNC_THREADS, dirs)
    assert made == count == len(calls)  # the total count kept
    assert len({thread for thread, _ in calls}) >= 2
    assert threading.get_ident() not in {thread for thread, _ in calls}
    assert sum(is_dir for _, is_dir in calls) == dirs  # as many on directories as asked
    # each file was renamed into place after its fsync, as a store commits a file
    renamed = [p for p in (tmp_path / "f").rglob("f*") if p.is_file()]
    assert len(renamed) == files and not list((tmp_path / "f").glob("t*"))


@pytest.mark.parametrize(("count", "syncfs"), [(8, 3), (7, 4), (6, 0), (2, 5)])
def test_the_fsync_floor_also_makes_as_many_syncfs_calls_as_regstore(
    ceilings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, syncfs: int
) -> None:
    made: list[int] = []

    def counting() -> Any:
        def call(fd: int) -> None:
            assert os.path.isdir(f"/proc/self/fd/{fd}")  # of the floor's directory
            made.append(fd)

        return call

    monkeypatch.setattr(ceilings, "_syncfs", counting)
    made_fsyncs = ceilings._fsyncs(str(tmp_path / "f"), count, ceilings.FSYNC_THREADS, 0, syncfs)
    assert made_fsyncs == count
    assert len(made) == syncfs  # all of them, even more than there are files


def test_counting_fsyncs_counts_regstore_s_syncfs_calls_too(tmp_path: Path) -> None:
    """The floor's inputs come from regstore itself: an image copied through the CLI into a
    file store reports its fsync and its syncfs calls."""
    from regstore import open_store
    from regstore.backends.durable import syncfs_covers
    from regstore.testing.builders import oci_image, write_image

    source = open_store(str(tmp_path / "a"))
    write_image(source, "team/app", "v1", oci_image(layers=2, seed=3))
    source.close()
    command = [sys.executable, str(ROOT / "benchmarks" / "ceilings.py"), "count-fsyncs", "-q",
               "copy", "store:team/app:v1", "store:team/app:v1",
               "--src-store", str(tmp_path / "a"), "--dest-store", str(tmp_path / "b")]  # fmt: skip
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    counted = json.loads(run.stdout.strip().splitlines()[-1])
    # each file's bytes before its rename: 2 layers, the config, the manifest, >= 4 links
    assert counted["fsyncs"] >= 8
    if syncfs_covers(str(tmp_path)):
        # the new entries in groups: before the manifest is visible, after its tag
        assert counted["syncfs"] >= 2
    else:  # each new entry's directory at once
        assert counted["syncfs"] == 0 and counted["dir_fsyncs"] >= 8


def test_a_run_says_what_the_servers_spent_meanwhile_and_how_busy_the_machine_was(
    bench: Any, tmp_path: Path
) -> None:
    # a "server" that burns CPU until told to stop, and one that is already gone
    stop = tmp_path / "stop"
    burn = f"import os\nwhile not os.path.exists({str(stop)!r}):\n    sum(range(10000))"
    server = subprocess.Popen([sys.executable, "-c", burn])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        sample = bench.measure(
            [sys.executable, "-c", "import time; time.sleep(0.5)"],
            servers=[server.pid, gone.pid],
        )
    finally:
        stop.touch()
        server.wait(timeout=30)
    assert sample.server_cpu_seconds is not None
    assert 0.1 < sample.server_cpu_seconds < sample.seconds + 0.1  # one core at most
    assert sample.machine_busy is not None
    assert 0.0 < sample.machine_busy <= 1.0
    # without servers, or when none could be read at both ends, nothing is said of them
    assert bench.measure(["true"]).server_cpu_seconds is None
    assert bench.measure(["true"], servers=[gone.pid]).server_cpu_seconds is None
    # one that goes away (exits and is reaped) during the run took its CPU time along:
    # unknown, not 0
    brief = subprocess.Popen(["sleep", "0.2"])
    reaper = threading.Thread(target=brief.wait)
    reaper.start()
    during = bench.measure(
        [sys.executable, "-c", "import time; time.sleep(1.5)"], servers=[brief.pid]
    )
    reaper.join()
    assert during.server_cpu_seconds is None

    runner = _runner(bench, "regstore", "regstore", [1.0, 2.0, 3.0])
    measured = [(0.2, 0.5), (0.4, 0.9), (None, None)]
    for s, (cpu, busy) in zip(runner.samples, measured, strict=True):
        s.server_cpu_seconds, s.machine_busy = cpu, busy
    work = bench.Workload("mirror-noop", "no-op re-sync", 0, [runner])
    (row,) = bench.summarise([work])
    (figures,) = row["runners"]
    assert figures["server_cpu_s"] == pytest.approx(0.3)  # the runs that measured it
    assert figures["machine_busy"] == pytest.approx(0.7)
    report = {
        "quick": False, "date": "today", "runs": 3,
        "machine": {"cpu": "cpu", "cores": 2, "memory": "1 kB", "kernel": "6"},
        "load_before": [0.0, 0.0, 0.0], "load_after": [0.0, 0.0, 0.0], "versions": {},
        "workloads": [row],
    }  # fmt: skip
    bench.write_markdown(tmp_path / "RESULTS.md", report, None)
    assert "| 0.30 | 70% |" in (tmp_path / "RESULTS.md").read_text()


def test_the_proc_figures_are_read_field_by_field(bench: Any) -> None:
    # a command name may hold ") (" and spaces: fields count from its last ")"
    stat = "4242 (a) (b c) S 1 2 3 4 5 6 7 8 9 10 250 70 13 14 20 0 1 0 99"
    assert bench.process_ticks(stat) == 320  # utime 250 + stime 70
    assert bench.process_ticks("") is None
    assert bench.process_ticks("4242 (short) S 1 2") is None
    # user nice system idle iowait irq softirq steal guest guest_nice: idle and iowait are
    # not busy, steal is, guest is inside user already
    machine = "cpu  100 5 40 800 50 3 2 10 30 0\ncpu0 50 2 20 400 25 1 1 5 15 0\n"
    assert bench.machine_ticks(machine) == (160, 1010)
    assert bench.machine_ticks("") is None
    assert bench.machine_ticks("intr 1 2 3\n") is None
