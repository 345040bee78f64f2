"""Helpers around the skopeo (1.9) and umoci (0.4) binaries, hermetic and loopback-only.

Every call runs with a private temporary ``HOME``/XDG directories, an empty
``registries.conf`` (no search registries, no mirrors), an empty ``--registries.d`` and
``--insecure-policy``, so skopeo never reads the machine's configuration or reaches a
network. skopeo's blob-info cache (normally ``/var/lib/containers/cache`` for root, which
makes skopeo *mount* blobs it has seen before instead of uploading them) goes to the private
directory too: containers/image treats ``_CONTAINERS_ROOTLESS_UID`` as the effective uid and
then keeps the cache under ``$XDG_DATA_HOME``.

Failures raise :class:`ToolError` carrying the command and its stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from regstore.testing.builders import Built, BuiltIndex, write_dir_layout, write_oci_layout

__all__ = [
    "SKOPEO",
    "UMOCI",
    "ToolError",
    "push_with_skopeo",
    "skopeo_copy",
    "skopeo_inspect_raw",
    "skopeo_list_tags",
    "umoci_unpack",
]

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
UMOCI = shutil.which("umoci") or "/usr/bin/umoci"

Creds = str | tuple[str, str] | None


class ToolError(RuntimeError):
    """A skopeo/umoci command failed; ``stderr`` holds its error output."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr.decode(errors="replace")
        super().__init__(f"{' '.join(self.cmd)} exited with {returncode}:\n{self.stderr.strip()}")


@contextmanager
def _sandbox() -> Iterator[tuple[Path, dict[str, str]]]:
    """A throw-away home for one skopeo/umoci run and the environment that uses it."""
    with tempfile.TemporaryDirectory(prefix="regstore-skopeo-") as tmp:
        home = Path(tmp)
        for sub in ("config", "data", "run", "registries.d", "tmp"):
            (home / sub).mkdir()
        (home / "run").chmod(0o700)
        registries_conf = home / "registries.conf"
        registries_conf.write_text(
            'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REGISTRY_AUTH", "CONTAINERS_", "DOCKER_", "XDG_", "REGISTRY_"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            XDG_RUNTIME_DIR=str(home / "run"),
            TMPDIR=str(home / "tmp"),
            CONTAINERS_REGISTRIES_CONF=str(registries_conf),
            REGISTRY_AUTH_FILE=str(home / "run" / "auth.json"),
            _CONTAINERS_ROOTLESS_UID="1000",
        )
        yield home, env


def _creds(value: Creds) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    return value


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        cmd, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise ToolError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def _global_flags(home: Path) -> list[str]:
    return [
        "--insecure-policy",
        "--registries.d",
        str(home / "registries.d"),
        "--tmpdir",
        str(home / "tmp"),
    ]


def skopeo_copy(
    src: str,
    dst: str,
    *extra: str,
    creds: Creds = None,
    src_creds: Creds = None,
    dest_creds: Creds = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[bytes]:
    """``skopeo copy SRC DST`` without TLS verification (loopback registries are plain HTTP).

    ``creds`` (``"user:pass"`` or a tuple) applies to whichever side is ``docker://``;
    ``src_creds``/``dest_creds`` override per side. ``extra`` flags go after ``copy``
    (e.g. ``"--all"``, ``"--preserve-digests"``, ``"--format", "oci"``).
    """
    with _sandbox() as (home, env):
        cmd = [
            SKOPEO,
            *_global_flags(home),
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]
        s = _creds(src_creds) or (_creds(creds) if src.startswith("docker://") else None)
        d = _creds(dest_creds) or (_creds(creds) if dst.startswith("docker://") else None)
        if s:
            cmd += ["--src-creds", s]
        if d:
            cmd += ["--dest-creds", d]
        cmd += [*extra, src, dst]
        return _run(cmd, env, timeout)


def skopeo_inspect_raw(
    ref: str, *, creds: Creds = None, config: bool = False, timeout: float = 60.0
) -> bytes:
    """Raw manifest bytes of ``ref`` (``skopeo inspect --raw``); ``config=True``: the config."""
    with _sandbox() as (home, env):
        cmd = [SKOPEO, *_global_flags(home), "inspect", "--raw"]
        if config:
            cmd.append("--config")
        if ref.startswith("docker://"):
            cmd.append("--tls-verify=false")
        c = _creds(creds)
        if c:
            cmd += ["--creds", c]
        cmd.append(ref)
        return _run(cmd, env, timeout).stdout


def skopeo_list_tags(ref: str, *, creds: Creds = None, timeout: float = 60.0) -> list[str]:
    """Tags of a ``docker://host/name`` repository (``skopeo list-tags``)."""
    import json

    with _sandbox() as (home, env):
        cmd = [SKOPEO, *_global_flags(home), "list-tags", "--tls-verify=false"]
        c = _creds(creds)
        if c:
            cmd += ["--creds", c]
        cmd.append(ref)
        out = json.loads(_run(cmd, env, timeout).stdout)
        return list(out.get("Tags") or [])


def push_with_skopeo(
    content: Built,
    dest: str,
    workdir: str | Path,
    *,
    creds: Creds = None,
    timeout: float = 120.0,
) -> None:
    """Push built content to ``dest`` (``docker://127.0.0.1:PORT/name:tag``) with skopeo only.

    OCI content goes through an OCI layout (``oci:``), Docker content through skopeo's
    ``dir:`` transport (skopeo 1.9 cannot read Docker types from an OCI layout). Digests are
    preserved (``--preserve-digests``), so the registry then holds exactly ``content``'s bytes.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    extra = ["--preserve-digests", "--retry-times", "0"]
    if isinstance(content, BuiltIndex):
        extra.append("--all")
    if content.manifest_media_type.startswith("application/vnd.oci."):
        layout = write_oci_layout(workdir / "oci", content, "push")
        src = f"oci:{layout}:push"
    else:
        layout = write_dir_layout(workdir / f"dir-{content.manifest_digest[7:19]}", content)
        src = f"dir:{layout}"
    skopeo_copy(src, dest, *extra, creds=creds, timeout=timeout)


def umoci_unpack(
    layout_dir: str | Path, ref: str, bundle_dir: str | Path, *, timeout: float = 120.0
) -> Path:
    """``umoci unpack --rootless --image LAYOUT:REF BUNDLE``; returns ``BUNDLE/rootfs``.

    ``bundle_dir`` must not exist yet (umoci creates it). Only OCI image manifests unpack.
    """
    bundle = Path(bundle_dir)
    with _sandbox() as (_home, env):
        cmd = [UMOCI, "unpack", "--rootless", "--image", f"{layout_dir}:{ref}", str(bundle)]
        _run(cmd, env, timeout)
    return bundle / "rootfs"
