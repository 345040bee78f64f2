"""A broken plugin explains itself and breaks nothing else.

Each test puts fake distributions (a ``.dist-info`` with ``METADATA`` and ``entry_points.txt``,
and the module when there is one) in a fresh directory on ``sys.path``, which is how
``importlib.metadata`` finds an installed distribution; a ``.dist-info`` whose module is gone is
exactly what a moved or deleted editable checkout leaves behind. ``test_plugins.py`` covers the
same with a distribution that pip really installed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regstore import entrypoints, plugins
from regstore.errors import BackendNotFoundError, PluginLoadError, RegstoreError
from regstore.hookspecs import PROJECT, hookimpl
from regstore.store import open_store

from .support.cli import CliResult, run_cli

ENV_VARS = ("REGSTORE_DISABLE_PLUGIN_AUTOLOAD", "REGSTORE_BLOCK_PLUGINS", "REGSTORE_TRACE_PLUGINS")
PREFIX = "regstore_loadtest_"  # every module these tests create starts with this


@dataclass
class FakeSite:
    """A directory on ``sys.path`` to install fake distributions into."""

    path: Path

    def install(
        self,
        dist: str,
        entry_points: dict[str, str],
        modules: dict[str, str] | None = None,
        version: str = "1.0",
    ) -> None:
        """Write ``dist``'s metadata declaring ``entry_points`` (name -> value) in the
        ``regstore`` group, and each module's source (none: the module is missing)."""
        dist_info = self.path / f"{dist.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        lines = [f"[{PROJECT}]", *(f"{name} = {value}" for name, value in entry_points.items())]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            (self.path / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plugin manager built for this test alone, and no test module left imported."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()
    for module in [m for m in sys.modules if m.startswith(PREFIX)]:
        del sys.modules[module]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSite:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return FakeSite(path)


RAISES_ON_IMPORT = f"""
raise RuntimeError("the {PREFIX}boom plugin exploded at import")
"""

GOOD_BACKEND = """
from regstore.backends.memory import open_backend
from regstore.hookspecs import hookimpl

@hookimpl
def regstore_register_backends(register):
    register("goodscheme", lambda url, **o: open_backend(url.replace("goodscheme", "memory", 1)))
"""


def status_of(name: str) -> plugins.PluginStatus:
    matches = [s for s in plugins.plugin_statuses() if s.name == name]
    assert len(matches) == 1, plugins.plugin_statuses()
    return matches[0]


def assert_builtins_work(tmp_path: Path) -> None:
    for url in ("memory://plugin-loading", (tmp_path / "store").as_uri()):
        with open_store(url) as store:
            assert store.repositories() == []


# -- import failures ------------------------------------------------------------------------


def test_a_plugin_raising_on_import_is_recorded_and_the_rest_works(
    site: FakeSite, tmp_path: Path
) -> None:
    site.install(
        "regstore-boom",
        {"boom": f"{PREFIX}boom", "good": f"{PREFIX}good"},
        {f"{PREFIX}boom": RAISES_ON_IMPORT, f"{PREFIX}good": GOOD_BACKEND},
        version="2.5",
    )
    assert_builtins_work(tmp_path)
    # a healthy plugin of the same distribution still loads and serves its scheme
    assert plugins.backends()["goodscheme"].distribution == "regstore-boom"
    with open_store("goodscheme://plugin-loading-good") as store:
        assert store.repositories() == []

    broken = status_of("boom")
    assert (broken.status, broken.ok) == ("broken", False)
    assert (broken.distribution, broken.version, broken.entry_point) == (
        "regstore-boom", "2.5", f"{PREFIX}boom",
    )  # fmt: skip
    assert broken.cause == f"RuntimeError: the {PREFIX}boom plugin exploded at import"
    assert plugins.broken_plugins() == [broken]
    assert status_of("good").ok and status_of("memory").ok and status_of("file").ok

    # the scheme named like the entry point is the broken plugin's: its error, not "not installed"
    with pytest.raises(PluginLoadError) as info:
        open_store("boom://x")
    error = info.value
    assert isinstance(error, RegstoreError) and not isinstance(error, BackendNotFoundError)
    assert (error.plugin, error.distribution, error.version, error.scheme) == (
        "boom", "regstore-boom", "2.5", "boom",
    )  # fmt: skip
    assert error.entry_point == f"{PREFIX}boom"
    assert error.cause == broken.cause
    text = str(error)
    for part in ("'boom'", "regstore-boom 2.5", f"boom = {PREFIX}boom", "exploded at import",
                 "REGSTORE_BLOCK_PLUGINS=boom"):  # fmt: skip
        assert part in text, text
    assert isinstance(error.__cause__, RuntimeError)


