"""The values the client returns (besides manifests and blob streams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from regstore.reference import Digest

__all__ = ["ManifestInfo", "UploadSession", "UploadStatus"]


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
