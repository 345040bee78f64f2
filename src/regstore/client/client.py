"""The registry client: the seed's ``Client`` operations over one pooled transport.

::

    from regstore.client import Client

    with Client("127.0.0.1:5000") as c:                # plain HTTP: loopback
        m = c.get_image_manifest("library/alpine", "3.19")
        with c.get_blob("library/alpine", m.layers[0].digest) as blob:
            for chunk in blob.iter_chunks():
                ...

    Client("https://ghcr.io", username="me", password=token)
    Client("docker.io")                                  # API at registry-1.docker.io
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import requests

from regstore.client.agent import default_user_agent
from regstore.client.blobs import BlobsMixin
from regstore.client.credentials import CredentialResolver, CredentialsCallable
from regstore.client.errors_map import Operation
from regstore.client.limits import ClientLimits
from regstore.client.ratelimit import RateLimitPacer
from regstore.client.referrers import ReferrersMixin
from regstore.client.transport import Transport, TransportOptions
from regstore.client.uploads import UploadsMixin
from regstore.client.urls import Endpoint
from regstore.errors import UnsupportedError
from regstore.retry import RetryPolicy

__all__ = ["Client", "default_user_agent"]


class Client(ReferrersMixin, BlobsMixin, UploadsMixin):
    """A client for one registry's HTTP API V2 (OCI Distribution Spec v1.1). Thread-safe.

    Args:
        registry: ``host[:port]`` (``127.0.0.1:5000``, ``docker.io``) or a URL
            (``https://ghcr.io``).
        plain_http: True for ``http``, False for ``https``; None (default) uses ``http`` only
            for loopback hosts (``127.0.0.0/8``, ``localhost``, ``::1``), as docker does.
        verify: TLS verification: True (system/``REQUESTS_CA_BUNDLE``), a CA bundle path, or
            False.
        username: the user name of the credentials; without it, ``credentials`` is asked,
            then docker's config file.
        password: the password (or token) going with ``username``.
        credentials: a callable ``(registry) -> (user, password) | None``.
        docker_config: path of docker's ``config.json`` (default ``$DOCKER_CONFIG/config.json``
            or ``~/.docker/config.json``); ``use_docker_config=False`` ignores it.
        timeout: ``(connect, read)`` seconds.
        retries: retries after the first attempt of a request that is safe to repeat (and of a
            failed connect); a blob upload gets this many plus two per extra chunk (or per
            extra 128 MiB of larger chunks), shared by all its requests (see
            :mod:`regstore.client.retry`).
        backoff: base of the exponential backoff, in seconds (with jitter).
        max_retry_after: longest ``Retry-After`` pause honoured, in seconds.
        max_in_flight: requests in flight to this registry at once (streamed bodies count
            until closed).
        user_agent: the ``User-Agent`` header.
        session: a ``requests.Session`` to use (for tests or custom adapters); by default
            the client makes a pooled one with connection retries.
        pacer: rate-limit pacing (default: :class:`~regstore.client.ratelimit.RateLimitPacer`).
        sleep: the function used to wait between retries (for tests).
        max_pages: a tag or catalog listing stops with PagingLimitError after this many
            pages (default 10,000; ``REGSTORE_MAX_PAGES``).
        max_list_entries: a tag or catalog listing stops with PagingLimitError once the
            registry sent more names than this (default 1,000,000;
            ``REGSTORE_MAX_LIST_ENTRIES``).
        max_unknown_blob_size: a blob streamed without any known length (chunked, and no
            size in the manifest) stops with BlobTooLargeError past this many bytes (default
            10 GiB; ``REGSTORE_MAX_UNKNOWN_BLOB_SIZE``). See :mod:`regstore.client.limits`.
    """

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool | None = None,
        verify: bool | str = True,
        username: str | None = None,
        password: str | None = None,
        credentials: CredentialsCallable | None = None,
        docker_config: str | os.PathLike[str] | None = None,
        use_docker_config: bool = True,
        timeout: tuple[float, float] = (10.0, 300.0),
        retries: int = 5,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        max_in_flight: int = 8,
        user_agent: str | None = None,
        session: requests.Session | None = None,
        pacer: RateLimitPacer | None = None,
        sleep: Callable[[float], None] | None = None,
        max_pages: int | None = None,
        max_list_entries: int | None = None,
        max_unknown_blob_size: int | None = None,
    ) -> None:
        self._endpoint = Endpoint.parse(registry, plain_http=plain_http)
        self._limits = ClientLimits.resolve(
            max_pages=max_pages,
            max_list_entries=max_list_entries,
            max_unknown_blob_size=max_unknown_blob_size,
        )
        resolver = CredentialResolver(
            self._endpoint.registry,
            username=username,
            password=password,
            credentials=credentials,
            docker_config=docker_config,
            use_docker_config=use_docker_config,
        )
        options = TransportOptions(
            verify=verify,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_retry_after=max_retry_after,
            max_in_flight=max_in_flight,
            user_agent=user_agent or default_user_agent(),
        )
        extra = {"sleep": sleep} if sleep is not None else {}
        self._transport = Transport(
            self._endpoint, resolver, options, session=session, pacer=pacer, **extra
        )
        self._offsets = OrderedDict()
        self._offsets_lock = threading.Lock()

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of every request to this registry (the engine's blob uploads use
        it too)."""
        return self._transport.policy

    @property
    def limits(self) -> ClientLimits:
        """The bounds this client enforces on listings and unsized blobs."""
        return self._limits

    @property
    def transport(self) -> Transport:
        """The transport (counters, auth state): for diagnostics and tests."""
        return self._transport

    def ping(self) -> None:
        """Check that the registry speaks API V2 (``GET /v2/``), authenticating if asked.

        Raises:
            AuthenticationError: the credentials are refused.
            UnsupportedError: the server answers 404 (not a V2 registry).
            TransportError: it cannot be reached.
        """
        op = Operation("ping", f"checking the API of {self.registry}")
        reply = self._transport.request("GET", self._endpoint.url("/v2/"), op)
        if reply.status == 200:
            return
        if reply.status == 404:
            raise UnsupportedError(f"{op.what}: {self.base_url} is not a registry API V2 server")
        self._call_failed(reply, op)

    def close(self) -> None:
        """Close pooled connections (of the client's own session)."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        user = self._transport.auth.credentials.username
        who = f", username={user!r}" if user else ""
        return f"Client({self.base_url!r}{who})"
