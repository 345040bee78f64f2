"""Manifest endpoints: get, head, put, delete (``/v2/<name>/manifests/<reference>``).

Manifests travel as exact bytes (:class:`~regstore.manifest.Manifest` keeps them): the digest
is of the bytes, so nothing is ever re-serialised. Every GET and HEAD sends the full ``Accept``
list — registry 2.8 hides OCI content and rewrites Docker content into signed schema 1 for
clients that do not list the types.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from regstore.client.answers import announced_digest, manifest_info, media_type_of
from regstore.client.core import ClientCore, delete_scope, describe_ref, pull_scope, push_scope
from regstore.client.errors_map import Operation, error_for_status, http_context
from regstore.digest import verify
from regstore.errors import (
    DigestMismatchError,
    ImageManifestNotFoundError,
    ManifestInvalidError,
    RegstoreError,
)
from regstore.manifest import MANIFEST_ACCEPT, MANIFEST_MAX_SIZE, Manifest
from regstore.reference import Digest, is_digest, validate_name, validate_reference
from regstore.wire import ManifestInfo

__all__ = ["ManifestsMixin"]

log = logging.getLogger("regstore.client")

_DELETED = (200, 202, 204)


class ManifestsMixin(ClientCore):
    """``get_image_manifest``, ``head_manifest``, ``put_image_manifest``, ``delete_image``."""

    def get_image_manifest(self, name: str, reference: str) -> Manifest:
        """Fetch the manifest ``name`` at ``reference`` (a tag or a digest), exact bytes.

        The media type comes from ``Content-Type`` (or the body). By digest the bytes must hash
        to it; by tag they must match ``Docker-Content-Digest`` when the registry sends one
        (for a signed schema 1 manifest, the digest of its JWS payload, as registries compute).

        Raises:
            ImageManifestNotFoundError: no such manifest (or repository, on registry 2.8).
            RepositoryNotFoundError: the registry said ``NAME_UNKNOWN``.
            DigestMismatchError: the bytes do not match the digest.
            ManifestInvalidError: the bytes are not a manifest regstore understands.
        """
        validate_name(name)
        validate_reference(reference)
        op = Operation(
            "manifest",
            f"fetching manifest {describe_ref(name, reference)} from {self.registry}",
            name=name,
            reference=reference,
        )
        url = self._endpoint.manifest_url(name, reference)
        reply = self._call(
            "GET",
            url,
            op,
            ok=(200,),
            scopes=pull_scope(name),
            headers={"Accept": MANIFEST_ACCEPT},
            max_body=MANIFEST_MAX_SIZE,
        )
        ctx = http_context("GET", reply.url, reply.status)
        if reply.truncated:
            raise ManifestInvalidError(
                f"{op.what}: the manifest is larger than {MANIFEST_MAX_SIZE} bytes", http=ctx
            )
        try:
            manifest = Manifest(reply.body, media_type_of(reply.headers) or None)
        except ManifestInvalidError as exc:
            raise ManifestInvalidError(f"{op.what}: {exc.message}", http=ctx) from None
        self._check_digest(manifest, reference, reply.headers, op)
        return manifest

    @staticmethod
    def _check_digest(
        manifest: Manifest, reference: str, headers: Mapping[str, str], op: Operation
    ) -> None:
        if is_digest(reference):
            expected = Digest(reference)
            verify(op.what, expected, manifest.digest_with(expected.algorithm))
            return
        announced = announced_digest(headers, op.what)
        if announced is not None:
            actual = manifest.digest_with(announced.algorithm)
            if actual != announced:
                raise DigestMismatchError(
                    f"{op.what}: the bytes do not match the registry's Docker-Content-Digest",
                    expected=announced,
                    actual=actual,
                )

    def head_manifest(self, name: str, reference: str) -> ManifestInfo | None:
        """``HEAD`` the manifest: its digest, media type and size, or None if it is absent.

        When the registry's answer lacks ``Docker-Content-Digest`` or ``Content-Type``, the
        manifest is fetched to compute them.
        """
        validate_name(name)
        validate_reference(reference)
        op = Operation(
            "manifest",
            f"checking manifest {describe_ref(name, reference)} on {self.registry}",
            name=name,
            reference=reference,
        )
        url = self._endpoint.manifest_url(name, reference)
        reply = self._call(
            "HEAD",
            url,
            op,
            ok=(200, 404),
            scopes=pull_scope(name),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if reply.status == 404:
            return None
        digest = announced_digest(reply.headers, op.what)
        if is_digest(reference) and digest is not None and digest != reference:
            raise DigestMismatchError(
                f"{op.what}: the registry announced another digest",
                expected=reference,
                actual=digest,
            )
        info = manifest_info(reply.headers, digest)
        if info is None:
            try:
                manifest = self.get_image_manifest(name, reference)
            except ImageManifestNotFoundError:
                return None
            return ManifestInfo(manifest.digest, manifest.media_type, manifest.size)
        return info

    def head_manifests(
        self, name: str, references: Sequence[str]
    ) -> dict[str, ManifestInfo | None]:
        """``HEAD`` many manifests of ``name`` at once: for each reference it could answer,
        what :meth:`head_manifest` returns (None: absent).

        The first reference is asked the usual way (without retries), which settles
        authentication; the others go over a few kept-alive connections of their own, one
        request in flight on each (:mod:`regstore.client.heads`), for a fraction of the CPU of
        the usual way. This is a shortcut, never a second opinion: a reference whose answer is
        not a clean 200 (with digest, type and length) or 404, or that this client cannot send
        this way (a session of the caller's, a proxy, a registry pacing requests), is left out
        of the result, and so is everything when the first failed; :meth:`head_manifest` asks
        it alone, with retries, and raises its error.

        Raises:
            InvalidReferenceError: ``name`` or a reference is not valid.
        """
        validate_name(name)
        wanted = list(dict.fromkeys(references))
        for reference in wanted:
            validate_reference(reference)
        found: dict[str, ManifestInfo | None] = {}
        if not wanted:
            return found
        try:
            # no retries: a registry that fails now is asked again by whoever needs the answer
            with self._transport.policy.budget("checking many manifests", retries=0):
                found[wanted[0]] = self.head_manifest(name, wanted[0])
        except RegstoreError as exc:  # refused, unreachable: the rest would fare no better
            log.debug("manifest HEAD of %s failed: %s", describe_ref(name, wanted[0]), exc)
            return found
        rest = wanted[1:]
        op = Operation(
            "manifest",
            f"checking {len(rest)} manifests of {name} on {self.registry}",
            name=name,
        )
        answers = self._transport.head_many(
            [self._endpoint.manifest_url(name, reference) for reference in rest],
            op,
            scopes=pull_scope(name),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        for reference, answer in zip(rest, answers or (), strict=False):
            if answer is None:
                continue
            if answer.status == 404:
                found[reference] = None
                continue
            info = manifest_info(answer.headers, announced_digest(answer.headers, op.what))
            if answer.status != 200 or info is None:
                continue
            if is_digest(reference) and info.digest != reference:
                continue  # head_manifest raises DigestMismatchError for it
            found[reference] = info
        return found

    def put_image_manifest(self, name: str, reference: str, manifest: Manifest) -> Digest:
        """Push ``manifest`` (its exact bytes, ``Content-Type`` = its media type) under a tag or
        its digest; returns the digest, checked against the registry's
        ``Docker-Content-Digest``. Safe to retry (a manifest PUT is idempotent).

        Raises:
            DigestMismatchError: ``reference`` is a digest the bytes do not have, or the
                registry stored something else.
            UnexpectedHTTPStatusError: e.g. ``MANIFEST_BLOB_UNKNOWN``, ``MANIFEST_INVALID``
                (see ``.http.codes``).
        """
        return self._put_manifest(name, reference, manifest)[0]

    def _put_manifest(self, name: str, reference: str, manifest: Manifest) -> tuple[Digest, bool]:
        """The PUT of :meth:`put_image_manifest`; also says whether the registry processed the
        manifest's ``subject`` (it answered with ``OCI-Subject``)."""
        validate_name(name)
        validate_reference(reference)
        if not isinstance(manifest, Manifest):
            raise TypeError("put_image_manifest needs a regstore.manifest.Manifest")
        op = Operation(
            "manifest",
            f"pushing manifest {describe_ref(name, reference)} to {self.registry}",
            name=name,
            reference=reference,
        )
        if is_digest(reference):
            expected = Digest(reference)
            verify(op.what, expected, manifest.digest_with(expected.algorithm))
        url = self._endpoint.manifest_url(name, reference)
        reply = self._call(
            "PUT",
            url,
            op,
            ok=(200, 201, 202),
            scopes=push_scope(name),
            headers={"Content-Type": manifest.media_type},
            body=manifest.raw,
            idempotent=True,
        )
        announced = announced_digest(reply.headers, op.what)
        if announced is not None and manifest.digest_with(announced.algorithm) != announced:
            raise DigestMismatchError(
                f"{op.what}: the registry reports a different digest for the stored manifest",
                expected=manifest.digest,
                actual=announced,
            )
        return manifest.digest, bool(reply.headers.get("OCI-Subject", "").strip())

    def delete_image(self, name: str, reference: str) -> None:
        """Delete the manifest at a tag or digest (the seed's ``DeleteImage``).

        By digest: ``DELETE`` it (every tag pointing at it goes too). By tag: registries
        that cannot delete a tag alone (registry 2.8 answers 400 ``DIGEST_INVALID``) get a
        ``HEAD`` for the tag's digest, then a ``DELETE`` of that digest — which **also
        removes every other tag on the same manifest**. 200, 202 and 204 all mean success.

        Raises:
            ImageManifestNotFoundError: nothing at ``reference``.
            UnexpectedHTTPStatusError: e.g. 405 ``UNSUPPORTED`` when deletion is disabled.
        """
        validate_name(name)
        validate_reference(reference)
        op = Operation(
            "manifest",
            f"deleting manifest {describe_ref(name, reference)} from {self.registry}",
            name=name,
            reference=reference,
        )
        url = self._endpoint.manifest_url(name, reference)
        scopes = delete_scope(name)
        if is_digest(reference):
            self._call("DELETE", url, op, ok=_DELETED, scopes=scopes)
            return
        reply = self._transport.request("DELETE", url, op, scopes=scopes)
        if reply.status in _DELETED:
            return
        codes = http_context("DELETE", reply.url, reply.status, reply.headers, reply.body).codes
        if reply.status != 400 or (codes and "DIGEST_INVALID" not in codes):
            raise error_for_status(
                op, "DELETE", reply.url, reply.status, reply.headers, reply.body, scopes=scopes
            )
        info = self.head_manifest(name, reference)
        if info is None:
            raise ImageManifestNotFoundError(name, reference)
        digest_op = Operation(
            "manifest",
            f"deleting manifest {name}@{info.digest} (tag {reference}) from {self.registry}",
            name=name,
            reference=reference,
        )
        self._call(
            "DELETE",
            self._endpoint.manifest_url(name, info.digest),
            digest_op,
            ok=_DELETED,
            scopes=scopes,
        )
