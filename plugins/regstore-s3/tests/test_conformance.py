"""The backend conformance suite, run against S3 (moto's server) in both layouts.

Exactly what a third-party backend does: subclass the suite and give it a ``store_url``.
Every test gets a fresh bucket (``s3_bucket``); the URL carries the endpoint and dummy
credentials in its query string, so the suite's child processes open the very same store.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from regstore.testing.conformance import BackendConformance, CrossProcessConformance


class _S3Suite(BackendConformance, CrossProcessConformance):
    layout = "distribution"
    #: 8 MiB (the default) already spans two 5 MiB parts, so the multipart path is covered;
    #: moto copies whole objects per request, so larger blobs only cost time.
    large_blob_size = 8 * 1024 * 1024
    #: S3 keeps a part buffer or two and its client's own buffers (~30 MiB whatever the size),
    #: so the blob must be large enough for that to stay under half of it
    memory_check_blob_size = 96 * 1024 * 1024
    #: a dead writer's lease runs out after this (the URL's ``lease``; S3's clock has a
    #: one-second resolution, which the kit's grace covers)
    lock_expiry_seconds = 3.0

    @pytest.fixture
    def store_url(self, s3_url_factory: Callable[..., str]) -> str:
        return s3_url_factory(
            f"conformance-{self.layout}", layout=self.layout, lease=str(self.lock_expiry_seconds)
        )


class TestS3DistributionLayout(_S3Suite):
    layout = "distribution"


class TestS3OciLayout(_S3Suite):
    layout = "oci"
