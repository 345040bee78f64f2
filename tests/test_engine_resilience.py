"""The engine when things go wrong: cut connections, killed processes, concurrent pullers, and
memory that must stay bounded whatever the blob size.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from regstore import (
    BlobUploadNotFoundError,
    DigestMismatchError,
    EventKind,
    TransferEvent,
    open_store,
)
from regstore.client import Client
from regstore.engine import RegistryImage, StoreImage, copy, pull, push, transfer_many
from regstore.hookspecs import BlobState
from regstore.testing.builders import build_image
from tests.support.cli import put_image, run_cli
from tests.support.engine import (
    blob_digest_in_registry,
    env_without_ca_bundle,
    push_raw_blob,
    seed_registry,
    seed_single_layer_image,
)
from tests.support.registry import RegistryServer

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def _run_python(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env_without_ca_bundle(),
    )


def test_pull_resumes_a_cut_connection_with_range(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory
) -> None:
    built = build_image(layers=1, layer_size=6 * MiB, seed=100, media="docker")
    seed_registry(registry.url, "cut/img", "1", built)
    layer = built.layer_digests[0]
    size = len(built.blobs[layer])
    proxy = fault_proxy_factory(registry)
    proxy.cut_response(f"/blobs/{layer}", after_bytes=2 * MiB + 123, times=1)
    store = open_store(str(tmp_path / "store"))

    pull(Client(proxy.host), store, "cut/img", "1")

    with store.layer(layer).reader() as reader:
        assert reader.read() == built.blobs[layer]
    gets = proxy.requests_matching("GET", f"/blobs/{layer}")
    assert len(gets) == 2
    assert gets[1].headers.get("Range") == f"bytes={2 * MiB + 123}-"
    # the resumed GET fetched only the rest: less than the blob plus one read chunk in total
    assert proxy.bytes_sent(f"/blobs/{layer}") < size + 4 * MiB
    assert proxy.bytes_sent(f"/blobs/{layer}") == size


def test_push_resumes_a_chunk_cut_in_the_middle(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory
) -> None:
    built = build_image(layers=1, layer_size=5 * MiB, seed=101, media="oci")
    seed_registry(registry.url, "src/chunky", "1", built)
    store = open_store(str(tmp_path / "store"))
    pull(Client(registry.host), store, "src/chunky", "1")
    layer = built.layer_digests[0]
    proxy = fault_proxy_factory(registry)
    proxy.cut_request("/blobs/uploads/", after_bytes=MiB // 2, times=1, method="PATCH")

    result = push(
        Client(proxy.host),
        store,
        "src/chunky",
        "1",
        dest_name="dst/chunky",
        chunk_size=2 * MiB,
        monolithic_threshold=MiB,
    )

    assert layer in result.transferred
    assert blob_digest_in_registry(registry.url, "dst/chunky", layer) == layer
    patches = proxy.requests_matching("PATCH", "/blobs/uploads/")
    status_checks = proxy.requests_matching("GET", "/blobs/uploads/")
    assert len(status_checks) >= 1  # it asked the registry where to resume
    # every chunk after the cut started where the registry said, not from zero
    starts = [int(p.headers["Content-Range"].split("-")[0]) for p in patches]
    assert starts[0] == 0 and starts[-1] > 0
    assert starts == sorted(starts)  # it never went back to an earlier offset
    assert len(patches) <= 4  # three chunks plus the one that was cut


def test_killed_pull_reruns_without_refetching_finished_blobs(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory
) -> None:
    built = build_image(layers=3, layer_size=3 * MiB, seed=102, media="docker")
    seed_registry(registry.url, "kill/img", "1", built)
    last = built.layer_digests[-1]
    proxy = fault_proxy_factory(registry)
    # the last layer always breaks after 1 MiB: the child keeps retrying until it is killed
    proxy.cut_response(f"/blobs/{last}", after_bytes=MiB, times=None)
    store_dir = tmp_path / "store"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys
            from regstore import open_store
            from regstore.client import Client
            from regstore.engine import pull
            pull(Client(sys.argv[1]), open_store(sys.argv[2]), "kill/img", "1", concurrency=1)
        """),
            proxy.host,
            str(store_dir),
        ],
        cwd=ROOT,
        env=env_without_ca_bundle(),
    )
    store = open_store(str(store_dir))
    others = [d for d in built.blobs if d != last]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(store.blob_exists(d) for d in others) and proxy.count("GET", f"/blobs/{last}") >= 2:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert all(store.blob_exists(d) for d in others)
    assert store.blob_status(last).state is not BlobState.COMPLETE
    assert store.repositories() == []  # no tag for an incomplete image

    proxy.clear_faults()
    proxy.clear_records()
    pull(Client(proxy.host), store, "kill/img", "1")

    for digest in others:
        assert proxy.count("GET", f"/blobs/{digest}") == 0
    (get,) = proxy.requests_matching("GET", f"/blobs/{last}")
    assert get.headers.get("Range", "").startswith("bytes=")
    assert store.manifest("kill/img", "1").raw == built.manifest_bytes
    with store.layer(last).reader() as reader:
        assert reader.read() == built.blobs[last]


