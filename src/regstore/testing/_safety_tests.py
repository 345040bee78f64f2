"""Conformance tests: hostile names, tags and digests never reach storage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from regstore.errors import InvalidReferenceError
from regstore.store import ObjectStore

from ._suite import SuiteSettings
from .builders import oci_image, write_blob, write_image

__all__ = ["HOSTILE_DIGESTS", "HOSTILE_NAMES", "HOSTILE_TAGS", "SafetyTests"]

_HEX = "0" * 64

HOSTILE_NAMES = [
    "", ".", "..", "../x", "a/../b", "a/./b", "/abs", "abs/", "a//b", "a\\b", "..\\x",
    "a\x00b", "a\nb", "a b", "%2e%2e/x", "Alpine", "-a", "a-", "_a",
    "\uff41lpine",  # fullwidth a
    "\u0430lpine",  # Cyrillic a
    "\u212aube",  # Kelvin sign (lowercases to k)
    "caf\u00e9", "x" * 256,
]  # fmt: skip
HOSTILE_TAGS = [
    "", ".", "..", "../x", "a/b", "/abs", "a\\b", "a\x00", "a\n", "-x", ".hidden", "a b",
    "\uff54ag", "x" * 129, "a:b",
]  # fmt: skip
HOSTILE_DIGESTS = [
    "", "sha256:", f"sha256:../../{_HEX[:58]}", f"../sha256:{_HEX}", f"sha256:{_HEX}/..",
    f"sha256:/{_HEX[1:]}", "sha256:" + "A" * 64, "sha256:abc", "sha256:" + "g" * 64,
    "md5:" + "0" * 32, "SHA256:" + _HEX, "sha256:" + "\uff10" * 64, f"sha256:{_HEX}\x00",
    f"sha256:{_HEX[:63]}\\",
]  # fmt: skip


def _name_operations(store: ObjectStore, name: str) -> list[Callable[[], Any]]:
    image = oci_image(seed=90)
    digest = str(image.digest)
    return [
        lambda: store.manifest(name, "latest"),
        lambda: store.has_manifest(name, "latest"),
        lambda: store.write_manifest(name, "latest", image.manifest),
        lambda: store.write_manifest(name, None, image.manifest),
        lambda: store.tags(name),
        lambda: store.manifests(name),
        lambda: store.delete_tag(name, "latest"),
        lambda: store.delete_manifest(name, digest),
        lambda: store.is_partial(name, digest),
    ]


def _tag_operations(store: ObjectStore, tag: str) -> list[Callable[[], Any]]:
    image = oci_image(seed=90)
    return [
        lambda: store.manifest("safe/name", tag),
        lambda: store.has_manifest("safe/name", tag),
        lambda: store.write_manifest("safe/name", tag, image.manifest),
        lambda: store.delete_tag("safe/name", tag),
    ]


def _digest_operations(store: ObjectStore, digest: str) -> list[Callable[[], Any]]:
    return [
        lambda: store.layer(digest),
        lambda: store.blob_status(digest),
        lambda: store.blob_exists(digest),
        lambda: store.delete_blob(digest),
        lambda: store.manifest("safe/name", digest),
        lambda: store.delete_manifest("safe/name", digest),
        lambda: store.is_partial("safe/name", digest),
    ]


class SafetyTests(SuiteSettings):
    """Every hostile value raises InvalidReferenceError before any I/O and creates nothing."""

    def _snapshot(self, store: ObjectStore) -> tuple[list[str], list[str], list[str]]:
        return (
            store.repositories(),
            store.tags("safe/name"),
            [b.digest for b in store.blobs()] if self.supports_list_blobs else [],
        )

    @staticmethod
    def _assert_all_refused(operations: list[Callable[[], Any]], value: str) -> None:
        for i, operation in enumerate(operations):
            with pytest.raises(InvalidReferenceError):
                operation()
                pytest.fail(f"operation {i} accepted {value!r}")

    def test_hostile_values_are_refused_before_io(self, store: ObjectStore) -> None:
        write_image(store, "safe/name", "kept", oci_image(seed=91))
        # the blobs of the manifest the operations try to write: a refusal must then be the
        # name's or the tag's fault, not a missing blob's
        for blob in oci_image(seed=90).blobs:
            write_blob(store, blob)
        before = self._snapshot(store)
        for name in HOSTILE_NAMES:
            self._assert_all_refused(_name_operations(store, name), name)
        for tag in HOSTILE_TAGS:
            self._assert_all_refused(_tag_operations(store, tag), tag)
        for digest in HOSTILE_DIGESTS:
            self._assert_all_refused(_digest_operations(store, digest), digest)
        assert self._snapshot(store) == before
