"""Secrets in what the CLI prints, against real servers on 127.0.0.1: URLs' secret query values
in every -v/-vv log line (urllib3's own request lines too), a password in every spelling a
credential helper may echo it, and regstore's own words left whole when a password is one."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regstore import open_store
from regstore.cli.app import configure_logging
from regstore.cli.output import Output
from regstore.client.credstore import save_credentials
from regstore.errors import CredentialStoreError
from regstore.testing.builders import build_image, write_blob

from .support.cli import CliResult, only_lines, run_cli
from .support.fixtures import S3Bucket
from .support.proxy import FaultProxy
from .support.registry import RegistryServer

#: A password with a quote, a backslash and a non-ASCII letter: JSON, repr and URL-quoting each
#: spell it differently.
ODD = 'pa"ss\\wörd9'
#: What a presigned URL carries (the tester's reproduction).
AMZ_QUERY = "X-Amz-Credential=AKIAEXAMPLE42&X-Amz-Signature=SIGSECRET0123456789"


def spellings(secret: str) -> list[str]:
    """How an echo may write the secret: as is, JSON-escaped (both ways), repr'd."""
    return [
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(json.dumps({"Secret": secret}))[1:-1],
    ]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


Run = Callable[..., CliResult]


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Run:
    def run(*args: str, expect: int | None = 0, **kwargs: object) -> CliResult:
        kwargs.setdefault("store", str(tmp_path / "store"))
        result = run_cli(*args, home=home, **kwargs)  # type: ignore[arg-type]
        if expect is not None:
            assert result.returncode == expect, str(result)
        return result

    return run


# -- 1. URLs in -v/-vv logs -----------------------------------------------------------------------


def test_vv_logs_show_no_upload_state_nor_presigned_signature(
    cli: Run,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
) -> None:
    image = build_image(seed=41, layer_size=2048)
    registry.push_content("team/app", "1", image)
    proxy = fault_proxy_factory(registry)
    # blobs are redirected as a registry on S3 does: to a presigned URL (this one serves it)
    redirect = f"{registry.url}/v2/team/app/blobs/{{digest}}?{AMZ_QUERY}"
    for digest in image.blobs:
        proxy.override_status(
            "GET", f"/blobs/{digest}$", 307, times=None,
            headers={"Location": redirect.format(digest=digest)},
        )  # fmt: skip
    pulled = cli("-vv", "--retries", "0", "pull", f"{proxy.host}/team/app:1")
    pushed = cli("-vv", "push", "team/app:1", f"{registry.host}/team/copy:1")

    text = pulled.stderr + pushed.stderr
    assert "SIGSECRET" not in text and "AKIAEXAMPLE42" not in text, text
    states = [part.split("&")[0] for part in text.split("_state=")[1:]]
    assert states, "the push logged no upload URL: nothing was checked"
    assert {state.split()[0].rstrip('"') for state in states} == {"REDACTED"}, text
    # still useful: urllib3's request lines are there, redacted like regstore's own
    lines = text.splitlines()
    pool = [line for line in lines if "urllib3.connectionpool" in line]
    assert any("X-Amz-Signature=REDACTED" in line for line in pool), text
    assert any("_state=REDACTED" in line for line in pool), text


def test_vv_logs_show_no_s3_credentials_the_environment_gave(
    home: Path, s3_bucket: S3Bucket
) -> None:
    # the credential chain (the S3 README's advice) gave botocore values regstore never saw:
    # its debug lines printed the session token and the signed Authorization header
    # dozens of times per command
    endpoint, bucket = s3_bucket
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAKEYID77",
        "AWS_SECRET_ACCESS_KEY": "SECRETKEY77SECRETKEY77",
        "AWS_SESSION_TOKEN": "SESSIONTOKEN77",
    }
    store = f"s3://{bucket}/masked?endpoint_url={endpoint}"
    image = build_image(seed=43, layer_size=1024)
    with open_store(f"{store}&key=setup&secret=setup") as opened:  # a store to verify
        for data in image.blobs.values():
            write_blob(opened, data)
    result = run_cli("-vv", "verify", home=home, store=store, env=env, subprocess=True)
    assert "botocore" in result.stderr, result.stderr  # its debug lines are there
    for secret in env.values():
        assert secret not in result.stderr
    # and what was hidden is still said to be there
    assert "'Authorization': b'***'" in result.stderr or "Authorization: ***" in result.stderr


