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

from regstore.client.bodies import BlobData, UploadLengthError
from regstore.client.client import Client, default_user_agent
from regstore.client.credentials import Credentials, CredentialsCallable, DockerConfig
from regstore.client.ratelimit import RateLimitPacer
from regstore.client.stream import BlobStream
from regstore.retry import RetryBudget, RetryPolicy
from regstore.wire import ManifestInfo, UploadSession, UploadStatus

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
