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

    @pytest.fixture
    def store_url(self, s3_url_factory: Callable[..., str]) -> str:
        return s3_url_factory(f"conformance-{self.layout}", layout=self.layout)


class TestS3DistributionLayout(_S3Suite):
    layout = "distribution"


class TestS3OciLayout(_S3Suite):
    layout = "oci"