@pytest.fixture
def logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_v_log_lines_of_any_library_lose_urls_secrets(
    logging_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(1, Output(stderr=io.StringIO()))
    pool = logging.getLogger("urllib3.connectionpool")
    pool.warning(
        "Retrying (%r) after connection broken by '%r': %s", "Retry(total=0)", "reset",
        "/v2/team/app/blobs/uploads/u1?_state=STATESECRET",
    )  # fmt: skip
    pool.warning("Incremented Retry for (url='%s'): %r", f"/b/blob?{AMZ_QUERY}", "Retry")
    logging.getLogger("somelib").warning("GET https://user:PASSWD@host.example/x?token=TKSECRET")
    err = capsys.readouterr().err
    for secret in ("STATESECRET", "SIGSECRET", "AKIAEXAMPLE42", "PASSWD", "TKSECRET"):
        assert secret not in err, err
    assert "/v2/team/app/blobs/uploads/u1?_state=REDACTED" in err
    assert "https://host.example/x?token=REDACTED" in err


# -- 2. a password a credential helper echoes ----------------------------------------------------

_ECHOING_HELPER = """#!{python}
import sys
data = sys.stdin.read()
if sys.argv[1] == "store":
    print("error: cannot parse request " + data)  # docker's helpers answer on stdout
    sys.stderr.write("fatal: %r" % data)
    sys.exit(1)
print("credentials not found in native keychain")
sys.exit(1)
"""


def install_echoing_helper(bindir: Path, home: Path) -> dict[str, str]:
    """``docker-credential-echo`` (fails every store, echoing its JSON input) as the
    credsStore of HOME's docker config; the PATH that finds it."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "docker-credential-echo"
    script.write_text(_ECHOING_HELPER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    config = home / ".docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"credsStore": "echo"}))
    return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize("password", [ODD, "back\\slash", "hunter2-ÄÖ"])
def test_a_helper_echoing_its_input_shows_no_spelling_of_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    env = install_echoing_helper(tmp_path / "bin", tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    with pytest.raises(CredentialStoreError) as info:
        save_credentials(
            "127.0.0.1:5000", "me", password, docker_config=tmp_path / ".docker" / "config.json"
        )
    said = str(info.value)
    assert "cannot parse request" in said and '"Secret": "***"' in said, said
    for spelling in spellings(password):
        assert spelling not in said, (spelling, said)


def test_login_with_an_echoing_helper_shows_no_spelling_of_the_password(
    cli: Run, home: Path, tmp_path: Path, registry_factory: Callable[..., RegistryServer]
) -> None:
    server = registry_factory(auth="basic", username="carol", password=ODD)
    env = install_echoing_helper(tmp_path / "bin", home)
    login = ["login", server.host, "--username", "carol", "--password-stdin"]
    plain = cli(*login, input=ODD + "\n", env=env, expect=1)
    as_json = cli("--json", *login, input=ODD + "\n", env=env, expect=1)
    message = as_json.json()["error"]["message"]
    assert "could not store the credentials" in message and "***" in message, message
    for text in (plain.stdout + plain.stderr, as_json.stdout + as_json.stderr, message):
        for spelling in spellings(ODD):
            assert spelling not in text, (spelling, text)


@pytest.mark.parametrize(
    "text",
    [
        f"helper said {json.dumps({'Secret': ODD})}",
        f"helper said {json.dumps({'Secret': ODD}, ensure_ascii=False)}",
        f"helper said {ODD!r}",
        f"helper said {json.dumps({'Secret': ODD})!r}",
        "GET /x?password=pa%22ss%5Cw%C3%B6rd9 -> 401",
    ],
)
def test_output_masks_every_spelling_of_a_secret(text: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    output = Output(json_mode=True, stdout=out, stderr=err)
    output.secrets.append(ODD)
    output.error(text)
    output.json({"message": text})
    shown = out.getvalue() + err.getvalue()
    assert "***" in output.mask(text)
    for spelling in [*spellings(ODD), "pa%22ss%5Cw%C3%B6rd9"]:
        assert spelling not in shown, (spelling, shown)


# -- 3. a password that is one of our words ------------------------------------------------------


@pytest.mark.parametrize("password", ["password", "wrong", "username"])
def test_a_wrong_password_that_is_a_word_of_the_message_leaves_it_whole(
    cli: Run, basic_registry: RegistryServer, password: str
) -> None:
    login = ["login", basic_registry.host, "--username", "alice", "--password-stdin"]
    plain = cli(*login, input=password + "\n", expect=1)
    assert only_lines(plain.stderr) == [
        f"regstore: error: login to {basic_registry.host} failed: wrong username or password"
        " — try: check the username and the password (or the token given as the password)"
    ], str(plain)
    as_json = cli("--json", *login, input=password + "\n", expect=1)
    assert as_json.json()["error"]["message"] == (
        f"login to {basic_registry.host} failed: wrong username or password"
    )
    # the hint is our own words too: a hole in it would show where the password stands
    assert as_json.json()["error"]["hint"] == (
        "check the username and the password (or the token given as the password)"
    )


def test_a_hint_keeps_its_words_and_a_registry_echo_is_still_masked(
    cli: Run, basic_registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy]
) -> None:
    # the registry's own text echoes the password ("password"): masked there, and only there
    proxy = fault_proxy_factory(basic_registry)
    body = {"errors": [{"code": "DENIED", "message": "alice's secret password is refused"}]}
    proxy.override_status(
        None, "^/v2/", 403, times=None,
        headers={"Content-Type": "application/json"}, body=json.dumps(body),
    )  # fmt: skip
    pull = ["pull", f"{proxy.host}/team/app:1", "--username", "alice", "--password-stdin"]
    plain = cli(*pull, input="password\n", expect=1)
    [line] = only_lines(plain.stderr)
    assert "alice's secret *** is refused" in line, line
    assert "--username NAME --password-stdin, or a sync file's username: and password_env:" in line
    as_json = cli("--json", *pull, input="password\n", expect=1).json()["error"]
    assert "alice's secret *** is refused" in as_json["message"]
    assert "--password-stdin" in as_json["hint"]


def test_secrets_are_masked_whole_and_regstore_phrases_only_as_phrases() -> None:
    output = Output(stdout=io.StringIO(), stderr=io.StringIO())
    output.secrets.append("wrong")
    line = "login to h:5000 failed: wrong username or password"
    assert output.mask(line) == line
    assert output.mask("the registry said: wrong") == "the registry said: ***"
    assert output.mask("wrong username") == "*** username"  # not the whole phrase: not ours
    output.secrets.append("login to")  # a whole phrase by itself is no word of ours
    assert output.mask("login to h:5000") == "*** h:5000"


def test_a_secret_with_a_space_is_masked_on_an_error_line_that_folds_it() -> None:
    # the error line is made one line (newlines and runs of spaces folded): masked before the
    # folding, "correct\nhorse" became "correct horse" and was shown
    out, err = io.StringIO(), io.StringIO()
    output = Output(stdout=out, stderr=err)
    output.secrets.append("correct horse")
    output.error("the helper said: 'correct\n   horse'")
    assert "correct" not in err.getvalue() and "***" in err.getvalue()


def test_the_environment_s_credentials_are_masked_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    # the Azure plugin reads AZURE_STORAGE_ACCOUNT_KEY and a connection string's AccountKey:
    # a library logging the derived key printed it whole
    from regstore.cli.app import _environment_secrets

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "ACCOUNTKEY77")
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=Zm9vYmFy==;"
        "SharedAccessSignature=sv=2020&sig=SIG77",
    )
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SESSIONTOKEN77")
    found = _environment_secrets()
    for secret in ("ACCOUNTKEY77", "Zm9vYmFy==", "sv=2020&sig=SIG77", "SESSIONTOKEN77"):
        assert secret in found
    assert "a" not in found  # the account's name is no secret
