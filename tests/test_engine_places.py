"""Images move between places through the ImageSource/ImageSink protocols: the transfer loop
knows no kind of place, the destination-tag rule lives in the engine alone, and a new kind of
place is one adapter (here a "shelf": a dict standing in for a bundle or a cluster worker)."""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from regstore import open_store
from regstore.backends.fsspec_store import FsspecBackend
from regstore.engine import (
    RegistryImage,
    StoreImage,
    copy,
    destination_tag,
    resolve_destination,
    transfer_many,
)
from regstore.engine.blobs import BlobMove, Opener
from regstore.engine.options import TransferOptions
from regstore.engine.places import ImageSink, ImageSource, register_place, sink_of, source_of
from regstore.engine.registryplace import RegistryPlace
from regstore.engine.reporting import Reporter
from regstore.engine.storeplace import StorePlace
from regstore.engine.transfer import plan_image
from regstore.errors import (
    BlobNotFoundError,
    DigestMismatchError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    UsageError,
)
from regstore.manifest import Descriptor, Manifest
from regstore.reference import Digest
from regstore.retry import RetryBudget
from regstore.store import ObjectStore

ENGINE = Path(importlib.import_module("regstore.engine").__file__ or "").parent
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DIGEST = "sha256:" + "d" * 64


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class _Image:
    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return _sha(self.manifest)


def _small_image(seed: int) -> _Image:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = bytes([seed % 256]) * (1000 + seed)
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": _sha(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": _sha(layer),
                "size": len(layer),
            }
        ],
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return _Image(raw, {_sha(config): config, _sha(layer): layer})


def _put(store: ObjectStore, name: str, tag: str, image: _Image) -> None:
    for digest, data in image.blobs.items():
        with store.layer(digest).writer() as writer:
            writer.write(data)
            writer.commit(len(data))
    store.write_manifest(name, tag, Manifest.parse(image.manifest, DOCKER_MANIFEST))


@pytest.fixture
def stores() -> Iterator[tuple[ObjectStore, ObjectStore]]:
    with (
        open_store(f"memory://places-a-{uuid.uuid4().hex}") as a,
        open_store(f"memory://places-b-{uuid.uuid4().hex}") as b,
    ):
        yield a, b


# -- the transfer loop knows only the protocols --------------------------------------------------


def _isinstance_calls(module: str) -> list[str]:
    tree = ast.parse((ENGINE / module).read_text())
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "isinstance"
    ]


def test_the_transfer_loop_has_no_isinstance_and_names_no_kind_of_place() -> None:
    assert _isinstance_calls("transfer.py") == []
    source = (ENGINE / "transfer.py").read_text()
    for name in ("RegistryClient", "ObjectStore", "_RegistrySide", "_StoreSide", "upload_blob"):
        assert name not in source, name


def test_repair_plans_through_a_public_seam() -> None:
    tree = ast.parse((ENGINE / "repair.py").read_text())
    private = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []


def test_the_two_adapters_are_sources_and_sinks(stores: tuple[ObjectStore, ObjectStore]) -> None:
    store, _ = stores
    image = StoreImage(store, "team/app", "1")
    assert isinstance(source_of(image), StorePlace)
    assert isinstance(sink_of(image), StorePlace)
    # mypy checks the structure (register_place's signature); this checks the registration
    assert sink_of.dispatch(RegistryImage) is RegistryPlace
    with pytest.raises(TypeError, match="no place is registered for str"):
        source_of("store:team/app:1")


# -- the one destination-tag rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_ref", "dest_ref", "tag"),
    [
        ("1.2", None, "1.2"),  # the source's tag is kept
        ("1.2", "stable", "stable"),  # the destination's own tag wins
        ("1.2", DIGEST, None),  # a destination digest: no tag
        (DIGEST, None, None),  # taken by digest: lands untagged
        (DIGEST, "stable", "stable"),
    ],
)
def test_the_destination_tag_rule(
    stores: tuple[ObjectStore, ObjectStore], source_ref: str, dest_ref: str | None, tag: str | None
) -> None:
    a, b = stores
    source, dest = StoreImage(a, "team/app", source_ref), StoreImage(b, "m/app", dest_ref)
    assert destination_tag(source, dest) == tag
    resolved = resolve_destination(source, dest)
    assert resolved.reference == (dest_ref if dest_ref is not None else tag)
    assert resolved.name == "m/app" and resolved.store is b


