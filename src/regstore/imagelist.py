"""The images of a store as typed records with sizes: what ``ObjectStore.images`` returns.

One computation for the Python API and the CLI's ``ls``. Sizes count each piece of content
(a manifest, a config, a layer) once per image, however many platforms of an index share it:

- ``size``: the bytes of the image's manifest, its blobs and (for an index) the children the
  store holds, each counted once;
- ``unique_size``: the part of ``size`` no *other* image of the same listing references (what
  deleting this image and running ``gc`` would free, if nothing outside the listing uses it).
  Tags of one manifest are one image: two tags of the same digest do not make each other's
  bytes shared.

The store is reached through :class:`ImageStore` (a few methods of ``ObjectStore``), so this
module stands on the values alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from regstore.errors import ManifestInvalidError, NotFoundError, RegstoreError, StoreDamageError
from regstore.manifest import Manifest, Platform
from regstore.reference import Digest, is_digest

__all__ = ["ImageRecord", "ImageStore", "list_images"]

#: How deep an index of indexes is followed (a loop of manifests ends here too).
MAX_DEPTH = 4


@dataclass(frozen=True)
class ImageRecord:
    """One image of a store: a tag (or a digest) of a repository and what it holds.

    ``platforms``: ``os/arch[/variant]`` of an image (from its config) or of the children of
    an index that the store holds (all of them unless ``partial``). ``partial``: an index
    stored without some of its children (a platform-filtered pull). ``referrers``: signatures,
    SBOMs and other artifacts naming the image as their subject (not counted yet: always 0).
    See the module for ``size`` and ``unique_size``.
    """

    name: str
    tag: str | None
    digest: Digest
    media_type: str
    platforms: tuple[str, ...]
    size: int
    unique_size: int
    partial: bool = False
    referrers: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-able values (``regstore ls --json`` prints these)."""
        return {
            "name": self.name,
            "tag": self.tag,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "platforms": list(self.platforms),
            "size": self.size,
            "unique_size": self.unique_size,
            "partial": self.partial,
            "referrers": self.referrers,
        }


class ImageStore(Protocol):
    """What :func:`list_images` asks of a store (``ObjectStore`` has it all)."""

    def repositories(self) -> list[str]: ...
    def tags(self, name: str) -> list[str]: ...
    def manifest(self, name: str, reference: str) -> Manifest: ...
    def is_partial(self, name: str, digest: str) -> bool: ...
    def blob_size(self, digest: str) -> int | None: ...


@dataclass
class _Walk:
    """What one image reaches: content sizes by digest, and its platforms."""

    sizes: dict[str, int]
    platforms: list[str]


class _Lister:
    def __init__(self, store: ImageStore, read_config: Callable[[str], bytes | None]) -> None:
        self.store = store
        self.read_config = read_config
        self._manifests: dict[tuple[str, str], Manifest | None] = {}
        self._configs: dict[str, str | None] = {}

    def manifest(self, name: str, digest: str) -> Manifest | None:
        key = (name, digest)
        if key not in self._manifests:
            try:
                self._manifests[key] = self.store.manifest(name, digest)
            except NotFoundError:  # a child left out by a platform filter
                self._manifests[key] = None
        return self._manifests[key]

    def config_platform(self, manifest: Manifest) -> str | None:
        config = manifest.platform_config
        if config is None:
            return None
        key = str(config.digest)
        if key not in self._configs:
            self._configs[key] = _platform_of(self._read(key))
        return self._configs[key]

    def _read(self, digest: str) -> bytes | None:
        try:
            return self.read_config(digest)
        except RegstoreError:  # the platform is a nicety: the record stands without it
            return None

    def blob_size(self, size: int, digest: str) -> int:
        if size >= 0:
            return size
        try:  # schema1 descriptors carry no size: ask the store
            return self.store.blob_size(digest) or 0
        except RegstoreError:
            return 0

    def walk(self, name: str, manifest: Manifest, *, partial: bool) -> _Walk:
        """What ``manifest`` reaches; a child a ``partial`` index leaves out is left out, one
        any other index lacks raises StoreDamageError (its platform was dropped without a
        word), and damaged bytes of a child their error."""
        walk = _Walk({}, [])
        self._walk(name, manifest, walk, 0, top=True, partial=partial)
        return walk

    def _walk(
        self, name: str, manifest: Manifest, walk: _Walk, depth: int, *, top: bool, partial: bool
    ) -> None:
        walk.sizes[str(manifest.digest)] = manifest.size
        for blob in manifest.blobs:
            walk.sizes.setdefault(str(blob.digest), self.blob_size(blob.size, blob.digest))
        if not manifest.is_index:
            if top:
                platform = self.config_platform(manifest)
                if platform:
                    walk.platforms.append(platform)
            return
        if depth >= MAX_DEPTH:
            return
        for child in manifest.manifests:
            if str(child.digest) in walk.sizes:
                continue
            stored = self.manifest(name, child.digest)
            if stored is None:
                if top and partial:
                    continue  # left out by a platform filter
                raise StoreDamageError(
                    f"the index {manifest.digest} of {name} lists the manifest {child.digest}, "
                    "which the repository does not hold",
                    name,
                )
            if top and child.platform is not None:
                walk.platforms.append(str(child.platform))
            self._walk(name, stored, walk, depth + 1, top=False, partial=partial)


