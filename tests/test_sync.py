"""The sync file: validation into typed objects, planning into jobs, and a real run.

Planning is tested against a small in-process stand-in for the registry client (only listing
and HEAD are needed); the run goes through the engine against a real registry.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regstore import ObjectStore, open_store
from regstore.engine import RegistryImage, StoreImage, syncfile
from regstore.engine.filters import TagFilter
from regstore.engine.shards import Shard
from regstore.engine.sync import (
    CatalogSpec,
    ConnectionSpec,
    Defaults,
    RepositorySpec,
    SourceSpec,
    SyncFileError,
    SyncSpec,
    TargetSpec,
    load_sync_file,
    parse_sync_text,
    plan_sync,
    preview_job,
    prune_destinations,
    run_sync,
)
from regstore.errors import (
    ImageManifestNotFoundError,
    PagingError,
    RepositoryNotFoundError,
    TransportError,
)
from regstore.testing.builders import build_image

from .support.cli import damage_tag_link, put_image
from .support.engine import seed_registry
from .support.registry import RegistryServer
from .support.skopeo import push_with_skopeo

FULL = """\
version: 1
defaults: {platforms: [linux/amd64], concurrency: 3}
target: {store: "file:///srv/mirror", prefix: mirror}
sources:
  - registry: 127.0.0.1:5000
    plain_http: true
    username: bot
    password_env: SRC_PASSWORD
    repositories:
      - name: team/app
        tags: {include: ["^1\\\\."], exclude: ["-rc"], semver: ">=1.2.0", latest: 3}
      - name: library/alpine
        as: base/alpine
        tags: ["3.19", "3.20"]
        platforms: [linux/arm64/v8]
      - team/other
  - registry: ghcr.io
    tls_verify: false
    ca_cert: /etc/ca.pem
    prefix: ghcr
    catalog: {include: ["^org/"], exclude: ["-test$"]}
    tags: {latest: 2}
