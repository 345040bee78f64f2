"""Conformance tests: manifests, tags, repositories (mixed into BackendConformance)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from regstore.errors import (
    ImageManifestNotFoundError,
    LayerAlreadyExistsError,
    LayerLockedError,
    RepositoryNotFoundError,
    StoreError,
    UnsupportedError,
)
from regstore.store import ObjectStore
from regstore.storetypes import BlobState

from ._suite import SuiteSettings, assert_unsupported, barrier, in_thread
from .builders import (
    Blob,
    Image,
    docker_image,
    docker_manifest_list,
    oci_artifact,
    oci_image,
    oci_index,
    random_bytes,
    schema1_signed,
    write_blob,
    write_image,
)

__all__ = ["MANIFEST_KINDS", "ManifestTests"]

NAME = "conformance/app"


def _artifact() -> tuple[Image, ...]:
    subject = oci_image(seed=50)
    return subject, oci_artifact(subject)


#: Every manifest kind, as (images to store first, ..., the image under test).
MANIFEST_KINDS: dict[str, Callable[[], tuple[Image, ...]]] = {
    "docker-schema1-signed": lambda: (schema1_signed(NAME, "v1", seed=10),),
    "docker-schema2": lambda: (docker_image(seed=11),),
    "docker-manifest-list": lambda: (
        docker_manifest_list([docker_image(seed=12), docker_image(seed=13)]),
    ),
    "oci-manifest": lambda: (oci_image(seed=14),),
    "oci-manifest-without-mediatype": lambda: (oci_image(seed=15, media_type_field=False),),
    "oci-index": lambda: (oci_index([oci_image(seed=16), oci_image(seed=17)]),),
    "oci-index-without-mediatype": lambda: (
        oci_index([oci_image(seed=18)], media_type_field=False),
    ),
    "oci-artifact-with-subject": _artifact,
}


class ManifestTests(SuiteSettings):
    """Manifests of every media type with exact bytes; tags; listings; deletion."""

    # -- round trips -------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", sorted(MANIFEST_KINDS))
    def test_manifest_round_trip_by_tag_and_digest(self, store: ObjectStore, kind: str) -> None:
        *first, image = MANIFEST_KINDS[kind]()
        for earlier in first:
            write_image(store, NAME, None, earlier)
        digest = write_image(store, NAME, "v1", image)
        assert digest == image.digest
        for reference in ("v1", str(digest)):
            stored = store.manifest(NAME, reference)
            assert stored.raw == image.raw, f"bytes changed when read by {reference}"
            assert stored.media_type == image.media_type
            assert stored.digest == digest
            assert store.manifest_digest(NAME, reference) == digest
        assert store.resolve(NAME, "v1") == digest
        assert store.has_manifest(NAME, "v1")
        assert store.has_manifest(NAME, str(digest))
        assert digest in store.manifests(NAME)
        for child in image.children:
            assert store.manifest(NAME, str(child.digest)).raw == child.raw

    @pytest.mark.parametrize("kind", sorted(MANIFEST_KINDS))
    def test_a_stored_manifest_leaves_none_of_its_blobs_unlinked(
        self, store: ObjectStore, kind: str
    ) -> None:
        # what verify asks (unlinked-blob): a layout with per-repository links (a registry's)
        # links every blob of every manifest it records, children of an index included
        *first, image = MANIFEST_KINDS[kind]()
        for earlier in first:
            write_image(store, NAME, None, earlier)
        write_image(store, NAME, "v1", image)
        blobs = {
            str(blob.digest)
            for digest in store.manifests(NAME)
            for blob in store.manifest(NAME, str(digest)).blobs
        }
        assert blobs or kind.startswith(("oci-index", "docker-manifest-list"))
        assert store.unlinked_blobs(NAME, blobs) == {}
        assert store.outside_references() == set()  # all of it is in the repository

    def test_sha512_blobs_in_a_manifest(self, store: ObjectStore) -> None:
        image = oci_image(seed=19, algorithm="sha512")
        digest = write_image(store, NAME, "sha512", image)
        assert store.manifest(NAME, "sha512").raw == image.raw
        assert all(store.blob_exists(b.digest) for b in image.blobs)
        assert store.manifest(NAME, str(digest)).digest == digest
        assert store.manifest_digest(NAME, "sha512") == digest

    def test_rewriting_the_same_manifest_is_idempotent(self, store: ObjectStore) -> None:
        image = oci_image(seed=20)
        write_image(store, NAME, "v1", image)
        write_image(store, NAME, "v1", image)
        write_image(store, NAME, None, image)
        assert store.tags(NAME) == ["v1"]
        assert store.manifests(NAME) == [image.digest]
        assert store.manifest(NAME, "v1").raw == image.raw

    # -- what write_manifest refuses ---------------------------------------------------------

    def test_write_manifest_refused_while_a_blob_is_missing(self, store: ObjectStore) -> None:
        image = oci_image(seed=21)
        config, *layers = image.blobs
        write_blob(store, config)
        write_blob(store, layers[0])
        # the last layer: absent, then partial (staged but not committed)
        with pytest.raises(StoreError):
            store.write_manifest(NAME, "v1", image.manifest)
        writer = store.layer(layers[-1].digest).writer()
        writer.set_size(layers[-1].size)
        writer.write(layers[-1].data[:5])
        writer.close()
        assert store.blob_status(layers[-1].digest).state is BlobState.PARTIAL
        with pytest.raises(StoreError):
            store.write_manifest(NAME, "v1", image.manifest)
        assert NAME not in store.repositories()
        assert not store.has_manifest(NAME, str(image.digest))
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest(NAME, "v1")

    def test_index_refused_while_a_child_is_missing_unless_partial(
        self, store: ObjectStore
    ) -> None:
        children = [oci_image(seed=22), oci_image(seed=23)]
        index = oci_index(children)
        write_image(store, NAME, None, children[0])
        with pytest.raises(StoreError):
            store.write_manifest(NAME, "multi", index.manifest)
        assert not store.has_manifest(NAME, "multi")
        digest = store.write_manifest(NAME, "multi", index.manifest, partial=True)
        assert store.is_partial(NAME, digest)
        assert store.manifest(NAME, "multi").raw == index.raw
        assert not store.is_partial(NAME, str(children[0].digest))
        # completing it later clears the mark
        write_image(store, NAME, None, children[1])
        store.write_manifest(NAME, "multi", index.manifest)
        assert not store.is_partial(NAME, digest)

    def test_partial_is_false_for_unknown_manifests(self, store: ObjectStore) -> None:
        assert not store.is_partial(NAME, str(oci_image(seed=24).digest))

    # -- tags and listings -------------------------------------------------------------------

    def test_retag_moves_the_tag(self, store: ObjectStore) -> None:
        first, second = oci_image(seed=25), docker_image(seed=26)
        write_image(store, NAME, "latest", first)
        write_image(store, NAME, "latest", second)
        assert store.manifest(NAME, "latest").raw == second.raw
        assert store.tags(NAME) == ["latest"]
        # the old manifest stays reachable by digest
        assert store.manifest(NAME, str(first.digest)).raw == first.raw
        assert store.manifests(NAME) == sorted([first.digest, second.digest])

    def test_listings_are_sorted(self, store: ObjectStore) -> None:
        image = oci_image(seed=27)
        names = ["zeta", "alpha/b", "alpha", "mid/deep/name", "b-2", "b.1"]
        tags = ["v10", "v2", "latest", "Latest", "1.0", "_x"]
        for name in names:
            write_image(store, name, None, image)
        for tag in tags:
            write_image(store, "alpha", tag, image)
        other = oci_image(seed=28)
        write_image(store, "alpha", None, other)
        assert store.repositories() == sorted(names)
        assert store.tags("alpha") == sorted(tags)
        assert store.tags("zeta") == []
        assert store.manifests("alpha") == sorted([image.digest, other.digest])

    def test_tags_differing_in_case_are_two_tags(self, store: ObjectStore) -> None:
        # Tags are case-sensitive (OCI): a medium that folds case (a case-insensitive file
        # system, a key-value store that lower-cases) would point "latest" at "Latest"'s image
        upper, lower = oci_image(seed=31), oci_image(seed=32)
        write_image(store, NAME, "Latest", upper)
        write_image(store, NAME, "latest", lower)
        assert store.manifest(NAME, "Latest").raw == upper.raw, "tags must keep their case"
        assert store.manifest(NAME, "latest").raw == lower.raw, "tags must keep their case"
        assert store.tags(NAME) == ["Latest", "latest"]

    def test_untagged_manifest_is_listed_by_digest(self, store: ObjectStore) -> None:
        image = docker_image(seed=29)
        digest = write_image(store, NAME, None, image)
        assert store.repositories() == [NAME]
        assert store.tags(NAME) == []
        assert store.manifests(NAME) == [digest]
        assert store.manifest(NAME, str(digest)).raw == image.raw

    def test_repositories_are_independent(self, store: ObjectStore) -> None:
        image = oci_image(seed=30)
        write_image(store, "one", "v1", image)
        write_image(store, "two", "v2", image)
        assert store.tags("one") == ["v1"]
        assert store.tags("two") == ["v2"]
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest("one", "v2")
        if not self.supports_delete:
            assert_unsupported(lambda: store.delete_manifest("one", str(image.digest)))
            assert store.repositories() == ["one", "two"]
            return
        store.delete_manifest("one", str(image.digest))
        assert store.manifest("two", "v2").raw == image.raw
        assert store.repositories() == ["two"]

    def test_manifest_by_digest_is_per_repository(self, store: ObjectStore) -> None:
        image = oci_image(seed=31)
        write_image(store, "one", None, image)
        write_image(store, "two", None, oci_image(seed=32))
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest("two", str(image.digest))

    # -- deletion ----------------------------------------------------------------------------

    def test_delete_tag_keeps_the_manifest(self, store: ObjectStore) -> None:
        image = oci_image(seed=33)
        digest = write_image(store, NAME, "v1", image)
        write_image(store, NAME, "v2", image)
        if not self.supports_delete:
            assert_unsupported(lambda: store.delete_tag(NAME, "v1"))
            assert store.tags(NAME) == ["v1", "v2"]  # nothing changed
            return
        store.delete_tag(NAME, "v1")
        assert store.tags(NAME) == ["v2"]
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest(NAME, "v1")
        store.delete_tag(NAME, "v2")
        assert store.tags(NAME) == []
        assert store.manifest(NAME, str(digest)).raw == image.raw
        assert store.manifests(NAME) == [digest]
        with pytest.raises(ImageManifestNotFoundError):
            store.delete_tag(NAME, "v2")
        with pytest.raises(ImageManifestNotFoundError):
            store.delete_tag(NAME, "never")

    def test_delete_manifest_removes_its_tags(self, store: ObjectStore) -> None:
        doomed, kept = oci_image(seed=34), oci_image(seed=35)
        write_image(store, NAME, "a", doomed)
        write_image(store, NAME, "b", doomed)
        write_image(store, NAME, "c", kept)
        if not self.supports_delete:
            assert_unsupported(lambda: store.delete_manifest(NAME, str(doomed.digest)))
            assert store.tags(NAME) == ["a", "b", "c"]  # nothing changed
            return
        store.delete_manifest(NAME, str(doomed.digest))
        assert store.tags(NAME) == ["c"]
        assert store.manifests(NAME) == [kept.digest]
        for reference in ("a", "b", str(doomed.digest)):
            with pytest.raises(ImageManifestNotFoundError):
                store.manifest(NAME, reference)
        with pytest.raises(ImageManifestNotFoundError):
            store.delete_manifest(NAME, str(doomed.digest))
        # blobs stay until garbage collection
        assert all(store.blob_exists(b.digest) for b in doomed.blobs)

    def test_deleting_the_last_manifest_forgets_the_repository(self, store: ObjectStore) -> None:
        image = oci_image(seed=36)
        write_image(store, NAME, "v1", image)
        if not self.supports_delete:
            assert_unsupported(lambda: store.delete_manifest(NAME, str(image.digest)))
            assert store.repositories() == [NAME]
            return
        store.delete_manifest(NAME, str(image.digest))
        assert store.repositories() == []
        with pytest.raises(RepositoryNotFoundError):
            store.tags(NAME)
        # and it can be written again
        write_image(store, NAME, "v1", image)
        assert store.tags(NAME) == ["v1"]

    # -- absence -----------------------------------------------------------------------------

    def test_missing_manifests_and_repositories(self, store: ObjectStore) -> None:
        absent = oci_image(seed=37)
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest("nothing/here", "latest")
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest("nothing/here", str(absent.digest))
        with pytest.raises(RepositoryNotFoundError):
            store.tags("nothing/here")
        with pytest.raises(RepositoryNotFoundError):
            store.manifests("nothing/here")
        with pytest.raises(
            ImageManifestNotFoundError if self.supports_delete else UnsupportedError
        ):
            store.delete_manifest("nothing/here", str(absent.digest))
        write_image(store, NAME, "v1", oci_image(seed=38))
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest(NAME, "v2")
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest(NAME, str(absent.digest))
        assert not store.has_manifest(NAME, "v2")
        for name, reference in [
            ("nothing/here", "latest"),
            ("nothing/here", str(absent.digest)),
            (NAME, "v2"),
            (NAME, str(absent.digest)),
        ]:
            assert store.manifest_digest(name, reference) is None, (name, reference)

    def test_empty_store(self, store: ObjectStore) -> None:
        assert store.repositories() == []
        if self.supports_list_blobs:
            assert store.blobs() == []
        else:
            assert_unsupported(store.blobs)
        info = store.describe()
        assert isinstance(info, dict) and info.get("backend")

    def test_close_is_idempotent_and_final(self, store_factory: Callable[[], ObjectStore],
                                           store: ObjectStore) -> None:  # fmt: skip
        other = store_factory()
        if other is store:
            pytest.skip("closing needs a second handle (no store_url given)")
        write_image(store, NAME, "v1", oci_image(seed=39))
        other.close()
        other.close()
        with pytest.raises(StoreError):
            other.tags(NAME)
        assert store.tags(NAME) == ["v1"]  # the other handle still works

    # -- concurrency -------------------------------------------------------------------------

    def test_concurrent_tagging_loses_nothing(
        self, store: ObjectStore, store_factory: Callable[[], ObjectStore]
    ) -> None:
        image = oci_image(seed=40)
        write_image(store, NAME, None, image)
        handles = [store, store_factory(), store_factory(), store]
        start = barrier(len(handles))

        def tagger(handle: ObjectStore, worker: int) -> None:
            start.wait()
            for i in range(10):
                handle.write_manifest(NAME, f"w{worker}-{i}", image.manifest)

        futures = [in_thread(partial(tagger, h, w)) for w, h in enumerate(handles)]
        for future in futures:
            future.result(timeout=self.thread_timeout)
        expected = sorted(f"w{w}-{i}" for w in range(len(handles)) for i in range(10))
        assert store.tags(NAME) == expected

    def test_concurrent_writes_of_shared_blobs_and_manifests(
        self, store: ObjectStore, store_factory: Callable[[], ObjectStore]
    ) -> None:
        # Several pulls of images sharing a layer: every one must end complete and readable.
        shared = Blob(random_bytes(4096, 41))
        images = [oci_image(seed=42 + i) for i in range(4)]
        handles = [store, store_factory(), store_factory(), store]
        start = barrier(len(images))

        def pull(handle: ObjectStore, index: int) -> None:
            start.wait()
            layer = handle.layer(shared.digest)
            while not layer.exists():
                try:
                    write_blob(handle, shared)
                except (LayerLockedError, LayerAlreadyExistsError):
                    layer.wait(timeout=self.thread_timeout)
            write_image(handle, f"pull/{index}", "v1", images[index])

        futures = [in_thread(partial(pull, h, i)) for i, h in enumerate(handles)]
        for future in futures:
            future.result(timeout=self.thread_timeout)
        assert store.repositories() == [f"pull/{i}" for i in range(len(images))]
        with store.layer(shared.digest).reader() as reader:
            assert reader.read() == shared.data

    # -- referrers ---------------------------------------------------------------------------

    def test_referrers_are_indexed_per_subject(
        self, store: ObjectStore, store_factory: Callable[[], ObjectStore]
    ) -> None:
        # The facade keeps a referrers index (the referrers tag schema) through the manifest
        # hooks; concurrent writers of one subject's referrers, through several handles, all
        # end up listed, each once.
        subject = oci_image(seed=60)
        write_image(store, NAME, "v1", subject)
        referrers = [
            oci_artifact(subject, f'{{"n":{i}}}'.encode(), f"application/x.test{i % 2}")
            for i in range(6)
        ]
        for referrer in referrers:  # blobs first: the writers race on the index only
            for blob in referrer.blobs:
                write_blob(store, blob)
        handles = [store, store_factory(), store_factory()]
        start = barrier(len(referrers))

        def writer(index: int) -> None:
            start.wait()
            handles[index % len(handles)].write_manifest(NAME, None, referrers[index].manifest)

        futures = [in_thread(partial(writer, i)) for i in range(len(referrers))]
        for future in futures:
            future.result(timeout=self.thread_timeout)
        listed = store.referrers(NAME, subject.digest)
        assert sorted(str(d.digest) for d in listed) == sorted(str(r.digest) for r in referrers)
        only = store.referrers(NAME, subject.digest, ["application/x.test1"])
        assert sorted(str(d.digest) for d in only) == sorted(str(r.digest) for r in referrers[1::2])
        assert store.referrers(NAME, referrers[0].digest) == []
