"""Where requests go: the registry endpoint, API URLs, Location/Link resolution, redaction.

Everything here is pure string work (no I/O). :class:`Endpoint` turns what users write
(``127.0.0.1:5000``, ``https://ghcr.io``, ``docker.io``) into a base URL, choosing plain HTTP
only when asked or for loopback hosts, as docker does. :func:`redact_url` is the one way a URL
reaches a log line or an error message.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from regstore.reference import validate_name, validate_reference
from regstore.safetext import escaped

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API_HOST",
    "Endpoint",
    "add_query",
    "is_loopback_host",
    "is_loopback_url",
    "no_proxy_for",
    "parse_next_link",
    "query_value",
    "redact_url",
    "resolve",
    "resolve_target",
    "same_origin",
    "shown_url",
    "url_problem",
]

#: The registry name users write for Docker Hub, and the host that serves its API.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# Query parameters that are safe to show: the API's own paging/upload parameters.
# Everything else (``_state``, ``X-Amz-Signature``, ``sig``, ``token`` ...) is redacted.
_SAFE_QUERY_KEYS = frozenset({"n", "last", "digest", "mount", "from", "service", "scope"})
# A URI reference never holds a raw '<' (RFC 3986), so a target stops at the next one: with
# '[^>]*' every '<' of a header without '>' rescanned the whole rest (quadratic: 40 s for a
# 64 KiB header of '<').
_LINK_RE = re.compile(r"<([^<>]*)>\s*((?:;\s*[^,;]*)*)")
# Characters no URI holds raw (RFC 3986) on which Python's urlsplit and urllib3 (whose
# parse_url picks the host requests connects to) disagree: urllib3 ends the host at a
# backslash, urlsplit reads on to a later '@'; urlsplit drops tabs and newlines. A registry
# naming such a target could steer credentials to another host while urlsplit saw its own.
_AMBIGUOUS_RE = re.compile(r"[\\\x00-\x20\x7f]")
_DEFAULT_PORTS = {"http": 80, "https": 443}

_Origin = tuple[str, str, int | None]


def _split_host_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        rest = host[end + 1 :]
        return host[1:end], rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (with or without a port)."""
    name, _ = _split_host_port(host)
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True if ``url``'s host is a loopback host."""
    try:
        return is_loopback_host(urlsplit(url).netloc.rpartition("@")[2])
    except ValueError:
        return False


def no_proxy_for(url: str) -> dict[str, str] | None:
    """``requests`` proxies that bypass any environment proxy for loopback URLs (as docker
    does); None (use the environment) for every other URL."""
    if not is_loopback_url(url):
        return None
    # requests drops proxies whose value is None, overriding the environment's (ALL_PROXY too)
    return cast("dict[str, str]", {"http": None, "https": None, "all": None})


@dataclass(frozen=True)
class Endpoint:
    """A registry's API base: ``scheme://host[:port]``.

    ``registry`` is the name users and docker's config use (``docker.io``, ``127.0.0.1:5000``);
    ``host`` is where the API is served (``registry-1.docker.io`` for Docker Hub).
    """

    scheme: str
    host: str
    registry: str

    @classmethod
    def parse(cls, text: str, *, plain_http: bool | None = None) -> Endpoint:
        """Parse ``host[:port]`` or ``http(s)://host[:port][/]``.

        ``plain_http``: True forces ``http``, False forces ``https``, None (the default) picks
        ``http`` for loopback hosts only. A scheme in ``text`` must agree with ``plain_http``.

        Raises:
            ValueError: an empty host, a path, or a scheme contradicting ``plain_http``.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("registry must be a non-empty string such as '127.0.0.1:5000'")
        text = text.strip()
        scheme: str | None = None
        if "://" in text:
            parts = urlsplit(text)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https"):
                raise ValueError(f"registry URL {text!r}: scheme must be http or https")
            if parts.path.rstrip("/") not in ("", "/v2") or parts.query or parts.fragment:
                raise ValueError(f"registry URL {text!r} must not have a path or query")
            if parts.username or parts.password:
                raise ValueError("put credentials in username=/password=, not in the registry URL")
            host = parts.netloc
            if plain_http is not None and plain_http != (scheme == "http"):
                raise ValueError(f"registry URL {text!r} contradicts plain_http={plain_http}")
        else:
            host = text.rstrip("/")
            if "/" in host or "@" in host:
                raise ValueError(f"registry {text!r} must be host[:port] or a URL")
        if not host:
            raise ValueError(f"registry {text!r} has no host")
        host = host.lower()
        registry = host
        if host in _DOCKER_HUB_ALIASES:
            registry, host = DOCKER_HUB, DOCKER_HUB_API_HOST
        if scheme is None:
            if plain_http is None:
                plain_http = is_loopback_host(host)
            scheme = "http" if plain_http else "https"
        return cls(scheme=scheme, host=host, registry=registry)

    @property
    def base_url(self) -> str:
        """``scheme://host`` without a trailing slash."""
        return f"{self.scheme}://{self.host}"

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        """An absolute URL for an API ``path`` (starting with ``/v2/``)."""
        url = self.base_url + path
        if query:
            url += "?" + urlencode(query)
        return url

    def manifest_url(self, name: str, reference: str) -> str:
        """``/v2/<name>/manifests/<tag|digest>``, validated (no I/O happens on a bad one)."""
        validate_name(name)
        validate_reference(reference)
        return self.url(f"/v2/{name}/manifests/{reference}")

    def blob_url(self, name: str, digest: str) -> str:
        """``/v2/<name>/blobs/<digest>``."""
        validate_name(name)
        return self.url(f"/v2/{name}/blobs/{digest}")

    def uploads_url(self, name: str, query: dict[str, str] | None = None) -> str:
        """``/v2/<name>/blobs/uploads/`` (with ``mount``/``from`` when given)."""
        validate_name(name)
        return self.url(f"/v2/{name}/blobs/uploads/", query)

    def tags_url(self, name: str, n: int | None = None) -> str:
        """``/v2/<name>/tags/list[?n=]``."""
        validate_name(name)
        return self.url(f"/v2/{name}/tags/list", {"n": str(n)} if n is not None else None)

    def catalog_url(self, n: int | None = None) -> str:
        """``/v2/_catalog[?n=]``."""
        return self.url("/v2/_catalog", {"n": str(n)} if n is not None else None)

    def owns(self, url: str) -> bool:
        """True if ``url`` is on this registry's origin (scheme, host and port), as the library
        that sends it reads it (see :func:`same_origin`)."""
        # The client's own URLs (nearly every request) need no parsing, which would cost a
        # tenth of a manifest HEAD: every parser ends the authority at the first "/" once no
        # ambiguous character is in the URL.
        if url.startswith(self.base_url + "/") and not _AMBIGUOUS_RE.search(url):
            return True
        return same_origin(url, self.base_url)