"""


def test_a_full_file_becomes_typed_frozen_objects() -> None:
    spec = parse_sync_text(FULL, "mirror.yaml")
    assert spec == SyncSpec(
        sources=(
            SourceSpec(
                connection=ConnectionSpec(
                    "127.0.0.1:5000", plain_http=True, username="bot", password_env="SRC_PASSWORD"
                ),
                repositories=(
                    RepositorySpec(
                        "team/app",
                        TagFilter(include=("^1\\.",), exclude=("-rc",), semver=">=1.2.0", latest=3),
                    ),
                    RepositorySpec(
                        "library/alpine",
                        TagFilter(exact=("3.19", "3.20")),
                        platforms=("linux/arm64/v8",),
                        dest_name="base/alpine",
                    ),
                    RepositorySpec("team/other"),
                ),
            ),
            SourceSpec(
                connection=ConnectionSpec("ghcr.io", tls_verify=False, ca_cert="/etc/ca.pem"),
                catalog=CatalogSpec(include=("^org/",), exclude=("-test$",)),
                tags=TagFilter(latest=2),
                prefix="ghcr/",
            ),
        ),
        target=TargetSpec(store="file:///srv/mirror", prefix="mirror/"),
        defaults=Defaults(platforms=("linux/amd64",), concurrency=3),
        path="mirror.yaml",
    )
    with pytest.raises(AttributeError):
        spec.target.prefix = "x"  # type: ignore[misc]


def test_a_registry_target_and_the_smallest_file() -> None:
    spec = parse_sync_text(
        "target: {registry: 'http://127.0.0.1:6000', prefix: m/}\n"
        "sources: [{registry: 127.0.0.1:5000, repositories: [a]}]\n"
    )
    assert spec.target.connection == ConnectionSpec("http://127.0.0.1:6000", plain_http=True)
    assert spec.target.store is None
    assert spec.sources[0].repositories == (RepositorySpec("a"),)
    assert spec.defaults == Defaults()


def _error(text: str) -> str:
    with pytest.raises(SyncFileError) as info:
        parse_sync_text(text, "s.yaml")
    return str(info.value)


SRC = "sources:\n  - registry: h:5000\n"
REPOS = "    repositories: [a]\n"
TAGS_OF_A = SRC + "    repositories:\n      - name: a\n        tags: "
BAD_FILES = [
    ("", "s.yaml: (top level): the file is empty"),
    ("- a\n", "(top level): expected a mapping, got a list"),
    ("sources: [\n", "s.yaml:2: not valid YAML"),
    ("version: 2\n" + SRC, "s.yaml:1: version: unsupported version 2"),
    ("sources: []\n", "sources: expected a non-empty list"),
    ("srcs: []\n", "s.yaml:1: srcs: unknown key; expected one of: version, defaults"),
    (SRC, "s.yaml:2: sources[0]: give repositories (a list) or catalog: true"),
    (SRC + "    repositories: a\n", "sources[0].repositories: expected a list, got a string"),
    (SRC + "    repositories: [A]\n", "s.yaml:3: sources[0].repositories[0]: invalid name 'A'"),
    (
        TAGS_OF_A + "{semvr: '>1'}\n",
        "s.yaml:5: sources[0].repositories[0].tags.semvr: unknown key; expected one of: "
        "include, exclude, semver, latest, exact",
    ),
    (
        TAGS_OF_A + "[3.20]\n",
        's.yaml:5: sources[0].repositories[0].tags[0]: 3.20 is read as a number; quote it: "3.20"',
    ),
    (TAGS_OF_A + "{semver: nope}\n", "repositories[0].tags: invalid semver range 'nope'"),
    (TAGS_OF_A + "{include: ['(']}\n", "tags: invalid include regular expression '('"),
    (TAGS_OF_A + "{latest: 0}\n", "tags.latest: expected a positive integer, got 0"),
    (TAGS_OF_A + "['bad tag']\n", "repositories[0].tags[0]: invalid tag 'bad tag'"),
    (SRC + "    repositories:\n      - {tags: [a]}\n", "missing required key 'name'"),
    (SRC + REPOS + "    repositories: [b]\n", "s.yaml:4: sources[0].repositories: duplicate key"),
    (SRC + "    platforms: [linux]\n" + REPOS, "platforms[0]: invalid platform 'linux'"),
    (SRC + "    plain_http: yes please\n" + REPOS, "plain_http: expected true or false"),
    (SRC + "    username: u\n" + REPOS, "sources[0]: username and password_env go together"),
    (SRC + "    prefix: 'Bad/'\n" + REPOS, "sources[0].prefix: 'Bad/' is not a valid"),
    (SRC + "    catalog: {include: ['(']}\n", "catalog.include[0]: invalid regular expression"),
    ("sources:\n  - registry: 'a b'\n" + REPOS, "sources[0].registry: 'a b' is not a host"),
    (  # a password written into the address is not repeated into the logs
        "sources:\n  - registry: 'http://me:S3cr3tPw@h:5'\n" + REPOS,
        "sources[0].registry: 'http://***@h:5' is not a host[:port]: credentials go in",
    ),
    ("target: {registry: 'me:S3cr3tPw@h'}\n" + SRC + REPOS, "target.registry: '***@h' is not"),
    ("target: {registry: 'me:S3cr3tPw://x@y@h'}\n" + SRC + REPOS, "registry: '***@h' is not"),
    (
        "target: {registry: 'https://me:S3cr3tPw://x@h'}\n" + SRC + REPOS,
        "registry: 'https://***@h' is not",
    ),
    ("sources:\n  - repositories: [a]\n", "sources[0]: missing required key 'registry'"),
    ("target: {store: x, registry: y}\n" + SRC + REPOS, "target: give either store or registry"),
    (
        "target: {store: x, plain_http: true}\n" + SRC + REPOS,
        "s.yaml:1: target.plain_http: only applies to a registry target",
    ),
    ("defaults: {concurrency: -1}\n" + SRC + REPOS, "concurrency: expected a positive integer"),
    ("defaults: {retries: 3}\n" + SRC + REPOS, "defaults.retries: unknown key"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_mistakes_name_the_line_and_the_key_path(text: str, message: str) -> None:
    error = _error(text)
    assert message in error
    assert "S3cr3tPw" not in error


def _as_json(yaml_text: str) -> str:
    import json

    import yaml

    return json.dumps(yaml.safe_load(yaml_text), indent=2)


def test_a_json_sync_file_reads_as_its_yaml_does() -> None:
    """Plain JSON is read without PyYAML (a start-up cost of every sync): the same spec."""
    assert parse_sync_text(_as_json(FULL), "mirror.yaml") == parse_sync_text(FULL, "mirror.yaml")


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for t, m in BAD_FILES if t and "not valid YAML" not in m]
)
def test_a_mistake_in_a_json_sync_file_is_told_as_in_yaml_with_its_line(
    text: str, message: str
) -> None:
    as_json = _as_json(text)
    if "duplicate key" in message:  # (YAML kept the last one: write the duplicate out)
        as_json = as_json.replace('"repositories": [', '"repositories": ["b"], "repositories": [')
    with pytest.raises(SyncFileError) as info:
        parse_sync_text(as_json, "s.json")
    where, _, said = str(info.value).partition(": ")
    # (3.20 written to JSON is 3.2: the message quotes the file as written)
    assert said == _error(text).partition(": ")[2].replace("3.20", "3.2")
    assert (where == "s.json") == (_error(text).partition(": ")[0] == "s.yaml")
    assert where == "s.json" or 1 <= int(where.removeprefix("s.json:")) <= len(as_json.splitlines())


@pytest.mark.parametrize("tags", ["[]", "{exact: []}", "", "null", "{include: []}"])
def test_an_empty_list_of_tags_is_refused_not_read_as_every_tag(tags: str) -> None:
    # a generated sync file whose tag list came out empty mirrored the whole repository
    with pytest.raises(SyncFileError, match=r"s\.yaml:5: .*an empty list of tags takes none"):
        parse_sync_text(TAGS_OF_A + tags + "\n", "s.yaml")


@pytest.mark.parametrize(
    ("tags", "said"),
    [
        ("[1, 010]", "s.yaml:5: sources[0].repositories[0].tags[1]: 010 is read as the number 8"),
        ("[0x1F]", 'tags[0]: 0x1F is read as the number 31; quote it: "0x1F"'),
        ("[1_000]", "tags[0]: 1_000 is read as the number 1000; quote it"),
        ("[+5]", "tags[0]: +5 is read as the number 5; quote it"),
    ],
)
def test_an_integer_yaml_writes_otherwise_is_no_tag(tags: str, said: str) -> None:
    # planned as the tags 8, 31, 1000, 5 before: tags the file never named
    with pytest.raises(SyncFileError, match=re.escape(said)):
        parse_sync_text(TAGS_OF_A + tags + "\n", "s.yaml")
    plain = parse_sync_text(TAGS_OF_A + "[1, 20]\n", "s.yaml")  # as written: tags
    assert plain.sources[0].repositories[0].tags.exact == ("1", "20")


@pytest.mark.parametrize(
    ("tags", "read_as"),
    [
        ("[3.20]", '3.20 is read as a number; quote it: "3.20"'),  # a float: as YAML says
        ("[1e3, 1.5e3, NaN]", ("1e3", "1.5e3", "NaN")),  # strings to YAML 1.1
    ],
)
def test_json_that_yaml_reads_otherwise_is_read_as_yaml(tags: str, read_as: Any) -> None:
    text = '{"sources": [{"registry": "h:5000",\n  "repositories": [{"name": "a", "tags": %s}]}]}'
    if isinstance(read_as, str):
        with pytest.raises(SyncFileError, match=f"^s.json:2: .*{read_as}"):
            parse_sync_text(text % tags, "s.json")
    else:
        repository = parse_sync_text(text % tags, "s.json").sources[0].repositories[0]
        assert repository.tags == TagFilter(exact=read_as)


@pytest.mark.parametrize(
    "store",
    [
        "file:///m\x85irror",  # NEL: a line break to YAML, folded into a space
        "file:///m\u2028irror",  # LS: the same
        "file:///mirror\\ud83d\\ude00",  # an escaped surrogate pair: two characters to YAML
        "file:///m\x7firror",  # DEL, a C1 control, U+FFFF: refused by YAML
        "file:///m\x9birror",
        "file:///m\uffffirror",
    ],
)
def test_json_with_characters_yaml_reads_otherwise_is_read_as_yaml(store: str) -> None:
    text = '{"target": {"store": "%s"},\n "sources": [{"registry": "h", "repositories": ["a"]}]}'
    as_yaml = "# the same text, read as YAML only\n" + text % store
    try:
        expected = parse_sync_text(as_yaml, "s.json").target.store
    except SyncFileError as exc:
        assert "unacceptable character" in str(exc)
        with pytest.raises(SyncFileError, match="not valid YAML: unacceptable character"):
            parse_sync_text(text % store, "s.json")
    else:
        assert parse_sync_text(text % store, "s.json").target.store == expected


def test_the_ascii_test_of_what_yaml_reads_otherwise_agrees_with_the_whole_one() -> None:
    """A file all ASCII is looked at with a pattern that compiles in a tenth of the time of
    the whole one: on every ASCII character, and each form of more than one, they agree."""
    whole = re.compile(syncfile._READ_APART)
    texts = [f"a{chr(c)}b" for c in range(128)]
    texts += ['"\\ud83d"', '"\\uD800"', '"\\u0041"', '{"k"\n: 1}', '{"k" \t\n  : 1}', '{"k": 1}']
    for text in texts:
        assert bool(syncfile._READ_APART_ASCII.search(text)) == bool(whole.search(text)), text
    assert sum(bool(whole.search(t)) for t in texts) == 29 + 1 + 2 + 2  # C0 but tab, LF, CR; DEL


def test_json_with_a_key_whose_colon_is_on_the_next_line_is_refused_as_yaml_refuses_it() -> None:
    text = '{"sources"\n: [{"registry": "h", "repositories": ["a"]}]}'
    with pytest.raises(SyncFileError, match="not valid YAML"):
        parse_sync_text(text, "s.json")


def test_json_deeper_than_the_yaml_bound_is_refused_as_yaml_refuses_it() -> None:
    text = '{"sources": ' + "[" * 70 + "]" * 70 + "}"
    with pytest.raises(SyncFileError, match="nested more than 64 levels"):
        parse_sync_text(text, "s.json")


def test_json_that_pyyaml_cannot_read_still_says_what_is_wrong() -> None:
    # JSON may indent with tabs, which PyYAML refuses: a valid file is read, a mistake named
    good = '{\n\t"sources": [{"registry": "h:5000", "repositories": ["a"]}]\n}'
    assert parse_sync_text(good).sources[0].repositories == (RepositorySpec("a"),)
    with pytest.raises(SyncFileError, match=r"^s.json: sources\[0\].repositories\[0\]: invalid"):
        parse_sync_text(good.replace('"a"', '"A"'), "s.json")


def test_a_json_sync_file_is_read_without_importing_yaml(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "s.json"
    path.write_text(_as_json(FULL))
    child = (
        "import sys; from regstore.engine.sync import load_sync_file; "
        f"load_sync_file({str(path)!r}); print('yaml' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_sync_file_errors_are_regstore_and_value_errors(tmp_path: Path) -> None:
    with pytest.raises(SyncFileError, match="cannot read the sync file"):
        load_sync_file(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_sync_file(binary)
    good = tmp_path / "good.yaml"
    good.write_text(SRC + "    repositories: [a]\n")
    assert load_sync_file(good).path == str(good)


def test_password_env_is_read_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = ConnectionSpec("h", username="u", password_env="REGSTORE_TEST_PW")
    monkeypatch.delenv("REGSTORE_TEST_PW", raising=False)
    with pytest.raises(SyncFileError, match=r"REGSTORE_TEST_PW .* is not set"):
        conn.password()
    monkeypatch.setenv("REGSTORE_TEST_PW", "s3cret")
    assert conn.password() == "s3cret"
    assert "s3cret" not in repr(conn)
    assert ConnectionSpec("h").password() is None


# -- planning ------------------------------------------------------------------------------------


@dataclass
class FakeClient:
    """Listing and HEAD only: what planning and dry runs ask of a registry."""

    host: str
    repos: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> tag -> digest
    catalog_fails: bool = False
    listed: list[str] = field(default_factory=list)
    #: repositories whose listing a registry's paging cut short (their first tag only)
    cut: tuple[str, ...] = ()

    @property
    def registry(self) -> str:
        return self.host

    def list_image_tags(self, name: str, *, complete: bool = False) -> list[str]:
        self.listed.append(name)
        if name not in self.repos:
            raise RepositoryNotFoundError(name)
        if name in self.cut:
            if complete:
                raise PagingError(
                    f"listing tags of {name}: the next-page Link leads elsewhere",
                    registry=self.host,
                    name=name,
                )
            return list(self.repos[name])[:1]
        return list(self.repos[name])

    def catalog(self) -> list[str]:
        if self.catalog_fails:
            raise TransportError("catalog unavailable")
        return sorted(self.repos)

    def head_manifest(self, name: str, reference: str) -> Any:
        digest = self.repos.get(name, {}).get(reference)
        return None if digest is None else type("Info", (), {"digest": digest})()


D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.fixture
def memory_store() -> Iterator[ObjectStore]:
    with open_store(f"memory://sync-{uuid.uuid4().hex}") as store:
        yield store


def test_plan_expands_repositories_catalogs_filters_and_names(memory_store: ObjectStore) -> None:
    src = FakeClient(
        "src:5000",
        {
            "team/app": {"1.0.0": D1, "1.2.0": D2, "1.3.0-rc1": D3, "2.0.0": D1, "latest": D2},
            "org/a": {"x": D1, "y": D2, "z": D3},
            "org/a-test": {"x": D1},
            "other/b": {"x": D1},
        },
    )
    spec = parse_sync_text(
        """
