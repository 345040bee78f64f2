"""A blob's GET as a presigned URL read by a blocking HTTP client, straight into the caller's
buffer.

s3fs speaks to S3 through aiobotocore and aiohttp. For a body of many megabytes that path
costs the process about 0.8 CPU seconds per GiB beyond the socket's own copy: every 256 KiB the
transport allocates a ``bytes``, the stream reader queues and joins them, and each read is a
trip to s3fs's event-loop thread. A push from S3 runs beside the registry taking the bytes in,
on the same cores, so that CPU was the gap between it and ``curl`` piping the same GET into
the same PUT (benchmarks/RESULTS.md). The same GET signed as a URL (SigV4 in the query string,
signed locally by the same client and credentials) and read with ``http.client``'s
``readinto`` costs about 0.2 CPU seconds per GiB.

Only the plain case takes this path, and anything unusual falls back to the aiobotocore GET,
which keeps botocore's retries and error model:

- the endpoint is ``http`` or ``https`` and no proxy applies to it (the environment's proxy
  settings are honoured by falling back, not reimplemented);
- the answer is 200 or 206: any other status (a missing key, a failed ``If-Match``, throttling,
  a server error) is asked again the usual way, where botocore retries and names it;
- a connection that fails before the answer falls back too.

TLS is verified as the store's ``verify`` option says (botocore's CA bundle by default).
Connections are kept alive in one pool per filesystem and process (a forked child makes its
own).
"""

from __future__ import annotations

import http.client
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
        if self._fp is not None and not self._fp.isclosed():
            response.close()  # unread bytes: the connection cannot carry another request
        else:
            response.release_conn()


def _proxied(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    scheme = urllib.parse.urlsplit(url).scheme
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)


def _pool(fs: Any) -> Any:
    """The connection pool of ``fs`` in this process (made on first use)."""
    import urllib3

    with _pools_guard:
        owned = getattr(fs, "_regstore_direct_pool", None)
        if owned is not None and owned[0] == os.getpid():
            return owned[1]
        client_kwargs = getattr(fs, "client_kwargs", None) or {}
        config_kwargs = getattr(fs, "config_kwargs", None) or {}
        verify = client_kwargs.get("verify", True)
        tls: dict[str, Any]
        if verify is False:
            tls = {"cert_reqs": "CERT_NONE"}
        else:
            ca = verify if isinstance(verify, str) else _default_ca()
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca}
        timeout = urllib3.Timeout(
            connect=float(config_kwargs.get("connect_timeout") or _DEFAULT_TIMEOUT),
            read=float(config_kwargs.get("read_timeout") or _DEFAULT_TIMEOUT),
        )
        pool = urllib3.PoolManager(num_pools=4, maxsize=16, timeout=timeout, retries=False, **tls)
        fs._regstore_direct_pool = (os.getpid(), pool)
        return pool


def _default_ca() -> str | None:
    try:
        from botocore.httpsession import get_cert_path

        return str(get_cert_path(True))
    except Exception:  # (botocore without it: the system's default)
        return None


def _presign(fs: Any, bucket: str, key: str) -> str | None:
    from fsspec.asyn import sync

    async def _sign() -> str:
        await fs.set_session()
        url: str = await fs._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=_EXPIRES
        )
        return url

    try:
        url: str = sync(fs.loop, _sign)
    except Exception:  # signing is local: anything odd here means "the usual way"
        return None
    return url


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
    except Exception:  # refused, reset, timed out: the usual way decides (and retries)
        return None
    if response.status != (206 if offset else 200) or (
        offset and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {offset}-")
    ):
        response.close()  # (a body from anywhere but the offset asked must not be read)
        return None
    return DirectBody(response)
