"""What a look at one file of the store costs on S3: a HEAD, never a listing as well.

The distribution layout asks whether link files and markers exist (is this index partial, is
this manifest stored). On S3 "does a path exist" also means "is it a folder", which takes a
LIST besides the HEAD whenever the file is missing, and a missing partial marker is the common
case: every synced index was asked about twice over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from regstore import open_store
from regstore.errors import ImageManifestNotFoundError
from regstore.testing.builders import oci_image, oci_index, write_image
from tests.support.proxy import FaultProxy, ProxyRecord

CREDENTIALS = {"key": "testing", "secret": "testing", "region": "us-east-1"}


def _listings(records: list[ProxyRecord]) -> list[ProxyRecord]:
    return [r for r in records if r.method == "GET" and "list-type=" in r.query]


def test_asking_about_manifests_heads_files_and_lists_nothing(
    s3_bucket: Any, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy_factory(s3_bucket.endpoint_url, preserve_host=True)
    store = open_store(
        f"s3://{s3_bucket.bucket}/{uuid.uuid4().hex[:8]}", endpoint_url=proxy.url, **CREDENTIALS
    )
    try:
        whole = oci_index([oci_image(seed=1), oci_image(seed=2)])
        half = oci_index([oci_image(seed=3), oci_image(seed=4)])
        whole_digest = write_image(store, "team/app", "1", whole)
        half_digest = write_image(store, "team/app", "2", half, partial=True)
        seen = len(proxy.requests_matching())

        assert store.is_partial("team/app", whole_digest) is False  # its marker is missing
        assert store.is_partial("team/app", half_digest) is True
        with pytest.raises(ImageManifestNotFoundError):
            store.delete_manifest("team/app", "sha256:" + "0" * 64)  # no such revision

        asked = proxy.requests_matching()[seen:]
        assert _listings(asked) == []
        assert {r.method for r in asked} == {"HEAD"}
        # a revision link and a marker for each index, the missing revision's link
        assert len(asked) == 5, [r.path for r in asked]
    finally:
        store.close()
