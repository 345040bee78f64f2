"""What the conformance suite cannot see: multipart sizing and commits, staging hygiene,
leases across killed processes, discovery, URL options and error translation.

Every store test talks HTTP to moto's server (the ``moto_server``/``s3_bucket`` fixtures);
blobs stay in the tens of MiB (moto copies whole objects on every request).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regstore.plugins
from botocore.exceptions import ClientError
from regstore import ObjectStore, open_store
from regstore.errors import (
    BackendNotFoundError,
    DigestMismatchError,
    LayerLockedError,
    StoreError,
)
from regstore.hookspecs import BlobState
from regstore.manifest import Manifest
from regstore.testing.builders import OCI_MANIFEST, build_image
from tests.support.fixtures import S3Bucket

from regstore_s3.parts import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
    choose_part_size,
    derive_part_size,
    growing_part_size,
    parse_size,
)

CHILD = Path(__file__).with_name("s3_child.py")


def _blob(size: int, seed: int) -> tuple[bytes, str]:
    data = random.Random(seed).randbytes(size)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _keys(bucket: S3Bucket, moto_client: Any, prefix: str = "") -> list[str]:
    pages = moto_client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket.bucket, Prefix=prefix
    )
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@pytest.fixture
def moto_client(moto_server: Any) -> Any:
    return moto_server.client()


def _write(store: ObjectStore, data: bytes, digest: str, chunk: int = 1024 * 1024) -> None:
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(writer.current_size, len(data), chunk):
        writer.write(data[start : start + chunk])
    writer.commit()


def _stored_and_clean(
    store: ObjectStore, s3_bucket: S3Bucket, moto_client: Any, prefix: str, digest: str, data: bytes
) -> None:
    """The blob reads back as ``data``, and its write left nothing: no staging under the
    store's ``_regstore/``, no multipart upload."""
    with store.layer(digest).reader() as reader:
        assert reader.read() == data
    assert _keys(s3_bucket, moto_client, f"{prefix}/_regstore/") == []
    assert _uploads(s3_bucket, moto_client) == []


# -- part sizes (no S3 needed) ---------------------------------------------------------------


