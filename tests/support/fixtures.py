"""pytest fixtures that start real servers on 127.0.0.1 (free ports, cleaned up afterwards).

Load with ``pytest_plugins = ["tests.support.fixtures"]`` in ``tests/conftest.py`` (or
``from tests.support.fixtures import *``; ``__all__`` lists the fixtures and the report hook),
or on the command line with ``-p tests.support.fixtures``.

Fixtures (function scope unless noted):

- ``registry`` → :class:`RegistryServer`, no auth.
- ``basic_registry`` → :class:`RegistryServer`, htpasswd auth (``.username``/``.password``).
- ``token_server`` → :class:`TokenServer` with user ``regstore``/``regstore-secret``.
- ``token_registry`` → :class:`RegistryServer` with token auth via ``token_server``
  (``.token_server`` is that server).
- ``registry_factory(**options)`` → start more registries; options are those of
  :class:`RegistryServer` plus, for ``auth="token"`` without ``token_server``:
  ``users``, ``anonymous_pull``, ``expires_in`` for an automatically started token server.
- ``token_server_factory(**options)`` → more :class:`TokenServer` instances.
- ``moto_server`` (session) → :class:`MotoServer` (a subprocess).
- ``s3_bucket`` → :class:`S3Bucket` ``(endpoint_url, bucket)``: a fresh, emptied-afterwards bucket.
- ``s3_registry`` → :class:`RegistryServer` storing in ``s3_bucket`` (root ``/registry``).
- ``fault_proxy_factory(upstream, **options)`` → :class:`FaultProxy`; ``upstream`` is a URL
  or anything with ``.url`` (a registry, a fake registry).
- ``fake_registry`` / ``fake_registry_factory()`` → :class:`FakeRegistry`.

When a test fails, the tail of every registry log it used is added to the failure report.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any, NamedTuple, Protocol

import pytest

from regstore.client import Client

from .fake_registry import FakeRegistry
from .moto_server import MotoServer
from .proxy import FaultProxy
from .registry import RegistryServer, S3Storage
from .token_server import TokenServer

__all__ = [
    "S3Bucket",
    "basic_registry",
    "fake_registry",
    "fake_registry_factory",
    "fault_proxy_factory",
    "moto_server",
    "pytest_runtest_makereport",
    "registry",
    "registry_factory",
    "s3_bucket",
    "s3_registry",
    "token_registry",
    "token_server",
    "token_server_factory",
]

DEFAULT_USER = "regstore"
DEFAULT_PASSWORD = "regstore-secret"

_SERVERS_KEY = pytest.StashKey[list[Any]]()


class _HasUrl(Protocol):
    url: str


class S3Bucket(NamedTuple):
    """A fresh bucket on the session's moto server: ``endpoint_url, bucket = s3_bucket``."""

    endpoint_url: str
    bucket: str


