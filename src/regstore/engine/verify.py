"""Verifying a store: every manifest hashes to its digest, every reference exists, every blob
re-hashes to its digest and has the size the manifests say.

:func:`verify` reads through the :class:`~regstore.store.ObjectStore` facade only, so it works
the same on every backend. Each blob is read (streamed, never held whole) once, however many
manifests share it; blobs are hashed concurrently.

A blob whose bytes do not hash to its digest (a damaged layer, config or manifest) is
*quarantined*: moved aside into the store's working area (``ObjectStore.quarantine_blob``), so
that it is no longer "in the store" and a plain ``pull`` of an affected image fetches it again
(a pull skips blobs the store has). The problem names where it went; ``gc`` removes quarantined
bytes after its grace. ``quarantine=False`` only reports. Nothing else is changed or deleted.

The report also lists the store's *staging* leftovers (``ObjectStore.staging``): bytes staged
by writers that never finished, incomplete multipart uploads, locks, temporary files and
quarantined blobs, with their sizes and ages. They are not problems (the next pull of the same
blob resumes staged bytes; ``gc`` collects the abandoned ones), so they do not fail a verify.

Problems (``Problem.kind``):

- ``damaged-manifest``: the stored manifest bytes do not hash to their digest, or do not parse;
- ``wrong-child-size``: an index lists a child manifest with another size than its bytes'
  (clients that check sizes refuse it; its source serves it so: pulling again does not mend
  it, a pull now refuses it);
- ``dangling-tag``: a tag points at a manifest that is not stored;
- ``damaged-tag``: a tag's link names no digest (what it named is unknown: ``delete`` of
  another image of the repository, and ``gc`` unless it keeps orphan referrers, refuse to
  run while one is there); pulling the image again rewrites it, deleting the tag removes it;
- ``unreadable``: a stored manifest, the manifest a tag names, or a blob could not be read at
  all (an I/O error, a permission, for a manifest a directory where its file belongs: the
  detail names it) while the store still answers; the rest is still checked (a store that
  stops answering, or whose every blob fails to read, fails the verify with its error
  instead), and ``gc`` refuses to run until the manifest reads (a directory where a blob's
  file belongs reads as a ``missing-blob``);
- ``missing-manifest``: an index refers to a child manifest that is not stored (not reported
  for an index the store knows was written partially, by a platform filter);
- ``missing-blob``: a manifest refers to a blob that is not in the store;
- ``unlinked-blob``: a manifest refers to a stored blob that its repository does not lead
  to: the distribution layout's ``_layers`` link of the blob in that repository is missing (a
  registry serving the store answers 404 for the blob there) or holds anything but the
  blob's digest (it fails there, or answers with the bytes of the blob the link names);
  writing the image into the repository again (a pull or copy of that image; a sync, or a
  pull of many tags, skips an unchanged image) links it; a link that cannot be read is
  ``unreadable``;
- ``damaged-blob``: a blob does not hash to its digest, or its size differs from the one in
  the referring manifests;
- ``missing-subject``: a referrer (a manifest with ``subject``: a signature, an SBOM) whose
  subject manifest is not stored in its repository (``gc`` removes such referrers, but for
  those a regular tag names);
- ``unindexed-referrer``: a referrer its subject's referrers index does not list (a write
  interrupted between the two; pulling the image again with referrers lists it: a referrer
  found already stored is added to its index then).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from regstore.digest import CHUNK_SIZE, Digester
from regstore.errors import (
    BlobNotFoundError,
    DamagedTagError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    NotFoundError,
    RegstoreError,
    StoreError,
)
from regstore.events import EventKind, EventSink, TransferEvent
from regstore.reference import Digest
from regstore.storetypes import BlobState, StagingEntry

if TYPE_CHECKING:
    from regstore.manifest import Manifest
    from regstore.store import ObjectStore

__all__ = [
    "Problem",
    "ProblemKind",
    "VerifyReport",
    "hash_stored_blob",
    "quarantine_damaged",
    "verify",
]

#: What :class:`Problem` can be (see the module docstring).
ProblemKind = Literal[
    "damaged-manifest",
    "dangling-tag",
    "damaged-tag",
    "unreadable",
    "missing-manifest",
    "missing-blob",
    "unlinked-blob",
    "damaged-blob",
    "missing-subject",
    "unindexed-referrer",
    "wrong-child-size",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the store."""

    kind: ProblemKind
    repository: str
    subject: str  #: the digest (or tag) that is wrong
    detail: str
    referenced_by: tuple[str, ...] = ()
    #: where the damaged blob was moved aside (None: not quarantined; see ``detail``)
    quarantined: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "kind": self.kind,
            "repository": self.repository,
            "subject": self.subject,
            "detail": self.detail,
            "referenced_by": list(self.referenced_by),
            "quarantined": self.quarantined,
        }

    def __str__(self) -> str:
        text = f"{self.kind} {self.subject} in {self.repository}: {self.detail}"
        return f"{text} (quarantined to {self.quarantined})" if self.quarantined else text


