"""Azurite's Blob service (the Azure Storage emulator, from npm) as a subprocess on 127.0.0.1.

:func:`azurite_command` finds ``azurite-blob``: ``$REGSTORE_AZURITE`` (a path to it), then
the repository's npm cache ``.cache/azurite`` (where ``scripts/test`` installs it), then
``PATH``; failing all three it runs ``npm install --prefix .cache/azurite azurite@3.35.0`` once,
under a file lock (parallel test workers wait for the first one). :class:`AzuriteServer`
starts it on a free port with its data in a temporary directory and stops it afterwards.

Requests use Azurite's well-known development account (``devstoreaccount1`` and its published
key), never anything of the machine's own Azure settings.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import IO, Any

from tests.support.ports import (
    LOOPBACK,
    ServerStartError,
    die_with_parent_prefix,
    free_port,
    stop_process,
    wait_for_http,
)

__all__ = ["ACCOUNT", "ACCOUNT_KEY", "AzuriteServer", "azurite_command"]

#: Azurite's development account and its published key (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
#: The npm package installed when no azurite-blob is found.
AZURITE_PACKAGE = "azurite@3.35.0"  # the version the suite was written against
REPO_ROOT = Path(__file__).resolve().parents[3]
NPM_PREFIX = REPO_ROOT / ".cache" / "azurite"


def _cached() -> Path:
    return NPM_PREFIX / "node_modules" / ".bin" / "azurite-blob"


def azurite_command() -> str:
    """The path of ``azurite-blob``, installing Azurite with npm into the cache if needed."""
    explicit = os.environ.get("REGSTORE_AZURITE")
    if explicit:
        return explicit
    if _cached().exists():
        return str(_cached())
    on_path = shutil.which("azurite-blob")
    if on_path:
        return on_path
    npm = shutil.which("npm")
    if npm is None:
        raise ServerStartError("Azurite is not installed and there is no npm to install it")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    with open(NPM_PREFIX / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer; the other workers wait, then reuse
        if not _cached().exists():
            subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(NPM_PREFIX),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    AZURITE_PACKAGE,
                ],
                check=True,
                stdin=subprocess.DEVNULL,
                timeout=600,
            )
    return str(_cached())


class AzuriteServer:
    """``azurite-blob`` on 127.0.0.1 and a free port, storing in ``workdir``.

    :attr:`account_url` is the Blob service URL of the development account;
    :attr:`connection_string` the connection string for it.
    """

    def __init__(self, workdir: str | Path, *, start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "azurite.log"
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def account_url(self) -> str:
        """``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://{LOOPBACK}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """A connection string for the development account on this server."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of Azurite's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def start(self, attempts: int = 3) -> AzuriteServer:
        """Start Azurite and wait until it answers HTTP; returns self."""
        command = azurite_command()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        last_error: Exception | None = None
        for _ in range(attempts):
            self.port = free_port()
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            self._proc = subprocess.Popen(
                [
                    *die_with_parent_prefix(),
                    command,
                    "--blobHost",
                    LOOPBACK,
                    "--blobPort",
                    str(self.port),
                    "--location",
                    str(self.workdir / "data"),
                    "--silent",
                    "--skipApiVersionCheck",  # the SDK may be newer than the emulator
                    "--loose",
                    "--disableTelemetry",  # no network here, and none wanted
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
            try:
                # any HTTP answer will do: an unsigned request is refused (403) once it is up
                wait_for_http(
                    f"{self.account_url}?comp=list",
                    ok_statuses=(200, 400, 403),
                    timeout=self.start_timeout,
                    proc=self._proc,
                    interval=0.1,
                )
                return self
            except ServerStartError as exc:
                last_error = exc
                self.stop()
                if "EADDRINUSE" not in self.log_tail(200):
                    break
        raise ServerStartError(
            f"Azurite did not start ({last_error})\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop Azurite. Idempotent."""
        proc, self._proc = self._proc, None
        log_file, self._log_file = self._log_file, None
        stop_process(proc, log_file)

    def service(self) -> Any:
        """A ``BlobServiceClient`` for the development account."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)
