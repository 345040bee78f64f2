"""Repository names, tags, digests and full image references, validated by the OCI grammar.

Everything here is a value: validated on construction, immutable, free of I/O. A string that
passes :func:`validate_name`, :func:`validate_tag` or :class:`Digest` is safe to use as a path
component under a store root: it holds only ``[a-z0-9._-]`` (names also ``/`` between non-empty
components that never are ``.`` or ``..``), tags only ``[A-Za-z0-9_.-]`` and never start with
``.``, digests only ``[a-z0-9]`` and one ``:``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from regstore.errors import InvalidReferenceError

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "SUPPORTED_ALGORITHMS",
    "Digest",
    "Reference",
    "is_digest",
    "parse_reference",
    "validate_name",
    "validate_reference",
    "validate_tag",
]

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
#: Algorithms regstore verifies, with the exact length of their lowercase hex encoding.
SUPPORTED_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
NAME_MAX_LENGTH = 255

# re.ASCII everywhere: \w and character classes must never admit unicode look-alikes.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)", re.ASCII)
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?",
    re.ASCII,
)


def _is_host(text: str) -> bool:
    """``host[:port]``: a domain name, an IPv4 address, or a bracketed IPv6 address."""
    if _HOST_RE.fullmatch(text) is None:
        return False
    if text.startswith("["):
        literal = text[1 : text.index("]")]
        try:
            ipaddress.IPv6Address(literal)  # the regex only says which characters may appear
        except ValueError:
            return False
    port = text.rpartition("]")[2] if text.startswith("[") else text.partition(":")[2]
    return not port.lstrip(":") or 0 < int(port.lstrip(":")) < 65536


def _check_text(part: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidReferenceError(part, value, f"expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidReferenceError(part, value, "must not be empty")
    return value


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid repository name (``library/alpine``), else raise.

    Raises:
        InvalidReferenceError: with ``part="name"`` and the reason.
    """
    _check_text("name", name)
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidReferenceError("name", name, f"longer than {NAME_MAX_LENGTH} characters")
    if _NAME_RE.fullmatch(name) is None:
        raise InvalidReferenceError(
            "name",
            name,
            "must be lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', "
            "joined by '/'",
        )
    return name


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag (``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``), else raise."""
    _check_text("tag", tag)
    if _TAG_RE.fullmatch(tag) is None:
        raise InvalidReferenceError(
            "tag", tag, "must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        )
    return tag


def is_digest(value: str) -> bool:
    """True if ``value`` looks like a digest (``alg:encoded``) rather than a tag."""
    return isinstance(value, str) and ":" in value


class Digest(str):
    """A validated content digest such as ``sha256:<64 lowercase hex>``; it *is* its string.

    Only sha256 and sha512 are accepted: those are the algorithms regstore can verify.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        _check_text("digest", value)
        match = _DIGEST_RE.fullmatch(value)
        if match is None:
            raise InvalidReferenceError("digest", value, "must have the form '<algorithm>:<hex>'")
        algorithm, encoded = match.groups()
        length = SUPPORTED_ALGORITHMS.get(algorithm)
        if length is None:
            raise InvalidReferenceError(
                "digest",
                value,
                f"unsupported algorithm {algorithm!r} (supported: "
                f"{', '.join(SUPPORTED_ALGORITHMS)})",
            )
        if len(encoded) != length or re.fullmatch(r"[0-9a-f]+", encoded, re.ASCII) is None:
            raise InvalidReferenceError(
                "digest", value, f"{algorithm} needs exactly {length} lowercase hex characters"
            )
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        """``sha256`` or ``sha512``."""
        return self.partition(":")[0]

    @property
    def hex(self) -> str:  # str.hex is unrelated (bytes API); shadowing it is intended
        """The encoded part, lowercase hex."""
        return self.partition(":")[2]

    def __repr__(self) -> str:
        return f"Digest({str.__repr__(self)})"


def validate_reference(reference: str) -> str:
    """Validate a manifest reference as used in URLs and stores: a tag or a digest."""
    if is_digest(reference):
        return Digest(reference)
    return validate_tag(reference)


def _split_registry(text: str) -> tuple[str | None, str]:
    first, sep, rest = text.partition("/")
    if not sep:
        return None, text
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        if not _is_host(first):
            raise InvalidReferenceError("registry", first, "is not a valid host[:port]")
        return first, rest
    return None, text


@dataclass(frozen=True)
class Reference:
    """A full image reference ``[registry[:port]/]name[:tag][@digest]``.

    ``registry`` is normalised (``index.docker.io`` → ``docker.io``) and ``name`` gets the
    ``library/`` prefix on Docker Hub for one-component names. Use :meth:`parse`.
    """

    registry: str
    name: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.registry, str) or not _is_host(self.registry):
            raise InvalidReferenceError("registry", self.registry, "is not a valid host[:port]")
        validate_name(self.name)
        # distribution/reference caps the whole normalised name, domain included.
        if len(self.registry) + 1 + len(self.name) > NAME_MAX_LENGTH:
            raise InvalidReferenceError(
                "name",
                f"{self.registry}/{self.name}",
                f"registry and name together are longer than {NAME_MAX_LENGTH} characters",
            )
        if self.tag is not None:
            validate_tag(self.tag)
        if self.digest is not None:
            object.__setattr__(self, "digest", Digest(self.digest))

    @classmethod
    def parse(cls, text: str, *, default_registry: str = DEFAULT_REGISTRY) -> Reference:
        """Parse what users write: ``alpine``, ``127.0.0.1:5000/team/app:1.2``,
        ``ghcr.io/org/img@sha256:...``. A missing tag and digest mean ``latest``.
        """
        _check_text("reference", text)
        remainder, digest = text, None
        if "@" in text:
            remainder, _, digest_text = text.partition("@")
            digest = Digest(digest_text)
        registry, path = _split_registry(remainder)
        tag: str | None = None
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
            validate_tag(tag)
        if not path:
            raise InvalidReferenceError("reference", text, "has no repository name")
        if registry is None:
            registry = default_registry
        if registry == "index.docker.io":
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        try:
            validate_name(path)
        except InvalidReferenceError as exc:
            raise InvalidReferenceError("name", path, f"{exc.reason} (in {text!r})") from None
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, name=path, tag=tag, digest=digest)

    @property
    def reference(self) -> str:
        """What to ask a registry for: the digest when there is one, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    @property
    def repository(self) -> str:
        """``registry/name``."""
        return f"{self.registry}/{self.name}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, default_registry: str = DEFAULT_REGISTRY) -> Reference:
    """Shorthand for :meth:`Reference.parse`."""
    return Reference.parse(text, default_registry=default_registry)
