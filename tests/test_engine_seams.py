"""The engine↔client seam is typed: the values it carries live in a leaf both import
(:mod:`regstore.wire`, :mod:`regstore.retry`), the engine's ``RegistryClient`` protocol returns
them, and the engine takes the client's answers as they are typed, without guessing."""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from pathlib import Path

import pytest

import regstore.client
import regstore.client.models
import regstore.client.retry
from regstore import retry, wire
from regstore.client import BlobStream, Client
from regstore.engine import RegistryClient
from regstore.engine.blobs import upload_blob
from regstore.engine.reporting import Reporter
from regstore.errors import RegistryError
from regstore.manifest import Descriptor, Manifest
from regstore.reference import Digest
from regstore.store import ObjectStore

ENGINE = Path(importlib.import_module("regstore.engine").__file__ or "").parent
DIGEST = "sha256:" + "a" * 64

# names model.py imports only for the type checker
_HINT_NAMES = {
    "Manifest": Manifest,
    "Descriptor": Descriptor,
    "RetryPolicy": retry.RetryPolicy,
    "ObjectStore": ObjectStore,
    **{name: getattr(wire, name) for name in wire.__all__},
}


def _protocol_members(protocol: type) -> dict[str, object]:
    return {
        name: member
        for name, member in vars(protocol).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }


def _returns(member: object) -> object:
    func = member.fget if isinstance(member, property) else member
    module = importlib.import_module(func.__module__)  # type: ignore[union-attr]
    hints = typing.get_type_hints(func, {**vars(module), **_HINT_NAMES})
    return hints["return"]


def test_the_values_live_in_the_leaves_and_the_client_re_exports_them() -> None:
    for name in ("ManifestInfo", "UploadSession", "UploadStatus", "BlobData"):
        assert getattr(regstore.client, name) is getattr(wire, name)
    for name in ("ManifestInfo", "UploadSession", "UploadStatus"):
        assert getattr(regstore.client.models, name) is getattr(wire, name)
    for name in ("RetryPolicy", "RetryBudget", "is_transient", "active_budget"):
        assert getattr(regstore.client.retry, name) is getattr(retry, name)


@pytest.mark.parametrize("module", [wire, retry], ids=lambda m: m.__name__)
def test_the_leaves_are_documented(module: object) -> None:
    assert (module.__doc__ or "").strip()
    for name in module.__all__:  # type: ignore[attr-defined]
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), name


def test_the_engine_protocol_returns_exactly_what_the_client_returns() -> None:
    members = _protocol_members(RegistryClient)
    assert "get_blob" in members and "initiate_blob_upload" in members
    for name, member in members.items():
        expected = _returns(member)
        assert expected is not typing.Any, f"RegistryClient.{name} returns Any"
        actual = _returns(getattr(Client, name))
        if name == "get_blob":
            # the client's stream is one BlobSource (the engine also reads store layers)
            assert actual is BlobStream and expected is wire.BlobSource
            continue
        assert actual == expected, f"{name}: the client returns {actual}, not {expected}"


def test_the_blob_mover_takes_the_client_s_answers_as_typed() -> None:
    """No ``Any``, no ``getattr``, no tuple-or-string guessing in engine/blobs.py."""
    tree = ast.parse((ENGINE / "blobs.py").read_text())
    guesses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "Any":
            guesses.append(f"line {node.lineno}: Any")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr"):
                guesses.append(f"line {node.lineno}: {node.func.id}")
            if node.func.id == "isinstance" and ast.unparse(node.args[1]) in ("tuple", "str"):
                guesses.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not guesses, guesses


class _NowhereClient:
    """A stand-in whose upload session neither mounted nor says where the bytes go."""

    registry = "stand-in.invalid"
    retry_policy = retry.RetryPolicy(retries=0)

    def __init__(self) -> None:
        self.sent_to: list[str] = []

    def blob_length(self, name: str, digest: str) -> int:
        return -1

    def initiate_blob_upload(
        self, name: str, *, mount: str | None = None, from_: str | None = None
    ) -> wire.UploadSession:
        return wire.UploadSession(name=name, location=None)

    def upload_blob(self, location: str, data: wire.BlobData, length: int, digest: str) -> Digest:
        self.sent_to.append(location)
        return Digest(digest)


def test_an_upload_session_without_a_location_is_an_error_not_a_url() -> None:
    client = _NowhereClient()
    with pytest.raises(RegistryError, match="no location"):
        upload_blob(
            client,  # type: ignore[arg-type]  # only what an upload of one small blob asks
            "team/app",
            DIGEST,
            3,
            lambda offset: (_ for _ in ()).throw(AssertionError("nothing is read")),
            Reporter("push", "", None),
        )
    assert client.sent_to == []  # before: the bytes went to the URL "None"
