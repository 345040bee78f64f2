"""What every endpoint method of the client shares: the transport, scopes, one call helper.

The endpoint groups (:mod:`~regstore.client.manifests`, :mod:`~regstore.client.blobs`,
:mod:`~regstore.client.uploads`) are mixins over :class:`ClientCore`; the public
:class:`~regstore.client.Client` composes them and owns construction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from regstore.client.bodies import UploadBody
from regstore.client.challenge import repository_scope
from regstore.client.errors_map import Operation, error_for_status
from regstore.client.limits import ClientLimits
from regstore.client.transport import Reply, Transport
from regstore.client.urls import Endpoint
from regstore.reference import is_digest

__all__ = ["ClientCore", "pull_scope", "push_scope"]


def pull_scope(name: str) -> tuple[str, ...]:
    """The token scope for reading ``name``."""
    return (repository_scope(name, "pull"),)


def push_scope(name: str) -> tuple[str, ...]:
    """The token scope for writing ``name``."""
    return (repository_scope(name, "pull", "push"),)


def delete_scope(name: str) -> tuple[str, ...]:
    """The token scope for deleting from ``name`` (distribution asks for ``delete``)."""
    return (repository_scope(name, "pull", "delete"),)


def describe_ref(name: str, reference: str) -> str:
    """``name:tag`` or ``name@digest``."""
    return f"{name}@{reference}" if is_digest(reference) else f"{name}:{reference}"


class ClientCore:
    """Shared state of a client for one registry."""

    _endpoint: Endpoint
    _transport: Transport
    #: Bounds on listings and unsized blobs (the Client sets its own from its arguments).
    _limits: ClientLimits = ClientLimits()

    @property
    def registry(self) -> str:
        """The registry as users name it (``127.0.0.1:5000``, ``docker.io``)."""
        return self._endpoint.registry

    @property
    def base_url(self) -> str:
        """``scheme://host`` the API is reached at."""
        return self._endpoint.base_url

    def _call(
        self,
        method: str,
        url: str,
        op: Operation,
        *,
        ok: Collection[int],
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes | UploadBody | None = None,
        idempotent: bool | None = None,
        stream: bool = False,
        max_body: int = 64 * 1024 * 1024,
    ) -> Reply:
        """Send through the transport; map any status outside ``ok`` to a regstore error."""
        reply = self._transport.request(
            method,
            url,
            op,
            scopes=scopes,
            headers=headers,
            body=body,
            idempotent=idempotent,
            stream=stream,
            max_body=max_body,
        )
        if reply.status not in ok:
            data = reply.read_error_body()
            err = error_for_status(
                op, method, reply.url, reply.status, reply.headers, data, scopes=tuple(scopes)
            )
            if reply.retries and hasattr(err, "add_note"):
                err.add_note(f"after {reply.retries} retries")
            raise err
        return reply