defaults: {platforms: [linux/amd64]}
target: {prefix: mirror}
sources:
  - registry: src:5000
    prefix: src
    repositories:
      - name: team/app
        tags: {semver: ">=1.1", exclude: ["-rc"]}
      - name: team/app
        as: pinned/app
        tags: ["1.0.0", "gone"]
        platforms: [linux/arm64]
    catalog: {include: ["^org/"], exclude: ["-test$"]}
    tags: {latest: 2}
"""
    )
    plan = plan_sync(spec, client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    jobs = [(str(j.source), str(j.destination), j.platforms) for j in plan.jobs]
    amd, arm = ("linux/amd64",), ("linux/arm64",)
    assert jobs == [
        ("src:5000/team/app:1.2.0", "store:mirror/src/team/app:1.2.0", amd),
        ("src:5000/team/app:2.0.0", "store:mirror/src/team/app:2.0.0", amd),
        ("src:5000/team/app:gone", "store:mirror/src/pinned/app:gone", arm),
        ("src:5000/team/app:1.0.0", "store:mirror/src/pinned/app:1.0.0", arm),
        ("src:5000/org/a:y", "store:mirror/src/org/a:y", amd),
        ("src:5000/org/a:z", "store:mirror/src/org/a:z", amd),
    ]
    # an exact tag list is used as given: no listing for the pinned repository
    assert src.listed == ["team/app", "org/a"]
    assert plan.failures == []
    assert all(isinstance(j.destination, StoreImage) for j in plan.jobs)

    narrowed = plan_sync(
        spec,
        client_for=lambda conn: src,  # type: ignore[arg-type,return-value]
        target_store=memory_store,
        extra_filter=TagFilter(include=["^1"]),
    )
    assert [str(j.source) for j in narrowed.jobs] == [
        "src:5000/team/app:1.2.0",
        "src:5000/team/app:1.0.0",
    ]  # and "gone": not a tag starting with 1


def _tagged(store: ObjectStore, name: str, tags: list[str]) -> None:
    for i, tag in enumerate(tags):
        put_image(store, name, tag, build_image(seed=700 + i, layers=1, layer_size=64))


def _prune_plan(store: ObjectStore, src: FakeClient, text: str, **kw: Any) -> Any:
    spec = parse_sync_text(text)
    return plan_sync(spec, client_for=lambda conn: src, target_store=store, **kw)  # type: ignore[arg-type,return-value]


def test_prune_deletes_only_the_tags_the_filters_take_that_the_source_lost(
    memory_store: ObjectStore,
) -> None:
    # mirrored before; the source has since dropped 1.5.0 and 0.1.0; "local" was pulled by hand
    _tagged(
        memory_store,
        "team/app",
        ["0.1.0", "1.2.0", "1.5.0", "2.0.0", "local", "sha256-" + "a" * 64],
    )
    src = FakeClient("src:5000", {"team/app": {"1.2.0": D1, "2.0.0": D2, "2.1.0-rc1": D3}})
    text = (
        "sources:\n  - registry: src:5000\n    prune: true\n    repositories:\n"
        "      - name: team/app\n        tags: {semver: '>=1.1', exclude: ['-rc']}\n"
    )
    plan = _prune_plan(memory_store, src, text)
    assert [(p.source, p.name, sorted(p.kept)) for p in plan.prunes] == [
        ("src:5000/team/app", "team/app", ["1.2.0", "2.0.0"])
    ]
    dry = prune_destinations(plan, dry_run=True)
    assert [(o.source, o.destination, o.status) for o in dry] == [
        ("src:5000/team/app:1.5.0", "store:team/app:1.5.0", "pruned")
    ]
    assert "1.5.0" in memory_store.tags("team/app")  # a dry run
    done = prune_destinations(plan)
    assert [(o.destination, o.status) for o in done] == [("store:team/app:1.5.0", "pruned")]
    # outside the filter (0.1.0 below the range, "local"), or a signature's tag: kept
    assert memory_store.tags("team/app") == [
        "0.1.0",
        "1.2.0",
        "2.0.0",
        "local",
        "sha256-" + "a" * 64,
    ]
    assert prune_destinations(plan) == []  # nothing left to prune

    # the command line's filters narrow what goes too; its latest-N window takes no tag the
    # source still has
    _tagged(memory_store, "team/app", ["1.5.0", "1.6.0"])
    narrowed = _prune_plan(memory_store, src, text, extra_filter=TagFilter(include=["^1\\.6"]))
    assert [o.destination for o in prune_destinations(narrowed)] == ["store:team/app:1.6.0"]
    one = _prune_plan(memory_store, src, text, extra_filter=TagFilter(latest=1))
    assert [o.destination for o in prune_destinations(one, dry_run=True)] == [
        "store:team/app:1.5.0"
    ]
    # a tag that leaves the latest-N window goes, as one the source dropped
    window = text.replace("exclude: ['-rc']", "exclude: ['-rc'], latest: 1")
    assert [o.destination for o in prune_destinations(_prune_plan(memory_store, src, window))] == [
        "store:team/app:1.2.0",
        "store:team/app:1.5.0",
    ]
    assert memory_store.tags("team/app") == ["0.1.0", "2.0.0", "local", "sha256-" + "a" * 64]


def test_prune_keeps_all_where_the_source_cannot_tell_what_it_lost(
    memory_store: ObjectStore,
) -> None:
    _tagged(memory_store, "team/app", ["1", "2"])
    _tagged(memory_store, "team/empty", ["1"])
    _tagged(memory_store, "shared", ["x"])
    src = FakeClient("src:5000", {"team/app": {"1": D1}, "team/empty": {}, "other": {"y": D2}})
    plan = _prune_plan(
        memory_store,
        src,
        "sources:\n  - registry: src:5000\n    prune: true\n    repositories:\n"
        "      - team/gone\n"  # the listing fails
        "      - team/empty\n"  # lists no tags at all
        "      - {name: team/app, tags: ['1']}\n"  # exact tags: nothing to take away
        "      - {name: team/app, as: shared}\n"  # two repositories write into shared
        "      - {name: other, as: shared, prune: false}\n",
    )
    assert plan.prunes == []
    skipped = {(o.source, o.error) for o in plan.skipped}
    assert skipped == {
        ("src:5000/team/empty", "nothing pruned: the source lists no tags"),
        (
            "src:5000/team/app",
            "nothing pruned: 2 entries of the file write into it (src:5000/other)",
        ),
    }
    assert [o.source for o in plan.failures] == ["src:5000/team/gone"]
    assert prune_destinations(plan) == []
    assert memory_store.tags("team/empty") == ["1"] and memory_store.tags("shared") == ["x"]

    # one source repository twice, with two filters: two entries, one destination
    _tagged(memory_store, "twice", ["1.0", "1.1", "2.0"])
    src.repos["twice"] = {"1.0": D1, "1.1": D2, "2.0": D3}
    plan = _prune_plan(
        memory_store,
        src,
        "sources:\n  - registry: src:5000\n    prune: true\n    repositories:\n"
        "      - {name: twice, tags: {latest: 1}}\n"
        "      - {name: twice, tags: {include: ['^1']}}\n",
    )
    assert plan.prunes == [] and prune_destinations(plan) == []
    # a listing cut short (a next-page Link not followed): what it lists moves, nothing goes
    src.cut = ("twice",)
    plan = _prune_plan(
        memory_store,
        src,
        "sources:\n  - registry: src:5000\n    prune: true\n    repositories: [twice]\n",
    )
    assert plan.prunes == [] and [str(j.source) for j in plan.jobs] == ["src:5000/twice:1.0"]
    assert "the next-page Link leads elsewhere" in plan.skipped[0].error
    # a source whose repositories are unknown (its catalog could not be listed): no prune
    src.cut, src.catalog_fails = (), True
    plan = _prune_plan(
        memory_store,
        src,
        "sources:\n  - registry: src:5000\n    prune: true\n    repositories: [twice]\n"
        "    catalog: true\n",
    )
    assert plan.prunes == []
    assert "src:5000 (catalog) could not be listed" in plan.skipped[-1].error
    assert memory_store.tags("twice") == ["1.0", "1.1", "2.0"]


def test_prune_is_refused_for_a_registry_target_and_shares_split_it(
    memory_store: ObjectStore,
) -> None:
    for where, text in (
        ("sources[0].prune", "    prune: true\n    repositories: [a/b]\n"),
        ("sources[0].repositories[0].prune", "    repositories: [{name: a/b, prune: true}]\n"),
    ):
        with pytest.raises(SyncFileError, match=re.escape(where) + ".*registry target keeps"):
            parse_sync_text(f"target: {{registry: 'h:1'}}\nsources:\n  - registry: h:2\n{text}")
    with pytest.raises(SyncFileError, match="expected true or false"):
        parse_sync_text("sources:\n  - registry: h:2\n    prune: 'yes'\n    repositories: [a]\n")

    _tagged(memory_store, "team/app", [f"old{i}" for i in range(12)])
    src = FakeClient("src:5000", {"team/app": {"new": D1}})
    plan = _prune_plan(
        memory_store,
        src,
        "sources:\n  - registry: src:5000\n    prune: true\n    repositories: [team/app]\n",
    )
    shares = [Shard.parse(f"{k}/3") for k in (1, 2, 3)]
    split = [
        [o.destination for o in prune_destinations(s.select(plan), dry_run=True)] for s in shares
    ]
    assert sorted(d for part in split for d in part) == [
        f"store:team/app:old{i}" for i in sorted(range(12), key=str)
    ]
    assert all(split)  # each share prunes its own part, none all


def test_listing_failures_are_reported_and_the_rest_planned(memory_store: ObjectStore) -> None:
    src = FakeClient("src:5000", {"team/app": {"1": D1}}, catalog_fails=True)
    spec = parse_sync_text(
        "sources:\n  - registry: src:5000\n    repositories: [team/app, team/gone]\n"
        "    catalog: true\n"
    )
    plan = plan_sync(spec, client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    assert [str(j.source) for j in plan.jobs] == ["src:5000/team/app:1"]
    assert [(f.source, f.status) for f in plan.failures] == [
        ("src:5000 (catalog)", "failed"),
        ("src:5000/team/gone", "failed"),
    ]
    assert "catalog unavailable" in (plan.failures[0].error or "")
    assert "team/gone" in (plan.failures[1].error or "")


def test_images_that_would_write_one_tag_fail_and_one_asked_twice_runs_once(
    memory_store: ObjectStore,
) -> None:
    # both were copied, the last one won, and the next run reported one of them unchanged
    src = FakeClient("src:5000", {"team/app": {"1": D1, "2": D2}, "team/dock": {"1": D3}})
    spec = parse_sync_text(
        """
