"""Hostile bundles: tars and manifests crafted to hang, blow up or mislead ``bundle ls``,
``verify`` and ``import``. Every one must end quickly in a clear verdict."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

import regstore.bundle.api as bundle_api
from regstore import open_store
from regstore.bundle import create_bundle, import_bundle, read_bundle, verify_bundle
from regstore.bundle.archive import BundleReader
from regstore.bundle.contents import OpenBundle
from regstore.engine import StoreImage
from regstore.errors import (
    BundleBaseMissingError,
    BundleInvalidError,
    DigestMismatchError,
    NotFoundError,
)
from regstore.testing.builders import build_image
from tests.support.cli import put_image

if TYPE_CHECKING:
    from regstore.engine.model import Image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYOUT = ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
REF = "org.opencontainers.image.ref.name"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "blobs/sha256/" + hashlib.sha256(data).hexdigest(), data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            _add(tar, name, data)


def _index(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def _image(layer_size: int | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A small OCI image: its manifest and its members (config, layer, manifest);
    ``layer_size`` is what the manifest states for the layer (default: the truth)."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = b"layer-bytes" * 10
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _sha(layer),
                    "size": len(layer) if layer_size is None else layer_size}],
    }).encode()  # fmt: skip
    return manifest, [_blob(config), _blob(layer), _blob(manifest)]


@pytest.fixture
def manifest_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every manifest a bundle reads out of its tar (ls, verify and import all read through
    OpenBundle.manifest)."""
    reads: list[str] = []
    real = OpenBundle.manifest

    def counting(self: OpenBundle, digest: str, media_type: str | None = None) -> Any:
        reads.append(digest)
        return real(self, digest, media_type)

    monkeypatch.setattr(OpenBundle, "manifest", counting)
    yield reads


# -- 1: a negative member size --------------------------------------------------------------


def _negative_size_tar(path: Path) -> None:
    """A GNU tar whose second header states a size of -1536 (base-256): tarfile's offset
    moves three blocks back, to the first header again."""
    manifest, members = _image()
    index = _index([{"mediaType": OCI_MANIFEST, "digest": _sha(manifest),
                     "size": len(manifest), "annotations": {REF: "a/b:1"}}])  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, *LAYOUT)
        header = bytearray(tarfile.TarInfo("evil").tobuf(format=tarfile.GNU_FORMAT))
        value = (1 << 88) - 1536  # two's complement in 11 bytes, after the 0xFF marker
        field = bytearray(12)
        field[0] = 0xFF
        for i in range(11, 0, -1):
            field[i] = value & 0xFF
            value >>= 8
        header[124:136] = field
        header[148:156] = b"        "
        header[148:156] = b"%06o\0 " % sum(header[:512])
        assert tar.fileobj is not None
        tar.fileobj.write(bytes(header))
        tar.offset += 512
        _add(tar, "index.json", index)
        for name, data in members:
            _add(tar, name, data)
    path.write_bytes(buf.getvalue())


@pytest.mark.timeout(60)
def test_a_negative_member_size_is_refused_not_looped_over(tmp_path: Path) -> None:
    bundle = tmp_path / "neg.tar"
    _negative_size_tar(bundle)
    with pytest.raises(BundleInvalidError, match="negative size"):
        read_bundle(str(bundle))
    with pytest.raises(BundleInvalidError, match="negative size"):
        verify_bundle(str(bundle))
    with pytest.raises(BundleInvalidError, match="negative size"):
        import_bundle(str(bundle), store=open_store(f"memory://neg-{tmp_path.name}"))


def test_a_member_named_twice_is_refused(tmp_path: Path) -> None:
    manifest, members = _image()
    index = _index([{"mediaType": OCI_MANIFEST, "digest": _sha(manifest),
                     "size": len(manifest), "annotations": {REF: "a/b:1"}}])  # fmt: skip
    bundle = tmp_path / "dup.tar"
    _write_tar(bundle, [LAYOUT, ("index.json", index), ("index.json", _index([])), *members])
    # ls reads only up to the first index.json; what reads the whole tar refuses it
    with pytest.raises(BundleInvalidError, match=r"index\.json' twice"):
        verify_bundle(str(bundle))
    store = open_store(f"memory://dup-{tmp_path.name}")
    with pytest.raises(BundleInvalidError, match=r"index\.json' twice"):
        import_bundle(str(bundle), store=store)


