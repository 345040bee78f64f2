"""What regstore shows is safe to show (hardening issue 10).

- Store URL secrets (``s3://KEY:SECRET@bucket``, ``?secret=``) never appear in any output of any
  command at any verbosity, whether the store opens or not.
- Text that came from outside (a registry's error code and message, tag names, a realm) reaches
  the terminal with its control characters escaped: no ESC/OSC/BEL sequence gets through.
- The "--plain-http" hint appears only when it can help (an https:// request answered in plain
  HTTP), never after a mid-body break on a plain-HTTP registry.
- An HTTPS registry cannot send the credentials to a plain-HTTP token realm.

The secret matrix runs the real CLI in-process (click's runner: same code, same streams,
seconds instead of minutes); a few runs repeat it as a real process.
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import json
import logging
import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regstore import open_store
from regstore.cli import cli
from regstore.cli.output import hint_for
from regstore.client import Client
from regstore.errors import (
    AuthenticationError,
    DigestMismatchError,
    InsecureRealmError,
    StoreError,
    TransportError,
)
from regstore.safetext import printable, redact_store_url, store_url_secrets
from regstore.testing.builders import build_image

from .support.cli import put_image, run_cli
from .support.fake_registry import ANY_QUERY, FakeRegistry, FakeRequest
from .support.fixtures import S3Bucket
from .support.proxy import FaultProxy
from .support.registry import RegistryServer

# -- the one redaction function ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://KEY:SECRET@bucket/p?layout=oci", "s3://***@bucket/p?layout=oci"),
        (
            "s3://b/p?endpoint_url=http://h:9&key=K&secret=S",
            "s3://b/p?endpoint_url=http://h:9&key=***&secret=***",
        ),
        (
            "az://c/p?account_key=A&sas_token=B&connection_string=C",
            "az://c/p?account_key=***&sas_token=***&connection_string=***",
        ),
        (
            "x://c?credential=A&sig=B&password=C&Token=D&SESSION_TOKEN=E",
            "x://c?credential=***&sig=***&password=***&Token=***&SESSION_TOKEN=***",
        ),
        ("s3://b/p?sec%72et=S", "s3://b/p?secret=***"),
        ("s3://b/p#frag-secret", "s3://b/p#***"),
        ("s3://[broken/p?secret=S", "s3://***"),
        ("./mirror?key=PLAIN", "./mirror?key=***"),
        ("/srv/mirror", "/srv/mirror"),
        # a plugin's scheme keeps its "//" (it was shown as dirstore:/tmp/a, which does not open)
        ("dirstore:///tmp/a", "dirstore:///tmp/a"),
        ("sqlite:////tmp/s.db?timeout=3", "sqlite:////tmp/s.db?timeout=3"),
        ("mine://u:pw@host/p", "mine://***@host/p"),
        ("file:///srv/mirror", "file:///srv/mirror"),
    ],
)
def test_redact_store_url_hides_user_info_and_secret_options(url: str, shown: str) -> None:
    assert redact_store_url(url) == shown


def test_store_url_secrets_lists_what_to_mask_in_free_text() -> None:
    url = "s3://AKIA1234:wJal%2Fr@b/p?secret=s3cr%2Ft&layout=oci&key=ab"
    secrets = store_url_secrets(url)
    for value in ("AKIA1234", "wJal%2Fr", "wJal/r", "s3cr%2Ft", "s3cr/t"):
        assert value in secrets
    assert "oci" not in secrets and "ab" not in secrets  # not secret; too short to mask


def test_s3_url_errors_never_show_the_secrets() -> None:
    for url in (
        "s3://KEYID-1111:SECRET-2222@bad_bucket!/x?secret=SECRET-3333",
        "s3://KEYID-1111:SECRET-2222@good-bucket/x",
        "s3://bad_bucket!/x?secret=SECRET-3333&key=KEYID-1111",
        "s3://bucket/x?secret=SECRET-3333&key=KEYID-1111&lease=soon",
    ):
        with pytest.raises(StoreError) as caught:
            open_store(url)
        for secret in ("KEYID-1111", "SECRET-2222", "SECRET-3333"):
            assert secret not in str(caught.value), url


# -- the secret matrix -----------------------------------------------------------------------------

VERBOSITIES: tuple[tuple[str, ...], ...] = ((), ("-v",), ("-vv",), ("--json",))


@dataclass
class Run:
    args: list[str]
    exit_code: int
    text: str  # stdout and stderr

    def __str__(self) -> str:
        return f"$ regstore {' '.join(self.args)}\n-> {self.exit_code}\n{self.text}"


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Run]]:
    """Run the CLI in-process; the logging set up by -v/-vv is undone after each run."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for name in ("REGSTORE_STORE", "AWS_PROFILE", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    runner = CliRunner()

    def run(*args: str) -> Run:
        try:
            result = runner.invoke(cli, list(args), catch_exceptions=True)
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"regstore {' '.join(args)} crashed") from result.exception
        return Run(list(args), result.exit_code, result.stdout + result.stderr)

    yield run
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _store_commands(registry: str, sync_file: Path) -> list[list[str]]:
    """One run of every store-touching command (and ``plugins``)."""
    return [
        ["ls"],
        ["ls", "team/app"],
        ["inspect", "store:team/app:1"],
        ["verify"],
        ["gc", "--dry-run"],
        ["push", "store:team/app:1", f"{registry}/team/app:1"],
        ["pull", f"{registry}/team/app:1"],
        ["copy", "store:team/app:1", "store:copied/app:1"],
        ["delete", "store:copied/app:1"],
        ["sync", str(sync_file)],
        ["plugins"],
    ]