sources:
  - registry: src:5000
    repositories:
      - {name: team/app, tags: ["1", "2"]}
      - {name: team/dock, as: team/app, tags: ["1"]}
      - {name: team/app, tags: ["2"]}
"""
    )
    plan = plan_sync(spec, client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    assert [(str(j.source), str(j.destination)) for j in plan.jobs] == [
        ("src:5000/team/app:2", "store:team/app:2"),  # (once)
    ]
    assert sorted((f.source, f.destination, f.status) for f in plan.failures) == [
        ("src:5000/team/app:1", "store:team/app:1", "failed"),
        ("src:5000/team/dock:1", "store:team/app:1", "failed"),
    ]
    assert all(
        "is the destination of 2 images" in (f.error or "")
        and "src:5000/team/app:1, src:5000/team/dock:1" in (f.error or "")
        for f in plan.failures
    )


def test_a_conflict_is_reported_by_the_share_of_each_image_and_platform_order_is_no_conflict(
    memory_store: ObjectStore,
) -> None:
    src = FakeClient("src:5000", {"team/app": {str(n): D1 for n in range(12)}})
    src.repos["team/dock"] = {str(n): D2 for n in range(12)}
    same = """
sources:
  - registry: src:5000
    repositories:
      - {name: team/app, platforms: [linux/amd64, linux/arm64]}
      - {name: team/app, platforms: [linux/arm64, linux/amd64]}