# -- 2: indexes sharing children --------------------------------------------------------------


def _dag(path: Path, levels: int, width: int) -> int:
    """An image whose ``levels`` nested indexes each list the next ``width`` times (as
    different platforms); the number of manifests in it."""
    manifest, members = _image()
    child: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": _sha(manifest),
                             "size": len(manifest)}  # fmt: skip
    for _ in range(levels):
        doc = _index([
            dict(child, platform={"os": "linux", "architecture": f"a{i}"}) for i in range(width)
        ])  # fmt: skip
        members.append(_blob(doc))
        child = {"mediaType": OCI_INDEX, "digest": _sha(doc), "size": len(doc)}
    top = dict(child, annotations={REF: "evil/dag:1"})
    _write_tar(path, [LAYOUT, ("index.json", _index([top])), *members])
    return levels + 1


@pytest.mark.timeout(120)
def test_a_deep_dag_of_indexes_is_refused_after_a_few_reads(
    tmp_path: Path, manifest_reads: list[str]
) -> None:
    bundle = tmp_path / "dag.tar"
    _dag(bundle, levels=40, width=2)  # 2**40 paths
    with pytest.raises(BundleInvalidError, match="nest deeper than 4"):
        read_bundle(str(bundle))
    report = verify_bundle(str(bundle))
    assert not report.ok and any("nest deeper than 4" in str(p) for p in report.problems)
    store = open_store(f"memory://dag-{tmp_path.name}")
    batch = import_bundle(str(bundle), store=store)
    assert not batch.ok
    assert "nest deeper" in str(batch.outcomes[0].error)
    with pytest.raises(NotFoundError):
        store.resolve("evil/dag", "1")
    # ls, verify, the base check and the engine's plan each stop at the fifth index: a
    # handful of reads, not 2**40
    assert len(manifest_reads) <= 4 * 6, len(manifest_reads)


@pytest.mark.timeout(120)
def test_a_wide_dag_of_indexes_reads_each_manifest_once(
    tmp_path: Path, manifest_reads: list[str]
) -> None:
    bundle = tmp_path / "wide.tar"
    count = _dag(bundle, levels=3, width=300)  # 300**3 paths to the one manifest

    info = read_bundle(str(bundle))
    assert [i.ref_name for i in info.images] == ["evil/dag:1"]
    assert len(manifest_reads) == count  # each manifest read once
    manifest_reads.clear()

    report = verify_bundle(str(bundle))
    assert report.ok, report.problems
    assert len(manifest_reads) == count
    manifest_reads.clear()

    store = open_store(f"memory://wide-{tmp_path.name}")
    batch = import_bundle(str(bundle), store=store)
    assert batch.ok, [o.error for o in batch.outcomes]
    assert store.resolve("evil/dag", "1") == info.images[0].digest
    # the base check walks once, the engine's plan once, and the sink may read back the
    # top: a small multiple of the manifests, not 300**3
    assert len(manifest_reads) <= 3 * count, len(manifest_reads)


# -- 7: a bundle manifest that lies -----------------------------------------------------------


def _honest(tmp_path: Path) -> tuple[Path, str]:
    """A bundle regstore wrote of ``evil/backdoor:latest``; its manifest digest."""
    source = open_store(f"memory://honest-{tmp_path.name}")
    built = build_image(layers=1, layer_size=1000, seed=7, media="oci")
    put_image(source, "evil/backdoor", "latest", built)
    path = tmp_path / "honest.tar"
    create_bundle(str(path), [StoreImage(source, "evil/backdoor", "latest")])
    return path, built.manifest_digest


