"""The backend conformance suite around an Azure store (Azurite) with wrappers on every
handle: a pass-through wrapper inside the tracing wrapper (regstore.testing
WrappedConformance), as the S3 plugin and the built-in backends run it.

Only the distribution layout runs wrapped: a wrapper sees the same hook calls whatever the
layout, and the OCI layout's unwrapped run already includes the suite's wrapper tests.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from regstore.testing.conformance import WrappedConformance


class TestWrappedAzureDistributionLayout(WrappedConformance):
    large_blob_size = 8 * 1024 * 1024  # two 4 MiB blocks and more, wrapped
    memory_check_blob_size = 96 * 1024 * 1024  # (the client's own buffers: see _AzureSuite)

    @pytest.fixture
    def store_url(self, azure_url_factory: Callable[..., str]) -> str:
        return azure_url_factory("wrapped", layout="distribution")