def _remember(request: pytest.FixtureRequest, server: Any) -> None:
    """Note a server on the test item so its log can be attached to a failure report."""
    request.node.stash.setdefault(_SERVERS_KEY, []).append(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach registry log tails to the report of a failed test."""
    report = yield
    if report.failed:
        for server in item.stash.get(_SERVERS_KEY, []):
            tail = getattr(server, "log_tail", None)
            if tail is not None:
                report.sections.append((f"{server!r} log (tail)", tail(60)))
    return report


# -- registries --------------------------------------------------------------------------------
@pytest.fixture
def token_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., TokenServer]]:
    """Start token servers: ``token_server_factory(users={...}, anonymous_pull=..., ...)``."""
    servers: list[TokenServer] = []

    def start(**options: Any) -> TokenServer:
        options.setdefault("users", {DEFAULT_USER: DEFAULT_PASSWORD})
        server = TokenServer(tmp_path_factory.mktemp("token"), **options).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def registry_factory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    token_server_factory: Callable[..., TokenServer],
) -> Iterator[Callable[..., RegistryServer]]:
    """Start registries: ``registry_factory(auth="basic", root=dir, s3=S3Storage(...), ...)``.

    For ``auth="token"`` without a ``token_server`` one is started, configured by the
    ``users``, ``anonymous_pull`` and ``expires_in`` options.
    """
    servers: list[RegistryServer] = []

    def start(**options: Any) -> RegistryServer:
        if options.get("auth") == "token" and options.get("token_server") is None:
            token_options = {
                k: options.pop(k) for k in ("users", "anonymous_pull", "expires_in") if k in options
            }
            options["token_server"] = token_server_factory(**token_options)
        for key in ("users", "anonymous_pull", "expires_in"):
            if key in options:
                raise TypeError(
                    f"{key}= only applies to auth='token' without an explicit token_server"
                )
        server = RegistryServer(tmp_path_factory.mktemp("registry"), **options)
        servers.append(server)
        _remember(request, server)
        return server.start()  # raises ServerStartError with the log tail

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def registry(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    """A registry without auth on filesystem storage in a temporary directory."""
    return registry_factory()


@pytest.fixture
def basic_registry(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    """A registry with htpasswd (Basic) auth; credentials in ``.username``/``.password``."""
    return registry_factory(auth="basic", username=DEFAULT_USER, password=DEFAULT_PASSWORD)


@pytest.fixture
def token_server(token_server_factory: Callable[..., TokenServer]) -> TokenServer:
    """A token server knowing user ``regstore``/``regstore-secret``; no anonymous pulls."""
    return token_server_factory()


@pytest.fixture
def token_registry(
    registry_factory: Callable[..., RegistryServer], token_server: TokenServer
) -> RegistryServer:
    """A registry with token auth through ``token_server`` (``.token_server``)."""
    return registry_factory(
        auth="token", token_server=token_server, username=DEFAULT_USER, password=DEFAULT_PASSWORD
    )


# -- S3 ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server subprocess for the whole session (per xdist worker)."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Iterator[S3Bucket]:
    """A new, uniquely named bucket; emptied and deleted after the test."""
    name = f"regstore-test-{uuid.uuid4().hex[:16]}"
    moto_server.create_bucket(name)
    try:
        yield S3Bucket(moto_server.endpoint_url, name)
    finally:
        # The bucket may already be gone (a test deleting it) or moto may have been reset.
        with contextlib.suppress(Exception):
            moto_server.delete_bucket(name)


@pytest.fixture
def s3_registry(
    registry_factory: Callable[..., RegistryServer], s3_bucket: S3Bucket
) -> RegistryServer:
    """A registry (no auth) whose storage is ``s3_bucket`` under ``/registry``."""
    return registry_factory(s3=S3Storage(s3_bucket.endpoint_url, s3_bucket.bucket))


# -- proxies and fakes -------------------------------------------------------------------------
@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    """Start fault proxies: ``fault_proxy_factory(registry)`` or ``(url, preserve_host=True)``."""
    proxies: list[FaultProxy] = []

    def start(upstream: str | _HasUrl, **options: Any) -> FaultProxy:
        url = upstream if isinstance(upstream, str) else upstream.url
        proxy = FaultProxy(url, **options).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in reversed(proxies):
        proxy.stop()


@pytest.fixture
def fake_registry_factory() -> Iterator[Callable[[], FakeRegistry]]:
    """Start scripted fake registries (e.g. two, to model a redirect to another host)."""
    fakes: list[FakeRegistry] = []

    def start() -> FakeRegistry:
        fake = FakeRegistry().start()
        fakes.append(fake)
        return fake

    yield start
    for fake in reversed(fakes):
        fake.stop()


@pytest.fixture
def fake_registry(fake_registry_factory: Callable[[], FakeRegistry]) -> FakeRegistry:
    """One scripted fake registry."""
    return fake_registry_factory()


@pytest.fixture
def fake_client_factory(fake_registry: FakeRegistry) -> Iterator[Callable[..., Client]]:
    """Clients of :func:`fake_registry` (no docker config read), built with the options given
    and closed afterwards."""
    clients: list[Client] = []

    def build(**options: object) -> Client:
        client = Client(fake_registry.host, use_docker_config=False, **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()
