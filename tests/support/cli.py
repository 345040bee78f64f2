"""Helpers for the command-line tests: run the CLI, seed a registry, corrupt and age blobs in a
file store.

:func:`run_cli` runs the CLI *in-process* through click's :class:`~click.testing.CliRunner` by
default (a fresh interpreter per call cost ~1 s, most of the suite's time), with a private
``HOME`` and ``XDG_DATA_HOME`` (no docker config of the machine, no default store outside the
test). Process-wide state the CLI touches is put back after every run: the environment (the
runner's), logging handlers and levels (``-v`` adds a root handler), and the global plugin
manager (rebuilt before and after, as a new process would, so ``REGSTORE_BLOCK_PLUGINS`` and
friends take effect and do not leak). ``subprocess=True`` runs ``python -m regstore`` instead:
for the few tests that need a real process (a new ``PYTHONPATH``, signals, resource limits, a
terminal, an interpreter's exit path).
"""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import subprocess as _subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regstore import Manifest, ObjectStore
from regstore.testing.builders import Built, BuiltImage, build_image, build_index

from .engine import seed_registry
from .registry import RegistryServer

__all__ = [
    "APP_TAGS",
    "CliResult",
    "SeededRegistry",
    "blob_path",
    "cli_env",
    "put_image",
    "run_cli",
    "seed_app_images",
]

#: The tags of ``team/app`` in a seeded registry (each a different image).
APP_TAGS = ("1.0.0", "1.1.0", "1.2.0", "1.2.1-rc1", "2.0.0", "latest")


@dataclass
class CliResult:
    """The outcome of one CLI run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""  #: stdout as written (``inspect --raw``), before decoding

    def json(self) -> Any:
        """stdout parsed as JSON (it must hold exactly one document)."""
        try:
            return json.loads(self.stdout)
        except ValueError as exc:  # pragma: no cover - diagnostic
            raise AssertionError(f"stdout is not JSON: {exc}\n{self}") from None

    def __str__(self) -> str:
        return (
            f"$ regstore {' '.join(self.args)}\n-> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def cli_env(
    home: Path, store: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a CLI run: private HOME, no REGSTORE_* leaking from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGSTORE_", "DOCKER_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    env.pop("AWS_CA_BUNDLE", None)
    if store is not None:
        env["REGSTORE_STORE"] = store
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    home: Path,
    store: str | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    subprocess: bool = False,
) -> CliResult:
    """Run ``regstore ARGS`` and capture everything: in-process by default, or as
    ``python -m regstore ARGS`` with ``subprocess=True`` (``timeout`` applies only there)."""
    environ = cli_env(home, store, env)
    if subprocess:
        proc = _subprocess.run(
            [sys.executable, "-m", "regstore", *args],
            input=(input or "").encode(),
            capture_output=True,
            env=environ,
            timeout=timeout,
            check=False,
        )
        return CliResult(
            list(args),
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            proc.stdout,
        )
    return _run_in_process(list(args), environ, input or "")


def _run_in_process(args: list[str], environ: dict[str, str], input: str) -> CliResult:
    from click.testing import CliRunner

    from regstore.cli import cli
    from regstore.cli.completion import COMPLETE_VAR, PROG_NAME

    # The runner sets these variables and restores the old values afterwards; a variable of
    # the caller's environment that the child would not have gets unset (None).
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in environ}
    overrides.update(environ)
    runner = CliRunner()
    with _process_state_restored():
        result = runner.invoke(
            cli,
            args,
            input=input,
            env=overrides,
            prog_name=PROG_NAME,
            complete_var=COMPLETE_VAR,
            catch_exceptions=True,
        )
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # what the interpreter would print for an exception nothing caught
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
        code = 1
    return CliResult(args, code, result.stdout, stderr, result.stdout_bytes)


@contextmanager
def _process_state_restored() -> Iterator[None]:
    """Rebuild the plugin manager around a run and put logging back as it was."""
    from regstore import plugins

    loggers = [logging.getLogger(), logging.getLogger("regstore")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    plugins.reset_plugin_manager()
    try:
        yield
    finally:
        plugins.reset_plugin_manager()
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)


@dataclass
class SeededRegistry:
    """A registry holding ``team/app`` (:data:`APP_TAGS`) and ``team/multi:1`` (an index)."""

    server: RegistryServer
    app: dict[str, BuiltImage] = field(default_factory=dict)
    multi: Built | None = None

    @property
    def host(self) -> str:
        return self.server.host


def seed_app_images(server: RegistryServer, workdir: Path | None = None) -> SeededRegistry:
    """Push ``team/app`` (:data:`APP_TAGS`) and ``team/multi:1`` with plain HTTP requests
    (:func:`tests.support.engine.seed_registry`, independent of regstore's own client).
    ``workdir`` is accepted for older callers and unused."""
    seeded = SeededRegistry(server)
    for i, tag in enumerate(APP_TAGS):
        image = build_image(seed=100 + i, layers=2, layer_size=4096)
        seed_registry(server.url, "team/app", tag, image)
        seeded.app[tag] = image
    seeded.multi = build_index(seed=7, media="oci")
    seed_registry(server.url, "team/multi", "1", seeded.multi)
    return seeded


def put_image(store: ObjectStore, name: str, tag: str | None, built: Built) -> None:
    """Write ``built`` into ``store`` through the facade (blobs first, the tagged manifest last)."""
    for digest, data in built.blobs.items():
        if store.blob_exists(digest):
            continue
        with store.layer(digest).writer() as writer:
            writer.write(data)
            writer.commit(len(data))
    for digest, (media_type, raw) in built.manifests.items():
        top = digest == built.manifest_digest
        store.write_manifest(name, tag if top else None, Manifest.parse(raw, media_type))


def blob_path(root: Path, digest: str) -> Path:
    """Where the distribution layout keeps a blob's bytes under a file store's root."""
    hex_ = digest.split(":", 1)[1]
    return root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


def damage_tag_link(root: Path, name: str, tag: str) -> Path:
    """Overwrite the link of ``name:tag`` in a file store's distribution layout with bytes
    that name no digest (a torn or scribbled file); returns its path."""
    link = root / "docker" / "registry" / "v2" / "repositories" / name / "_manifests" / "tags"
    link = link / tag / "current" / "link"
    assert link.is_file(), link
    link.write_bytes(b"sha256:not-a-digest")
    return link


def put_directory_in_place(path: Path) -> None:
    """Put a directory where the file ``path`` is: reading it fails (EISDIR), for root too,
    as a file the store cannot read does."""
    path.unlink()
    path.mkdir()


def flip_byte(path: Path, offset: int = 10) -> None:
    """Corrupt a file in place without changing its size."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def tag_digests(result: CliResult) -> dict[str, str]:
    """``regstore --json ls NAME`` → {tag: digest}."""
    return {t["tag"]: t["digest"] for t in result.json()["tags"]}


def only_lines(text: str) -> Sequence[str]:
    """Non-empty lines of ``text``."""
    return [line for line in text.splitlines() if line.strip()]


def run_in_pty(
    args: list[str],
    env: dict[str, str],
    answers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run the CLI as a real process on a pseudo-terminal (stdin, stdout and stderr a TTY),
    typing ``answers[prompt]`` once ``prompt`` appears; return (exit code, everything shown)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe(sys.executable, [sys.executable, "-m", "regstore", *args], env)
    pending = dict(answers or {})
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
        for prompt in list(pending):
            if prompt.encode() in seen:
                os.write(fd, pending.pop(prompt).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode("utf-8", "replace")
