"""What the conformance suite cannot see: block staging and commits, resume from the blocks a
killed writer left, exclusion by leases across processes, housekeeping of uncommitted blocks,
discovery, URL options, and secrets that never show.

Every store test talks HTTP to Azurite (the ``azurite`` fixture); blobs stay in the tens of MiB.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import regstore.plugins
from regstore import Digest, ObjectStore, open_store
from regstore.errors import DigestMismatchError, LayerLockedError, StoreError
from regstore.hookspecs import BlobState
from regstore.manifest import Manifest
from regstore.testing import hold_writer, killed_writer
from regstore.testing.builders import OCI_MANIFEST, build_image
from tests.support.cli import put_image, run_cli

from azurite_server import ACCOUNT, ACCOUNT_KEY, AzuriteServer
from regstore_azure.blocks import (
    MAX_BLOCK_SIZE,
    MAX_BLOCKS,
    MIN_BLOCK_SIZE,
    MiB,
    block_id,
    block_number,
    block_size,
    usable_blocks,
)
from regstore_azure.client import AzureObjects

LEASE = 15  # Azure's shortest lease: how long a killed writer's lock outlives it


def _blob(size: int, seed: int) -> tuple[bytes, str]:
    data = random.Random(seed).randbytes(size)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _write(store: ObjectStore, data: bytes, digest: str, chunk: int = 1024 * 1024) -> None:
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(writer.current_size, len(data), chunk):
        writer.write(data[start : start + chunk])
    writer.commit()


def _names(
    azurite: AzuriteServer, container: str, prefix: str, *, uncommitted: bool = False
) -> list[str]:
    client = azurite.service().get_container_client(container)
    include = ["uncommittedblobs"] if uncommitted else None
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix, include=include))


def _blocks(azurite: AzuriteServer, container: str, name: str) -> tuple[list[Any], list[Any]]:
    blob = azurite.service().get_container_client(container).get_blob_client(name)
    committed, uncommitted = blob.get_block_list("all")
    return list(committed), list(uncommitted)


def _staging_name(prefix: str, digest: str) -> str:
    algorithm, encoded = digest.split(":")
    return f"{prefix}/_regstore/uploads/{algorithm}/{encoded}"


# -- block arithmetic (no Azurite needed) -------------------------------------------------------


def test_block_ids_are_numbered_and_of_one_length() -> None:
    ids = [block_id(n) for n in (0, 1, 49_999)]
    assert len({len(i) for i in ids}) == 1  # Azure requires one length per blob
    assert [block_number(i) for i in ids] == [0, 1, 49_999]
    assert block_number("Zm9v") is None  # "foo": not ours
    assert block_number("not base64!") is None
    with pytest.raises(ValueError):
        block_id(MAX_BLOCKS)


def test_block_sizes_grow_to_fit_100_tib_well_within_50000_blocks() -> None:
    staged, blocks = 0, 0
    while staged < 100 * 1024**4:
        size = block_size(staged)
        assert MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE
        staged += size
        blocks += 1
    assert blocks < 40_000  # room for the short tail block each interrupted write adds
    assert block_size(0) == block_size(1024**3) == 4 * MiB  # a 1 GiB layer: 4 MiB buffers
    assert block_size(10 * 1024**3) == 6 * MiB


def test_usable_blocks_continue_the_committed_ones_without_a_gap() -> None:
    committed = [(block_id(0), 5), (block_id(1), 7)]
    uncommitted = [(block_id(3), 1), (block_id(2), 4), ("Zm9v", 9)]
    found = usable_blocks(committed, uncommitted)
    assert [(b.number, b.size, b.committed) for b in found] == [
        (0, 5, True),
        (1, 7, True),
        (2, 4, False),
        (3, 1, False),
    ]
    assert usable_blocks([(block_id(1), 5)], []) == []  # not written by regstore
    assert [b.number for b in usable_blocks([], [(block_id(1), 3)])] == []  # a gap at 0


# -- options and discovery -------------------------------------------------------------------------


def test_option_errors_are_store_errors() -> None:
    with pytest.raises(StoreError, match="unknown option"):
        open_store("az://container/prefix?account_name=a", colour="blue")
    with pytest.raises(StoreError, match="container"):
        open_store("az://Not_A_Container/prefix?account_name=a")
    with pytest.raises(StoreError, match="layout"):
        open_store("az://container/prefix?account_name=a", layout="zip")
    with pytest.raises(StoreError, match="lease"):
        open_store("az://container/prefix?account_name=a", lease="5")


def test_a_store_without_an_account_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT",
                 "AZURE_STORAGE_ACCOUNT_NAME"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StoreError, match="account") as refused:
        open_store("az://container/prefix")
    assert "account_name" in (refused.value.hint or "")


def test_plugin_is_listed_with_its_distribution(tmp_path: Path) -> None:
    regstore.plugins.reset_plugin_manager()
    for scheme in ("az", "abfs"):
        info = regstore.plugins.backends()[scheme]
        assert info.distribution == "regstore-azure"
        assert info.entry_point == "regstore_azure"
        assert info.version
    listed = run_cli("plugins", home=tmp_path)
    assert listed.returncode == 0, str(listed)
    assert "regstore-azure" in listed.stdout and "az" in listed.stdout


def test_the_environments_connection_string_is_used(
    azurite: AzuriteServer, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    store = open_store(f"abfs://{azure_container}/from-env", layout="oci")
    try:
        data, digest = _blob(3000, seed=1)
        _write(store, data, digest)
        assert store.blob_status(digest).size == 3000
    finally:
        store.close()
    assert f"from-env/blobs/sha256/{digest[7:]}" in _names(azurite, azure_container, "from-env/")


def test_an_account_key_and_url_open_an_oci_store(
    azurite: AzuriteServer, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    url = (
        f"az://{azure_container}/oci-store?account_name={ACCOUNT}&account_url="
        f"{azurite.account_url}&layout=oci"
    )
    store = open_store(url, account_key=ACCOUNT_KEY)
    try:
        described = store.describe()
        assert described["backend"] == "azure"
        assert described["layout"] == "oci"
        assert described["container"] == azure_container
        assert ACCOUNT_KEY not in json.dumps(described) + repr(store)
        image = build_image(layers=1, layer_size=2000, seed=7, media="oci")
        for digest, data in image.blobs.items():
            _write(store, data, digest)
        store.write_manifest(
            "library/demo", "v1", Manifest.parse(image.manifest_bytes, OCI_MANIFEST)
        )
        assert store.tags("library/demo") == ["v1"]
    finally:
        store.close()
    names = _names(azurite, azure_container, "oci-store/", uncommitted=True)
    assert "oci-store/oci-layout" in names and "oci-store/index.json" in names
    assert not [n for n in names if n.startswith("oci-store/_regstore/")]


def test_a_sas_token_writes_and_copies_into_place(
    azurite: AzuriteServer, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    sas = generate_container_sas(
        ACCOUNT,
        azure_container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(
            read=True, add=True, create=True, write=True, delete=True, list=True
        ),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    store = open_store(
        f"az://{azure_container}/sas?account_url={azurite.account_url}", sas_token=sas
    )
    try:
        assert sas not in repr(store) + json.dumps(store.describe())
        data, digest = _blob(5 * MiB, seed=12)  # two blocks, then a copy whose source needs the SAS
        _write(store, data, digest)
        with store.layer(digest).reader() as reader:
            assert reader.read() == data
    finally:
        store.close()


def _sas(container: str, **allowed: bool) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        ACCOUNT,
        container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(**allowed),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )


def test_a_delete_the_sas_does_not_allow_is_a_one_line_store_error(
    azurite: AzuriteServer, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # adlfs's bulk delete raised RuntimeError("Failed to remove %s for %s", paths, error): no
    # RegstoreError, and Azure's multi-line message with request ids printed raw
    from regstore.engine.gc import delete_image

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    url = f"az://{azure_container}/nodelete?account_url={azurite.account_url}"
    everything = dict(read=True, add=True, create=True, write=True, list=True)
    image = build_image(seed=44, layers=1, layer_size=1024, media="oci")
    with open_store(url, sas_token=_sas(azure_container, delete=True, **everything)) as store:
        put_image(store, "team/app", "1", image)
    with (
        open_store(url, sas_token=_sas(azure_container, **everything)) as store,
        pytest.raises(StoreError) as info,
    ):
        delete_image(store, "team/app", "1")
    message = str(info.value)
    assert "AuthorizationPermissionMismatch" in message and "\n" not in message
    assert "%s" not in message
    with open_store(url, sas_token=_sas(azure_container, **everything)) as store:
        assert store.tags("team/app") == ["1"]  # nothing lost


def test_without_a_secret_the_default_azure_credential_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY",
                 "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    store = open_store("az://mirror/registry?account_name=someaccount")  # no request yet
    try:
        client = store.backend.objects.container  # type: ignore[attr-defined]
        assert type(client.credential).__name__ == "DefaultAzureCredential"
        assert client.url == "https://someaccount.blob.core.windows.net/mirror"
    finally:
        store.close()


# -- staging: Put Block, Put Block List, one copy into place ----------------------------------


def test_a_blob_is_staged_as_uncommitted_blocks_and_appears_only_whole(
    azure_store_factory: Callable[..., ObjectStore], azurite: AzuriteServer, azure_container: str
) -> None:
    store = azure_store_factory("staged")
    data, digest = _blob(10 * MiB + 123, seed=2)
    staging = _staging_name("staged", digest)
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    writer.write(data[: 9 * MiB])
    committed, uncommitted = _blocks(azurite, azure_container, staging)
    assert committed == [] and [b.size for b in uncommitted] == [4 * MiB, 4 * MiB]
    visible = _names(azurite, azure_container, "staged/")
    assert [n for n in visible if "/locks/" not in n] == []  # nothing visible, not even staging
    assert store.blob_status(digest).state is BlobState.WRITING
    writer.write(data[9 * MiB :])
    assert writer.commit() == digest
    final = f"staged/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
    assert _names(azurite, azure_container, "staged/", uncommitted=True) == [final]  # no lock
    with store.layer(digest).reader() as reader:
        assert reader.size == len(data)
        assert reader.read() == data
    with store.layer(digest).reader(offset=len(data) - 10) as reader:
        assert reader.read() == data[-10:]


@pytest.mark.parametrize("size", [3000, 9 * MiB], ids=["one-block", "blocks"])
def test_a_digest_mismatch_leaves_nothing(
    azure_store_factory: Callable[..., ObjectStore],
    azurite: AzuriteServer,
    azure_container: str,
    size: int,
) -> None:
    store = azure_store_factory("bad")
    data, digest = _blob(size, seed=3)
    writer = store.layer(digest).writer()
    writer.write(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DigestMismatchError):
        writer.commit(size)
    assert store.blob_status(digest).state is BlobState.ABSENT
    assert _names(azurite, azure_container, "bad/", uncommitted=True) == []
    _write(store, data, digest)  # writable again, and right this time
    assert store.blob_status(digest).size == size


def test_a_killed_writer_is_resumed_from_its_staged_blocks(
    azure_url_factory: Callable[..., str],
    azurite: AzuriteServer,
    azure_container: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = azure_url_factory("killed", lease=str(LEASE))
    data, digest = _blob(12 * MiB, seed=4)
    killed_writer(url, digest, data, staged=10 * MiB)  # two 4 MiB blocks staged, 2 MiB lost
    committed, uncommitted = _blocks(azurite, azure_container, _staging_name("killed", digest))
    assert committed == [] and [b.size for b in uncommitted] == [4 * MiB, 4 * MiB]

    sent: list[int] = []
    stage_block = AzureObjects.stage_block

    def counting(self: AzureObjects, name: str, identifier: str, block: Any) -> None:
        sent.append(len(block))
        stage_block(self, name, identifier, block)

    monkeypatch.setattr(AzureObjects, "stage_block", counting)
    store = open_store(url)
    try:
        status = store.blob_status(digest)
        # the dead writer's lease runs until it expires (unless a very busy machine took
        # longer than the lease to get here)
        assert status.state in (BlobState.WRITING, BlobState.PARTIAL)
        deadline = time.monotonic() + LEASE + 30
        while status.state is BlobState.WRITING and time.monotonic() < deadline:
            time.sleep(0.5)
            status = store.blob_status(digest)
        assert status.state is BlobState.PARTIAL, "the dead writer's lease never expired"
        assert status.current_size == 8 * MiB
        writer = store.layer(digest).writer()  # the lease expired: the blob is free
        assert writer.current_size == 8 * MiB  # re-hashed from the resumed blocks
        writer.set_size(len(data))
        writer.write(data[writer.current_size :])
        assert writer.commit() == digest
        with store.layer(digest).reader() as reader:
            assert hashlib.sha256(reader.read()).hexdigest() == digest[7:]
    finally:
        store.close()
    assert sum(sent) == 4 * MiB  # only what the killed writer had not staged was uploaded
    assert _names(azurite, azure_container, "killed/_regstore/uploads/", uncommitted=True) == []


def test_two_writers_of_one_blob_one_wins_and_the_other_waits(
    azure_url_factory: Callable[..., str],
) -> None:
    url = azure_url_factory("two")
    data, digest = _blob(6 * MiB, seed=5)
    store = open_store(url)
    child = hold_writer(url, digest, data)  # the first writer, in another process
    try:
        with pytest.raises(LayerLockedError):
            store.layer(digest).writer()  # the second is refused while the first holds it
        with pytest.raises(LayerLockedError):
            store.layer(digest).reader()
        waited: list[Any] = []
        waiter = threading.Thread(
            target=lambda: waited.append(store.layer(digest).wait(timeout=120))
        )
        waiter.start()
        child.send("commit")
        child.expect("done")
        child.finish()
        waiter.join(timeout=150)
        assert not waiter.is_alive()
        with store.layer(digest).reader() as reader:
            assert reader.read() == data
    finally:
        child.stop()
        store.close()


# -- housekeeping: uncommitted blocks are listed and collected ------------------------------------


def test_gc_removes_the_uncommitted_blocks_a_killed_writer_left(
    azure_url_factory: Callable[..., str],
    azurite: AzuriteServer,
    azure_container: str,
    tmp_path: Path,
) -> None:
    url = azure_url_factory("gc", lease=str(LEASE))
    data, digest = _blob(9 * MiB, seed=6)
    killed_writer(url, digest, data, staged=8 * MiB)
    staging = _staging_name("gc", digest)
    assert _names(azurite, azure_container, staging) == []  # invisible to a plain listing
    assert _names(azurite, azure_container, staging, uncommitted=True) == [staging]
    store = open_store(url)
    try:
        entries = [e for e in store.staging() if e.kind == "upload"]
        assert [(e.key, e.size) for e in entries] == [(digest, 8 * MiB)]
    finally:
        store.close()
    deadline = time.monotonic() + LEASE + 30
    while True:
        result = run_cli("--json", "gc", "--grace", "0", home=tmp_path, store=url)
        # once a run removed the last object a listing sees (the expired lock), the next
        # finds no store: what Azurite still lists as uncommitted then is asked again below
        assert result.returncode == 0 or "StoreNotFoundError" in result.stdout, str(result)
        if not _names(azurite, azure_container, "gc/_regstore/", uncommitted=True):
            break
        assert time.monotonic() < deadline, f"gc never removed the leftovers: {result.stdout}"
        time.sleep(1)  # the killed writer's lease has not expired yet


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_never_show_in_errors_reprs_or_logs(
    azurite: AzuriteServer, azure_container: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    url = (
        f"az://{azure_container}/secret?account_name={ACCOUNT}&account_url={azurite.account_url}"
        f"&account_key={wrong_key.replace('=', '%3D').replace('+', '%2B').replace('/', '%2F')}"
    )
    store = open_store(url)
    assert wrong_key not in repr(store) + json.dumps(store.describe())
    with pytest.raises(StoreError) as refused:
        store.tags("library/x")  # Azurite refuses the signature
    assert wrong_key not in str(refused.value)
    assert "account_key=***" in str(refused.value) or "***" in repr(store)
    store.close()
    sas = f"sv=2021-08-06&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig=SIGSECRET{ACCOUNT}"
    for args, store_url in [
        (["-vv", "ls"], url),
        (["-vv", "ls"], f"az://{azure_container}/sas?account_url={azurite.account_url}&sas_token="
                        + sas.replace("&", "%26").replace("=", "%3D").replace(":", "%3A")),
        (["--json", "verify"], url),
    ]:  # fmt: skip
        result = run_cli(*args, home=tmp_path, store=store_url, subprocess=True)
        output = result.stdout + result.stderr
        assert wrong_key not in output and "SIGSECRET" not in output, output
        assert "az://" in output, output


def test_a_writer_that_lost_its_lease_stages_and_commits_nothing_more(
    azure_store_factory: Callable[..., ObjectStore], azurite: AzuriteServer, azure_container: str
) -> None:
    # A writer that stalled past its lease must not touch the staging blob again: its Put Block
    # List would discard the blocks of the writer that took over, and its blocks mix with them.
    store = azure_store_factory("lost")
    data, digest = _blob(10 * MiB, seed=9)
    staging = _staging_name("lost", digest)
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    writer.write(data[: 5 * MiB])  # one 4 MiB block staged
    backend = cast(Any, store.backend)
    locks = backend.lease_locks
    lease = locks._leases[locks._blob_name(backend.blob_lock_key(Digest(digest)))]
    lease._renewal.lost = "the lease ran out while the writer stalled (simulated)"
    with pytest.raises(StoreError, match="simulated"):
        writer.write(data[5 * MiB :])
    with pytest.raises(StoreError, match="simulated"):
        writer.discard()  # nor deletes what its successor may be writing
    committed, uncommitted = _blocks(azurite, azure_container, staging)
    assert committed == [] and [b.size for b in uncommitted] == [4 * MiB]  # nothing more


def test_anonymous_reads_go_to_the_given_account_url() -> None:
    # adlfs (reads, listings) used to get only the account name and so the public cloud's
    # endpoint, while block and lease calls went to account_url
    url = "az://box/p?account_url=https://mirror.example.invalid/acct&anon=1&account_name=acct"
    store = open_store(url)
    try:
        assert cast(Any, store.backend).fs.account_host == "mirror.example.invalid/acct"
    finally:
        store.close()