"""
    once = plan_sync(parse_sync_text(same), client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    assert len(once.jobs) == 12 and once.failures == []  # the same image, the same platforms
    both = same + "      - {name: team/dock, as: team/app}\n"
    plan = plan_sync(parse_sync_text(both), client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    assert plan.jobs == [] and len(plan.failures) == 36  # every tag: three jobs, one image twice
    shares = [Shard(i, 3).select(plan) for i in (1, 2, 3)]
    # each failure in the share of its image only (all of them in every share, before)
    assert sorted(f.source for s in shares for f in s.failures) == sorted(
        f.source for f in plan.failures
    )
    assert all(s.failures for s in shares)


def test_a_registry_target_and_the_dry_run_preview(memory_store: ObjectStore) -> None:
    src = FakeClient("src:5000", {"team/app": {"1": D1, "2": D2}})
    dst = FakeClient("dst:6000", {"m/team/app": {"1": D1, "2": D3}})
    spec = parse_sync_text(
        "target: {registry: 'dst:6000', prefix: m}\n"
        "sources: [{registry: 'src:5000', repositories: [team/app]}]\n"
    )
    clients = {"src:5000": src, "dst:6000": dst}
    plan = plan_sync(spec, client_for=lambda conn: clients[conn.registry])  # type: ignore[arg-type,return-value]
    assert all(isinstance(j.destination, RegistryImage) for j in plan.jobs)
    assert [preview_job(j) for j in plan.jobs] == ["skip", "copy"]  # 1 unchanged, 2 differs

    # a store target: the tag's digest in the store decides
    image = build_image(seed=3, layer_size=64)
    put_image(memory_store, "team/app", "1", image)
    src.repos["team/app"]["1"] = image.manifest_digest
    store_spec = parse_sync_text("sources: [{registry: 'src:5000', repositories: [team/app]}]\n")
    store_plan = plan_sync(store_spec, client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    assert [preview_job(j) for j in store_plan.jobs] == ["skip", "copy"]
    with pytest.raises(ValueError, match="target_store"):
        plan_sync(store_spec, client_for=lambda conn: src)  # type: ignore[arg-type,return-value]

    # a tag the source does not have: the run fails it, so the preview does (it said copy)
    pinned = parse_sync_text(
        "sources: [{registry: 'src:5000', repositories: [{name: team/app, tags: [gone]}]}]\n"
    )
    gone = plan_sync(pinned, client_for=lambda conn: src, target_store=memory_store)  # type: ignore[arg-type,return-value]
    with pytest.raises(ImageManifestNotFoundError, match="gone"):
        preview_job(gone.jobs[0])


def test_the_dry_run_would_copy_a_tag_whose_link_is_damaged(tmp_path: Path) -> None:
    # as the run itself does: the copy rewrites the link (the preview once failed the job)
    image = build_image(seed=4, layer_size=64)
    src = FakeClient("src:5000", {"team/app": dict.fromkeys(["1", "2"], image.manifest_digest)})
    with open_store(str(tmp_path / "store")) as store:
        put_image(store, "team/app", "1", image)
        put_image(store, "team/app", "2", image)
        damage_tag_link(tmp_path / "store", "team/app", "1")
        spec = parse_sync_text("sources: [{registry: 'src:5000', repositories: [team/app]}]\n")
        plan = plan_sync(spec, client_for=lambda conn: src, target_store=store)  # type: ignore[arg-type,return-value]
        assert [preview_job(j) for j in plan.jobs] == ["copy", "skip"]


# -- a real run ----------------------------------------------------------------------------------


@pytest.fixture
def app_registry(registry: RegistryServer, tmp_path: Path) -> dict[str, str]:
    """``team/app`` with tags 1.0, 1.1, 2.0, 2.1-rc1 (each a different image)."""
    digests = {}
    for i, tag in enumerate(["1.0", "1.1", "2.0", "2.1-rc1"]):
        image = build_image(seed=300 + i, layers=1, layer_size=2048)
        push_with_skopeo(image, f"docker://{registry.host}/team/app:{tag}", tmp_path / tag)
        digests[tag] = image.manifest_digest
    return digests


def test_run_moves_the_selected_tags_then_skips_them(
    registry: RegistryServer, app_registry: dict[str, str], memory_store: ObjectStore
) -> None:
    from regstore.client import Client

    spec = parse_sync_text(
        f"sources:\n  - registry: '{registry.host}'\n    repositories:\n"
        "      - name: team/app\n        tags: {semver: '>=1.1', exclude: ['-rc']}\n"
        "      - name: team/nothing-here\n"
    )
    with Client(registry.host) as client:
        plan = plan_sync(spec, client_for=lambda conn: client, target_store=memory_store)
        events: list[Any] = []
        first = run_sync(plan, concurrency=2, events=events.append)
        assert [(o.destination, o.status) for o in first.outcomes] == [
            ("store:team/nothing-here", "failed"),
            ("store:team/app:1.1", "copied"),
            ("store:team/app:2.0", "copied"),
        ]
        assert not first.ok
        assert memory_store.tags("team/app") == ["1.1", "2.0"]
        assert memory_store.resolve("team/app", "2.0") == app_registry["2.0"]
        assert any(e.kind.value == "verified" for e in events)

        second = run_sync(
            plan_sync(spec, client_for=lambda conn: client, target_store=memory_store)
        )
        assert [o.status for o in second.outcomes] == ["failed", "skipped", "skipped"]
        assert second.bytes_moved == 0

        # the same into a registry target, under a prefix
        to_registry = parse_sync_text(
            f"target: {{registry: '{registry.host}', prefix: mirror}}\n"
            f"sources: [{{registry: '{registry.host}', repositories: "
            "[{name: team/app, tags: {latest: 1}}]}]\n"
        )
        third = run_sync(plan_sync(to_registry, client_for=lambda conn: client))
        assert [(o.destination, o.status) for o in third.outcomes] == [
            (f"{registry.host}/mirror/team/app:2.1-rc1", "copied")
        ]
        assert client.list_image_tags("mirror/team/app") == ["2.1-rc1"]


def test_a_partial_index_in_the_store_is_not_taken_for_unchanged(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # An index pulled for one platform is stored under its own digest, marked partial: a sync
    # (or a batch) asking for other platforms, or all of them, took it for unchanged and
    # reported success for ever, the platforms asked never fetched
    from regstore.bundle import create_bundle, import_bundle
    from regstore.client import Client
    from regstore.engine import pull, transfer_many
    from regstore.engine.sync import settle_unchanged
    from regstore.testing.builders import build_index

    index = build_index(seed=90, media="oci")  # linux/amd64 and linux/arm64
    amd, arm = index.children
    seed_registry(registry.url, "team/multi", "1", index)
    store = open_store(str(tmp_path / "store"))
    with Client(registry.host) as client:
        pull(client, store, "team/multi", "1", platforms=["linux/amd64"])
        assert store.is_partial("team/multi", index.manifest_digest)
        assert not store.has_manifest("team/multi", arm.manifest_digest)
        source = RegistryImage(client, "team/multi", "1")
        job = (source, StoreImage(store, "team/multi", "1"))

        # the platform pulled already: unchanged, as before
        again = transfer_many([job], platforms=["linux/amd64"])
        assert [o.status for o in again.outcomes] == ["skipped"]
        # another platform: moved
        arm_batch = transfer_many([job], platforms=["linux/arm64"])
        assert [o.status for o in arm_batch.outcomes] == ["copied"], arm_batch.as_dict()
        assert store.has_manifest("team/multi", arm.manifest_digest)
        # both platforms, pulled one by one: whole (it stayed partial for ever)
        assert not store.is_partial("team/multi", index.manifest_digest)
        assert [o.status for o in transfer_many([job], platforms=["linux/arm64"])] == ["skipped"]

        # a sync of every platform: not settled before the run, nor skipped by it
        other = open_store(str(tmp_path / "other"))
        pull(client, other, "team/multi", "1", platforms=["linux/arm64"])
        spec = parse_sync_text(
            f"target: {{store: '{(tmp_path / 'other').as_uri()}'}}\n"
            f"sources: [{{registry: '{registry.host}', plain_http: true, "
            "repositories: [team/multi]}]\n"
        )
        plan = plan_sync(spec, client_for=lambda conn: client, target_store=other)
        assert settle_unchanged(plan) == {}
        assert [preview_job(j) for j in plan.jobs] == ["copy"]  # the dry run, as the run
        assert [o.status for o in run_sync(plan).outcomes] == ["copied"]
        assert [preview_job(j) for j in plan.jobs] == ["skip"]
        assert not other.is_partial("team/multi", index.manifest_digest)
        assert other.has_manifest("team/multi", amd.manifest_digest)
        assert list(settle_unchanged(plan)) == [0]  # whole now: unchanged

        # a partial store as the source: what it lacks is not the copy's to move, so the
        # copy is whole once, then unchanged (it was copied again on every run)
        partial_source = open_store(str(tmp_path / "partial-source"))
        pull(client, partial_source, "team/multi", "1", platforms=["linux/amd64"])
        tiered = open_store(str(tmp_path / "tiered"))
        hop = [(StoreImage(partial_source, "team/multi", "1"), StoreImage(tiered, "team/multi"))]
        assert [o.status for o in transfer_many(hop)] == ["copied"]
        assert [o.status for o in transfer_many(hop)] == ["skipped"]

        # a full bundle imported where the index is partial completes it
        bundle = str(tmp_path / "multi.tar")
        create_bundle(bundle, [source])
        third = open_store(str(tmp_path / "third"))
        pull(client, third, "team/multi", "1", platforms=["linux/amd64"])
        assert [o.status for o in import_bundle(bundle, store=third)] == ["copied"]
        assert third.has_manifest("team/multi", arm.manifest_digest)
        assert not third.is_partial("team/multi", index.manifest_digest)


def test_a_no_op_asks_the_store_whether_an_index_is_partial_only_of_indexes(
    registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one more backend question per unchanged image (a HEAD on S3, an index.json read in an
    # OCI layout): a digest read as a plain image's is never a partial index
    from regstore.client import Client
    from regstore.engine import transfer_many
    from regstore.testing.builders import build_index

    seed_registry(registry.url, "ask/multi", "1", build_index(seed=91, media="oci"))
    for i in range(3):
        seed_registry(registry.url, "ask/app", f"t{i}", build_image(seed=92 + i, layer_size=256))
    store = open_store(f"file://{tmp_path / 'oci'}?layout=oci")
    with Client(registry.host) as client:
        jobs = [
            (RegistryImage(client, "ask/app", f"t{i}"), StoreImage(store, "ask/app"))
            for i in range(3)
        ]
        jobs.append((RegistryImage(client, "ask/multi", "1"), StoreImage(store, "ask/multi")))
        transfer_many(jobs)
        asked: list[str] = []
        layout = store.backend.layout  # type: ignore[attr-defined]
        real = layout.manifest_is_partial
        monkeypatch.setattr(
            layout,
            "manifest_is_partial",
            lambda name, digest: asked.append(name) or real(name, digest),
        )
        assert {o.status for o in transfer_many(jobs)} == {"skipped"}
    assert asked == ["ask/multi"]
