"""Image references on the command line: registry images and store images.

- A **registry image** is written as users write it for docker, skopeo or crane:
  ``127.0.0.1:5000/team/app:1.2``, ``ghcr.io/org/img@sha256:...``, ``alpine`` (=
  ``docker.io/library/alpine:latest``). A ``docker://`` prefix is accepted (and needed only for a
  registry whose host is literally ``store``).
- A **store image** is written ``store:NAME[:TAG|@DIGEST]`` (``store:team/app:1.2``,
  ``store:team/app@sha256:...``): NAME is a repository of the store chosen by ``--store``.
  Commands that only ever mean the store (``push``'s source, ``ls``, ``delete``) also accept
  the bare ``NAME[:TAG]``.

Without a tag or digest an image means ``latest``, except where tag filters (``--include``,
``--exclude``, ``--semver``, ``--latest``) select the tags of the repository instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from regstore.errors import InvalidReferenceError
from regstore.reference import DEFAULT_TAG, Digest, Reference, validate_name, validate_tag

__all__ = [
    "STORE_PREFIX",
    "ImageRef",
    "ImageRefType",
    "RegistryRef",
    "StoreRef",
    "parse_image_ref",
    "parse_store_ref",
]

STORE_PREFIX = "store:"
DOCKER_PREFIX = "docker://"


@dataclass(frozen=True)
class StoreRef:
    """``store:NAME[:TAG|@DIGEST]``; ``explicit`` says a tag or digest was written."""

    name: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def explicit(self) -> bool:
        return self.tag is not None or self.digest is not None

    @property
    def reference(self) -> str:
        """The digest, else the tag, else ``latest``."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def __str__(self) -> str:
        text = f"{STORE_PREFIX}{self.name}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class RegistryRef:
    """A registry image; ``explicit`` says a tag or digest was written (else ``latest``)."""

    ref: Reference
    explicit: bool

    @property
    def registry(self) -> str:
        return self.ref.registry

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest, else the tag."""
        return self.ref.reference

    def __str__(self) -> str:
        return str(self.ref) if self.explicit else self.ref.repository


ImageRef = StoreRef | RegistryRef


def parse_store_ref(text: str) -> StoreRef:
    """Parse ``store:NAME[:TAG|@DIGEST]`` (the ``store:`` prefix is optional here)."""
    body = text[len(STORE_PREFIX) :] if text.startswith(STORE_PREFIX) else text
    digest: Digest | None = None
    if "@" in body:
        body, _, digest_text = body.partition("@")
        digest = Digest(digest_text)
    tag: str | None = None
    colon, slash = body.rfind(":"), body.rfind("/")
    if colon > slash:
        body, tag = body[:colon], validate_tag(body[colon + 1 :])
    if not body:
        raise InvalidReferenceError("reference", text, "has no repository name")
    return StoreRef(validate_name(body), tag, digest)


def _explicit(text: str) -> bool:
    if "@" in text:
        return True
    return ":" in text.rsplit("/", 1)[-1]


#: ``localhost:5000``, ``127.0.0.1:5000``, ``registry.example:443``: a registry, not an image
_REGISTRY_ONLY = re.compile(r"(localhost|[^/:@]*\.[^/:@]*):[0-9]+")


def parse_image_ref(text: str) -> ImageRef:
    """A store image when written ``store:...``, else a registry image.

    A registry's ``host:port`` alone is refused: the reference grammar reads ``localhost:5000``
    as the Docker Hub image ``library/localhost`` tagged ``5000`` (a push would go to Docker
    Hub), which no one writing it means (Docker Hub's own images have no dot in their names).
    """
    if text.startswith(STORE_PREFIX):
        return parse_store_ref(text)
    if text.startswith(DOCKER_PREFIX):
        text = text[len(DOCKER_PREFIX) :]
    if _REGISTRY_ONLY.fullmatch(text):
        raise InvalidReferenceError(
            "reference",
            text,
            f"names a registry, not an image: add a repository ({text}/NAME[:TAG])",
        )
    return RegistryRef(Reference.parse(text), _explicit(text))


def _registry_image(text: str) -> RegistryRef | None:
    """``text`` as a registry image when it names a registry host (for a text that is no
    store name: one with a port or capitals), else None."""
    if text.startswith(STORE_PREFIX):
        return None
    try:
        ref = parse_image_ref(text)
    except InvalidReferenceError:
        return None
    host = text.removeprefix(DOCKER_PREFIX).split("/", 1)[0]
    if not isinstance(ref, RegistryRef) or host != ref.registry:
        return None
    return ref


if TYPE_CHECKING:  # click >= 8.4 types its ParamType generically; older ones are not generic
    _ParamType = click.ParamType[ImageRef]
else:
    _ParamType = click.ParamType


class ImageRefType(_ParamType):
    """A click type for image references; a malformed one is a usage error (exit 2).

    ``kind``: ``"any"`` (``store:`` or registry), ``"registry"``, ``"store"`` (``store:``
    prefix optional), or ``"store-or-registry"`` (a store image, unless it is no store name
    and names a registry host: ``HOST:PORT/NAME``; ``ghcr.io/org/app`` is a valid store name,
    and read as one).
    """

    def __init__(self, kind: str = "any") -> None:
        self.kind = kind
        self.name = {
            "any": "IMAGE",
            "registry": "REGISTRY-IMAGE",
            "store": "STORE-IMAGE",
            "store-or-registry": "IMAGE",
        }[kind]

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> ImageRef:
        if isinstance(value, (StoreRef, RegistryRef)):
            return value
        text = str(value)
        try:
            if self.kind in ("store", "store-or-registry"):
                return parse_store_ref(text)
            ref = parse_image_ref(text)
        except InvalidReferenceError as exc:
            registry = _registry_image(text) if self.kind != "any" else None
            if registry is not None and self.kind == "store-or-registry":
                return registry
            if registry is not None and self.kind == "store":
                self.fail(
                    f"{text!r} names an image of the registry {registry.registry}; this command "
                    "works on the store (store:NAME[:TAG]): `regstore copy` and `regstore pull` "
                    "take registry images",
                    param,
                    ctx,
                )
            self.fail(str(exc), param, ctx)
        if self.kind == "registry" and isinstance(ref, StoreRef):
            self.fail(f"{text!r} names a store image; a registry image is needed here", param, ctx)
        return ref
