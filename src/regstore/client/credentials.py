"""Where registry credentials come from, in order of precedence.

1. ``username``/``password`` given to the :class:`~regstore.client.Client`;
2. a ``credentials`` callable ``(registry) -> (user, password) | None`` (the engine wires the
   ``regstore_credentials`` plugin hook in here; the client never imports the plugin system);
3. docker's config file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``credHelpers[registry]``, then ``credsStore``, each run as ``docker-credential-<helper> get``
   with the server address on stdin (JSON ``Username``/``Secret`` on stdout), then the inline
   ``auths`` entry (base64 ``auth`` = ``user:pass``, or ``username``/``password`` fields, or an
   ``identitytoken``).

Keys in ``auths`` come in several forms (``host``, ``https://host``, ``http://host/v1/``); Docker
Hub's is ``https://index.docker.io/v1/``. Secrets never reach a log line or a repr.
Saving and erasing them (``regstore login``/``logout``) is :mod:`regstore.client.credstore`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DOCKER_HUB_CONFIG_KEY",
    "CredentialResolver",
    "Credentials",
    "CredentialsCallable",
    "DockerConfig",
    "config_key",
    "default_docker_config_path",
    "is_valid_helper_name",
    "normalise_key",
    "registry_hosts",
    "run_credential_helper",
]

log = logging.getLogger("regstore.client.credentials")

#: The key docker uses for Docker Hub in ``auths``, ``credHelpers`` and credential stores.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
#: Docker's credential helpers answer this when they hold nothing for the server.
_NOT_FOUND_TEXT = "credentials not found"
HELPER_TIMEOUT = 30.0

CredentialsCallable = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Credentials:
    """A username and password (or an identity token, docker's OAuth2 refresh token).

    The repr never shows the secret.
    """

    username: str
    password: str
    identity_token: str | None = None
    source: str = "explicit"

    def __repr__(self) -> str:
        kind = "identity_token" if self.identity_token else "password"
        return f"Credentials(username={self.username!r}, {kind}=<hidden>, source={self.source!r})"

    __str__ = __repr__


def default_docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json`` when that variable is set, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def config_key(registry: str) -> str:
    """The key docker files ``registry``'s credentials under (in ``auths`` and in credential
    helpers): ``https://index.docker.io/v1/`` for Docker Hub, ``host[:port]`` otherwise."""
    return DOCKER_HUB_CONFIG_KEY if registry in _DOCKER_HUB_NAMES else registry


def registry_hosts(registry: str) -> frozenset[str]:
    """The host names a config key may name ``registry`` by (every alias of Docker Hub)."""
    return _DOCKER_HUB_NAMES if registry in _DOCKER_HUB_NAMES else frozenset({registry})


def normalise_key(key: str) -> str:
    """Docker's ``ConvertToHostname``: drop the scheme and any path of a config key."""
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0].lower()


def is_valid_helper_name(helper: str) -> bool:
    """True if ``docker-credential-<helper>`` is a safe program name (no path, no option)."""
    return _HELPER_NAME_RE.fullmatch(helper) is not None


def run_credential_helper(helper: str, server: str) -> Credentials | None:
    """Run ``docker-credential-<helper> get`` for ``server``; None when it holds nothing.

    A helper that is missing, fails or prints garbage is logged (never its output, which may
    hold the secret) and treated as holding nothing.
    """
    if not is_valid_helper_name(helper):
        log.warning("ignoring credential helper with an invalid name %r", helper)
        return None
    import subprocess  # (start-up: only where a helper is configured)

    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        log.warning("credential helper %s is not installed (configured for %s)", program, server)
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("credential helper %s failed for %s: %s", program, server, type(exc).__name__)
        return None
    if proc.returncode != 0:
        if _NOT_FOUND_TEXT not in proc.stdout.decode(errors="replace").lower():
            log.warning(
                "credential helper %s exited with %d for %s", program, proc.returncode, server
            )
        return None
    try:
        answer = json.loads(proc.stdout)
        username = str(answer.get("Username") or "")
        secret = str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        log.warning("credential helper %s printed an unreadable answer for %s", program, server)
        return None
    if not secret:
        return None
    source = f"credential helper {helper}"
    if username == "<token>":  # docker's convention for an identity (refresh) token
        return Credentials("", "", identity_token=secret, source=source)
    return Credentials(username, secret, source=source)


