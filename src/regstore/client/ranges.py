"""Byte ranges on the wire: upload ``Range``, blob ``Content-Range``, chunk ``Content-Range``.

Three dialects meet here:

- the upload progress header ``Range: 0-<last byte>`` (OCI and distribution), the lenient
  ``bytes=0-<last>`` (the era spec's prose) and the seed's ``bytes=0-<last>/<size>``;
- the blob download header ``Content-Range: bytes <start>-<end>/<size|*>`` or, on 416,
  ``bytes */<size>`` (RFC 9110);
- the chunk upload header ``Content-Range: <start>-<end>``, **inclusive**, without a unit.

The inclusive form cannot say "nothing": distribution answers ``0-0`` both for an empty upload
and for one holding a single byte. :func:`parse_upload_range` reports that case as ambiguous
and lets the caller decide from what it knows it sent.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "ContentRange",
    "UploadRange",
    "chunk_content_range",
    "parse_content_range",
    "parse_upload_range",
]

_UPLOAD_RANGE_RE = re.compile(r"(?:bytes\s*=?\s*)?(\d+)-(\d+)(?:/(\d+|\*))?", re.ASCII)
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.ASCII | re.IGNORECASE)


class UploadRange(NamedTuple):
    """What an upload ``Range`` header says the registry holds.

    ``last`` is the last byte received (``end`` of ``0-<end>``); ``size`` is ``last + 1`` (the
    offset to resume from); ``total`` is the seed dialect's ``/<size>`` when present.
    ``ambiguous`` is True for ``0-0``: zero bytes or one byte.
    """

    last: int
    size: int
    total: int | None
    ambiguous: bool


class ContentRange(NamedTuple):
    """A parsed ``Content-Range``: ``start``/``end`` (inclusive; None for ``*``) and the full
    ``size`` (None for ``*``)."""

    start: int | None
    end: int | None
    size: int | None


def parse_upload_range(header: str | None) -> UploadRange | None:
    """Parse an upload progress ``Range`` header; None when absent or malformed.

    Accepts ``0-N``, ``bytes=0-N`` and ``bytes=0-N/M``. A start other than 0 is malformed
    (an upload always holds a prefix).
    """
    if not header:
        return None
    match = _UPLOAD_RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    start, last = int(match.group(1)), int(match.group(2))
    if start != 0 or last < start:
        return None
    total_text = match.group(3)
    total = int(total_text) if total_text and total_text != "*" else None
    return UploadRange(last=last, size=last + 1, total=total, ambiguous=last == 0)


def parse_content_range(header: str | None) -> ContentRange | None:
    """Parse ``bytes s-e/size``, ``bytes s-e/*`` or ``bytes */size``; None when malformed."""
    if not header:
        return None
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    start = int(match.group(1)) if match.group(1) is not None else None
    end = int(match.group(2)) if match.group(2) is not None else None
    size = int(match.group(3)) if match.group(3) != "*" else None
    if start is not None and end is not None and end < start:
        return None
    return ContentRange(start, end, size)


def chunk_content_range(start: int, length: int) -> str:
    """The chunk upload header value ``<start>-<end>`` (inclusive) for ``length`` bytes."""
    if start < 0 or length <= 0:
        raise ValueError(f"a chunk needs start >= 0 and length > 0, got {start}, {length}")
    return f"{start}-{start + length - 1}"
