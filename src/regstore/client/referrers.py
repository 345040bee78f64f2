"""Referrers: ``GET /v2/<name>/referrers/<digest>`` and, where a registry lacks it, the
referrers tag schema (OCI Distribution Spec v1.1).

Reading: the API's index, all pages (bounded like tag listings: ``Link``, ``max_pages``,
``max_list_entries``), filtered by ``artifactType`` — by the registry when it says so with
``OCI-Filters-Applied: artifactType``, else here. A 404 (registry 2.8 has no such route) means
the fallback: the index tagged ``<alg>-<hex>`` of the subject; anything there that is not an
index means "no referrers".

Writing: a registry that processed a manifest's ``subject`` answers its PUT with
``OCI-Subject``. Without that header the client maintains the fallback index itself: read it,
add the new descriptor, write it, read it back. There is no conditional PUT on registry 2.8, so
a concurrent writer is detected by the read-back (our descriptor missing, or another index than
the one written) and the update is redone, a bounded number of times. In one process the
updates of one index are serialised by a lock, so threads never race; across processes a
writer whose read-back passed can still be overwritten by a slower one (registry 2.8 has no
conditional PUT, so the spec's scheme has no way to prevent that). Pushing the lost referrer
again repairs it: a push that finds the referrer already there still makes sure the index lists
it (:meth:`ReferrersMixin.index_referrer`; the engine does this for every referrer it skips).

An index that still lists a manifest deleted since (``crane delete`` of a signature) is refused
by registry 2.8 (``MANIFEST_BLOB_UNKNOWN``); the update then drops the entries whose manifest
is gone (a HEAD each) and writes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from regstore.client.core import pull_scope
from regstore.client.errors_map import Operation, http_context
from regstore.client.listing import ListingMixin
from regstore.client.manifests import ManifestsMixin
from regstore.client.transport import Reply
from regstore.errors import ManifestInvalidError, NotFoundError, RegistryError, RegstoreError
from regstore.manifest import OCI_INDEX, Descriptor, Manifest
from regstore.reference import Digest, validate_name
from regstore.referrers import (
    INDEX_UPDATE_ATTEMPTS,
    add_referrer,
    filter_referrers,
    index_lock,
    keep_in_index,
    referrer_descriptor,
    referrers_in,
    referrers_tag,
)

__all__ = ["ReferrersMixin"]

log = logging.getLogger("regstore.client")


class ReferrersMixin(ManifestsMixin, ListingMixin):
    """``referrers``, and manifest PUTs that keep the fallback index when the registry does
    not process ``subject``."""

    def put_image_manifest(self, name: str, reference: str, manifest: Manifest) -> Digest:
        """Push ``manifest`` as :meth:`ManifestsMixin.put_image_manifest` does; when it has a
        ``subject`` and the registry did not answer ``OCI-Subject``, then add it to the
        subject's referrers tag index (read, add, write, read back; redone on a concurrent
        change).

        Raises:
            DigestMismatchError: see :meth:`ManifestsMixin.put_image_manifest`.
            UnexpectedHTTPStatusError: see :meth:`ManifestsMixin.put_image_manifest`.
            RegistryError: the fallback index kept changing under every attempt.
        """
        digest, processed = self._put_manifest(name, reference, manifest)
        if manifest.subject is not None and not processed:
            self._keep_fallback_index(name, manifest)
        return digest

    def index_referrer(self, name: str, manifest: Manifest) -> None:
        """Make sure the subject's referrers list ``manifest`` (already pushed): nothing to do
        on a registry with the referrers API, else its fallback index is read and, when it
        misses the entry (a push interrupted between the manifest and the index, or a
        concurrent writer's lost update), updated.

        Raises:
            ValueError: the manifest has no ``subject``.
            RegistryError: the fallback index kept changing under every attempt.
        """
        if manifest.subject is None:
            raise ValueError(f"manifest {manifest.digest} has no subject")
        validate_name(name)
        subject = manifest.subject.digest
        op = Operation(
            "manifest",
            f"listing referrers of {name}@{subject} on {self.registry}",
            name=name,
            reference=str(subject),
        )
        url = self._endpoint.url(f"/v2/{name}/referrers/{subject}", None)
        found = self._paginate_items(
            url,
            op,
            pull_scope(name),
            lambda reply: self._referrers_page(reply, op),
            OCI_INDEX + ", application/json",
            absent_ok=True,
        )
        if found is None:  # no referrers API: the fallback index is ours to keep
            self._keep_fallback_index(name, manifest)

    def referrers(
        self, name: str, digest: str, artifact_type: str | Collection[str] | None = None
    ) -> list[Descriptor]:
        """The manifests of ``name`` whose ``subject`` is ``digest``, as descriptors (media
        type, digest, size, ``artifact_type``, annotations), across all pages.

        ``artifact_type`` keeps only those types (one or several). Registries without the
        referrers API are read through the referrers tag schema.

        Raises:
            PagingLimitError: more pages or entries than the client allows.
            RegistryError: an unreadable answer.
        """
        validate_name(name)
        subject = Digest(digest)
        wanted: tuple[str, ...]
        if artifact_type is None:
            wanted = ()
        elif isinstance(artifact_type, str):
            wanted = (artifact_type,)
        else:
            wanted = tuple(artifact_type)
        op = Operation(
            "manifest",
            f"listing referrers of {name}@{subject} on {self.registry}",
            name=name,
            reference=str(subject),
        )
        query = {"artifactType": wanted[0]} if len(wanted) == 1 else None
        url = self._endpoint.url(f"/v2/{name}/referrers/{subject}", query)
        filtered_all = True

        def page(reply: Reply) -> list[Descriptor]:
            nonlocal filtered_all
            applied = reply.headers.get("OCI-Filters-Applied", "")
            if "artifacttype" not in {f.strip().lower() for f in applied.split(",")}:
                filtered_all = False
            return self._referrers_page(reply, op)

        found = self._paginate_items(
            url, op, pull_scope(name), page, OCI_INDEX + ", application/json", absent_ok=True
        )
        if found is None:
            found = referrers_in(self._fallback_index(name, referrers_tag(subject)))
            filtered_all = False
        if wanted and (not filtered_all or len(wanted) > 1):
            found = filter_referrers(found, wanted)
        return found

    def _referrers_page(self, reply: Reply, op: Operation) -> list[Descriptor]:
        ctx = http_context("GET", reply.url, reply.status)
        try:
            index = Manifest.parse(reply.body, OCI_INDEX)
        except ManifestInvalidError as exc:
            raise RegistryError(
                f"{op.what}: the registry sent an unreadable referrers index ({exc.message})",
                http=ctx,
            ) from None
        if not index.is_index:
            raise RegistryError(f"{op.what}: the referrers answer is not an index", http=ctx)
        return list(index.manifests)

    def _fallback_index(self, name: str, tag: str) -> Manifest | None:
        """The manifest at the referrers tag ``tag``, or None when there is none."""
        try:
            found = self.get_image_manifest(name, tag)
        except NotFoundError:
            return None
        except ManifestInvalidError:
            log.warning("%s:%s is not a manifest; treating it as no referrers", name, tag)
            return None
        return found

    def _has_manifest(self, name: str) -> Callable[[str], bool]:
        def exists(digest: str) -> bool:
            try:
                return self.head_manifest(name, digest) is not None
            except NotFoundError:
                return False

        return exists

    def _keep_fallback_index(self, name: str, manifest: Manifest) -> None:
        """Add ``manifest`` (which has a ``subject``) to its subject's fallback index.

        Raises:
            RegistryError: other writers kept changing the index for every attempt.
        """
        assert manifest.subject is not None
        tag = referrers_tag(manifest.subject.digest)

        def write(index: Manifest) -> None:
            try:
                self._put_manifest(name, tag, index)
            except RegstoreError as exc:
                if exc.http is None or "MANIFEST_BLOB_UNKNOWN" not in exc.http.codes:
                    raise
                # the index names a manifest deleted since: drop those entries, write again
                exists = self._has_manifest(name)
                pruned = add_referrer(index, referrer_descriptor(manifest), exists)
                if pruned is None:
                    raise
                log.warning(
                    "%s:%s listed manifests that are gone; dropped them from the index", name, tag
                )
                self._put_manifest(name, tag, pruned)

        with index_lock(("registry", self.base_url, name, tag)):
            done = keep_in_index(
                lambda: self._fallback_index(name, tag), write, referrer_descriptor(manifest)
            )
        if not done:
            raise RegistryError(
                f"updating the referrers index {name}:{tag} on {self.registry}: another "
                f"writer changed it {INDEX_UPDATE_ATTEMPTS} times in a row"
            )