def test_two_threads_pull_the_same_image_each_blob_fetched_once(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory
) -> None:
    built = build_image(layers=4, layer_size=MiB, seed=103, media="oci")
    seed_registry(registry.url, "race/img", "1", built)
    proxy = fault_proxy_factory(registry)
    proxy.delay("GET", "/blobs/", 0.2)  # widen the window in which both want the same blob
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pull(Client(proxy.host), open_store(str(tmp_path / "store")), "race/img", "1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    for digest in built.blobs:
        assert proxy.count("GET", f"/blobs/{digest}") == 1
    store = open_store(str(tmp_path / "store"))
    for digest, data in built.blobs.items():
        with store.layer(digest).reader() as reader:
            assert reader.read() == data


def test_two_processes_pull_the_same_image(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory
) -> None:
    built = build_image(layers=4, layer_size=MiB, seed=104, media="docker")
    seed_registry(registry.url, "race/proc", "1", built)
    proxy = fault_proxy_factory(registry)
    proxy.delay("GET", "/blobs/", 0.3)
    code = """
        import sys
        from regstore import open_store
        from regstore.client import Client
        from regstore.engine import pull
        pull(Client(sys.argv[1]), open_store(sys.argv[2]), "race/proc", "1")
    """
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), proxy.host, str(tmp_path / "store")],
            cwd=ROOT,
            env=env_without_ca_bundle(),
        )
        for _ in range(2)
    ]
    assert [c.wait(timeout=120) for c in children] == [0, 0]
    for digest in built.blobs:
        assert proxy.count("GET", f"/blobs/{digest}") == 1
    store = open_store(str(tmp_path / "store"))
    assert store.manifest("race/proc", "1").raw == built.manifest_bytes
    for digest, data in built.blobs.items():
        with store.layer(digest).reader() as reader:
            assert reader.read() == data


_RSS_CHILD = """
    import json, sys
    from regstore import open_store
    from regstore.client import Client
    from regstore.engine import pull

    def peak_rss_kib():
        # VmHWM is this process image's own peak: getrusage's ru_maxrss would also count the
        # parent's resident memory, which Linux carries into a child across fork and exec.
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    opts = json.loads(sys.argv[3])
    store = open_store(sys.argv[2], **opts)
    result = pull(Client(sys.argv[1]), store, "big/img", "1")
    print(json.dumps({"rss_kib": peak_rss_kib(), "moved": result.bytes_moved}))
"""


def _seed_big_image(registry: RegistryServer, tmp_path: Path, size: int) -> tuple[str, int]:
    return seed_single_layer_image(registry.url, "big/img", "1", tmp_path, size), size


