"""moto's S3 server in a separate process on 127.0.0.1, for S3-backed tests.

A separate process (``python -m moto.server``), not ``ThreadedMotoServer``: the Go registry
and regstore's S3 code must talk to it over real sockets, and a crash or a slow request in
moto must not stall the test process's own threads (moto copies whole objects per request).

boto3 clients made here get explicit dummy credentials, region and endpoint, so nothing
depends on ``AWS_*`` variables or ``~/.aws`` of the machine running the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO, Any

from .ports import (
    LOOPBACK,
    ServerStartError,
    die_with_parent_prefix,
    free_port,
    stop_process,
    wait_for_http,
)

__all__ = [
    "DUMMY_ACCESS_KEY",
    "DUMMY_REGION",
    "DUMMY_SECRET_KEY",
    "MotoServer",
    "empty_and_delete_bucket",
    "make_s3_client",
]

DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"
DUMMY_REGION = "us-east-1"

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def make_s3_client(
    endpoint_url: str,
    *,
    access_key: str = DUMMY_ACCESS_KEY,
    secret_key: str = DUMMY_SECRET_KEY,
    region: str = DUMMY_REGION,
) -> Any:
    """A boto3 S3 client for ``endpoint_url`` with explicit credentials and path-style URLs."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
        # The endpoint is plain http on loopback; AWS_CA_BUNDLE from the environment is irrelevant.
        verify=False,
    )


def empty_and_delete_bucket(client: Any, bucket: str) -> None:
    """Delete every object, version-less multipart upload and then the bucket itself."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for upload in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


class MotoServer:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` as a subprocess.

    Attributes: :attr:`endpoint_url` (``http://127.0.0.1:PORT``), :attr:`port`,
    :attr:`log_path`. Methods: :meth:`start`, :meth:`stop`, :meth:`client`,
    :meth:`create_bucket`, :meth:`delete_bucket`, :meth:`reset`.
    """

    def __init__(self, workdir: str | Path, *, start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "moto.log"
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the moto process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of moto's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def start(self, attempts: int = 3) -> MotoServer:
        """Start moto and wait until its management API answers; returns self."""
        if self.running:
            return self
        # moto must not pick up the host's AWS settings (profiles, CA bundle, regions).
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        last_error: Exception | None = None
        for _ in range(attempts):
            self.port = free_port()
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            self._proc = subprocess.Popen(
                [
                    *die_with_parent_prefix(),
                    sys.executable,
                    "-m",
                    "moto.server",
                    "-H",
                    LOOPBACK,
                    "-p",
                    str(self.port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
            try:
                wait_for_http(
                    f"{self.endpoint_url}/moto-api/data.json",
                    ok_statuses=(200,),
                    timeout=self.start_timeout,
                    proc=self._proc,
                    interval=0.1,
                )
                return self
            except ServerStartError as exc:
                last_error = exc
                self._terminate()
                if "already in use" not in self.log_tail(200):
                    break
        raise ServerStartError(
            f"moto server did not start ({last_error})\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        log_file, self._log_file = self._log_file, None
        stop_process(proc, log_file)

    def stop(self) -> None:
        """Stop the moto process. Idempotent."""
        self._terminate()
        self._client = None

    def client(self) -> Any:
        """A (cached) boto3 S3 client for this server."""
        if self._client is None:
            self._client = make_s3_client(self.endpoint_url)
        return self._client

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` with a plain CreateBucket (us-east-1); returns the name."""
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Empty and delete bucket ``name``."""
        empty_and_delete_bucket(self.client(), name)

    def reset(self) -> None:
        """Drop all of moto's state (``POST /moto-api/reset``)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", data=b"", method="POST")
        with _NO_PROXY_OPENER.open(req, timeout=30) as resp:
            resp.read()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<MotoServer {self.endpoint_url}>"
