"""Names, tags, digests and full references against the OCI grammar (protocol notes §3.4).

The property tests at the end check the promise of DESIGN.md §5: whatever hostile text is thrown
at the validators, anything they accept stays inside a store root when used as a path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import posixpath
from collections import Counter
from pathlib import PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regstore.errors import InvalidReferenceError, RegstoreError
from regstore.reference import (
    DEFAULT_REGISTRY,
    DEFAULT_TAG,
    SUPPORTED_ALGORITHMS,
    Digest,
    Reference,
    is_digest,
    parse_reference,
    validate_name,
    validate_reference,
    validate_tag,
)

SHA256_HEX = hashlib.sha256(b"regstore").hexdigest()
SHA512_HEX = hashlib.sha512(b"regstore").hexdigest()
SHA256 = f"sha256:{SHA256_HEX}"
SHA512 = f"sha512:{SHA512_HEX}"

# Look-alikes and control characters that must never slip through as ASCII.
FULLWIDTH_A = "\uff41"  # FULLWIDTH LATIN SMALL LETTER A
DIVISION_SLASH = "\u2215"  # looks like "/"
FRACTION_SLASH = "\u2044"  # looks like "/" too
COMBINING_ACUTE = "\u0301"
RTL_MARK = "\u200f"
RTL_OVERRIDE = "\u202e"
KELVIN_SIGN = "\u212a"  # lowercases to ASCII "k"
DOTLESS_I = "\u0131"  # uppercases to ASCII "I"
ZERO_WIDTH_SPACE = "\u200b"
ONE_DOT_LEADER = "\u2024"  # looks like "."


def expect_invalid(part: str, func, *args, **kwargs) -> InvalidReferenceError:
    with pytest.raises(InvalidReferenceError) as info:
        func(*args, **kwargs)
    assert info.value.part == part, f"{args!r}: part {info.value.part!r}, wanted {part!r}"
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RegstoreError)
    return info.value


# -- names ---------------------------------------------------------------------------------

VALID_NAMES = [
    "a",
    "0",
    "alpine",
    "library/alpine",
    "a.b",
    "a_b",
    "a__b",
    "a-b",
    "a--b",
    "a---------b",
    "a.b_c__d-e--f",
    "a/b/c/d/e/f",
    "team-1/app.v2/x__y",
    "0123456789abcdefghijklmnopqrstuvwxyz",
    "a" * 255,
    "/".join(["abcd"] * 51),  # 51 * 5 - 1 = 254 characters
]

INVALID_NAMES = [
    "A",
    "Alpine",
    "library/Alpine",
    "a_",
    "_a",
    "a___b",  # '_' and '__' are separators, '___' is not
    "a..b",
    "a.-b",
    "a-.b",
    "a_-b",
    "-a",
    "a-",
    ".a",
    "a.",
    "a/",
    "/a",
    "/",
    "a//b",
    "a/./b",
    "a/../b",
    "..",
    ".",
    "../etc",
    "a b",
    " a",
    "a\n",
    "a\t",
    "a\\b",
    "a\x00",
    "a:b",
    "a@b",
    "a+b",
    "a~b",
    FULLWIDTH_A,
    f"a{DIVISION_SLASH}b",
    f"a{FRACTION_SLASH}b",
    f"e{COMBINING_ACUTE}",
    f"{RTL_MARK}a",
    f"a{RTL_OVERRIDE}b",
    f"{KELVIN_SIGN}ey",
    f"a{ZERO_WIDTH_SPACE}",
    f"a{ONE_DOT_LEADER}b",
    "é",
    "a" * 256,
    "/".join(["abcd"] * 52),  # 259 characters
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_rejected_naming_the_part(name: str) -> None:
    error = expect_invalid("name", validate_name, name)
    assert error.value == name
    assert error.reason
    assert repr(name) in str(error)


def test_empty_name_is_rejected() -> None:
    error = expect_invalid("name", validate_name, "")
    assert "empty" in error.reason


@pytest.mark.parametrize("value", [None, 1, b"alpine", ["alpine"]])
def test_name_must_be_a_string(value: object) -> None:
    error = expect_invalid("name", validate_name, value)
    assert "string" in error.reason


def test_name_length_limit_is_exactly_255() -> None:
    validate_name("a" * 255)
    error = expect_invalid("name", validate_name, "a" * 256)
    assert "255" in error.reason


# -- tags ----------------------------------------------------------------------------------

VALID_TAGS = [
    "latest",
    "v1.2.3",
    "1.0",
    "_",
    "__",
    "A",
    "Z9",
    "0",
    "a-b_c.D",
    "x..",  # dots after the first character are fine; never '.' or '..' as a whole
    "_..",
    "sha256-" + SHA256_HEX,  # the referrers tag schema
    "a" * 128,
    "_" + "-" * 127,
]

INVALID_TAGS = [
    ".",
    "..",
    ".hidden",
    "-x",
    "a" * 129,
    "a/b",
    "../x",
    "a:b",
    "a@b",
    "a b",
    "a+b",
    "tag\n",
    "a\\b",
    "a\x00",
    "täg",
    "\uff54\uff41\uff47",  # fullwidth "tag"
    f"v1{DIVISION_SLASH}2",
    f"v{COMBINING_ACUTE}",
    f"{RTL_MARK}latest",
    f"{KELVIN_SIGN}",
    f"{DOTLESS_I}",
]


@pytest.mark.parametrize("tag", VALID_TAGS)
def test_valid_tags_are_returned_unchanged(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", INVALID_TAGS)
def test_invalid_tags_are_rejected_naming_the_part(tag: str) -> None:
    error = expect_invalid("tag", validate_tag, tag)
    assert error.value == tag


@pytest.mark.parametrize("value", ["", None, 3, b"latest"])
def test_empty_or_non_string_tags_are_rejected(value: object) -> None:
    expect_invalid("tag", validate_tag, value)


def test_tag_length_limit_is_exactly_128() -> None:
    validate_tag("x" * 128)
    expect_invalid("tag", validate_tag, "x" * 129)


# -- digests -------------------------------------------------------------------------------


def test_supported_algorithms() -> None:
    assert SUPPORTED_ALGORITHMS == {"sha256": 64, "sha512": 128}


@pytest.mark.parametrize(("text", "algorithm", "hex_"), [
    (SHA256, "sha256", SHA256_HEX),
    (SHA512, "sha512", SHA512_HEX),
    ("sha256:" + "0" * 64, "sha256", "0" * 64),
])  # fmt: skip
def test_valid_digest(text: str, algorithm: str, hex_: str) -> None:
    digest = Digest(text)
    assert digest == text
    assert isinstance(digest, str)
    assert digest.algorithm == algorithm
    assert digest.hex == hex_
    assert hash(digest) == hash(text)
    assert repr(digest) == f"Digest({text!r})"
    assert Digest(digest) is digest
    assert pickle.loads(pickle.dumps(digest)) == digest
    assert type(pickle.loads(pickle.dumps(digest))) is Digest


INVALID_DIGESTS = {
    "uppercase hex": "sha256:" + SHA256_HEX.upper(),
    "one uppercase letter": "sha256:" + "A" + SHA256_HEX[1:],
    "uppercase algorithm": "SHA256:" + SHA256_HEX,
    "63 characters": "sha256:" + SHA256_HEX[:-1],
    "65 characters": "sha256:" + SHA256_HEX + "0",
    "sha512 with 64 characters": "sha512:" + SHA256_HEX,
    "sha256 with 128 characters": "sha256:" + SHA512_HEX,
    "sha512 with 127 characters": "sha512:" + SHA512_HEX[:-1],
    "unsupported sha384": "sha384:" + hashlib.sha384(b"x").hexdigest(),
    "unsupported md5": "md5:" + hashlib.md5(b"x").hexdigest(),
    "unsupported blake3": "blake3:" + SHA256_HEX,
    "tarsum of the seed": "tarsum.v2+sha256:12345",
    "tarsum with a real hex": "tarsum.dev+sha256:" + SHA256_HEX,
    "no algorithm": ":" + SHA256_HEX,
    "no encoded part": "sha256:",
    "no colon": "sha256" + SHA256_HEX,
    "bare hex": SHA256_HEX,
    "two colons": "sha256:" + SHA256_HEX + ":",
    "not hex": "sha256:" + "g" * 64,
    "base64 characters": "sha256:" + "=" * 64,
    "space": "sha256: " + SHA256_HEX[1:],
    "trailing newline": SHA256 + "\n",
    "leading space": " " + SHA256,
    "path traversal": "sha256:../../" + SHA256_HEX[6:],
    "slash": "sha256/" + SHA256_HEX,
    "NUL": SHA256[:-1] + "\x00",
    "fullwidth digit": SHA256[:-1] + "\uff10",
    "arabic-indic digit": SHA256[:-1] + "\u0660",
    "combining mark": SHA256[:-1] + COMBINING_ACUTE,
}


@pytest.mark.parametrize("text", INVALID_DIGESTS.values(), ids=INVALID_DIGESTS.keys())
def test_invalid_digests_are_rejected_naming_the_part(text: str) -> None:
    error = expect_invalid("digest", Digest, text)
    assert error.value == text


def test_unsupported_algorithm_is_named_in_the_error() -> None:
    error = expect_invalid("digest", Digest, "tarsum.v2+sha256:12345")
    assert "tarsum.v2+sha256" in error.reason
    assert "sha256" in error.reason and "sha512" in error.reason


def test_wrong_length_error_says_what_is_needed() -> None:
    error = expect_invalid("digest", Digest, "sha512:" + SHA256_HEX)
    assert "128" in error.reason


@pytest.mark.parametrize("value", ["", None, 0, b"sha256:" + SHA256_HEX.encode()])
def test_empty_or_non_string_digests_are_rejected(value: object) -> None:
    expect_invalid("digest", Digest, value)


def test_is_digest_tells_digests_from_tags() -> None:
    assert is_digest(SHA256)
    assert is_digest("anything:else")  # shape only; Digest() validates
    assert not is_digest("latest")
    assert not is_digest(None)  # type: ignore[arg-type]


def test_validate_reference_accepts_tags_and_digests() -> None:
    assert validate_reference("latest") == "latest"
    result = validate_reference(SHA256)
    assert result == SHA256
    assert isinstance(result, Digest)
    expect_invalid("digest", validate_reference, "sha256:abc")
    expect_invalid("tag", validate_reference, "..")
    expect_invalid("tag", validate_reference, "a/b")


# -- full references -----------------------------------------------------------------------

PARSED = [
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
    ("library/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", None),
    ("index.docker.io/x/y", "docker.io", "x/y", "latest", None),
    ("index.docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("user/repo", "docker.io", "user/repo", "latest", None),
    ("user/repo:v1", "docker.io", "user/repo", "v1", None),
    ("127.0.0.1:5000/team/app:1.2", "127.0.0.1:5000", "team/app", "1.2", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/app", "localhost:5000", "app", "latest", None),
    ("[::1]:5000/app:tag", "[::1]:5000", "app", "tag", None),
    ("[::1]/app", "[::1]", "app", "latest", None),
    ("ghcr.io/org/img@" + SHA256, "ghcr.io", "org/img", None, SHA256),
    ("ghcr.io/org/img:1.0@" + SHA256, "ghcr.io", "org/img", "1.0", SHA256),
    ("alpine@" + SHA512, "docker.io", "library/alpine", None, SHA512),
    ("quay.io/a/b/c/d:v-1_2.3", "quay.io", "a/b/c/d", "v-1_2.3", None),
    ("Registry.Example.COM/app", "Registry.Example.COM", "app", "latest", None),
    ("MyHost/app", "MyHost", "app", "latest", None),  # uppercase makes a domain
    ("example.com:443/ns/app", "example.com:443", "ns/app", "latest", None),
    # no slash: "localhost:5000" is the image localhost with tag 5000, as in docker
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
]


@pytest.mark.parametrize(("text", "registry", "name", "tag", "digest"), PARSED)
def test_parse_reference(
    text: str, registry: str, name: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.name, ref.tag, ref.digest) == (registry, name, tag, digest)
    if digest is not None:
        assert isinstance(ref.digest, Digest)
        assert ref.reference == digest
    else:
        assert ref.reference == tag
    assert ref.repository == f"{registry}/{name}"
    assert parse_reference(text) == ref
    # the string form is canonical and parses back to the same value
    assert Reference.parse(str(ref)) == ref


def test_reference_string_forms() -> None:
    assert str(Reference.parse("alpine")) == "docker.io/library/alpine:latest"
    assert str(Reference.parse("ghcr.io/o/i:1@" + SHA256)) == f"ghcr.io/o/i:1@{SHA256}"
    assert str(Reference.parse("ghcr.io/o/i@" + SHA256)) == f"ghcr.io/o/i@{SHA256}"


def test_default_registry_and_tag() -> None:
    assert DEFAULT_REGISTRY == "docker.io"
    assert DEFAULT_TAG == "latest"
    ref = Reference.parse("team/app", default_registry="registry.local:5000")
    assert (ref.registry, ref.name) == ("registry.local:5000", "team/app")
    # library/ is Docker Hub's convention only
    ref = Reference.parse("app", default_registry="registry.local:5000")
    assert (ref.registry, ref.name) == ("registry.local:5000", "app")
    # an explicit registry wins over the default
    assert Reference.parse("ghcr.io/a/b", default_registry="x.io").registry == "ghcr.io"


def test_reference_without_tag_or_digest_asks_for_latest() -> None:
    ref = Reference(registry="ghcr.io", name="a/b")
    assert ref.reference == "latest"
    assert str(ref) == "ghcr.io/a/b"


INVALID_REFERENCES = [
    ("", "reference"),
    (":latest", "reference"),
    ("@" + SHA256, "reference"),
    ("example.com/", "reference"),
    ("Alpine", "name"),
    ("alpine/", "name"),
    ("a//b", "name"),
    ("library/Alpine:1", "name"),
    ("bad_host!/app", "name"),
    ("registry:5000/../etc", "name"),
    ("example.com/App", "name"),
    ("example.com/a b", "name"),
    (f"{FULLWIDTH_A}lpine", "name"),
    ("a" * 256, "name"),
    ("example.com/" + "a" * 250, "name"),  # registry + name over 255
    ("alpine:", "tag"),
    ("alpine:.bad", "tag"),
    ("alpine:-bad", "tag"),
    ("alpine:" + "t" * 129, "tag"),
    ("alpine:ta g", "tag"),
    ("alpine@", "digest"),
    ("alpine@sha256:short", "digest"),
    ("alpine@sha256:" + SHA256_HEX.upper(), "digest"),
    ("alpine@tarsum.v2+sha256:12345", "digest"),
    ("alpine@" + SHA256 + "@" + SHA256, "digest"),
    ("exa mple.com/app", "registry"),
    ("example.com:port/app", "registry"),
    ("-example.com/app", "registry"),
    ("example-.com/app", "registry"),
    ("exa_mple.com/app", "registry"),
    ("[::1/app", "registry"),
    ("a.b_c/app", "registry"),  # a dot makes the first component a domain; '_' is no host
    ("éxample.com/app", "registry"),
    ("localhost:/app", "registry"),
]


@pytest.mark.parametrize(("text", "part"), INVALID_REFERENCES)
def test_invalid_references_name_the_bad_part(text: str, part: str) -> None:
    expect_invalid(part, Reference.parse, text)


@pytest.mark.parametrize("value", [None, 42, b"alpine"])
def test_reference_must_be_a_string(value: object) -> None:
    expect_invalid("reference", Reference.parse, value)


def test_reference_is_a_frozen_validated_value() -> None:
    ref = Reference(registry="ghcr.io", name="a/b", tag="1", digest=SHA256)  # type: ignore[arg-type]
    assert isinstance(ref.digest, Digest)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.name = "c"  # type: ignore[misc]
    assert ref == Reference.parse("ghcr.io/a/b:1@" + SHA256)
    assert hash(ref) == hash(Reference.parse("ghcr.io/a/b:1@" + SHA256))
    expect_invalid("name", Reference, registry="ghcr.io", name="A")
    expect_invalid("tag", Reference, registry="ghcr.io", name="a", tag="..")
    expect_invalid("digest", Reference, registry="ghcr.io", name="a", digest="sha256:x")
    expect_invalid("registry", Reference, registry="../etc", name="a")
    expect_invalid("registry", Reference, registry="https://ghcr.io", name="a")
    expect_invalid("registry", Reference, registry="", name="a")
    expect_invalid("name", Reference, registry="ghcr.io", name="a" * 250)


# -- properties: accepted strings never escape a store root ----------------------------------

ROOT = "/srv/regstore-root"

LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
TAG_FIRST = LOWER_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
TAG_REST = TAG_FIRST + ".-"
HEX = "0123456789abcdef"

alnum_runs = st.text(alphabet=LOWER_ALNUM, min_size=1, max_size=8)
separators = st.sampled_from([".", "_", "__", "-", "--", "----"])


@st.composite
def components(draw: st.DrawFn) -> str:
    """One path component, built from the grammar: runs of [a-z0-9] joined by separators."""
    text = draw(alnum_runs)
    for _ in range(draw(st.integers(0, 3))):
        text += draw(separators) + draw(alnum_runs)
    return text


valid_names = st.lists(components(), min_size=1, max_size=5).map("/".join)
valid_tags = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(TAG_FIRST),
    st.text(alphabet=TAG_REST, max_size=127),
)
valid_digests = st.one_of(
    st.text(alphabet=HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.binary(min_size=64, max_size=64).map(lambda b: f"sha512:{b.hex()}"),
)

# Pieces of hostile text: traversal, separators of other systems, control characters and
# unicode that looks like (or case-folds to) ASCII.
HOSTILE_PIECES = [
    "..", ".", "/", "//", "/abs", "\\", "\x00", "\n", " ", ":", "@", "~", "%2e%2e", "%2f",
    FULLWIDTH_A, DIVISION_SLASH, FRACTION_SLASH, COMBINING_ACUTE, RTL_MARK, RTL_OVERRIDE,
    KELVIN_SIGN, DOTLESS_I, ZERO_WIDTH_SPACE, ONE_DOT_LEADER, "\u0660", "\uff0f", "\u00e9",
    "a", "b", "z", "0", "9", "A", "_", "__", "-", "sha256", "sha512", "sha256:",
]  # fmt: skip
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(HOSTILE_PIECES), max_size=12).map("".join),
)


@st.composite
def near_misses(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid value with a hostile piece spliced in, or one of its characters replaced."""
    text = draw(valid)
    piece = draw(st.one_of(st.sampled_from(HOSTILE_PIECES), st.characters()))
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()) and at < len(text):
        return text[:at] + piece + text[at + 1 :]
    return text[:at] + piece + text[at:]


