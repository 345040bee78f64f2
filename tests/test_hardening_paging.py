"""Tag and catalog paging against hostile registries (hardening issue 10, item 2).

A registry whose ``Link`` names a fresh ``?last=N`` on every page used to keep ``pull
--semver`` running for minutes at gigabytes of memory. Listings are now bounded by pages and
entries (client options, with the environment as the command line's way in), a ``last``
that goes back is an error, a Link back to a page already read ends the list, and names come
back once each. Bounds are asserted by counting the requests the fake registry saw.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore.client import Client
from regstore.client.limits import (
    DEFAULT_MAX_LIST_ENTRIES,
    DEFAULT_MAX_PAGES,
    DEFAULT_MAX_UNKNOWN_BLOB_SIZE,
)
from regstore.errors import PagingError, PagingLimitError, UsageError
from tests.support.cli import run_cli
from tests.support.fake_registry import ANY_QUERY, FakeRegistry, FakeRequest, Responder

NAME = "team/app"
TAGS_PATH = f"/v2/{NAME}/tags/list"
ENV_VARS = ("REGSTORE_MAX_PAGES", "REGSTORE_MAX_LIST_ENTRIES", "REGSTORE_MAX_UNKNOWN_BLOB_SIZE")


@pytest.fixture(autouse=True)
def _no_limit_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def make(fake_client_factory: Callable[..., Client]) -> Callable[..., Client]:
    return fake_client_factory


def endless_pages(path: str, key: str, page: Callable[[int], list[str]]) -> Responder:
    """Every request gets ``page(k)`` and a Link to a fresh ``?last=<k>``: it never ends."""
    counter = itertools.count(1)

    def answer(request: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        k = next(counter)
        return (
            200,
            {"Content-Type": "application/json", "Link": f'<{path}?last={k}>; rel="next"'},
            json.dumps({key: page(k)}).encode(),
        )

    return answer


def test_a_fresh_last_on_every_page_stops_at_max_pages(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    fake_registry.expect(
        "GET", TAGS_PATH, ANY_QUERY, body=endless_pages(TAGS_PATH, "tags", lambda k: ["a"]),
        times=None,
    )  # fmt: skip

    with pytest.raises(PagingLimitError) as caught:
        make(max_pages=25).list_image_tags(NAME)

    assert len(fake_registry.requests_to("GET", TAGS_PATH)) == 25
    error = caught.value
    assert (error.limit, error.value) == ("max_pages", 25)
    assert (error.registry, error.name) == (fake_registry.host, NAME)
    message = str(error)
    assert NAME in message and fake_registry.host in message
    assert "max_pages=25" in message and "REGSTORE_MAX_PAGES" in message


def test_more_entries_than_max_list_entries_stops(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    ten_new_tags = endless_pages(TAGS_PATH, "tags", lambda k: [f"{k}.{i}" for i in range(10)])
    fake_registry.expect("GET", TAGS_PATH, ANY_QUERY, body=ten_new_tags, times=None)

    with pytest.raises(PagingLimitError) as caught:
        make(max_list_entries=25).list_image_tags(NAME)

    assert len(fake_registry.requests_to("GET", TAGS_PATH)) == 3  # 30 names > 25
    assert caught.value.limit == "max_list_entries"
    assert "REGSTORE_MAX_LIST_ENTRIES" in str(caught.value)


def test_the_catalog_is_bounded_the_same_way(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    pages = endless_pages("/v2/_catalog", "repositories", lambda k: [f"repo/{k}"])
    fake_registry.expect("GET", "/v2/_catalog", ANY_QUERY, body=pages, times=None)

    with pytest.raises(PagingLimitError) as caught:
        make(max_pages=5).catalog()

    assert len(fake_registry.requests_to("GET", "/v2/_catalog")) == 5
    assert caught.value.name is None
    assert "registry really lists" in str(caught.value)


def test_a_self_looping_link_returns_each_tag_once(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    looping = {"Link": f'<{TAGS_PATH}?last=a>; rel="next"'}
    fake_registry.expect("GET", TAGS_PATH, json={"tags": ["a"]}, headers=looping)
    fake_registry.expect("GET", TAGS_PATH, "last=a", json={"tags": ["a"]}, headers=looping)

    assert make().list_image_tags(NAME) == ["a"]
    assert len(fake_registry.requests_to("GET", TAGS_PATH)) == 2


def test_a_last_that_goes_back_is_an_error(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    to_b = {"Link": f'<{TAGS_PATH}?last=b>; rel="next"'}
    fake_registry.expect("GET", TAGS_PATH, json={"tags": ["a", "b"]}, headers=to_b)
    fake_registry.expect(
        "GET", TAGS_PATH, "last=b", json={"tags": ["c"]},
        headers={"Link": f'<{TAGS_PATH}?n=5&last=b>; rel="next"'},
    )  # fmt: skip
    fake_registry.expect("GET", TAGS_PATH, "n=5&last=b", json={"tags": ["c"]}, times=None)

    with pytest.raises(PagingError) as caught:
        make().list_image_tags(NAME)

    assert not isinstance(caught.value, PagingLimitError)
    assert "last='b'" in str(caught.value) and "does not advance" in str(caught.value)
    assert len(fake_registry.requests_to("GET", TAGS_PATH)) == 2


def test_duplicates_across_pages_are_dropped_keeping_the_first_order(
    fake_registry: FakeRegistry, make: Callable[..., Client]
) -> None:
    to_a = {"Link": f'<{TAGS_PATH}?last=a>; rel="next"'}
    fake_registry.expect("GET", TAGS_PATH, json={"tags": ["b", "a"]}, headers=to_a)
    fake_registry.expect("GET", TAGS_PATH, "last=a", json={"tags": ["a", "c", "b", "c"]})

    assert make().list_image_tags(NAME) == ["b", "a", "c"]


def test_limits_come_from_arguments_then_the_environment_then_defaults(
    fake_registry: FakeRegistry, make: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = make().limits
    assert (defaults.max_pages, defaults.max_list_entries, defaults.max_unknown_blob_size) == (
        DEFAULT_MAX_PAGES,
        DEFAULT_MAX_LIST_ENTRIES,
        DEFAULT_MAX_UNKNOWN_BLOB_SIZE,
    )
    assert (DEFAULT_MAX_PAGES, DEFAULT_MAX_LIST_ENTRIES) == (10_000, 1_000_000)

    monkeypatch.setenv("REGSTORE_MAX_PAGES", "4")
    monkeypatch.setenv("REGSTORE_MAX_UNKNOWN_BLOB_SIZE", "1_048_576")
    from_env = make()
    assert from_env.limits.max_pages == 4
    assert from_env.limits.max_unknown_blob_size == 1 << 20
    assert make(max_pages=7).limits.max_pages == 7  # an argument beats the environment

    fake_registry.expect(
        "GET", TAGS_PATH, ANY_QUERY, body=endless_pages(TAGS_PATH, "tags", lambda k: [str(k)]),
        times=None,
    )  # fmt: skip
    with pytest.raises(PagingLimitError):
        from_env.list_image_tags(NAME)
    assert len(fake_registry.requests_to("GET", TAGS_PATH)) == 4

    with pytest.raises(UsageError, match="max_list_entries"):
        make(max_list_entries=0)
    monkeypatch.setenv("REGSTORE_MAX_PAGES", "many")
    with pytest.raises(UsageError, match="REGSTORE_MAX_PAGES"):
        make()


def test_pull_semver_from_an_endless_registry_fails_clearly(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    fake_registry.expect(
        "GET", TAGS_PATH, ANY_QUERY, body=endless_pages(TAGS_PATH, "tags", lambda k: [f"1.0.{k}"]),
        times=None,
    )  # fmt: skip

    result = run_cli(
        "pull", f"{fake_registry.host}/{NAME}", "--semver", ">=1",
        home=tmp_path, store=str(tmp_path / "store"), env={"REGSTORE_MAX_PAGES": "30"},
    )  # fmt: skip

    assert result.returncode != 0
    assert len(fake_registry.requests_to("GET", TAGS_PATH)) == 30
    assert "max_pages=30" in result.stderr and "REGSTORE_MAX_PAGES" in result.stderr
