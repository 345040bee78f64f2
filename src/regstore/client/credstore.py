"""Saving and erasing registry credentials where docker and the other tools read them.

The writing half of :mod:`regstore.client.credentials` (what ``docker login``/``logout`` do):

- When docker's config names a credential helper for the registry (``credHelpers[registry]``,
  else ``credsStore``), the secret goes to ``docker-credential-<helper> store`` (JSON
  ``{"ServerURL", "Username", "Secret"}`` on stdin) and is removed with ``... erase`` (the
  server URL on stdin). As docker does, the file then keeps only an empty ``auths`` entry for
  the registry: docker lists logins from it, and a stale inline secret does not outlive the login.
- Otherwise the file's ``auths[key]`` becomes ``{"auth": base64("user:password")}``.

The key is :func:`~regstore.client.credentials.config_key` (``https://index.docker.io/v1/`` for
Docker Hub, ``host[:port]`` otherwise): the one :meth:`DockerConfig.lookup` tries first, so what
is saved here is what the client reads. Erasing removes every key form the reader would match.

The file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``) is rewritten atomically:
a temporary file of mode 0600 beside it, renamed over it (over the target of a symlink, so a
linked config stays linked). Every other key is kept. A config that is not a JSON object is
never overwritten. Secrets never reach an error message or a log line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regstore.client.credentials import (
    HELPER_TIMEOUT,
    DockerConfig,
    config_key,
    default_docker_config_path,
    is_valid_helper_name,
    normalise_key,
    registry_hosts,
)
from regstore.errors import CredentialStoreError, UsageError
from regstore.safetext import mask_secrets

__all__ = ["CredentialPlaces", "erase_credentials", "save_credentials"]

log = logging.getLogger("regstore.client.credstore")

#: Docker's credential helpers print this when they hold nothing for a server.
_NOT_FOUND_TEXT = "credentials not found"
#: Fields of an ``auths`` entry that hold a secret.
_SECRET_FIELDS = ("auth", "password", "identitytoken", "registrytoken")


@dataclass(frozen=True)
class CredentialPlaces:
    """Where a registry's credentials were saved (or erased from).

    ``helper`` is the credential helper's name (``pass`` for ``docker-credential-pass``) when
    it holds (held) the secret; ``config_path`` the docker config file when it does (did).
    """

    registry: str
    key: str
    helper: str | None = None
    config_path: Path | None = None
    places: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        places = []
        if self.helper is not None:
            places.append(f"credential helper docker-credential-{self.helper}")
        if self.config_path is not None:
            places.append(str(self.config_path))
        object.__setattr__(self, "places", tuple(places))


def _config_path(docker_config: str | os.PathLike[str] | None) -> Path:
    return Path(docker_config) if docker_config is not None else default_docker_config_path()


def _read_config(path: Path) -> dict[str, Any]:
    """The config as a dict ({} when there is no file); refuse what cannot be rewritten safely."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialStoreError(
            f"cannot read docker's config {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CredentialStoreError(
            f"docker's config {path} is not valid JSON; it was left as it is (fix or move it)"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
        raise CredentialStoreError(
            f"docker's config {path} is not in docker's format; it was left as it is"
        )
    return data


