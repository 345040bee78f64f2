"""Helpers for the kill loops and the many-writers soak: store places for the CLI, the damage
check after a kill, the blob traffic a counting proxy saw, and a killable CLI run.

The CLI runs as ``python -m regstore`` (the real console entry) in a subprocess; everything is
observed from outside: the store through :func:`regstore.open_store`, the registry traffic
through a :class:`~tests.support.proxy.FaultProxy` in pass-through mode (it records every
request with its ``Range`` header and the body bytes sent either way, live).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from regstore import ObjectStore, open_store
from regstore.engine.gc import referenced_digests
from regstore.errors import RegstoreError
from regstore.hookspecs import BlobState

from .proxy import FaultProxy

__all__ = [
    "DAMAGE_KINDS",
    "BlobFetch",
    "BlobSnapshot",
    "CliRun",
    "StorePlace",
    "blob_fetches",
    "blob_uploads",
    "damage",
    "file_place",
    "rehash_unreferenced",
    "s3_place",
    "snapshot_blobs",
    "verify_store",
]

#: Problems of ``regstore verify`` that are damage. Anything about staging (bytes a killed
#: writer left for the next run to resume, or for gc to collect) is not: it is never visible
#: as a blob. An unknown kind counts as damage unless it is about staging or uploads.
DAMAGE_KINDS = frozenset(
    {"damaged-manifest", "dangling-tag", "missing-manifest", "missing-blob", "damaged-blob"}
)
_STAGING_KIND = re.compile(r"stag|upload|abandon|partial")

_BLOB_PATH = re.compile(r"/blobs/(sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class StorePlace:
    """A store as the CLI names it (``url``) and as the test opens it."""

    kind: str
    url: str

    def open(self) -> ObjectStore:
        """A fresh facade on the store (close it after use)."""
        return open_store(self.url)


def file_place(root: Path) -> StorePlace:
    """A filesystem store (distribution layout) at ``root``."""
    return StorePlace("file", f"file://{root}")


def s3_place(endpoint_url: str, bucket: str, prefix: str, *, lease: float = 3.0) -> StorePlace:
    """An S3 store on moto. A short lease lets a killed writer's locks expire quickly; not
    shorter, so a live writer on a loaded machine still renews its locks in time."""
    query = f"endpoint_url={endpoint_url}&key=testing&secret=testing&lease={lease:g}"
    return StorePlace("s3", f"s3://{bucket}/{prefix}?{query}")


# -- running the CLI ---------------------------------------------------------------------------


def cli_environment(home: Path) -> dict[str, str]:
    """A private HOME, no REGSTORE_*/DOCKER_* or AWS CA bundle from the caller; a traceback of
    every thread on SIGABRT (to see where a process that does not finish is stuck)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGSTORE_", "DOCKER_")) and k != "AWS_CA_BUNDLE"
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONUNBUFFERED="1",
        PYTHONFAULTHANDLER="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


@dataclass
class CliRun:
    """One ``python -m regstore ARGS`` process, killable at any moment."""

    args: list[str]
    env: Mapping[str, str]
    process: subprocess.Popen[str] = field(init=False)
    started: float = field(init=False)
    killed: bool = False
    stdout: str = ""
    stderr: str = ""

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "regstore", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(self.env),
        )

    @property
    def running(self) -> bool:
        """True until the process exits."""
        return self.process.poll() is None

    def kill(self) -> bool:
        """SIGKILL (no cleanup of any kind runs); False if it had already exited."""
        if self.process.poll() is not None:
            # it exited between the caller's check and now: collect its output all the same
            # (a run taken for "not killed" with empty stdout failed a kill loop once)
            self.wait(30)
            return False
        self.process.send_signal(signal.SIGKILL)
        self.killed = True
        self.wait(60)
        return self.process.returncode == -signal.SIGKILL

    def wait(self, timeout: float) -> int:
        """Wait for the exit (and collect the output). A process still running after
        ``timeout`` gets SIGABRT, so its stderr shows every thread's stack, then fails."""
        try:
            self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.stdout, self.stderr = self.process.communicate(timeout=30)
            raise AssertionError(
                f"regstore {' '.join(self.args)} did not finish in {timeout:g} s "
                f"(a deadlock?); its threads:\n{self.stderr[-20000:]}"
            ) from None
        return self.process.returncode

    def json(self) -> Any:
        """stdout as JSON (``--json`` runs)."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"not JSON: {self}") from None

    def kill_when(
        self, condition: Callable[[], bool], *, timeout: float, interval: float = 0.005
    ) -> bool:
        """Poll ``condition`` while the process runs and SIGKILL it once true.

        Returns True if the process was killed, False if it exited first.
        """
        deadline = time.monotonic() + timeout
        while self.running:
            if condition():
                return self.kill()
            if time.monotonic() > deadline:
                self.wait(0)  # raises with the stacks
            time.sleep(interval)
        self.wait(30)
        return False

    def __str__(self) -> str:
        return (
            f"$ regstore {' '.join(self.args)}\n-> exit {self.process.returncode}\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )


def run_cli(args: Iterable[str], env: Mapping[str, str], timeout: float = 180) -> CliRun:
    """Run the CLI to its end."""
    run = CliRun(list(args), env)
    run.wait(timeout)
    return run


# -- checking a store after a kill -------------------------------------------------------------


def damage(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The problems of a ``verify --json`` report that are damage (see :data:`DAMAGE_KINDS`)."""
    return [
        p
        for p in report.get("problems", [])
        if p["kind"] in DAMAGE_KINDS or not _STAGING_KIND.search(p["kind"])
    ]


