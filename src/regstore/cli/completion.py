"""``completion``: print the shell completion script (click's own) for bash, zsh or fish.

The script asks ``regstore`` itself for completions through the ``_REGSTORE_COMPLETE``
environment variable; :func:`regstore.cli.main` passes the same name to click, so the two agree.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from .app import cli

__all__ = ["COMPLETE_VAR", "PROG_NAME", "SHELLS", "completion_command"]

PROG_NAME = "regstore"
COMPLETE_VAR = "_REGSTORE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
def completion_command(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish). To enable it:

    \b
    bash  (~/.bashrc)                   eval "$(regstore completion bash)"
    zsh   (~/.zshrc)                    eval "$(regstore completion zsh)"
    fish  (~/.config/fish/config.fish)  regstore completion fish | source
    """
    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"click has no completion for {shell}")
    root = click.get_current_context().find_root().command
    click.echo(completion_class(root, {}, PROG_NAME, COMPLETE_VAR).source())