@pytest.mark.slow
def test_pulling_512_mib_into_the_filesystem_keeps_rss_under_100_mib(
    registry: RegistryServer, tmp_path: Path
) -> None:
    digest, size = _seed_big_image(registry, tmp_path, 512 * MiB)
    proc = _run_python(_RSS_CHILD, registry.host, str(tmp_path / "store"), "{}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["moved"] >= size
    assert report["rss_kib"] < 100 * 1024, report
    store = open_store(str(tmp_path / "store"))
    assert store.blob_size(digest) == size


@pytest.mark.slow
def test_pulling_128_mib_into_s3_keeps_rss_under_100_mib(
    registry: RegistryServer, tmp_path: Path, s3_bucket
) -> None:
    digest, size = _seed_big_image(registry, tmp_path, 128 * MiB)
    opts = {"endpoint_url": s3_bucket.endpoint_url, "key": "testing", "secret": "testing"}
    url = f"s3://{s3_bucket.bucket}/big"
    proc = _run_python(_RSS_CHILD, registry.host, url, json.dumps(opts))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rss_kib"] < 100 * 1024, report
    store = open_store(url, **opts)
    assert store.blob_size(digest) == size


def test_a_full_disk_is_one_clear_error_and_the_next_run_resumes(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # RLIMIT_FSIZE makes writes past 2 MiB fail with EFBIG, as a full disk fails with ENOSPC
    built = build_image(layers=1, layer_size=6 * MiB, seed=105, media="docker")
    seed_registry(registry.url, "full/img", "1", built)
    layer = built.layer_digests[0]
    store_dir = tmp_path / "store"
    limited = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20)); "
        "from regstore.cli import main; sys.argv[0] = 'regstore'; main()"
    )
    args = ["--store", str(store_dir), "pull", f"{registry.host}/full/img:1"]
    full = subprocess.run(
        [sys.executable, "-c", limited, *args], capture_output=True, text=True, timeout=120
    )

    assert full.returncode == 1
    errors = [line for line in full.stderr.splitlines() if line.startswith("regstore: error:")]
    assert len(errors) == 1 and "File too large" in errors[0] and layer in errors[0]
    assert "Traceback" not in full.stderr
    store = open_store(str(store_dir))
    assert store.blob_status(layer).state is BlobState.PARTIAL  # kept for the next run
    assert store.repositories() == []  # no tag for an incomplete image

    again = run_cli("--json", *args, home=tmp_path / "home")
    assert again.returncode == 0, again
    report = json.loads(again.stdout)
    assert report["bytes_moved"] < len(built.blobs[layer])  # resumed, not restarted
    with store.layer(layer).reader() as reader:
        assert reader.read() == built.blobs[layer]


@contextlib.contextmanager
def _interrupted_at_the_first(proxy: Any, method: str, path: str) -> Iterator[None]:
    """Ctrl-C (a real SIGINT to the main thread) once ``proxy`` sees its first ``method``
    request to ``path``."""

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while not proxy.requests_matching(method, path):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        # a real signal: it wakes the main thread where it waits (interrupt_main would not)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    # Python's own Ctrl-C handler, even where this runs with SIGINT ignored (a worker process)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=interrupt, daemon=True)
    try:
        watcher.start()
        yield
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("how", ["pull", "transfer_many"])
def test_an_interrupt_starts_no_blob_not_yet_started(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory, how: str
) -> None:
    # Ctrl-C (or SIGTERM on the command line) stopped a pull or a sync only once every blob
    # already queued had moved: one at a time, that is the whole image
    built = build_image(layers=6, layer_size=4096, seed=101, media="oci")
    seed_registry(registry.url, "stop/img", "1", built)
    proxy = fault_proxy_factory(registry)
    proxy.delay("GET", r"/blobs/sha256:", 1.0)
    store = open_store(str(tmp_path / "store"))
    client = Client(proxy.host)

    with (
        _interrupted_at_the_first(proxy, "GET", r"/blobs/sha256:"),
        pytest.raises(KeyboardInterrupt),
    ):
        if how == "pull":
            pull(client, store, "stop/img", "1", concurrency=1)
        else:
            jobs = [(RegistryImage(client, "stop/img", "1"), StoreImage(store, "stop/img", "1"))]
            transfer_many(jobs, concurrency=1)
    # the blob running ends; none of the other six blobs (layers and config) is asked for
    assert len(proxy.requests_matching("GET", r"/blobs/sha256:")) == 1
    assert "stop/img" not in store.repositories()


