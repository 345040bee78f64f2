"""The registry client: Registry HTTP API V2 / OCI Distribution Spec v1.1 over ``requests``.

Layout (one concern per module):

- :mod:`.client` — :class:`Client`, composing the endpoint groups :mod:`.manifests`,
  :mod:`.listing`, :mod:`.blobs`, :mod:`.uploads` over :mod:`.core`;
- :mod:`.transport` — pooled session, retries, redirects, in-flight limit;
- :mod:`.retry` — the one retry policy (what to retry, how long to wait) and retry budgets;
- :mod:`.auth`, :mod:`.challenge`, :mod:`.credentials` — Basic/Bearer auth, challenges and
  scopes, credentials from arguments, a provider callable or docker's config;
- :mod:`.errors_map` — HTTP answers and transport failures → :mod:`regstore.errors`;
- :mod:`.stream` (:class:`BlobStream`), :mod:`.bodies` (upload bodies), :mod:`.ranges`,
  :mod:`.urls`, :mod:`.ratelimit`, :mod:`.models` — small helpers and values.

Imports only the standard library, ``requests``/``urllib3`` and regstore's leaf modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regstore.lazy import lazy_exports

if TYPE_CHECKING:  # the same names, imported on first use at run time (__getattr__)
    from regstore.client.agent import default_user_agent
    from regstore.client.bodies import BlobData, UploadLengthError
    from regstore.client.client import Client
    from regstore.client.credentials import Credentials, CredentialsCallable, DockerConfig
    from regstore.client.ratelimit import RateLimitPacer
    from regstore.client.stream import BlobStream
    from regstore.retry import RetryBudget, RetryPolicy
    from regstore.wire import ManifestInfo, UploadSession, UploadStatus

#: Where each name lives: importing one module of the package (:mod:`.heads`, :mod:`.urls`)
#: imports neither ``requests`` nor the client.
_EXPORTS: dict[str, str] = {
    "BlobData": "regstore.client.bodies",
    "UploadLengthError": "regstore.client.bodies",
    "Client": "regstore.client.client",
    "default_user_agent": "regstore.client.agent",
    "Credentials": "regstore.client.credentials",
    "CredentialsCallable": "regstore.client.credentials",
    "DockerConfig": "regstore.client.credentials",
    "RateLimitPacer": "regstore.client.ratelimit",
    "BlobStream": "regstore.client.stream",
    "RetryBudget": "regstore.retry",
    "RetryPolicy": "regstore.retry",
    "ManifestInfo": "regstore.wire",
    "UploadSession": "regstore.wire",
    "UploadStatus": "regstore.wire",
}

if not TYPE_CHECKING:  # (hidden from type checkers, which see the imports above instead)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "BlobData",
    "BlobStream",
    "Client",
    "Credentials",
    "CredentialsCallable",
    "DockerConfig",
    "ManifestInfo",
    "RateLimitPacer",
    "RetryBudget",
    "RetryPolicy",
    "UploadLengthError",
    "UploadSession",
    "UploadStatus",
    "default_user_agent",
]
