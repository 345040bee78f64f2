"""Verifying a store: every manifest hashes to its digest, every reference exists, every blob
re-hashes to its digest and has the size the manifests say.

:func:`verify` reads through the :class:`~regstore.store.ObjectStore` facade only, so it works
the same on every backend. Each blob is read (streamed, never held whole) once, however many
manifests share it; blobs are hashed concurrently. Nothing is repaired or deleted: the report
says what is damaged or missing, and a new pull of the affected images repairs them.

Problems (``Problem.kind``):

- ``damaged-manifest``: the stored manifest bytes do not hash to their digest, or do not parse;
- ``dangling-tag``: a tag points at a manifest that is not stored;
- ``missing-manifest``: an index refers to a child manifest that is not stored (not reported
  for an index the store knows was written partially, by a platform filter);
- ``missing-blob``: a manifest refers to a blob that is not in the store;
- ``damaged-blob``: a blob does not hash to its digest, or its size differs from the one in
  the referring manifests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regstore.digest import CHUNK_SIZE, Digester
from regstore.errors import (
    BlobNotFoundError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    NotFoundError,
    RegstoreError,
)
from regstore.events import EventKind, TransferEvent
from regstore.hookspecs import BlobState
from regstore.reference import Digest

if TYPE_CHECKING:
    from regstore.manifest import Manifest
    from regstore.store import ObjectStore

__all__ = ["Problem", "VerifyReport", "verify"]

EventSink = Callable[[TransferEvent], None]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the store."""

    kind: str
    repository: str
    subject: str  #: the digest (or tag) that is wrong
    detail: str
    referenced_by: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "kind": self.kind,
            "repository": self.repository,
            "subject": self.subject,
            "detail": self.detail,
            "referenced_by": list(self.referenced_by),
        }

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} in {self.repository}: {self.detail}"


@dataclass
class VerifyReport:
    """What :func:`verify` checked and found."""

    repositories: list[str] = field(default_factory=list)
    manifests_checked: int = 0
    tags_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is damaged or missing."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "ok": self.ok,
            "repositories": list(self.repositories),
            "manifests_checked": self.manifests_checked,
            "tags_checked": self.tags_checked,
            "blobs_checked": self.blobs_checked,
            "bytes_checked": self.bytes_checked,
            "problems": [p.as_dict() for p in self.problems],
        }


@dataclass
class _BlobUse:
    """A blob referenced by manifests: the sizes they announce and who they are."""

    sizes: set[int] = field(default_factory=set)
    users: list[tuple[str, str]] = field(default_factory=list)  # (repository, manifest digest)


def _hash_blob(store: ObjectStore, digest: Digest, sink: EventSink | None) -> tuple[Digest, int]:
    digester = Digester(digest.algorithm)
    with store.layer(digest).reader() as reader:
        if sink is not None:
            sink(TransferEvent(EventKind.STARTED, "verify", "", digest, total=reader.size))
        for chunk in reader.chunks(CHUNK_SIZE):
            digester.update(chunk)
            if sink is not None:
                sink(
                    TransferEvent(
                        EventKind.PROGRESS,
                        "verify",
                        "",
                        digest,
                        total=reader.size,
                        offset=digester.size,
                        nbytes=len(chunk),
                    )
                )
    return digester.digest(), digester.size