def _assert_never_shown(runs: list[Run], secrets: tuple[str, ...]) -> None:
    leaks = [(secret, run) for run in runs for secret in secrets if secret in run.text]
    assert not leaks, "\n\n".join(f"{secret!r} leaked:\n{run}" for secret, run in leaks)


@pytest.fixture
def seeded_registry(registry: RegistryServer, tmp_path: Path, invoke: Callable[..., Run]) -> str:
    """The registry holding team/app:1 (pushed from a file store by the CLI itself)."""
    source = f"file://{tmp_path / 'seed'}"
    put_image(open_store(source), "team/app", "1", build_image(seed=5, layers=1, layer_size=2048))
    pushed = invoke("--store", source, "push", "store:team/app:1", f"{registry.host}/team/app:1")
    assert pushed.exit_code == 0, str(pushed)
    return registry.host


def _sync_file(tmp_path: Path, registry: str, target: str | None = None) -> Path:
    path = tmp_path / ("sync-to-target.yaml" if target else "sync.yaml")
    spec = {
        "sources": [
            {
                "registry": registry,
                "plain_http": True,
                "repositories": [{"name": "team/app", "tags": ["1"]}],
            }
        ]
    }
    if target is not None:
        spec["target"] = {"store": target}
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.mark.parametrize(
    "url",
    [
        "s3://KEYID-1111:SECRET-2222@bad_bucket!/x?secret=SECRET-3333&token=TOKEN-4444",
        "s3://KEYID-1111:SECRET-2222@good-bucket/x?endpoint_url=http://127.0.0.1:1",
        "s3://bad_bucket!/x?key=KEYID-1111&secret=SECRET-3333&token=TOKEN-4444",
    ],
    ids=["user-info-and-bad-bucket", "user-info", "bad-bucket"],
)
def test_no_command_shows_the_secrets_of_a_store_url_that_does_not_open(
    url: str, seeded_registry: str, tmp_path: Path, invoke: Callable[..., Run]
) -> None:
    sync_file = _sync_file(tmp_path, seeded_registry)
    target_file = _sync_file(tmp_path, seeded_registry, target=url)
    runs = []
    for verbosity in VERBOSITIES:
        for command in [*_store_commands(seeded_registry, sync_file), ["sync", str(target_file)]]:
            runs.append(invoke(*verbosity, "--store", url, *command))
    _assert_never_shown(runs, ("KEYID-1111", "SECRET-2222", "SECRET-3333", "TOKEN-4444"))
    failed = [run for run in runs if run.args[-1] != "plugins"]
    assert all(run.exit_code == 1 for run in failed), [str(r) for r in failed if r.exit_code != 1]
    assert any("s3://***@" in run.text or "bad_bucket" in run.text for run in runs)


