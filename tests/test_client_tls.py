"""HTTPS: the client verifies certificates by default, trusts a CA bundle when given one, and
skips verification only when told to — against the real registry serving TLS on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regstore import open_store
from regstore.client import Client
from regstore.errors import TransportError
from regstore.manifest import Manifest
from regstore.testing.builders import build_image
from tests.support.cli import put_image, run_cli
from tests.support.engine import seed_registry
from tests.support.ports import ServerStartError, free_port
from tests.support.registry import RegistryServer


def _wait_for_tls(url: str, ca: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerStartError(f"registry exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, verify=str(ca), timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"{url} did not answer within {timeout} s")
        time.sleep(0.05)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regstore test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real registry on https://127.0.0.1:PORT; yields (host, CA bundle path)."""
    ca, cert, key = _certificates(tmp_path)
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: the registry reads it as its config
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {
                    "filesystem": {"rootdirectory": str(tmp_path / "storage")},
                    "delete": {"enabled": True},
                },
                "http": {
                    "addr": f"127.0.0.1:{port}",
                    "secret": "s",
                    "tls": {"certificate": str(cert), "key": str(key)},
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REGISTRY_"))}
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=log, env=env
    )
    try:
        _wait_for_tls(f"https://127.0.0.1:{port}/v2/", ca, proc)
        yield f"127.0.0.1:{port}", ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# verify=False is meant to be loud; the warning it raises is expected here
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_with_a_ca_bundle_works_and_unknown_cas_are_refused(
    tls_registry: tuple[str, Path],
) -> None:
    host, ca = tls_registry
    trusted = Client(f"https://{host}", verify=str(ca))
    trusted.ping()
    built = build_image(layers=1, layer_size=1024, seed=300, media="oci")
    for digest, data in built.blobs.items():
        session = trusted.initiate_blob_upload("tls/img")
        trusted.upload_blob(session.location, data, len(data), digest)
    manifest = Manifest.parse(built.manifest_bytes, built.manifest_media_type)
    trusted.put_image_manifest("tls/img", "1", manifest)
    assert trusted.get_image_manifest("tls/img", "1").raw == built.manifest_bytes

    with pytest.raises(TransportError) as info:
        Client(f"https://{host}", retries=0).ping()  # system CAs only: not ours
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower()

    insecure = Client(f"https://{host}", verify=False)
    assert insecure.get_image_manifest("tls/img", "1").raw == built.manifest_bytes


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_many_heads_at_once_keep_the_same_trust(
    tls_registry: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, ca = tls_registry
    trusted = Client(f"https://{host}", verify=str(ca))
    digests = {}
    for i in range(6):
        built = build_image(layers=1, layer_size=512, seed=320 + i, media="oci")
        for digest, data in built.blobs.items():
            session = trusted.initiate_blob_upload("tls/many")
            trusted.upload_blob(session.location, data, len(data), digest)
        manifest = Manifest.parse(built.manifest_bytes, built.manifest_media_type)
        trusted.put_image_manifest("tls/many", f"v{i}", manifest)
        digests[f"v{i}"] = built.manifest_digest
    tags = list(digests)

    for client in (
        Client(f"https://{host}", verify=str(ca)),
        Client(f"https://{host}", verify=False),
    ):
        found = client.head_manifests("tls/many", tags)
        assert {tag: info.digest for tag, info in found.items() if info} == digests

    # the CA bundle of the environment counts as it does for every other request
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    assert len(Client(f"https://{host}").head_manifests("tls/many", tags)) == len(tags)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")

    # an unknown CA: nothing is learned, nothing raised, nothing trusted
    untrusted = Client(f"https://{host}", retries=0)
    assert untrusted.head_manifests("tls/many", tags) == {}


# (the sync at its end speaks TLS unverified on purpose: urllib3 warns of it)
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_the_cli_speaks_tls_to_a_loopback_registry_given_its_ca(
    tls_registry: tuple[str, Path], tmp_path: Path
) -> None:
    # a loopback registry is spoken to in plain HTTP unless told otherwise, and the command
    # line had no way to: --ca-cert was ignored for it, and a TLS registry answered "400"
    host, ca = tls_registry
    built = build_image(seed=77, layers=1, layer_size=512, media="oci")
    store = tmp_path / "store"
    put_image(open_store(str(store)), "tls/app", "1", built)
    pushed = run_cli(
        "--store",
        str(store),
        "--ca-cert",
        str(ca),
        "push",
        "tls/app:1",
        f"{host}/tls/app:1",
        home=tmp_path / "home",
    )
    assert pushed.returncode == 0, pushed.stderr
    with Client(f"https://{host}", verify=str(ca)) as client:
        assert client.head_manifest("tls/app", "1") is not None
    # and where TLS is spoken unverified, it is said so
    sync = tmp_path / "sync.json"
    source = {"registry": host, "plain_http": False, "tls_verify": False}
    sync.write_text(
        json.dumps(
            {
                "target": {"store": (tmp_path / "mirror").as_uri()},
                "sources": [{**source, "repositories": [{"name": "tls/app"}]}],
            }
        )
    )
    synced = run_cli("sync", str(sync), home=tmp_path / "home")
    assert synced.returncode == 0, synced.stderr
    assert f"TLS certificates of {host} are NOT verified" in synced.stderr


def test_insecure_warns_only_where_tls_is_spoken(registry: RegistryServer, tmp_path: Path) -> None:
    # --insecure warned that certificates were not verified on a plain-HTTP connection
    built = build_image(seed=78, layers=1, layer_size=512, media="oci")
    seed_registry(registry.url, "plain/app", "1", built)
    pulled = run_cli(
        "--store",
        str(tmp_path / "store"),
        "--insecure",
        "pull",
        f"{registry.host}/plain/app:1",
        home=tmp_path / "home",
    )
    assert pulled.returncode == 0, pulled.stderr
    assert "NOT verified" not in pulled.stderr


def test_plain_http_to_a_tls_registry_is_hinted_at(
    tls_registry: tuple[str, Path], tmp_path: Path
) -> None:
    # it ended with a bare "400", nothing said the registry speaks HTTPS
    host, _ = tls_registry
    pulled = run_cli(
        "--store", str(tmp_path / "store"), "pull", f"{host}/any/app:1", home=tmp_path / "home"
    )
    assert pulled.returncode != 0
    assert "400" in pulled.stderr
    assert "--ca-cert FILE" in pulled.stderr


def test_a_no_op_re_sync_over_tls_asks_early_with_the_clients_trust(
    tls_registry: tuple[str, Path], tmp_path: Path
) -> None:
    # a sync asks its sources before it makes their clients (engine/early.py): over TLS with
    # the trust the client would have, and the warning of --insecure said though no client
    # is ever made
    host, ca = tls_registry
    trusted = Client(f"https://{host}", verify=str(ca))
    store = open_store(str(tmp_path / "mirror"))
    for i in range(10):
        built = build_image(layers=1, layer_size=256, seed=340 + i, media="oci")
        for digest, data in built.blobs.items():
            session = trusted.initiate_blob_upload("tls/early")
            trusted.upload_blob(session.location, data, len(data), digest)
        trusted.put_image_manifest(
            "tls/early", f"v{i}", Manifest.parse(built.manifest_bytes, built.manifest_media_type)
        )
        put_image(store, "tls/early", f"v{i}", built)
    store.close()
    sync = tmp_path / "sync.json"
    probe = (  # whether requests was ever imported: no client made
        "import atexit, sys\n"
        "atexit.register(lambda: print('requests:', 'requests' in sys.modules, file=sys.stderr))\n"
        "from regstore.cli import main\n"
        "main()\n"
    )
    for source, options, warned in [
        ({"ca_cert": str(ca)}, [], False),
        ({"tls_verify": False}, [], True),
        ({}, ["--insecure"], True),
    ]:
        sync.write_text(json.dumps({
            "target": {"store": (tmp_path / "mirror").as_uri()},
            "sources": [{"registry": host, "plain_http": False, **source,
                         "repositories": [{"name": "tls/early"}]}]}))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        done = subprocess.run(
            [sys.executable, "-c", probe, *options, "--json", "sync", str(sync)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        statuses = {o["status"] for o in json.loads(done.stdout)["images"]}
        assert statuses == {"skipped"}
        assert "requests: False" in done.stderr  # everything was learned early
        assert (f"TLS certificates of {host} are NOT verified" in done.stderr) is warned

    # a CA the client would not trust: nothing learned early, and the client's own error
    sync.write_text(json.dumps({
        "target": {"store": (tmp_path / "mirror").as_uri()},
        "sources": [{"registry": host, "plain_http": False,
                     "repositories": [{"name": "tls/early"}]}]}))  # fmt: skip
    failed = run_cli("--json", "--retries", "0", "sync", str(sync), home=tmp_path / "home")
    assert failed.returncode != 0
    assert "certificate" in failed.stdout + failed.stderr