def _platform_of(raw: bytes | None) -> str | None:
    """``os/arch[/variant]`` of an image config, or None when it says none."""
    platform = Platform.from_config(raw)
    return None if platform is None else str(platform)


def list_images(
    store: ImageStore,
    names: Iterable[str] | None = None,
    *,
    read_config: Callable[[str], bytes | None],
    extra: Sequence[tuple[str, str]] = (),
    unreadable: list[tuple[str, str, RegstoreError]] | None = None,
) -> list[ImageRecord]:
    """A record for every tag of the repositories ``names`` (default: all), by name and tag.

    ``extra`` adds images by ``(name, reference)`` (a digest: a record without a tag), listed
    after the tags and sized against them. ``read_config(digest)`` gives a config's bytes (for
    the platform of an image manifest). Raises RepositoryNotFoundError for a named repository
    the store does not hold, ImageManifestNotFoundError for an ``extra`` it does not hold.

    A tag whose manifest cannot be read (a dangling tag, a damaged tag link, damaged manifest
    bytes) raises its error, unless ``unreadable`` is a list: then ``(name, tag, error)`` is
    appended to it and the other tags are listed (``verify`` tells what is wrong).
    """
    lister = _Lister(store, read_config)
    entries: list[tuple[str, str | None, Manifest]] = []
    for name in store.repositories() if names is None else names:
        for each in store.tags(name):
            try:
                entries.append((name, each, store.manifest(name, each)))
            except (NotFoundError, ManifestInvalidError, StoreDamageError) as exc:
                if unreadable is None:
                    raise
                unreadable.append((name, each, exc))
    for name, reference in extra:
        manifest = store.manifest(name, reference)
        entries.append((name, None if is_digest(reference) else reference, manifest))
    partials = [m.is_index and store.is_partial(name, str(m.digest)) for name, _, m in entries]
    walked: list[tuple[tuple[str, str | None, Manifest], _Walk, bool]] = []
    for entry, partial in zip(entries, partials, strict=True):
        name, tag, manifest = entry
        try:
            walked.append((entry, lister.walk(name, manifest, partial=partial), partial))
        except (NotFoundError, ManifestInvalidError, StoreDamageError) as exc:
            # a child manifest missing or damaged: the image cannot be told whole
            if unreadable is None or tag is None:
                raise
            unreadable.append((name, tag, exc))
    entries = [entry for entry, _, _ in walked]
    walks = [walk for _, walk, _ in walked]
    partials = [partial for _, _, partial in walked]
    # which images (by manifest digest: tags of one manifest are one image) reach each content
    owners: dict[str, set[str]] = {}
    for (_, _, manifest), walk in zip(entries, walks, strict=True):
        for digest in walk.sizes:
            owners.setdefault(digest, set()).add(str(manifest.digest))
    records = []
    for (repository, tag, manifest), walk, partial in zip(entries, walks, partials, strict=True):
        top = str(manifest.digest)
        records.append(
            ImageRecord(
                name=repository,
                tag=tag,
                digest=manifest.digest,
                media_type=manifest.media_type,
                platforms=tuple(walk.platforms),
                size=sum(walk.sizes.values()),
                unique_size=sum(s for d, s in walk.sizes.items() if owners[d] == {top}),
                partial=partial,
            )
        )
    return records