def _rewrite(src: Path, out: Path, member: str, change: Any) -> None:
    """Copy the tar ``src`` to ``out`` with ``member``'s bytes replaced by ``change(bytes)``."""
    with tarfile.open(src) as tin, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin.getmembers():
            if not info.isreg():
                tout.addfile(info)
                continue
            handle = tin.extractfile(info)
            assert handle is not None
            data = handle.read()
            if info.name == member:
                data = change(data)
            _add(tout, info.name, data)


def test_a_bundle_manifest_naming_other_images_is_refused(tmp_path: Path) -> None:
    honest, digest = _honest(tmp_path)

    def lie(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["images"][0].update(name="library/alpine", tag="3.19")
        return json.dumps(doc).encode()

    lying = tmp_path / "lie.tar"
    _rewrite(honest, lying, "regstore-bundle.json", lie)
    with pytest.raises(BundleInvalidError, match=r"library/alpine:3\.19"):
        read_bundle(str(lying))
    report = verify_bundle(str(lying))
    assert any("evil/backdoor:latest" in str(p) for p in report.problems), report.problems
    store = open_store(f"memory://lie-{tmp_path.name}")
    with pytest.raises(BundleInvalidError, match="inconsistent"):
        import_bundle(str(lying), store=store)
    with pytest.raises(NotFoundError):
        store.resolve("evil/backdoor", "latest")
    # the honest one passes all three
    assert read_bundle(str(honest)).images[0].digest == digest
    assert verify_bundle(str(honest)).ok


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("size", 1234, "carries 1234 bytes"),
        ("carried", [], "carries 0 blob"),
        ("id", "sha256:" + "0" * 64, "has the id sha256:000"),
        ("image-size", 1234, "is 1234 bytes"),
    ],
)
def test_a_bundle_manifest_stating_other_content_fails_verify(
    tmp_path: Path, field: str, value: Any, expected: str
) -> None:
    honest, _ = _honest(tmp_path)

    def lie(raw: bytes) -> bytes:
        doc = json.loads(raw)
        if field == "image-size":
            doc["images"][0]["size"] = value
        else:
            doc[field] = value
        return json.dumps(doc).encode()

    lying = tmp_path / "lie.tar"
    _rewrite(honest, lying, "regstore-bundle.json", lie)
    report = verify_bundle(str(lying))
    assert any(expected in str(p) for p in report.problems), report.problems
    if field != "image-size":  # what import checks: the images, members and id
        with pytest.raises(BundleInvalidError, match="inconsistent"):
            import_bundle(str(lying), store=open_store(f"memory://lie2-{tmp_path.name}"))


# -- 8: a delta naming a base repository the importer did not ----------------------------------


def test_a_delta_cannot_copy_a_repository_it_names_into_another(tmp_path: Path) -> None:
    """The confused deputy: a 'delta' carrying nothing, whose index names the manifest of
    ``secret/db`` as ``public/app:latest`` and whose base names ``secret/db``."""
    target = open_store(f"memory://deputy-{tmp_path.name}")
    secret = build_image(layers=1, layer_size=1000, seed=99, media="oci")
    put_image(target, "secret/db", "1", secret)
    top = {
        "mediaType": OCI_MANIFEST,
        "digest": secret.manifest_digest,
        "size": len(secret.manifest_bytes),
        "annotations": {REF: "public/app:latest"},
    }
    base = [{"id": "sha256:" + "2" * 64, "images": ["secret/db:1"]}]
    images = [{"name": "public/app", "tag": "latest", "digest": secret.manifest_digest,
               "mediaType": OCI_MANIFEST, "size": 1, "carried": 0}]  # fmt: skip
    from regstore.bundle.format import bundle_id

    doc = {"mediaType": "application/vnd.regstore.bundle.v1+json",
           "id": bundle_id([("public/app:latest", secret.manifest_digest)], [], [base[0]["id"]]),
           "images": images, "base": base, "carried": [], "size": 0,
           "references": [secret.manifest_digest]}  # fmt: skip
    bundle = tmp_path / "deputy.tar"
    _write_tar(
        bundle,
        [LAYOUT, ("regstore-bundle.json", json.dumps(doc).encode()),
         ("index.json", _index([top]))],
    )  # fmt: skip
    with pytest.raises(BundleBaseMissingError):
        import_bundle(str(bundle), store=target)
    with pytest.raises(NotFoundError):
        target.resolve("public/app", "latest")
    # named by the importer, the other repository serves
    assert import_bundle(str(bundle), store=target, base_repositories=["secret/db"]).ok
    assert str(target.resolve("public/app", "latest")) == secret.manifest_digest