def test_no_command_shows_the_secrets_of_a_working_s3_store(
    s3_bucket: S3Bucket, seeded_registry: str, tmp_path: Path, invoke: Callable[..., Run]
) -> None:
    endpoint, bucket = s3_bucket
    url = f"s3://{bucket}/mirror?endpoint_url={endpoint}&key=KEYID-5555&secret=SECRET-6666"
    put_image(open_store(url), "team/app", "1", build_image(seed=6, layers=1, layer_size=2048))
    sync_file = _sync_file(tmp_path, seeded_registry)
    target_file = _sync_file(tmp_path, seeded_registry, target=url)
    runs = []
    for verbosity in VERBOSITIES:
        for command in [
            ["copy", "store:team/app:1", "store:copied/app:1"],  # for delete to delete
            *_store_commands(seeded_registry, sync_file),
            ["sync", str(target_file)],
        ]:
            run = invoke(*verbosity, "--store", url, *command)
            assert run.exit_code == 0, str(run)
            runs.append(run)
    _assert_never_shown(runs, ("KEYID-5555", "SECRET-6666"))
    listed = next(r for r in runs if r.args == ["--json", "--store", url, "ls"])
    assert json.loads(listed.text)["store"].endswith("&key=***&secret=***")
    # -vv really logged the S3 traffic (so the matrix looked where secrets could leak)
    assert any("botocore" in r.text or "s3fs" in r.text for r in runs if "-vv" in r.args)


def test_a_real_process_shows_no_store_url_secret_either(
    s3_bucket: S3Bucket, seeded_registry: str, tmp_path: Path
) -> None:
    endpoint, bucket = s3_bucket
    working = f"s3://{bucket}/m?endpoint_url={endpoint}&key=KEYID-7777&secret=SECRET-8888"
    broken = "s3://KEYID-7777:SECRET-9999@bad_bucket!/x?secret=SECRET-8888"
    for url, args in [
        (working, ["-vv", "pull", f"{seeded_registry}/team/app:1"]),
        (working, ["-vv", "verify"]),
        (broken, ["-vv", "ls"]),
        (broken, ["--json", "inspect", "store:team/app:1"]),
    ]:
        # a real interpreter: logging and the plugins set up from scratch, as for a user
        result = run_cli(*args, home=tmp_path, store=url, subprocess=True)
        output = result.stdout + result.stderr
        for secret in ("KEYID-7777", "SECRET-8888", "SECRET-9999"):
            assert secret not in output, str(result)
        assert "opening the store s3://" in output or args[0] == "--json", str(result)


# -- control characters from outside ---------------------------------------------------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\x9b31mOK\r\n\u202e"


def test_printable_escapes_every_control_character() -> None:
    shown = printable(EVIL + "\t")
    assert shown == "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1H\\x9b31mOK\\x0d\\x0a\\u202e\\x09"
    assert printable("a\tb\nc\rd", multiline=True) == "a\tb\nc\\x0dd"
    assert printable("tag-1.0 ünïcode ✓") == "tag-1.0 ünïcode ✓"