def verify(
    store: ObjectStore,
    name: str | None = None,
    *,
    concurrency: int = 4,
    events: EventSink | None = None,
) -> VerifyReport:
    """Check the manifests, tags and blobs of every repository of ``store`` (or of ``name``).

    ``events`` receives ``verify`` events per blob (STARTED, PROGRESS, VERIFIED or FAILED) for
    a progress display. Raises only when the store cannot be listed at all
    (RepositoryNotFoundError for an unknown ``name``, StoreError ...).
    """
    report = VerifyReport()
    names = [name] if name is not None else store.repositories()
    report.repositories = list(names)
    uses: dict[Digest, _BlobUse] = {}

    for repo in names:
        digests = store.manifests(repo)
        stored = set(digests)
        for digest in digests:
            report.manifests_checked += 1
            manifest = _load_manifest(store, repo, digest, report)
            if manifest is None:
                continue
            _check_children(store, repo, digest, manifest, stored, report)
            for blob in manifest.blobs:
                use = uses.setdefault(blob.digest, _BlobUse())
                if blob.size >= 0:
                    use.sizes.add(blob.size)
                use.users.append((repo, str(digest)))
        for tag in store.tags(repo):
            report.tags_checked += 1
            try:
                store.manifest(repo, tag)
            except ImageManifestNotFoundError:
                report.problems.append(
                    Problem("dangling-tag", repo, tag, "the tag points at a missing manifest")
                )
            except ManifestInvalidError as exc:
                report.problems.append(Problem("damaged-manifest", repo, tag, str(exc)))

    _check_blobs(store, uses, report, concurrency, events)
    return report


def _load_manifest(
    store: ObjectStore, repo: str, digest: Digest, report: VerifyReport
) -> Manifest | None:
    try:
        return store.manifest(repo, digest)  # checks the bytes hash to the digest
    except ManifestInvalidError as exc:
        report.problems.append(Problem("damaged-manifest", repo, str(digest), str(exc)))
    except ImageManifestNotFoundError as exc:  # listed, then unreadable
        report.problems.append(Problem("missing-manifest", repo, str(digest), str(exc)))
    return None


def _check_children(
    store: ObjectStore,
    repo: str,
    digest: Digest,
    manifest: Manifest,
    stored: set[Digest],
    report: VerifyReport,
) -> None:
    if not manifest.manifests:
        return
    missing = [c for c in manifest.manifests if c.digest not in stored]
    if not missing:
        return
    try:
        partial = store.is_partial(repo, digest)
    except RegstoreError:
        partial = False
    if partial:
        return
    for child in missing:
        if store.has_manifest(repo, child.digest):  # stored since the listing
            continue
        platform = f" ({child.platform})" if child.platform is not None else ""
        report.problems.append(
            Problem(
                "missing-manifest",
                repo,
                str(child.digest),
                f"child manifest{platform} of index {digest} is not stored",
                (str(digest),),
            )
        )


def _check_blobs(
    store: ObjectStore,
    uses: dict[Digest, _BlobUse],
    report: VerifyReport,
    concurrency: int,
    events: EventSink | None,
) -> None:
    lock = threading.Lock()

    def check(digest: Digest, use: _BlobUse) -> None:
        repo = use.users[0][0]
        referrers = tuple(sorted({m for _, m in use.users}))
        problem: Problem | None = None
        size = 0
        try:
            status = store.blob_status(digest)
            if status.state is not BlobState.COMPLETE:
                raise BlobNotFoundError(None, digest)
            actual, size = _hash_blob(store, digest, events)
            if actual != digest:
                problem = Problem(
                    "damaged-blob",
                    repo,
                    str(digest),
                    f"content hashes to {actual}",
                    referrers,
                )
            elif use.sizes and size not in use.sizes:
                wanted = ", ".join(str(s) for s in sorted(use.sizes))
                problem = Problem(
                    "damaged-blob",
                    repo,
                    str(digest),
                    f"{size} bytes, the manifests say {wanted}",
                    referrers,
                )
        except (BlobNotFoundError, NotFoundError):
            problem = Problem("missing-blob", repo, str(digest), "not in the store", referrers)
        except RegstoreError as exc:
            problem = Problem("damaged-blob", repo, str(digest), str(exc), referrers)
        if events is not None:
            kind = EventKind.VERIFIED if problem is None else EventKind.FAILED
            error = problem.detail if problem is not None else None
            events(TransferEvent(kind, "verify", "", digest, total=size, error=error))
        with lock:
            report.blobs_checked += 1
            report.bytes_checked += size
            if problem is not None:
                report.problems.append(problem)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(check, d, u) for d, u in sorted(uses.items())]
        for future in futures:
            future.result()
    report.problems.sort(key=lambda p: (p.repository, p.kind, p.subject))
