"""A blob's GET as a presigned URL read by a blocking HTTP client, straight into the caller's
buffer.

s3fs speaks to S3 through aiobotocore and aiohttp. For a body of many megabytes that path
costs the process about 0.8 CPU seconds per GiB beyond the socket's own copy: every 256 KiB the
transport allocates a ``bytes``, the stream reader queues and joins them, and each read is a
trip to s3fs's event-loop thread. A push from S3 runs beside the registry taking the bytes in,
on the same cores, so that CPU was the gap between it and ``curl`` piping the same GET into
the same PUT (benchmarks/RESULTS.md). The same GET signed as a URL (SigV4 in the query string,
signed locally with the client's own credentials) and read with ``http.client``'s
``readinto`` costs about 0.2 CPU seconds per GiB.

Only the plain case takes this path, and anything unusual falls back to the aiobotocore GET,
which keeps botocore's retries and error model:

- the endpoint is ``http`` or ``https`` and no proxy applies to it (the environment's proxy
  settings are honoured by falling back, not reimplemented);
- the answer is 200 or 206: any other status (a missing key, a failed ``If-Match``, throttling,
  a server error) is asked again the usual way, where botocore retries and names it;
- a connection that fails before the answer falls back too.

TLS is verified as the store's ``verify`` option says, else as botocore would (the session's
``ca_bundle``, then botocore's bundle); the timeouts are the client's. On AWS outside
us-east-1, a URL botocore addresses to the global endpoint is not used (newer regions refuse
it).
Connections are kept alive in one pool per filesystem and process (a forked child makes its
own).
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["DirectBody", "open_direct"]

#: How long a presigned URL stays valid: it is used at once, and a resume presigns anew.
_EXPIRES = 900
_DEFAULT_TIMEOUT = 60.0
_pools_guard = threading.Lock()
log = logging.getLogger(__name__)


class DirectBody:
    """The body of one presigned GET: ``readinto`` straight from the socket."""

    def __init__(self, response: Any) -> None:
        self._response = response  # urllib3's
        fp = getattr(response, "_fp", None)
        # (no content decoding was asked for: the http.client response under urllib3's gives
        # the very bytes, with no copy per read)
        self._fp: http.client.HTTPResponse | None = (
            fp if isinstance(fp, http.client.HTTPResponse) else None
        )
        self.etag: str | None = response.headers.get("ETag")

    def readinto(self, view: memoryview) -> int:
        """Bytes into ``view`` (0 at the end; a body cut short raises)."""
        if self._fp is not None:
            n = self._fp.readinto(view)
            if not n and view and self._fp.length:
                # (http.client returns 0 when the connection ends before Content-Length)
                raise ConnectionError(f"the body ended {self._fp.length} bytes early")
            return n
        data = self._response.read(len(view), decode_content=False)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Give the connection back when the body was read to its end, else drop it."""
        response, self._response = self._response, None
        if response is None:
            return
        if self._fp is not None and self._fp.isclosed():
            response.release_conn()  # read to its end: the connection serves the next GET
        else:
            response.close()  # unread bytes (or unknown): the connection cannot be reused


def _proxied(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    return bool(proxies.get(parts.scheme) or proxies.get("all")) and not (
        urllib.request.proxy_bypass(parts.hostname or "")
    )


def _pool(fs: Any) -> Any:
    """The connection pool of ``fs`` in this process (made on first use)."""
    import urllib3

    with _pools_guard:
        owned = getattr(fs, "_regstore_direct_pool", None)
        if owned is not None and owned[0] == os.getpid():
            return owned[1]
        verify = (getattr(fs, "client_kwargs", None) or {}).get("verify")
        tls: dict[str, Any]
        if verify is False:
            tls = {"cert_reqs": "CERT_NONE"}
        else:
            ca = verify if isinstance(verify, str) else _session_ca(fs)
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca}
        # the client's own timeouts: s3fs's defaults under the store's options
        config = fs._prepare_config_kwargs() if hasattr(fs, "_prepare_config_kwargs") else {}
        timeout = urllib3.Timeout(
            connect=float(config.get("connect_timeout") or _DEFAULT_TIMEOUT),
            read=float(config.get("read_timeout") or _DEFAULT_TIMEOUT),
        )
        pool = urllib3.PoolManager(num_pools=4, maxsize=16, timeout=timeout, retries=False, **tls)
        fs._regstore_direct_pool = (os.getpid(), pool)
        return pool


