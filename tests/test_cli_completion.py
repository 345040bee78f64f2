"""``regstore completion SHELL``: the script click makes, and that it really completes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support.cli import cli_env, run_cli

#: A line each shell's script must hold: its registration of ``regstore``.
MARKERS = {
    "bash": "complete -o nosort -F _regstore_completion regstore",
    "zsh": "#compdef regstore",
    "fish": "complete --no-files --command regstore",
}


@pytest.mark.parametrize("shell", sorted(MARKERS))
def test_each_shell_gets_its_script(tmp_path: Path, shell: str) -> None:
    result = run_cli("completion", shell, home=tmp_path)
    assert result.returncode == 0, str(result)
    assert MARKERS[shell] in result.stdout
    assert f"_REGSTORE_COMPLETE={shell}_complete" in result.stdout


@pytest.mark.parametrize("args", [("completion", "tcsh"), ("completion",)])
def test_an_unknown_or_missing_shell_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_cli(*args, home=tmp_path)
    assert result.returncode == 2, str(result)
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_the_bash_script_completes_commands_in_bash(tmp_path: Path) -> None:
    """Load the script in a real bash and ask it to complete ``regstore lo``: the script and
    the program agree on how to talk (the environment variable, the console script)."""
    console_script = Path(sys.executable).parent / "regstore"
    assert console_script.exists()
    env = cli_env(tmp_path, extra={"PATH": f"{console_script.parent}:/usr/bin:/bin"})
    program = """
        eval "$(regstore completion bash)"
        COMP_WORDS=(regstore lo); COMP_CWORD=1
        _regstore_completion regstore  # bash passes the command name
        printf '%s\\n' "${COMPREPLY[@]}"
    """
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["login", "logout"]