def candidates(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, hostile_text, near_misses(valid))


def assert_confined(value: str, *, split: bool) -> None:
    """``value`` used as path part(s) under ROOT lands strictly inside ROOT, already normal."""
    assert value.isascii(), value
    assert "\x00" not in value and "\\" not in value
    parts = value.split("/") if split else [value]
    for part in parts:
        assert part not in ("", ".", ".."), value
    for joined in (os.path.join(ROOT, *parts), os.path.join(ROOT, value)):
        normalised = os.path.normpath(joined)
        assert normalised == joined, "normpath changed the path: it held '.', '..' or '//'"
        assert os.path.commonpath([ROOT, normalised]) == ROOT
        assert normalised != ROOT
        assert posixpath.normpath(joined).startswith(ROOT + "/")
    pure = PurePosixPath(ROOT).joinpath(*parts)
    assert pure.is_relative_to(ROOT) and pure != PurePosixPath(ROOT)
    assert len(pure.parts) == len(PurePosixPath(ROOT).parts) + len(parts)


def resolves_inside(tmp_root: str, value: str, *, split: bool) -> bool:
    from pathlib import Path

    root = Path(tmp_root).resolve()
    path = root.joinpath(*(value.split("/") if split else [value])).resolve(strict=False)
    return path.is_relative_to(root) and path != root


PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def run_confinement_property(
    validate, valid: st.SearchStrategy[str], part: str, *, split: bool, tmp_root: str
) -> Counter[str]:
    stats: Counter[str] = Counter()

    @PROPERTY_SETTINGS
    @given(candidates(valid))
    def check(text: str) -> None:
        stats["tried"] += 1
        try:
            accepted = validate(text)
        except InvalidReferenceError as exc:
            assert exc.part == part
            stats["rejected"] += 1
            return
        stats["accepted"] += 1
        assert accepted == text
        assert_confined(str(accepted), split=split)
        assert resolves_inside(tmp_root, str(accepted), split=split)

    check()
    # Not vacuous: plenty of inputs were accepted, and plenty rejected (about 20-35% accepted
    # in practice; the bound leaves room for hypothesis's randomness).
    assert stats["accepted"] >= 0.1 * stats["tried"], stats
    assert stats["rejected"] >= 0.1 * stats["tried"], stats
    return stats


def test_accepted_names_stay_inside_the_root(tmp_path) -> None:
    run_confinement_property(validate_name, valid_names, "name", split=True, tmp_root=tmp_path)


def test_accepted_tags_stay_inside_the_root(tmp_path) -> None:
    run_confinement_property(validate_tag, valid_tags, "tag", split=False, tmp_root=tmp_path)