# -- 9: manifests stating wrong layer sizes --------------------------------------------------


@pytest.mark.parametrize("stated", [10, 500])
def test_a_manifest_stating_a_wrong_layer_size_fails_verify_and_import(
    tmp_path: Path, stated: int
) -> None:
    manifest, members = _image(layer_size=stated)
    top = {"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest),
           "annotations": {REF: "lie/size:1"}}  # fmt: skip
    bundle = tmp_path / "size.tar"
    _write_tar(bundle, [LAYOUT, ("index.json", _index([top])), *members])
    report = verify_bundle(str(bundle))
    assert any(f"its manifest says {stated}" in str(p) for p in report.problems), report.problems
    store = open_store(f"memory://size-{tmp_path.name}")
    with pytest.raises(
        BundleInvalidError, match=f"is 110 bytes in the bundle, manifest .* says {stated}"
    ):
        import_bundle(str(bundle), store=store)


def test_a_member_reopened_at_its_end_is_a_final_verdict(tmp_path: Path) -> None:
    """What wants more bytes than a member holds gets no retry: rereading cannot help."""
    _, members = _image()
    bundle = tmp_path / "one.tar"
    _write_tar(bundle, [LAYOUT, *members])
    reader = BundleReader(str(bundle))
    layer = _sha(members[1][1])
    with pytest.raises(DigestMismatchError, match="fewer than its manifest states"):
        reader.opener(layer)(110)


# -- 16a: numbers and nesting out of range ----------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda raw: raw.replace(b'"size": ', b'"size": 1e400, "x": ', 1),
        lambda raw: (
            b'{"mediaType":"application/vnd.regstore.bundle.v1+json","images":'
            + b"[" * 100000
            + b"]" * 100000
            + b"}"
        ),
    ],
    ids=["overflow", "nesting"],
)
def test_a_malformed_bundle_manifest_is_bundle_invalid(tmp_path: Path, change: Any) -> None:
    honest, _ = _honest(tmp_path)
    bad = tmp_path / "bad.tar"
    _rewrite(honest, bad, "regstore-bundle.json", change)
    for reader in (read_bundle, verify_bundle):
        with pytest.raises(BundleInvalidError, match=r"regstore-bundle\.json is malformed"):
            reader(str(bad))
    with pytest.raises(BundleInvalidError, match=r"regstore-bundle\.json is malformed"):
        import_bundle(str(bad), store=open_store(f"memory://bad-{tmp_path.name}"))


@pytest.mark.parametrize(
    "where",
    ["index.json", "manifest"],
)
@pytest.mark.parametrize(
    "body",
    [
        b'{"schemaVersion":2,"mediaType":"'
        + OCI_INDEX.encode()
        + b'","manifests":[{"size":1e400}]}',
        b'{"schemaVersion":2,"x":' + b"[" * 100000 + b"]" * 100000 + b"}",
    ],
    ids=["overflow", "nesting"],
)
def test_malformed_index_and_manifests_are_clear_errors(
    tmp_path: Path, where: str, body: bytes
) -> None:
    _, members = _image()
    if where == "index.json":
        index = body
    else:
        members = [_blob(body)]
        index = _index([{"mediaType": OCI_MANIFEST, "digest": _sha(body), "size": len(body),
                         "annotations": {REF: "bad/body:1"}}])  # fmt: skip
    bundle = tmp_path / "bad.tar"
    _write_tar(bundle, [LAYOUT, ("index.json", index), *members])
    if where == "index.json":
        for reader in (read_bundle, verify_bundle):
            with pytest.raises(BundleInvalidError, match=r"index\.json"):
                reader(str(bundle))
    else:
        report = verify_bundle(str(bundle))
        lines = [str(p) for p in report.problems]
        assert any("bad/body:1" in line and "valid" in line for line in lines), lines