def _hostile_registry(fake: FakeRegistry) -> None:
    """Every answer carries escape sequences: error codes and messages, tags, a realm; the
    blobs of evil/blob:1 fail with them (a progress line shows that failure)."""
    error = {"errors": [{"code": "MANIFEST_UNKNOWN" + EVIL, "message": EVIL, "detail": EVIL}]}
    image = build_image(seed=11, layers=1, layer_size=512)

    def answer(request: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if request.path == "/v2/":
            return 200, {}, b"{}"
        if request.path == "/v2/evil/blob/manifests/1":
            headers = {
                "Content-Type": image.manifest_media_type,
                "Docker-Content-Digest": image.manifest_digest,
            }
            return 200, headers, image.manifest_bytes
        if request.path == "/v2/evil/app/tags/list":
            body = {"name": "evil/app", "tags": ["1.0", "\x1b[2J" + "x" * 3, "ok\x07"]}
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if request.path.startswith("/v2/evil/realm/"):
            realm = f'Bearer realm="http://127.0.0.1:9/tok{EVIL[:9]}",service="s{EVIL[:9]}"'
            return 401, {"WWW-Authenticate": realm}, b""
        return 404, {"Content-Type": "application/json"}, json.dumps(error).encode()

    fake.fallback = answer


def test_registry_text_reaches_the_terminal_without_its_escape_sequences(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    _hostile_registry(fake_registry)
    host = fake_registry.host
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(
        json.dumps(
            {
                "sources": [
                    {"registry": host, "plain_http": True, "repositories": [{"name": "evil/app"}]}
                ]
            }
        )
    )
    store = f"file://{tmp_path / 'store'}"
    # each command with the exit status it must end with: every inspect and pull meets an error
    # (1); a sync, dry run or not, fails on the tag whose manifest the registry refuses (1; the
    # invalid tags are skipped with a warning)
    commands: list[tuple[list[str], int]] = [
        (["inspect", f"{host}/evil/app:1.0"], 1),
        (["pull", f"{host}/evil/app", "--include", "."], 1),
        (["inspect", f"{host}/evil/realm:1"], 1),
        (["pull", f"{host}/evil/blob:1"], 1),
        (["sync", "--dry-run", str(sync_file)], 1),
        (["sync", str(sync_file)], 1),
    ]
    runs = [
        (run_cli(*verbosity, "--retries", "0", *args, home=tmp_path, store=store), code)
        for verbosity in ((), ("-v",), ("--json",))
        for args, code in commands
    ]
    for result, code in runs:
        output = result.stdout + result.stderr
        for control in ("\x1b", "\x07", "\x9b", "\r", "\u202e"):
            assert control not in output, f"{control!r} reached the terminal:\n{result}"
        assert result.returncode == code, str(result)
        if "--json" in result.args:
            # The document on stdout is machine output: json.dumps writes every control
            # character as a \uXXXX escape, so the raw bytes checked above carry no ESC/BEL even
            # though the decoded strings may hold the registry's text as it came (error messages
            # do; tags are shown escaped). That is acceptable for JSON; what must hold is that the
            # output parses and the registry's text is in it, not dropped.
            document = json.dumps(result.json(), ensure_ascii=False)
            assert "pwned" in document or "xxx" in document, str(result)
    # the text was shown (escaped), not dropped
    shown = "\n".join(r.stderr for r, _ in runs if "--json" not in r.args)
    assert "\\x1b]0;pwned\\x07" in shown
    assert "\\x1b[2Jxxx" in shown or "\\x1b[2Jxxx" in "\n".join(r.stdout for r, _ in runs)


# -- the --plain-http hint -------------------------------------------------------------------------


def test_no_plain_http_hint_after_a_mid_body_break_on_a_plain_http_registry(
    seeded_registry: str,
    registry: RegistryServer,
    fault_proxy_factory: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    seed = open_store(f"file://{tmp_path / 'big'}")
    put_image(seed, "team/big", "1", build_image(seed=9, layers=1, layer_size=200_000))
    pushed = run_cli(
        "push",
        "store:team/big:1",
        f"{seeded_registry}/team/big:1",
        home=tmp_path,
        store=f"file://{tmp_path / 'big'}",
    )
    assert pushed.returncode == 0, str(pushed)
    proxy = fault_proxy_factory(registry)
    proxy.cut_response("/blobs/sha256:", after_bytes=1000, times=None)
    result = run_cli(
        "--retries",
        "1",
        "pull",
        f"{proxy.host}/team/big:1",
        home=tmp_path,
        store=f"file://{tmp_path / 'dst'}",
    )
    assert result.returncode == 1, str(result)
    error = [line for line in result.stderr.splitlines() if line.startswith("regstore: error:")]
    assert len(error) == 1 and "broke while reading the body" in error[0], str(result)
    assert "--plain-http" not in error[0]
    assert "run the command again" in error[0]


def test_the_plain_http_hint_when_an_https_request_meets_plain_http(
    fake_registry: FakeRegistry,
) -> None:
    fake_registry.expect("GET", "/v2/", status=200, json={}, times=None)
    with (
        Client(fake_registry.host, plain_http=False, retries=0) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.ping()
    assert caught.value.http is not None and caught.value.http.url.startswith("https://")
    assert "--plain-http" in hint_for(caught.value)
    assert "--ca-cert" not in hint_for(caught.value)


# -- an https registry naming a plain-http token realm ---------------------------------------------


def _tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the CA bundle that verifies it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regstore realm test CA")])

    def certificate(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if ca:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256())

    ca = certificate(ca_name, ca_key.public_key(), ca=True)
    cert = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        key.public_key(),
        ca=False,
    )
    ca_path, chain = directory / "ca.pem", directory / "server.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context, ca_path


class TLSFakeRegistry(FakeRegistry):
    """The scripted fake registry, served over HTTPS."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}"


@pytest.fixture
def https_registry_with_http_realm(
    tmp_path: Path, fake_registry: FakeRegistry
) -> Iterator[tuple[TLSFakeRegistry, FakeRegistry, Path]]:
    """(an HTTPS fake registry whose realm is on the plain-HTTP fake, that fake, the CA)."""
    context, ca = _tls_context(tmp_path)
    registry = TLSFakeRegistry(context).start()
    realm = f"{fake_registry.url}/token"
    registry.expect(
        "GET",
        "/v2/team/app/manifests/1",
        status=401,
        times=None,
        headers={"WWW-Authenticate": f'Bearer realm="{realm}",scope="repository:team/app:pull"'},
    )
    fake_registry.expect("GET", "/token", json={"token": "t0k"}, times=None, query=ANY_QUERY)
    try:
        yield registry, fake_registry, ca
    finally:
        registry.stop()


def test_an_https_registry_cannot_send_the_password_to_a_plain_http_realm(
    https_registry_with_http_realm: tuple[TLSFakeRegistry, FakeRegistry, Path],
) -> None:
    registry, realm_host, ca = https_registry_with_http_realm
    client = Client(
        registry.host,
        plain_http=False,
        verify=str(ca),
        username="u",
        password="hunter2-password",
        retries=0,
    )
    with client, pytest.raises(InsecureRealmError) as caught:
        client.get_image_manifest("team/app", "1")
    assert realm_host.requests == []  # nothing reached the cleartext realm
    assert isinstance(caught.value, AuthenticationError)
    message = str(caught.value)
    assert "plain-HTTP token realm" in message and realm_host.url in message
    assert "\n" not in message and "hunter2" not in message
    assert "--insecure" in hint_for(caught.value)
    assert "check the credentials" not in hint_for(caught.value)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_plain_http_realm_is_followed_without_tls_verification_anyway(
    https_registry_with_http_realm: tuple[TLSFakeRegistry, FakeRegistry, Path],
) -> None:
    registry, realm_host, _ = https_registry_with_http_realm
    client = Client(
        registry.host, plain_http=False, verify=False, username="u", password="pw", retries=0
    )
    with client, pytest.raises(AuthenticationError) as caught:
        client.get_image_manifest("team/app", "1")
    assert not isinstance(caught.value, InsecureRealmError)
    assert len(realm_host.requests_to("GET", "/token")) == 1  # the --insecure user's choice


def test_a_plain_http_registry_may_use_a_plain_http_realm(
    fake_registry_factory: Callable[[], FakeRegistry],
) -> None:
    registry, realm_host = fake_registry_factory(), fake_registry_factory()
    registry.expect(
        "GET",
        "/v2/team/app/manifests/1",
        status=401,
        times=None,
        headers={"WWW-Authenticate": f'Bearer realm="{realm_host.url}/token",service="reg"'},
    )
    realm_host.expect("GET", "/token", json={"token": "t0k"}, times=None, query=ANY_QUERY)
    client = Client(registry.host, username="u", password="p", retries=0)
    with client, pytest.raises(AuthenticationError) as caught:
        client.get_image_manifest("team/app", "1")
    assert not isinstance(caught.value, InsecureRealmError)
    assert len(realm_host.requests_to("GET", "/token")) >= 1


def test_the_store_url_hint_only_where_the_store_s_medium_failed() -> None:
    # gc's refusal of a store with an unreadable manifest said "check the store URL ... and
    # that it is writable": it says what to do itself
    refusal = StoreError("cannot collect garbage: manifest x of a is unreadable; run verify")
    assert hint_for(refusal) == ""
    try:
        try:
            raise PermissionError(13, "Permission denied", "/srv/store/x")
        except OSError as exc:
            raise StoreError("cannot write /srv/store/x") from exc
    except StoreError as failed:
        assert "check the store URL" in hint_for(failed)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOSPC, "file system is full"),
        (errno.EDQUOT, "file system is full"),
        (errno.EROFS, "mounted read-only"),
    ],
)
def test_a_full_or_read_only_store_is_told_as_such(code: int, hint: str) -> None:
    # a full disk said "check the store URL ... and that it is writable": the URL was right and
    # the store writable; `regstore gc` frees what interrupted writes left
    try:
        try:
            raise OSError(code, os.strerror(code), "/srv/store/blobs/x")
        except OSError as exc:
            raise StoreError("cannot write blob x") from exc
    except StoreError as failed:
        assert hint in hint_for(failed)
        assert "check the store URL" not in hint_for(failed)


def test_a_registry_too_slow_is_told_as_such() -> None:
    from regstore.client.errors_map import Operation, SlowBodyError, transport_error

    op = Operation("manifest", "fetching manifest team/app:1 from r.example")
    slow = transport_error(op, "GET", "http://r.example/v2/", SlowBodyError(10, 418, 20.0))
    assert "registry too slow: 10 of 418 bytes in 20 s" in str(slow)
    assert "sends too slowly" in hint_for(slow)


def test_a_failure_at_docker_hub_says_a_bare_name_went_there() -> None:
    # `regstore inspect team/app:1.2` meant the store's image: it went to Docker Hub, and the
    # hint asked whether "the registry" was running
    from regstore.errors import HTTPContext

    url = "https://registry-1.docker.io/v2/team/app/manifests/1.2"
    down = TransportError("fetching manifest team/app:1.2", http=HTTPContext("GET", url))
    assert "store:NAME:TAG names the store's" in hint_for(down)
    local = TransportError("x", http=HTTPContext("GET", "http://127.0.0.1:5000/v2/"))
    assert "Docker Hub" not in hint_for(local)


def test_a_blob_the_source_states_at_another_size_is_not_worth_running_again() -> None:
    stated = DigestMismatchError(
        "blob sha256:aa as its source serves it",
        expected="sha256:aa",
        expected_size=3010,
        actual_size=3000,
    )
    assert "will not help" in hint_for(stated)
    damaged = DigestMismatchError("blob sha256:aa", expected="sha256:aa", actual="sha256:bb")
    assert "run the command again" in hint_for(damaged)


def test_a_read_only_registry_and_a_body_cap_get_a_hint() -> None:
    # 405 on a blob upload of a read-only registry, 413 from a proxy capping bodies: both were
    # "Received unexpected HTTP status" with no hint (the README's --chunk-size advice unsaid)
    from regstore.errors import HTTPContext, UnexpectedHTTPStatusError

    assert "read-only" in hint_for(UnexpectedHTTPStatusError(405, what="starting a blob upload"))
    assert "--chunk-size" in hint_for(UnexpectedHTTPStatusError(413, what="uploading a chunk"))
    # a manifest is one request: smaller chunks cannot help
    url = "https://r.example/v2/team/app/manifests/1"
    manifest_put = UnexpectedHTTPStatusError(413, http=HTTPContext("PUT", url, 413))
    assert "--chunk-size" not in hint_for(manifest_put)
    assert "below this manifest's size" in hint_for(manifest_put)
    assert hint_for(UnexpectedHTTPStatusError(418)) == ""


def test_every_json_error_says_what_to_try(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A usage error, a sync file's error and an interrupt had ``"hint": null`` in --json,
    though each has something to try (the text output's usage lines say where help is)."""
    from regstore.cli.app import AppState
    from regstore.cli.output import INTERRUPTED_HINT

    home = tmp_path / "home"
    usage = run_cli("--json", "pull", home=home)
    assert usage.returncode == 2, usage
    assert usage.json()["error"]["type"] == "UsageError"
    assert usage.json()["error"]["hint"] == "`regstore pull --help` shows its usage"

    bad_filter = run_cli("--json", "pull", "127.0.0.1:9/a", "--semver", "bogus", home=home)
    assert bad_filter.returncode == 2, bad_filter
    assert bad_filter.json()["error"]["hint"] == "`regstore pull --help` shows its usage"

    sync = tmp_path / "s.yaml"
    sync.write_text("sources:\n  - registry: 127.0.0.1:9\n    bogus: 1\n")
    bad = run_cli("--json", "sync", str(sync), home=home)
    assert bad.returncode == 2, bad
    assert bad.json()["error"]["type"] == "SyncFileError"
    assert "fix the sync file" in bad.json()["error"]["hint"]

    def interrupted(self: AppState, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(AppState, "store", interrupted)
    stopped = run_cli("--json", "ls", home=home, store=str(tmp_path / "store"))
    assert stopped.returncode == 130, stopped
    assert stopped.json()["error"]["type"] == "Interrupted"
    assert stopped.json()["error"]["hint"] == INTERRUPTED_HINT
    assert f"try: {INTERRUPTED_HINT}" in stopped.stderr
