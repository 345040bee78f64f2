"""The backend conformance suite, run against Azurite in both layouts.

Exactly what a third-party backend does: subclass the suite and give it a ``store_url``. Every
test gets a fresh container; the URL carries the connection string in its query, so the
suite's child processes open the very same store.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from regstore.testing.conformance import BackendConformance, CrossProcessConformance


class _AzureSuite(BackendConformance, CrossProcessConformance):
    layout = "distribution"
    #: 8 MiB (the default) spans two 4 MiB blocks and a resumed third
    large_blob_size = 8 * 1024 * 1024
    #: the Azure client keeps 4 MiB blocks and buffers of its own: 21-34 MiB whatever the size
    #: (measured alike for 64 and 160 MiB blobs), so the blob must be large enough for that to
    #: stay under half of it (64 MiB, the default, left a margin of a few MiB at best)
    memory_check_blob_size = 96 * 1024 * 1024
    #: a killed writer's lock is free once its lease expires: Azure's shortest lease
    lock_expiry_seconds = 15.0

    @pytest.fixture
    def store_url(self, azure_url_factory: Callable[..., str]) -> str:
        return azure_url_factory(
            f"conformance-{self.layout}",
            layout=self.layout,
            lease=str(int(self.lock_expiry_seconds)),
        )


class TestAzureDistributionLayout(_AzureSuite):
    layout = "distribution"


class TestAzureOciLayout(_AzureSuite):
    layout = "oci"
