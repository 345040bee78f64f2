"""Child processes for tests of stores that several processes share: a writer held by another
process, a writer killed with SIGKILL, a process racing for a lock, a blob streamed through a
fresh process while its memory is measured.

The conformance suite uses these, and so may a backend's own tests::

    from regstore.testing.processes import hold_writer, killed_writer

    def test_a_dead_writers_lock_goes_with_it(tmp_path):
        url = f"mybackend://{tmp_path}/store"
        blob = Blob(random_bytes(10_000, seed=1))
        killed_writer(url, blob.digest, blob.data)      # took the lock, wrote half, SIGKILL
        writer = open_store(url).layer(blob.digest).writer()   # no LayerLockedError

A child is ``sys.executable`` running :data:`CHILD_SCRIPT`; it opens the store URL with
:func:`regstore.open_store`, so the backend must be installed (its ``regstore`` entry point
visible) or named in ``plugins`` (modules the child registers with
:func:`regstore.plugins.register_plugin` first, for a backend not installed as a
distribution). The child sees the modules the test process sees (its ``sys.path``). It says
what happened on stdout, one word per line, and takes its cues from stdin; every wait for it
is bounded by ``timeout`` and fails with AssertionError naming what the child printed on stderr.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "CHILD_SCRIPT",
    "ChildProcess",
    "hold_writer",
    "killed_writer",
    "stream_writer",
]

#: What a child does, by mode (argv: url mode ...). Modes: ``hold`` (take a blob's writer,
#: write some bytes, say "holding", then "commit" or "close" at the cue), ``stream`` (write a
#: blob slowly in small chunks until killed), ``race`` (take the writer at the cue, or wait for
#: the winner), ``tag`` (tag a manifest many times at the cue), ``referrers`` (write referrers
#: of one subject at the cue: each updates the subject's referrers index), ``memory`` (stream a
#: generated blob through a writer and a reader and report the peak memory, see
#: :mod:`regstore.testing.memory`).
CHILD_SCRIPT = r"""
import importlib, os, sys, time
from regstore import open_store, plugins
from regstore.errors import LayerAlreadyExistsError, LayerLockedError

for module in filter(None, os.environ.get("REGSTORE_CHILD_PLUGINS", "").split(",")):
    plugins.register_plugin(importlib.import_module(module), name=module)

url, mode = sys.argv[1], sys.argv[2]
store = open_store(url)

def say(word):
    print(word, flush=True)

def cue():
    return sys.stdin.readline().strip()

if mode == "hold":  # digest data-file staged: write `staged` bytes, then commit or close
    digest, data, staged = sys.argv[3], open(sys.argv[4], "rb").read(), int(sys.argv[5])
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    writer.write(data[writer.current_size : staged])
    say("holding")
    if cue() == "commit":
        writer.write(data[writer.current_size :])
        writer.commit()
    else:
        writer.close()
    say("done")
elif mode == "stream":  # digest data-file chunk: write slowly until killed
    digest, data, chunk = sys.argv[3], open(sys.argv[4], "rb").read(), int(sys.argv[5])
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    say("writing")
    for offset in range(writer.current_size, len(data), chunk):
        writer.write(data[offset : offset + chunk])
        time.sleep(0.001)
    say("finished")
    cue()
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
    from regstore.manifest import Manifest

    name, prefix, count = sys.argv[3], sys.argv[5], int(sys.argv[6])
    manifest = Manifest.parse(open(sys.argv[4], "rb").read())
    say("ready")
    cue()
    for i in range(count):
        store.write_manifest(name, f"{prefix}-{i}", manifest)
    say("done")
elif mode == "referrers":  # name subject-seed worker count: write count referrers of it
    from regstore.testing.builders import oci_artifact, oci_image, write_image

    name, worker, count = sys.argv[3], sys.argv[5], int(sys.argv[6])
    subject = oci_image(seed=int(sys.argv[4]))
    say("ready")
    cue()
    for i in range(count):
        payload = ('{"worker":"%s","n":%d}' % (worker, i)).encode()
        write_image(store, name, None, oci_artifact(subject, payload=payload))
    say("done")
