"""Shares of a sync plan for batch schedulers: ``regstore sync FILE --shard I/N``.

N copies of the same sync (a Kubernetes Indexed Job, a Slurm array, a CI matrix) each take
share I of the planned images. Which share an image falls in is a hash of its *source
reference* alone (``registry/name:tag``), not of its position in the plan: a tag that appears
or disappears elsewhere moves no other image to another share, and every run of share I takes
the same images. Together the N shares cover every image exactly once.

Two shards writing into one store at once is safe without any coordination here: blobs they
share are written once (the store's blob lock, and ``wait`` for a blob another writer holds)
and tags are written only after everything they reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regstore.errors import UsageError

if TYPE_CHECKING:
    from .sync import SyncPlan

__all__ = ["MAX_SHARDS", "Shard", "shard_index"]

#: The most shares a plan may be cut into (beyond it a share of a realistic plan is empty).
MAX_SHARDS = 100_000

_SHARD_RE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", re.ASCII)


def shard_index(reference: str, count: int) -> int:
    """The share (0-based, below ``count``) that ``reference`` falls in: the first 8 bytes of
    its SHA-256 modulo ``count`` (stable across runs, processes, hosts and Python versions,
    unlike ``hash()``)."""
    value = int.from_bytes(hashlib.sha256(reference.encode("utf-8")).digest()[:8], "big")
    return value % count


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (1-based, as written) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise UsageError(f"the shard count must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 1 <= self.index <= self.count:
            raise UsageError(
                f"shard {self.index}/{self.count}: the index must be 1 to {self.count}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (e.g. ``2/8``) as a Shard; UsageError says what is wrong."""
        match = _SHARD_RE.fullmatch(text)
        if match is None:
            raise UsageError(f"{text!r} is not a shard: write I/N, e.g. 1/4 (share 1 of 4)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def takes(self, reference: str) -> bool:
        """True if the image with source ``reference`` belongs to this share."""
        return shard_index(reference, self.count) == self.index - 1

    def select(self, plan: SyncPlan) -> SyncPlan:
        """The part of ``plan`` this share runs: its jobs, the invalid tags it reports and the
        tags it prunes.

        Listing failures stay in every share: a repository that could not be listed may hold
        images of any share, so each share reports it (and fails). An image the plan failed
        itself (a UsageError: images of the sync file that would write one tag) is reported by
        its own share.
        """
        return dataclasses.replace(
            plan,
            jobs=[job for job in plan.jobs if self.takes(str(job.source))],
            # a tag to prune goes in the share its image would have gone in
            prunes=[dataclasses.replace(scope, takes=self.takes) for scope in plan.prunes],
            skipped=[o for o in plan.skipped if self.takes(o.source)],
            failures=[
                o
                for o in plan.failures
                if not isinstance(o.exception, UsageError) or self.takes(o.source)
            ],
        )
