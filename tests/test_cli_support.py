"""The CLI test helper itself (tests/support/cli.py): an in-process run behaves like a new
process and leaves nothing behind in the test process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from regstore import plugins
from tests.support.cli import run_cli


def _schemes(home: Path, **env: str) -> set[str]:
    result = run_cli("plugins", "--json", home=home, env=env)
    assert result.returncode == 0, str(result)
    return {b["scheme"] for b in result.json()["backends"]}


def test_verbose_logging_handlers_do_not_outlive_the_run(tmp_path: Path) -> None:
    root, ours = logging.getLogger(), logging.getLogger("regstore")
    before = (list(root.handlers), root.level, list(ours.handlers), ours.level)
    for flags in ((), ("-v",), ("-vv",)):
        result = run_cli(*flags, "ls", home=tmp_path, store=str(tmp_path / "none"))
        assert result.returncode == 1 and "no store at" in result.stderr, str(result)
    assert (list(root.handlers), root.level, list(ours.handlers), ours.level) == before
    # and a later run does not write into the captured stream of an earlier one
    assert "opening the store" in run_cli("-v", "ls", home=tmp_path).stderr


def test_plugin_environment_applies_to_its_run_only(tmp_path: Path) -> None:
    assert "s3" in _schemes(tmp_path)
    assert "s3" not in _schemes(tmp_path, REGSTORE_BLOCK_PLUGINS="s3")
    assert "s3" in plugins.backends()  # the blocked manager is not the test process's
    assert "s3" in _schemes(tmp_path)  # nor the next run's


def test_the_callers_regstore_variables_do_not_reach_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGSTORE_BLOCK_PLUGINS", "s3")
    monkeypatch.setenv("REGSTORE_STORE", str(tmp_path / "callers-store"))
    assert "s3" in _schemes(tmp_path)
    result = run_cli("ls", home=tmp_path)
    assert "callers-store" not in result.stderr, str(result)
    assert os.environ["REGSTORE_STORE"] == str(tmp_path / "callers-store")  # put back


@pytest.mark.parametrize("args", [("--version",), ("frobnicate",), ("--json", "ls")])
def test_in_process_and_subprocess_runs_agree(tmp_path: Path, args: tuple[str, ...]) -> None:
    store = str(tmp_path / "store")
    inside = run_cli(*args, home=tmp_path, store=store)
    outside = run_cli(*args, home=tmp_path, store=store, subprocess=True)
    assert (inside.returncode, inside.stdout, inside.stderr) == (
        outside.returncode,
        outside.stdout,
        outside.stderr,
    )