def test_a_member_shorter_than_stated_is_read_once_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the base check (the engine moving out of the bundle directly): the early end of
    a member is final, not a transient failure retried with pauses."""
    from regstore.bundle.place import BundleImage
    from regstore.engine.transfer import transfer_many

    manifest, members = _image(layer_size=500)
    top = {"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest),
           "annotations": {REF: "lie/size:1"}}  # fmt: skip
    bundle = tmp_path / "size.tar"
    _write_tar(bundle, [LAYOUT, ("index.json", _index([top])), *members])
    layer = _sha(members[1][1])
    opens: list[int] = []
    real = BundleReader.opener

    def counting(self: BundleReader, digest: str) -> Any:
        inner = real(self, digest)

        def open_at(offset: int) -> Any:
            if digest == layer:
                opens.append(offset)
            return inner(offset)

        return open_at

    monkeypatch.setattr(BundleReader, "opener", counting)
    opened = OpenBundle(BundleReader(str(bundle)))
    store = open_store(f"memory://short-{tmp_path.name}")
    source = BundleImage(opened, "lie/size", "1")
    batch = transfer_many([(cast("Image", source), StoreImage(store, "lie/size", "1"))])
    assert not batch.ok
    assert opens == [0], opens
    assert layer in str(batch.outcomes[0].error), batch.outcomes[0].error


# -- indexes that disagree on a child's media type ---------------------------------------------

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _disagreeing(path: Path) -> tuple[str, str, str]:
    """A top index over two indexes listing one image manifest, whose body has no
    ``mediaType``, as OCI (the first) and as Docker (the second): the digests of the image,
    the first index and the second."""
    image, members = _image()
    doc = json.loads(image)
    del doc["mediaType"]
    body = json.dumps(doc).encode()
    members[-1] = _blob(body)

    def index(media_type: str, arch: str) -> bytes:
        return _index([{"mediaType": media_type, "digest": _sha(body), "size": len(body),
                        "platform": {"os": "linux", "architecture": arch}}])  # fmt: skip

    first, second = index(OCI_MANIFEST, "amd64"), index(DOCKER_MANIFEST, "arm64")
    top = _index([{"mediaType": OCI_INDEX, "digest": _sha(d), "size": len(d)}
                  for d in (first, second)])  # fmt: skip
    entry = {"mediaType": OCI_INDEX, "digest": _sha(top), "size": len(top),
             "annotations": {REF: "split/type:1"}}  # fmt: skip
    _write_tar(path, [LAYOUT, ("index.json", _index([entry])), *members,
                      _blob(first), _blob(second), _blob(top)])  # fmt: skip
    return _sha(body), _sha(first), _sha(second)


@pytest.mark.timeout(120)
def test_an_import_types_a_child_by_the_first_index_whichever_is_read_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine reads sibling indexes at once (read-ahead): here the second index is always
    # read before the first. The child's type must still be the first index's: the import's
    # base check reads the bundle in walk order before anything moves, and that order decides.
    bundle = tmp_path / "split.tar"
    image, first, second = _disagreeing(bundle)
    moving = threading.Event()
    second_read = threading.Event()
    typed: list[str] = []
    real_manifest, real_transfer = OpenBundle.manifest, bundle_api.transfer_many

    def manifest(self: OpenBundle, digest: str, media_type: str | None = None) -> Any:
        if moving.is_set() and digest == first:
            second_read.wait(5)  # the second index (read ahead) first
            time.sleep(0.05)
        found = real_manifest(self, digest, media_type)
        if moving.is_set() and digest == second:
            second_read.set()
        if moving.is_set() and digest == image:
            typed.append(found.media_type)
        return found

    def transfer_many(*args: Any, **kwargs: Any) -> Any:
        moving.set()
        return real_transfer(*args, **kwargs)

    monkeypatch.setattr(OpenBundle, "manifest", manifest)
    monkeypatch.setattr(bundle_api, "transfer_many", transfer_many)
    store = open_store(f"memory://split-{tmp_path.name}")
    batch = import_bundle(str(bundle), store=store)
    assert batch.ok, [o.error for o in batch.outcomes]
    assert second_read.is_set(), "the engine never read the second index"
    assert typed and set(typed) == {OCI_MANIFEST}, typed


# -- one path under two spellings ---------------------------------------------------------------


def _append(path: Path, name: str, data: bytes) -> None:
    with tarfile.open(path, "a", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, name, data)


@pytest.mark.parametrize(
    "spelling",
    ["././index.json", "index.json/.", "blobs//sha256/{hex}", "./blobs/./sha256/{hex}",
     "blobs/sha256//{hex}"],
)  # fmt: skip
def test_a_member_named_twice_under_another_spelling_is_refused(
    tmp_path: Path, spelling: str
) -> None:
    """skopeo and GNU tar read the later copy of a path, whatever its spelling: the bundle
    must not verify as the earlier one."""
    bundle, digest = _honest(tmp_path)
    name = spelling.format(hex=digest.partition(":")[2])
    _append(bundle, name, _index([]) if "index" in name else b"garbage")
    with pytest.raises(BundleInvalidError, match="twice"):
        verify_bundle(str(bundle))
    with pytest.raises(BundleInvalidError, match="twice"):
        import_bundle(str(bundle), store=open_store(f"memory://spelt-{tmp_path.name}"))


@pytest.mark.parametrize(
    ("name", "why"),
    [("/index.json", "absolute"), ("../index.json", r"\.\."), ("blobs/../index.json", r"\.\.")],
)
def test_an_absolute_or_climbing_member_name_is_refused(
    tmp_path: Path, name: str, why: str
) -> None:
    bundle, _ = _honest(tmp_path)
    _append(bundle, name, _index([]))
    with pytest.raises(BundleInvalidError, match=why):
        verify_bundle(str(bundle))


# -- a member stating more bytes than any file can hold ------------------------------------------


def _overlong_tar(path: Path, stated: int) -> str:
    """An image (:func:`_image`) whose layer member (the last) states ``stated`` bytes but
    holds its few: a tar cut inside it, with a size past what a filesystem seeks to (2^44 on
    ext4, 2^63 anywhere), as its manifest states. The name of that member."""
    manifest, (config, layer, stored) = _image(layer_size=stated)
    top = {"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest),
           "annotations": {REF: "huge/app:1"}}  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [LAYOUT, ("index.json", _index([top])), config, stored]:
            _add(tar, name, data)
        end = tar.offset  # where the end-of-archive blocks begin
    info = tarfile.TarInfo(layer[0])
    info.size = stated
    path.write_bytes(buf.getvalue()[:end] + info.tobuf(format=tarfile.PAX_FORMAT) + layer[1])
    return layer[0]


@pytest.mark.parametrize("stated", [1 << 40, 1 << 45, 1 << 62, 1 << 63, 1 << 70])
def test_a_member_stating_a_size_beyond_any_file_is_a_cut_tar(tmp_path: Path, stated: int) -> None:
    bundle = tmp_path / "huge.tar"
    member = _overlong_tar(bundle, stated)
    layer = member.rsplit("/", 1)[-1]
    reader = BundleReader(str(bundle))
    assert reader.truncated == {member} and not reader.complete
    if stated >= 1 << 63:
        return  # no manifest can state it (ManifestInvalidError): the tar's index is enough
    info = read_bundle(str(bundle))
    assert [i.ref_name for i in info.images] == ["huge/app:1"]
    report = verify_bundle(str(bundle))
    assert not report.ok
    lines = [str(p) for p in report.problems]
    assert any(layer in line and "ends inside" in line for line in lines), lines
    store = open_store(f"memory://huge-{tmp_path.name}")
    batch = import_bundle(str(bundle), store=store)
    assert not batch.ok
    assert "ends inside" in str(batch.outcomes[0].error), batch.outcomes[0].error
    with pytest.raises(NotFoundError):
        store.manifest("huge/app", "1")
