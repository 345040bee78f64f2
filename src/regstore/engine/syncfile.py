"""The sync file's typed model and its validation (the format is in :mod:`regstore.engine.sync`).

PyYAML loads the text (:mod:`.syncyaml`: a ``SafeLoader`` without aliases, its node tree
giving line numbers and duplicate keys) and :class:`_Validator` turns it into frozen
dataclasses, naming the line and key path of any mistake. A sync file in plain JSON is read
with :mod:`json` instead (the same data; YAML is read only to point at the line of a mistake).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regstore.errors import RegstoreError, SyncFileError
from regstore.manifest import Platform
from regstore.reference import validate_name, validate_tag

from .filters import FilterError, TagFilter

__all__ = [
    "CatalogSpec",
    "ConnectionSpec",
    "Defaults",
    "RepositorySpec",
    "SourceSpec",
    "SyncFileError",
    "SyncSpec",
    "TargetSpec",
    "format_path",
    "load_sync_file",
    "parse_sync_text",
]

Path_ = tuple[str | int, ...]

#: An empty list of tags takes no tag, which a mirror never asks for: refused, not read as all
_NO_TAGS = "an empty list of tags takes none: leave the key out to take every tag"

_ABSENT = object()  # a key not written at all (a null written is another thing)

#: How deep collections may nest in a sync file (the format itself needs about eight levels).
MAX_NESTING = 64
_HOST_RE = re.compile(
    r"(?:https?://)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
    r"[A-Za-z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?/?",
    re.ASCII,
)


# -- the typed model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSpec:
    """How to reach a registry (a source or a registry target)."""

    registry: str
    plain_http: bool | None = None
    tls_verify: bool = True
    ca_cert: str | None = None
    username: str | None = None
    password_env: str | None = None

    def password(self) -> str | None:
        """The password from ``password_env`` (read now, never stored in the spec)."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise SyncFileError(
                f"the environment variable {self.password_env} (password_env for "
                f"{self.registry}) is not set"
            )
        return value


@dataclass(frozen=True)
class RepositorySpec:
    """One repository of a source, with its tag filter and platforms."""

    name: str
    tags: TagFilter = field(default_factory=TagFilter)
    platforms: tuple[str, ...] | None = None
    dest_name: str | None = None
    #: move signatures, SBOMs and attestations with the images (None: the source's setting)
    referrers: bool | None = None
    #: delete destination tags the filter takes that the source no longer has (None: the
    #: source's setting)
    prune: bool | None = None


@dataclass(frozen=True)
class CatalogSpec:
    """Every repository of a registry's catalog whose name passes the include/exclude regexes."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        """True if the repository ``name`` is taken."""
        if self.include and not any(re.search(p, name) for p in self.include):
            return False
        return not any(re.search(p, name) for p in self.exclude)


@dataclass(frozen=True)
class SourceSpec:
    """A source registry and what to take from it."""

    connection: ConnectionSpec
    repositories: tuple[RepositorySpec, ...] = ()
    catalog: CatalogSpec | None = None
    tags: TagFilter = field(default_factory=TagFilter)
    platforms: tuple[str, ...] | None = None
    prefix: str = ""
    #: move signatures, SBOMs and attestations with the images
    referrers: bool = False
    #: delete destination tags the filters take that the source no longer has
    prune: bool = False

    @property
    def registry(self) -> str:
        """The registry host (as written)."""
        return self.connection.registry

    def tags_of(self, repo: RepositorySpec) -> TagFilter:
        """The tag filter of one of its repositories: the repository's own, else the source's."""
        return repo.tags if not repo.tags.is_empty else self.tags

    def referrers_of(self, repo: RepositorySpec) -> bool:
        """Whether one of its repositories' images move their referrers."""
        return self.referrers if repo.referrers is None else repo.referrers

    def destination_of(self, repo: RepositorySpec) -> str:
        """The name one of its repositories goes to, before the target's prefix."""
        return self.prefix + (repo.dest_name or repo.name)


@dataclass(frozen=True)
class TargetSpec:
    """Where images go: a store URL, a registry, or (both None) the caller's default store."""

    store: str | None = None
    connection: ConnectionSpec | None = None
    prefix: str = ""