elif mode == "memory":  # size chunk-size seed: stream a generated blob, report memory
    from regstore.testing.memory import stream_blob_through

    report = stream_blob_through(store, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    say(f"memory {report.baseline} {report.peak}")
store.close()
"""


class ChildProcess:
    """A Python child process (``sys.executable -c script args...``) talking in lines.

    ``read()`` returns the next line it printed, ``expect(word)`` checks it, ``send(word)``
    gives it a cue on stdin, ``finish()`` waits for a clean exit, ``kill()`` sends SIGKILL (no
    cleanup of any kind runs in the child) and reaps it, ``stop()`` kills it if it still runs
    (use it as a finalizer, or the object as a context manager). Every wait is bounded by
    ``timeout`` seconds; a silent or dead child fails with AssertionError carrying its stderr.
    ``plugins``: modules the child registers as regstore plugins before anything else (only
    :data:`CHILD_SCRIPT` honours it).
    """

    def __init__(
        self,
        script: str,
        *args: str,
        timeout: float = 60.0,
        plugins: Sequence[str] = (),
        cleanup: Sequence[Path] = (),
    ) -> None:
        self.timeout = timeout
        self._cleanup = list(cleanup)
        path = os.pathsep.join(p for p in sys.path if p)
        inherited = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{path}{os.pathsep}{inherited}" if inherited else path,
            "REGSTORE_CHILD_PLUGINS": ",".join(plugins),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr else ""

    def read(self) -> str:
        """The next line the child prints; AssertionError if it says nothing or dies."""
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"the child process said nothing for {self.timeout} s") from None
        if line is None:
            self.process.wait(self.timeout)
            raise AssertionError(
                f"the child process exited ({self.process.returncode}):\n{self._stderr()}"
            )
        return line

    def expect(self, word: str) -> None:
        """Read the next line and check that it is ``word``."""
        said = self.read()
        assert said == word, f"the child process said {said!r}, expected {word!r}"

    def send(self, word: str) -> None:
        """Give the child a cue (one line on its stdin)."""
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        """Wait for the child to exit; AssertionError unless it exited cleanly."""
        returncode = self.process.wait(self.timeout)
        self._remove_files()
        assert returncode == 0, f"the child process failed ({returncode}):\n{self._stderr()}"

    def kill(self) -> None:
        """SIGKILL the child and reap it (it must have been running)."""
        self.process.send_signal(signal.SIGKILL)
        returncode = self.process.wait(self.timeout)
        self._remove_files()
        assert returncode == -signal.SIGKILL, f"the child was not killed, it exited {returncode}"

    def stop(self) -> None:
        """Kill the child if it still runs (a finalizer: never fails)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(self.timeout)
        self._remove_files()

    def _remove_files(self) -> None:
        for path in self._cleanup:
            path.unlink(missing_ok=True)
        self._cleanup.clear()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _data_file(data: bytes | Path) -> tuple[Path, list[Path]]:
    """The file holding the blob's bytes (a temporary one for bytes, removed with the child)."""
    if isinstance(data, Path):
        return data, []
    handle, name = tempfile.mkstemp(prefix="regstore-blob-")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return Path(name), [Path(name)]


def hold_writer(
    store_url: str,
    digest: str,
    data: bytes | Path,
    *,
    staged: int | None = None,
    timeout: float = 60.0,
    plugins: Sequence[str] = (),
) -> ChildProcess:
    """A child process holding the writer of blob ``digest`` (whose bytes are ``data``, or
    the file ``data`` names) with its first ``staged`` bytes written (default: half).

    Returns once the child holds the writer. Send it "commit" (it writes the rest and
    commits) or "close" (it closes the writer, keeping the staged bytes), then ``expect("done")``
    and ``finish()``; or ``kill()`` it, as :func:`killed_writer` does.
    """
    path, temporary = _data_file(data)
    size = path.stat().st_size
    count = size // 2 if staged is None else staged
    args = (store_url, "hold", str(digest), str(path), str(count))
    child = ChildProcess(CHILD_SCRIPT, *args, timeout=timeout, plugins=plugins, cleanup=temporary)
    return _started(child, "holding")


def killed_writer(
    store_url: str,
    digest: str,
    data: bytes | Path,
    *,
    staged: int | None = None,
    timeout: float = 60.0,
    plugins: Sequence[str] = (),
) -> None:
    """A writer of blob ``digest`` in a child process that took the blob's lock and wrote its
    first ``staged`` bytes (default: half), then was killed with SIGKILL: no close, no release,
    no cleanup ran. Returns once the child is dead and reaped.

    What it leaves is the backend's to cope with: its lock must not outlive it (at once for
    kernel locks such as flock, after its lease for lease locks), and the bytes it staged may
    be resumed by the next writer (a backend may also have lost a part still in the dead
    writer's buffers).
    """
    child = hold_writer(store_url, digest, data, staged=staged, timeout=timeout, plugins=plugins)
    child.kill()


def stream_writer(
    store_url: str,
    digest: str,
    data: bytes | Path,
    *,
    chunk_size: int = 4096,
    timeout: float = 60.0,
    plugins: Sequence[str] = (),
) -> ChildProcess:
    """A child process writing blob ``digest`` slowly, ``chunk_size`` bytes at a time, so that
    a test can kill it mid-stream. Returns once it holds the writer (it said "writing"); it
    says "finished" after its last byte and then waits, never committing, until killed.
    """
    path, temporary = _data_file(data)
    args = (store_url, "stream", str(digest), str(path), str(chunk_size))
    child = ChildProcess(CHILD_SCRIPT, *args, timeout=timeout, plugins=plugins, cleanup=temporary)
    return _started(child, "writing")


def _started(child: ChildProcess, word: str) -> ChildProcess:
    try:
        child.expect(word)
    except BaseException:
        child.stop()
        raise
    return child