@dataclass
class VerifyReport:
    """What :func:`verify` checked and found."""

    repositories: list[str] = field(default_factory=list)
    manifests_checked: int = 0
    tags_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: leftovers in the store's working area (not problems: see the module docstring)
    staging: list[StagingEntry] = field(default_factory=list)
    #: why the staging area could not be listed (unsupported, not permitted), if so
    staging_error: str | None = None
    #: when the staging area was listed (ages are relative to it)
    checked_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """True when nothing is damaged or missing."""
        return not self.problems

    @property
    def quarantined(self) -> list[Problem]:
        """The problems whose blob was moved aside (a pull of the image fetches it again)."""
        return [p for p in self.problems if p.quarantined]

    @property
    def abandoned(self) -> list[StagingEntry]:
        """Staging entries no live writer holds (``gc`` removes them after its grace)."""
        return [e for e in self.staging if not e.active]

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
            "staging": [e.as_dict(self.checked_at) for e in self.staging],
            "staging_bytes": sum(e.size for e in self.staging),
            "staging_error": self.staging_error,
        }


@dataclass
class _BlobUse:
    """A blob referenced by manifests: the sizes they announce and who they are."""

    sizes: set[int] = field(default_factory=set)
    users: list[tuple[str, str]] = field(default_factory=list)  # (repository, manifest digest)


def hash_stored_blob(
    store: ObjectStore, digest: Digest, sink: EventSink | None = None
) -> tuple[Digest, int]:
    """Re-hash the complete blob ``digest`` (streamed): ``(actual digest, size)``.

    ``sink`` receives ``verify`` STARTED and PROGRESS events. Raises BlobNotFoundError if the
    blob is not complete, StoreError if it cannot be read.
    """
    digester = Digester(digest.algorithm)
    # hashed here, to learn the actual digest: the reader's own check would only raise
    with store.layer(digest).reader(verify=False) as reader:
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


def quarantine_damaged(store: ObjectStore, problem: Problem) -> Problem:
    """Move the damaged blob of ``problem`` aside; the problem says where (or why not).

    Only for a blob whose bytes do not hash to its digest: that copy is useless, and while it
    is in the store a pull skips it. A lock held by a writer or a backend without the
    operation leaves the blob in place, with the reason in the detail.
    """
    try:
        where = store.set_aside(problem.subject)
    except RegstoreError as exc:
        return replace(problem, detail=f"{problem.detail}; not quarantined: {exc}")
    return replace(problem, quarantined=where)


def _damaged_bytes(store: ObjectStore, digest: Digest) -> bool:
    """True if the blob ``digest`` is complete and its bytes hash to something else."""
    try:
        if store.blob_status(digest).state is not BlobState.COMPLETE:
            return False
        actual, _ = hash_stored_blob(store, digest)
    except RegstoreError:
        return False
    return actual != digest


