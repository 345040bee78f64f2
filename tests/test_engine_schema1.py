"""The seed's own format: signed Docker v2 schema1 manifests are pulled and pushed as they are.

No tool here writes schema1 any more, so the test gets a genuinely signed one from the real
registry: with schema1 compatibility on, registry 2.8 converts a schema2 image on the fly and
signs the result when asked for only the schema1 type. A fake registry then serves those exact
bytes (a real registry would answer our full Accept list with the schema2 original), the engine
pulls them by following ``fsLayers[].blobSum``, and pushes them back to the real registry, which
verifies the signature (and, keeping only the payload, signs it anew when serving it).
"""

from __future__ import annotations

import json

import requests

from regstore import open_store
from regstore.client import Client
from regstore.engine import pull, push
from regstore.manifest import DOCKER_MANIFEST_V1_SIGNED, Manifest
from regstore.testing.builders import EMPTY_GZIP_TAR, build_image, sha256_digest
from tests.support.engine import seed_registry

SCHEMA1_CONFIG = {"compatibility": {"schema1": {"enabled": True}}}


def test_signed_schema1_is_pulled_and_pushed_byte_exact(
    registry_factory, fake_registry, tmp_path
) -> None:
    real = registry_factory(extra_config=SCHEMA1_CONFIG)
    built = build_image(layers=2, layer_size=2048, seed=90, media="docker")
    seed_registry(real.url, "old/img", "1", built)
    answer = requests.get(
        f"{real.url}/v2/old/img/manifests/1", headers={"Accept": DOCKER_MANIFEST_V1_SIGNED}
    )
    answer.raise_for_status()
    raw = answer.content
    assert answer.headers["Content-Type"].startswith(DOCKER_MANIFEST_V1_SIGNED)
    doc = json.loads(raw)
    assert doc["schemaVersion"] == 1 and doc["signatures"]
    registry_digest = answer.headers["Docker-Content-Digest"]
    assert registry_digest != sha256_digest(raw)  # the digest is of the JWS payload, not the body

    blobs = {**built.blobs, sha256_digest(EMPTY_GZIP_TAR): EMPTY_GZIP_TAR}
    blob_sums = {layer["blobSum"] for layer in doc["fsLayers"]}
    assert blob_sums <= set(blobs)
    fake_registry.expect(
        "GET",
        "/v2/old/img/manifests/1",
        body=raw,
        times=None,
        headers={
            "Content-Type": DOCKER_MANIFEST_V1_SIGNED,
            "Docker-Content-Digest": registry_digest,
        },
    )
    for digest in blob_sums:
        fake_registry.expect("GET", f"/v2/old/img/blobs/{digest}", body=blobs[digest], times=None)

    store = open_store(str(tmp_path / "store"))
    result = pull(Client(fake_registry.host), store, "old/img", "1")

    assert result.manifest_digest == registry_digest
    stored = store.manifest("old/img", "1")
    assert stored.raw == raw
    assert stored.media_type == DOCKER_MANIFEST_V1_SIGNED
    assert {str(d.digest) for d in stored.layers} == blob_sums
    for digest in blob_sums:
        with store.layer(digest).reader() as reader:
            assert reader.read() == blobs[digest]

    pushed = push(Client(real.host), store, "old/img", "1", dest_name="back/img")

    assert pushed.manifest_digest == registry_digest
    back = requests.get(
        f"{real.url}/v2/back/img/manifests/{registry_digest}",
        headers={"Accept": DOCKER_MANIFEST_V1_SIGNED},
    )
    back.raise_for_status()
    assert Manifest.parse(back.content, back.headers["Content-Type"]).digest == registry_digest
    # the registry keeps the payload and signs it anew when serving: all but the signatures
    # must be the bytes we pushed
    resigned = json.loads(back.content)
    assert resigned.pop("signatures") and doc.pop("signatures")
    assert resigned == doc
