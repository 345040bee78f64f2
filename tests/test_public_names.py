"""The names a user of the Python API needs (issue 17): exported, typed, one renaming keyword."""

from __future__ import annotations

import ast
import typing
import warnings
from pathlib import Path

import pytest

import regstore
import regstore.errors
from regstore import Client, StoreImage, open_store, pull
from regstore.engine import reporting, transfer
from regstore.engine import verify as verify_module
from regstore.testing.builders import oci_image, write_image
from tests.support.registry import RegistryServer

NEEDED = ["Image", "EventSink", "verify", "TagFilter", "EventKind", "TransferEvent",
          "ImageOutcome", "VerifyReport", "Problem", "BlobInfo", "BlobStatus", "UploadSession",
          "UploadStatus", "BatchResult", "TransferResult", "RegistryImage", "StoreImage",
          "transfer_many", "ImageStatus", "ProblemKind", "Operation"]  # fmt: skip


def test_the_names_a_job_needs_are_exported() -> None:
    missing = [name for name in NEEDED if name not in regstore.__all__]
    assert not missing


def test_every_error_is_exported() -> None:
    assert set(regstore.errors.__all__) <= set(regstore.__all__)


def test_all_is_a_literal_list_for_type_checkers() -> None:
    """``__all__`` built by concatenation hides ``from regstore import *`` names from mypy."""
    tree = ast.parse(Path(regstore.__file__).read_text())
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert isinstance(value, ast.List)
    assert all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts)


def test_event_sink_and_image_are_defined_once() -> None:
    assert reporting.EventSink is regstore.EventSink
    assert verify_module.EventSink is regstore.EventSink
    assert transfer.Image is regstore.Image


def test_literal_types_list_what_the_engine_produces() -> None:
    assert set(typing.get_args(regstore.ImageStatus)) == {"copied", "skipped", "failed",
                                                          "cancelled", "pruned"}  # fmt: skip
    assert set(typing.get_args(regstore.Operation)) == {"pull", "push", "copy", "verify"}
    assert "damaged-blob" in typing.get_args(regstore.ProblemKind)


def test_transfer_result_needs_its_manifest_digest() -> None:
    with pytest.raises(TypeError):
        regstore.TransferResult("a", "b")  # type: ignore[call-arg]


def _seed(registry: RegistryServer) -> Client:
    client = Client(registry.host)
    staging = open_store(f"memory://names-seed-{registry.port}")
    write_image(staging, "team/app", "1.0", oci_image(layers=1, layer_size=512, seed=70))
    regstore.push(client, staging, "team/app", "1.0")
    return client


def test_pull_dest_name_and_the_deprecated_as_name(
    registry: RegistryServer, tmp_path: Path
) -> None:
    client = _seed(registry)
    store = open_store(f"file://{tmp_path}")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new keywords warn about nothing
        pull(client, store, "team/app", "1.0", dest_name="mirror/app", dest_tag="stable")
    with pytest.warns(DeprecationWarning, match="as_name= is deprecated.*use dest_name="):
        pull(client, store, "team/app", "1.0", as_name="old/app")
    with pytest.warns(DeprecationWarning, match="as_tag= is deprecated.*use dest_tag="):
        pull(client, store, "team/app", "1.0", as_tag="old")

    assert store.tags("mirror/app") == ["stable"]
    assert store.tags("old/app") == ["1.0"]
    assert "old" in store.tags("team/app")


def test_pull_refuses_both_spellings() -> None:
    store = open_store("memory://names-both")
    with pytest.raises(TypeError, match="pass dest_name= only"):
        pull(Client("127.0.0.1:9"), store, "a/b", "1", dest_name="c/d", as_name="e/f")


def test_copy_renames_through_the_destination_image(registry: RegistryServer) -> None:
    client = _seed(registry)
    store = open_store(f"memory://names-copy-{registry.port}")
    result = regstore.copy(
        regstore.RegistryImage(client, "team/app", "1.0"), StoreImage(store, "kept/app", "v1")
    )
    assert store.resolve("kept/app", "v1") == result.manifest_digest
