"""Start Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1 for tests.

:class:`RegistryServer` writes a config, starts ``docker-registry serve CONFIG`` as a
subprocess, and polls ``GET /v2/`` until the registry answers (200, or 401 when auth is on).

Storage is a filesystem directory (``root``; give an existing directory to serve a store that
was written in the distribution layout) or an S3 bucket on a moto server (:class:`S3Storage`).
Auth is ``"none"``, ``"basic"`` (an htpasswd file made with ``htpasswd -Bbn``) or ``"token"``
(a :class:`~tests.support.token_server.TokenServer` as the realm).

The config is written as JSON, which is valid YAML, so no YAML library is needed and values
are quoted correctly whatever they contain.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from regstore.testing.builders import Built

from .ports import (
    LOOPBACK,
    ServerStartError,
    die_with_parent_prefix,
    free_port,
    stop_process,
    wait_for_http,
)
from .token_server import TokenServer

__all__ = ["REGISTRY_BINARY", "AuthMode", "RegistryServer", "S3Storage", "serve_directory"]

REGISTRY_BINARY = "/usr/bin/docker-registry"

AuthMode = Literal["none", "basic", "token"]

# Environment variables that would change the registry's behaviour behind the config's back:
# REGISTRY_* override config keys; AWS_CA_BUNDLE makes the Go AWS SDK panic at start-up
# ("unable to load custom CA bundle"); proxies must never be used on loopback.
_STRIPPED_ENV_PREFIXES = ("REGISTRY_", "AWS_", "OTEL_")
_STRIPPED_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}


@dataclass(frozen=True)
class S3Storage:
    """``storage.s3`` settings for a registry backed by a (moto) S3 endpoint.

    With ``rootdirectory="/registry"`` the keys start ``registry/docker/registry/v2/...``.
    """

    endpoint_url: str
    bucket: str
    rootdirectory: str = "/registry"
    region: str = "us-east-1"
    accesskey: str = "testing"
    secretkey: str = "testing"

    def config(self) -> dict[str, Any]:
        """The ``storage.s3`` mapping."""
        return {
            "regionendpoint": self.endpoint_url,
            "bucket": self.bucket,
            "rootdirectory": self.rootdirectory,
            "region": self.region,
            "secure": False,
            "v4auth": True,
            "accesskey": self.accesskey,
            "secretkey": self.secretkey,
        }


class RegistryServer:
    """A ``docker-registry serve`` subprocess on 127.0.0.1:<free port>.

    Attributes: :attr:`host` (``127.0.0.1:PORT``), :attr:`url` (``http://127.0.0.1:PORT``),
    :attr:`port`, :attr:`root` (filesystem storage directory; ``None`` for S3),
    :attr:`username` / :attr:`password` (``None`` when auth is off), :attr:`auth`,
    :attr:`token_server`, :attr:`s3`, :attr:`log_path`, :attr:`config_path`, :attr:`config`.

    Call :meth:`start` (or use ``with``) and :meth:`stop`; ``stop`` is idempotent.
    """

    def __init__(
        self,
        workdir: str | Path,
        root: str | Path | None = None,
        *,
        auth: AuthMode = "none",
        username: str = "regstore",
        password: str = "regstore-secret",
        token_server: TokenServer | None = None,
        s3: S3Storage | None = None,
        relative_urls: bool = False,
        readonly: bool = False,
        delete_enabled: bool = True,
        access_log: bool = True,
        log_level: str = "warn",
        extra_config: dict[str, Any] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        """Prepare (but do not start) a registry.

        ``workdir`` holds the config, htpasswd file and log; ``root`` (default
        ``workdir/storage``) is the filesystem storage root, ignored when ``s3`` is given.
        ``auth="token"`` needs ``token_server``; the ``username``/``password`` pair is added
        to its users so :attr:`username`/:attr:`password` always work. ``relative_urls``
        makes the registry send relative ``Location`` headers. ``extra_config`` is merged
        (recursively) over the generated config.
        """
        if auth not in ("none", "basic", "token"):
            raise ValueError(f"unknown auth mode {auth!r}")
        if auth == "token" and token_server is None:
            raise ValueError("auth='token' needs a token_server")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.s3 = s3
        self.root: Path | None = (
            None if s3 is not None else Path(root) if root is not None else self.workdir / "storage"
        )
        self.auth: AuthMode = auth
        self.username: str | None = username if auth != "none" else None
        self.password: str | None = password if auth != "none" else None
        self.token_server = token_server
        self.relative_urls = relative_urls
        self.readonly = readonly
        self.delete_enabled = delete_enabled
        self.access_log = access_log
        self.log_level = log_level
        self.extra_config = extra_config or {}
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "registry-config.yml"
        self.log_path = self.workdir / "registry.log"
        self.htpasswd_path = self.workdir / "htpasswd"
        self.config: dict[str, Any] = {}
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- addresses -----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (the registry part of an image reference)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` when auth is on, for ``requests``' ``auth=`` or skopeo."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    @property
    def pid(self) -> int | None:
        """Process id of the running registry."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the registry process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- talking to it without regstore --------------------------------------------------------
    def auth_headers(
        self, repository: str | None = None, actions: str = "pull,push"
    ) -> dict[str, str]:
        """Headers that authorise a request for ``repository`` (``None``: just ``/v2/``).

        Empty without auth; Basic credentials with htpasswd; with token auth, a token fetched
        from the token server with the credentials for ``repository:<name>:<actions>``.
        """
        if self.auth == "none" or self.username is None or self.password is None:
            return {}
        if self.auth == "basic":
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        assert self.token_server is not None
        query = [("service", self.token_server.service)]
        if repository is not None:
            query.append(("scope", f"repository:{repository}:{actions}"))
        request = urllib.request.Request(
            f"{self.token_server.realm}?{urllib.parse.urlencode(query)}",
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            },
        )
        with _NO_PROXY_OPENER.open(request, timeout=30) as resp:
            token = json.loads(resp.read())["token"]
        return {"Authorization": f"Bearer {token}"}

    def push_content(self, name: str, tag: str | None, content: Built) -> str:
        """Upload built content (``BuiltImage``/``BuiltIndex`` of ``images.py``) over plain HTTP.

        Blobs go up monolithically (POST, then PUT ``?digest=``), child manifests by digest,
        the top manifest by ``tag`` (or by digest when ``tag`` is None). Returns the manifest
        digest. This uses only urllib, never regstore, so tests can seed a registry quickly.
        """
        headers = self.auth_headers(name, "pull,push")
        base = f"{self.url}/v2/{name}"
        for digest, data in content.blobs.items():
            status, _, _ = _http(f"{base}/blobs/{digest}", "HEAD", headers=headers)
            if status == 200:
                continue
            status, resp_headers, body = _http(
                f"{base}/blobs/uploads/", "POST", headers=headers, data=b""
            )
            if status != 202:
                raise RuntimeError(f"POST upload for {digest}: HTTP {status} {body[:300]!r}")
            location = urllib.parse.urljoin(self.url, resp_headers["Location"])
            sep = "&" if "?" in location else "?"
            put_url = f"{location}{sep}{urllib.parse.urlencode({'digest': digest})}"
            put_headers = {**headers, "Content-Type": "application/octet-stream"}
            status, _, body = _http(put_url, "PUT", headers=put_headers, data=data)
            if status != 201:
                raise RuntimeError(f"PUT blob {digest}: HTTP {status} {body[:300]!r}")
        top = content.manifest_digest
        for digest, (media_type, data) in content.manifests.items():
            reference = tag if digest == top and tag is not None else digest
            status, _, body = _http(
                f"{base}/manifests/{reference}",
                "PUT",
                headers={**headers, "Content-Type": media_type},
                data=data,
            )
            if status != 201:
                raise RuntimeError(f"PUT manifest {reference}: HTTP {status} {body[:300]!r}")
        return str(top)

    # -- logs ----------------------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything the registry wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the registry log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- config --------------------------------------------------------------------------------
    def build_config(self) -> dict[str, Any]:
        """The registry configuration for the current port and options."""
        storage: dict[str, Any] = {}
        if self.s3 is not None:
            storage["s3"] = self.s3.config()
            # Serve blobs through the registry instead of 307 to presigned moto URLs.
            storage["redirect"] = {"disable": True}
        else:
            assert self.root is not None
            storage["filesystem"] = {"rootdirectory": str(self.root)}
        storage["delete"] = {"enabled": self.delete_enabled}
        # No background purge of upload directories: the registry may be serving a store that
        # the code under test wrote, and tests must see exactly what that code left behind.
        storage["maintenance"] = {
            "uploadpurging": {"enabled": False},
            "readonly": {"enabled": self.readonly},
        }
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {
                "level": self.log_level,
                "formatter": "text",
                "accesslog": {"disabled": not self.access_log},
            },
            "storage": storage,
            "http": {
                "addr": f"{LOOPBACK}:{self.port}",
                "secret": "regstore-test-http-secret",
                "relativeurls": self.relative_urls,
            },
        }
        if self.auth == "basic":
            config["auth"] = {
                "htpasswd": {"realm": "regstore-test", "path": str(self.htpasswd_path)}
            }
        elif self.auth == "token":
            ts = self.token_server
            assert ts is not None
            config["auth"] = {
                "token": {
                    "realm": ts.realm,
                    "service": ts.service,
                    "issuer": ts.issuer,
                    "rootcertbundle": str(ts.cert_path),
                }
            }
        return _merge(config, self.extra_config)

    def _write_auth_files(self) -> None:
        if self.auth == "basic":
            assert self.username is not None and self.password is not None
            # An htpasswd path that does not exist makes the registry invent a random user, so
            # always write the file before starting.
            out = subprocess.run(
                ["htpasswd", "-Bbn", self.username, self.password],
                check=True,
                capture_output=True,
            ).stdout
            self.htpasswd_path.write_bytes(out.strip() + b"\n")
        elif self.auth == "token":
            assert (
                self.token_server is not None
                and self.username is not None
                and self.password is not None
            )
            self.token_server.users.setdefault(self.username, self.password)
            self.password = self.token_server.users[self.username]

    @staticmethod
    def _environment() -> dict[str, str]:
        return {
            k: v
            for k, v in os.environ.items()
            if k not in _STRIPPED_ENV and not k.startswith(_STRIPPED_ENV_PREFIXES)
        }

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, attempts: int = 3) -> RegistryServer:
        """Start the registry and wait until ``/v2/`` answers; returns self.

        Retries on a new port when the chosen one was taken in the meantime. Raises
        :class:`~tests.support.ports.ServerStartError` with the log tail on failure.
        """
        if self.running:
            return self
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self._write_auth_files()
        last_error: Exception | None = None
        for _ in range(attempts):
            self.port = free_port()
            self.config = self.build_config()
            self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            self._proc = subprocess.Popen(
                [*die_with_parent_prefix(), REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=self.workdir,
            )
            try:
                wait_for_http(
                    f"{self.url}/v2/",
                    # 401 also counts as "up": auth may come from extra_config too.
                    ok_statuses=(200, 401),
                    timeout=self.start_timeout,
                    proc=self._proc,
                )
                return self
            except ServerStartError as exc:
                last_error = exc
                self._terminate()
                if "address already in use" not in self.log_text():
                    break
        raise ServerStartError(
            f"docker-registry did not start ({last_error}); config {self.config_path}\n"
            f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        log_file, self._log_file = self._log_file, None
        stop_process(proc, log_file)

    def stop(self) -> None:
        """Stop the registry process (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        self._terminate()

    def restart(self) -> RegistryServer:
        """Stop and start again on the same storage (the port changes).

        ``http.secret`` is fixed, so upload sessions (their ``_state``) stay valid across it.
        """
        self.stop()
        return self.start()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"s3://{self.s3.bucket}{self.s3.rootdirectory}" if self.s3 else str(self.root)
        return f"<RegistryServer {self.url} auth={self.auth} storage={where}>"


def serve_directory(root: str | Path, workdir: str | Path, **options: Any) -> RegistryServer:
    """Start a registry whose filesystem storage root is an existing directory.

    ``root`` is the directory that contains ``docker/registry/v2/...`` (the distribution
    layout), e.g. a store written by regstore. Options are those of :class:`RegistryServer`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"storage root {root} is not a directory")
    return RegistryServer(workdir, root, **options).start()


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(
    url: str, method: str, *, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Any, bytes]:
    """One urllib request without proxies; (status, headers, body), also for 4xx/5xx."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _NO_PROXY_OPENER.open(request, timeout=60) as resp:
            return int(resp.status), resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.headers, exc.read()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``extra`` over ``base`` (returns a new dict)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
