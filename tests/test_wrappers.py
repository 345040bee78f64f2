"""Store wrappers: the options of open_store, the rules add_wrapper enforces, the typed facade's
"unsupported" (a hook not implemented, not a None answer), and the CLI's use of both wrappers
(read-only reading commands, the -vv per-operation summary).

The wrappers' behaviour around every backend is in the conformance suite
(regstore.testing._wrapper_tests, and WrappedConformance in test_wrapped_conformance.py).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from regstore import open_store
from regstore.cli import cli
from regstore.errors import StoreError, StoreReadOnlyError, UnsupportedError
from regstore.hookspecs import StoreSpec, hookimpl
from regstore.store import (
    READ_ONLY_GUARD,
    TRACER,
    ObjectStore,
    ReadOnlyGuard,
    StoreWrapper,
    TracingWrapper,
    _StoreHooks,
)
from regstore.testing.builders import oci_image, write_image

STORE_HOOKS = {name for name in vars(StoreSpec) if name.startswith("regstore_store_")}
#: The hooks that change nothing: everything else is a change the guard must refuse.
READING_HOOKS = {
    "regstore_store_get_manifest",
    "regstore_store_manifest_is_partial",
    "regstore_store_unlinked_blobs",
    "regstore_store_outside_references",
    "regstore_store_list_repositories",
    "regstore_store_list_tags",
    "regstore_store_list_manifests",
    "regstore_store_blob_status",
    "regstore_store_open_blob",
    "regstore_store_wait_blob",
    "regstore_store_list_blobs",
    "regstore_store_blob_used_at",
    "regstore_store_list_staging",
    "regstore_store_list_quarantined",
    "regstore_store_exists",
    "regstore_store_describe",
    "regstore_store_close",
}


def _hooks_of(cls: type) -> set[str]:
    return {name for name in vars(cls) if name.startswith("regstore_store_")}


# -- the wrappers cover the contract ---------------------------------------------------------


def test_store_wrapper_wraps_every_store_hook() -> None:
    assert _hooks_of(StoreWrapper) == STORE_HOOKS


def test_the_guard_refuses_exactly_the_changes() -> None:
    """A new store hook fails this until it is sorted into reading or guarded."""
    assert READING_HOOKS <= STORE_HOOKS
    assert _hooks_of(ReadOnlyGuard) - {"regstore_store_describe"} == STORE_HOOKS - READING_HOOKS


def test_the_facade_calls_hooks_with_the_spec_signatures() -> None:
    """The typed view mypy checks the facade against is the spec, parameter for parameter."""
    protocol = {name for name in vars(_StoreHooks) if name.startswith("regstore_store_")}
    assert protocol == STORE_HOOKS
    for name in STORE_HOOKS:
        spec = list(inspect.signature(getattr(StoreSpec, name)).parameters)
        typed = list(inspect.signature(getattr(_StoreHooks, name)).parameters)
        assert typed == spec, name


# -- open_store options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "flag"),
    [("", "?read_only=1"), ("", "?read_only=true"), ("?layout=oci", "&read_only=yes")],
)
def test_read_only_in_the_url(regstore_memory_url: str, query: str, flag: str) -> None:
    write_image(open_store(regstore_memory_url + query), "app", "v1", oci_image(seed=1))
    store = open_store(regstore_memory_url + query + flag)
    assert store.read_only
    assert store.tags("app") == ["v1"]
    with pytest.raises(StoreReadOnlyError, match="delete tag app:v1") as refused:
        store.delete_tag("app", "v1")
    assert refused.value.url == regstore_memory_url + query + flag
    assert refused.value.operation == "delete tag app:v1"
    assert open_store(regstore_memory_url + query).tags("app") == ["v1"]


def test_read_only_off_and_by_keyword(regstore_memory_url: str) -> None:
    assert not open_store(regstore_memory_url + "?read_only=0").read_only
    assert not open_store(regstore_memory_url).read_only
    assert open_store(regstore_memory_url, read_only=True).read_only
    # either way turns it on: a URL that says read-only stays read-only
    assert open_store(regstore_memory_url + "?read_only=1", read_only=False).read_only


def test_read_only_file_store_by_url(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/store"
    write_image(open_store(url), "app", "v1", oci_image(seed=2))
    store = open_store(url + "?read_only=1", must_exist=True)
    assert store.describe()["read_only"] is True
    with pytest.raises(StoreReadOnlyError):
        write_image(store, "app", "v2", oci_image(seed=3))
    assert open_store(url).tags("app") == ["v1"]


@pytest.mark.parametrize("option", ["read_only", "trace"])
def test_bad_flag_values_are_refused(regstore_memory_url: str, option: str) -> None:
    with pytest.raises(StoreError, match=f"store option {option} must be 1 or 0"):
        open_store(f"{regstore_memory_url}?{option}=maybe")


def test_trace_in_the_url_and_metrics(regstore_memory_url: str) -> None:
    store = open_store(regstore_memory_url + "?trace=1")
    assert store.repositories() == []
    assert store.repositories() == []
    stats = store.metrics()["list_repositories"]
    assert (stats.count, stats.errors) == (2, 0)
    assert stats.as_dict()["count"] == 2
    assert stats.mean_seconds == pytest.approx(stats.total_seconds / 2)
    tracer = store.get_wrapper(TRACER)
    assert isinstance(tracer, TracingWrapper)
    tracer.reset()
    assert store.metrics() == {}


def test_metrics_of_an_untraced_store_say_so(regstore_memory_url: str) -> None:
    with pytest.raises(StoreError, match="without trace=True"):
        open_store(regstore_memory_url).metrics()


def test_refused_changes_are_traced_as_errors(regstore_memory_url: str) -> None:
    store = open_store(regstore_memory_url, read_only=True, trace=True)
    image = oci_image(seed=4)
    with pytest.raises(StoreReadOnlyError):
        store.layer(image.blobs[0].digest).writer()
    stats = store.metrics()["blob_writer"]
    assert (stats.count, stats.errors) == (1, 1)


# -- add_wrapper -----------------------------------------------------------------------------


class _PlainHook:
    @hookimpl
    def regstore_store_list_repositories(self) -> list[str]:
        return ["not", "the", "backend's"]


class _MisspeltWrapper:
    @hookimpl(wrapper=True)
    def regstore_store_list_repositorys(self) -> Generator[None, list[str], list[str]]:
        return (yield)


class _NoHooks:
    pass


class _Sorting(StoreWrapper):
    """A wrapper that changes an answer's order (not bytes): proves wrappers see answers."""

    @hookimpl(wrapper=True)
    def regstore_store_list_repositories(self) -> Generator[None, list[str], list[str]]:
        found = yield
        return sorted(found, reverse=True)


