"""Garbage collection: delete blobs that no manifest of the store references.

Safe beside a running pull or push:

- the blobs are listed *before* the manifests are read, so a blob committed after the listing
  is not a candidate, and a manifest written after it is still read;
- a blob younger than the grace period (default one hour, by the commit time the backend
  reports) is never deleted: the engine commits an image's blobs before its manifest, and a
  transfer that takes longer than the grace between its first blob and its manifest is the
  only one at risk (raise ``grace`` for those);
- a blob a pull reuses (found present) is claimed first (``ObjectStore.claim_blob``), which
  dates it as used now; gc decides each deletion under the same lock, looking at that date
  again, so an old unreferenced blob that a running pull has just decided to reuse is kept
  (or, deleted first, is fetched again by the pull). Backends that keep no such date (see
  ``regstore_store_mark_blob_used``) protect a reused blob by its commit time only;
- when a manifest cannot be read, what it references is unknown, so nothing is deleted (run
  ``verify``, then re-pull or delete the damaged image); so too when a tag cannot be read or
  names a manifest its repository does not hold (its bytes and blobs may still be stored).

:func:`delete_image` removes a tag (or a manifest by digest) together with the manifests only it
kept reachable (an untagged image, the children of a deleted index), so that their blobs become
garbage for the next collection.

Manifests themselves are blobs in some layouts (``list_blobs`` lists them); every stored
manifest's digest counts as referenced, as does everything a manifest references (config,
layers, index children, subject), and what the stored children of an index reference where
its repository does not list them (an index another tool wrote into an OCI layout, a child
deleted through a registry's API: the index still serves it).

Referrers (signatures, SBOMs, attestations: manifests with a ``subject``) live as long as their
subject: once the subject manifest is gone from the repository, gc deletes them, then what
referred to them (an attestation of a deleted SBOM), the subject's referrers index and cosign's
``sha256-<hex>.sig``/``.att``/``.sbom`` tags of it, before collecting blobs, so their blobs go in
the same run. A manifest a regular tag points at is never removed this way (an SBOM pulled by
its own tag without its image is an image of its own); untagged referrers and those only
supply-chain tags name are. The same pass removes earlier versions of referrers indexes that no
tag points at any more (each update writes a new version). ``keep_orphan_referrers=True`` keeps
them all.

With ``untagged=True`` (``gc --untagged``), manifests no tag reaches go first: a mirror of a
moving tag (``latest`` pulled daily) otherwise keeps every earlier image, and their blobs, for
ever. Kept are the manifests a tag names, what they reach (an index's children), the image an
artifact tagged on its own refers to, and their referrers (signatures, SBOMs, attestations of
what is kept, and what those reach; with ``keep_orphan_referrers``, whatever has referrers
stays with them); an index goes before its children, and a manifest
goes only once its bytes are older than the grace period and not claimed within it (a pull
writes an image's manifest before its tag, and claims stored manifest bytes before it tags them
again, see ``ObjectStore.write_manifest``), decided under the lock a claim takes. An image
pulled by digest is untagged: it goes too (``--dry-run`` lists
what would). Its blobs go in the same run.

The staging area is collected too (``ObjectStore.staging``): what writers that died left
behind (staged bytes, incomplete multipart uploads, lock files or expired lock objects,
temporary files) and blobs ``verify`` quarantined, once older than the same grace and only
when no live writer holds them (a flock still held, a lease still renewed). Each removal is
refused by the backend if a writer took the entry up again meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regstore.errors import (
    BlobNotFoundError,
    DamagedTagError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    NotFoundError,
    RegstoreError,
    StoreDamageError,
    StoreError,
)
from regstore.manifest import MANIFEST_MAX_SIZE, OCI_INDEX, Descriptor, Manifest
from regstore.reference import Digest, is_digest
from regstore.referrers import (
    is_referrers_tag,
    referrer_descriptor,
    referrers_tag,
    sigstore_tags,
    subject_of_tag,
)
from regstore.store import blob_use_lock_key

if TYPE_CHECKING:
    from regstore.store import ObjectStore
    from regstore.storetypes import BlobInfo, StagingEntry

__all__ = [
    "DEFAULT_GRACE",
    "GCReport",
    "collect_garbage",
    "delete_image",
    "manifests_reached",
    "orphan_referrers",
    "referenced_digests",
    "tags_of",
]

log = logging.getLogger("regstore.engine")

#: Seconds a blob is protected after its commit or its last reuse (``ObjectStore.claim_blob``).
DEFAULT_GRACE = 3600.0


@dataclass
class GCReport:
    """What :func:`collect_garbage` removed (or, in a dry run, would remove) and kept."""

    dry_run: bool = False
    grace: float = DEFAULT_GRACE
    blobs: int = 0
    referenced: int = 0
    removed: list[BlobInfo] = field(default_factory=list)
    kept_young: list[BlobInfo] = field(default_factory=list)
    #: staging entries removed (or, in a dry run, that would be)
    staging_removed: list[StagingEntry] = field(default_factory=list)
    #: staging entries kept: held by a live writer, younger than the grace, or taken up again
    staging_kept: list[StagingEntry] = field(default_factory=list)
    #: why the staging area was not collected (unsupported, not permitted), if so
    staging_error: str | None = None
    now: float = 0.0
    #: ``name@digest`` of the referrers (and their indexes, sigstore tags' manifests) removed
    #: because their subject is gone (or, in a dry run, that would be)
    referrers_removed: list[str] = field(default_factory=list)
    #: ``name@digest`` of the manifests no tag reaches that were removed (``untagged``; or, in a
    #: dry run, that would be)
    untagged_removed: list[str] = field(default_factory=list)
    #: ``name@digest`` of the manifests no tag reaches kept: younger than the grace, or claimed
    untagged_kept: list[str] = field(default_factory=list)

    @property
    def bytes_removed(self) -> int:
        """Blob bytes freed (or that would be freed)."""
        return sum(b.size for b in self.removed)

    @property
    def staging_bytes_removed(self) -> int:
        """Staging bytes freed (or that would be freed)."""
        return sum(e.size for e in self.staging_removed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace,
            "blobs": self.blobs,
            "referenced": self.referenced,
            "removed": [{"digest": b.digest, "size": b.size} for b in self.removed],
            "bytes_removed": self.bytes_removed,
            "kept_young": [{"digest": b.digest, "size": b.size} for b in self.kept_young],
            "staging_removed": [e.as_dict(self.now) for e in self.staging_removed],
            "staging_bytes_removed": self.staging_bytes_removed,
            "staging_kept": [e.as_dict(self.now) for e in self.staging_kept],
            "staging_error": self.staging_error,
            "referrers_removed": list(self.referrers_removed),
            "untagged_removed": list(self.untagged_removed),
            "untagged_kept": list(self.untagged_kept),
        }


def referenced_digests(store: ObjectStore, ignore: set[str] | None = None) -> set[str]:
    """Every digest some stored manifest is or references (but the manifests ``ignore``
    names as ``name@digest``: those a dry run would delete).

    Raises StoreError when a manifest cannot be read (what it references is then unknown),
    or a tag cannot be, or names a manifest its repository does not hold.
    """
    _refuse_dangling_tags(store)
    return _referenced(store, ignore)


def _referenced(store: ObjectStore, ignore: set[str] | None) -> set[str]:
    """:func:`referenced_digests` once the tags were found sound."""
    referenced: set[str] = set()
    for repo in store.repositories():
        listed = store.manifests(repo)
        held = set(listed)
        unlisted: list[Descriptor] = []
        for digest in listed:
            if ignore and f"{repo}@{digest}" in ignore:
                continue
            referenced.add(str(digest))
            manifest = _readable(store, repo, digest)
            referenced.update(str(d.digest) for d in manifest.references)
            unlisted += (child for child in manifest.manifests if child.digest not in held)
        _referenced_by_unlisted(store, repo, unlisted, referenced)
    return referenced


def _referenced_by_unlisted(
    store: ObjectStore, repo: str, children: list[Descriptor], referenced: set[str]
) -> None:
    """Add what the index children ``children`` of ``repo`` reference, which the repository
    does not list but whose bytes are stored (another tool's index, whose children need no
    entry of their own in an OCI layout; a child deleted through a registry's API, which
    removes its revision link only): they are still read through their index, and gc took
    their configs and layers. A child whose bytes are not stored (left out by a platform
    filter) references nothing here."""
    seen: set[Digest] = set()
    stack = list(children)
    while stack:
        child = stack.pop()
        if child.digest in seen:
            continue
        seen.add(child.digest)
        try:
            with store.layer(str(child.digest)).reader() as reader:  # checked against its digest
                raw = reader.read(MANIFEST_MAX_SIZE + 1)  # (a layer named as a child: refused)
        except NotFoundError:
            continue
        except RegstoreError as exc:
            raise StoreError(
                f"cannot collect garbage: manifest {child.digest}, a child of an index of "
                f"{repo}, is unreadable ({exc}); run `regstore verify` first"
            ) from exc
        try:
            manifest = Manifest.parse(raw, child.media_type or None)
        except ManifestInvalidError as exc:
            raise StoreError(
                f"cannot collect garbage: manifest {child.digest}, a child of an index of "
                f"{repo}, is damaged ({exc}); run `regstore verify` first"
            ) from exc
        referenced.update(str(d.digest) for d in manifest.references)
        stack += manifest.manifests


def _refuse_dangling_tags(store: ObjectStore) -> None:
    """Raise StoreError for a tag that names a manifest its repository does not hold (a
    revision link lost, say): the bytes it named, and their blobs, may still be stored, and
    gc deleted them. A tag that cannot be read raises too."""
    for repo, tag in ((r, t) for r in store.repositories() for t in tags_of(store, r)):
        try:
            if store.has_manifest(repo, tag):
                continue
        except StoreDamageError:  # a damaged tag link: its error says what to do
            raise
        except RegstoreError as exc:
            raise StoreError(
                f"cannot collect garbage: tag {tag} of {repo} cannot be read ({exc}); run "
                "`regstore verify` and pull that image again, or delete the tag "
                f"(`regstore delete store:{repo}:{tag}`), first"
            ) from exc
        raise StoreError(
            f"cannot collect garbage: tag {tag} of {repo} names a manifest the repository "
            "does not hold, whose bytes and blobs may still be stored; pull that image again "
            f"with --repair, or delete the tag (`regstore delete store:{repo}:{tag}`) first"
        )


def collect_garbage(
    store: ObjectStore,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    now: float | None = None,
    keep_orphan_referrers: bool = False,
    untagged: bool = False,
) -> GCReport:
    """Delete (or with ``dry_run`` only list) unreferenced blobs older than ``grace`` seconds,
    and the staging leftovers no live writer holds that are older than ``grace``; first the
    manifests no tag reaches, with ``untagged``, then the referrers whose subject is gone,
    unless ``keep_orphan_referrers``.

    Ages are measured from ``now`` (default: the current time); a ``now`` in the future (as
    tests pass to age everything) makes recent commits and claims old too.
    """
    if not grace >= 0:  # nan too: it compares false with every age, as if it were 0
        raise ValueError(f"grace must be a number of seconds, not negative: {grace!r}")
    blobs = store.blobs()  # first: see the module docstring
    _refuse_dangling_tags(store)  # before anything is deleted, referrers included
    now = time.time() if now is None else now
    report = GCReport(dry_run=dry_run, grace=grace, blobs=len(blobs), now=now)
    if untagged:
        committed = {b.digest: b.mtime for b in blobs}
        _collect_untagged(store, report, committed, grace, dry_run, now, keep_orphan_referrers)
    gone = set(report.untagged_removed) if dry_run else set()
    orphans = [] if keep_orphan_referrers else orphan_referrers(store, dry_run=dry_run, gone=gone)
    referenced = _referenced(store, ignore=(gone | set(orphans)) if dry_run else set())
    referenced |= {str(d) for d in store.outside_references()}  # (other tools' images)
    report.referrers_removed = orphans
    _collect_staging(store, report, grace, dry_run, now)
    for blob in blobs:
        if blob.digest in referenced:
            report.referenced += 1
            continue
        if now - blob.mtime < grace:
            report.kept_young.append(blob)
            continue
        try:
            if dry_run:
                kept = _used_within(store, blob.digest, grace, now)
            else:
                kept = not _delete_unless_claimed(store, blob.digest, grace, now)
        except BlobNotFoundError:  # another gc was faster
            continue
        if kept:
            report.kept_young.append(blob)
            continue
        report.removed.append(blob)
    return report


def _collect_untagged(
    store: ObjectStore,
    report: GCReport,
    committed: dict[str, float],
    grace: float,
    dry_run: bool,
    now: float,
    keep_orphan_referrers: bool,
) -> None:
    """Delete (``dry_run``: list) each repository's manifests that no tag reaches, once older
    than ``grace`` (``committed``: the commit time of each blob listed before the tags were
    read; a manifest written since is not in it, and is young). With
    ``keep_orphan_referrers``, a manifest something refers to stays: its referrers would be
    left without it."""
    for repo in store.repositories():
        present = _listed(store, repo)
        if not present:
            continue
        manifests = {digest: _readable(store, repo, digest) for digest in sorted(present)}
        kept = _kept_by_tags(store, repo, manifests, keep_orphan_referrers)
        doomed = _parents_first({d: manifests[d] for d in present - kept})
        # Tags written since the first reading (a pull on a backend that dates no claims):
        # what they reach now stays, deleting a manifest would take them with it.
        now_tagged = set(
            _reachable(store, repo, set(_tag_targets(store, repo).values()), known=manifests)
        )
        for digest in doomed:
            named = f"{repo}@{digest}"
            at = committed.get(digest)
            if (
                digest in now_tagged
                or at is None
                or now - at < grace
                or not _delete_manifest_unless_claimed(store, repo, digest, grace, now, dry_run)
            ):
                report.untagged_kept.append(named)
                continue
            report.untagged_removed.append(named)


def _kept_by_tags(
    store: ObjectStore, repo: str, manifests: dict[str, Manifest], keep_referred: bool
) -> set[str]:
    """The manifests of ``repo`` its tags keep: what a regular tag names and reaches (an
    index's children) and the subjects of those (an SBOM tagged on its own keeps its image);
    what a signature or referrers-index tag names (orphan_referrers decides on those); then
    the referrers of all that, with what each of these reaches. With ``keep_referred``, also
    every manifest a stored manifest refers to (its referrers are kept as orphans then)."""
    subjects = {
        digest: str(manifest.subject.digest)
        for digest, manifest in manifests.items()
        if manifest.subject is not None and str(manifest.subject.digest) in manifests
    }
    regular: set[str] = set()
    supply_chain: set[str] = set()
    for tag, digest in _tag_targets(store, repo).items():
        about = subject_of_tag(tag)
        tagged = manifests.get(digest)
        if about is not None and is_referrers_tag(tag) and tagged is not None:
            about = about if tagged.is_index else None  # (as orphan_referrers reads it)
        (regular if about is None else supply_chain).add(digest)
    kept = set(_reachable(store, repo, regular, known=manifests))
    while more := {subjects[d] for d in kept if d in subjects} - kept:
        kept.update(_reachable(store, repo, more, known=manifests))
    kept.update(_reachable(store, repo, supply_chain, known=manifests))
    if keep_referred:
        kept.update(_reachable(store, repo, set(subjects.values()), known=manifests))
    while more := {d for d, subject in subjects.items() if subject in kept} - kept:
        kept.update(_reachable(store, repo, more, known=manifests))
    return kept


def _parents_first(doomed: dict[str, Manifest]) -> list[str]:
    """The digests of ``doomed``, each index before the manifests it lists (nested indexes
    too): a deletion stopped half-way, or an index kept meanwhile, leaves no index short of a
    child."""
    listed_by: dict[str, int] = {digest: 0 for digest in doomed}
    for manifest in doomed.values():
        for child in {str(c.digest) for c in manifest.manifests} & doomed.keys():
            listed_by[child] += 1
    ready = sorted(d for d, n in listed_by.items() if n == 0)
    order: list[str] = []
    while ready:
        digest = ready.pop(0)
        order.append(digest)
        for child in sorted({str(c.digest) for c in doomed[digest].manifests} & doomed.keys()):
            listed_by[child] -= 1
            if listed_by[child] == 0:
                ready.append(child)
    # (a cycle of indexes cannot be stored: a digest covers its children's digests)
    return order + sorted(set(doomed) - set(order))


def _delete_manifest_unless_claimed(
    store: ObjectStore, repo: str, digest: str, grace: float, now: float, dry_run: bool
) -> bool:
    """Delete manifest ``digest`` of ``repo`` unless its bytes were committed or claimed
    within the grace period (a pull about to tag it again claims it first); True when it was
    deleted (``dry_run``: would be). Decided under the lock a claim takes."""
    if dry_run:
        return not _used_within(store, digest, grace, now)
    with store.lock(blob_use_lock_key(Digest(digest))):
        if _used_within(store, digest, grace, now):
            return False
        try:
            store.delete_manifest(repo, digest)
        except NotFoundError:  # another gc, or a delete, was faster
            return False
    return True


def _used_within(store: ObjectStore, digest: str, grace: float, now: float) -> bool:
    """True if the blob was committed or claimed less than ``grace`` seconds before ``now``."""
    used = store.blob_used_at(digest)
    return used is not None and now - used < grace


def _delete_unless_claimed(store: ObjectStore, digest: str, grace: float, now: float) -> bool:
    """Delete the blob unless it was used within the grace period after all; True when
    deleted. Decided under the lock a pull claims a blob with (``ObjectStore.claim_blob``): a
    pull that decided to reuse the blob after gc listed it has marked it used, or finds it
    gone and fetches it again."""
    with store.lock(blob_use_lock_key(Digest(digest))):
        if _used_within(store, digest, grace, now):
            return False
        store.delete_blob(digest)
    return True


def orphan_referrers(
    store: ObjectStore, *, dry_run: bool = False, gone: Collection[str] = ()
) -> list[str]:
    """Delete (``dry_run``: only list) every manifest whose ``subject`` is not stored in its
    repository, repeatedly (a referrer of a deleted referrer goes too), and the referrers
    indexes and sigstore tags of missing subjects. Returns ``name@digest`` of each.
    ``gone``: manifests (``name@digest``) to count as deleted already (a dry run's).

    Raises StoreError when a manifest cannot be read (whether it is a referrer is unknown).
    """
    removed: list[str] = []
    for repo in store.repositories():
        try:
            present = {str(d) for d in store.manifests(repo)}
            present -= {d for d in present if f"{repo}@{d}" in gone}
            tags = store.tags(repo)
        except NotFoundError:  # emptied meanwhile
            continue
        subjects: dict[str, str] = {}
        manifests: dict[str, Manifest] = {}
        for digest in sorted(present):
            manifest = manifests[digest] = _readable(store, repo, digest)
            if manifest.subject is not None:
                subjects[digest] = str(manifest.subject.digest)
        targets: set[str] = set()  # what some tag points at
        named: set[str] = set()  # what a regular (not supply-chain) tag points at
        for tag in tags:
            if not store.has_manifest(repo, tag):  # dangling: verify says so
                continue
            tagged = _readable(store, repo, tag)
            digest = str(tagged.digest)
            targets.add(digest)
            about = subject_of_tag(tag)
            if about is not None and is_referrers_tag(tag) and not tagged.is_index:
                # only an index is a referrers index (the spec's tag schema): any other
                # manifest under a tag of that shape is an image someone tagged so
                about = None
            if about is None:
                named.add(digest)
            else:  # referrers indexes and sigstore tags name their subject
                subjects.setdefault(digest, str(about))
        doomed = _old_index_versions(store, repo, manifests, subjects, targets, tags)
        present.difference_update(doomed)
        for digest in named:  # a manifest a regular tag names is kept, whatever its subject
            subjects.pop(digest, None)
        changed = True
        while changed:
            changed = False
            for digest, subject in subjects.items():
                if digest in present and subject not in present:
                    present.discard(digest)
                    doomed.append(digest)
                    changed = True
        for digest in doomed:
            if not dry_run:
                try:
                    store.delete_manifest(repo, digest)
                except NotFoundError:
                    continue
            removed.append(f"{repo}@{digest}")
    return removed


def _old_index_versions(
    store: ObjectStore,
    repo: str,
    manifests: dict[str, Manifest],
    subjects: dict[str, str],
    targets: set[str],
    tags: list[str],
) -> list[str]:
    """Earlier versions of referrers indexes (each update writes a new one under the same
    tag): OCI indexes of ``repo`` no tag points at, no other index has as a child and nothing
    refers to, stored whole, whose entries are referrers of one subject that has a referrers
    tag, each listed exactly as a referrers index lists it, or no longer stored (a referrer
    deleted since, which an old version still lists; asked again of the store before it
    counts, and at least one must still be stored, to tell the subject)."""
    children = {str(c.digest) for m in manifests.values() for c in m.manifests}
    referred = set(subjects.values())
    tagged = set(tags)
    old: list[str] = []
    for digest, manifest in sorted(manifests.items()):
        if manifest.media_type != OCI_INDEX or manifest.subject is not None:
            continue
        if not manifest.manifests or digest in targets or digest in children:
            continue
        if digest in referred or tagged & {referrers_tag(digest), *sigstore_tags(digest)}:
            continue  # signed or described: a version of a referrers index never is
        stored = [c for c in manifest.manifests if str(c.digest) in manifests]
        if any(c != referrer_descriptor(manifests[str(c.digest)]) for c in stored):
            continue
        listed = {subjects.get(str(c.digest)) for c in stored}
        if len(listed) != 1 or None in listed or referrers_tag(str(listed.pop())) not in tags:
            continue
        if store.is_partial(repo, digest):
            continue  # an index stored without some children on purpose: not ours
        gone = [c for c in manifest.manifests if str(c.digest) not in manifests]
        if any(store.has_manifest(repo, str(c.digest)) for c in gone):
            continue  # written since the listing, or stored where the listing does not look
        old.append(digest)
    return old


def _readable(store: ObjectStore, repo: str, reference: str) -> Manifest:
    try:
        return store.manifest(repo, reference)
    except RegstoreError as exc:
        raise StoreError(
            f"cannot collect garbage: manifest {reference} of {repo} is unreadable ({exc}); "
            "run `regstore verify` and re-pull that image, or delete it "
            f"(`regstore delete store:{repo}{'@' if is_digest(reference) else ':'}{reference}`), "
            "first"
        ) from exc


def _collect_staging(
    store: ObjectStore, report: GCReport, grace: float, dry_run: bool, now: float
) -> None:
    try:
        entries = store.staging()
    except RegstoreError as exc:  # unsupported, or not permitted (an S3 policy): blobs still go
        report.staging_error = str(exc)
        return
    for entry in entries:
        if entry.active or now - entry.mtime < grace:
            report.staging_kept.append(entry)
        elif dry_run or store.drop_staging(entry):
            report.staging_removed.append(entry)
        else:  # a writer took it up again since it was listed
            report.staging_kept.append(entry)


def _reachable(
    store: ObjectStore,
    name: str,
    roots: set[str],
    *,
    damaged_as_leaf: bool = False,
    unreadable_as_leaf: bool = False,
    leaves: frozenset[str] = frozenset(),
    known: Mapping[str, Manifest] | None = None,
) -> dict[str, Manifest | None]:
    """The manifests of ``name`` reachable from ``roots`` through index children, by digest
    (None: not stored, damaged or unreadable). Raises when one cannot be read (passing over
    it, a read timed out, once let a deletion take the children of an index another tag
    named), but for damaged bytes with ``damaged_as_leaf`` (the manifest counts, its unknown
    children are not followed), for any failure with ``unreadable_as_leaf`` (for reports,
    never for deletions), or for the digests ``leaves`` alone. ``known``: manifests of
    ``name`` read already, by digest (not read again)."""
    seen: dict[str, Manifest | None] = {}
    stack = list(roots)
    while stack:
        digest = stack.pop()
        if digest in seen:
            continue
        seen[digest] = None
        try:
            manifest = known[digest] if known and digest in known else store.manifest(name, digest)
        except NotFoundError:  # a child a platform filter left out
            continue
        except ManifestInvalidError:
            if not (damaged_as_leaf or unreadable_as_leaf) and digest not in leaves:
                raise
            continue
        except RegstoreError:
            if not unreadable_as_leaf:
                raise
            continue
        seen[digest] = manifest
        stack.extend(str(child.digest) for child in manifest.manifests)
    return seen


def manifests_reached(store: ObjectStore, name: str, root: str) -> set[str]:
    """The digests of the manifests of ``name`` that ``root`` leads to through index
    children, ``root`` included, stored or not: for naming the images a problem touches.
    Never raises for a manifest that cannot be read: it counts, its children unknown."""
    return set(_reachable(store, name, {root}, unreadable_as_leaf=True))


def _listed(store: ObjectStore, name: str) -> set[str]:
    """The manifests ``name`` lists (none when there is no such repository)."""
    try:
        return {str(d) for d in store.manifests(name)}
    except NotFoundError:
        return set()


def _delete_unreadable(store: ObjectStore, name: str, digest: str) -> list[str]:
    """Delete the listed manifest ``digest`` whose bytes cannot be read, with its tags, unless
    an index another tag keeps lists it (that index would be left short of a child, and gc
    would take the child's blobs): refused then, naming the tags to pull again."""
    _refuse_a_kept_child(store, name, digest, _tag_targets(store, name), frozenset({digest}))
    store.delete_manifest(name, digest)
    return [digest]


def delete_image(store: ObjectStore, name: str, reference: str) -> list[str]:
    """Delete a tag, or a manifest by digest (with every tag pointing at it), and then every
    manifest of ``name`` that this left unreachable from the remaining tags (the untagged
    image itself, the children of an index). Blobs stay until :func:`collect_garbage`.

    Returns the digests of the manifests deleted (empty when only a tag went away because
    another tag still points at its manifest). Raises ImageManifestNotFoundError.

    A tag whose link is damaged (DamagedTagError), whose manifest's bytes are
    (ManifestInvalidError), or that dangles (names a manifest the repository does not hold),
    is deleted alone: no manifest goes with it. A manifest named by digest that the
    repository lists but whose bytes are gone or damaged goes alone too, with its tags.
    What the other tags keep is worked out before anything is deleted: another damaged tag,
    or a manifest they reach that cannot be read, stops the deletion then (what it names
    might be among what would go; ``verify`` says what is wrong and moves damaged bytes
    aside). A dangling tag among them names nothing and is passed over. Within the image
    deleted, a damaged manifest goes as it is (its unknown children stay). Tags written
    meanwhile are read again after the deletion; when they cannot be, no manifest but the
    one named by digest is deleted. A manifest a writer claims after that (a pull about to
    tag it again) is kept, with what it lists (as far as the store's clock and the client's
    agree: see the comment in the code).
    """
    try:
        target_manifest = store.manifest(name, reference)
    except DamagedTagError:
        store.delete_tag(name, reference)
        return []
    except ManifestInvalidError:
        if is_digest(reference):
            if reference not in _listed(store, name):
                raise
            # its bytes are damaged: what it kept is unknown, so it goes alone, with its tags
            # (as gc's refusal says to do)
            return _delete_unreadable(store, name, reference)
        store.delete_tag(name, reference)  # its bytes are damaged: what they list is unknown
        return []
    except ImageManifestNotFoundError:
        if is_digest(reference):
            if reference not in _listed(store, name):
                raise
            # listed, but its bytes are gone (gc refused for it): what it kept is unknown, so
            # it goes alone, with its tags
            return _delete_unreadable(store, name, reference)
        if reference not in tags_of(store, name):
            raise
        store.delete_tag(name, reference)  # dangling: it names nothing the repository holds
        return []
    target = str(target_manifest.digest)
    by_digest = is_digest(reference)
    targets = _tag_targets(store, name)
    others = {
        digest
        for tag, digest in targets.items()
        if (digest != target if by_digest else tag != reference)
    }
    kept = _reachable(store, name, others)
    if by_digest and target in kept:
        _refuse_a_kept_child(store, name, target, targets)
    still = set(kept)
    going = _reachable(store, name, {target}, damaged_as_leaf=True)
    before = set(going)
    subjects = {
        digest: str(manifest.subject.digest)
        for digest, manifest in going.items()
        if manifest is not None and manifest.subject is not None
    }
    if by_digest:
        store.delete_manifest(name, reference)
    else:
        store.delete_tag(name, reference)
    deleted = [target] if by_digest else []
    # A writer tagging one of these manifests again from now on claims it first (as a pull
    # does, see ObjectStore.write_manifest): such a manifest is kept, decided under the claim's
    # lock. Its new tag may come too late for the tags read again here. (The claim's date is
    # the store's: on an object store, dated by its clock to the second, a claim within a
    # second of this moment, or across clock skew, may be taken for an earlier one.)
    decided = time.time()
    try:
        still.update(_reachable(store, name, set(_tag_targets(store, name).values())))
    except RegstoreError as exc:
        log.warning(
            "%s: its tags could not be read again, no other manifest deleted: %s", name, exc
        )
        before = set()
    doomed = before - still - set(deleted)
    read = {d: m for d, m in going.items() if m is not None and d in doomed}
    spared: set[str] = set()
    # indexes first: one kept because a writer claimed it keeps what it lists (a pull claims an
    # index's children before it writes the index)
    for digest in _parents_first(read) + sorted(doomed - read.keys()):
        if digest in spared:
            continue
        # (grace 0 at ``decided``: kept when committed or claimed after it)
        if _delete_manifest_unless_claimed(store, name, digest, 0.0, decided, dry_run=False):
            deleted.append(digest)
        elif digest in read:
            listed = {str(c.digest) for c in read[digest].manifests}
            spared |= set(_reachable(store, name, listed, damaged_as_leaf=True, known=read))
    # a deleted referrer leaves its subject's referrers index: a stale entry would be
    # reported by verify and refused by a registry when the index is copied or updated
    for digest in deleted:
        if digest in subjects:
            store.unindex_referrer(name, subjects[digest], digest)
    return deleted


def _refuse_a_kept_child(
    store: ObjectStore,
    name: str,
    target: str,
    targets: dict[str, str],
    leaves: frozenset[str] = frozenset(),
) -> None:
    """Raise the refusal of :func:`_kept_child_error` when an index that another regular tag
    of ``targets`` (tag -> digest) keeps lists ``target`` (a referrers index lists its
    referrers too: those go, and leave its list); ``leaves``: digests whose bytes cannot be
    read (their children are not followed)."""
    regular = {t: d for t, d in targets.items() if d != target and subject_of_tag(t) is None}
    kept = _reachable(store, name, set(regular.values()), leaves=leaves)
    if target in kept:
        raise _kept_child_error(store, name, target, kept, regular, leaves=leaves)


def _kept_child_error(
    store: ObjectStore,
    name: str,
    target: str,
    kept: dict[str, Manifest | None],
    tags: dict[str, str],
    *,
    leaves: frozenset[str] = frozenset(),
) -> StoreError:
    """The refusal to delete ``target``, a manifest an index that ``tags`` (regular tags, by
    the digest each names) keep lists (a platform of a multi-platform image): deleted, it
    left that index damaged."""
    holders = sorted(
        d
        for d, m in kept.items()
        if m is not None and target in {str(c.digest) for c in m.manifests}
    )
    keeping = sorted(
        tag
        for tag, root in tags.items()
        if set(holders) & set(_reachable(store, name, {root}, leaves=leaves))
    )
    return StoreError(
        f"refusing to delete {name}@{target}: the index {', '.join(holders)} lists it, kept by "
        f"tags {', '.join(keeping)}; delete the index (or those tags) instead"
    )


def tags_of(store: ObjectStore, name: str) -> list[str]:
    """The tags of ``name``; none when the repository is gone (its last manifest deleted)."""
    try:
        return store.tags(name)
    except NotFoundError:
        return []


def _tag_targets(store: ObjectStore, name: str) -> dict[str, str]:
    """The digest each tag of ``name`` names. A dangling tag names none (once, one of them
    emptied the whole set, and a deletion took a manifest other tags still named); a tag
    that cannot be read raises (DamagedTagError, ManifestInvalidError, StoreError)."""
    targets = {}
    for tag in tags_of(store, name):
        try:
            targets[tag] = str(store.resolve(name, tag))
        except NotFoundError:  # dangling: verify reports it
            continue
    return targets
