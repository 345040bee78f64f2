"""Spreading images over workers by bytes, not by count.

The heuristic is the classic *longest processing time first* (LPT, Graham 1969): take the
images from the largest to the smallest and give each to the worker with the fewest bytes
assigned so far. A 5 GiB image and fifty 10 MiB ones on two workers end up as the big one on
one worker and the fifty on the other, not 25 + 26 images with the big one somewhere among
them. LPT's makespan is within 4/3 of the optimum; sizes are the sum of an image's blob sizes
from its manifests (what the destination already holds is not subtracted: an estimate).

The assignment is a *preference*: tasks are submitted with ``workers=[chosen]`` and
``allow_other_workers=True`` (and a priority by size, the largest first), so Dask may still
run a task elsewhere when its preferred worker is gone or busy for long (work stealing), and a
worker that dies does not strand its share.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

__all__ = ["assign_by_bytes"]


def assign_by_bytes(sizes: Sequence[int], workers: Sequence[str]) -> list[str]:
    """The worker for each image of ``sizes`` (bytes; a negative size counts as 0), LPT.

    Ties go to the worker listed first, so the assignment is deterministic for given inputs.
    ValueError when there is no worker.
    """
    if not workers:
        raise ValueError("no worker to assign images to")
    order = sorted(range(len(sizes)), key=lambda i: (-max(sizes[i], 0), i))
    heap = [(0, rank, worker) for rank, worker in enumerate(workers)]
    heapq.heapify(heap)
    chosen = [""] * len(sizes)
    for i in order:
        load, rank, worker = heapq.heappop(heap)
        chosen[i] = worker
        heapq.heappush(heap, (load + max(sizes[i], 0), rank, worker))
    return chosen
