"""Reading a response body whole: at most so many bytes, and within a deadline.

A manifest, a tag page, an error body or a token answer is read into memory; the server it
comes from chose its length and its pace. The transport and the authenticator read through
:func:`read_bounded`, so that neither a body without end nor one sent a byte at a time holds
a request or the memory without bound. A blob's stream is not read here (its length is the
descriptor's; a slow link is legitimate for it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import requests
import urllib3

from regstore.client.errors_map import SlowBodyError

__all__ = ["read_bounded"]

_READ_CHUNK = 64 * 1024


def read_bounded(
    response: requests.Response, limit: int, seconds: float | None, server: str = "registry"
) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes (+1 to detect more); returns (body, truncated). With
    ``seconds``, a body still arriving after that long in all ends with SlowBodyError (which
    names ``server``: the registry, or its token server). The
    time is looked at as each piece comes, so the longest a body takes is the deadline and one
    socket read timeout: a socket timeout alone bounds each wait, and a registry sending a
    byte now and then held a request for ever."""
    end = None if seconds is None else time.monotonic() + seconds
    parts: list[bytes] = []
    total = 0
    for chunk in _chunks(response):
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            response.close()
            return b"".join(parts)[: limit + 1], True
        if end is not None and seconds is not None and time.monotonic() > end:
            response.close()
            length = response.headers.get("Content-Length", "")
            raise SlowBodyError(total, int(length) if length.isdigit() else None, seconds, server)
    return b"".join(parts), False


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body's pieces as they come (one socket read each, where urllib3 has ``read1``: so
    a body cut at its deadline tells how much came), failures raised as ``iter_content``
    raises them."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(_READ_CHUNK)
        return
    try:
        while chunk := read1(_READ_CHUNK, decode_content=True):
            yield chunk
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
