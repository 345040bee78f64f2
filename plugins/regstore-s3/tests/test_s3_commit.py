"""Committing large blobs on S3: a multipart completion that answers slowly, or not at all.

S3 may take minutes to complete a multipart upload, and S3 clones (moto) send nothing while
they assemble the object. A 1 GiB pull into moto used to fail here: the completion outlived
s3fs's 15 s read timeout, botocore retried it, and the retries raced the first attempt inside
moto (``ValueError: seek of closed file``, a 500) or found the upload gone. The always-on
tests force the same conditions with a fault proxy and a short read timeout; the ``--long``
test pulls the 1 GiB image for real and checks the memory bound on the way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from regstore import open_store
from regstore.errors import StoreError
from regstore.hookspecs import BlobState
from tests.support.engine import seed_single_layer_image
from tests.support.long import is_long
from tests.support.proxy import FaultProxy

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[3]
CREDENTIALS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


def _blob(size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _write_through(proxy: FaultProxy, bucket: str, data: bytes, digest: str, **options: Any) -> Any:
    """Write ``data`` as a three-part blob into an S3 store reached through ``proxy``."""
    store = open_store(
        f"s3://{bucket}/{uuid.uuid4().hex[:8]}",
        endpoint_url=proxy.url,
        part_size="5MiB",
        **CREDENTIALS,
        **options,
    )
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(0, len(data), MiB):
        writer.write(data[start : start + MiB])
    writer.commit()
    return store


def test_a_completion_slower_than_the_read_timeout_is_waited_for(
    s3_bucket: Any, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(s3_bucket.endpoint_url, preserve_host=True)
    # every completion takes 3 s to start, three times the store's read timeout
    slow = proxy.delay("POST", r"/data$", 3.0, query_regex="uploadId=")
    data, digest = _blob(12 * MiB + 17)
    store = _write_through(proxy, s3_bucket.bucket, data, digest, read_timeout=1, retries=0)
    assert slow.hits == 1  # one completion, waited for: no retry
    assert proxy.count("POST", r"/data$") == 2  # CreateMultipartUpload + that completion
    with store.layer(digest).reader() as reader:
        assert hashlib.sha256(b"".join(reader.chunks())).hexdigest() == digest[7:]
    store.close()


def test_a_completion_whose_answer_is_lost_still_commits(
    s3_bucket: Any, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(s3_bucket.endpoint_url, preserve_host=True)
    # moto completes the upload, the client hears 500 (and a retry would hear NoSuchUpload)
    lost = proxy.override_status(
        "POST", r"/data$", 500, times=None, forward=True, query_regex="uploadId="
    )
    data, digest = _blob(11 * MiB)
    store = _write_through(proxy, s3_bucket.bucket, data, digest, retries=0)
    assert lost.hits >= 1
    with store.layer(digest).reader() as reader:
        assert reader.size == len(data)
        assert hashlib.sha256(b"".join(reader.chunks())).hexdigest() == digest[7:]
    store.close()


_PULL_CHILD = """
    import json, sys
    from regstore import open_store
    from regstore.client import Client
    from regstore.engine import pull

    def peak_rss_kib():
        # VmHWM: this process image's own peak (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    store = open_store(sys.argv[2], **json.loads(sys.argv[3]))
    result = pull(Client(sys.argv[1]), store, "big/img", "1")
    print(json.dumps({"rss_kib": peak_rss_kib(), "moved": result.bytes_moved}))
"""


def test_pulling_1_gib_into_s3_commits_within_100_mib(
    request: pytest.FixtureRequest, registry: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    if not is_long(request.config):
        pytest.skip("1 GiB: runs with --long (the proxy tests above cover the commit path)")
    size = 1024 * MiB
    digest = seed_single_layer_image(registry.url, "big/img", "1", tmp_path, size)
    options = {"endpoint_url": s3_bucket.endpoint_url, **CREDENTIALS}
    url = f"s3://{s3_bucket.bucket}/big"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_PULL_CHILD),
            registry.host,
            url,
            json.dumps(options),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["moved"] >= size
    assert report["rss_kib"] <= 100 * 1024, report
    with open_store(url, **options) as store:
        assert store.blob_size(digest) == size


def test_the_parts_of_a_commit_are_copied_several_at_once(
    s3_bucket: Any, fault_proxy_factory: Callable[..., FaultProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    from regstore_s3 import client as s3_client

    proxy = fault_proxy_factory(s3_bucket.endpoint_url, preserve_host=True)
    # every UploadPartCopy into the blob waits a second upstream: copies one after another
    # would never overlap
    slow = proxy.delay("PUT", r"/data$", 1.0, query_regex="partNumber=")
    in_flight, most = 0, 0
    lock = threading.Lock()
    copy_part = s3_client.S3Objects.copy_part

    def counting(self: Any, *args: Any, **kwargs: Any) -> str:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            return copy_part(self, *args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(s3_client.S3Objects, "copy_part", counting)
    data, digest = _blob(15 * MiB + 3)  # four parts of 5 MiB
    store = _write_through(proxy, s3_bucket.bucket, data, digest, staging="parts")
    assert slow.hits == 4
    assert most >= 2
    with store.layer(digest).reader() as reader:
        assert hashlib.sha256(b"".join(reader.chunks())).hexdigest() == digest[7:]
    store.close()


def test_a_copy_that_fails_while_the_blob_is_written_fails_its_commit_and_loses_nothing(
    s3_bucket: Any, moto_server: Any, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(s3_bucket.endpoint_url, preserve_host=True)
    # every UploadPartCopy into the blob after the first answers 500, retries included
    broken = proxy.override_status(
        "PUT", r"/data$", 500, times=None, skip=1, query_regex="partNumber="
    )
    data, digest = _blob(16 * MiB + 5)
    prefix = uuid.uuid4().hex[:8]
    store = open_store(
        f"s3://{s3_bucket.bucket}/{prefix}",
        endpoint_url=proxy.url,
        part_size="5MiB",
        retries=0,
        staging="parts",
        **CREDENTIALS,
    )
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    for start in range(0, len(data), MiB):
        writer.write(data[start : start + MiB])  # the copies ahead begin: part 1 passes
    deadline = time.monotonic() + 30
    while broken.hits < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broken.hits >= 1, "no copy was made (and failed) while the blob was written"
    with pytest.raises(StoreError, match=r"into part \d of"):
        writer.commit()  # copies what is missing, tries the failed copy again, gives up
    assert broken.hits >= 2
    client = moto_server.client()
    assert client.list_multipart_uploads(Bucket=s3_bucket.bucket).get("Uploads", []) == []
    assert store.blob_status(digest).state is BlobState.PARTIAL
    # every byte stayed staged: a later writer re-hashes them and publishes the blob
    proxy.clear_faults()
    writer = store.layer(digest).writer()
    assert writer.current_size == len(data)
    assert writer.commit(len(data)) == digest
    with store.layer(digest).reader() as reader:
        assert hashlib.sha256(reader.read()).hexdigest() == digest[7:]
    store.close()
