"""The test-image library (regstore.testing.builders): every kind it builds validates, and the
validator catches what a broken image or registry would get wrong."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest
import requests

from regstore.testing.builders import (
    Built,
    BuiltImage,
    Image,
    ImageError,
    build_image,
    build_index,
    docker_image,
    docker_manifest_list,
    oci_artifact,
    oci_image,
    oci_index,
    random_blob,
    random_bytes,
    sha256_digest,
    validate,
)
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer


def _kinds() -> list[Built | Image]:
    subject = build_image(seed=1, media="oci")
    return [
        build_image(seed=1),
        build_image(seed=2, media="oci", empty_layer=True),
        build_image(media="oci", artifact_subject=subject),
        build_index(seed=3, media="oci"),
        build_index(seed=4, media="docker"),
        docker_image(seed=5),
        oci_image(seed=6, media_type_field=False),
        oci_index([oci_image(seed=7), oci_image(seed=8)]),
        docker_manifest_list([docker_image(seed=9)]),
        oci_artifact(oci_image(seed=10)),
    ]


@pytest.mark.parametrize("content", _kinds(), ids=lambda c: type(c).__name__)
def test_every_kind_built_validates(content: Built | Image) -> None:
    seen = validate(content)
    assert seen  # the config and layers (and children) were all looked at


def test_one_random_generator_under_both_names() -> None:
    assert random_blob(100, 3) == random_bytes(100, 3) != random_bytes(100, 4)


def test_a_layer_with_other_bytes_is_caught() -> None:
    image = build_image(seed=11)
    layer = image.layer_digests[0]
    blobs = dict(image.blobs, **{layer: image.blobs[layer][:-1] + b"x"})
    with pytest.raises(ImageError, match="another digest"):
        validate(image.manifest_bytes, blobs.__getitem__)


def test_a_wrong_descriptor_size_is_caught() -> None:
    image = build_image(seed=12)
    doc = image.manifest
    doc["layers"][0]["size"] += 1
    with pytest.raises(ImageError, match="the descriptor says"):
        validate(json.dumps(doc).encode(), image.blobs.__getitem__)


def test_config_diff_ids_that_do_not_match_the_layers_are_caught() -> None:
    image = build_image(seed=13, layers=2)
    # the layers swapped in the manifest, the config left as it was
    doc = image.manifest
    doc["layers"].reverse()
    with pytest.raises(ImageError, match="diff_ids"):
        validate(json.dumps(doc).encode(), image.blobs.__getitem__)


def test_a_missing_child_of_an_index_is_caught() -> None:
    index = build_index(seed=14)
    manifests = {d: raw for d, (_, raw) in index.manifests.items()}
    del manifests[index.children[1].manifest_digest]
    with pytest.raises(ImageError, match=r"child 1.*cannot be fetched"):
        validate(index.manifest_bytes, index.blobs.__getitem__, manifests.__getitem__)


def test_a_built_image_with_a_tampered_blob_map_is_caught() -> None:
    image = build_image(seed=15)
    broken = dataclasses.replace(image, blobs={**image.blobs, image.config_digest: b"{}"})
    assert isinstance(broken, BuiltImage)
    with pytest.raises(ImageError):
        validate(broken)


def test_an_index_seeded_into_a_real_registry_validates_as_served(
    registry: RegistryServer,
) -> None:
    index = build_index(seed=16, media="oci")
    seed_registry(registry.url, "team/multi", "1", index)

    def get(kind: str, accept: str = "*/*") -> Callable[[str], bytes]:
        def fetch(digest: str) -> bytes:
            url = f"{registry.url}/v2/team/multi/{kind}/{digest}"
            r = requests.get(url, headers={"Accept": accept}, timeout=30)
            r.raise_for_status()
            return r.content

        return fetch

    r = requests.get(
        f"{registry.url}/v2/team/multi/manifests/1",
        headers={"Accept": index.manifest_media_type},
        timeout=30,
    )
    assert sha256_digest(r.content) == index.manifest_digest
    child_type = index.children[0].manifest_media_type
    seen = validate(r.content, get("blobs"), get("manifests", child_type))
    assert set(seen) == set(index.blobs) | {c.manifest_digest for c in index.children}
