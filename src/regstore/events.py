"""Transfer events: what the engine reports to observers (progress bars, metrics, logs).

Values only; they travel through the ``regstore_transfer_event`` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

__all__ = ["EventKind", "EventSink", "Operation", "TransferEvent"]

#: What an event is part of: moving an image (``pull``, ``push``, ``copy``) or re-hashing a
#: store's content (``verify``, also used by a repair).
Operation = Literal["pull", "push", "copy", "verify"]


class EventKind(str, Enum):
    """What happened to a blob or manifest."""

    STARTED = "started"  #: a transfer began; ``total`` is the size, ``offset`` where it resumes
    PROGRESS = "progress"  #: ``nbytes`` more bytes moved; ``offset`` is the running position
    SKIPPED = "skipped"  #: the destination already had it
    MOUNTED = "mounted"  #: a registry mounted it from another repository
    VERIFIED = "verified"  #: its digest checked out and it was committed
    FAILED = "failed"  #: it failed; ``error`` says why
    MANIFEST = "manifest"  #: a manifest was written (``tag`` set when it was tagged)
    WARNING = "warning"  #: something was left out without failing; ``error`` says what
    #: a blob the image will move, sent for every blob of its plan before the first one
    #: moves (``total`` is its size, -1 when unknown): what a display's total counts up front
    PLANNED = "planned"

    def __str__(self) -> str:
        # The value, on every Python: 3.11 changed str()/format() of (str, Enum) members to
        # "EventKind.STARTED", which would leak into progress lines and logs.
        return str(self.value)


@dataclass(frozen=True)
class TransferEvent:
    """One event about one piece of content in one operation.

    ``operation`` is ``pull``, ``push``, ``copy`` or ``verify``; ``image`` the reference being
    moved; ``digest`` the blob or manifest; ``total`` its size when known (-1 otherwise).
    """

    kind: EventKind
    operation: Operation
    image: str
    digest: str
    total: int = -1
    offset: int = 0
    nbytes: int = 0
    media_type: str = ""
    tag: str | None = None
    error: str | None = None


#: The type of every ``events=`` argument: a callable receiving each :class:`TransferEvent`.
EventSink = Callable[[TransferEvent], None]
