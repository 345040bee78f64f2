"""A plugin author's registration is checked by mypy: ``Register`` is a typed Protocol."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = """
from regstore.hookspecs import Register, hookimpl

class MyBackend:
    def __init__(self, url: str, **options: object) -> None:
        self.url = url

@hookimpl
def regstore_register_backends(register: Register) -> None:
    register("mystore", MyBackend, description="my storage")
    {extra}
"""


def mypy(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "regstore_mystore.py"
    module.write_text(textwrap.dedent(PLUGIN).format(extra=extra))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(module)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_correct_registration_type_checks(tmp_path: Path) -> None:
    result = mypy(tmp_path, "")
    assert result.returncode == 0, result.stdout


def test_a_wrong_registration_is_a_type_error(tmp_path: Path) -> None:
    result = mypy(tmp_path, 'register(42, MyBackend, descripton="typo")')
    assert result.returncode == 1, result.stdout
    assert "regstore_mystore.py:11" in result.stdout
    assert 'Unexpected keyword argument "descripton"' in result.stdout, result.stdout
