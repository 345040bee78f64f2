"""Plugin discovery: built-in backends, blocking, autoload, observers, credentials, and a real
third-party backend distribution installed by pip and found through its entry point.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import regstore
from regstore import plugins
from regstore.errors import BackendNotFoundError, PluginLoadError, StoreError
from regstore.events import EventKind, TransferEvent
from regstore.hookspecs import PROJECT, DiscoverySpec, StoreSpec, hookimpl
from regstore.store import ObjectStore, open_store

ENV_VARS = ("REGSTORE_DISABLE_PLUGIN_AUTOLOAD", "REGSTORE_BLOCK_PLUGINS", "REGSTORE_TRACE_PLUGINS")
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plugin manager built for this test alone, from a clean environment."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


def event(kind: EventKind = EventKind.STARTED, **fields: Any) -> TransferEvent:
    return TransferEvent(kind=kind, operation="pull", image="docker.io/library/x:1",
                         digest=DIGEST, **fields)  # fmt: skip


# -- built-in backends ---------------------------------------------------------------------


def test_builtin_backends_are_listed_with_their_distribution() -> None:
    found = plugins.backends()
    version = importlib.metadata.version("regstore")
    for scheme, module in [("memory", "regstore.backends.memory"),
                           ("file", "regstore.backends.filesystem")]:  # fmt: skip
        info = found[scheme]
        assert info.scheme == scheme
        assert info.distribution == "regstore"
        assert info.version == version
        assert info.plugin == scheme
        assert info.entry_point == module
        assert info.description
        assert callable(info.factory)
        assert info.as_dict() == {
            "scheme": scheme,
            "description": info.description,
            "plugin": scheme,
            "distribution": "regstore",
            "version": version,
            "entry_point": module,
        }
        json.dumps(info.as_dict())


def test_builtins_are_still_declared_in_the_entry_point_group() -> None:
    """The built-ins register directly (see test_plugin_loading.py); their entry points stay
    declared for tools that list the group, and loading skips them."""
    group = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=PROJECT)}
    assert group["memory"] == "regstore.backends.memory"
    assert group["file"] == "regstore.backends.filesystem"
    assert {name: group[name] for name in plugins.BUILTIN_PLUGINS} == plugins.BUILTIN_PLUGINS


def test_backends_returns_a_copy() -> None:
    found = plugins.backends()
    found.clear()
    assert "memory" in plugins.backends()


def test_backend_factory_is_case_insensitive() -> None:
    assert plugins.backend_factory("MEMORY") is plugins.backends()["memory"].factory


def test_open_store_with_a_builtin_backend() -> None:
    store = open_store("memory://test-plugins-open")
    try:
        assert isinstance(store, ObjectStore)
        assert store.describe()["url"] == "memory://test-plugins-open"
        assert store.repositories() == []
    finally:
        store.close()


def test_unknown_scheme() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        open_store("nosuch://x")
    assert info.value.scheme == "nosuch"
    assert info.value.hint == ""
    assert isinstance(info.value, StoreError)
    assert "'nosuch'" in str(info.value)


def test_s3_without_its_plugin_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocking the plugin makes this hold whether or not regstore-s3 is installed.
    monkeypatch.setenv("REGSTORE_BLOCK_PLUGINS", "s3")
    plugins.reset_plugin_manager()
    assert "s3" not in plugins.backends()
    with pytest.raises(BackendNotFoundError) as info:
        open_store("s3://bucket/prefix")
    assert info.value.scheme == "s3"
    assert "pip install regstore-s3" in str(info.value)
    assert "pip install regstore-s3" in info.value.hint


@pytest.mark.parametrize("scheme", ["az", "abfs"])
def test_azure_without_its_plugin_names_the_package(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGSTORE_BLOCK_PLUGINS", "azure")  # the entry point's name
    plugins.reset_plugin_manager()
    assert scheme not in plugins.backends()
    with pytest.raises(BackendNotFoundError) as info:
        open_store(f"{scheme}://container/prefix")
    assert "pip install regstore-azure" in info.value.hint


@pytest.mark.parametrize("scheme", ["gs", "gcs"])
def test_other_known_clouds_explain_themselves(scheme: str) -> None:
    with pytest.raises(BackendNotFoundError) as info:
        open_store(f"{scheme}://bucket")
    assert info.value.hint and "regstore.testing" in info.value.hint


def test_blocking_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSTORE_BLOCK_PLUGINS", " memory , nothing-such ")
    plugins.reset_plugin_manager()
    found = plugins.backends()
    assert "memory" not in found and "file" in found
    assert plugins.get_plugin_manager().is_blocked("memory")
    with pytest.raises(BackendNotFoundError):
        open_store("memory://x")


def test_disable_autoload_keeps_builtins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSTORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset_plugin_manager()
    found = plugins.backends()
    assert {"memory", "file"} <= set(found)
    assert {info.distribution for info in found.values()} == {"regstore"}
    pm = plugins.get_plugin_manager()
    for status in plugins.plugin_statuses():
        assert status.ok == (status.distribution == "regstore"), status
    # every entry point of another distribution is blocked by name
    for ep in importlib.metadata.entry_points(group=PROJECT):
        if ep.dist is not None and ep.dist.metadata["Name"] != "regstore":
            assert pm.is_blocked(ep.name)
            assert not pm.has_plugin(ep.name)


@pytest.mark.parametrize("value", ["", "0", "false", "no", "FALSE"])
def test_falsy_flags_do_not_disable_autoload(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("REGSTORE_DISABLE_PLUGIN_AUTOLOAD", value)
    plugins.reset_plugin_manager()
    pm = plugins.get_plugin_manager()
    for ep in importlib.metadata.entry_points(group=PROJECT):
        assert not pm.is_blocked(ep.name)


def test_the_global_manager_is_built_once_and_reset() -> None:
    pm = plugins.get_plugin_manager()
    assert plugins.get_plugin_manager() is pm
    assert pm.project_name == PROJECT
    assert pm.hook.regstore_register_backends.spec is not None
    plugins.reset_plugin_manager()
    assert plugins.get_plugin_manager() is not pm


def test_store_managers_are_separate_and_carry_the_store_specs() -> None:
    a, b = plugins.new_store_manager(), plugins.new_store_manager()
    assert a is not b
    assert a.get_plugins() == set()
    assert a.hook.regstore_store_get_manifest.spec is not None
    assert not hasattr(a.hook, "regstore_register_backends")
    for name in dir(StoreSpec):
        if name.startswith("regstore_"):
            assert getattr(a.hook, name).spec is not None


# -- in-process plugins ----------------------------------------------------------------------


class InProcessBackends:
    """Registers a scheme backed by the memory backend, as a plugin module would."""

    @hookimpl
    def regstore_register_backends(self, register: Any) -> None:
        from regstore.backends.memory import open_backend

        def factory(url: str, **options: Any) -> Any:
            self.calls.append((url, options))
            return open_backend(url.replace("inproc://", "memory://", 1), **options)

        register("InProc", factory, "test backend")

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []


def test_register_plugin_adds_a_backend_and_refreshes_the_listing() -> None:
    assert "inproc" not in plugins.backends()  # cached now
    plugin = InProcessBackends()
    plugins.register_plugin(plugin, name="inproc-plugin")
    info = plugins.backends()["inproc"]  # the scheme is lower-cased
    assert (info.plugin, info.distribution, info.version, info.entry_point) == (
        "inproc-plugin", None, None, None,
    )  # fmt: skip
    assert info.description == "test backend"
    store = open_store("inproc://test-plugins-inproc?layout=oci")
    try:
        assert plugin.calls == [("inproc://test-plugins-inproc", {"layout": "oci"})]
        assert store.describe()["url"] == "inproc://test-plugins-inproc?layout=oci"
    finally:
        store.close()


def _registering(*schemes: str) -> object:
    """A plugin registering ``schemes``, each backed by the memory backend."""

    class Registering:
        @hookimpl
        def regstore_register_backends(self, register: Any) -> None:
            from regstore.backends.memory import open_backend

            for scheme in schemes:
                register(scheme, lambda url, **o: open_backend("memory://" + url.split("//")[1]))

    return Registering()


def test_a_scheme_registered_twice_breaks_only_the_plugins_that_claim_it() -> None:
    # It raised from plugins.backends(): every store (file:// and memory:// too) and
    # `regstore plugins`, the command that diagnoses it, failed on one bad plugin.
    plugins.register_plugin(_registering("memory", "mine"), name="takes-a-builtin")
    plugins.register_plugin(_registering("dup", "one"), name="dup-a")
    plugins.register_plugin(_registering("dup", "two"), name="dup-b")
    plugins.register_plugin(_registering("fine"), name="innocent")
    found = plugins.backends()
    assert found["memory"].plugin == "memory"  # the built-in keeps its scheme
    assert found["fine"].plugin == "innocent"
    assert not {"mine", "dup", "one", "two"} & set(found)
    statuses = {s.name: s for s in plugins.plugin_statuses()}
    assert statuses["innocent"].ok and statuses["memory"].ok
    taker = statuses["takes-a-builtin"]
    assert taker.status == "broken" and taker.schemes == ("memory", "mine")
    assert "the URL scheme 'memory' of the built-in plugin 'memory'" in (taker.cause or "")
    assert "REGSTORE_BLOCK_PLUGINS=takes-a-builtin" in (taker.cause or "")
    for name, other in (("dup-a", "dup-b"), ("dup-b", "dup-a")):
        assert statuses[name].status == "broken"
        assert f"the URL scheme 'dup', as '{other}' does too" in (statuses[name].cause or "")
    # a request for a scheme of theirs names why; the rest works
    for scheme, plugin in (("dup", "dup-a"), ("mine", "takes-a-builtin"), ("two", "dup-b")):
        with pytest.raises(PluginLoadError, match=plugin) as info:
            open_store(f"{scheme}://x")
        assert info.value.scheme == scheme
    with open_store("memory://clash-test") as store, open_store("fine://clash-fine") as fine:
        assert store.repositories() == [] and fine.repositories() == []


@pytest.mark.parametrize("scheme", ["dir_store", "2go", "a b", "", "x://"])
def test_a_plugin_registering_no_url_scheme_is_broken(scheme: str) -> None:
    # listed by `regstore plugins`, yet no URL could ever open it
    plugins.register_plugin(_registering(scheme), name="bad-scheme")
    assert scheme.lower() not in plugins.backends()
    [status] = [s for s in plugins.plugin_statuses() if s.name == "bad-scheme"]
    assert status.status == "broken" and "is no URL scheme" in (status.cause or "")


def test_an_observer_receives_events() -> None:
    class Observer:
        def __init__(self) -> None:
            self.events: list[TransferEvent] = []

        @hookimpl
        def regstore_transfer_event(self, event: TransferEvent) -> None:
            self.events.append(event)

    assert not plugins.has_event_observers()
    observer = Observer()
    plugins.register_plugin(observer, name="observer")
    assert plugins.has_event_observers()
    sent = [
        event(EventKind.STARTED, total=10),
        event(EventKind.PROGRESS, offset=4, nbytes=4),
        event(EventKind.VERIFIED, total=10, offset=10),
        event(EventKind.FAILED, error="boom"),
    ]
    for e in sent:
        plugins.emit_event(e)
    assert observer.events == sent
    # a second observer gets them too; return values are ignored
    second = Observer()
    plugins.register_plugin(second)
    plugins.emit_event(sent[0])
    assert observer.events[-1] is sent[0] and second.events == [sent[0]]


def test_emit_event_without_observers_is_a_no_op() -> None:
    plugins.emit_event(event())


def test_credentials_for_asks_providers_first_answer_wins() -> None:
    asked: list[tuple[str, str]] = []

    class Provider:
        def __init__(self, label: str, answers: dict[str, tuple[str, str]]) -> None:
            self.label, self.answers = label, answers

        @hookimpl
        def regstore_credentials(self, registry: str) -> tuple[str, str] | None:
            asked.append((self.label, registry))
            return self.answers.get(registry)

    assert plugins.credentials_for("ghcr.io") is None
    plugins.register_plugin(Provider("a", {"ghcr.io": ("alice", "s1"),
                                           "localhost:5000": ("a", "p")}), name="a")  # fmt: skip
    plugins.register_plugin(Provider("b", {"localhost:5000": ("bob", "s2")}), name="b")
    # pluggy calls the later registration first; it answers for localhost:5000 and stops there
    assert plugins.credentials_for("localhost:5000") == ("bob", "s2")
    assert asked == [("b", "localhost:5000")]
    asked.clear()
    assert plugins.credentials_for("ghcr.io") == ("alice", "s1")
    assert asked == [("b", "ghcr.io"), ("a", "ghcr.io")]
    assert plugins.credentials_for("quay.io") is None


def test_trace_logs_hook_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REGSTORE_TRACE_PLUGINS", "1")
    plugins.reset_plugin_manager()
    with caplog.at_level(logging.DEBUG, logger="regstore.plugins"):
        plugins.credentials_for("ghcr.io")
    assert any("regstore_credentials" in r.getMessage() for r in caplog.records)


def test_discovery_spec_hooks_are_all_callable() -> None:
    pm = plugins.get_plugin_manager()
    for name in dir(DiscoverySpec):
        if name.startswith("regstore_"):
            assert getattr(pm.hook, name).spec is not None


# -- events (values carried by the event hook) ---------------------------------------------


def test_event_kinds_read_as_their_values() -> None:
    assert [k.value for k in EventKind] == [
        "started", "progress", "skipped", "mounted", "verified", "failed", "manifest", "warning",
        "planned",
    ]  # fmt: skip
    for kind in EventKind:
        assert str(kind) == kind.value
        assert f"{kind}" == kind.value
        assert kind == kind.value  # still a str
        assert EventKind(kind.value) is kind


def test_transfer_event_defaults_and_frozen() -> None:
    e = event()
    assert (e.total, e.offset, e.nbytes, e.media_type, e.tag, e.error) == (-1, 0, 0, "", None, None)
    with pytest.raises(AttributeError):
        e.offset = 3  # type: ignore[misc]
    assert e == event() and hash(e) == hash(event())


# -- a third-party backend, installed as its own distribution --------------------------------

DUMMY_DIST = "regstore-dummy-test"
DUMMY_MODULE = "regstore_dummy_test"
DUMMY_VERSION = "0.3.1"

DUMMY_SOURCE = '''\
"""A third-party regstore backend: the storage contract written against the hook specs alone."""

from __future__ import annotations

import io
import threading

from regstore.errors import (
    BlobNotFoundError, ImageManifestNotFoundError, LayerAlreadyExistsError, LayerLockedError,
    RepositoryNotFoundError,
)
from regstore.hookspecs import hookimpl
from regstore.storetypes import BlobState, BlobStatus


class _Reader(io.BytesIO):
    def __init__(self, data, offset):
        super().__init__(data[offset:])
        self.size = len(data)


class _Writer:
    def __init__(self, backend, digest):
        self.backend, self.digest = backend, digest
        self.buffer = backend.staged.setdefault(digest, bytearray())
        self.current_size = len(self.buffer)

    def write(self, data, /):
        self.buffer += data
        return len(data)

    def staged(self):
        yield bytes(self.buffer)

    def commit(self, size):
        with self.backend.lock:
            self.backend.blobs[self.digest] = bytes(self.backend.staged.pop(self.digest))
            self.backend.writing.discard(self.digest)

    def close(self):
        with self.backend.lock:
            self.backend.writing.discard(self.digest)

    def discard(self):
        with self.backend.lock:
            self.backend.staged.pop(self.digest, None)
            self.backend.writing.discard(self.digest)


class DummyBackend:
    def __init__(self, url, **options):
        self.url, self.options = url, options
        self.lock = threading.Lock()
        self.blobs, self.staged, self.writing = {}, {}, set()
        self.manifests = {}  # name -> {digest: (raw, media type)}
        self.tags = {}  # name -> {tag: digest}

    @hookimpl
    def regstore_store_get_manifest(self, name, reference):
        digest = self.tags.get(name, {}).get(reference, reference)
        try:
            return self.manifests[name][digest]
        except KeyError:
            raise ImageManifestNotFoundError(name, reference) from None

    @hookimpl
    def regstore_store_put_manifest(self, name, tag, raw, media_type, digest, partial):
        self.manifests.setdefault(name, {})[digest] = (bytes(raw), media_type)
        if tag is not None:
            self.tags.setdefault(name, {})[tag] = digest

    @hookimpl
    def regstore_store_list_repositories(self):
        return sorted(self.manifests)

    @hookimpl
    def regstore_store_list_tags(self, name):
        if name not in self.manifests:
            raise RepositoryNotFoundError(name)
        return sorted(self.tags.get(name, {}))

    @hookimpl
    def regstore_store_list_manifests(self, name):
        if name not in self.manifests:
            raise RepositoryNotFoundError(name)
        return sorted(self.manifests[name])

    @hookimpl
    def regstore_store_blob_status(self, digest):
        with self.lock:
            if digest in self.blobs:
                size = len(self.blobs[digest])
                return BlobStatus(BlobState.COMPLETE, size, size)
            if digest in self.writing:
                return BlobStatus(BlobState.WRITING, None, len(self.staged.get(digest, b"")))
            if digest in self.staged:
                return BlobStatus(BlobState.PARTIAL, None, len(self.staged[digest]))
            return BlobStatus(BlobState.ABSENT)

    @hookimpl
    def regstore_store_open_blob(self, digest, offset):
        with self.lock:
            if digest in self.writing:
                raise LayerLockedError(digest)
            if digest not in self.blobs:
                raise BlobNotFoundError(None, digest)
            return _Reader(self.blobs[digest], offset)

    @hookimpl
    def regstore_store_blob_writer(self, digest):
        with self.lock:
            if digest in self.blobs:
                raise LayerAlreadyExistsError(digest)
            if digest in self.writing:
                raise LayerLockedError(digest)
            self.writing.add(digest)
            return _Writer(self, digest)

    @hookimpl
    def regstore_store_wait_blob(self, digest, timeout):
        return digest in self.blobs

    @hookimpl
    def regstore_store_describe(self):
        return {"backend": "dummy", "options": self.options}


@hookimpl
def regstore_register_backends(register):
    """Register ``dummy://``."""
    register("dummy", DummyBackend, "a dummy backend from a separate distribution")
