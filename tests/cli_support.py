"""Helpers for the command-line tests: run the real console script, seed a registry, corrupt and
age blobs in a file store.

The CLI runs as ``python -m regstore`` in a subprocess with a private ``HOME`` and
``XDG_DATA_HOME`` (no docker config of the machine, no default store outside the test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regstore import Manifest, ObjectStore

from .support.images import Built, BuiltImage, build_image, build_index
from .support.registry import RegistryServer
from .support.skopeo import push_with_skopeo

__all__ = [
    "APP_TAGS",
    "CliResult",
    "SeededRegistry",
    "blob_path",
    "put_image",
    "run_cli",
    "seed_registry",
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
) -> CliResult:
    """Run ``python -m regstore ARGS`` and capture everything."""
    proc = subprocess.run(
        [sys.executable, "-m", "regstore", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=cli_env(home, store, env),
        timeout=timeout,
        check=False,
    )
    return CliResult(list(args), proc.returncode, proc.stdout, proc.stderr)


@dataclass
class SeededRegistry:
    """A registry holding ``team/app`` (:data:`APP_TAGS`) and ``team/multi:1`` (an index)."""

    server: RegistryServer
    app: dict[str, BuiltImage] = field(default_factory=dict)
    multi: Built | None = None

    @property
    def host(self) -> str:
        return self.server.host


def seed_registry(server: RegistryServer, workdir: Path) -> SeededRegistry:
    """Push the test images with skopeo (independent of regstore's own code)."""
    seeded = SeededRegistry(server)
    for i, tag in enumerate(APP_TAGS):
        image = build_image(seed=100 + i, layers=2, layer_size=4096)
        push_with_skopeo(image, f"docker://{server.host}/team/app:{tag}", workdir / f"app-{i}")
        seeded.app[tag] = image
    seeded.multi = build_index(seed=7, media="oci")
    push_with_skopeo(seeded.multi, f"docker://{server.host}/team/multi:1", workdir / "multi")
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