def _write_config(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``data`` (mode 0600: it may hold secrets)."""
    # Write where a symlink points, as docker does, so a linked config (dotfiles) stays linked.
    target = path.resolve()
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 whatever the umask
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise CredentialStoreError(
            f"cannot write docker's config {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent="\t")
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise CredentialStoreError(
            f"cannot write docker's config {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    # make the rename itself durable; not every filesystem lets a directory be fsynced
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _run_helper(
    helper: str, action: str, data: bytes, server: str, path: Path, secret: str = ""
) -> tuple[int, str]:
    """Run ``docker-credential-<helper> <action>``; (exit code, first line of its output, with
    ``secret`` masked in every spelling: a helper that fails may echo its JSON input)."""
    program = f"docker-credential-{helper}"
    if not is_valid_helper_name(helper):
        raise CredentialStoreError(f"docker's config {path} names an invalid helper {helper!r}")
    try:
        proc = subprocess.run(
            [program, action],
            input=data,
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CredentialStoreError(
            f"credential helper {program} is not installed (docker's config {path} names it "
            f"for {server})"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialStoreError(
            f"credential helper {program} {action} failed for {server}: {type(exc).__name__}"
        ) from exc
    # helpers report errors on stdout (docker's credential-helpers library), some on stderr
    text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    # masked before it is cut: a cut through the secret would leave its start unmasked
    text = mask_secrets(text, [secret])
    return proc.returncode, text.splitlines()[0][:200] if text else ""


def _holds_secret(entry: object) -> bool:
    return isinstance(entry, dict) and any(entry.get(name) for name in _SECRET_FIELDS)


def save_credentials(
    registry: str,
    username: str,
    password: str,
    *,
    docker_config: str | os.PathLike[str] | None = None,
) -> CredentialPlaces:
    """Save ``username``/``password`` for ``registry`` (``host[:port]``, ``docker.io``) where
    docker keeps them: the configured credential helper, else the config file's ``auths``.

    Does not check them (the CLI's ``login`` pings the registry first).

    Raises:
        UsageError: an empty username, or one with a ``:`` (Basic auth cannot carry it).
        CredentialStoreError: the config cannot be read or written, or the helper failed.
    """
    if not username or ":" in username:
        raise UsageError("the username must be non-empty and must not contain ':'")
    path = _config_path(docker_config)
    data = _read_config(path)
    key = config_key(registry)
    helper = DockerConfig(data, path).helper_for(registry)
    auths: dict[str, Any] = data.setdefault("auths", {})
    if helper is not None:
        request = json.dumps({"ServerURL": key, "Username": username, "Secret": password})
        code, said = _run_helper(helper, "store", request.encode(), key, path, password)
        if code != 0:
            raise CredentialStoreError(
                f"credential helper docker-credential-{helper} could not store the credentials "
                f"for {key} (exit {code}{': ' + said if said else ''})"
            )
        log.debug("stored credentials for %s in credential helper %s", key, helper)
        if auths.get(key) != {}:
            auths[key] = {}
            _write_config(path, data)
        return CredentialPlaces(registry, key, helper=helper)
    raw = f"{username}:{password}".encode()
    auths[key] = {"auth": base64.b64encode(raw).decode("ascii")}
    _write_config(path, data)
    log.debug("stored credentials for %s in %s", key, path)
    return CredentialPlaces(registry, key, config_path=path)


def erase_credentials(
    registry: str, *, docker_config: str | os.PathLike[str] | None = None
) -> CredentialPlaces:
    """Remove ``registry``'s credentials from the credential helper docker's config names for
    it and from the config file (every key form the reader would match).

    Returns where a secret was found and removed (no places: there was nothing to remove).

    Raises:
        CredentialStoreError: the config cannot be read or written, or the helper failed.
    """
    path = _config_path(docker_config)
    data = _read_config(path)
    key = config_key(registry)
    helper = DockerConfig(data, path).helper_for(registry)
    erased_in_helper = False
    if helper is not None:
        code, said = _run_helper(helper, "erase", key.encode(), key, path)
        if code == 0:
            erased_in_helper = True
        elif _NOT_FOUND_TEXT not in said.lower():
            raise CredentialStoreError(
                f"credential helper docker-credential-{helper} could not erase the credentials "
                f"for {key} (exit {code}{': ' + said if said else ''})"
            )
    auths = data.get("auths")
    hosts = registry_hosts(registry)
    stale = [k for k in auths if normalise_key(k) in hosts] if isinstance(auths, dict) else []
    had_secret = False
    if stale:
        assert isinstance(auths, dict)
        had_secret = any(_holds_secret(auths[k]) for k in stale)
        for k in stale:
            del auths[k]
        _write_config(path, data)
    return CredentialPlaces(
        registry,
        key,
        helper=helper if erased_in_helper else None,
        config_path=path if had_secret else None,
    )
