"""``login`` and ``logout``: check credentials against a registry, then save them where docker,
skopeo, crane, oras and regstore itself read them (see :mod:`regstore.client.credstore`).

The password comes from ``--password-stdin`` (first line of stdin) or, on a terminal, a prompt
that does not echo; never from an argument, where ``ps`` and shell history would show it.
"""

from __future__ import annotations

import logging
import sys

import click

from regstore.client.credstore import erase_credentials, save_credentials
from regstore.client.urls import Endpoint
from regstore.errors import AuthenticationError

from .app import AppState, cli, regstore_command
from .output import EXIT_FAILURE, EXIT_OK

__all__ = ["login_command", "logout_command"]

log = logging.getLogger("regstore.cli.login")


def _registry(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """REGISTRY is ``host[:port]`` (or ``https://host[:port]``); an image reference is not."""
    try:
        Endpoint.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _registry_name(value: str) -> str:
    """The name docker's config knows the registry by (``docker.io`` for any Hub alias): what
    login saves under and logout erases, from this one function so the two cannot disagree."""
    return Endpoint.parse(value).registry


def _ask_credentials(state: AppState) -> tuple[str, str]:
    """The username and password: from the global options (--username, --password-stdin or the
    prompt :meth:`AppState.prepare` showed), else both asked for on a terminal."""
    username = state.settings.username
    if username is not None:
        password = state.password()
        if password is None:  # pragma: no cover - prepare() asked or refused already
            raise click.UsageError("--username needs --password-stdin (or a terminal to ask)")
    elif sys.stdin.isatty():
        username = click.prompt("Username", err=True)
        password = click.prompt(f"Password for {username}", hide_input=True, err=True)
        state.output.secrets.append(password)
    else:
        raise click.UsageError("login needs --username NAME --password-stdin (or a terminal)")
    if ":" in username:
        raise click.BadParameter("a user name cannot contain ':'", param_hint="--username")
    return username, password


@cli.command("login")
@click.argument("registry", callback=_registry)
@regstore_command
def login_command(state: AppState, registry: str) -> int:
    """Log in to REGISTRY (HOST[:PORT]; docker.io for Docker Hub): check the credentials
    against it, then save them for docker, skopeo, crane, oras and regstore.

    They go to the credential helper docker's config names for the registry (credHelpers,
    credsStore), else into $DOCKER_CONFIG/config.json (default ~/.docker/config.json, mode
    0600). Wrong credentials change nothing.

    \b
    echo "$TOKEN" | regstore login ghcr.io --username me --password-stdin
    regstore login 127.0.0.1:5000 --username me        # asks for the password
    """
    username, password = _ask_credentials(state)
    name = _registry_name(registry)
    state.action = f"logging in to {name}"
    client = state.client(registry, username=username, password=password)
    out = state.output
    try:
        client.ping()
    except AuthenticationError as exc:
        log.info("%s: %s", state.action, exc)
        status = exc.http.status if exc.http is not None else None
        if status == 403:
            why = f"access denied for user {username!r}"
            hint = "the registry knows the user but refuses it: ask its administrator for access"
        else:
            why = "wrong username or password"
            hint = "check the username and the password (or the token given as the password)"
        out.failed(f"login to {name} failed: {why}", type(exc).__name__, hint)
        return EXIT_FAILURE
    if client.transport.auth.scheme is None:
        out.warning(
            f"{name} did not ask for credentials, so they could not be checked; saving them anyway"
        )
    saved = save_credentials(name, username, password)
    if out.json_mode:
        out.json(
            {"ok": True, "registry": name, "username": username, "saved_in": list(saved.places)}
        )
    else:
        out.summary(f"Login succeeded: {username} at {name} (saved in {', '.join(saved.places)})")
    return EXIT_OK


@cli.command("logout")
@click.argument("registry", callback=_registry)
@regstore_command
def logout_command(state: AppState, registry: str) -> int:
    """Remove the saved credentials of REGISTRY (HOST[:PORT]; docker.io for Docker Hub).

    They are erased from docker's credential helper for the registry and from
    $DOCKER_CONFIG/config.json (default ~/.docker/config.json), in every form docker writes.
    """
    name = _registry_name(registry)
    state.action = f"logging out of {name}"
    erased = erase_credentials(name)
    out = state.output
    if out.json_mode:
        out.json({"ok": True, "registry": name, "removed_from": list(erased.places)})
    elif erased.places:
        out.summary(f"Removed the credentials for {name} from {', '.join(erased.places)}")
    else:
        out.summary(f"Not logged in to {name}: no saved credentials")
    return EXIT_OK