def verify(
    store: ObjectStore,
    name: str | None = None,
    *,
    concurrency: int = 4,
    events: EventSink | None = None,
    quarantine: bool = True,
) -> VerifyReport:
    """Check the manifests, tags and blobs of every repository of ``store`` (or of ``name``).

    ``events`` receives ``verify`` events per blob (STARTED, PROGRESS, VERIFIED or FAILED) for
    a progress display. Blobs (and manifests) whose bytes do not hash to their digest are
    quarantined unless ``quarantine`` is False. The report lists the staging area too.
    Raises only when the store cannot be listed at all (RepositoryNotFoundError for an
    unknown ``name``, StoreError ...), stops listing a repository after a read failed, or
    failed every read of a manifest or tag, or of a blob: that is an outage, or a store this
    process may not read, and not damage to report.
    """
    report = VerifyReport()
    unreadable = _Unreadable(store, report)
    names = [name] if name is not None else store.repositories()
    report.repositories = list(names)
    uses: dict[Digest, _BlobUse] = {}

    for repo in names:
        digests = store.manifests(repo)
        stored = set(digests)
        lengths: dict[Digest, int] = {}
        indexes: list[Manifest] = []
        for digest in digests:
            report.manifests_checked += 1
            manifest = _load_manifest(store, repo, digest, report, unreadable)
            if manifest is None:
                continue
            lengths[digest] = len(manifest.raw)
            if manifest.manifests:
                indexes.append(manifest)
            _check_children(store, repo, digest, manifest, stored, report)
            if manifest.subject is not None and manifest.subject.digest not in stored:
                report.problems.append(
                    Problem(
                        "missing-subject",
                        repo,
                        str(digest),
                        f"it refers to {manifest.subject.digest}, which is not stored",
                    )
                )
            elif manifest.subject is not None and not _indexed(
                store, repo, manifest.subject.digest, digest
            ):
                report.problems.append(
                    Problem(
                        "unindexed-referrer",
                        repo,
                        str(digest),
                        f"the referrers index of {manifest.subject.digest} does not list it; "
                        "pull or copy its image again with --referrers",
                    )
                )
            for blob in manifest.blobs:
                use = uses.setdefault(blob.digest, _BlobUse())
                if blob.size >= 0:
                    use.sizes.add(blob.size)
                use.users.append((repo, str(digest)))
        _check_child_sizes(repo, indexes, lengths, report)
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
            except DamagedTagError as exc:
                detail = f"{exc}; pull the image again to rewrite it, or delete the tag"
                report.problems.append(Problem("damaged-tag", repo, tag, detail))
            except StoreError as exc:
                unreadable.report(repo, tag, exc)
                continue
            unreadable.answered += 1  # (a problem above is an answer too)
    unreadable.check_some_read()

    mismatched: set[str] = set()
    _check_blobs(store, uses, report, concurrency, events, mismatched)
    if quarantine:
        _quarantine(store, report, mismatched)
    _list_staging(store, report)
    return report


def _quarantine(store: ObjectStore, report: VerifyReport, mismatched: set[str]) -> None:
    """Move aside what does not hash to its digest: damaged blobs, then damaged manifests
    (stored as blobs by the fsspec layouts; a pull writes a manifest blob that is absent).
    """
    done: set[str] = set()
    problems = []
    for problem in report.problems:
        wanted = False
        if problem.kind == "damaged-blob":
            wanted = problem.subject in mismatched
        elif problem.kind == "damaged-manifest":
            try:
                wanted = _damaged_bytes(store, Digest(problem.subject))
            except ValueError:  # the subject is a tag: its manifest is reported by digest too
                wanted = False
        if wanted and problem.subject not in done:
            done.add(problem.subject)
            problem = quarantine_damaged(store, problem)
        problems.append(problem)
    report.problems = problems


def _list_staging(store: ObjectStore, report: VerifyReport) -> None:
    report.checked_at = time.time()
    try:
        report.staging = store.staging()
    except RegstoreError as exc:  # unsupported, or not permitted (an S3 policy): still verify
        report.staging_error = str(exc)