'''

# Runs in a fresh interpreter that sees the installed distribution. Prints one JSON line.
DUMMY_CHECK = textwrap.dedent(
    """
    import importlib.metadata, json, os
    from regstore import open_store, plugins
    from regstore.errors import BackendNotFoundError
    from regstore.digest import digest_bytes
    from regstore.manifest import Manifest

    out = {}
    dist = importlib.metadata.distribution("regstore-dummy-test")
    out["dist"] = [dist.metadata["Name"], dist.version]

    info = plugins.backends()["dummy"]
    out["info"] = info.as_dict()
    out["schemes"] = sorted(plugins.backends())

    store = open_store("dummy://x?color=blue", answer=42)
    out["describe"] = store.describe()
    layer = b"layer bytes " * 1000
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    for blob in (layer, config):
        writer = store.layer(digest_bytes(blob)).writer()
        writer.set_size(len(blob))
        writer.write(blob[:100])
        writer.write(blob[100:])
        writer.commit()
    raw = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_bytes(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_bytes(layer), "size": len(layer)}],
    }, indent=2).encode()
    written = store.write_manifest("team/app", "v1", Manifest.parse(raw))
    by_tag = store.manifest("team/app", "v1")
    by_digest = store.manifest("team/app", written)
    with store.layer(digest_bytes(layer)).reader() as reader:
        read_back = reader.read()
    out["roundtrip"] = {
        "digest": str(written),
        "expected_digest": digest_bytes(raw),
        "same_bytes": by_tag.raw == raw and by_digest.raw == raw,
        "layer_ok": read_back == layer,
        "tags": store.tags("team/app"),
        "repositories": store.repositories(),
    }
    store.close()

    os.environ["REGSTORE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    plugins.reset_plugin_manager()
    out["autoload_disabled"] = sorted(plugins.backends())
    del os.environ["REGSTORE_DISABLE_PLUGIN_AUTOLOAD"]

    os.environ["REGSTORE_BLOCK_PLUGINS"] = "dummy"
    plugins.reset_plugin_manager()
    out["blocked"] = sorted(plugins.backends())
    try:
        open_store("dummy://x")
        out["blocked_open"] = "opened"
    except BackendNotFoundError as exc:
        out["blocked_open"] = exc.scheme
    print(json.dumps(out))
    """
)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_dummy_wheel(project: Path, out_dir: Path) -> Path:
    """Build the dummy project's wheel (PEP 427) with the standard library alone.

    A setuptools build is not an option here: ``--no-build-isolation`` needs the ``wheel``
    package next to setuptools < 70.1 (absent on these machines), and an isolated build would
    download setuptools from the network on every run. A pure-Python wheel is a zip file with
    the module and its ``.dist-info``; pip installs it exactly like a published plugin.
    """
    dist_info = f"{DUMMY_MODULE}-{DUMMY_VERSION}.dist-info"
    files = {
        f"{DUMMY_MODULE}.py": (project / f"{DUMMY_MODULE}.py").read_bytes(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {DUMMY_DIST}\nVersion: {DUMMY_VERSION}\n"
            "Summary: a throwaway regstore backend for the plugin tests\n"
            "Requires-Dist: regstore\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: regstore-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": f"[{PROJECT}]\ndummy = {DUMMY_MODULE}\n".encode(),
        f"{dist_info}/top_level.txt": f"{DUMMY_MODULE}\n".encode(),
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{DUMMY_MODULE}-{DUMMY_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input",
         "--no-cache-dir", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dummy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where pip installed the ``regstore-dummy-test`` distribution.

    pip installs into a private ``--target`` directory that only the subprocesses of these
    tests put on their path, rather than into the running environment: nothing another test
    (or another xdist worker) sees changes while it is installed, an interrupted run leaves
    nothing behind, and no uninstall is needed. Discovery is the same: importlib.metadata
    finds the ``.dist-info`` on ``sys.path`` as it finds one in site-packages.
    """
    base = tmp_path_factory.mktemp("dummy-plugin")
    project = base / "project"
    project.mkdir()
    (project / f"{DUMMY_MODULE}.py").write_text(DUMMY_SOURCE)
    wheel = build_dummy_wheel(project, base)
    site = base / "site"
    result = pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / f"{DUMMY_MODULE}.py").is_file()
    return site


def run_with(site: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGSTORE_")}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120,
        check=False,
    )  # fmt: skip


def test_a_third_party_backend_distribution_is_discovered_and_works(dummy_site: Path) -> None:
    result = run_with(dummy_site, DUMMY_CHECK)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])

    assert out["dist"] == [DUMMY_DIST, DUMMY_VERSION]
    assert out["info"] == {
        "scheme": "dummy",
        "description": "a dummy backend from a separate distribution",
        "plugin": "dummy",
        "distribution": DUMMY_DIST,
        "version": DUMMY_VERSION,
        "entry_point": DUMMY_MODULE,
    }
    assert {"dummy", "memory", "file"} <= set(out["schemes"])
    # URL query parameters and keyword options both reach the factory
    assert out["describe"] == {
        "url": "dummy://x?color=blue",
        "backend": "dummy",
        "options": {"color": "blue", "answer": 42},
    }
    roundtrip = out["roundtrip"]
    assert roundtrip["digest"] == roundtrip["expected_digest"]
    assert roundtrip["same_bytes"] and roundtrip["layer_ok"]
    assert roundtrip["tags"] == ["v1"]
    assert roundtrip["repositories"] == ["team/app"]

    # the escape hatches, with a real third-party distribution installed
    assert "dummy" not in out["autoload_disabled"]
    assert {"memory", "file"} <= set(out["autoload_disabled"])
    assert "dummy" not in out["blocked"] and "memory" in out["blocked"]
    assert out["blocked_open"] == "dummy"


def test_the_dummy_distribution_is_invisible_without_its_path(dummy_site: Path) -> None:
    """The install did not leak into this environment (so other tests are unaffected)."""
    assert DUMMY_DIST not in {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert "dummy" not in plugins.backends()


BROKEN_CHECK = textwrap.dedent(
    """
    import json
    from regstore import open_store, plugins
    from regstore.errors import PluginLoadError

    out = {"schemes": sorted(plugins.backends())}
    out["broken"] = [s.as_dict() for s in plugins.broken_plugins()]
    with open_store("memory://broken-check") as store:
        out["memory"] = store.repositories()
    try:
        open_store("dummy://x")
        out["dummy"] = "opened"
    except PluginLoadError as exc:
        out["dummy"] = [exc.distribution, exc.version, exc.entry_point, str(exc)]
    print(json.dumps(out))
    """
)


def test_a_broken_third_party_plugin_is_listed_and_breaks_nothing_else(
    dummy_site: Path, tmp_path: Path
) -> None:
    """The installed dummy distribution with a module that raises on import: discovery goes on,
    the built-ins work, its own scheme explains itself, and blocking it by name silences it."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for entry in dummy_site.iterdir():
        if entry.name == "__pycache__":
            continue
        target = broken / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            target.write_text("raise ImportError('the dummy plugin is broken')\n")
    result = run_with(broken, BROKEN_CHECK)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"memory", "file"} <= set(out["schemes"]) and "dummy" not in out["schemes"]
    assert out["memory"] == []
    assert [b["name"] for b in out["broken"]] == ["dummy"]
    assert out["broken"][0]["distribution"] == DUMMY_DIST
    assert out["broken"][0]["error"] == "ImportError: the dummy plugin is broken"
    dist, version, entry_point, message = out["dummy"]
    assert (dist, version, entry_point) == (DUMMY_DIST, DUMMY_VERSION, DUMMY_MODULE)
    assert "the dummy plugin is broken" in message and "REGSTORE_BLOCK_PLUGINS=dummy" in message

    result = run_with(broken, BROKEN_CHECK, REGSTORE_BLOCK_PLUGINS="dummy")
    assert result.returncode != 0  # open_store("dummy://x") is now "not installed"
    assert "BackendNotFoundError" in result.stderr and "'dummy'" in result.stderr
    code = "from regstore import plugins; print(plugins.broken_plugins())"
    result = run_with(broken, code, REGSTORE_BLOCK_PLUGINS="dummy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_regstore_package_exposes_open_store() -> None:
    assert regstore.open_store is open_store


def test_a_backend_factory_that_fails_or_returns_no_backend_is_named() -> None:
    # "regstore: error: ZeroDivisionError: factory bug" named no scheme nor plugin; a dict
    # returned read as an unsupported operation of a real backend
    class Broken:
        @hookimpl
        def regstore_register_backends(self, register: Any) -> None:
            register("raising", lambda url, **o: 1 / 0)
            register("nothing", lambda url, **o: {"not": "a backend"})

    plugins.register_plugin(Broken(), name="broken-factories")
    with pytest.raises(StoreError) as raised:
        open_store("raising://x?secret=S")
    text = str(raised.value)
    assert "the raising:// backend (plugin 'broken-factories') failed to open" in text
    assert "ZeroDivisionError" in text and "secret=***" in text
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    with pytest.raises(StoreError, match="is a dict, which implements no store hook"):
        open_store("nothing://x")
