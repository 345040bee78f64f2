"""Credential lookup: explicit, provider callable, docker config (auths, helpers, store).

The credential helper is a real executable (``docker-credential-test``) put on ``PATH`` in a
temporary directory; it answers from a JSON file and records the server it was asked about.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from regstore.client.credentials import (
    DOCKER_HUB_CONFIG_KEY,
    CredentialResolver,
    Credentials,
    DockerConfig,
    default_docker_config_path,
    run_credential_helper,
)

HELPER = """#!{python}
import json, sys, pathlib
here = pathlib.Path({dir!r})
server = sys.stdin.read().strip()
with open(here / "asked.log", "a") as log:
    log.write(sys.argv[1] + " " + server + "\\n")
store = json.loads((here / "store.json").read_text())
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = store[server]
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install ``docker-credential-test`` on PATH; returns its directory (store.json, asked.log)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-test"
    script.write_text(HELPER.format(python=sys.executable, dir=str(bindir)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (bindir / "store.json").write_text("{}")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bindir


def _store(helper: Path, entries: dict[str, list[str]]) -> None:
    (helper / "store.json").write_text(json.dumps(entries))


def _config(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "key", ["reg.example:5000", "https://reg.example:5000", "http://reg.example:5000/v1/"]
)
def test_auths_key_forms(tmp_path: Path, key: str) -> None:
    path = _config(tmp_path, {"auths": {key: {"auth": _b64("alice:pa:ss")}}})
    creds = DockerConfig.load(path).lookup("reg.example:5000")
    assert creds is not None and (creds.username, creds.password) == ("alice", "pa:ss")


def test_auths_username_password_fields_and_identity_token(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {
            "auths": {
                "a.example": {"username": "bob", "password": "pw"},
                "b.example": {"identitytoken": "refresh-me"},
            }
        },
    )
    config = DockerConfig.load(path)
    a = config.lookup("a.example")
    assert a is not None and (a.username, a.password) == ("bob", "pw")
    b = config.lookup("b.example")
    assert b is not None and b.identity_token == "refresh-me"
    assert config.lookup("c.example") is None


def test_docker_hub_key(tmp_path: Path) -> None:
    path = _config(tmp_path, {"auths": {DOCKER_HUB_CONFIG_KEY: {"auth": _b64("hub:pw")}}})
    creds = DockerConfig.load(path).lookup("docker.io")
    assert creds is not None and creds.username == "hub"


def test_cred_helpers_take_precedence(tmp_path: Path, helper: Path) -> None:
    _store(helper, {"reg.example": ["helper-user", "helper-secret"]})
    path = _config(
        tmp_path,
        {
            "auths": {"reg.example": {"auth": _b64("inline:pw")}},
            "credHelpers": {"reg.example": "test"},
        },
    )
    creds = DockerConfig.load(path).lookup("reg.example")
    assert creds is not None and (creds.username, creds.password) == (
        "helper-user",
        "helper-secret",
    )
    assert (helper / "asked.log").read_text() == "get reg.example\n"


def test_creds_store_with_docker_hub_server_url(tmp_path: Path, helper: Path) -> None:
    _store(helper, {DOCKER_HUB_CONFIG_KEY: ["hubuser", "hubtoken"]})
    path = _config(tmp_path, {"credsStore": "test", "auths": {DOCKER_HUB_CONFIG_KEY: {}}})
    creds = DockerConfig.load(path).lookup("docker.io")
    assert creds is not None and creds.password == "hubtoken"
    assert (helper / "asked.log").read_text() == f"get {DOCKER_HUB_CONFIG_KEY}\n"


def test_creds_store_miss_falls_back_to_inline_auth(tmp_path: Path, helper: Path) -> None:
    path = _config(
        tmp_path, {"credsStore": "test", "auths": {"reg.example": {"auth": _b64("in:line")}}}
    )
    creds = DockerConfig.load(path).lookup("reg.example")
    assert creds is not None and creds.username == "in"


def test_missing_helper_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert run_credential_helper("definitely-not-installed-xyz", "reg.example") is None
    assert "not installed" in caplog.text
    assert run_credential_helper("../evil", "reg.example") is None


def test_unreadable_config_holds_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert DockerConfig.load(bad).lookup("x") is None
    assert DockerConfig.load(tmp_path / "missing.json").lookup("x") is None


def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_docker_config_path() == tmp_path / "config.json"
    _config(tmp_path, {"auths": {"env.example": {"auth": _b64("env:pw")}}})
    resolver = CredentialResolver("env.example")
    creds = resolver.get()
    assert creds is not None and creds.username == "env"


def test_resolver_precedence_and_laziness(tmp_path: Path) -> None:
    calls: list[str] = []

    def provider(registry: str) -> tuple[str, str] | None:
        calls.append(registry)
        return ("prov", "pw") if registry == "a.example" else None

    path = _config(tmp_path, {"auths": {"b.example": {"auth": _b64("file:pw")}}})
    explicit = CredentialResolver("a.example", username="u", password="p", credentials=provider)
    got = explicit.get()
    assert got is not None and got.username == "u" and calls == []
    via_provider = CredentialResolver("a.example", credentials=provider, docker_config=path)
    got = via_provider.get()
    assert got is not None and got.username == "prov"
    via_file = CredentialResolver("b.example", credentials=provider, docker_config=path)
    got = via_file.get()
    assert got is not None and got.username == "file"
    via_file.get()
    assert calls == ["a.example", "b.example"]  # resolved once, cached
    assert CredentialResolver("c.example", docker_config=path).get() is None


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials("alice", "hunter2")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    token = Credentials("", "", identity_token="tok-secret")
    assert "tok-secret" not in repr(token)
