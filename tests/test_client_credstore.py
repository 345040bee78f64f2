"""Saving and erasing credentials where docker reads them (regstore.client.credstore).

The config file is real, on disk; the credential helper is a real executable on PATH
(tests/support/credential_helper.py). Every save is read back with the client's own reader,
so writer and reader agree on keys.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from regstore.client.credentials import DOCKER_HUB_CONFIG_KEY, DockerConfig
from regstore.client.credstore import erase_credentials, save_credentials
from regstore.client.urls import Endpoint
from regstore.errors import CredentialStoreError, UsageError

from .support.credential_helper import CredentialHelper, install_credential_helper

SECRET = "s3cr3t-Pa55-Xq7"


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CredentialHelper:
    installed = install_credential_helper(tmp_path / "bin")
    monkeypatch.setenv("PATH", installed.path_env())
    return installed


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write(path: Path, doc: object, mode: int = 0o644) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    path.chmod(mode)
    return path.read_bytes()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://Registry.Example:8443/", "registry.example:8443"),
        ("docker.io", DOCKER_HUB_CONFIG_KEY),
        ("index.docker.io", DOCKER_HUB_CONFIG_KEY),
        ("registry-1.docker.io", DOCKER_HUB_CONFIG_KEY),
    ],
)
def test_saved_under_dockers_key_and_read_back_by_the_client(
    tmp_path: Path, typed: str, key: str
) -> None:
    path = tmp_path / "config.json"
    registry = Endpoint.parse(typed).registry  # what the CLI and the client call it
    places = save_credentials(registry, "me", SECRET, docker_config=path)
    assert places.config_path == path and places.helper is None and places.key == key
    doc = json.loads(path.read_text())
    assert doc == {"auths": {key: {"auth": _b64(f"me:{SECRET}")}}}
    found = DockerConfig.load(path).lookup(registry)
    assert found is not None and (found.username, found.password) == ("me", SECRET)


def test_other_keys_and_registries_are_kept_and_the_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    original = {
        "auths": {
            "other.example": {"auth": _b64("o:p")},
            "127.0.0.1:5000": {"auth": _b64("old:old"), "email": "x@example"},
        },
        "psFormat": "table {{.ID}}",
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
    }
    _write(path, original, mode=0o644)
    old_umask = os.umask(0)  # even a permissive umask gives 0600
    try:
        save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=path)
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == original["psFormat"] and doc["proxies"] == original["proxies"]
    assert doc["auths"]["other.example"] == {"auth": _b64("o:p")}
    assert doc["auths"]["127.0.0.1:5000"] == {"auth": _b64(f"me:{SECRET}")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temp file left


def test_a_missing_config_directory_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".docker" / "config.json"
    save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=path)
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700


def test_docker_config_env_is_where_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    places = save_credentials("127.0.0.1:5000", "me", SECRET)
    assert places.config_path == tmp_path / "dc" / "config.json"
    assert not (tmp_path / "home" / ".docker").exists()
    assert DockerConfig.load().lookup("127.0.0.1:5000") is not None


def test_a_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "docker.json"
    _write(target, {"auths": {}, "detachKeys": "ctrl-e,e"})
    link = tmp_path / "config.json"
    link.symlink_to(target)
    save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=link)
    assert link.is_symlink()
    assert json.loads(target.read_text())["detachKeys"] == "ctrl-e,e"
    assert "127.0.0.1:5000" in json.loads(target.read_text())["auths"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"auths": "nope"}'])
def test_a_config_that_is_not_dockers_is_never_overwritten(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(CredentialStoreError, match="left as it is"):
        save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=path)
    with pytest.raises(CredentialStoreError):
        erase_credentials("127.0.0.1:5000", docker_config=path)
    assert path.read_text() == content


@pytest.mark.parametrize("username", ["", "a:b"])
def test_usernames_basic_auth_cannot_carry(tmp_path: Path, username: str) -> None:
    with pytest.raises(UsageError):
        save_credentials("127.0.0.1:5000", username, SECRET, docker_config=tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("where", ["credsStore", "credHelpers"])
def test_with_a_helper_the_secret_goes_to_it_not_into_the_file(
    tmp_path: Path, helper: CredentialHelper, where: str
) -> None:
    path = tmp_path / "config.json"
    config: dict[str, object] = {
        "auths": {"127.0.0.1:5000": {"auth": _b64("stale:stale-secret")}, "other": {}},
        "credsStore" if where == "credsStore" else "credHelpers": (
            helper.name if where == "credsStore" else {"127.0.0.1:5000": helper.name}
        ),
    }
    _write(path, config)
    places = save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=path)
    assert places.helper == helper.name and places.config_path is None
    assert helper.secrets == {"127.0.0.1:5000": ["me", SECRET]}
    text = path.read_text()
    assert SECRET not in text and _b64(f"me:{SECRET}") not in text
    assert "stale-secret" not in text and _b64("stale:stale-secret") not in text
    doc = json.loads(text)
    assert doc["auths"] == {"127.0.0.1:5000": {}, "other": {}}  # docker's empty entry
    found = DockerConfig.load(path).lookup("127.0.0.1:5000")
    assert found is not None and found.password == SECRET

    erased = erase_credentials("127.0.0.1:5000", docker_config=path)
    assert erased.helper == helper.name and erased.config_path is None  # only {} was in the file
    assert helper.secrets == {}
    assert "erase 127.0.0.1:5000" in helper.calls
    assert json.loads(path.read_text())["auths"] == {"other": {}}
    assert DockerConfig.load(path).lookup("127.0.0.1:5000") is None


def test_docker_hub_goes_to_the_helper_under_the_index_url(
    tmp_path: Path, helper: CredentialHelper
) -> None:
    path = tmp_path / "config.json"
    _write(path, {"credsStore": helper.name})
    save_credentials("docker.io", "me", SECRET, docker_config=path)
    assert helper.secrets == {DOCKER_HUB_CONFIG_KEY: ["me", SECRET]}
    found = DockerConfig.load(path).lookup("docker.io")
    assert found is not None and found.username == "me"


def test_a_failing_helper_is_an_error_without_the_secret_and_changes_nothing(
    tmp_path: Path, helper: CredentialHelper
) -> None:
    path = tmp_path / "config.json"
    before = _write(path, {"credsStore": helper.name, "auths": {}})
    helper.fail()
    with pytest.raises(CredentialStoreError, match="keychain is locked") as info:
        save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=path)
    assert SECRET not in str(info.value)
    assert path.read_bytes() == before
    with pytest.raises(CredentialStoreError, match="could not erase"):
        erase_credentials("127.0.0.1:5000", docker_config=path)


def test_a_helper_that_is_not_installed_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    _write(path, {"credsStore": "definitely-not-installed-xyz"})
    with pytest.raises(CredentialStoreError, match="not installed"):
        save_credentials("127.0.0.1:5000", "me", SECRET, docker_config=path)


def test_erase_removes_every_form_the_reader_would_find(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    _write(
        path,
        {
            "auths": {
                "http://127.0.0.1:5000": {"auth": _b64("a:1")},
                "https://127.0.0.1:5000/v1/": {"auth": _b64("b:2")},
                "127.0.0.1:5001": {"auth": _b64("c:3")},
            },
            "currentContext": "default",
        },
    )
    erased = erase_credentials("127.0.0.1:5000", docker_config=path)
    assert erased.places == (str(path),)
    doc = json.loads(path.read_text())
    assert doc == {"auths": {"127.0.0.1:5001": {"auth": _b64("c:3")}}, "currentContext": "default"}
    assert DockerConfig.load(path).lookup("127.0.0.1:5000") is None
    again = erase_credentials("127.0.0.1:5000", docker_config=path)
    assert again.places == ()


def test_erase_without_a_config_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert erase_credentials("127.0.0.1:5000", docker_config=path).places == ()
    assert not path.exists()
