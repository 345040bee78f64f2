"""Conformance tests across processes (mixed into CrossProcessConformance).

Child processes run :data:`CHILD_SCRIPT` with ``sys.executable``; they open ``store_url`` with
:func:`regstore.open_store`, so the backend must be installed (its entry point visible).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from regstore.errors import LayerLockedError
from regstore.store import ObjectStore
from regstore.storetypes import BlobState, StagingKind

from ._suite import SuiteSettings, in_thread
from .builders import Blob, oci_image, random_bytes, write_image

__all__ = ["CHILD_SCRIPT", "Child", "ProcessTests"]

#: What a child process does, by mode (argv: url mode ...). It says what happened on stdout,
#: one word per line, and takes its cues ("go", "commit", "close") from stdin.
CHILD_SCRIPT = r"""
import sys, time
from regstore import open_store
from regstore.errors import LayerAlreadyExistsError, LayerLockedError
from regstore.manifest import Manifest

url, mode = sys.argv[1], sys.argv[2]
store = open_store(url)

def say(word):
    print(word, flush=True)

def cue():
    return sys.stdin.readline().strip()

if mode == "hold":  # digest data-file: write half, wait for a cue, then commit or close
    digest, data = sys.argv[3], open(sys.argv[4], "rb").read()
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    writer.write(data[: len(data) // 2])
    say("holding")
    if cue() == "commit":
        writer.write(data[len(data) // 2 :])
        writer.commit()
    else:
        writer.close()
    say("done")
elif mode == "race":  # digest data-file: try to take the writer at the cue
    digest, data = sys.argv[3], open(sys.argv[4], "rb").read()
    say("ready")
    cue()
    try:
        writer = store.layer(digest).writer()
    except (LayerLockedError, LayerAlreadyExistsError):  # already committed: a slow start
        say("locked")
        say("waited-" + str(store.layer(digest).wait(timeout=60)))
    else:
        say("writer")
        time.sleep(0.3)
        writer.write(data)
        writer.commit(len(data))
        say("committed")
elif mode == "tag":  # name manifest-file prefix count: tag the manifest count times
    name, prefix, count = sys.argv[3], sys.argv[5], int(sys.argv[6])
    manifest = Manifest.parse(open(sys.argv[4], "rb").read())
    say("ready")
    cue()
    for i in range(count):
        store.write_manifest(name, f"{prefix}-{i}", manifest)
    say("done")
store.close()
"""


class Child:
    """A child process running :data:`CHILD_SCRIPT`, with line-based talk and timeouts."""

    def __init__(self, *args: str, timeout: float) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD_SCRIPT, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def read(self) -> str:
        """The next word the child says; fails the test on silence or death."""
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            pytest.fail(f"child process said nothing for {self.timeout} s")
        if line is None:
            self.process.wait(self.timeout)
            stderr = self.process.stderr.read() if self.process.stderr else ""
            pytest.fail(f"child process exited ({self.process.returncode}):\n{stderr}")
        return line

    def expect(self, word: str) -> None:
        said = self.read()
        assert said == word, f"child said {said!r}, expected {word!r}"

    def send(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        """Wait for a clean exit."""
        returncode = self.process.wait(self.timeout)
        stderr = self.process.stderr.read() if self.process.stderr else ""
        assert returncode == 0, f"child process failed ({returncode}):\n{stderr}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(self.timeout)


class ProcessTests(SuiteSettings):
    """Exclusion and lost-update checks across processes sharing one store."""

    def _children(self, request: pytest.FixtureRequest) -> list[Child]:
        children: list[Child] = []

        def kill_all() -> None:
            for child in children:
                child.kill()

        request.addfinalizer(kill_all)
        return children

    def _child_holding(
        self,
        blob: Blob,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> Child:
        """A child process that holds the writer of ``blob`` with half of it written; it waits
        for "commit" or "close" (killed at teardown if the test ends first)."""
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        data_file = tmp_path / "blob"
        data_file.write_bytes(blob.data)
        child = Child(store_url, "hold", blob.digest, str(data_file), timeout=self.process_timeout)
        self._children(request).append(child)
        child.expect("holding")
        return child

    def test_writer_in_another_process_excludes_this_one(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        blob = Blob(random_bytes(10_000, 70))
        child = self._child_holding(blob, store_url, tmp_path, request)
        layer = store.layer(blob.digest)
        with pytest.raises(LayerLockedError):
            layer.writer()
        with pytest.raises(LayerLockedError):
            layer.reader()
        assert layer.status().state is BlobState.WRITING
        with pytest.raises(TimeoutError):
            layer.wait(timeout=0.1)
        waiter = in_thread(lambda: layer.wait(timeout=self.process_timeout))
        child.send("close")
        child.expect("done")
        child.finish()
        assert waiter.result(timeout=self.process_timeout) is False  # it gave up
        status = layer.status()
        assert status.state is BlobState.PARTIAL
        assert status.current_size == blob.size // 2
        writer = layer.writer()  # the lock went with the process
        assert writer.current_size == blob.size // 2
        writer.write(blob.data[blob.size // 2 :])
        writer.commit(blob.size)
        with layer.reader() as reader:
            assert reader.read() == blob.data

    def test_staging_held_by_another_process_is_active_until_it_lets_go(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        blob = Blob(random_bytes(20_000, 73))
        child = self._child_holding(blob, store_url, tmp_path, request)
        held = [e for e in store.staging() if e.digest == str(blob.digest)]
        assert held, "a writer in another process holds the blob: its lock must be listed"
        assert all(e.active for e in held)
        assert all(store.drop_staging(e) is False for e in held)
        child.send("close")
        child.expect("done")
        child.finish()
        [upload] = [
            e
            for e in store.staging()
            if e.digest == str(blob.digest) and e.kind is StagingKind.UPLOAD
        ]
        assert not upload.active and upload.size == blob.size // 2
        for entry in [e for e in store.staging() if e.digest == str(blob.digest)]:
            assert store.drop_staging(entry) is True
        assert [e for e in store.staging() if e.digest == str(blob.digest)] == []
        assert store.blob_status(blob.digest).state is BlobState.ABSENT

    def test_two_processes_race_for_one_writer(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        blob = Blob(random_bytes(20_000, 71))
        data_file = tmp_path / "blob"
        data_file.write_bytes(blob.data)
        children = self._children(request)
        for _ in range(2):
            children.append(Child(store_url, "race", blob.digest, str(data_file),
                                  timeout=self.process_timeout))  # fmt: skip
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        said = sorted(child.read() for child in children)
        assert said == ["locked", "writer"], said
        finals = sorted(child.read() for child in children)
        assert finals == ["committed", "waited-True"], finals
        for child in children:
            child.finish()
        with store.layer(blob.digest).reader() as reader:
            assert reader.read() == blob.data

    def test_concurrent_tagging_from_two_processes_loses_nothing(
        self,
        store: ObjectStore,
        store_url: str | None,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        assert store_url, "CrossProcessConformance needs the store_url fixture"
        image = oci_image(seed=72)
        write_image(store, "shared/repo", None, image)
        manifest_file = tmp_path / "manifest.json"
        manifest_file.write_bytes(image.raw)
        children = self._children(request)
        count = 20
        for prefix in ("p", "q"):
            children.append(Child(store_url, "tag", "shared/repo", str(manifest_file), prefix,
                                  str(count), timeout=self.process_timeout))  # fmt: skip
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        for child in children:
            child.expect("done")
            child.finish()
        expected = sorted(f"{p}-{i}" for p in ("p", "q") for i in range(count))
        assert store.tags("shared/repo") == expected
        assert store.manifest("shared/repo", "q-19").raw == image.raw