@pytest.mark.parametrize(
    ("plugin", "why"),
    [
        (_PlainHook(), "not a wrapper"),
        (_MisspeltWrapper(), "regstore_store_list_repositorys"),
        (_NoHooks(), "implements no store hook"),
    ],
    ids=["plain-hookimpl", "misspelt-hook", "no-hooks"],
)
def test_add_wrapper_refuses_what_is_not_a_wrapper(
    regstore_memory_url: str, plugin: object, why: str
) -> None:
    store = open_store(regstore_memory_url)
    write_image(store, "app", "v1", oci_image(seed=5))
    with pytest.raises(ValueError, match=why):
        store.add_wrapper(plugin, name="candidate")
    assert store.get_wrapper("candidate") is None
    assert store.repositories() == ["app"]  # the refused plugin left nothing behind


def test_a_wrapper_sees_and_returns_answers(regstore_memory_url: str) -> None:
    store = open_store(regstore_memory_url)
    for name in ("a", "b"):
        write_image(store, name, "v1", oci_image(seed=6))
    raw = store._hooks.regstore_store_list_repositories()
    store.add_wrapper(_Sorting(), name="sorting")
    assert store._hooks.regstore_store_list_repositories() == sorted(raw, reverse=True)
    assert store.get_wrapper("backend") is None  # the backend is not a wrapper


# -- "unsupported" is a hook not implemented, not a None answer --------------------------------


class _TinyBackend:
    """Implements two hooks: one answers, one (wrongly) answers nothing."""

    @hookimpl
    def regstore_store_list_repositories(self) -> list[str]:
        return ["only"]

    @hookimpl
    def regstore_store_list_tags(self, name: str) -> list[str] | None:
        return None


