"""What a transfer would do, without doing it: ``pull``, ``push`` and ``copy --dry-run``.

The source's manifests are read as the transfer would read them (its plan, the platforms
applied, an index rewritten for a destination that cannot hold part of one), and the
destination is asked what it holds; nothing is written. The answer is what the run would
decide for the image (``copy`` or ``skip``, by the rule of :func:`~.lookahead.unchanged`)
and what it would move: the image's blobs, and those of them the destination lacks, with
their sizes, where the destination can tell (a place's optional ``has_blob``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from regstore.reference import is_digest

from .lookahead import unchanged
from .model import Image
from .places import destination_digest, sink_of, source_of
from .transfer import TransferOptions, fit_to_sink, plan_image, resolve_destination

__all__ = ["TransferPreview", "preview_transfer"]


@dataclass(frozen=True)
class TransferPreview:
    """What moving ``source`` to ``destination`` would do.

    Attributes:
        source, destination: the images (the destination with the tag it would get).
        action: ``copy``, or ``skip`` when the destination already holds the image under
            that tag (or digest), as the run would find it.
        digest: the manifest the destination would name (an index of some platforms
            rewritten for a registry has a digest of its own).
        manifests: manifests the run would write (the top one and the children taken).
        blobs, size: the image's blobs (each once) and their bytes.
        missing_blobs, missing_size: of these, the ones the destination lacks, and their
            bytes; None when the destination cannot tell without writing.
    """

    source: str
    destination: str
    action: Literal["copy", "skip"]
    digest: str
    manifests: int
    blobs: int
    size: int
    missing_blobs: int | None
    missing_size: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def preview_transfer(
    source: Image, destination: Image, *, platforms: Sequence[str] | None = None
) -> TransferPreview:
    """What :func:`~regstore.engine.transfer_one` of ``source`` to ``destination`` (with
    ``platforms``) would do, found by reading only: the source's manifests, the destination's
    tag, and (where the destination can tell) which blobs it has.

    Raises what planning the transfer raises: ImageManifestNotFoundError when the source has
    no such image, PlatformNotFoundError when no platform matches, UsageError when the
    source names no tag or digest.
    """
    options = TransferOptions.build(platforms)
    target = resolve_destination(source, destination)
    src, sink = source_of(source), sink_of(target)
    plan = plan_image(source, options)
    if not sink.accepts_partial_index:
        plan = fit_to_sink(plan)
    digest = str(plan.top.digest)
    tag = target.reference if target.reference and not is_digest(target.reference) else None
    if tag is not None and source.reference is not None:
        same = unchanged(None, src, sink, source.reference, tag, options.platforms)
        action: Literal["copy", "skip"] = "skip" if same == digest else "copy"
    else:  # by digest: held when the destination has that manifest
        action = "skip" if destination_digest(sink, digest) == digest else "copy"
    blobs = list(plan.blobs.values())
    has_blob = getattr(sink, "has_blob", None)
    missing = None if has_blob is None else [b for b in blobs if not has_blob(str(b.digest))]
    return TransferPreview(
        source=str(source),
        destination=str(target),
        action=action,
        digest=digest,
        manifests=1 + len(plan.children),
        blobs=len(blobs),
        size=sum(max(b.size, 0) for b in blobs),
        missing_blobs=None if missing is None else len(missing),
        missing_size=None if missing is None else sum(max(b.size, 0) for b in missing),
    )
