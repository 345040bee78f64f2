"""The whole conformance suite again with wrappers around each built-in backend (a pass-through
wrapper inside the tracing wrapper; see regstore.testing.conformance.WrappedConformance).
S3 runs it in plugins/regstore-s3/tests/test_wrapped_conformance.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from regstore.testing.conformance import WrappedConformance


class TestWrappedMemoryDistributionLayout(WrappedConformance):
    large_blob_size = 2 * 1024 * 1024  # the unwrapped suite streams the full 8 MiB
    blob_copies_in_memory = 2  # a memory store holds its blobs (as in test_backends_memory)

    @pytest.fixture
    def store_url(self, regstore_memory_url: str) -> str:
        return regstore_memory_url


class TestWrappedMemoryOciLayout(WrappedConformance):
    large_blob_size = 2 * 1024 * 1024
    blob_copies_in_memory = 2

    @pytest.fixture
    def store_url(self, regstore_memory_url: str) -> str:
        return f"{regstore_memory_url}?layout=oci"


class TestWrappedFileDistributionLayout(WrappedConformance):
    large_blob_size = 2 * 1024 * 1024

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "store")


class TestWrappedFileOciLayout(WrappedConformance):
    large_blob_size = 2 * 1024 * 1024

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/store?layout=oci"