def test_an_interrupt_sends_no_further_chunk_of_a_blob_being_pushed(
    registry: RegistryServer, tmp_path: Path, fault_proxy_factory
) -> None:
    # Ctrl-C during a chunked push waited for every remaining chunk of the blob running, and
    # then committed it: minutes for a large layer on a slow link
    built = build_image(layers=1, layer_size=5 << 20, seed=102, media="oci")
    layer = built.layer_digests[0]
    store = open_store(str(tmp_path / "store"))
    put_image(store, "stop/push", "1", built)
    proxy = fault_proxy_factory(registry)
    proxy.delay("PATCH", r"/blobs/uploads/", 0.5)
    client = Client(proxy.host)

    with (
        _interrupted_at_the_first(proxy, "PATCH", r"/blobs/uploads/"),
        pytest.raises(KeyboardInterrupt),
    ):
        push(
            client,
            store,
            "stop/push",
            "1",
            concurrency=1,
            chunk_size=1 << 20,
            monolithic_threshold=1 << 20,
        )
    # the chunk in flight ends; no other goes, and the blob is never committed
    (patch,) = proxy.requests_matching("PATCH", r"/blobs/uploads/")
    assert not proxy.requests_matching("PUT", r"/blobs/uploads/.*digest=" + layer)
    assert client.blob_length("stop/push", layer) < 0
    # and its session is cancelled (behind: Ctrl-C does not wait for it), the registry kept
    # the megabyte sent until its purge
    status = Client(registry.host).get_blob_upload_status
    deadline = time.monotonic() + 30
    with pytest.raises(BlobUploadNotFoundError):
        while time.monotonic() < deadline:
            status(patch.path)
            time.sleep(0.05)
    assert len(proxy.requests_matching("DELETE", r"/blobs/uploads/")) == 1


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
def test_damaged_bytes_from_a_registry_source_are_read_again_then_named(
    registry: RegistryServer, fault_proxy_factory, times: int | None
) -> None:
    # A copy between registries streams the source's bytes into the upload unhashed (the
    # destination checks them): one damaged read failed the copy, and the error blamed the
    # destination registry (400 DIGEST_INVALID)
    built = build_image(layers=1, layer_size=200_000, seed=103, media="oci")
    layer = built.layer_digests[0]
    seed_registry(registry.url, "src/app", "v1", built)
    proxy = fault_proxy_factory(registry)
    proxy.corrupt_response(f"/blobs/{layer}", times=times)
    source = RegistryImage(Client(proxy.host), "src/app", "v1")
    repo = f"dst/{times or 0}"
    dest = RegistryImage(Client(registry.host), repo, "v1")
    if times == 1:
        events: list[TransferEvent] = []
        copy(source, dest, events=events.append)
        # the refused attempt read again is no failure of the blob
        assert not [e for e in events if e.kind is EventKind.FAILED]
        assert Client(registry.host).blob_length(repo, layer) == len(built.blobs[layer])
        return
    with pytest.raises(DigestMismatchError) as info:
        copy(source, dest)
    assert "read twice from its source" in str(info.value) and layer in str(info.value)
    assert Client(registry.host).head_manifest(repo, "v1") is None


def test_a_blob_the_registry_holds_shorter_than_its_manifest_says_fails_at_once(
    registry: RegistryServer, fault_proxy_factory, tmp_path: Path
) -> None:
    # The registry stated the blob's size on every answer (Content-Length, then a 416 of its
    # whole size), and the pull took the short body for a cut connection: five retries and a
    # backoff, then "is the registry reachable?"
    built = build_image(layers=1, layer_size=3000, seed=104, media="oci")
    layer = built.layer_digests[0]
    for digest, data in built.blobs.items():
        push_raw_blob(registry.url, "size/lie", digest, data, len(data))
    manifest = built.manifest
    manifest["layers"][0]["size"] += 10
    put = requests.put(
        f"{registry.url}/v2/size/lie/manifests/v1",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": built.manifest_media_type},
        timeout=30,
    )
    assert put.status_code == 201  # the registry takes it
    proxy = fault_proxy_factory(registry)
    store = open_store(str(tmp_path / "store"))

    with pytest.raises(DigestMismatchError) as info:
        pull(Client(proxy.host), store, "size/lie", "v1")
    length = len(built.blobs[layer])
    assert f"size {length} instead of {length + 10}" in str(info.value)
    assert len(proxy.requests_matching("GET", f"/blobs/{layer}")) == 1  # not retried
    assert "size/lie" not in store.repositories()
