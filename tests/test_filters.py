"""Tag filters: exact lists, regex include/exclude, semver ranges, newest N (unit tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regstore.engine.filters import FilterError, SemverRange, TagFilter, order_tags, parse_version

TAGS = [
    "latest", "main", "1.0", "1.1.0", "v1.2.0", "1.2.1", "1.3.0-rc1", "1.3.0", "2.0.0", "2.1",
    "3.19", "3.20", "1.2.3.4", "01.2",
]  # fmt: skip


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("V2", "2.0.0"),
        ("1.2", "1.2.0"),
        ("1", "1.0.0"),
        ("1.3.0-rc1", "1.3.0-rc1"),
        ("3.19-alpine", "3.19.0-alpine"),
        ("latest", None),
        ("1.2.3.4", None),
        ("01.2", None),
        ("", None),
    ],
)
def test_versions_are_normalised(tag: str, version: str | None) -> None:
    parsed = parse_version(tag)
    assert (str(parsed) if parsed is not None else None) == version


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (">=1.2", ["v1.2.0", "1.2.1", "1.3.0-rc1", "1.3.0", "2.0.0", "2.1", "3.19", "3.20"]),
        (">=1.2 <2", ["v1.2.0", "1.2.1", "1.3.0-rc1", "1.3.0"]),
        (">=1.2, <2.0.0", ["v1.2.0", "1.2.1", "1.3.0-rc1", "1.3.0"]),
        (">= 1.2 < 2", ["v1.2.0", "1.2.1", "1.3.0-rc1", "1.3.0"]),
        ("^1.1", ["1.1.0", "v1.2.0", "1.2.1", "1.3.0-rc1", "1.3.0"]),
        ("~1.2", ["v1.2.0", "1.2.1"]),  # 1.3.0-rc1 is not below 1.3
        ("1.2.x", ["v1.2.0", "1.2.1"]),
        ("3.x || 1.0", ["1.0", "3.19", "3.20"]),
        ("*", [t for t in TAGS if t not in ("latest", "main", "1.2.3.4", "01.2")]),
        ("==2.1", ["2.1"]),
        ("2.1.0", ["2.1"]),
        ("!=1.0 <1.2", ["1.1.0"]),
        (">2.1", ["3.19", "3.20"]),
        ("<=1.1", ["1.0", "1.1.0"]),
    ],
)
def test_semver_ranges(expression: str, expected: list[str]) -> None:
    assert TagFilter(semver=expression).select(TAGS) == expected


def test_caret_below_one_is_narrower() -> None:
    tags = ["0.2.3", "0.2.9", "0.3.0", "0.0.3", "0.0.4"]
    assert TagFilter(semver="^0.2.3").select(tags) == ["0.2.3", "0.2.9"]
    assert TagFilter(semver="^0.0.3").select(tags) == ["0.0.3"]


def test_prereleases_inside_a_range_are_kept_but_not_those_of_an_exclusive_bound() -> None:
    tags = ["1.9.0", "2.0.0-rc1", "2.0.0", "1.5.0-beta"]
    assert TagFilter(semver="<2").select(tags) == ["1.5.0-beta", "1.9.0"]
    assert TagFilter(semver=">=1.6 <=2.0.0").select(tags) == ["1.9.0", "2.0.0-rc1", "2.0.0"]
    assert TagFilter(semver="<2.0.0-rc2").select(tags) == ["1.5.0-beta", "1.9.0", "2.0.0-rc1"]
    assert TagFilter(semver=">=2.0.0-rc1").select(tags) == ["2.0.0-rc1", "2.0.0"]


def test_semver_filter_drops_tags_that_are_not_versions() -> None:
    kept = TagFilter(semver=">=0").select(["latest", "main", "1.0", "1.2.3.4"])
    assert kept == ["1.0"]


def test_regex_include_and_exclude() -> None:
    f = TagFilter(include=[r"^1\.", r"^3\."], exclude=["-rc", r"\.4$"])
    assert f.select(TAGS) == ["1.0", "1.1.0", "1.2.1", "1.3.0", "3.19", "3.20"]
    # include uses re.search: an unanchored pattern matches anywhere
    assert TagFilter(include=["rc"]).select(TAGS) == ["1.3.0-rc1"]
    assert TagFilter(exclude=[".*"]).select(TAGS) == []


def test_exact_list_intersects_with_the_other_filters() -> None:
    f = TagFilter(exact=["3.19", "3.20", "9.9"], exclude=["20"])
    assert f.select(TAGS) == ["3.19"]
    assert not f.needs_listing
    assert TagFilter(include=["x"]).needs_listing


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"latest": 2}, ["3.19", "3.20"]),
        ({"latest": 3, "semver": "<2"}, ["1.2.1", "1.3.0-rc1", "1.3.0"]),
        ({"latest": 2, "semver": "<2", "exclude": ["-rc"]}, ["1.2.1", "1.3.0"]),
        ({"latest": 1, "include": ["^v"]}, ["v1.2.0"]),
        ({"latest": 100, "include": ["^ma", "^la"]}, ["latest", "main"]),
    ],
)
def test_latest_keeps_the_newest(kwargs: dict[str, object], expected: list[str]) -> None:
    assert TagFilter(**kwargs).select(TAGS) == expected  # type: ignore[arg-type]


def test_order_is_by_version_and_text_for_the_rest() -> None:
    assert order_tags(["1.10", "1.9", "1.9.1", "v1.2"]) == ["v1.2", "1.9", "1.9.1", "1.10"]
    assert order_tags(["b", "a", "2", "10"]) == ["a", "b", "2", "10"]
    # equal versions are ordered by text, so the order is total and stable
    assert order_tags(["v1.2", "1.2.0", "1.2"]) == ["1.2", "1.2.0", "v1.2"]
    # without versions: plain text order, so "newest" is the last one alphabetically
    assert TagFilter(latest=1).select(["beta", "alpha", "gamma"]) == ["gamma"]


def test_an_empty_filter_takes_everything() -> None:
    f = TagFilter()
    assert f.is_empty
    assert f.describe() == "all tags"
    assert sorted(f.select(TAGS)) == sorted(TAGS)


def test_from_options_and_describe_and_as_dict() -> None:
    f = TagFilter.from_options(include=["^1"], exclude=["rc"], semver=">=1", latest=2)
    assert f == TagFilter(include=("^1",), exclude=("rc",), semver=">=1", latest=2)
    assert f.describe() == "include ^1 exclude rc semver >=1 latest 2"
    assert f.as_dict() == {"include": ["^1"], "exclude": ["rc"], "semver": ">=1", "latest": 2}
    assert TagFilter(include="^x").include == ("^x",)  # a single string is one pattern


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"semver": "foo"}, "'foo' is not a version"),
        ({"semver": ""}, "non-empty"),
        ({"semver": ">=1.2 ||"}, "empty alternative"),
        ({"semver": ">=1.x"}, "wildcards take no operator"),
        ({"semver": "1.y"}, "not a version"),
        ({"include": ["("]}, "invalid include regular expression '('"),
        ({"exclude": ["[a-"]}, "invalid exclude regular expression"),
        ({"latest": 0}, "positive integer"),
        ({"latest": True}, "positive integer"),
        ({"exact": [""]}, "non-empty"),
    ],
)
def test_malformed_filters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace("[", r"\[")):
        TagFilter(**kwargs)  # type: ignore[arg-type]


def test_filter_error_is_a_value_error() -> None:
    assert issubclass(FilterError, ValueError)
    assert str(SemverRange.parse(">=1")) == ">=1"


versions = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30))


@given(st.lists(versions, min_size=1, max_size=20, unique=True), st.integers(1, 5))
def test_latest_n_are_the_n_highest_versions(triples: list[tuple[int, int, int]], n: int) -> None:
    tags = [f"{a}.{b}.{c}" for a, b, c in triples]
    kept = TagFilter(latest=n).select(tags)
    assert kept == [f"{a}.{b}.{c}" for a, b, c in sorted(triples)[-n:]]


@given(st.lists(versions, max_size=20, unique=True), versions)
def test_a_semver_range_matches_tuple_comparison(
    triples: list[tuple[int, int, int]], low: tuple[int, int, int]
) -> None:
    tags = [f"v{a}.{b}.{c}" for a, b, c in triples]
    bound = ".".join(map(str, low))
    kept = TagFilter(semver=f">={bound}").select(tags)
    assert kept == [f"v{a}.{b}.{c}" for a, b, c in sorted(t for t in triples if t >= low)]