@dataclass(frozen=True)
class Defaults:
    """Settings for every source."""

    platforms: tuple[str, ...] | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class SyncSpec:
    """A validated sync file."""

    sources: tuple[SourceSpec, ...]
    target: TargetSpec = field(default_factory=TargetSpec)
    defaults: Defaults = field(default_factory=Defaults)
    path: str = "<sync file>"


# -- validation --------------------------------------------------------------------------------


def format_path(path: Path_) -> str:
    """A key path as an error names it: ``sources[0].repositories[1].tags``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


class _Validator:
    """Turns the loaded YAML data into the model, with errors naming the line and key path."""

    def __init__(
        self, source: str, lines: Mapping[Path_, int], scalars: Mapping[Path_, str]
    ) -> None:
        self.filename = source
        self.lines = lines
        self.scalars = scalars  # the text of each scalar as written (3.20 stays "3.20")

    def error(self, path: Path_, message: str) -> SyncFileError:
        # the line of the key itself, else of the nearest enclosing one
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        where = f"{self.filename}:{line}" if line else self.filename
        return SyncFileError(f"{where}: {format_path(path)}: {message}")

    def mapping(
        self, value: object, path: Path_, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_kind(value)}")
        allowed = list(allowed)
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {key!r}")
            if key not in allowed:
                raise self.error(
                    (*path, key), f"unknown key; expected one of: {', '.join(allowed)}"
                )
        for key in required:
            if value.get(key) is None:
                raise self.error(path, f"missing required key {key!r}")
        return value

    def string(self, value: object, path: Path_) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(path, f"expected a string, got {_kind(value)}")
        text = str(value)
        if isinstance(value, float):  # YAML reads 3.20 as the number 3.2: tags are strings
            written = self.scalars.get(path, text)
            raise self.error(path, f'{written} is read as a number; quote it: "{written}"')
        written = self.scalars.get(path, text) if isinstance(value, int) else text
        if written != text:  # 010, 0x1F, 1_000: YAML reads them as 8, 31, 1000
            raise self.error(path, f'{written} is read as the number {text}; quote it: "{written}"')
        if not text:
            raise self.error(path, "must not be empty")
        return text

    def boolean(self, value: object, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {_kind(value)}")
        return value

    def positive(self, value: object, path: Path_) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(path, f"expected a positive integer, got {value!r}")
        return value

    def bounded(self, value: object, path: Path_, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise self.error(path, f"expected a positive integer up to {maximum}, got {value!r}")
        return value

    def strings(self, value: object, path: Path_) -> tuple[str, ...]:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return (self.string(value, path),)
        if not isinstance(value, list):
            raise self.error(path, f"expected a string or a list of strings, got {_kind(value)}")
        return tuple(self.string(v, (*path, i)) for i, v in enumerate(value))

    def platforms(self, value: object, path: Path_) -> tuple[str, ...]:
        items = self.strings(value, path)
        for i, item in enumerate(items):
            try:
                Platform.parse(item)
            except ValueError as exc:
                raise self.error((*path, i), str(exc)) from None
        return items

    def name(self, value: object, path: Path_) -> str:
        text = self.string(value, path)
        try:
            return validate_name(text)
        except RegstoreError as exc:
            raise self.error(path, str(exc)) from None

    def prefix(self, value: object, path: Path_) -> str:
        text = "" if value is None else self.string(value, path)
        if text and not text.endswith("/"):
            text += "/"
        if text:
            try:
                validate_name(text + "x")
            except RegstoreError:
                raise self.error(
                    path, f"{text!r} is not a valid repository path prefix (lowercase a-z0-9._-/)"
                ) from None
        return text

    def tag_filter(self, value: object, path: Path_) -> TagFilter:
        if value is _ABSENT:
            return TagFilter()
        if value is None:  # `tags:` with nothing after it: a template's list that came out empty
            raise self.error(path, _NO_TAGS)
        try:
            if isinstance(value, list):
                if not value:  # it meant every tag (a generated list that came out empty)
                    raise self.error(path, _NO_TAGS)
                tags = self.strings(value, path)
                for i, tag in enumerate(tags):
                    try:
                        validate_tag(tag)
                    except RegstoreError as exc:
                        raise self.error((*path, i), str(exc)) from None
                return TagFilter(exact=tags)
            data = self.mapping(value, path, ("include", "exclude", "semver", "latest", "exact"))
            for key in ("exact", "include"):
                if key in data and data[key] in ([], None):
                    raise self.error((*path, key), _NO_TAGS)
            return TagFilter(
                exact=self.strings(data["exact"], (*path, "exact")) if "exact" in data else (),
                include=self._opt_strings(data, "include", path),
                exclude=self._opt_strings(data, "exclude", path),
                semver=(
                    self.string(data["semver"], (*path, "semver"))
                    if data.get("semver") is not None
                    else None
                ),
                latest=(
                    self.positive(data["latest"], (*path, "latest"))
                    if data.get("latest") is not None
                    else None
                ),
            )
        except FilterError as exc:
            raise self.error(path, str(exc)) from None

    def _opt_strings(self, data: Mapping[str, Any], key: str, path: Path_) -> tuple[str, ...]:
        if data.get(key) is None:
            return ()
        return self.strings(data[key], (*path, key))

    def connection(self, data: Mapping[str, Any], path: Path_) -> ConnectionSpec:
        registry = self.string(data["registry"], (*path, "registry"))
        if _HOST_RE.fullmatch(registry) is None:
            if "@" in registry:  # user:password@host: not to be repeated into CI logs
                # (the password itself may hold "://" or "@": the host is after the last "@",
                # the scheme, if any, before the first "://")
                head, _, host = registry.rpartition("@")
                scheme, sep, _ = head.partition("://")
                valid = sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme)
                shown = (f"{scheme}://" if valid else "") + "***@" + host
                raise self.error(
                    (*path, "registry"),
                    f"{shown!r} is not a host[:port]: credentials go in username: and "
                    "password_env:, never in the registry's address",
                )
            raise self.error((*path, "registry"), f"{registry!r} is not a host[:port]")
        plain_http = None
        if registry.startswith("http://"):
            plain_http = True
        if data.get("plain_http") is not None:
            plain_http = self.boolean(data["plain_http"], (*path, "plain_http"))
        username = password_env = None
        if data.get("username") is not None:
            username = self.string(data["username"], (*path, "username"))
        if data.get("password_env") is not None:
            password_env = self.string(data["password_env"], (*path, "password_env"))
        if (username is None) != (password_env is None):
            raise self.error(path, "username and password_env go together")
        return ConnectionSpec(
            registry=registry.rstrip("/"),
            plain_http=plain_http,
            tls_verify=(
                self.boolean(data["tls_verify"], (*path, "tls_verify"))
                if data.get("tls_verify") is not None
                else True
            ),
            ca_cert=(
                self.string(data["ca_cert"], (*path, "ca_cert"))
                if data.get("ca_cert") is not None
                else None
            ),
            username=username,
            password_env=password_env,
        )

    def repository(self, value: object, path: Path_) -> RepositorySpec:
        if isinstance(value, str):
            return RepositorySpec(name=self.name(value, path))
        data = self.mapping(
            value,
            path,
            ("name", "as", "tags", "platforms", "referrers", "prune"),
            required=("name",),
        )
        return RepositorySpec(
            name=self.name(data["name"], (*path, "name")),
            tags=self.tag_filter(data.get("tags", _ABSENT), (*path, "tags")),
            platforms=(
                self.platforms(data["platforms"], (*path, "platforms"))
                if data.get("platforms") is not None
                else None
            ),
            dest_name=self.name(data["as"], (*path, "as")) if data.get("as") is not None else None,
            referrers=(
                self.boolean(data["referrers"], (*path, "referrers"))
                if data.get("referrers") is not None
                else None
            ),
            prune=(
                self.boolean(data["prune"], (*path, "prune"))
                if data.get("prune") is not None
                else None
            ),
        )

    def catalog(self, value: object, path: Path_) -> CatalogSpec | None:
        if value is None or value is False:
            return None
        if value is True:
            return CatalogSpec()
        data = self.mapping(value, path, ("include", "exclude"))
        spec = CatalogSpec(
            include=self._opt_strings(data, "include", path),
            exclude=self._opt_strings(data, "exclude", path),
        )
        for key, patterns in (("include", spec.include), ("exclude", spec.exclude)):
            for i, pattern in enumerate(patterns):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise self.error(
                        (*path, key, i), f"invalid regular expression: {exc}"
                    ) from None
        return spec

    def source(self, value: object, path: Path_) -> SourceSpec:
        keys = (
            "registry", "plain_http", "tls_verify", "ca_cert", "username", "password_env",
            "prefix", "platforms", "tags", "repositories", "catalog", "referrers", "prune",
        )  # fmt: skip
        data = self.mapping(value, path, keys, required=("registry",))
        repos_value = data.get("repositories")
        if repos_value is None:
            repos: tuple[RepositorySpec, ...] = ()
        elif isinstance(repos_value, list):
            repos = tuple(
                self.repository(r, (*path, "repositories", i)) for i, r in enumerate(repos_value)
            )
        else:
            raise self.error((*path, "repositories"), f"expected a list, got {_kind(repos_value)}")
        catalog = self.catalog(data.get("catalog"), (*path, "catalog"))
        if not repos and catalog is None:
            raise self.error(path, "give repositories (a list) or catalog: true")
        return SourceSpec(
            connection=self.connection(data, path),
            repositories=repos,
            catalog=catalog,
            tags=self.tag_filter(data.get("tags", _ABSENT), (*path, "tags")),
            platforms=(
                self.platforms(data["platforms"], (*path, "platforms"))
                if data.get("platforms") is not None
                else None
            ),
            prefix=self.prefix(data.get("prefix"), (*path, "prefix")),
            referrers=(
                self.boolean(data["referrers"], (*path, "referrers"))
                if data.get("referrers") is not None
                else False
            ),
            prune=(
                self.boolean(data["prune"], (*path, "prune"))
                if data.get("prune") is not None
                else False
            ),
        )

    def target(self, value: object, path: Path_) -> TargetSpec:
        if value is None:
            return TargetSpec()
        keys = ("store", "registry", "plain_http", "tls_verify", "ca_cert", "username",
                "password_env", "prefix")  # fmt: skip
        data = self.mapping(value, path, keys)
        has_store, has_registry = data.get("store") is not None, data.get("registry") is not None
        if has_store and has_registry:
            raise self.error(path, "give either store or registry, not both")
        if has_store:
            extra = [k for k in keys[2:-1] if k in data]
            if extra:
                raise self.error((*path, extra[0]), "only applies to a registry target")
        return TargetSpec(
            store=self.string(data["store"], (*path, "store")) if has_store else None,
            connection=self.connection(data, path) if has_registry else None,
            prefix=self.prefix(data.get("prefix"), (*path, "prefix")),
        )

    def spec(self, value: object) -> SyncSpec:
        if value is None:
            raise self.error((), "the file is empty")
        data = self.mapping(value, (), ("version", "defaults", "target", "sources"))
        if data.get("version", 1) != 1:
            raise self.error(("version",), f"unsupported version {data['version']!r}; use 1")
        defaults = Defaults()
        if data.get("defaults") is not None:
            # (start-up: a sync reads its file before it loads the engine, benchmarks/)
            from .transfer import MAX_CONCURRENCY

            d = self.mapping(data["defaults"], ("defaults",), ("platforms", "concurrency"))
            defaults = Defaults(
                platforms=(
                    self.platforms(d["platforms"], ("defaults", "platforms"))
                    if d.get("platforms") is not None
                    else None
                ),
                concurrency=(
                    self.bounded(d["concurrency"], ("defaults", "concurrency"), MAX_CONCURRENCY)
                    if d.get("concurrency") is not None
                    else None
                ),
            )
        sources = data.get("sources")
        if not isinstance(sources, list) or not sources:
            raise self.error(("sources",), "expected a non-empty list of sources")
        parsed = tuple(self.source(s, ("sources", i)) for i, s in enumerate(sources))
        target = self.target(data.get("target"), ("target",))
        if target.connection is not None:
            for i, source in enumerate(parsed):
                for path in _prune_paths(source, ("sources", i)):
                    raise self.error(
                        path,
                        "prune deletes tags in a store: a registry target keeps its tags "
                        "(a registry deletes a manifest with every tag naming it)",
                    )
        return SyncSpec(sources=parsed, target=target, defaults=defaults, path=self.filename)


def _prune_paths(source: SourceSpec, path: Path_) -> Iterable[Path_]:
    """Where ``source`` turns pruning on (its own key, then its repositories')."""
    if source.prune:
        yield (*path, "prune")
    for i, repo in enumerate(source.repositories):
        if repo.prune:
            yield (*path, "repositories", i, "prune")


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def parse_sync_text(text: str, source: str = "<sync file>") -> SyncSpec:
    """Validate sync-file text into a :class:`SyncSpec`; SyncFileError says where and why."""
    plain_error: SyncFileError | None = None
    data = _plain_json(text)
    if data is not _NOT_PLAIN:
        try:
            return _Validator(source, {}, {}).spec(data)
        except SyncFileError as exc:  # said again below, with its line
            plain_error = exc
    from .syncyaml import compose  # the YAML stack only for YAML (and to point at a line)

    try:
        data, lines, scalars = compose(text, source)
    except SyncFileError:
        if plain_error is not None:  # JSON that PyYAML cannot read (a tab, say): no line
            raise plain_error from None
        raise
    return _Validator(source, lines, scalars).spec(data)


_NOT_PLAIN = object()


class _NotPlain(Exception):
    pass


def _refuse(*args: object) -> Any:
    raise _NotPlain


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _NotPlain  # YAML's reading names the duplicate key and its line
    return found


def _depth(value: object, limit: int) -> bool:
    """Whether ``value`` nests no deeper than ``limit`` collections."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return True
    return limit > 0 and all(_depth(item, limit - 1) for item in value)


#: Characters PyYAML refuses in a file (its reader's non-printable class) or reads as line
#: breaks (NEL, LS, PS); an escaped UTF-16 surrogate (JSON pairs two into one character,
#: PyYAML keeps them apart); a key whose colon is on a later line (PyYAML refuses it).
#: Compiled when a file holds more than ASCII: its character class costs about 5 ms to
#: compile, more than all of a JSON sync file's reading.
_READ_APART = (
    "[^\t\n\r -~\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
    r"|\\u[dD][89a-fA-F]"
    r'|"[ \t\r]*\n\s*:'
)
#: :data:`_READ_APART` for text all ASCII, alike on every ASCII character (a tenth of the cost)
_READ_APART_ASCII = re.compile(r'[^\t\n\r -~]|\\u[dD][89a-fA-F]|"[ \t\r]*\n\s*:')


@functools.cache
def _read_apart() -> re.Pattern[str]:
    return re.compile(_READ_APART)


def _plain_json(text: str) -> Any:
    """The data of ``text`` when it is JSON that YAML reads alike, else :data:`_NOT_PLAIN`.

    JSON is YAML too, but importing and running PyYAML's loader costs a ``sync`` more than
    anything else it reads before its first request (about 10 ms), and a generated sync file
    is often JSON. Whatever JSON and PyYAML (YAML 1.1) could read apart is left to the YAML
    reading: a number with a fraction or exponent (``1e3`` is a string to YAML 1.1), NaN or
    Infinity, a duplicate key (refused there, with its line), nesting past
    :data:`MAX_NESTING`, the characters and forms of :data:`_READ_APART`. One difference is
    kept on purpose: JSON indented with tabs, which PyYAML refuses, is read."""
    read_apart = _READ_APART_ASCII if text.isascii() else _read_apart()
    if not text.lstrip().startswith("{") or read_apart.search(text):
        return _NOT_PLAIN
    import json

    try:
        data = json.loads(
            text, object_pairs_hook=_unique, parse_float=_refuse, parse_constant=_refuse
        )
    except (ValueError, RecursionError, _NotPlain):
        return _NOT_PLAIN
    return data if _depth(data, MAX_NESTING - 1) else _NOT_PLAIN


def load_sync_file(path: str | os.PathLike[str]) -> SyncSpec:
    """Read and validate a sync file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SyncFileError(f"cannot read the sync file {os.fspath(path)}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SyncFileError(f"{os.fspath(path)}: not UTF-8 text ({exc.reason})") from None
    return parse_sync_text(text, os.fspath(path))