def _session_ca(fs: Any) -> str | None:
    """The CA bundle botocore verifies with when ``verify`` is not given: the session's
    ``ca_bundle`` (``AWS_CA_BUNDLE``, the profile's setting), else botocore's default."""
    try:
        configured = fs.session.get_config_variable("ca_bundle")
    except Exception:  # (no session yet, or an odd one: botocore's default)
        configured = None
    if configured:
        return str(configured)
    try:
        from botocore.httpsession import get_cert_path

        return str(get_cert_path(True))
    except Exception:  # (botocore without it: the system's default)
        return None


def _presign(fs: Any, bucket: str, key: str) -> str | None:
    """A SigV4 query-signed URL of the object, by the client's own credentials and region.

    botocore's ``generate_presigned_url`` addresses the object as the client would, but signs
    with SigV2 unless the client is configured for SigV4 outright (which would also change how
    every other request of the store is signed); so its URL is taken without its query and
    signed here. Anonymous clients read unsigned. None when any of it fails.
    """
    from fsspec.asyn import sync

    async def _sign() -> tuple[str, Any, str | None]:
        await fs.set_session()
        client = fs._s3
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=_EXPIRES
        )
        credentials = client._get_credentials()
        frozen = None if credentials is None else await credentials.get_frozen_credentials()
        return url, frozen, client.meta.region_name

    try:
        url, frozen, region = sync(fs.loop, _sign)
        base = str(url).split("?", 1)[0]
        if _global_endpoint(base, region, fs):
            return None
        if frozen is None or not frozen.access_key:
            return base
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="GET", url=base)
        S3SigV4QueryAuth(frozen, "s3", region or "us-east-1", expires=_EXPIRES).add_auth(request)
        return str(request.url)
    except Exception:  # signing is local: anything odd here means "the usual way"
        log.debug("s3://%s/%s: no presigned GET, the usual one", bucket, key, exc_info=True)
        return None


def _global_endpoint(url: str, region: str | None, fs: Any) -> bool:
    """True for AWS's global endpoint outside us-east-1: botocore presigns there unless the
    addressing is virtual-hosted, and newer regions refuse it (older ones redirect), so such a
    GET would cost two requests instead of one."""
    if getattr(fs, "endpoint_url", None) or (fs.client_kwargs or {}).get("endpoint_url"):
        return False  # an endpoint of the user's own
    host = urllib.parse.urlsplit(url).hostname or ""
    on_global = host == "s3.amazonaws.com" or host.endswith(".s3.amazonaws.com")
    return on_global and region not in (None, "us-east-1", "aws-global")


def open_direct(fs: Any, bucket: str, key: str, offset: int, etag: str | None) -> DirectBody | None:
    """The body of a presigned GET of ``bucket/key`` from ``offset`` (``If-Match: etag``
    when given), or None where the aiobotocore GET must be used instead (module docstring).
    """
    url = _presign(fs, bucket, key)
    if url is None or urllib.parse.urlsplit(url).scheme not in ("http", "https") or _proxied(url):
        return None
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    if etag is not None:
        headers["If-Match"] = etag
    try:
        response = _pool(fs).request(
            "GET", url, headers=headers, preload_content=False, decode_content=False
        )
    except Exception as exc:  # refused, reset, timed out: the usual way decides (and retries)
        log.debug("s3://%s/%s: presigned GET failed (%s), the usual one", bucket, key, exc)
        return None
    if response.status != (206 if offset else 200) or (
        offset and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {offset}-")
    ):
        response.close()  # (a body from anywhere but the offset asked must not be read)
        log.debug("s3://%s/%s: presigned GET answered %s", bucket, key, response.status)
        return None
    return DirectBody(response)
