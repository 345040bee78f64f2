"""Helpers for the engine tests: seed a registry with built images using plain HTTP requests
(independent of regstore's client), and open stores of every installed kind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from regstore.testing.builders import Built

__all__ = [
    "blob_digest_in_registry",
    "push_raw_blob",
    "seed_registry",
    "seed_single_layer_image",
    "write_random_file",
]


def push_raw_blob(base_url: str, name: str, digest: str, data: Any, length: int) -> None:
    """Monolithic POST + PUT of one blob (``data`` bytes or a file object)."""
    session = requests.Session()
    head = session.head(f"{base_url}/v2/{name}/blobs/{digest}")
    if head.status_code == 200:
        return
    post = session.post(f"{base_url}/v2/{name}/blobs/uploads/")
    assert post.status_code == 202, post.text
    location = post.headers["Location"]
    if location.startswith("/"):
        location = base_url + location
    sep = "&" if "?" in location else "?"
    put = session.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
    )
    assert put.status_code == 201, put.text


def seed_registry(base_url: str, name: str, tag: str | None, built: Built) -> None:
    """Upload every blob and manifest of ``built`` (children first), then tag the top one."""
    for digest, data in built.blobs.items():
        push_raw_blob(base_url, name, digest, data, len(data))
    manifests = list(built.manifests.items())
    for i, (digest, (media_type, raw)) in enumerate(manifests):
        last = i == len(manifests) - 1
        ref = tag if last and tag else digest
        r = requests.put(
            f"{base_url}/v2/{name}/manifests/{ref}", data=raw, headers={"Content-Type": media_type}
        )
        assert r.status_code == 201, r.text


def blob_digest_in_registry(base_url: str, name: str, digest: str) -> str:
    """Fetch a blob through plain requests and return the sha256 of what came back."""
    h = hashlib.sha256()
    with requests.get(f"{base_url}/v2/{name}/blobs/{digest}", stream=True) as r:
        r.raise_for_status()
        for chunk in r.raw.stream(1 << 20, decode_content=False):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def raw_manifest(base_url: str, name: str, reference: str, media_type: str) -> bytes:
    """The exact manifest bytes a registry serves."""
    r = requests.get(f"{base_url}/v2/{name}/manifests/{reference}", headers={"Accept": media_type})
    r.raise_for_status()
    return r.content


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; returns their sha256 digest."""
    h = hashlib.sha256()
    block = hashlib.sha512(str(seed).encode()).digest() * 16384  # 1 MiB pattern base
    with open(path, "wb") as f:
        written = 0
        i = 0
        while written < size:
            chunk = hashlib.sha256(i.to_bytes(8, "big")).digest() + block
            chunk = chunk[: min(len(chunk), size - written)]
            f.write(chunk)
            h.update(chunk)
            written += len(chunk)
            i += 1
    return "sha256:" + h.hexdigest()


def iter_json(path: Path) -> Iterator[Any]:
    """Parse a JSON-lines file."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def env_without_ca_bundle() -> dict[str, str]:
    """The environment for child processes (moto/botocore choke on a missing CA bundle)."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def seed_single_layer_image(base_url: str, name: str, tag: str, work: Path, size: int) -> str:
    """Push an OCI image of one ``size``-byte random layer, streamed from a temporary file so
    that neither the test nor the registry client holds it in memory; returns the layer digest.
    """
    blob = work / f"layer-{size}.bin"
    digest = write_random_file(blob, size, seed=7)
    try:
        with open(blob, "rb") as f:
            push_raw_blob(base_url, name, digest, f, size)
    finally:
        blob.unlink()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]}}
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    push_raw_blob(base_url, name, config_digest, config, len(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": size,
            }
        ],
    }
    r = requests.put(
        f"{base_url}/v2/{name}/manifests/{tag}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text
    return digest
