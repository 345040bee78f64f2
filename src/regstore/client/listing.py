"""Listing endpoints: tags of a repository and the registry's catalog, across all pages.

Pages are followed through ``Link: <...>; rel="next"`` (relative or absolute), as the spec
asks, rather than by building ``last=`` ourselves. Registry 2.8 ignores ``n`` for tags and
returns them unsorted in one page; callers must not rely on order.
"""

from __future__ import annotations

import json
import logging

from regstore.client.core import ClientCore, pull_scope
from regstore.client.errors_map import Operation, http_context
from regstore.client.urls import parse_next_link, redact_url
from regstore.errors import RegistryError
from regstore.reference import validate_name

__all__ = ["ListingMixin"]

log = logging.getLogger("regstore.client")

#: A registry whose pages never end is cut off here.
MAX_PAGES = 100_000
CATALOG_SCOPE = ("registry:catalog:*",)


class ListingMixin(ClientCore):
    """``list_image_tags`` and ``catalog``."""

    def _paginate(self, url: str, op: Operation, scopes: tuple[str, ...], key: str) -> list[str]:
        items: list[str] = []
        seen = {url}
        for _ in range(MAX_PAGES):
            reply = self._call(
                "GET", url, op, ok=(200,), scopes=scopes, headers={"Accept": "application/json"}
            )
            try:
                doc = json.loads(reply.body)
                page = doc.get(key) if isinstance(doc, dict) else None
                if page is None:
                    page = []
                if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                    raise ValueError(f"{key!r} is not a list of strings")
            except (ValueError, RecursionError) as exc:
                raise RegistryError(
                    f"{op.what}: the registry sent an unreadable list ({exc})",
                    http=http_context("GET", reply.url, reply.status),
                ) from None
            items.extend(page)
            following = parse_next_link(reply.headers.get("Link"), reply.url)
            if following is None:
                break
            if following in seen or not self._endpoint.owns(following):
                log.warning("%s: not following the Link %s", op.what, redact_url(following))
                break
            seen.add(following)
            url = following
        return items

    def list_image_tags(self, name: str, n: int | None = None) -> list[str]:
        """Every tag of repository ``name``, across all pages (any order).

        ``n`` is the page size to ask for; registries may ignore it.

        Raises:
            RepositoryNotFoundError: the repository does not exist.
        """
        validate_name(name)
        if n is not None and n < 1:
            raise ValueError("n must be a positive page size")
        op = Operation("tags", f"listing tags of {name} on {self.registry}", name=name)
        return self._paginate(self._endpoint.tags_url(name, n), op, pull_scope(name), "tags")

    def catalog(self, n: int | None = None) -> list[str]:
        """Every repository name the registry lists in ``/v2/_catalog`` (a Docker extension),
        across all pages; ``n`` is the page size to ask for."""
        if n is not None and n < 1:
            raise ValueError("n must be a positive page size")
        op = Operation("catalog", f"listing the repositories of {self.registry}")
        return self._paginate(self._endpoint.catalog_url(n), op, CATALOG_SCOPE, "repositories")