def test_accepted_digests_stay_inside_the_root(tmp_path) -> None:
    run_confinement_property(Digest, valid_digests, "digest", split=False, tmp_root=tmp_path)


@PROPERTY_SETTINGS
@given(valid_names)
def test_every_name_built_from_the_grammar_is_accepted(name: str) -> None:
    assert validate_name(name) == name


@PROPERTY_SETTINGS
@given(valid_tags)
def test_every_tag_built_from_the_grammar_is_accepted(tag: str) -> None:
    assert validate_tag(tag) == tag
    assert validate_reference(tag) == tag


@PROPERTY_SETTINGS
@given(valid_digests)
def test_every_digest_built_from_the_grammar_is_accepted(text: str) -> None:
    digest = Digest(text)
    assert digest == text
    assert len(digest.hex) == SUPPORTED_ALGORITHMS[digest.algorithm]
    assert validate_reference(text) == text


hosts = st.one_of(
    st.sampled_from(["docker.io", "ghcr.io", "localhost", "127.0.0.1", "[::1]", "quay.io"]),
    st.lists(alnum_runs, min_size=2, max_size=3).map(".".join),
)
ports = st.one_of(st.none(), st.integers(1, 65535))


@st.composite
def valid_references(draw: st.DrawFn) -> tuple[str, str, str, str | None, str | None]:
    """A reference built from the grammar, with the parts Reference.parse must find in it."""
    text = ""
    registry = None
    if draw(st.booleans()):
        port = draw(ports)
        registry = draw(hosts) + (f":{port}" if port is not None else "")
        text = registry + "/"
    path = draw(st.lists(components(), min_size=1, max_size=3).map("/".join))
    first, slash, _ = path.partition("/")
    if registry is None and slash and "." in first:
        # A first component with a dot is read as a domain (§3.4), and "a.b_c" is no valid
        # host: spell the registry out for such paths (the invalid case is tested above).
        registry = DEFAULT_REGISTRY
        text = registry + "/"
    text += path
    tag = digest = None
    if draw(st.booleans()):
        tag = draw(valid_tags)
        text += ":" + tag
    if draw(st.booleans()):
        digest = draw(valid_digests)
        text += "@" + digest
    if registry is None:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return text, registry, path, tag, digest