def test_derived_part_size_fits_5_tib_in_10000_parts() -> None:
    size = derive_part_size(MAX_OBJECT_SIZE)
    assert MIN_PART_SIZE <= size <= MAX_PART_SIZE
    assert size % MiB == 0
    assert -(-MAX_OBJECT_SIZE // size) <= MAX_PARTS
    assert size == 525 * MiB  # the smallest whole MiB that does it: memory stays small
    assert -(-MAX_OBJECT_SIZE // (size - MiB)) > MAX_PARTS


@pytest.mark.parametrize("blob_size", [0, 1, MIN_PART_SIZE, 10 * MiB, 48 * 1024**3])
def test_small_blobs_use_the_5_mib_minimum(blob_size: int) -> None:
    assert derive_part_size(blob_size) == MIN_PART_SIZE


@pytest.mark.parametrize("blob_size", [49 * 1024**3, 10**12, 3 * 1024**4, MAX_OBJECT_SIZE])
def test_derived_part_size_always_fits(blob_size: int) -> None:
    size = derive_part_size(blob_size)
    assert MIN_PART_SIZE <= size <= MAX_PART_SIZE
    assert -(-blob_size // size) <= MAX_PARTS


def test_blobs_over_5_tib_are_refused() -> None:
    with pytest.raises(StoreError, match="5 TiB"):
        derive_part_size(MAX_OBJECT_SIZE + 1)


def test_growing_parts_fit_5_tib_when_the_size_is_unknown() -> None:
    staged, parts, largest = 0, 0, 0
    while staged < MAX_OBJECT_SIZE:
        size = growing_part_size(staged)
        largest = max(largest, size)
        staged += size
        parts += 1
    assert parts <= MAX_PARTS
    assert growing_part_size(0) == MIN_PART_SIZE
    assert largest <= MAX_PART_SIZE


def test_explicit_part_size_is_respected() -> None:
    assert choose_part_size(12 * MiB, 8 * MiB) == 8 * MiB
    assert choose_part_size(None, 8 * MiB) == 8 * MiB
    assert choose_part_size(MAX_OBJECT_SIZE, 1024 * MiB) == 1024 * MiB
    # ... unless the blob would need more than 10,000 parts of it
    assert choose_part_size(MAX_OBJECT_SIZE, 8 * MiB) == derive_part_size(MAX_OBJECT_SIZE)


def test_parse_size() -> None:
    assert parse_size(5242880) == parse_size("5242880") == parse_size("5MiB") == 5 * MiB
    assert parse_size("64M") == 64 * MiB
    assert parse_size("1GiB") == 1024 * MiB
    with pytest.raises(ValueError):
        parse_size("lots")


def test_option_errors_are_store_errors() -> None:
    with pytest.raises(StoreError, match="unknown option"):
        open_store("s3://bucket/prefix", colour="blue")
    with pytest.raises(StoreError, match="part_size"):
        open_store("s3://bucket/prefix", part_size="1MiB")
    with pytest.raises(StoreError, match="bucket"):
        open_store("s3://Not_A_Bucket/prefix")
    with pytest.raises(StoreError, match="layout"):
        open_store("s3://bucket/prefix", layout="zip")
    with pytest.raises(StoreError, match="key and secret"):
        open_store("s3://bucket/prefix", key="only-a-key")


# -- discovery and URLs ----------------------------------------------------------------------


def test_plugin_is_listed_with_its_distribution() -> None:
    regstore.plugins.reset_plugin_manager()
    info = regstore.plugins.backends()["s3"]
    assert info.distribution == "regstore-s3"
    assert info.entry_point == "regstore_s3"
    assert info.version


def test_s3_without_the_plugin_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSTORE_BLOCK_PLUGINS", "s3")
    regstore.plugins.reset_plugin_manager()
    try:
        with pytest.raises(BackendNotFoundError, match="pip install regstore-s3"):
            open_store("s3://bucket/prefix")
    finally:
        monkeypatch.delenv("REGSTORE_BLOCK_PLUGINS")
        regstore.plugins.reset_plugin_manager()


def test_url_query_options_open_an_oci_store(
    s3_url_factory: Callable[..., str], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    url = s3_url_factory("oci-store", layout="oci", part_size="5MiB")
    assert "endpoint_url=" in url and "layout=oci" in url
    store = open_store(url)
    try:
        described = store.describe()
        assert described["backend"] == "s3"
        assert described["layout"] == "oci"
        assert described["bucket"] == s3_bucket.bucket
        assert described["part_size"] == 5 * MiB
        assert "secret" not in json.dumps({k: v for k, v in described.items() if k != "url"})
        image = build_image(layers=1, layer_size=2000, seed=7, media="oci")
        for digest, data in image.blobs.items():
            _write(store, data, digest)
        store.write_manifest(
            "library/demo", "v1", Manifest.parse(image.manifest_bytes, OCI_MANIFEST)
        )
        assert store.tags("library/demo") == ["v1"]
    finally:
        store.close()
    keys = _keys(s3_bucket, moto_client, "oci-store/")
    assert "oci-store/oci-layout" in keys and "oci-store/index.json" in keys
    assert f"oci-store/blobs/sha256/{image.manifest_digest.split(':')[1]}" in keys
    assert not [k for k in keys if k.startswith("oci-store/_regstore/")]


def test_a_declared_size_derives_the_part_size(
    s3_store_factory: Callable[..., ObjectStore],
) -> None:
    store = s3_store_factory("hint")
    _, digest = _blob(10, seed=10)
    handle = store.backend.regstore_store_blob_writer(digest=digest)  # type: ignore[attr-defined]
    try:
        assert handle.part_size == MIN_PART_SIZE  # nothing declared, nothing staged yet
        handle.set_size(100 * 1024**3)  # what a facade forwarding set_size() tells it
        assert handle.part_size == derive_part_size(100 * 1024**3) == 11 * MiB
        handle.set_size(MAX_OBJECT_SIZE)
        assert handle.part_size == 525 * MiB
    finally:
        handle.discard()


def test_a_declared_blob_of_one_part_is_one_put(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("onepart")
    data, digest = _blob(5 * MiB, seed=11)  # exactly one minimum part
    handle = store.backend.regstore_store_blob_writer(digest=digest)  # type: ignore[attr-defined]
    handle.set_size(len(data))
    for start in range(0, len(data), 1024 * 1024):
        handle.write(data[start : start + 1024 * 1024])
    assert _keys(s3_bucket, moto_client, "onepart/_regstore/uploads/") == []  # still in memory
    handle.commit(len(data))
    assert _keys(s3_bucket, moto_client, "onepart/_regstore/") == []
    with store.layer(digest).reader() as reader:
        assert reader.read() == data


# -- multipart commits and staging hygiene ---------------------------------------------------


def _started(store: ObjectStore, data: bytes, digest: str, upto: int) -> Any:
    """A writer of ``data`` (its size declared) given its first ``upto`` bytes, 1 MiB a write."""
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(0, upto, MiB):
        writer.write(data[start : min(start + MiB, upto)])
    return writer


def test_multipart_blob_commits_and_reads_back_exactly(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("mp", part_size="5MiB", staging="parts")
    data, digest = _blob(12 * MiB + 4321, seed=1)
    writer = _started(store, data, digest, len(data))
    staged = [k for k in _keys(s3_bucket, moto_client, "mp/_regstore/uploads/")]
    assert [k.rsplit("/", 1)[1] for k in staged] == ["part-00001", "part-00002"]
    writer.commit()
    key = f"mp/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
    head = moto_client.head_object(Bucket=s3_bucket.bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), "not completed as a 3-part upload"
    with store.layer(digest).reader() as reader:
        assert reader.size == len(data)
        assert hashlib.sha256(b"".join(reader.chunks())).hexdigest() == digest[7:]
    with store.layer(digest).reader(offset=len(data) - 10) as reader:
        assert reader.read() == data[-10:]
    assert _keys(s3_bucket, moto_client, "mp/_regstore/") == []
    assert moto_client.list_multipart_uploads(Bucket=s3_bucket.bucket).get("Uploads", []) == []


def _uploads(bucket: S3Bucket, moto_client: Any) -> list[dict[str, Any]]:
    return list(moto_client.list_multipart_uploads(Bucket=bucket.bucket).get("Uploads", []))


def _blob_key(prefix: str, digest: str) -> str:
    return f"{prefix}/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"


@pytest.mark.parametrize("staging", ["parts", "direct"])
def test_a_multipart_commit_aborts_a_stray_upload_to_its_key(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    staging: str,
) -> None:
    """A CreateMultipartUpload retried after a read timeout (a stalled server) can leave a
    second, empty upload to the blob's key: the writer that completes its own upload aborts
    it, not only a writer that resumed another's."""
    prefix = f"stray-{staging}"
    store = s3_store_factory(prefix, part_size="5MiB", staging=staging)
    data, digest = _blob(12 * MiB + 17, seed=12)
    stray = moto_client.create_multipart_upload(
        Bucket=s3_bucket.bucket, Key=_blob_key(prefix, digest)
    )["UploadId"]
    writer = _started(store, data, digest, len(data))
    assert writer.commit() == digest
    assert stray not in {u["UploadId"] for u in _uploads(s3_bucket, moto_client)}
    assert _uploads(s3_bucket, moto_client) == []
    with store.layer(digest).reader() as reader:
        assert hashlib.sha256(reader.read()).hexdigest() == digest[7:]


def test_parts_are_copied_into_the_final_upload_while_the_blob_is_written(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("ahead", part_size="5MiB", staging="parts")
    data, digest = _blob(16 * MiB + 99, seed=11)
    writer = _started(store, data, digest, 15 * MiB)  # three full parts staged, not committed
    (upload,) = _uploads(s3_bucket, moto_client)
    assert upload["Key"] == _blob_key("ahead", digest)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = moto_client.list_parts(
            Bucket=s3_bucket.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        copied = [part["PartNumber"] for part in listed.get("Parts", [])]
        if len(copied) >= 2:
            break
        time.sleep(0.05)
    # parts 1 and 2 are copied as soon as part 2 is staged (part 3 too, unless both copies
    # were still running when it was)
    assert copied[:2] == [1, 2], "the full parts were not copied before the commit"
    with pytest.raises(ClientError):  # not visible yet
        moto_client.head_object(Bucket=s3_bucket.bucket, Key=upload["Key"])
    writer.write(data[15 * MiB :])
    writer.commit()
    head = moto_client.head_object(Bucket=s3_bucket.bucket, Key=upload["Key"])
    assert head["ETag"].strip('"').endswith("-4")
    with store.layer(digest).reader() as reader:
        assert hashlib.sha256(reader.read()).hexdigest() == digest[7:]
    assert _uploads(s3_bucket, moto_client) == []
    assert _keys(s3_bucket, moto_client, "ahead/_regstore/") == []


@pytest.mark.parametrize("how", ["close", "discard"])
def test_a_writer_that_stops_aborts_its_upload(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    how: str,
) -> None:
    store = s3_store_factory(how, part_size="5MiB", staging="parts")
    data, digest = _blob(13 * MiB, seed=12)
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    writer.write(data[: 11 * MiB])  # two full parts: their copies are under way
    assert len(_uploads(s3_bucket, moto_client)) == 1
    getattr(writer, how)()
    assert _uploads(s3_bucket, moto_client) == []
    assert store.blob_status(digest).state is not BlobState.COMPLETE
    if how == "discard":
        assert _keys(s3_bucket, moto_client, f"{how}/") == []
        assert store.layer(digest).writer().current_size == 0
    else:  # every written byte stays staged, and the next writer finishes the blob
        assert store.blob_status(digest).current_size == 11 * MiB
        _write(store, data, digest)
        with store.layer(digest).reader() as reader:
            assert reader.read() == data
        assert _uploads(s3_bucket, moto_client) == []


@pytest.mark.parametrize("size", [3000, 11 * MiB], ids=["in-memory", "multipart"])
def test_digest_mismatch_leaves_nothing(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    size: int,
) -> None:
    store = s3_store_factory("bad", part_size="5MiB")
    data, digest = _blob(size, seed=2)
    writer = store.layer(digest).writer()
    writer.write(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DigestMismatchError):
        writer.commit(size)
    assert store.blob_status(digest).state is BlobState.ABSENT
    assert _keys(s3_bucket, moto_client, "bad/") == []
    assert moto_client.list_multipart_uploads(Bucket=s3_bucket.bucket).get("Uploads", []) == []
    _write(store, data, digest)  # writable again, and right this time
    assert store.blob_status(digest).size == size


def test_close_keeps_a_short_tail_that_the_next_writer_takes_back(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("tail", part_size="5MiB", staging="parts")
    data, digest = _blob(13 * MiB, seed=3)
    cut = 7 * MiB  # one full part and a 2 MiB tail
    writer = store.layer(digest).writer()
    writer.write(data[:cut])
    writer.close()
    assert store.blob_status(digest).current_size == cut
    staged = _keys(s3_bucket, moto_client, "tail/_regstore/uploads/")
    assert [k.rsplit("/", 1)[1] for k in staged] == ["part-00001", "part-00002"]
    writer = store.layer(digest).writer()
    assert writer.current_size == cut
    writer.write(data[cut:])
    writer.commit(len(data))
    _stored_and_clean(store, s3_bucket, moto_client, "tail", digest, data)


def test_commit_refuses_a_part_changed_behind_the_writer(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("tamper", part_size="5MiB", staging="parts")
    data, digest = _blob(11 * MiB, seed=4)
    writer = store.layer(digest).writer()
    writer.write(data)
    part = _keys(s3_bucket, moto_client, "tamper/_regstore/uploads/")[0]
    moto_client.put_object(Bucket=s3_bucket.bucket, Key=part, Body=b"x" * (5 * MiB))
    with pytest.raises(StoreError):
        writer.commit(len(data))
    assert store.blob_status(digest).state is not BlobState.COMPLETE


# -- direct writes (staging=direct, the default) ---------------------------------------------


def _record_uploaded_parts(monkeypatch: pytest.MonkeyPatch, *, copies: bool = False) -> list[int]:
    """The numbers of the parts sent with ``UploadPart`` from now on, in order. Unless
    ``copies``, no part object may be copied meanwhile (that is the other way of writing)."""
    from regstore_s3.client import S3Objects

    numbers: list[int] = []
    upload_part = S3Objects.upload_part

    def recording(self: S3Objects, key: str, upload_id: str, number: int, body: Any) -> str:
        numbers.append(number)
        return upload_part(self, key, upload_id, number, body)

    def no_copies(self: S3Objects, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("a direct write copied a part")

    monkeypatch.setattr(S3Objects, "upload_part", recording)
    if not copies:
        monkeypatch.setattr(S3Objects, "copy_part", no_copies)
    return numbers


def _record(bucket: S3Bucket, moto_client: Any, prefix: str, digest: str) -> dict[str, Any]:
    key = f"{prefix}/_regstore/uploads/sha256/{digest[7:]}/upload"
    body = moto_client.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()
    return dict(json.loads(body))


def test_a_direct_write_sends_its_parts_straight_into_the_final_upload(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _record_uploaded_parts(monkeypatch)
    store = s3_store_factory("direct", part_size="5MiB")
    data, digest = _blob(12 * MiB + 4321, seed=21)
    writer = _started(store, data, digest, len(data))
    # two full parts sent; the short last one waits for the commit
    assert sent == [1, 2]
    staged = _keys(s3_bucket, moto_client, "direct/_regstore/uploads/")
    assert [k.rsplit("/", 1)[1] for k in staged] == ["upload"]  # the record; no part objects
    (upload,) = _uploads(s3_bucket, moto_client)
    assert upload["Key"] == _blob_key("direct", digest)
    assert _record(s3_bucket, moto_client, "direct", digest)["upload_id"] == upload["UploadId"]
    with pytest.raises(ClientError):  # not visible before the commit
        moto_client.head_object(Bucket=s3_bucket.bucket, Key=upload["Key"])
    writer.commit()
    assert sent == [1, 2, 3]
    head = moto_client.head_object(Bucket=s3_bucket.bucket, Key=upload["Key"])
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), "not completed as a 3-part upload"
    with store.layer(digest).reader() as reader:
        assert hashlib.sha256(b"".join(reader.chunks())).hexdigest() == digest[7:]
    assert _keys(s3_bucket, moto_client, "direct/_regstore/") == []
    assert _uploads(s3_bucket, moto_client) == []


def test_a_closed_direct_write_is_sent_again_and_uploaded_only_where_missing(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _record_uploaded_parts(monkeypatch)
    store = s3_store_factory("again", part_size="5MiB")
    data, digest = _blob(23 * MiB, seed=22)
    writer = _started(store, data, digest, 17 * MiB)  # parts 1-3 sent, 2 MiB buffered
    writer.close()
    assert sent == [1, 2, 3]
    record = _record(s3_bucket, moto_client, "again", digest)
    assert [part[:2] for part in record["parts"]] == [[n, 5 * MiB] for n in (1, 2, 3)]
    assert len(_uploads(s3_bucket, moto_client)) == 1  # kept for the next writer
    assert store.blob_status(digest).current_size == 0
    writer = store.layer(digest).writer()
    assert writer.current_size == 0  # the parts cannot be re-read: the bytes come again
    writer.set_size(len(data))
    for start in range(0, len(data), MiB):
        writer.write(data[start : start + MiB])
    writer.commit()
    assert sent == [1, 2, 3, 4, 5]  # the first writer's three parts were kept as they were
    _stored_and_clean(store, s3_bucket, moto_client, "again", digest, data)


def test_a_resent_part_whose_bytes_differ_is_uploaded_again(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _record_uploaded_parts(monkeypatch)
    store = s3_store_factory("differ", part_size="5MiB")
    data, digest = _blob(13 * MiB, seed=23)
    # A first write got a damaged first part (a bad source, say) and stopped before its
    # digest could be checked: its upload holds those bytes under part 1.
    damaged = bytes([data[0] ^ 1]) + data[1:]
    writer = _started(store, damaged, digest, 11 * MiB)
    writer.close()
    assert sent == [1, 2]
    _write(store, data, digest)
    assert sent == [1, 2, 1, 3]  # part 1 replaced, part 2 kept, part 3 new
    with store.layer(digest).reader() as reader:
        assert reader.read() == data
    assert _uploads(s3_bucket, moto_client) == []


def test_a_direct_write_closed_within_its_first_part_keeps_a_tail(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("dtail", part_size="5MiB")
    data, digest = _blob(13 * MiB, seed=24)
    cut = 3 * MiB + 17
    writer = _started(store, data, digest, cut)
    writer.close()
    staged = _keys(s3_bucket, moto_client, "dtail/_regstore/uploads/")
    assert [k.rsplit("/", 1)[1] for k in staged] == ["tail"]
    assert _uploads(s3_bucket, moto_client) == []  # no part was full: no upload yet
    assert store.blob_status(digest).current_size == cut
    writer = store.layer(digest).writer()
    assert writer.current_size == cut  # the tail is re-read and re-hashed
    writer.write(data[cut:])
    writer.commit(len(data))
    _stored_and_clean(store, s3_bucket, moto_client, "dtail", digest, data)


def test_a_direct_commit_refuses_a_part_replaced_behind_the_writer(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = s3_store_factory("dtamper", part_size="5MiB")
    data, digest = _blob(11 * MiB, seed=25)
    writer = store.layer(digest).writer()
    writer.write(data)  # parts 1 and 2 sent, 1 MiB buffered
    (upload,) = _uploads(s3_bucket, moto_client)
    moto_client.upload_part(
        Bucket=s3_bucket.bucket,
        Key=upload["Key"],
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * (5 * MiB),
    )
    with pytest.raises(StoreError):
        writer.commit(len(data))
    assert store.blob_status(digest).state is not BlobState.COMPLETE
    with pytest.raises(ClientError):
        moto_client.head_object(Bucket=s3_bucket.bucket, Key=upload["Key"])
    # the failed commit recorded its three parts; part 1 no longer has its ETag in the upload
    record = _record(s3_bucket, moto_client, "dtamper", digest)
    assert [part[0] for part in record["parts"]] == [1, 2, 3]
    sent = _record_uploaded_parts(monkeypatch)
    _write(store, data, digest)  # a re-run: part 1 uploaded again, parts 2 and 3 kept
    assert sent == [1]
    _stored_and_clean(store, s3_bucket, moto_client, "dtamper", digest, data)


def test_a_tail_taken_back_is_deleted_once_its_bytes_are_in_an_upload(
    s3_store_factory: Callable[..., ObjectStore], s3_bucket: S3Bucket, moto_client: Any
) -> None:
    store = s3_store_factory("dtail2", part_size="5MiB")
    data, digest = _blob(13 * MiB, seed=28)
    writer = _started(store, data, digest, 2 * MiB)
    writer.close()  # a tail
    writer = store.layer(digest).writer()
    assert writer.current_size == 2 * MiB
    writer.write(data[2 * MiB : 7 * MiB])  # part 1 sent: the upload starts
    staged = _keys(s3_bucket, moto_client, "dtail2/_regstore/uploads/")
    assert [k.rsplit("/", 1)[1] for k in staged] == ["upload"]
    writer.close()
    # the upload is where a later writer resumes (from 0), and the status agrees
    assert store.blob_status(digest).current_size == 0
    writer = store.layer(digest).writer()
    assert writer.current_size == 0
    writer.discard()
    assert _uploads(s3_bucket, moto_client) == []  # discard aborts the upload it took over
    assert _keys(s3_bucket, moto_client, "dtail2/") == []


@pytest.mark.parametrize("damage", ["upload-gone", "record-damaged"])
def test_a_record_that_cannot_be_taken_up_starts_over(
    s3_store_factory: Callable[..., ObjectStore],
    s3_bucket: S3Bucket,
    moto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    sent = _record_uploaded_parts(monkeypatch)
    prefix = f"d{damage[:6]}"
    store = s3_store_factory(prefix, part_size="5MiB")
    data, digest = _blob(11 * MiB, seed=26)
    writer = _started(store, data, digest, 10 * MiB)
    writer.close()
    if damage == "upload-gone":
        (upload,) = _uploads(s3_bucket, moto_client)
        moto_client.abort_multipart_upload(
            Bucket=s3_bucket.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    else:
        key = f"{prefix}/_regstore/uploads/sha256/{digest[7:]}/upload"
        moto_client.put_object(Bucket=s3_bucket.bucket, Key=key, Body=b"{not json")
    _write(store, data, digest)
    assert sent == [1, 2, 1, 2, 3]  # nothing to keep: a new upload, every part sent
    # (no upload left: an orphaned one was aborted too)
    _stored_and_clean(store, s3_bucket, moto_client, prefix, digest, data)


def test_the_staging_option_is_checked(s3_url_factory: Callable[..., str]) -> None:
    with pytest.raises(StoreError, match="staging"):
        open_store(s3_url_factory(staging="copy"))


# -- leases across processes -----------------------------------------------------------------


def _child(url: str, size: int, seed: int, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), url, str(size), str(seed), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), f"child said {line!r} (exit {proc.poll()})"
    return line


@pytest.mark.parametrize("staging", ["parts", "direct"])
def test_killed_writer_lease_expires_and_a_later_writer_resumes(
    s3_url_factory: Callable[..., str],
    s3_bucket: S3Bucket,
    moto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    staging: str,
) -> None:
    url = s3_url_factory("killed", part_size="5MiB", lease="2", staging=staging)
    size = 12 * MiB
    data, digest = _blob(size, seed=5)
    # two parts staged, one MiB still buffered; a direct write's two parts are in its upload,
    # where they cannot be re-read: its bytes are sent again from the start
    resumes_at = 10 * MiB if staging == "parts" else 0
    proc = _child(url, size, 5, "kill")
    try:
        line = _ready(proc)
        assert int(line.split()[1]) == resumes_at
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    sent = _record_uploaded_parts(monkeypatch, copies=staging == "parts")
    store = open_store(url)
    try:
        status = store.blob_status(digest)
        assert status.state is BlobState.WRITING  # the dead writer's lease still runs
        # it had begun its final upload (copies, or the parts themselves), and left it behind
        assert [u["Key"] for u in _uploads(s3_bucket, moto_client)] == [_blob_key("killed", digest)]
        with pytest.raises(LayerLockedError):
            store.layer(digest).writer()
        deadline = time.monotonic() + 15
        while status.state is BlobState.WRITING and time.monotonic() < deadline:
            time.sleep(0.25)
            status = store.blob_status(digest)
        if staging == "parts":
            assert status.state is BlobState.PARTIAL, "the stale lease was never recovered"
        else:  # an upload's parts cannot be re-read: nothing to resume from but the start
            assert status.state is BlobState.ABSENT, "the stale lease was never recovered"
        assert status.current_size == resumes_at
        writer = store.layer(digest).writer()  # breaks the stale lock
        assert writer.current_size == resumes_at  # (parts: re-hashed by the facade)
        writer.set_size(size)
        writer.write(data[writer.current_size :])
        assert writer.commit() == digest
        with store.layer(digest).reader() as reader:
            assert hashlib.sha256(reader.read()).hexdigest() == digest[7:]
    finally:
        store.close()
    # parts: copied, never uploaded; direct: the two parts the dead writer sent (and
    # recorded) were not uploaded again
    assert sent == ([] if staging == "parts" else [3])
    assert _keys(s3_bucket, moto_client, "killed/_regstore/") == []
    assert _uploads(s3_bucket, moto_client) == []  # the resumed commit aborted the dead one's


@pytest.mark.parametrize("staging", ["parts", "direct"])
def test_a_writer_frozen_past_its_lease_learns_it_lost_the_blob_before_its_next_part(
    s3_url_factory: Callable[..., str],
    s3_bucket: S3Bucket,
    moto_client: Any,
    staging: str,
) -> None:
    """A writer stopped past its lease while another one took the blob over and committed
    it: thawed, it sent its next part into what the other's commit had discarded, and failed
    with that part's server error (moto: a 500) instead of the lost lease."""
    url = s3_url_factory(f"frozen-{staging}", part_size="5MiB", lease="2", staging=staging)
    size = 12 * MiB
    data, digest = _blob(size, seed=8)
    proc = _child(url, size, 8, "freeze")
    store = open_store(url)
    try:
        _ready(proc)
        proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 15
            while store.blob_status(digest).state is BlobState.WRITING:
                assert time.monotonic() < deadline, "the stopped writer's lease never ran out"
                time.sleep(0.25)
            writer = store.layer(digest).writer()  # breaks the stale lock
            writer.set_size(size)
            writer.write(data[writer.current_size :])
            assert writer.commit() == digest
        finally:
            proc.send_signal(signal.SIGCONT)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        said = proc.stdout.readline().strip()
        assert proc.wait(timeout=30) == 0
        assert said.startswith("failed LeaseLostError: "), said
        assert "taken over by another writer" in said
        with store.layer(digest).reader() as reader:  # the committed blob is untouched
            assert hashlib.sha256(reader.read()).hexdigest() == digest[7:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        store.close()
    # the thawed writer sent nothing more: no staged part, no upload left behind
    assert _keys(s3_bucket, moto_client, f"frozen-{staging}/_regstore/") == []
    assert _uploads(s3_bucket, moto_client) == []


def test_a_lease_held_by_another_process_excludes_writers(
    s3_url_factory: Callable[..., str],
) -> None:
    url = s3_url_factory("held")
    size = 4000
    _, digest = _blob(size, seed=6)
    proc = _child(url, size, 6, "hold")
    store = open_store(url)
    try:
        _ready(proc)
        with pytest.raises(LayerLockedError):
            store.layer(digest).writer()
        with pytest.raises(LayerLockedError):
            store.layer(digest).reader()
        assert store.blob_status(digest).state is BlobState.WRITING
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        assert proc.wait(timeout=20) == 0
        store.layer(digest).writer().discard()  # free now
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        store.close()


# -- errors are regstore errors --------------------------------------------------------------


def test_missing_bucket_is_a_store_error(s3_bucket: S3Bucket) -> None:
    store = open_store(
        "s3://no-such-bucket-regstore/x",
        endpoint_url=s3_bucket.endpoint_url,
        key="testing",
        secret="testing",
        region="us-east-1",
    )
    _, digest = _blob(10, seed=8)
    with pytest.raises(StoreError) as caught:
        store.layer(digest).writer().commit(0)
    assert caught.value.__cause__ is not None
    with pytest.raises(StoreError):
        store.tags("library/x")


def test_a_reading_command_on_a_missing_bucket_finds_no_store(s3_bucket: S3Bucket) -> None:
    """`ls` of a missing bucket said "check ... that it is writable" (a hint for writers);
    like an empty prefix (and Azure's missing container) it is no store at that URL."""
    from regstore.errors import StoreNotFoundError

    options = {"endpoint_url": s3_bucket.endpoint_url, "key": "testing", "secret": "testing"}
    with pytest.raises(StoreNotFoundError, match="no store at s3://no-such-bucket-regstore/x"):
        open_store("s3://no-such-bucket-regstore/x", must_exist=True, **options)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    url = f"s3://no-such-bucket-regstore/x?endpoint_url={s3_bucket.endpoint_url}"
    run = subprocess.run(
        [sys.executable, "-m", "regstore", "--store", url, "ls"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode != 0
    assert "no store at s3://no-such-bucket-regstore/x" in run.stderr
    assert "writable" not in run.stderr


def test_unreachable_endpoint_is_a_store_error() -> None:
    store = open_store(
        "s3://bucket/x",
        endpoint_url="http://127.0.0.1:9",
        key="testing",
        secret="testing",
        region="us-east-1",
        retries=0,
    )
    _, digest = _blob(10, seed=9)
    with pytest.raises(StoreError) as caught:
        store.blob_status(digest)
    assert caught.value.__cause__ is not None
    assert "botocore" in type(caught.value.__cause__).__module__ or isinstance(
        caught.value.__cause__, OSError
    )
