"""A small registry that follows the OCI Distribution Spec v1.1, served by a :class:`FakeRegistry`.

:class:`SpecRegistry` answers what scripted ``expect`` calls do not (it is the fake's
``fallback``): manifests (GET/HEAD/PUT/DELETE, the exact bytes), blobs (GET with ``Range``,
HEAD), uploads (POST, PATCH, PUT, cross-repository mount), tags and the **referrers API** —
paginated with a relative ``Link`` (``page_size`` per page), filtered by ``artifactType`` with
``OCI-Filters-Applied`` (unless ``apply_filter`` is off, to test the client's own filtering),
and ``OCI-Subject`` on the PUT of a manifest with a ``subject``. With ``referrers_api=False``
it behaves as registry 2.8 does: the referrers route is a plain 404 and PUT answers without
``OCI-Subject``, so clients keep the referrers tag schema themselves.

Everything lives in memory, per repository, behind one lock; :attr:`SpecRegistry.requests`
counts are the fake's (``fake.requests``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from regstore import ObjectStore
from regstore.client import Client
from regstore.referrers import sigstore_tags
from regstore.testing.builders import (
    Image,
    cosign_signature,
    oci_artifact,
    oci_image,
    write_image,
)

from .fake_registry import FakeRegistry, FakeRequest, HeaderSpec

__all__ = ["ATTESTATION", "SBOM", "Chain", "SpecRegistry", "push_image", "serve_spec_registry"]

#: Artifact types of the test supply chains.
SBOM = "application/spdx+json"
ATTESTATION = "application/vnd.in-toto+json"

_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs/uploads|blobs|tags|referrers)(?:/(?P<rest>.*))?$"
)
_INDEX = "application/vnd.oci.image.index.v1+json"
_NOT_FOUND = (404, {"Content-Type": "text/plain"}, b"404 page not found\n")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str, message: str = "") -> tuple[int, HeaderSpec, bytes]:
    body = json.dumps({"errors": [{"code": code, "message": message or code.lower()}]})
    return status, {"Content-Type": "application/json"}, body.encode()


@dataclass
class _Repository:
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


class SpecRegistry:
    """The state and the answers of the spec-following registry (see the module docstring)."""

    def __init__(
        self, *, referrers_api: bool = True, page_size: int = 0, apply_filter: bool = True
    ) -> None:
        self.referrers_api = referrers_api
        self.page_size = page_size
        self.apply_filter = apply_filter
        self.repos: dict[str, _Repository] = {}
        self._uploads: dict[str, tuple[str, bytearray]] = {}
        self._lock = threading.Lock()

    # -- inspection for tests -------------------------------------------------------------------
    def tags(self, name: str) -> list[str]:
        """The tags of ``name``, sorted."""
        with self._lock:
            return sorted(self.repos.get(name, _Repository()).tags)

    def manifest_bytes(self, name: str, reference: str) -> bytes:
        """The stored bytes at a tag or digest (KeyError when absent)."""
        with self._lock:
            repo = self.repos[name]
            digest = repo.tags.get(reference, reference)
            return repo.manifests[digest][1]

    # -- serving ---------------------------------------------------------------------------------
    def __call__(self, request: FakeRequest) -> tuple[int, HeaderSpec, bytes]:
        if request.path in ("/v2", "/v2/"):
            return 200, {"Content-Type": "application/json"}, b"{}"
        m = _ROUTE.match(request.path)
        if m is None:
            return _NOT_FOUND
        name, kind, rest = m.group("name"), m.group("kind"), m.group("rest") or ""
        with self._lock:
            if kind == "manifests":
                return self._manifests(request, name, rest)
            if kind == "blobs/uploads":
                return self._uploads_route(request, name, rest)
            if kind == "blobs":
                return self._blobs(request, name, rest)
            if kind == "tags":
                return self._tags(request, name)
            return self._referrers(request, name, rest)

    def _manifests(
        self, request: FakeRequest, name: str, ref: str
    ) -> tuple[int, HeaderSpec, bytes]:
        method = request.method
        if method == "PUT":
            repo = self.repos.setdefault(name, _Repository())
            body = request.body
            digest = _digest(body)
            if ref.startswith("sha256:") and ref != digest:
                return _error(400, "DIGEST_INVALID")
            media_type = request.headers.get("Content-Type", "").split(";")[0]
            doc = json.loads(body)
            for desc in [doc.get("config"), *doc.get("layers", [])]:
                if isinstance(desc, dict) and desc["digest"] not in repo.blobs:
                    return _error(400, "MANIFEST_BLOB_UNKNOWN")
            for desc in doc.get("manifests", []):
                if desc["digest"] not in repo.manifests:
                    return _error(400, "MANIFEST_UNKNOWN", "child manifest unknown")
            repo.manifests[digest] = (media_type, body)
            if not ref.startswith("sha256:"):
                repo.tags[ref] = digest
            headers: dict[str, str] = {
                "Docker-Content-Digest": digest,
                "Location": f"/v2/{name}/manifests/{digest}",
            }
            subject = doc.get("subject")
            if self.referrers_api and isinstance(subject, dict):
                headers["OCI-Subject"] = subject["digest"]
            return 201, headers, b""
        found = self.repos.get(name)
        if found is None:
            return _error(404, "NAME_UNKNOWN")
        repo = found
        digest = repo.tags.get(ref, ref)
        if digest not in repo.manifests:
            return _error(404, "MANIFEST_UNKNOWN")
        if method == "DELETE":
            del repo.manifests[digest]
            for tag in [t for t, d in repo.tags.items() if d == digest]:
                del repo.tags[tag]
            return 202, None, b""
        media_type, body = repo.manifests[digest]
        return 200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, body

    def _blobs(self, request: FakeRequest, name: str, digest: str) -> tuple[int, HeaderSpec, bytes]:
        data = self.repos.get(name, _Repository()).blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN")
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        rng = request.headers.get("Range", "")
        if request.method == "GET" and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return 206, headers, data[start:]
        return 200, headers, data

    def _uploads_route(
        self, request: FakeRequest, name: str, upload: str
    ) -> tuple[int, HeaderSpec, bytes]:
        params = parse_qs(request.query)
        repo = self.repos.setdefault(name, _Repository())
        if request.method == "POST":
            mount, origin = params.get("mount", [""])[0], params.get("from", [""])[0]
            if mount and mount in self.repos.get(origin, _Repository()).blobs:
                repo.blobs[mount] = self.repos[origin].blobs[mount]
                return 201, {"Location": f"/v2/{name}/blobs/{mount}"}, b""
            session = uuid.uuid4().hex
            self._uploads[session] = (name, bytearray())
            return 202, {"Location": f"/v2/{name}/blobs/uploads/{session}", "Range": "0-0"}, b""
        if upload not in self._uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        buffer = self._uploads[upload][1]
        location = f"/v2/{name}/blobs/uploads/{upload}"
        if request.method == "GET":
            return 204, {"Location": location, "Range": f"0-{max(len(buffer) - 1, 0)}"}, b""
        if request.method == "PATCH":
            buffer.extend(request.body)
            return 202, {"Location": location, "Range": f"0-{len(buffer) - 1}"}, b""
        if request.method == "PUT":
            buffer.extend(request.body)
            digest = params.get("digest", [""])[0]
            if _digest(bytes(buffer)) != digest:
                return _error(400, "DIGEST_INVALID")
            repo.blobs[digest] = bytes(buffer)
            del self._uploads[upload]
            return (
                201,
                {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
                b"",
            )
        if request.method == "DELETE":
            del self._uploads[upload]
            return 204, None, b""
        return _NOT_FOUND

    def _tags(self, request: FakeRequest, name: str) -> tuple[int, HeaderSpec, bytes]:
        repo = self.repos.get(name)
        if repo is None:
            return _error(404, "NAME_UNKNOWN")
        body = json.dumps({"name": name, "tags": sorted(repo.tags)}).encode()
        return 200, {"Content-Type": "application/json"}, body

    def _referrers(
        self, request: FakeRequest, name: str, subject: str
    ) -> tuple[int, HeaderSpec, bytes]:
        if not self.referrers_api:
            return _NOT_FOUND
        params = parse_qs(request.query)
        wanted = params.get("artifactType", [None])[0]
        entries: list[dict[str, Any]] = []
        repo = self.repos.get(name, _Repository())
        for digest, (media_type, body) in sorted(repo.manifests.items()):
            doc = json.loads(body)
            if not isinstance(doc.get("subject"), dict) or doc["subject"].get("digest") != subject:
                continue
            artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
            entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
            if artifact_type:
                entry["artifactType"] = artifact_type
            if doc.get("annotations"):
                entry["annotations"] = doc["annotations"]
            entries.append(entry)
        headers: dict[str, str] = {"Content-Type": _INDEX}
        if wanted is not None and self.apply_filter:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(params.get("last", ["0"])[0])
        if self.page_size:
            page = entries[start : start + self.page_size]
            if start + self.page_size < len(entries):
                query = f"last={start + self.page_size}"
                if wanted is not None:
                    query += f"&artifactType={wanted}"
                headers["Link"] = f'</v2/{name}/referrers/{subject}?{query}>; rel="next"'
        else:
            page = entries
        body = json.dumps({"schemaVersion": 2, "mediaType": _INDEX, "manifests": page}).encode()
        return 200, headers, body


def serve_spec_registry(fake: FakeRegistry, **options: Any) -> SpecRegistry:
    """Make ``fake`` answer as a :class:`SpecRegistry` (its fallback); returns the state."""
    spec = SpecRegistry(**options)
    fake.fallback = spec
    return spec


def push_image(client: Client, name: str, image: Image, tag: str | None = None) -> None:
    """Upload a built image's blobs and children, then its manifest (by tag or digest), with
    regstore's client (so a referrer's PUT keeps the tag schema where the registry does not)."""
    for child in image.children:
        push_image(client, name, child)
    for blob in image.all_blobs():
        if client.blob_exists(name, blob.digest):
            continue
        session = client.initiate_blob_upload(name)
        assert session.location is not None
        client.upload_blob(session.location, blob.data, blob.size, blob.digest)
    client.put_image_manifest(name, tag or str(image.digest), image.manifest)


class Chain:
    """image (v1) ← sbom ← attestation; image ← cosign signature under ``.sig``."""

    def __init__(self, seed: int = 11) -> None:
        self.image = oci_image(seed=seed)
        self.sbom = oci_artifact(self.image)
        self.attestation = oci_artifact(self.sbom, b'{"predicate":{}}', ATTESTATION)
        self.sig = cosign_signature(self.image, seed=seed)
        self.sig_tag = sigstore_tags(self.image.digest)[0]

    def write(self, store: ObjectStore, name: str = "app") -> None:
        write_image(store, name, "v1", self.image)
        write_image(store, name, self.sig_tag, self.sig)
        write_image(store, name, None, self.sbom)
        write_image(store, name, None, self.attestation)