def _load_manifest(
    store: ObjectStore, repo: str, digest: Digest, report: VerifyReport, unreadable: _Unreadable
) -> Manifest | None:
    try:
        manifest = store.manifest(repo, digest)  # checks the bytes hash to the digest
        unreadable.answered += 1
        return manifest
    except ManifestInvalidError as exc:
        report.problems.append(Problem("damaged-manifest", repo, str(digest), str(exc)))
    except ImageManifestNotFoundError as exc:  # listed, then unreadable
        report.problems.append(Problem("missing-manifest", repo, str(digest), str(exc)))
    except StoreError as exc:
        unreadable.report(repo, str(digest), exc)
        return None
    unreadable.answered += 1  # damaged or missing: the store answered
    return None


def _still_lists(store: ObjectStore, repo: str) -> bool | None:
    """Whether the store still answers a listing of ``repo``'s manifests after a read in it
    failed: False in an outage (no damage to report), None when the repository was emptied
    meanwhile (nothing there to report)."""
    try:
        store.manifests(repo)
    except NotFoundError:
        return None
    except RegstoreError:
        return False
    return True


@dataclass
class _Unreadable:
    """The manifests and tags a verify cannot read. Each is reported, and the rest checked,
    while the store still lists the repository (asked once per repository, after its first
    failure); else the error is raised: a store that stopped answering (a network store gone)
    is an outage, not damage; a repository emptied meanwhile drops the subject. Then
    :meth:`check_some_read` raises the first error too when no manifest or tag was answered
    at all, not even as damaged or missing (a store this process may not read)."""

    store: ObjectStore
    into: VerifyReport
    #: manifests and tags the store answered for (read, or found damaged or missing)
    answered: int = 0
    first: StoreError | None = None
    answering: dict[str, bool | None] = field(default_factory=dict)

    def report(self, repo: str, subject: str, exc: StoreError) -> None:
        if repo not in self.answering:
            self.answering[repo] = _still_lists(self.store, repo)
        answering = self.answering[repo]
        if answering is None:
            return
        if not answering:
            raise exc
        self.first = self.first or exc
        self.into.problems.append(Problem("unreadable", repo, subject, str(exc)))

    def check_some_read(self) -> None:
        if self.first is not None and self.answered == 0:
            raise self.first


def _indexed(store: ObjectStore, repo: str, subject: Digest, digest: Digest) -> bool:
    """Whether the referrers index of ``subject`` lists ``digest``; True when that index's tag
    is damaged (the tags loop reports the tag itself: one problem, not one per referrer)."""
    try:
        return digest in {d.digest for d in store.referrers(repo, subject)}
    except DamagedTagError:
        return True


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


def _check_child_sizes(
    repo: str, indexes: list[Manifest], lengths: dict[Digest, int], report: VerifyReport
) -> None:
    """Report each index listing a stored child manifest with a size other than its bytes'
    (``wrong-child-size``: clients that check sizes, containerd among them, refuse it)."""
    for index in indexes:
        for child in index.manifests:
            length = lengths.get(child.digest)
            if length is not None and length != child.size:
                report.problems.append(
                    Problem(
                        "wrong-child-size",
                        repo,
                        str(index.digest),
                        f"it lists the manifest {child.digest} with size {child.size}, but "
                        f"that manifest is {length} bytes",
                    )
                )


def _report_unread(
    store: ObjectStore,
    report: VerifyReport,
    unread: list[tuple[Problem, RegstoreError]],
    checked: int | None = None,
) -> None:
    """Report the blobs (or blob links) that could not be read (``unreadable``: an I/O error,
    a permission), or raise the first error: when none of ``checked`` blobs was read at all (a
    store this process may not read), or when the store no longer lists the manifests of a
    repository they are in (an outage while verifying is no damage: every read after it would
    fail alike). Asked once, after the blobs: an outage that ended before that leaves its
    blobs reported."""
    first = min(unread, key=lambda u: u[0].subject)[1]
    if len(unread) == checked:
        raise first
    for repo in sorted({problem.repository for problem, _ in unread}):
        if _still_lists(store, repo) is False:  # (None, emptied meanwhile: the rest reported)
            raise first
    report.problems += [problem for problem, _ in unread]


