"""Fuzzing the parsers that read what others wrote: references, manifests, sync files, and the
``WWW-Authenticate`` and ``Link`` headers a registry sends.

Each parser may fail only with its documented error (``InvalidReferenceError``,
``ManifestInvalidError``, ``SyncFileError``; the challenge parser never fails; the Link parser
only with ``ValueError`` for a target that is no URL, which the client reports as a
``RegistryError``). Inputs are hostile on purpose: random text and bytes, documents of the
right shape with wrong types, huge numbers, duplicate keys, nesting bombs, YAML alias bombs
and self-referencing aliases, and long repetitions of the characters a parser scans for.

Time per input is bounded by hypothesis's ``deadline`` (generous: it catches super-linear
parsers, not slow machines) and memory by capped input sizes (the limits real callers
enforce: a 64 KiB header line, the 4 MiB manifest limit) plus a tracemalloc bound where a small
input could expand (YAML aliases). The atheris harness (tests/fuzz/) runs the same checks
coverage-guided. Default: a few hundred examples per parser; ``pytest --long``: 5 000. Each
test prints ``FUZZ <parser> examples=N`` (``-rP``).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from regstore.client import Client
from regstore.client.challenge import merge_scopes, parse_www_authenticate
from regstore.client.urls import Endpoint, parse_next_link
from regstore.engine.syncfile import load_sync_file, parse_sync_text
from regstore.errors import (
    InvalidReferenceError,
    ManifestInvalidError,
    RegistryError,
    SyncFileError,
)
from regstore.manifest import MANIFEST_MAX_SIZE, Manifest, Platform
from regstore.reference import (
    Digest,
    Reference,
    parse_reference,
    validate_name,
    validate_reference,
    validate_tag,
)
from tests.support.fake_registry import FakeRegistry

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
#: http.client refuses longer header lines, so no header a parser sees is longer.
HEADER_MAX = 65536
DEADLINE = timedelta(seconds=2)
#: tracemalloc (the sync-file memory bound) makes pure-Python parsing some five times slower.
TRACED_DEADLINE = timedelta(seconds=8)


@pytest.fixture
def examples(long_mode: bool) -> int:
    """Examples per parser: a few hundred by default, 5 000 with ``--long``."""
    return 5_000 if long_mode else 300


def fuzz(
    name: str,
    strategy: st.SearchStrategy[T],
    check: Callable[[T], None],
    count: int,
    worst: tuple[T, ...] = (),
    deadline: timedelta = DEADLINE,
) -> int:
    """Run ``check`` on the ``worst`` cases, then on ``count`` examples of ``strategy``;
    returns how many were tried."""
    tried = 0

    @settings(
        max_examples=count,
        deadline=deadline,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(strategy)
    def run(value: T) -> None:
        nonlocal tried
        tried += 1
        check(value)

    for case in worst:  # explicit examples run first, under the same deadline
        run = example(case)(run)
    run()
    print(f"FUZZ {name} examples={tried}")
    assert tried > 0
    return tried


def repeated(units: list[str], limit: int = HEADER_MAX) -> st.SearchStrategy[str]:
    """A short unit repeated up to ``limit`` characters: what a super-linear scan chokes on."""
    return st.sampled_from(units).flatmap(
        lambda unit: st.integers(1, max(1, limit // len(unit))).map(lambda n: unit * n)
    )


def mutated(texts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid-looking text with a few characters inserted, deleted or replaced."""
    edit = st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.text(max_size=3))

    def apply(text: str, edits: list[tuple[int, int, str]]) -> str:
        for at, drop, insert in edits:
            at = at % (len(text) + 1)
            text = text[:at] + insert + text[at + drop :]
        return text

    return st.tuples(texts, st.lists(edit, min_size=1, max_size=4)).map(lambda p: apply(*p))


# -- JSON-ish values ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
digests = hexes.map(lambda h: f"sha256:{h}")


# -- references --------------------------------------------------------------------------------