def rehash_unreferenced(store: ObjectStore, skip: set[str]) -> list[str]:
    """Re-hash every visible blob ``verify`` does not cover (no manifest references it yet:
    a killed transfer committed it before writing its manifest); the names of the wrong ones."""
    wrong: list[str] = []
    for info in store.blobs():
        if info.digest in skip:
            continue
        h = hashlib.sha256()
        with store.layer(info.digest).reader() as reader:
            for chunk in reader.chunks(1 << 20):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != info.digest:
            wrong.append(info.digest)
    return wrong


@dataclass
class VerifyOutcome:
    """What ``regstore verify --json`` and the extra re-hash found."""

    report: dict[str, Any]
    damage: list[dict[str, Any]]
    wrong_unreferenced: list[str]
    staging_reports: int

    @property
    def ok(self) -> bool:
        """No damage of any kind."""
        return not self.damage and not self.wrong_unreferenced


def verify_store(place: StorePlace, env: Mapping[str, str]) -> VerifyOutcome:
    """``regstore verify --json`` on the store, plus a re-hash of the blobs it does not cover:
    no visible blob may have a wrong digest, no tag may point at missing content."""
    run = run_cli(["--store", place.url, "--json", "verify"], env)
    assert run.process.returncode in (0, 1), str(run)
    report = run.json()
    found = damage(report)
    store = place.open()
    try:
        try:
            covered = referenced_digests(store)
        except RegstoreError:  # an unreadable manifest: verify reports it; re-hash everything
            covered = set()
        wrong = rehash_unreferenced(store, covered)
    finally:
        store.close()
    # staged bytes a killed writer left (listed apart from the problems, or as a problem of
    # their own by older verifies): never visible as a blob, so not damage
    staging = len(report.get("staging", [])) + len(report.get("problems", [])) - len(found)
    return VerifyOutcome(report, found, wrong, staging)


# -- registry traffic --------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobFetch:
    """One blob GET seen by the proxy."""

    digest: str
    start: int  #: first byte asked for (0 without a Range header)
    nbytes: int  #: body bytes the proxy sent to the client
    status: int | None


def _range_start(value: str | None) -> int:
    if not value:
        return 0
    match = re.fullmatch(r"\s*bytes=(\d+)-\d*\s*", value)
    return int(match.group(1)) if match else 0


def blob_fetches(proxy: FaultProxy) -> list[BlobFetch]:
    """Every blob GET since the proxy's records were last cleared."""
    out: list[BlobFetch] = []
    for record in proxy.requests_matching("GET", r"/blobs/sha256:"):
        match = _BLOB_PATH.search(record.path)
        if match is None:
            continue
        out.append(
            BlobFetch(
                match.group(1),
                _range_start(record.headers.get("Range")),
                record.bytes_sent,
                record.status,
            )
        )
    return out


def blob_uploads(proxy: FaultProxy) -> list[tuple[str | None, int]]:
    """(digest of a monolithic PUT or None, request body bytes) of every upload request."""
    out: list[tuple[str | None, int]] = []
    for record in proxy.requests_matching(None, r"/blobs/uploads/"):
        if record.method not in ("PUT", "PATCH"):
            continue
        digest = parse_qs(record.query).get("digest", [None])[0]
        out.append((digest, record.request_bytes))
    return out


@dataclass(frozen=True)
class BlobSnapshot:
    """Which blobs a store holds complete, and how many bytes it has staged of the others."""

    complete: frozenset[str]
    staged: Mapping[str, int]


def snapshot_blobs(store: ObjectStore, digests: Iterable[str]) -> BlobSnapshot:
    """The state of ``digests`` in ``store`` now."""
    complete: set[str] = set()
    staged: dict[str, int] = {}
    for digest in digests:
        status = store.blob_status(digest)
        if status.state is BlobState.COMPLETE:
            complete.add(digest)
        else:
            staged[digest] = status.current_size
    return BlobSnapshot(frozenset(complete), staged)
