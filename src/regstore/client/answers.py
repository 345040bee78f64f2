"""What a registry's answer says of a manifest, from its headers alone: one reading for the
client's requests (:mod:`.manifests`) and the HEADs a sync asks before ``requests`` is
imported (:mod:`.early`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from regstore.errors import InvalidReferenceError
from regstore.reference import Digest
from regstore.wire import ManifestInfo

__all__ = ["announced_digest", "manifest_info", "media_type_of"]

log = logging.getLogger("regstore.client")


def announced_digest(headers: Mapping[str, str], what: str) -> Digest | None:
    """The ``Docker-Content-Digest`` of an answer (to ``what``), or None: absent, or not a
    digest (a warning says so)."""
    value = headers.get("Docker-Content-Digest")
    if not value:
        return None
    try:
        return Digest(value.strip())
    except InvalidReferenceError:
        log.warning("%s: ignoring an unusable Docker-Content-Digest header", what)
        return None


def media_type_of(headers: Mapping[str, str]) -> str:
    """The ``Content-Type`` of an answer without its parameters ("" when absent)."""
    return headers.get("Content-Type", "").split(";")[0].strip()


def manifest_info(headers: Mapping[str, str], digest: Digest | None) -> ManifestInfo | None:
    """The manifest an answer describes, or None when a header is missing (the manifest is
    then fetched to learn it)."""
    media_type = media_type_of(headers)
    length = headers.get("Content-Length", "")
    if digest is None or not media_type or not (length.isascii() and length.isdigit()):
        return None
    return ManifestInfo(digest, media_type, int(length))