@PROPERTY_SETTINGS
@given(valid_references())
def test_references_built_from_the_grammar_parse_and_round_trip(
    case: tuple[str, str, str, str | None, str | None],
) -> None:
    text, registry, name, tag, digest = case
    ref = Reference.parse(text)
    assert (ref.registry, ref.name, ref.tag, ref.digest) == (registry, name, tag, digest)
    assert Reference.parse(str(ref)) == ref


@PROPERTY_SETTINGS
@given(candidates(valid_references().map(lambda case: case[0])))
def test_accepted_references_hold_only_confined_parts(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReferenceError as exc:
        assert exc.part in {"name", "tag", "digest", "registry", "reference"}
        return
    assert str(ref).isascii()
    assert_confined(ref.name, split=True)
    if ref.tag is not None:
        assert_confined(ref.tag, split=False)
    if ref.digest is not None:
        assert_confined(ref.digest, split=False)
    assert "/" not in ref.registry and "\\" not in ref.registry and ".." not in ref.registry


@pytest.mark.parametrize(
    "text", ["[..::1]:1/app", "[::g]/app", "localhost:0/app", "registry.local:70000/app"]
)
def test_bad_registry_hosts_are_rejected(text: str) -> None:
    # found by the confinement property: bracketed hosts must be real IPv6 addresses
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert info.value.part == "registry"
