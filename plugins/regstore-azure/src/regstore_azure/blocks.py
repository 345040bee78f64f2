"""Block arithmetic of Azure block blobs: block ids, the block-size schedule, usable blocks.

Azure builds a block blob from at most 50,000 committed blocks of at most 4000 MiB each
(190.7 TiB); a blob's uncommitted blocks wait beside it, invisible, until a Put Block List
names them. regstore stages a blob's bytes as such blocks and names them by sequence number
(:func:`block_id`), so that the blocks an interrupted writer left are ordered and counted
again from Get Block List alone (:func:`usable_blocks`).

The block size grows with what is staged (:func:`block_size`): 4 MiB blocks up to about 8 GiB,
then 1/2000 of the bytes staged so far, which fits 100 TiB in fewer than 40,000 blocks and so
leaves room below Azure's 50,000 for the short last block every interrupted write adds. The
append stream that regstore's kit hands a staging part is not told the blob's declared size,
hence a schedule over the staged bytes rather than a division of a known size.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "GROWTH",
    "MAX_BLOCKS",
    "MAX_BLOCK_SIZE",
    "MIN_BLOCK_SIZE",
    "Block",
    "MiB",
    "block_id",
    "block_number",
    "block_size",
    "usable_blocks",
]

MiB = 1024 * 1024
#: The smallest block regstore stages (Azure has no minimum; fewer requests, bounded count).
MIN_BLOCK_SIZE = 4 * MiB
#: Azure's largest block (service version 2019-12-12 and later).
MAX_BLOCK_SIZE = 4000 * MiB
#: Azure's limit of committed blocks per blob.
MAX_BLOCKS = 50_000
#: A block holds 1/GROWTH of what was staged before it (rounded up to a whole MiB).
GROWTH = 2000
_ID_PREFIX = "regstore-"
_ID_DIGITS = 6  # every id of one blob must have the same length


def block_id(number: int) -> str:
    """The base64 block id of block ``number`` (0-based) of a staged blob."""
    if not 0 <= number < MAX_BLOCKS:
        raise ValueError(f"a blob cannot have more than {MAX_BLOCKS} blocks")
    return base64.b64encode(f"{_ID_PREFIX}{number:0{_ID_DIGITS}d}".encode()).decode()


def block_number(identifier: str) -> int | None:
    """The number in a block id written by :func:`block_id`; None for any other id."""
    try:
        text = base64.b64decode(identifier, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    digits = text.removeprefix(_ID_PREFIX)
    if digits == text or len(digits) != _ID_DIGITS or not digits.isdigit():
        return None
    return int(digits)


def block_size(staged: int) -> int:
    """The size of the next block once ``staged`` bytes are staged (see the module docstring)."""
    wanted = -(-staged // GROWTH)  # ceil
    whole = -(-wanted // MiB) * MiB
    return min(MAX_BLOCK_SIZE, max(MIN_BLOCK_SIZE, whole))


@dataclass(frozen=True)
class Block:
    """One staged block: its id, number, size and whether a Put Block List committed it."""

    id: str
    number: int
    size: int
    committed: bool


def usable_blocks(
    committed: Iterable[tuple[str, int]], uncommitted: Iterable[tuple[str, int]]
) -> list[Block]:
    """The blocks a writer may resume, in order: the committed ones (numbered 0, 1, ... in
    the committed order), then the uncommitted ones that continue the numbering without a gap.

    ``committed`` and ``uncommitted`` are ``(id, size)`` pairs as Get Block List gives them.
    A committed list that is not ``0..n-1`` (not written by regstore) resumes nothing.
    """
    blocks: list[Block] = []
    for expected, (identifier, size) in enumerate(committed):
        if block_number(identifier) != expected:
            return []
        blocks.append(Block(identifier, expected, size, True))
    pending = {}
    for identifier, size in uncommitted:
        number = block_number(identifier)
        if number is not None:
            pending[number] = (identifier, size)
    number = len(blocks)
    while number in pending:
        identifier, size = pending[number]
        blocks.append(Block(identifier, number, size, False))
        number += 1
    return blocks
