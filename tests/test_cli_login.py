"""``regstore login`` / ``logout`` through the real console script, against real registries
(htpasswd Basic auth, and token auth), with docker's config file in the test's own HOME and a
real credential helper executable on PATH."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from regstore.testing.builders import build_image

from .support.cli import CliResult, cli_env, only_lines, run_cli, run_in_pty
from .support.credential_helper import CredentialHelper, install_credential_helper
from .support.registry import RegistryServer

WRONG = "Wr0ng-Pa55word-Zq9"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def helper(tmp_path: Path) -> CredentialHelper:
    return install_credential_helper(tmp_path / "bin")


@pytest.fixture(params=["basic", "token"])
def auth_registry(request: pytest.FixtureRequest) -> RegistryServer:
    """A registry that needs credentials: htpasswd Basic, or Bearer tokens from a token server."""
    name = "basic_registry" if request.param == "basic" else "token_registry"
    server: RegistryServer = request.getfixturevalue(name)
    return server


Run = Callable[..., CliResult]


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Run:
    """``cli(*args, expect=0, input=..., env=...)`` with this test's HOME and store."""

    def run(*args: str, expect: int | None = 0, **kwargs: object) -> CliResult:
        kwargs.setdefault("store", str(tmp_path / "store"))
        result = run_cli(*args, home=home, **kwargs)  # type: ignore[arg-type]
        if expect is not None:
            assert result.returncode == expect, str(result)
        return result

    return run


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _creds(server: RegistryServer) -> tuple[str, str]:
    assert server.username is not None and server.password is not None
    return server.username, server.password


def _seed(server: RegistryServer) -> str:
    """Push a small image as ``locked/app:1``; return its reference."""
    server.push_content("locked/app", "1", build_image(seed=31, layer_size=512))
    return f"{server.host}/locked/app:1"


def _login(cli: Run, server: RegistryServer, password: str, **kwargs: object) -> CliResult:
    user, _ = _creds(server)
    return cli(
        "login", server.host, "--username", user, "--password-stdin", input=password + "\n",
        **kwargs,
    )  # fmt: skip


# -- the config file -------------------------------------------------------------------------------


def test_login_saves_the_credentials_and_pull_needs_no_flags(
    cli: Run, home: Path, auth_registry: RegistryServer
) -> None:
    user, password = _creds(auth_registry)
    image = _seed(auth_registry)
    config = home / ".docker" / "config.json"
    config.parent.mkdir()
    others = {
        "auths": {"other.example:5000": {"auth": _b64("o:p")}},
        "psFormat": "table {{.ID}}",
        "credHelpers": {"gcr.example": "not-installed"},
    }
    config.write_text(json.dumps(others))
    config.chmod(0o644)
    cli("pull", image, expect=1)  # the registry wants credentials: they are not there yet

    result = _login(cli, auth_registry, password)
    assert result.stdout.startswith(f"Login succeeded: {user} at {auth_registry.host}")
    assert password not in result.stdout + result.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    doc = json.loads(config.read_text())
    assert doc["auths"] == {
        "other.example:5000": {"auth": _b64("o:p")},
        auth_registry.host: {"auth": _b64(f"{user}:{password}")},
    }
    assert {k: v for k, v in doc.items() if k != "auths"} == {
        k: v for k, v in others.items() if k != "auths"
    }

    cli("pull", image)  # no --username: the saved login is used


def test_login_json_and_docker_config_env(
    cli: Run, home: Path, tmp_path: Path, basic_registry: RegistryServer
) -> None:
    user, password = _creds(basic_registry)
    elsewhere = tmp_path / "docker-config"
    env = {"DOCKER_CONFIG": str(elsewhere)}
    result = cli(
        "--json", "login", basic_registry.host, "--username", user, "--password-stdin",
        input=password + "\n", env=env,
    )  # fmt: skip
    assert result.json() == {
        "ok": True,
        "registry": basic_registry.host,
        "username": user,
        "saved_in": [str(elsewhere / "config.json")],
    }
    assert not (home / ".docker").exists()
    cli("pull", _seed(basic_registry), env=env)


def test_a_wrong_password_is_one_line_and_changes_nothing(
    cli: Run, home: Path, auth_registry: RegistryServer
) -> None:
    user, password = _creds(auth_registry)
    config = home / ".docker" / "config.json"

    first = _login(cli, auth_registry, WRONG, expect=1)
    assert only_lines(first.stderr) == [
        f"regstore: error: login to {auth_registry.host} failed: wrong username or password"
        " — try: check the username and the password (or the token given as the password)"
    ]
    assert first.stdout == "" and WRONG not in first.stdout + first.stderr
    assert not config.parent.exists()  # nothing written, not even the directory

    _login(cli, auth_registry, password)
    before, mode = config.read_bytes(), stat.S_IMODE(config.stat().st_mode)
    again = _login(cli, auth_registry, WRONG, expect=1)
    assert WRONG not in again.stdout + again.stderr
    assert config.read_bytes() == before and stat.S_IMODE(config.stat().st_mode) == mode
    as_json = cli(
        "--json", "login", auth_registry.host, "--username", user, "--password-stdin",
        input=WRONG + "\n", expect=1,
    )  # fmt: skip
    assert as_json.json()["error"]["type"] == "AuthenticationError"
    assert "check the username and the password" in as_json.json()["error"]["hint"]
    assert config.read_bytes() == before