def test_plan_image_is_the_transfer_s_plan(stores: tuple[ObjectStore, ObjectStore]) -> None:
    store, _ = stores
    image = _small_image(1)
    _put(store, "team/app", "1", image)
    plan = plan_image(StoreImage(store, "team/app", "1"), TransferOptions())
    assert str(plan.top.digest) == image.digest
    assert sorted(plan.blobs) == sorted(image.blobs)
    assert plan.children == [] and not plan.partial
    with pytest.raises(UsageError, match="needs a tag or digest"):  # a RegstoreError
        plan_image(StoreImage(store, "team/app"), TransferOptions())


# -- a new kind of place is one adapter ----------------------------------------------------------


@dataclass
class Shelf:
    """Where a shelf keeps things: blobs by digest, manifests by digest and by name:tag."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ShelfImage:
    """The image value naming a place on a shelf (as RegistryImage names a repository)."""

    shelf: Shelf
    name: str
    reference: str | None = None

    def __str__(self) -> str:
        return f"shelf:{self.name}" + (f":{self.reference}" if self.reference else "")


class _Stream:
    def __init__(self, data: bytes, offset: int) -> None:
        self._view = memoryview(data)[offset:]
        self.offset = offset
        self.size: int | None = len(data)

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def close(self) -> None:
        pass


class ShelfPlace:
    """The whole adapter of the new place: the source half and the sink half."""

    def __init__(self, image: ShelfImage) -> None:
        self.shelf = image.shelf
        self.name = image.name

    def _key(self, reference: str) -> str:
        return reference if reference.startswith("sha256:") else f"{self.name}:{reference}"

    # source
    def manifest(self, reference: str) -> Manifest:
        try:
            media_type, raw = self.shelf.manifests[self._key(reference)]
        except KeyError:
            raise ImageManifestNotFoundError(self.name, reference) from None
        return Manifest.parse(raw, media_type)

    def manifest_digest(self, reference: str) -> str | None:
        found = self.shelf.manifests.get(self._key(reference))
        return None if found is None else _sha(found[1])

    def has_all_children(self, index: Manifest) -> bool:
        return True

    def has_manifest(self, digest: str) -> bool:
        return digest in self.shelf.manifests

    def blob_size(self, digest: str) -> int:
        if digest not in self.shelf.blobs:
            raise BlobNotFoundError(self.name, digest)
        return len(self.shelf.blobs[digest])

    def opener(self, digest: str) -> Opener:
        return lambda offset: _Stream(self.shelf.blobs[digest], offset)

    def read_budget(self, desc: Descriptor) -> RetryBudget | None:
        return None

    def mount_origin(self) -> tuple[str, str] | None:
        return None

    # sink
    needs_blob_sizes = False
    accepts_partial_index = False
    claims_reuse = False

    def blob_key(self, digest: str) -> tuple[object, ...]:
        return ("shelf", id(self.shelf), digest)

    def mount_sources(self, source: ImageSource, requested: Sequence[str]) -> tuple[str, ...]:
        return ()

    def put_blob(
        self,
        desc: Descriptor,
        source: ImageSource,
        reporter: Reporter,
        options: TransferOptions,
        mount_from: Sequence[str],
    ) -> BlobMove:
        if desc.digest in self.shelf.blobs:
            return BlobMove(desc.digest, "skipped")
        stream = source.opener(desc.digest)(0)
        buffer, data = bytearray(4096), bytearray()
        try:
            while n := stream.readinto(buffer):
                data += buffer[:n]
        finally:
            stream.close()
        if _sha(bytes(data)) != desc.digest:
            raise DigestMismatchError(desc.digest, expected=desc.digest)
        self.shelf.blobs[desc.digest] = bytes(data)
        return BlobMove(desc.digest, "transferred", len(data))

    def put_manifest(self, manifest: Manifest, tag: str | None, partial: bool) -> None:
        entry = (manifest.media_type, manifest.raw)
        self.shelf.manifests[str(manifest.digest)] = entry
        if tag is not None:
            self.shelf.manifests[f"{self.name}:{tag}"] = entry
        self.shelf.puts.append(tag or str(manifest.digest))


register_place(ShelfImage, source=ShelfPlace, sink=ShelfPlace)


def test_a_new_place_is_one_adapter(stores: tuple[ObjectStore, ObjectStore]) -> None:
    """Store → shelf → store through the unchanged transfer loop, tag rule and all."""
    a, b = stores
    image = _small_image(7)
    _put(a, "team/app", "1.0", image)
    shelf = Shelf()
    # the protocols as mypy sees them: an adapter of the new place is a source and a sink
    place: ImageSource = ShelfPlace(ShelfImage(shelf, "x"))
    sink: ImageSink = ShelfPlace(ShelfImage(shelf, "x"))
    assert place is not sink

    there = copy(StoreImage(a, "team/app", "1.0"), ShelfImage(shelf, "kept/app"))  # type: ignore[arg-type]
    assert there.destination == "shelf:kept/app:1.0"  # the source's tag, by the engine's rule
    assert sorted(there.transferred) == sorted(image.blobs)
    assert shelf.blobs == image.blobs
    assert shelf.puts == ["1.0"]  # blobs first, then the tagged manifest

    back = copy(ShelfImage(shelf, "kept/app", "1.0"), StoreImage(b, "back/app"))  # type: ignore[arg-type]
    assert back.destination == "store:back/app:1.0"
    assert str(b.manifest("back/app", "1.0").digest) == image.digest
    for digest, data in image.blobs.items():
        with b.layer(digest).reader() as reader:
            assert reader.read() == data

    again = transfer_many([(ShelfImage(shelf, "kept/app", "1.0"), StoreImage(b, "back/app"))])  # type: ignore[list-item]
    assert [o.status for o in again] == ["skipped"]  # skip_unchanged asks both places


def _flip_a_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x20]) + data[middle + 1 :]


@pytest.mark.parametrize(
    "damage",
    [lambda _: b"[]", lambda _: b"\x00 not json", _flip_a_byte],
    ids=["json-but-no-manifest", "not-json", "a-byte-flipped-same-length"],
)
def test_a_damaged_stored_manifest_is_copied_again_not_skipped(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    """A sync learns whether a tag changed from the digest of the stored bytes (not a parse of
    them): bytes that no longer hash to the digest the tag names are no manifest of that tag
    (ManifestInvalidError), so the image is copied again, where a parse used to fail the
    image, and the copy writes the bytes again, also over ones damaged in place (a plain pull
    left those as they were, and a push by tag published them under another digest)."""
    image = _small_image(11)
    with (
        open_store(f"memory://places-src-{uuid.uuid4().hex}") as src,
        open_store(str(tmp_path / "dest")) as dest,
    ):
        _put(src, "team/app", "1.0", image)
        job = [(StoreImage(src, "team/app", "1.0"), StoreImage(dest, "team/app"))]
        assert [o.status for o in transfer_many(job)] == ["copied"]
        assert [o.status for o in transfer_many(job)] == ["skipped"]
        assert dest.manifest_digest("team/app", "1.0") == image.digest

        backend = dest.backend
        assert isinstance(backend, FsspecBackend)
        stored = Path(backend.layout.blob_path(Digest(image.digest)))
        damaged = damage(image.manifest)
        assert damaged != image.manifest
        stored.write_bytes(damaged)
        with pytest.raises(ManifestInvalidError, match=f"not to the {image.digest} the tag"):
            dest.manifest_digest("team/app", "1.0")
        back = [(StoreImage(dest, "team/app", "1.0"), StoreImage(src, "team/copy"))]
        refused = transfer_many(back)  # never handed on as they are
        assert [o.status for o in refused] == ["failed"]
        assert "damaged" in str(refused.outcomes[0].error)

        again = transfer_many(job)
        assert [o.status for o in again] == ["copied"], again.outcomes[0].error
        assert stored.read_bytes() == image.manifest  # written again: the store is whole
        assert dest.manifest("team/app", "1.0").digest == image.digest
        assert [o.status for o in transfer_many(job)] == ["skipped"]
