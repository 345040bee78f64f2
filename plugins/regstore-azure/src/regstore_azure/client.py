"""The Azure calls regstore makes itself, on azure-storage-blob's sync client, errors translated.

:class:`AzureObjects` speaks to one container through a ``ContainerClient`` for what the
fsspec API (adlfs) does not offer: the block primitives (Put Block, Get Block List, Put Block
List), leases, server-side copies that are waited for, conditional creates, listings that
include blobs made only of uncommitted blocks, and properties that tell a pending copy from a
whole blob.

Every failure leaves this module as a :class:`regstore.errors.StoreError` chained to the
original. The message names the operation, the blob and Azure's error code and status, never
the request URL or headers (a SAS token travels in the URL).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from regstore.errors import RegstoreError, StoreError

__all__ = [
    "AzureObjects",
    "BlobInfo",
    "Conflict",
    "azure_error_types",
    "describe_azure_error",
    "translate_azure_errors",
]

#: Polling a pending server-side copy: first pause, longest pause, give up after (seconds).
_COPY_POLL = (0.05, 2.0, 3600.0)


class Conflict(StoreError):
    """An Azure request lost a race: the blob exists, or a lease is held or not ours."""


def azure_error_types() -> tuple[type[BaseException], ...]:
    """The exception types of the Azure SDK and its transports (they become StoreErrors)."""
    from azure.core.exceptions import AzureError

    types: list[type[BaseException]] = [AzureError]
    with contextlib.suppress(ImportError):
        import aiohttp

        types.append(aiohttp.ClientError)
    return tuple(types)


def describe_azure_error(exc: BaseException) -> str:
    """A one-line account of an Azure SDK error without its URL: type, status, error code."""
    parts = [type(exc).__name__]
    status = getattr(exc, "status_code", None)
    if status:
        parts.append(f"HTTP {status}")
    code = getattr(exc, "error_code", None)
    if code:
        parts.append(str(code))
    reason = getattr(exc, "reason", None)
    if reason and not code:
        parts.append(str(reason))
    if len(parts) == 1:  # a transport error: its text names the host, not the query
        parts.append(str(exc).split("?", 1)[0][:200])
    return " ".join(parts)


def _is_not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404


def _is_conflict(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) in (409, 412)


@contextlib.contextmanager
def translate_azure_errors(what: str) -> Iterator[None]:
    """Turn Azure SDK and transport errors raised inside into a chained StoreError
    (:class:`Conflict` for 409/412). Regstore errors and OSError pass through unchanged."""
    try:
        yield
    except (RegstoreError, OSError):
        raise
    except azure_error_types() as exc:
        if _is_conflict(exc):
            raise Conflict(f"{what}: {describe_azure_error(exc)}") from exc
        raise StoreError(f"{what}: {describe_azure_error(exc)}") from exc
    except RuntimeError as exc:
        # adlfs's bulk rm wraps the Azure error: RuntimeError("Failed to remove %s for %s",
        # paths, error); shown as it was, with its paths and Azure's multi-line message, and
        # no RegstoreError for a caller to catch
        args = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], tuple) else exc.args
        inner = next((a for a in args if isinstance(a, azure_error_types())), None)
        if inner is None:
            raise
        raise StoreError(f"{what}: {describe_azure_error(inner)}") from exc


@dataclass(frozen=True)
class BlobInfo:
    """What Get Blob Properties or a listing says about one blob."""

    name: str
    size: int
    etag: str
    mtime: float  #: Last-Modified, seconds since the epoch (the service's clock)


def _info(name: str, props: Any) -> BlobInfo:
    modified = props.last_modified
    return BlobInfo(
        name, int(props.size or 0), str(props.etag or ""), modified.timestamp() if modified else 0.0
    )


class AzureObjects:
    """One container, through a sync ``ContainerClient`` (see the module docstring).

    ``container`` is the ``azure.storage.blob.ContainerClient``; ``where`` names the store in
    messages (a redacted URL).
    """

    def __init__(self, container: Any, where: str) -> None:
        self.container = container
        self.name = str(container.container_name)
        self.where = where

    def _what(self, verb: str, name: str) -> str:
        return f"cannot {verb} az://{self.name}/{name} ({self.where})"

    def blob(self, name: str) -> Any:
        """The ``BlobClient`` of blob ``name``."""
        return self.container.get_blob_client(name)

    # -- small blobs ------------------------------------------------------------------------

    def head(self, name: str) -> BlobInfo | None:
        """The properties of a complete blob; None if absent (or still being copied in)."""
        try:
            with translate_azure_errors(self._what("inspect", name)):
                props = self.blob(name).get_blob_properties()
        except StoreError as exc:
            if exc.__cause__ is not None and _is_not_found(exc.__cause__):
                return None
            raise
        copy = getattr(props, "copy", None)
        if copy is not None and getattr(copy, "status", None) not in (None, "success"):
            return None  # a server-side copy has not finished: the blob is not whole yet
        return _info(name, props)

    def put(self, name: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write a small blob in one Put Blob; ``if_absent``: Conflict if it exists."""
        with translate_azure_errors(self._what("write", name)):
            self.blob(name).upload_blob(bytes(data), overwrite=not if_absent)

    def delete(self, name: str, *, lease: Any = None) -> None:
        """Delete a blob (a missing one is fine); ``lease``: only while that lease holds it."""
        try:
            with translate_azure_errors(self._what("delete", name)):
                self.blob(name).delete_blob(lease=lease)
        except StoreError as exc:
            if exc.__cause__ is None or not _is_not_found(exc.__cause__):
                raise

    def list_blobs(self, prefix: str, *, uncommitted: bool = False) -> list[BlobInfo]:
        """Every blob under ``prefix`` (recursively); ``uncommitted`` includes blobs made only
        of uncommitted blocks (their size is then 0)."""
        include = ["uncommittedblobs"] if uncommitted else None
        with translate_azure_errors(self._what("list", prefix)):
            return [
                _info(str(props.name), props)
                for props in self.container.list_blobs(name_starts_with=prefix, include=include)
            ]

    # -- blocks -----------------------------------------------------------------------------

    def block_list(self, name: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """``(committed, uncommitted)`` blocks of a blob as ``(id, size)``; empty if absent."""
        try:
            with translate_azure_errors(self._what("list the blocks of", name)):
                committed, uncommitted = self.blob(name).get_block_list("all")
        except StoreError as exc:
            if exc.__cause__ is not None and _is_not_found(exc.__cause__):
                return [], []
            raise
        return (
            [(str(b.id), int(b.size)) for b in committed],
            [(str(b.id), int(b.size)) for b in uncommitted],
        )

    def stage_block(self, name: str, identifier: str, data: bytes | bytearray | memoryview) -> None:
        """Put Block: stage ``data`` as the uncommitted block ``identifier`` of a blob."""
        with translate_azure_errors(self._what("stage a block of", name)):
            self.blob(name).stage_block(identifier, data, length=len(data))

    def commit_blocks(self, name: str, identifiers: list[str]) -> None:
        """Put Block List: the blob becomes exactly these blocks, in order (others are dropped)."""
        from azure.storage.blob import BlobBlock

        with translate_azure_errors(self._what("commit the blocks of", name)):
            self.blob(name).commit_block_list([BlobBlock(block_id=i) for i in identifiers])

    def open_range(self, name: str, offset: int, length: int | None = None) -> Iterator[bytes]:
        """The bytes of a committed blob from ``offset``, streamed in chunks of a few MiB."""
        with translate_azure_errors(self._what("read", name)):
            downloader = self.blob(name).download_blob(offset=offset, length=length)
            chunks = downloader.chunks()
        while True:
            with translate_azure_errors(self._what("read", name)):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield bytes(chunk)

    def copy(self, source: str, target: str) -> None:
        """Copy blob ``source`` onto ``target`` server-side and wait until the copy succeeded.

        ``target`` appears whole when the copy is done (:meth:`head` ignores a pending one).
        """
        what = self._what(f"copy az://{self.name}/{source} to", target)
        first, longest, limit = _COPY_POLL
        with translate_azure_errors(what):
            target_blob = self.blob(target)
            result = target_blob.start_copy_from_url(self.blob(source).url)
            status = result.get("copy_status")
            pause, deadline = first, time.monotonic() + limit
            while status == "pending":
                if time.monotonic() > deadline:
                    target_blob.abort_copy(result.get("copy_id"))
                    raise StoreError(f"{what}: the copy did not finish within {limit:g} s")
                time.sleep(pause)
                pause = min(longest, pause * 2)
                status = target_blob.get_blob_properties().copy.status
        if status != "success":
            raise StoreError(f"{what}: the copy ended {status!r}")

    def __repr__(self) -> str:
        return f"AzureObjects({self.where})"