reference_like = st.one_of(
    st.text(max_size=300),
    st.from_regex(
        r"(?:[a-z0-9.-]{1,20}(?::[0-9]{1,6})?/)?[a-z0-9._/-]{1,60}(?::[A-Za-z0-9._-]{1,40})?"
        r"(?:@[a-z0-9+._-]{1,10}:[a-zA-Z0-9=_-]{1,130})?",
        fullmatch=True,
    ),
    mutated(
        st.sampled_from(
            ["127.0.0.1:5000/team/app:1.2", "alpine", "[::1]:5000/a/b@sha256:" + "a" * 64]
        )
    ),
    repeated(["a", "a/", "a.", "a-", "a__", ":", "@", "[", "/", "a:1"], 4096),
)


def _check_reference(text: str) -> None:
    for parse in (
        Reference.parse,
        parse_reference,
        Digest,
        validate_name,
        validate_tag,
        validate_reference,
        Platform.parse,
    ):
        with contextlib.suppress(InvalidReferenceError):
            parse(text)
    with contextlib.suppress(ValueError):  # documented
        Endpoint.parse(text)


def test_reference_parsers_raise_only_invalid_reference_error(examples: int) -> None:
    worst = ("a" * HEADER_MAX, "a/" * 30_000, "[" * HEADER_MAX, "a:" * 30_000)
    fuzz("reference", reference_like, _check_reference, examples, worst)


# -- manifests ---------------------------------------------------------------------------------

MEDIA_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.config.v1+json",
]


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes any JSON value."""
    return st.one_of(valid, valid, json_values)


platforms = st.fixed_dictionaries(
    {},
    optional={
        k: _maybe(st.text(max_size=10)) for k in ("os", "architecture", "variant", "os.version")
    },
)
descriptors = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": _maybe(st.sampled_from(MEDIA_TYPES)),
        "digest": _maybe(digests),
        "size": _maybe(st.integers(-1, 2**64 + 1)),
        "platform": _maybe(platforms),
        "annotations": _maybe(
            st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
        ),
        "urls": json_values,
        "artifactType": json_values,
    },
)
b64 = st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))
nested = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
protected_headers = (
    st.one_of(
        st.fixed_dictionaries(
            {"formatLength": _maybe(st.integers(-5, 5000)), "formatTail": _maybe(b64)}
        ),
        json_values,
    ).map(json.dumps)
    | nested
)
signatures = st.fixed_dictionaries(
    {},
    optional={
        "protected": _maybe(
            protected_headers.map(
                lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("=")
            )
        ),
        "header": json_values,
        "signature": _maybe(b64),
    },
)
manifest_docs = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": _maybe(st.sampled_from([1, 2])),
        "mediaType": _maybe(st.sampled_from(MEDIA_TYPES)),
        "config": _maybe(descriptors),
        "layers": _maybe(st.lists(descriptors, max_size=4)),
        "manifests": _maybe(st.lists(descriptors, max_size=4)),
        "subject": _maybe(descriptors),
        "artifactType": json_values,
        "annotations": json_values,
        "fsLayers": _maybe(
            st.lists(st.fixed_dictionaries({"blobSum": _maybe(digests)}), max_size=3)
        ),
        "history": json_values,
        "signatures": _maybe(st.lists(signatures, max_size=2)),
        "name": json_values,
        "tag": json_values,
    },
)
manifest_bytes = st.one_of(
    manifest_docs.map(lambda d: json.dumps(d).encode()),
    manifest_docs.map(lambda d: json.dumps(d, indent=3).encode()),
    mutated(manifest_docs.map(json.dumps)).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=2048),
    nested.map(str.encode),
    # duplicate keys: the last one wins in json.loads; the parse must still hold together
    st.tuples(manifest_docs, manifest_docs).map(
        lambda p: (json.dumps(p[0])[:-1] + ("," if p[0] else "") + json.dumps(p[1])[1:]).encode()
    ),
    st.sampled_from(
        [
            b"1" * 5000,
            b'{"schemaVersion": 1e999999}',
            b"NaN",
            b'{"a": Infinity}',
            b"\xef\xbb\xbf{}",
            "{}".encode("utf-16"),
            b"{" * 100_000,
        ]
    ),
)


def _check_manifest(case: tuple[bytes, str | None]) -> None:
    raw, media_type = case
    try:
        m = Manifest.parse(raw, media_type)
    except ManifestInvalidError:
        return
    # a parsed view holds together: every derived property answers
    assert isinstance(str(m.digest), str) and m.size == len(raw)
    _ = (m.is_index, m.artifact_type, m.references, m.blobs, m.layers, m.manifests, repr(m))
    for d in (*m.references, *m.blobs):
        assert isinstance(d.to_json(), dict)


def test_manifest_parse_raises_only_manifest_invalid_error(examples: int) -> None:
    hints = st.none() | st.sampled_from(MEDIA_TYPES) | st.text(max_size=30)
    worst = ((b"[" * 200_000, None), (b'{"a":' * 100_000, None), (b"1" * 100_000, None))
    fuzz("manifest", st.tuples(manifest_bytes, hints), _check_manifest, examples, worst)


def test_an_oversized_manifest_is_refused_before_parsing() -> None:
    with pytest.raises(ManifestInvalidError, match="limit"):
        Manifest.parse(b" " * (MANIFEST_MAX_SIZE + 1))


# -- sync files --------------------------------------------------------------------------------

VALID_SYNC = """\
defaults: {platforms: [linux/amd64], concurrency: 4}
target: {store: "file:///srv/mirror"}
sources:
  - registry: 127.0.0.1:5000
    plain_http: true
    repositories:
      - name: team/app
        tags: {include: ["^1\\\\."], exclude: ["-rc"], semver: ">=1.2.0", latest: 3}
      - name: library/alpine
        tags: ["3.19", "3.20"]