def test_unimplemented_hooks_are_unsupported_even_through_wrappers() -> None:
    store = ObjectStore(_TinyBackend(), url="tiny://x")
    store.add_wrapper(TracingWrapper(), name=TRACER)
    store.add_wrapper(ReadOnlyGuard("tiny://x"), name=READ_ONLY_GUARD)
    assert store.repositories() == ["only"]
    with pytest.raises(UnsupportedError, match="regstore_store_list_blobs"):
        store.blobs()
    with pytest.raises(StoreError, match="answered nothing to regstore_store_list_tags"):
        store.tags("only")
    assert store.exists()  # a backend that cannot tell: there is a store
    assert store.describe() == {"url": "tiny://x", "read_only": True}
    assert not store.is_partial("only", "sha256:" + "0" * 64)


class _MisspeltBackend(_TinyBackend):
    @hookimpl
    def regstore_store_list_tag(self, name: str) -> list[str]:
        return []


def test_a_backend_with_a_misspelt_hook_is_refused_when_opened() -> None:
    with pytest.raises(StoreError, match="regstore_store_list_tag") as refused:
        ObjectStore(_MisspeltBackend(), url="tiny://s3cr3t-user:pw@x")
    assert "_MisspeltBackend" in str(refused.value)
    assert "s3cr3t-user" not in str(refused.value)


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple]]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("REGSTORE_STORE", raising=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        try:
            result = runner.invoke(cli, list(args), catch_exceptions=False)
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        return result.exit_code, result.stdout, result.stderr

    yield run
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _summary(stderr: str) -> list[str]:
    """The -vv store summary lines (log lines left out)."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("regstore: store ")), None)
    return [] if start is None else lines[start:]


@pytest.mark.parametrize(
    ("args", "read_only"),
    [
        (["ls"], True),
        (["ls", "app"], True),
        (["inspect", "store:app:v1"], True),
        (["verify", "--no-quarantine"], True),
        (["verify"], False),  # it moves damaged blobs aside
        (["gc", "--dry-run"], True),
        (["gc"], False),
    ],
)
def test_reading_commands_open_the_store_read_only_and_vv_says_what_it_did(
    invoke: Callable[..., tuple[int, str, str]],
    regstore_memory_url: str,
    args: list[str],
    read_only: bool,
) -> None:
    write_image(open_store(regstore_memory_url), "app", "v1", oci_image(seed=7))
    code, _, stderr = invoke("-vv", "--store", regstore_memory_url, *args)
    assert code == 0, stderr
    summary = _summary(stderr)
    assert summary, stderr
    mode = " (read-only)" if read_only else ""
    assert summary[0].startswith(f"regstore: store {regstore_memory_url}{mode}: ")
    assert summary[1].split() == ["OPERATION", "CALLS", "ERRORS", "TOTAL", "MAX"]
    rows = {line.split()[0]: line.split()[1:3] for line in summary[2:]}
    assert rows["exists"][1] == "0"  # asked, answered
    assert "put_manifest" not in rows and "blob_writer" not in rows
    assert open_store(regstore_memory_url).tags("app") == ["v1"]


def test_one_v_prints_no_store_summary(
    invoke: Callable[..., tuple[int, str, str]], regstore_memory_url: str
) -> None:
    write_image(open_store(regstore_memory_url), "app", "v1", oci_image(seed=8))
    code, stdout, stderr = invoke("-v", "--store", regstore_memory_url, "ls")
    assert code == 0
    assert "app" in stdout
    assert _summary(stderr) == []


def test_a_read_only_url_refuses_a_delete_in_one_line(
    invoke: Callable[..., tuple[int, str, str]], regstore_memory_url: str
) -> None:
    write_image(open_store(regstore_memory_url), "app", "v1", oci_image(seed=9))
    code, _, stderr = invoke(
        "--store", regstore_memory_url + "?read_only=1", "delete", "store:app:v1"
    )
    assert code == 1
    assert "is open read-only: refusing to delete tag app:v1" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert open_store(regstore_memory_url).tags("app") == ["v1"]
