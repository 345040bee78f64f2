"""Store URLs are parsed strictly (issue 17, item 8).

``memory:nightly``, ``file:/tmp/x`` or ``s3:backups/registry`` used to be taken for relative
paths (folders created in the current directory on the first write), and ``""`` for the
current directory. They are refused now with one line naming the accepted forms; a bare path
stays a path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from regstore import open_store
from regstore.errors import StoreError, StoreURLError, UsageError
from regstore.store import split_store_url
from regstore.testing.builders import write_blob
from tests.cli_support import run_cli

BAD_URLS = ["", "   ", "memory:nightly", "file:/tmp/x", "s3:backups/registry", "://nowhere"]


@pytest.fixture
def empty_cwd(tmp_path: Path) -> Iterator[Path]:
    """Run in an empty working directory (to see that nothing is created in it)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        yield cwd
    finally:
        os.chdir(old)


@pytest.mark.parametrize("url", BAD_URLS)
def test_open_store_refuses_a_url_of_no_accepted_form(url: str, empty_cwd: Path) -> None:
    with pytest.raises(StoreURLError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "memory://NAME" in message and "file:///" in message and "s3://" in message
    # a usage error and a store error: either catch serves
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, StoreError)
    assert list(empty_cwd.iterdir()) == []


def test_a_scheme_without_slashes_says_how_to_write_it(empty_cwd: Path) -> None:
    with pytest.raises(StoreURLError, match=r"'memory:nightly'.*memory://"):
        open_store("memory:nightly")


@pytest.mark.parametrize("path", ["./x", "x/y", "mirror", "x/y:z", "./memory:nightly"])
def test_a_bare_path_stays_a_path(path: str, empty_cwd: Path) -> None:
    assert split_store_url(path) == ("file", path, {})
    with open_store(path) as store:
        assert not store.exists()  # opening creates nothing
        write_blob(store, b"a bare path is a folder")
    assert (empty_cwd / path).is_dir()


def test_urls_with_a_scheme_still_split() -> None:
    assert split_store_url("file:///srv/m?layout=oci") == (
        "file",
        "file:///srv/m",
        {"layout": "oci"},
    )
    assert split_store_url("MEMORY://x") == ("memory", "MEMORY://x", {})


@pytest.mark.parametrize("url", ["memory:nightly", "file:/tmp/x", "s3:backups/registry"])
def test_the_cli_refuses_a_bad_store_url_as_a_usage_error(url: str, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    old = Path.cwd()
    os.chdir(cwd)  # the CLI runs in the test's working directory
    try:
        for args in (["ls"], ["--store", url, "gc"]):
            result = run_cli(*args, home=tmp_path / "home", store=url)
            assert result.returncode == 2, result
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result
            assert url in lines[0] and "memory://NAME" in lines[0], result
    finally:
        os.chdir(old)
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    ["s3://b/p#x?endpoint_url=http://127.0.0.1:9", "memory://m#frag", "file:///tmp/x#y?layout=oci"],
)
def test_a_fragment_is_refused_not_dropped_with_the_options_after_it(
    url: str, empty_cwd: Path
) -> None:
    # s3://b/p#x?endpoint_url=... lost its endpoint with the fragment: writes went to AWS
    with pytest.raises(StoreURLError, match="'#' fragment"):
        split_store_url(url)
    assert list(empty_cwd.iterdir()) == []