def _origin(url: str) -> _Origin | None:
    """The origin requests would connect to: read by urllib3's parser (as requests'
    ``prepare_url`` does), not urlsplit. None for a URL that is not plainly one."""
    if _AMBIGUOUS_RE.search(url):
        return None
    from urllib3.util import parse_url  # (start-up: requests imports it before any request)

    try:
        parts = parse_url(url)
    except ValueError:  # urllib3's LocationParseError
        return None
    scheme = (parts.scheme or "").lower()
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
    return scheme, (parts.host or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    """True if both URLs have the same scheme, host and port (where credentials may go), as
    the library that sends them reads them; never for a URL either parser could misread."""
    origin = _origin(a)
    return origin is not None and origin == _origin(b)


def url_problem(url: str) -> str | None:
    """Why ``url`` (a target a registry named) must not be requested, or None if it may be."""
    if _AMBIGUOUS_RE.search(url):
        return (
            "it holds a backslash, a space or a control character, which the URL parsers on "
            "the way read differently"
        )
    from urllib3.util import parse_url  # (start-up: requests imports it before any request)

    try:
        parts = parse_url(url)
        _ = urlsplit(url).port  # redaction and logging read it too: it must parse there too
    except ValueError:
        return "it is not a valid URL"
    if (parts.scheme or "").lower() not in _DEFAULT_PORTS or not parts.host:
        return "it is not an absolute http or https URL"
    return None


def resolve(base: str, location: str) -> str:
    """Resolve a ``Location`` or ``Link`` target against the request URL (RFC 3986), keeping
    its query (the upload ``_state``) untouched."""
    return urljoin(base, location.strip())


def resolve_target(base: str, location: str) -> str:
    """:func:`resolve`, then check the result is a URL the client may request.

    Raises:
        ValueError: the target is no URL, not http(s), or ambiguous (see :func:`url_problem`);
            the message says which.
    """
    try:
        target = resolve(base, location)
    except ValueError:
        raise ValueError("it is not a valid URL") from None
    problem = url_problem(target)
    if problem is not None:
        raise ValueError(problem)
    return target


def add_query(url: str, **params: str) -> str:
    """Append parameters to ``url``'s query, keeping the existing ones byte for byte."""
    parts = urlsplit(url)
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """The URL without user info and with every query value outside the API's own parameters
    replaced by ``REDACTED`` (presigned URLs and upload state are bearer secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = ""
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = (
            "&".join(
                f"{k}={quote(v, safe=':/,') if k in _SAFE_QUERY_KEYS else 'REDACTED'}"
                for k, v in pairs
            )
            if pairs
            else "REDACTED"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


#: Characters shown before and after the suspect one of a URL refused for its characters.
_SUSPECT_CONTEXT = (80, 40)


def shown_url(url: str) -> str:
    """``url`` (one a registry named) as a message quotes it: :func:`redact_url`, escaped as
    ``repr`` escapes (controls visible) and cut short (a registry may name 60,000 characters).

    A URL holding a character the parsers read differently (see :func:`url_problem`) is shown
    raw around the first such character instead: redaction parses it, and would drop the very
    part that made it suspect (``http://h:1\\@registry/`` would be shown as ``http://registry/``).
    """
    suspect = _AMBIGUOUS_RE.search(url)
    if suspect is None:
        return escaped(redact_url(url))
    before, after = _SUSPECT_CONTEXT
    start, end = max(0, suspect.start() - before), suspect.end() + after
    head = "..." if start else ""
    tail = "..." if end < len(url) else ""
    return head + escaped(url[start:end]) + tail


def query_value(url: str, key: str) -> str | None:
    """The (first) value of query parameter ``key`` in ``url``, percent-decoded; None if absent.

    Paging reads ``last`` with it to tell whether a registry's next page advances.
    """
    try:
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        return None
    return next((v for k, v in pairs if k == key), None)


def parse_next_link(header: str | None, request_url: str) -> str | None:
    """The absolute target of the ``rel="next"`` entry of an RFC 8288 ``Link`` header, or None.

    Registries send relative links (``</v2/_catalog?last=x&n=1>; rel="next"``); they are
    resolved against the URL of the request that returned them.

    Raises:
        ValueError: the target is not a URL (e.g. ``<http://[oops>``).
    """
    if not header:
        return None
    for match in _LINK_RE.finditer(header):
        target, params = match.group(1), match.group(2)
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return resolve(request_url, target)
    return None