def test_blocking_the_broken_plugin_silences_it(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.install("regstore-boom", {"boom": f"{PREFIX}boom"}, {f"{PREFIX}boom": RAISES_ON_IMPORT})
    monkeypatch.setenv("REGSTORE_BLOCK_PLUGINS", "boom")
    plugins.reset_plugin_manager()
    assert plugins.broken_plugins() == []
    assert status_of("boom").status == "blocked"
    assert f"{PREFIX}boom" not in sys.modules  # never even imported
    with pytest.raises(BackendNotFoundError) as info:
        open_store("boom://x")
    assert info.value.hint == ""


def test_a_stale_editable_install_names_its_distribution(
    site: FakeSite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The trap from the issue: regstore-s3's metadata stays after its checkout is gone (here it
    shadows the real regstore-s3, being first on sys.path)."""
    site.install("regstore-s3", {"s3": f"{PREFIX}moved_checkout"}, version="0.0.1.dev0")
    with caplog.at_level(logging.WARNING, logger="regstore.plugins"):
        assert_builtins_work(tmp_path)
    broken = status_of("s3")
    assert broken.status == "broken" and broken.cause is not None
    assert broken.cause.startswith(f"ModuleNotFoundError: No module named '{PREFIX}moved_checkout'")
    assert "moved or deleted editable checkout" in broken.cause
    # loading it warned once, through logging, with the whole explanation
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "regstore-s3" in warned[0], warned
    with pytest.raises(PluginLoadError) as info:
        open_store("s3://bucket/prefix")
    assert info.value.distribution == "regstore-s3"
    assert "REGSTORE_BLOCK_PLUGINS=s3" in str(info.value)
    assert "reinstall or uninstall regstore-s3" in str(info.value)


def test_a_broken_plugin_is_found_by_its_distribution_name(site: FakeSite) -> None:
    """``regstore-<scheme>`` serves ``<scheme>://`` whatever its entry point is called."""
    site.install("regstore-vanished", {"backend": f"{PREFIX}vanished"})
    with pytest.raises(PluginLoadError) as info:
        open_store("vanished://x")
    assert (info.value.plugin, info.value.scheme) == ("backend", "vanished")


def test_an_entry_point_that_names_no_module_is_recorded_and_the_rest_works(
    site: FakeSite, tmp_path: Path
) -> None:
    site.install("regstore-misnamed", {"misnamed": "not-a-module:obj", "good": f"{PREFIX}good"},
                 {f"{PREFIX}good": GOOD_BACKEND})  # fmt: skip
    status = status_of("misnamed")
    assert status.status == plugins.BROKEN and status.distribution == "regstore-misnamed"
    assert plugins.backends()["goodscheme"].distribution == "regstore-misnamed"
    assert_builtins_work(tmp_path)


def test_a_missing_dependency_is_not_called_a_stale_install(site: FakeSite) -> None:
    site.install(
        "regstore-needs", {"needs": f"{PREFIX}needs"},
        {f"{PREFIX}needs": f"import {PREFIX}absent_dependency\n"},
    )  # fmt: skip
    cause = status_of("needs").cause
    assert cause == f"ModuleNotFoundError: No module named '{PREFIX}absent_dependency'"


def test_an_unknown_scheme_mentions_the_broken_plugins(site: FakeSite) -> None:
    site.install("regstore-boom", {"boom": f"{PREFIX}boom"}, {f"{PREFIX}boom": RAISES_ON_IMPORT})
    with pytest.raises(BackendNotFoundError) as info:
        open_store("elsewhere://x")
    assert info.value.scheme == "elsewhere"
    assert "could not be loaded (one may serve it): boom (regstore-boom)" in info.value.hint
    assert "regstore plugins --check" in str(info.value)
    with pytest.raises(BackendNotFoundError) as known:
        open_store("gs://bucket")
    assert known.value.hint.startswith("no Google Cloud Storage backend is published yet; ")
    assert "boom (regstore-boom" in known.value.hint


# -- objects that are not plugins -----------------------------------------------------------


NOT_PLUGINS = {
    # entry point value -> module source, and what the cause must say
    "no_hookimpl": (
        "def regstore_register_backends(register):\n    register('x', dict)\n",
        "implements no regstore hook",
    ),
    "misspelt": (
        "from regstore.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef regstore_register_backend(register):\n    register('x', dict)\n",
        "unknown hook 'regstore_register_backend'",
    ),
    "wrong_arguments": (
        "from regstore.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef regstore_register_backends(registrar):\n    pass\n",
        "registrar",
    ),
    "wrong_object:VERSION": ("VERSION = '1.0'\n", "'1.0' implements no regstore hook"),
    "missing_attribute:plugin": ("VERSION = '1.0'\n", "AttributeError"),
}


@pytest.mark.parametrize("value", sorted(NOT_PLUGINS))
def test_an_object_that_is_not_a_plugin_is_broken(
    site: FakeSite, tmp_path: Path, value: str
) -> None:
    source, says = NOT_PLUGINS[value]
    module = PREFIX + value.partition(":")[0]
    site.install("regstore-wrong", {"wrong": PREFIX + value}, {module: source})
    assert_builtins_work(tmp_path)
    broken = status_of("wrong")
    assert broken.status == "broken" and broken.cause is not None
    assert says in broken.cause, broken.cause
    assert broken.entry_point == PREFIX + value
    # left out entirely: no half-registered hooks
    pm = plugins.get_plugin_manager()
    assert not pm.has_plugin("wrong")
    assert "x" not in plugins.backends()
    pm.check_pending()


def test_a_plugin_whose_backend_registration_raises_is_left_out(
    site: FakeSite, tmp_path: Path
) -> None:
    site.install(
        "regstore-flaky", {"flaky": f"{PREFIX}flaky"},
        {f"{PREFIX}flaky": """
            from regstore.hookspecs import hookimpl

            @hookimpl
            def regstore_register_backends(register):
                register("flaky", dict)
                raise KeyError("no configuration")
            """},
    )  # fmt: skip
    assert "flaky" not in plugins.backends()
    assert_builtins_work(tmp_path)
    broken = status_of("flaky")
    assert broken.cause == "regstore_register_backends raised KeyError: 'no configuration'"
    assert not plugins.get_plugin_manager().has_plugin("flaky")
    with pytest.raises(PluginLoadError, match="no configuration"):
        open_store("flaky://x")


def test_a_third_party_plugin_cannot_take_a_builtin_name(site: FakeSite, tmp_path: Path) -> None:
    site.install(
        "regstore-impostor", {"memory": f"{PREFIX}impostor"}, {f"{PREFIX}impostor": GOOD_BACKEND}
    )
    assert_builtins_work(tmp_path)
    assert plugins.backends()["memory"].distribution == "regstore"
    assert "goodscheme" not in plugins.backends()
    [broken] = plugins.broken_plugins()
    assert (broken.name, broken.distribution) == ("memory", "regstore-impostor")
    assert broken.cause is not None and "already taken by regstore.backends.memory" in broken.cause
    assert f"{PREFIX}impostor" not in sys.modules


# -- built-ins, listing, tracing, in-process registration -----------------------------------


def test_builtins_are_registered_directly_not_through_their_entry_points(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Even with regstore's own entry points unloadable, the built-ins work."""

    def refuse(self: Any) -> Any:
        raise AssertionError(f"entry point {self.name} was loaded")

    monkeypatch.setattr(importlib.metadata.EntryPoint, "load", refuse)
    monkeypatch.setattr(entrypoints.FoundEntryPoint, "load", refuse)
    assert_builtins_work(tmp_path)
    for name, module in plugins.BUILTIN_PLUGINS.items():
        status = status_of(name)
        assert (status.ok, status.builtin, status.distribution) == (True, True, "regstore")
        assert status.entry_point == module


def test_statuses_as_dicts(site: FakeSite) -> None:
    site.install("regstore-boom", {"boom": f"{PREFIX}boom"}, {f"{PREFIX}boom": RAISES_ON_IMPORT})
    listed = {s.name: s.as_dict() for s in plugins.plugin_statuses()}
    assert listed["boom"] == {
        "name": "boom",
        "distribution": "regstore-boom",
        "version": "1.0",
        "entry_point": f"{PREFIX}boom",
        "builtin": False,
        "status": "broken",
        "error": f"RuntimeError: the {PREFIX}boom plugin exploded at import",
        "schemes": [],
    }
    assert listed["memory"]["status"] == "ok" and listed["memory"]["error"] is None
    assert listed["memory"]["builtin"] is True and listed["memory"]["schemes"] == ["memory"]


def test_trace_lists_each_plugin_and_its_status(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site.install("regstore-boom", {"boom": f"{PREFIX}boom"}, {f"{PREFIX}boom": RAISES_ON_IMPORT})
    monkeypatch.setenv("REGSTORE_TRACE_PLUGINS", "1")
    plugins.reset_plugin_manager()
    with caplog.at_level(logging.DEBUG, logger="regstore.plugins"):
        plugins.get_plugin_manager()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(line.startswith("plugin memory: ok (regstore ") for line in lines), lines
    assert any(
        line.startswith("plugin boom: broken (regstore-boom 1.0") and "exploded" in line
        for line in lines
    ), lines


def test_register_plugin_refuses_a_misspelt_hook() -> None:
    class Misspelt:
        @hookimpl
        def regstore_credential(self, registry: str) -> None:
            return None

    plugin = Misspelt()
    with pytest.raises(PluginLoadError) as info:
        plugins.register_plugin(plugin, name="misspelt")
    assert "unknown hook 'regstore_credential'" in info.value.cause
    assert info.value.plugin == "misspelt" and info.value.distribution is None
    pm = plugins.get_plugin_manager()
    assert not pm.is_registered(plugin)
    pm.check_pending()


def test_register_plugin_lists_in_process_plugins() -> None:
    class Observer:
        @hookimpl
        def regstore_transfer_event(self, event: Any) -> None:
            return None

    plugins.register_plugin(Observer(), name="my-observer")
    status = status_of("my-observer")
    assert (status.ok, status.distribution, status.entry_point) == (True, None, None)


# -- the command line -----------------------------------------------------------------------


def cli(site: FakeSite, home: Path, *args: str, **env: str) -> CliResult:
    # a new PYTHONPATH (the fake site's plugins) needs a fresh interpreter
    return run_cli(
        *args, home=home, env={"PYTHONPATH": str(site.path), **env}, timeout=60, subprocess=True
    )


def test_cli_lists_the_broken_plugin_and_other_commands_still_work(
    site: FakeSite, tmp_path: Path
) -> None:
    site.install("regstore-boom", {"boom": f"{PREFIX}boom"}, {f"{PREFIX}boom": RAISES_ON_IMPORT})
    home = tmp_path / "home"

    listed = cli(site, home, "plugins")
    assert listed.returncode == 0, listed
    assert "memory://" in listed.stdout and "file://" in listed.stdout
    assert "BROKEN PLUGIN" in listed.stdout
    assert "regstore-boom" in listed.stdout and "exploded at import" in listed.stdout
    assert "Traceback" not in listed.stderr

    doc = cli(site, home, "plugins", "--json", "--check")
    assert doc.returncode == 1, doc
    data = doc.json()
    assert [b["name"] for b in data["broken"]] == ["boom"]
    assert data["broken"][0]["error"] == f"RuntimeError: the {PREFIX}boom plugin exploded at import"
    statuses = {p["name"]: p["status"] for p in data["plugins"]}
    assert statuses["memory"] == statuses["file"] == "ok" and statuses["boom"] == "broken"
    assert {"memory", "file"} <= {b["scheme"] for b in data["backends"]}

    # any other command: memory:// opens (an empty memory store answers "no store", which is
    # the backend speaking, not the broken plugin); the broken scheme is one error line, exit 1
    works = cli(site, home, "--store", "memory://cli-loading", "ls")
    assert "no store at memory://cli-loading" in works.stderr, works
    assert "boom" not in works.stderr and "Traceback" not in works.stderr, works
    failed = cli(site, home, "--store", "boom://x", "ls")
    assert failed.returncode == 1, failed
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("regstore: error: "), failed
    for part in ("regstore-boom", "exploded at import", "REGSTORE_BLOCK_PLUGINS=boom"):
        assert part in errors[0], errors[0]


def test_cli_check_table_and_blocking(site: FakeSite, tmp_path: Path) -> None:
    site.install("regstore-boom", {"boom": f"{PREFIX}boom"}, {f"{PREFIX}boom": RAISES_ON_IMPORT})
    home = tmp_path / "home"
    check = cli(site, home, "plugins", "--check")
    assert check.returncode == 1, check
    rows = {line.split()[0]: line for line in check.stdout.splitlines()[1:] if line.strip()}
    assert rows["memory"].split()[1] == "ok" and rows["file"].split()[1] == "ok"
    assert rows["boom"].split()[1] == "broken" and "exploded at import" in rows["boom"]

    blocked = cli(site, home, "plugins", "--check", REGSTORE_BLOCK_PLUGINS="boom")
    assert blocked.returncode == 0, blocked
    assert "exploded" not in blocked.stdout
    assert any(line.split()[:2] == ["boom", "blocked"] for line in blocked.stdout.splitlines())
