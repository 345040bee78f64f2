"""Stores written by regstore, read by real peers.

- the ``distribution`` layout on disk is served by a stock ``docker-registry`` pointed at the
  store root, and skopeo pulls every image from it with identical digests;
- the ``oci`` layout is read by ``skopeo copy oci:DIR:NAME:TAG`` and unpacked by ``umoci``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from regstore import open_store
from regstore.client import Client
from regstore.engine import pull
from regstore.engine.gc import collect_garbage
from regstore.testing.builders import build_image, build_index, random_blob, sha256_digest
from tests.support.engine import blob_digest_in_registry, raw_manifest, seed_registry
from tests.support.registry import RegistryServer, serve_directory
from tests.support.skopeo import skopeo_copy, skopeo_inspect_raw, umoci_unpack


def test_distribution_layout_is_served_by_a_stock_registry(
    registry: RegistryServer, tmp_path: Path
) -> None:
    images = {
        "team/docker": build_image(layers=2, layer_size=4096, seed=200, media="docker"),
        "team/oci": build_image(layers=2, layer_size=4096, seed=201, media="oci"),
        "team/multi": build_index(media="oci", seed=202),
        "team/list": build_index(media="docker", seed=203),
    }
    client = Client(registry.host)
    root = tmp_path / "store"
    with open_store(str(root)) as store:
        for name, built in images.items():
            seed_registry(registry.url, name, "v1", built)
            pull(client, store, name, "v1")

    served = serve_directory(root, tmp_path / "served")
    try:
        for name, built in images.items():
            ref = f"docker://{served.host}/{name}:v1"
            assert skopeo_inspect_raw(ref) == built.manifest_bytes
            for digest, (media_type, raw) in built.manifests.items():
                assert raw_manifest(served.url, name, digest, media_type) == raw
            for digest in built.blobs:
                assert blob_digest_in_registry(served.url, name, digest) == digest
            # skopeo copies the whole image (all platforms) out of it, digests preserved
            out = tmp_path / "copies" / name.replace("/", "_")
            out.parent.mkdir(exist_ok=True)
            skopeo_copy(ref, f"dir:{out}", "--all", "--preserve-digests")
            assert (out / "manifest.json").read_bytes() == built.manifest_bytes
        catalog = json.loads(
            Client(served.host).transport.session.get(f"{served.url}/v2/_catalog").content
        )
        assert sorted(catalog["repositories"]) == sorted(images)
    finally:
        served.stop()


def test_oci_layout_is_read_by_skopeo_and_unpacked_by_umoci(
    registry: RegistryServer, registry_factory, tmp_path: Path
) -> None:
    image = build_image(
        layers=1,
        media="oci",
        layer_files=[{"etc/hello.txt": b"hello from regstore\n", "bin/tool": b"#!/bin/sh\n"}],
    )
    index = build_index(media="oci", seed=210)
    seed_registry(registry.url, "library/app", "1.0", image)
    seed_registry(registry.url, "team/multi", "2", index)
    root = tmp_path / "layout"
    with open_store(f"file://{root}", layout="oci") as store:
        pull(Client(registry.host), store, "library/app", "1.0")
        pull(Client(registry.host), store, "team/multi", "2")

    assert skopeo_inspect_raw(f"oci:{root}:library/app:1.0") == image.manifest_bytes
    target = registry_factory()
    skopeo_copy(f"oci:{root}:library/app:1.0", f"docker://{target.host}/copied/app:1.0")
    assert raw_manifest(target.url, "copied/app", "1.0", image.manifest_media_type) == (
        image.manifest_bytes
    )
    skopeo_copy(f"oci:{root}:team/multi:2", f"docker://{target.host}/copied/multi:2", "--all")
    assert raw_manifest(target.url, "copied/multi", "2", index.manifest_media_type) == (
        index.manifest_bytes
    )

    rootfs = umoci_unpack(root, "library/app:1.0", tmp_path / "bundle")
    assert (Path(rootfs) / "etc/hello.txt").read_bytes() == b"hello from regstore\n"


def test_images_other_tools_tag_in_an_oci_layout_store_are_kept_by_gc(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # skopeo's oci:DIR:v2 names its image "v2" alone: no repository lists it, and gc deleted
    # its manifest and every blob only it used
    ours = build_image(layers=1, layer_size=4096, seed=210, media="oci")
    theirs = build_index(media="oci", seed=211)
    seed_registry(registry.url, "team/ours", "1", ours)
    seed_registry(registry.url, "team/theirs", "1", theirs)
    root = tmp_path / "oci"
    with open_store(f"file://{root}?layout=oci") as store:
        pull(Client(registry.host), store, "team/ours", "1")
    skopeo_copy(f"docker://{registry.host}/team/theirs:1", f"oci:{root}:v2", "--all")
    with open_store(f"file://{root}?layout=oci") as store:
        assert store.repositories() == ["team/ours"]
        kept = {str(d) for d in store.outside_references()}
        assert {*theirs.blobs, *theirs.manifests} <= kept
        assert not kept & {*ours.blobs, ours.manifest_digest}
        report = collect_garbage(store, grace=0, now=time.time() + 3600)
        assert report.removed == []
        stray = random_blob(300, seed=212)  # and gc still collects what nothing keeps
        with store.layer(sha256_digest(stray)).writer() as writer:
            writer.write(stray)
            writer.commit(len(stray))
        removed = collect_garbage(store, grace=0, now=time.time() + 3600).removed
        assert [b.digest for b in removed] == [sha256_digest(stray)]
    assert skopeo_inspect_raw(f"oci:{root}:v2") == theirs.manifest_bytes
    out = tmp_path / "copied"
    skopeo_copy(f"oci:{root}:v2", f"dir:{out}", "--all", "--preserve-digests")
    assert (out / "manifest.json").read_bytes() == theirs.manifest_bytes
