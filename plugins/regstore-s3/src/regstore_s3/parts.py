"""Multipart sizing: how large each staged part of a blob is.

S3's limits (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html): an object
holds at most 5 TiB; a multipart upload has at most 10,000 parts; every part but the last is
at least 5 MiB and at most 5 GiB. A blob is staged as one object per part and committed by
copying those objects, server-side, as the parts of one multipart upload, so these limits are
the limits of staging too.

- :func:`derive_part_size` — the default when the blob's size is declared: the smallest whole
  number of MiB (at least 5 MiB) such that the blob fits in 10,000 equal parts. Any blob up to
  5 TiB fits (in parts of at most 525 MiB); memory per writer is one part buffer (plus one copy
  while it is sent).
- :func:`growing_part_size` — the fallback when the size is not known while writing: parts
  start at 5 MiB and grow with the bytes staged (each ~1/1200 of what came before), which still
  fits 5 TiB in fewer than 10,000 parts.
- :func:`choose_part_size` — applies an explicit ``part_size`` option (respected whenever the
  blob fits in 10,000 parts of it; raised to the derived size, with a warning, when not).
"""

from __future__ import annotations

import logging
import re

from regstore.errors import StoreError

__all__ = [
    "GROWTH_DIVISOR",
    "MAX_OBJECT_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "MiB",
    "choose_part_size",
    "derive_part_size",
    "growing_part_size",
    "parse_size",
]

log = logging.getLogger(__name__)

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * TiB
#: Without a declared size, the next part is (bytes staged so far) / GROWTH_DIVISOR, at least
#: 5 MiB: 1,200 parts of 5 MiB, then ~1,200 * ln(5 TiB / 6 GiB) = 8,120 growing parts reach
#: 5 TiB — 9,320 in all, under the 10,000-part limit.
GROWTH_DIVISOR = 1200


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _check_blob_size(blob_size: int) -> None:
    if blob_size < 0:
        raise ValueError(f"blob size must not be negative, not {blob_size}")
    if blob_size > MAX_OBJECT_SIZE:
        raise StoreError(f"a blob of {blob_size} bytes is larger than S3's 5 TiB object limit")


def derive_part_size(blob_size: int) -> int:
    """The default part size for a blob of ``blob_size`` bytes.

    The smallest multiple of 1 MiB, and at least 5 MiB, that splits the blob into at most
    10,000 parts. Raises StoreError above S3's 5 TiB object limit.
    """
    _check_blob_size(blob_size)
    needed = -(-blob_size // MAX_PARTS)
    return max(MIN_PART_SIZE, _round_up(needed, MiB))


def growing_part_size(staged: int) -> int:
    """The next part's size when the blob's size is unknown, after ``staged`` bytes."""
    if staged < 0:
        raise ValueError("staged bytes must not be negative")
    grown = _round_up(-(-staged // GROWTH_DIVISOR), MiB)
    return min(MAX_PART_SIZE, max(MIN_PART_SIZE, grown))


def validate_part_size(part_size: int) -> int:
    """Check an explicit part size against S3's limits (5 MiB ... 5 GiB)."""
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(
            f"part_size must be between 5 MiB ({MIN_PART_SIZE}) and 5 GiB ({MAX_PART_SIZE}) "
            f"bytes, not {part_size}"
        )
    return part_size


def choose_part_size(blob_size: int | None, explicit: int | None, staged: int = 0) -> int:
    """The part size a writer uses for its next part.

    ``explicit`` (the ``part_size`` option) wins while the blob fits in 10,000 parts of it; a
    declared ``blob_size`` otherwise gives :func:`derive_part_size`; with neither known the
    size grows with ``staged`` (:func:`growing_part_size`).
    """
    if blob_size is not None:
        derived = derive_part_size(blob_size)
        if explicit is None:
            return derived
        if explicit >= derived:
            return explicit
        log.warning(
            "part_size %d would need more than %d parts for a blob of %d bytes; using %d",
            explicit, MAX_PARTS, blob_size, derived,
        )  # fmt: skip
        return derived
    if explicit is not None:
        return max(explicit, growing_part_size(staged))
    return growing_part_size(staged)


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MiB, "g": GiB, "t": TiB}


def parse_size(value: int | str) -> int:
    """A byte count from an int or a string such as ``"8388608"``, ``"8MiB"``, ``"64M"``.

    Units are binary (``k``/``KiB`` = 1024), as S3's limits are.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use bytes or a unit: 8MiB, 64M, 1GiB)")
    number, unit = match.groups()
    return int(number) * _UNITS[(unit or "")[:1].lower()]
