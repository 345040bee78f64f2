"""The values a registry client and the engine exchange: a leaf both import.

The engine reaches a registry only through its ``RegistryClient`` protocol
(:mod:`regstore.engine.model`), and every value crossing that seam is defined here, so the
engine never imports the client (nor guesses at what it returned) and a test double or another
client implementation knows exactly what to return:

- :class:`ManifestInfo` — what a manifest ``HEAD`` tells;
- :class:`UploadSession` — a started upload, or a cross-repository mount that made one needless;
- :class:`UploadStatus` — where an upload stands (the offset to resume from);
- :class:`BlobSource` — a stream of blob bytes from an offset (a registry GET, a store reader);
- :class:`UploadSource` and :data:`BlobData` — what an upload may send.

Standard library and :mod:`regstore.reference` only. :mod:`regstore.client` re-exports the
values under their old names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, NamedTuple, Protocol

from regstore.reference import Digest

__all__ = [
    "BlobData",
    "BlobSource",
    "ManifestInfo",
    "UploadSession",
    "UploadSource",
    "UploadStatus",
]


class ManifestInfo(NamedTuple):
    """What a manifest ``HEAD`` tells: its digest, media type and size in bytes."""

    digest: Digest
    media_type: str
    size: int


class UploadStatus(NamedTuple):
    """Where an upload stands (the seed's ``(offset, length)``, made precise).

    ``offset`` is the number of bytes the registry holds, i.e. where to resume; ``length`` is
    the total size when the registry said it (the seed's ``bytes=0-N/M`` dialect), else None;
    ``location`` is the URL to use for the next request (registries move it along).
    """

    offset: int
    length: int | None
    location: str


@dataclass(frozen=True)
class UploadSession:
    """The answer to :meth:`~regstore.client.Client.initiate_blob_upload`.

    Either ``mounted`` (cross-repository mount succeeded: the blob, ``digest``, is now in the
    repository and there is nothing to upload; ``location`` is None) or a normal upload at
    ``location`` (absolute, with its query — e.g. distribution's ``_state`` — untouched).
    ``chunk_min_length`` is the registry's ``OCI-Chunk-Min-Length`` when it sent one.
    """

    name: str
    location: str | None
    mounted: bool = False
    digest: Digest | None = None
    chunk_min_length: int | None = None

    def __str__(self) -> str:
        return self.location or f"<mounted {self.digest} in {self.name}>"


class BlobSource(Protocol):
    """A readable stream of one blob's bytes, as a registry ``GET`` or a store reader gives it.

    - ``offset``: where in the blob the stream starts. It may be *before* the offset asked for
      (a server that ignored ``Range`` sends from 0); the reader skips what it has.
    - ``size``: the whole blob's size when the source knows it, else None.
    - ``readinto(buffer)``: fill ``buffer`` with the next bytes; the count, 0 at the end.
    - ``close()``: release the connection or file. Idempotent.
    """

    @property
    def offset(self) -> int:
        """Where in the blob this stream starts."""
        ...

    @property
    def size(self) -> int | None:
        """The whole blob's size, when known."""
        ...

    def readinto(self, buffer: bytearray | memoryview, /) -> int: ...
    def close(self) -> None: ...


class UploadSource(Protocol):
    """A file-like request body: ``read(n)`` returns up to ``n`` bytes (``b""`` at its end)."""

    def read(self, n: int = -1, /) -> bytes: ...


#: What the upload methods accept: bytes, a binary file object (anything with ``read``), or an
#: iterable of chunks.
BlobData = bytes | bytearray | memoryview | IO[bytes] | UploadSource | Iterable[bytes]