def _from_auth_entry(entry: Mapping[str, Any], key: str) -> Credentials | None:
    source = f"docker config auths[{key!r}]"
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(
            str(entry.get("username") or ""), "", identity_token=token, source=source
        )
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=False).decode()
        except (binascii.Error, UnicodeDecodeError):
            log.warning("the 'auth' value for %s in the docker config is not base64", key)
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            log.warning("the 'auth' value for %s in the docker config is not user:password", key)
            return None
        return Credentials(user, password, source=source)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret, source=source)
    return None


class DockerConfig:
    """Docker's client config file, read once. A missing or unreadable file holds nothing."""

    def __init__(self, data: Mapping[str, Any] | None = None, path: Path | None = None) -> None:
        self.data: Mapping[str, Any] = data or {}
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> DockerConfig:
        """Read ``path`` (default :func:`default_docker_config_path`)."""
        file = Path(path) if path is not None else default_docker_config_path()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls({}, file)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable docker config %s: %s", file, type(exc).__name__)
            return cls({}, file)
        if not isinstance(data, dict):
            log.warning("ignoring docker config %s: not a JSON object", file)
            return cls({}, file)
        return cls(data, file)

    def _section(self, name: str) -> Mapping[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    def _find(self, section: Mapping[str, Any], registry: str) -> tuple[str, Any] | None:
        """The entry for ``registry``: exact key forms first, then by normalised hostname."""
        key = config_key(registry)
        hosts = registry_hosts(registry)
        exact = [key, *sorted(hosts)] + [
            f"{s}://{h}" for h in sorted(hosts) for s in ("https", "http")
        ]
        for candidate in exact:
            if candidate in section:
                return candidate, section[candidate]
        for candidate, value in section.items():
            if normalise_key(candidate) in hosts:
                return candidate, value
        return None

    def helper_for(self, registry: str) -> str | None:
        """The credential helper docker uses for ``registry``: its ``credHelpers`` entry, else
        ``credsStore``; None when credentials live in the file itself (``auths``)."""
        found = self._find(self._section("credHelpers"), registry)
        if found is not None and isinstance(found[1], str) and found[1]:
            return found[1]
        store = self.data.get("credsStore")
        return store if isinstance(store, str) and store else None

    def lookup(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (``host[:port]``, ``docker.io`` for Docker Hub)."""
        server = config_key(registry)
        helpers = self._section("credHelpers")
        found = self._find(helpers, registry)
        if found is not None and isinstance(found[1], str):
            return run_credential_helper(found[1], server)
        store = self.data.get("credsStore")
        if isinstance(store, str) and store:
            creds = run_credential_helper(store, server)
            if creds is not None:
                return creds
        entry = self._find(self._section("auths"), registry)
        if entry is not None and isinstance(entry[1], dict):
            return _from_auth_entry(entry[1], entry[0])
        return None


class CredentialResolver:
    """Answers "which credentials for this registry?" once, lazily, thread-safely.

    Nothing is looked up (no helper runs) until a registry asks for authentication.
    """

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        credentials: CredentialsCallable | None = None,
        docker_config: str | os.PathLike[str] | None = None,
        use_docker_config: bool = True,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.registry = registry
        self._explicit = (
            Credentials(username, password)
            if username is not None and password is not None
            else None
        )
        self._callable = credentials
        self._docker_config = docker_config
        self._use_docker_config = use_docker_config
        self._lock = threading.Lock()
        self._resolved = False
        self._value: Credentials | None = None

    @property
    def username(self) -> str | None:
        """The explicit username, if one was given (safe to show)."""
        return self._explicit.username if self._explicit else None

    def _lookup(self) -> Credentials | None:
        if self._explicit is not None:
            return self._explicit
        if self._callable is not None:
            answer = self._callable(self.registry)
            if answer is not None:
                user, password = answer
                return Credentials(str(user), str(password), source="credentials provider")
        if self._use_docker_config:
            return DockerConfig.load(self._docker_config).lookup(self.registry)
        return None

    def get(self) -> Credentials | None:
        """The credentials for the registry, or None for anonymous access."""
        with self._lock:
            if not self._resolved:
                self._value = self._lookup()
                self._resolved = True
                if self._value is not None:
                    log.debug(
                        "using credentials for %s from %s (user %r)",
                        self.registry,
                        self._value.source,
                        self._value.username,
                    )
            return self._value