def test_logout_removes_it_from_the_file_in_every_form(
    cli: Run, home: Path, basic_registry: RegistryServer
) -> None:
    user, password = _creds(basic_registry)
    image = _seed(basic_registry)
    config = home / ".docker" / "config.json"
    _login(cli, basic_registry, password)
    doc = json.loads(config.read_text())
    doc["auths"][f"http://{basic_registry.host}"] = {"auth": _b64(f"{user}:{password}")}
    doc["auths"]["other.example:5000"] = {"auth": _b64("o:p")}
    config.write_text(json.dumps(doc))
    cli("pull", image)

    out = cli("logout", basic_registry.host)
    assert out.stdout.startswith(f"Removed the credentials for {basic_registry.host} from ")
    assert json.loads(config.read_text())["auths"] == {"other.example:5000": {"auth": _b64("o:p")}}
    cli("pull", image, store=str(home / "fresh-store"), expect=1)  # really logged out
    again = cli("--json", "logout", basic_registry.host)
    assert again.json() == {"ok": True, "registry": basic_registry.host, "removed_from": []}


@pytest.mark.parametrize(
    ("login_as", "logout_as"), [("{host}", "http://{host}"), ("http://{host}", "{host}")]
)
def test_logout_finds_the_login_however_the_registry_is_spelled(
    cli: Run, home: Path, basic_registry: RegistryServer, login_as: str, logout_as: str
) -> None:
    user, password = _creds(basic_registry)
    host = basic_registry.host
    config = home / ".docker" / "config.json"
    cli(
        "login", login_as.format(host=host), "--username", user, "--password-stdin",
        input=password + "\n",
    )  # fmt: skip
    assert list(json.loads(config.read_text())["auths"]) == [host]  # saved under one name

    out = cli("--json", "logout", logout_as.format(host=host)).json()
    assert out["registry"] == host and out["removed_from"] == [str(config)]
    assert json.loads(config.read_text()).get("auths", {}) == {}


# -- a credential helper ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["credsStore", "credHelpers"])
def test_with_a_credential_helper_the_secret_goes_to_it(
    cli: Run, home: Path, basic_registry: RegistryServer, helper: CredentialHelper, where: str
) -> None:
    user, password = _creds(basic_registry)
    image = _seed(basic_registry)
    env = {"PATH": helper.path_env()}
    config = home / ".docker" / "config.json"
    config.parent.mkdir()
    setting = helper.name if where == "credsStore" else {basic_registry.host: helper.name}
    config.write_text(json.dumps({where: setting, "auths": {}, "detachKeys": "ctrl-e,e"}))

    login = _login(cli, basic_registry, password, env=env)
    assert f"docker-credential-{helper.name}" in login.stdout
    assert helper.secrets == {basic_registry.host: [user, password]}
    text = config.read_text()
    assert password not in text and _b64(f"{user}:{password}") not in text
    assert json.loads(text)["detachKeys"] == "ctrl-e,e"

    cli("pull", image, env=env)
    assert f"get {basic_registry.host}" in helper.calls  # the pull asked the helper

    wrong = _login(cli, basic_registry, WRONG, env=env, expect=1)
    assert WRONG not in wrong.stderr
    assert helper.secrets == {basic_registry.host: [user, password]}  # unchanged

    out = cli("logout", basic_registry.host, env=env)
    assert f"docker-credential-{helper.name}" in out.stdout
    assert helper.secrets == {}
    assert basic_registry.host not in json.loads(config.read_text())["auths"]
    cli("pull", image, env=env, store=str(home / "fresh-store"), expect=1)


def test_a_failing_helper_is_one_error_line(
    cli: Run, home: Path, basic_registry: RegistryServer, helper: CredentialHelper
) -> None:
    _, password = _creds(basic_registry)
    config = home / ".docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"credsStore": helper.name}))
    helper.fail()
    result = _login(cli, basic_registry, password, env={"PATH": helper.path_env()}, expect=1)
    errors = only_lines(result.stderr)
    assert len(errors) == 1 and "keychain is locked" in errors[0], str(result)
    assert password not in result.stdout + result.stderr
    assert json.loads(config.read_text()) == {"credsStore": helper.name}


# -- how the password is given ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("login", "127.0.0.1:9"),  # no --username, no terminal to ask
        ("login", "127.0.0.1:9", "--username", "me"),  # no --password-stdin, no terminal
        ("login", "127.0.0.1:9", "--password-stdin"),  # no --username
        ("login", "127.0.0.1:9/team/app", "--username", "me", "--password-stdin"),
        ("login", "ftp://127.0.0.1:9", "--username", "me", "--password-stdin"),
        ("login", "127.0.0.1:9", "--username", "a:b", "--password-stdin"),
        ("login",),
        ("logout",),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(cli: Run, home: Path, args: tuple[str, ...]) -> None:
    result = cli(*args, input="pw\n", expect=2)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert not (home / ".docker").exists()


def test_on_a_terminal_the_password_is_asked_for_and_not_echoed(
    home: Path, basic_registry: RegistryServer
) -> None:
    user, password = _creds(basic_registry)
    env = cli_env(home)
    code, text = run_in_pty(
        ["login", basic_registry.host, "--username", user], env, {"Password for": password}
    )
    assert code == 0, text
    assert "Login succeeded" in text and password not in text
    code, text = run_in_pty(
        ["login", basic_registry.host], env, {"Username:": user, "Password for": password}
    )
    assert code == 0, text
    assert password not in text
    doc = json.loads((home / ".docker" / "config.json").read_text())
    assert doc["auths"][basic_registry.host] == {"auth": _b64(f"{user}:{password}")}


def test_a_registry_that_asks_for_nothing_is_warned_about(
    cli: Run, home: Path, registry: RegistryServer
) -> None:
    result = cli("login", registry.host, "--username", "me", "--password-stdin", input="pw\n")
    assert "did not ask for credentials" in result.stderr
    assert (home / ".docker" / "config.json").exists()
