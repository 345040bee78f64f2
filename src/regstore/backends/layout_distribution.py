"""The Docker distribution registry's storage layout, so a stock registry can serve the store.

Under ``<root>/docker/registry/v2/`` (protocol-notes §4.1, ``registry/storage/paths.go``)::

    blobs/<alg>/<hex[:2]>/<hex>/data                       layers, configs AND manifests
    repositories/<name>/_layers/<alg>/<hex>/link           every layer and config of a manifest
    repositories/<name>/_manifests/revisions/<alg>/<hex>/link
    repositories/<name>/_manifests/tags/<tag>/current/link
    repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link

A link file holds exactly ``sha256:<hex>``, no newline. Every file is written through a
temporary file and a rename, so each tag is one small atomic file and concurrent writers never
rewrite a shared file. A partial (platform-filtered) index is marked by
``_manifests/revisions/<alg>/<hex>/regstore-partial``: the registry reads only ``link`` files
there, so it serves the index anyway.

A repository exists (is listed, has tags) while it holds at least one manifest revision.
Media types are not stored: like the registry, the layout sniffs them from the bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from regstore.errors import (
    DamagedTagError,
    ImageManifestNotFoundError,
    InvalidReferenceError,
    ManifestInvalidError,
    RepositoryNotFoundError,
    StoreDamageError,
)
from regstore.manifest import Manifest
from regstore.reference import (
    SUPPORTED_ALGORITHMS,
    Digest,
    is_digest,
    validate_name,
    validate_tag,
)

from .layouts import (
    Layout,
    check_tagged_bytes,
    parse_link,
    sniff_media_type,
    split_blob_relative,
)

__all__ = ["PARTIAL_MARKER", "DistributionLayout"]

#: File beside a revision's ``link`` marking a partial index (the registry ignores it).
PARTIAL_MARKER = "regstore-partial"
_V2 = ("docker", "registry", "v2")
_V2_PATH = "/".join(_V2)


def _digest_parts(digest: Digest) -> tuple[str, str]:
    return digest.algorithm, digest.hex


class DistributionLayout(Layout):
    """``docker/registry/v2`` as written by the distribution registry 2.x."""

    name = "distribution"
    markers = (_V2,)

    # -- paths -------------------------------------------------------------------------------

    def _v2(self, *parts: str) -> str:
        return self.host.path(_V2_PATH, *parts)  # (one part: one grammar match, not three)

    def _repo(self, name: str, *parts: str) -> str:
        return self._v2("repositories", name, *parts)

    def _revision(self, name: str, digest: Digest, *parts: str) -> str:
        return self._repo(name, "_manifests", "revisions", *_digest_parts(digest), *parts)

    def _tag(self, name: str, tag: str, *parts: str) -> str:
        return self._repo(name, "_manifests", "tags", tag, *parts)

    def blob_path(self, digest: Digest) -> str:
        return self._v2("blobs", digest.algorithm, digest.hex[:2], digest.hex, "data")

    def blob_removal_path(self, digest: Digest) -> str:
        return self._v2("blobs", digest.algorithm, digest.hex[:2], digest.hex)

    def blobs_root(self) -> str:
        return self._v2("blobs")

    def blob_digest_of(self, relative: str) -> Digest | None:
        return split_blob_relative(relative, fanout=True)

    # -- links -------------------------------------------------------------------------------

    def _read_link(self, path: str) -> Digest | None:
        try:
            data = self.host.read_file(path)
        except IsADirectoryError:  # (a file host's EISDIR) as damaged as a torn link file
            raise StoreDamageError(f"a directory stands where the link file {path} belongs",
                                   path) from None  # fmt: skip
        return None if data is None else parse_link(data, path)

    def _write_link(self, path: str, digest: Digest) -> None:
        content = str(digest).encode("ascii")  # exactly the digest: no trailing newline
        try:
            current = self.host.read_file(path)
        except IsADirectoryError:  # damage: the host's write replaces it, as a torn link
            current = None
        if current != content:
            self.host.write_file(path, content)

    def _blob_link(self, name: str, digest: Digest) -> str:
        return self._repo(name, "_layers", *_digest_parts(digest), "link")

    def _link_blobs(self, name: str, manifest: Manifest) -> None:
        for blob in manifest.blobs:
            self._write_link(self._blob_link(name, blob.digest), blob.digest)

    def _is_file(self, path: str) -> bool:
        # Not host.exists(): "a file or a directory" costs the S3 and Azure stores a listing
        # besides the HEAD whenever the file is missing (as a partial marker mostly is), and
        # memory:// a scan of every key. Every path asked about here is a file; a directory in
        # its place (a damaged store) is no link, as the registry would find too.
        return self.host.file_size(path) is not None

    def _has_revision(self, name: str, digest: Digest) -> bool:
        return self._is_file(self._revision(name, digest, "link"))

    def _revisions(self, name: str) -> list[Digest]:
        # Every entry named like a digest is asked for its link, directory or not: list_dir
        # reports no link as a directory, and a revision directory that is a link (to another
        # place in the store) skipped here would make gc take its manifest for deleted and
        # collect its blobs. A link that cannot be followed raises: gc then deletes nothing.
        found = []
        for algorithm in SUPPORTED_ALGORITHMS:
            found += self._revisions_among(name, algorithm, self._revision_entries(name, algorithm))
        return found

    def _revision_entries(self, name: str, algorithm: str) -> list[tuple[str, bool]]:
        return self.host.list_dir(self._repo(name, "_manifests", "revisions", algorithm))

    def _revisions_among(
        self, name: str, algorithm: str, entries: list[tuple[str, bool]]
    ) -> list[Digest]:
        found = []
        for entry, _ in entries:
            try:
                digest = Digest(f"{algorithm}:{entry}")
            except ValueError:
                continue  # not ours
            if self._has_revision(name, digest):
                found.append(digest)
        return found

    def _repo_exists(self, name: str) -> bool:
        for algorithm in SUPPORTED_ALGORITHMS:
            entries = self._revision_entries(name, algorithm)
            if any(is_dir for _, is_dir in entries):
                return True
            # revisions behind links only (see _revisions), from the entries listed here
            if self._revisions_among(name, algorithm, entries):
                return True
        # no revision left, a tag still: listed, so that verify tells the dangling tag and gc
        # refuses (passed over, gc deleted the bytes and blobs the tag still named)
        return bool(self._tags(name))

    def _tags(self, name: str) -> dict[str, Digest | None]:
        # Each tag with a link and the digest it names; None for a damaged link. Such a tag is
        # listed (as the registry lists it, by its directory) and reading it raises: one bad
        # file must neither hide the tag from verify nor stop every listing of the repository.
        # Every entry named like a tag is asked for its link, directory or not (list_dir
        # reports no link as one): a tag directory that is a link, passed over, let a deletion
        # of another tag take the manifest it named, and gc its blobs.
        tags: dict[str, Digest | None] = {}
        for entry in self._tag_entries(name):
            listed, target = self._tag_link(name, entry)
            if listed:
                tags[entry] = target
        return tags

    def _tag_entries(self, name: str) -> list[str]:
        found = []
        for entry, _ in self.host.list_dir(self._repo(name, "_manifests", "tags")):
            try:
                validate_tag(entry)
            except ValueError:
                continue
            found.append(entry)
        return found

    def _tag_link(self, name: str, tag: str) -> tuple[bool, Digest | None]:
        """Whether ``tag`` is listed (it has a link), and the digest its link names (None: a
        damaged link, listed all the same)."""
        try:
            target = self._read_link(self._tag(name, tag, "current", "link"))
        except StoreDamageError:
            return True, None
        except NotADirectoryError:  # a file named like a tag: no tag (nor a link to one)
            return False, None
        return target is not None, target

    # -- manifests ---------------------------------------------------------------------------

    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        if is_digest(reference):
            digest: Digest | None = Digest(reference)
        else:
            link = self._tag(name, reference, "current", "link")
            try:
                digest = self._read_link(link)
            except StoreDamageError as exc:
                raise DamagedTagError(name, reference, link, str(exc)) from None
        if digest is None or not self._has_revision(name, digest):
            raise ImageManifestNotFoundError(name, reference)
        raw = self.host.read_file(self.blob_path(digest))
        if raw is None:
            raise ImageManifestNotFoundError(name, reference)
        if not is_digest(reference):
            check_tagged_bytes(name, reference, digest, raw)
        return raw, sniff_media_type(raw)

    def put_manifest(
        self, name: str, tag: str | None, manifest: Manifest, digest: Digest, partial: bool
    ) -> None:
        # The registry serves a blob of a repository only through its _layers link.
        self._link_blobs(name, manifest)
        for child in manifest.manifests:
            # Children stored in the blob store (perhaps through another repository) become
            # revisions of this one too, with their blobs linked, so the registry serves them.
            child_raw = self.host.read_file(self.blob_path(child.digest))
            if child_raw is None:
                continue
            try:
                child_manifest = Manifest.parse(child_raw, child.media_type or None)
            except ManifestInvalidError:
                continue
            self._link_blobs(name, child_manifest)
            self._write_link(self._revision(name, child.digest, "link"), child.digest)
        marker = self._revision(name, digest, PARTIAL_MARKER)
        if partial:
            # before the link, so nobody sees the partial index as complete even briefly
            self.host.write_file(marker, b"partial index: children filtered by platform\n")
        # the blobs, the links to them and the marker survive a crash that the link survives
        self.host.make_durable()
        self._write_link(self._revision(name, digest, "link"), digest)
        if not partial:
            self.host.remove(marker)
        if tag is not None:
            index_link = self._tag(name, tag, "index", *_digest_parts(digest), "link")
            self._write_link(index_link, digest)
            self._write_link(self._tag(name, tag, "current", "link"), digest)  # the tag last

    def unlinked_blobs(self, name: str, digests: list[Digest]) -> dict[Digest, str]:
        # The registry reaches a blob of a repository through its link only, read as exactly
        # a digest, and follows it (docker-registry 2.8): no link is a 404 there, whitespace
        # around the digest (which our reading of tag links tolerates) a 500, and another
        # digest the bytes of that blob (a 500 where that one is not linked either).
        wrong = {}
        for digest in digests:
            try:
                data = self.host.read_file(self._blob_link(name, digest))
            except IsADirectoryError:  # (a file host's EISDIR)
                wrong[digest] = (
                    "a directory stands where its link in this repository belongs: a registry "
                    "serving the store fails on it here"
                )
                continue
            if data == str(digest).encode("ascii"):
                continue
            if data is None:
                wrong[digest] = (
                    "this repository has no link to it: a registry serving the store answers "
                    "404 for it here"
                )
                continue
            try:
                named: Digest | None = Digest(data.decode("ascii"))
            except (UnicodeDecodeError, InvalidReferenceError):
                named = None
            if named is None:
                wrong[digest] = (
                    f"its link in this repository holds {data[:80]!r}, no digest: a registry "
                    "serving the store fails on it here"
                )
            else:
                wrong[digest] = (
                    f"its link in this repository names {named}: a registry serving the store "
                    "answers with that blob's bytes for it here (or fails, where that blob is "
                    "not linked either)"
                )
        return wrong

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        return self._has_revision(name, digest) and self._is_file(
            self._revision(name, digest, PARTIAL_MARKER)
        )

    def delete_manifest(self, name: str, digest: Digest) -> None:
        if not self._has_revision(name, digest):
            raise ImageManifestNotFoundError(name, str(digest))
        for tag, target in self._tags(name).items():
            if target == digest:
                self.host.remove(self._tag(name, tag), recursive=True)
        self.host.remove(self._revision(name, digest), recursive=True)

    def delete_tag(self, name: str, tag: str) -> None:
        link = self._tag(name, tag, "current", "link")
        # damaged links go too, a directory in a link's place as well
        if not self._is_file(link) and not self.host.exists(link):
            raise ImageManifestNotFoundError(name, tag)
        self.host.remove(self._tag(name, tag), recursive=True)

    def _walked(self) -> Callable[[str, str, bool], bool]:
        """Whether a walk under ``repositories/`` goes into an entry ``(directory, name,
        is_dir)``. A host with symbolic links says which links to go into
        (LocalBackend.follows_link): one passed over would hide a repository the registry
        serves, and gc its blobs."""
        start = self._v2("repositories")
        follows = getattr(self.host, "follows_link", None)

        def walked(directory: str, entry: str, is_dir: bool) -> bool:
            return is_dir or (follows is not None and follows(f"{directory}/{entry}", start))

        return walked

    def _walk(self) -> tuple[list[str], list[tuple[str, str, bool]]]:
        """The repositories under ``repositories/``, and the entries there whose name
        regstore refuses, as ``(directory, name, is_dir)``: a registry accepts some of them (a
        first component with capitals or a port, ``Local.Host:5000/app``)."""
        found: list[str] = []
        foreign: list[tuple[str, str, bool]] = []
        walked = self._walked()
        pending = [("", self._v2("repositories"))]
        while pending:
            prefix, directory = pending.pop()
            for entry, is_dir in self.host.list_dir(directory):
                if entry == "_manifests":
                    if prefix and walked(directory, entry, is_dir) and self._repo_exists(prefix):
                        found.append(prefix)
                elif not entry.startswith("_"):  # _layers, _uploads: never name components
                    name = f"{prefix}/{entry}" if prefix else entry
                    try:
                        validate_name(name)
                    except ValueError:
                        foreign.append((directory, entry, is_dir))
                        continue
                    if walked(directory, entry, is_dir):
                        pending.append((name, self._repo(name)))
        return found, foreign

    def list_repositories(self) -> list[str]:
        return self._walk()[0]

    def outside_references(self) -> list[Digest]:
        # Repositories a registry writes under names regstore refuses: no listing names them,
        # and gc deleted every blob only they used. All they link is kept, as the registry
        # would serve it: their manifests (and what those lead to) and their layer links.
        walked = self._walked()
        manifests: list[tuple[Digest, str | None]] = []
        blobs: set[Digest] = set()
        # (a link among them is followed as among the repositories, or raises: gc then stops)
        foreign = self._walk()[1]
        pending = [f"{d}/{entry}" for d, entry, is_dir in foreign if walked(d, entry, is_dir)]
        while pending:
            directory = pending.pop()
            for entry, is_dir in self.host.list_dir(directory):
                path = f"{directory}/{entry}"
                if entry == "_layers":
                    blobs.update(self._named_digests(path))
                elif entry == "_manifests":
                    revisions = self._named_digests(f"{path}/revisions")
                    manifests += [(digest, None) for digest in revisions]
                    for tag, _ in self.host.list_dir(f"{path}/tags"):
                        current = self._read_link(f"{path}/tags/{tag}/current/link")
                        if current is not None:
                            manifests.append((current, None))
                elif not entry.startswith("_") and walked(directory, entry, is_dir):
                    pending.append(path)
        remedy = "remove that repository's directory, or store the manifest again"
        where = self._v2("repositories")
        return sorted(blobs | self.kept_by(manifests, where, remedy))

    def _named_digests(self, directory: str) -> list[Digest]:
        """The digests ``<directory>/<algorithm>/<hex>`` names (a revision or layer link
        directory each)."""
        found = []
        for algorithm in SUPPORTED_ALGORITHMS:
            for entry, _ in self.host.list_dir(f"{directory}/{algorithm}"):
                try:
                    found.append(Digest(f"{algorithm}:{entry}"))
                except InvalidReferenceError:
                    continue  # a foreign file: names nothing
        return found

    def list_tags(self, name: str) -> list[str]:
        if not self._repo_exists(name):
            raise RepositoryNotFoundError(name)
        # A tag whose link is a file is listed, whole or damaged (as _tags lists it), without
        # reading it: a sync lists the tags it holds before its first request, and reads each
        # link again as it compares (reading 300 links here cost a no-op 2 ms more). So is a
        # link that can be seen but not read (no permission; an S3 object its key cannot
        # decrypt): the listing goes on, and reading that tag fails. Any other entry is
        # decided as _tags decides it.
        return [
            entry
            for entry in self._tag_entries(name)
            if self._is_file(self._tag(name, entry, "current", "link"))
            or self._tag_link(name, entry)[0]
        ]

    def list_manifests(self, name: str) -> list[str]:
        if not self._repo_exists(name):
            raise RepositoryNotFoundError(name)
        return [str(d) for d in self._revisions(name)]