"""

repositories = st.one_of(
    st.text(max_size=20),
    st.fixed_dictionaries(
        {},
        optional={
            "name": _maybe(st.sampled_from(["team/app", "a", "Bad/Name", ""])),
            "as": json_values,
            "tags": _maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "include": _maybe(st.lists(st.text(max_size=8), max_size=3)),
                        "exclude": _maybe(st.text(max_size=8)),
                        "semver": _maybe(st.sampled_from([">=1.0", "^1", "~=2", "*", ">=x"])),
                        "latest": _maybe(st.integers(-2, 5)),
                        "exact": json_values,
                    },
                )
            ),
            "platforms": _maybe(
                st.lists(st.sampled_from(["linux/amd64", "x", "a/b/c/d"]), max_size=3)
            ),
        },
    ),
)
sync_docs = st.fixed_dictionaries(
    {},
    optional={
        "version": _maybe(st.sampled_from([1, 2])),
        "defaults": _maybe(
            st.fixed_dictionaries(
                {}, optional={"platforms": json_values, "concurrency": json_values}
            )
        ),
        "target": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "store": json_values,
                    "registry": _maybe(
                        st.sampled_from(["127.0.0.1:6000", "http://[::1]:5", "x y"])
                    ),
                    "prefix": json_values,
                    "plain_http": json_values,
                },
            )
        ),
        "sources": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "registry": _maybe(
                            st.sampled_from(["127.0.0.1:5000", "https://r.example", "::"])
                        ),
                        "plain_http": json_values,
                        "username": json_values,
                        "password_env": json_values,
                        "prefix": json_values,
                        "catalog": _maybe(st.booleans()),
                        "repositories": _maybe(st.lists(repositories, max_size=3)),
                    },
                ),
                max_size=3,
            )
        ),
    },
)


def _alias_bomb(depth: int, fanout: int, where: str) -> str:
    """``depth`` levels of anchors, each a list of ``fanout`` aliases of the level below:
    a few hundred bytes that name fanout**depth values."""
    lines = ["x0: &a0 [v]"]
    for level in range(1, depth):
        items = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"x{level}: &a{level} [{items}]")
    lines.append(f"{where}: *a{depth - 1}")
    return "\n".join(lines) + "\n"


yaml_tricks = st.one_of(
    st.builds(
        _alias_bomb,
        st.integers(2, 12),
        st.integers(2, 12),
        st.sampled_from(["sources", "defaults", "target", "x99"]),
    ),
    st.sampled_from(
        [
            "&a [*a]",
            "a: &a {b: *a}",
            "sources: &s [{registry: r, repositories: *s}]",
            "sources: [&r {registry: x, repositories: [*r]}]",
            "? [a]\n: b",
            "!!python/object:os.system {}",
            "a: 1\na: 2",
            "sources: [{registry: x, repositories: [a], repositories: [b]}]",
            "sources:\n - registry: x\n   repositories: [{name: a, tags: [3.20]}]",
            "\t",
            "%YAML 9.9\n---\n{}",
            "--- 1\n--- 2",
            "*undefined",
            "&a",
            "? " * 5000,
        ]
    ),
    repeated(["[", "{", "- ", "  ", "&a ", "*a ", ": ", "? "], 20_000),
)
sync_texts = st.one_of(
    st.text(max_size=1000),
    sync_docs.map(lambda d: yaml.safe_dump(d, default_flow_style=False)),
    sync_docs.map(lambda d: yaml.safe_dump(d, default_flow_style=True)),
    mutated(st.just(VALID_SYNC)),
    yaml_tricks,
)


#: Memory a sync file of N bytes may take to parse: generous, but far below what an alias
#: bomb of a few hundred bytes expands to when every path is walked.
def _memory_bound(text: str) -> int:
    return 32 * 1024 * 1024 + 2000 * len(text)


def _check_sync_text(text: str) -> None:
    tracemalloc.start()
    try:
        with contextlib.suppress(SyncFileError):
            parse_sync_text(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= _memory_bound(text), f"{peak} bytes to parse {len(text)} bytes"


def test_sync_file_parser_raises_only_sync_file_error(examples: int) -> None:
    fuzz("sync-file", sync_texts, _check_sync_text, max(50, examples // 3), (), TRACED_DEADLINE)


def test_sync_file_yaml_tricks_are_sync_file_errors(examples: int) -> None:
    worst = ("[" * 20_000, "{" * 20_000, "&a [*a]", _alias_bomb(10, 10, "x99"), "- " * 20_000)
    count = max(50, examples // 3)
    fuzz("sync-file-yaml-tricks", yaml_tricks, _check_sync_text, count, worst, TRACED_DEADLINE)


def test_sync_file_loader_reads_any_bytes(examples: int) -> None:
    def check(data: bytes) -> None:
        with tempfile.NamedTemporaryFile(suffix=".yaml", delete=False) as f:
            f.write(data)
        try:
            load_sync_file(f.name)
        except SyncFileError:
            pass
        finally:
            os.unlink(f.name)

    strategy = st.one_of(
        st.binary(max_size=512),
        sync_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.just(VALID_SYNC.encode("utf-16")),
    )
    fuzz("sync-file-bytes", strategy, check, max(30, examples // 10))


def test_a_self_referencing_alias_is_a_sync_file_error() -> None:
    for text in ("&a [*a]", "a: &a {b: *a}", "[" * 5000 + "]" * 5000):
        with pytest.raises(SyncFileError):
            parse_sync_text(text)


def test_an_alias_bomb_is_refused_in_bounded_memory() -> None:
    _check_sync_text(_alias_bomb(6, 10, "x99"))  # a million paths by expansion


# -- WWW-Authenticate --------------------------------------------------------------------------

tokens = st.text(
    st.characters(blacklist_characters=' \t,="', blacklist_categories=("Cs",)), max_size=12
)
quoted = st.text(max_size=30).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
params = st.tuples(
    tokens, st.sampled_from(["=", " = ", "=="]), tokens | quoted | st.text(max_size=10)
)
challenges = st.tuples(
    st.sampled_from(["Bearer", "Basic", "bearer", "Negotiate", ""]) | tokens,
    st.lists(params.map(lambda p: "".join(p)), max_size=5),
    st.sampled_from([",", ", ", " ", ""]),
).map(lambda c: f"{c[0]} " + c[2].join(c[1]))
auth_headers = st.one_of(
    st.text(max_size=500),
    st.lists(challenges, max_size=4).map(", ".join),
    mutated(
        st.just(
            'Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"'
        )
    ),
    repeated(["a=", "a=b,", '"', "\\", "=", ",", " ", 'a="', "x ", "Bearer "]),
)


def _check_challenges(header: str) -> None:
    found = parse_www_authenticate(header)  # documented: never raises
    for c in found:
        assert c.scheme == c.scheme.lower()
        assert all(k == k.lower() for k in c.params)
        _ = (c.realm, c.service)
        merge_scopes(c.scopes, ["repository:a:pull"])


def test_www_authenticate_parser_never_raises(examples: int) -> None:
    worst = ('a="' * 20_000, "\\" * HEADER_MAX, "a=" * 30_000, "x " * 30_000, '"' * HEADER_MAX)
    fuzz("www-authenticate", auth_headers, _check_challenges, examples, worst)


# -- Link --------------------------------------------------------------------------------------

targets = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "/v2/_catalog?last=x&n=1",
            "http://[::1]:5000/v2/a/tags/list",
            "http://[",
            "//h/p",
            "https://other.example/v2/",
            "/v2/a/tags/list?last=%zz",
            "http://h:99999/",
        ]
    ),
)
link_params = st.lists(
    st.sampled_from(['rel="next"', "rel=next", 'rel="prev next"', "rel=", "type=x", "", ";"])
    | st.text(max_size=10),
    max_size=4,
)
links = st.tuples(targets, link_params).map(lambda p: f"<{p[0]}>" + "".join("; " + x for x in p[1]))
link_headers = st.one_of(
    st.text(max_size=500),
    st.lists(links, max_size=4).map(", ".join),
    repeated(["<", "<a", "<>", ">", ";", "; rel=next", ",", "<a>;", "< ", "<<>"]),
)
request_urls = st.sampled_from(
    ["http://127.0.0.1:5000/v2/_catalog?n=1", "https://r.example/v2/a/tags/list"]
)


def _check_link(case: tuple[str, str]) -> None:
    header, url = case
    try:
        result = parse_next_link(header, url)
    except ValueError:  # documented: a target that is not a URL
        return
    assert result is None or isinstance(result, str)


def test_link_parser_raises_only_value_error(examples: int) -> None:
    url = "http://127.0.0.1:5000/v2/_catalog?n=1"
    worst = (("<" * HEADER_MAX, url), ("<a" * 30_000, url), ("<a>;" * 16_000, url))
    fuzz("link", st.tuples(link_headers, request_urls), _check_link, examples, worst)


def test_a_link_target_that_is_no_url_is_a_registry_error(fake_registry: FakeRegistry) -> None:
    fake_registry.expect(
        "GET",
        "/v2/a/tags/list",
        json={"name": "a", "tags": ["1"]},
        headers={"Link": '<http://[oops/v2/a/tags/list?last=1>; rel="next"'},
    )
    client = Client(fake_registry.url.removeprefix("http://"))
    with pytest.raises(RegistryError, match="Link"):
        client.list_image_tags("a")


# -- atheris -----------------------------------------------------------------------------------

#: Where the ``dev`` extra installs atheris (wheels: CPython 3.11-3.13 on x86-64 Linux).
ATHERIS_EXPECTED = (
    sys.platform == "linux"
    and platform.machine() == "x86_64"
    and (3, 11) <= sys.version_info[:2] <= (3, 13)
)


def test_atheris_harness_finds_no_crash(long_mode: bool, tmp_path: Path) -> None:
    if not ATHERIS_EXPECTED:
        pytest.skip("atheris has no wheel for this platform (the hypothesis fuzzers still ran)")
    assert importlib.util.find_spec("atheris"), "atheris is missing: pip install -e '.[dev]'"
    runs = 500_000 if long_mode else 20_000
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "fuzz" / "fuzz_parsers.py"),
            f"-runs={runs}",
            "-max_len=65536",
            "-timeout=20",
            "-rss_limit_mb=2048",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    tail = proc.stderr[-6000:]
    assert proc.returncode == 0, tail
    done = [line for line in proc.stderr.splitlines() if line.startswith("Done ")]
    assert done, tail
    print(f"FUZZ atheris {done[-1]}")
