"""Bundles across processes: a SIGKILLed import resumes, and big layers stream through
bounded memory (VmHWM of a child process). ``--long`` runs the memory check with 1 GiB."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from regstore import open_store
from regstore.bundle import create_bundle, import_bundle
from regstore.engine import StoreImage
from regstore.manifest import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Manifest
from regstore.store import ObjectStore
from regstore.testing.memory import generated_chunks

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
CHUNK = 4 * MiB


def _seed_big_image(store: ObjectStore, name: str, size: int, seed: int) -> tuple[str, str]:
    """An image with one generated layer of ``size`` bytes, streamed in (never whole in
    memory); (manifest digest, layer digest)."""
    hasher = hashlib.sha256()
    for chunk in generated_chunks(size, CHUNK, seed):
        hasher.update(chunk)
    layer = f"sha256:{hasher.hexdigest()}"
    writer = store.layer(layer).writer()
    writer.set_size(size)
    for chunk in generated_chunks(size, CHUNK, seed):
        writer.write(chunk)
    writer.commit()
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    with store.layer(config_digest).writer() as w:
        w.write(config)
        w.commit(len(config))
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer, "size": size}],
        }
    ).encode()
    manifest = Manifest.parse(raw)
    store.write_manifest(name, "1", manifest)
    return str(manifest.digest), layer


def _run(code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_KILLED_IMPORT = """
    import sys, threading
    from regstore import open_store
    from regstore.bundle import import_bundle
    from regstore.events import EventKind

    layer, threshold = sys.argv[3], int(sys.argv[4])
    def events(event):
        if event.kind is EventKind.PROGRESS and event.digest == layer and event.offset >= threshold:
            print("go", flush=True)
            threading.Event().wait()  # hold here until the parent kills this process
    import_bundle(sys.argv[1], store=open_store(sys.argv[2]), events=events, concurrency=1)
    print("finished", flush=True)
"""


def test_a_killed_import_is_completed_by_running_it_again(tmp_path: Path) -> None:
    source = open_store(str(tmp_path / "source"))
    size = 48 * MiB
    top, layer = _seed_big_image(source, "big/img", size, seed=1313)
    bundle = str(tmp_path / "big.tar")
    create_bundle(bundle, [StoreImage(source, "big/img", "1")])
    target = str(tmp_path / "target")

    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_KILLED_IMPORT),
            bundle,
            target,
            layer,
            str(size // 2),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "go", (line, child.stderr.read() if child.stderr else "")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL

    store = open_store(target)
    assert "big/img" not in store.repositories() or store.tags("big/img") == []
    assert not store.blob_exists(layer)

    batch = import_bundle(bundle, store=store)
    assert batch.ok, batch.as_dict()
    # the bytes staged before the kill were resumed from, not fetched again
    assert batch.bytes_moved < size, batch.as_dict()
    assert str(store.manifest("big/img", "1").digest) == top
    assert store.blob_size(layer) == size
    digest = hashlib.sha256()
    with store.layer(layer).reader() as reader:
        for chunk in reader.chunks(CHUNK):
            digest.update(chunk)
    assert f"sha256:{digest.hexdigest()}" == layer


_RSS_CHILD = """
    import json, sys
    from regstore import open_store
    from regstore.bundle import create_bundle, import_bundle
    from regstore.engine import StoreImage
    from regstore.testing.memory import peak_memory, reset_peak_memory

    source, bundle, target = open_store(sys.argv[1]), sys.argv[2], open_store(sys.argv[3])
    reset_peak_memory()
    info = create_bundle(bundle, [StoreImage(source, "big/img", "1")])
    created = peak_memory()
    reset_peak_memory()
    batch = import_bundle(bundle, store=target)
    imported = peak_memory()
    print(json.dumps({"create": created, "import": imported, "ok": batch.ok,
                      "moved": batch.bytes_moved, "size": info.size}))
"""


def test_a_big_layer_streams_through_bounded_memory(tmp_path: Path, long_mode: bool) -> None:
    # 128 MiB always; 1 GiB under --long. The bound is the 100 MiB, well above what
    # the streaming needs (a few 4 MiB buffers) and far below the layer.
    size = (1024 if long_mode else 128) * MiB
    source = open_store(str(tmp_path / "source"))
    _, layer = _seed_big_image(source, "big/img", size, seed=1314)
    bundle, target = tmp_path / "big.tar", tmp_path / "target"
    proc = _run(_RSS_CHILD, str(tmp_path / "source"), str(bundle), str(target))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["moved"] >= size, report
    assert report["create"] < 100 * MiB, report
    assert report["import"] < 100 * MiB, report
    assert bundle.stat().st_size > size
    assert open_store(str(target)).blob_size(layer) == size