def _link_problems(
    store: ObjectStore, digest: Digest, use: _BlobUse
) -> tuple[list[Problem], list[tuple[Problem, RegstoreError]]]:
    """``unlinked-blob`` for each repository of ``use`` that does not lead to the stored blob
    ``digest``; and apart, ``unreadable`` with its error where the link cannot be read (damage
    only while the store still answers: :func:`_report_unread`)."""
    problems: list[Problem] = []
    unread: list[tuple[Problem, RegstoreError]] = []
    for repo in sorted({r for r, _ in use.users}):
        referrers = tuple(sorted({m for r, m in use.users if r == repo}))
        try:
            why = store.unlinked_blobs(repo, [str(digest)]).get(digest)
        except StoreError as exc:
            problem = Problem("unreadable", repo, str(digest), f"its link: {exc}", referrers)
            unread.append((problem, exc))
            continue
        if why is not None:
            detail = (
                f"{why}; pull or copy the image into this repository again to link it (a "
                "sync, or a pull of many tags, skips an unchanged image)"
            )
            problems.append(Problem("unlinked-blob", repo, str(digest), detail, referrers))
    return problems, unread


def _check_blobs(
    store: ObjectStore,
    uses: dict[Digest, _BlobUse],
    report: VerifyReport,
    concurrency: int,
    events: EventSink | None,
    mismatched: set[str],
) -> None:
    lock = threading.Lock()
    #: blobs that could not be read: damage only while the store still answers (below)
    unread: list[tuple[Problem, RegstoreError]] = []
    unread_links: list[tuple[Problem, RegstoreError]] = []  # (likewise)

    def check(digest: Digest, use: _BlobUse) -> None:
        repos = sorted({r for r, _ in use.users})
        repo = repos[0]
        referrers = tuple(sorted({m for _, m in use.users}))
        problem: Problem | None = None
        size = 0
        damaged_bytes = False
        read_error: RegstoreError | None = None
        try:
            status = store.blob_status(digest)
            if status.state is not BlobState.COMPLETE:
                raise BlobNotFoundError(None, digest)
            actual, size = hash_stored_blob(store, digest, events)
            if actual != digest:
                damaged_bytes = True
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
            problem = Problem("unreadable", repo, str(digest), str(exc), referrers)
            read_error = exc
        if problem is not None and len(repos) > 1:  # one problem, named in the first of them
            used = f"; used in {len(repos)} repositories: {', '.join(repos)}"
            problem = replace(problem, detail=problem.detail + used)
        if events is not None:
            kind = EventKind.VERIFIED if problem is None else EventKind.FAILED
            error = problem.detail if problem is not None else None
            events(TransferEvent(kind, "verify", "", digest, total=size, error=error))
        # a blob that is there: does each repository whose manifests refer to it lead to it?
        links: list[Problem] = []
        links_unread: list[tuple[Problem, RegstoreError]] = []
        if problem is None or problem.kind == "damaged-blob":
            links, links_unread = _link_problems(store, digest, use)
        with lock:
            report.problems += links
            unread_links.extend(links_unread)
            report.blobs_checked += 1
            report.bytes_checked += size
            if read_error is not None and problem is not None:
                unread.append((problem, read_error))
            elif problem is not None:
                report.problems.append(problem)
            if damaged_bytes:
                mismatched.add(str(digest))

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(check, d, u) for d, u in sorted(uses.items())]
        for future in futures:
            future.result()
    if unread:
        _report_unread(store, report, unread, len(uses))
    if unread_links:
        _report_unread(store, report, unread_links)
    report.problems.sort(key=lambda p: (p.repository, p.kind, p.subject))
