"""Listing endpoints: tags of a repository and the registry's catalog, across all pages.

Pages are followed through ``Link: <...>; rel="next"`` (relative or absolute), as the spec
asks, rather than by building ``last=`` ourselves. Registry 2.8 ignores ``n`` for tags and
returns them unsorted in one page; callers must not rely on order.

A registry cannot make a listing run away (see :mod:`regstore.client.limits`):

- at most ``max_pages`` pages are fetched and at most ``max_list_entries`` names received
  (duplicates count): past either, :class:`~regstore.errors.PagingLimitError` names the
  registry, the repository, the limit and how to raise it. A partial list is never returned,
  since a caller choosing "the highest version" from it would silently choose wrong;
- a ``Link`` back to a page already read ends the listing quietly (a warning is logged):
  every page from there on was read already, so the list is whole as far as the registry
  serves it. Some registries link their last page to itself;
- a ``Link`` to another URL whose ``last`` was already asked for means the registry's paging
  does not advance: :class:`~regstore.errors.PagingError`. Whether ``last`` grows is not
  checked: registries sort differently (case, numbers) and some send opaque tokens there;
- names are de-duplicated, keeping the order of first appearance;
- names that cannot be what the listing lists (tags: :func:`~regstore.reference.validate_tag`,
  repositories: :func:`~regstore.reference.validate_name`) are kept for the caller to report
  (sync lists each as skipped) only up to :data:`INVALID_NAMES_KEPT` characters in all. Past
  that, each is left out as its page is read and counted in one warning, with an example cut
  short: valid names are bounded by their grammar's length and ``max_list_entries``, invalid
  ones by nothing, so pages of one 40 MB "tag" each would otherwise pile up in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from regstore.client.core import ClientCore, pull_scope
from regstore.client.errors_map import Operation, http_context
from regstore.client.limits import how_to_raise
from regstore.client.transport import Reply
from regstore.client.urls import parse_next_link, query_value, redact_url
from regstore.errors import InvalidReferenceError, PagingError, PagingLimitError, RegistryError
from regstore.reference import NAME_MAX_LENGTH, validate_name, validate_tag
from regstore.safetext import escaped

__all__ = ["INVALID_NAMES_KEPT", "ListingMixin"]

log = logging.getLogger("regstore.client")

_T = TypeVar("_T", bound=Hashable)

CATALOG_SCOPE = ("registry:catalog:*",)

#: Characters of invalid names one listing keeps for its caller's report; past them, invalid
#: names are only counted. A real registry lists few or none (it refuses them on push).
INVALID_NAMES_KEPT = 64 * 1024
_TAG_MAX_LENGTH = 128
#: Characters of a left-out name the warning shows.
_SHOWN_LENGTH = 64


@dataclass
class _InvalidNames:
    """Decides, name by name as pages are read, which names a listing keeps: every valid
    one, and invalid ones while they fit in INVALID_NAMES_KEPT characters; counts the rest."""

    validate: Callable[[str], str]
    max_length: int
    kept_chars: int = 0
    left_out: int = 0
    example: str = ""

    def _valid(self, name: str) -> bool:
        # the length first: the error of a failed check quotes the whole name
        if len(name) > self.max_length:
            return False
        try:
            self.validate(name)
        except InvalidReferenceError:
            return False
        return True

    def keep(self, name: str) -> bool:
        """Whether to keep ``name`` (a name not kept yet)."""
        if self._valid(name):
            return True
        if self.kept_chars + len(name) <= INVALID_NAMES_KEPT:
            self.kept_chars += len(name)
            return True
        self.left_out += 1
        if not self.example:
            self.example = escaped(name, _SHOWN_LENGTH)
        return False

    def warn(self, op: Operation, noun: str) -> None:
        """Log how many invalid names were left out, if any."""
        if self.left_out:
            log.warning(
                "%s: left out %d invalid %s the registry listed, such as '%s' (a listing "
                "keeps invalid names only up to %d characters in all)",
                op.what,
                self.left_out,
                noun,
                self.example,
                INVALID_NAMES_KEPT,
            )


class ListingMixin(ClientCore):
    """``list_image_tags`` and ``catalog``."""

    def _page_items(self, reply: Reply, op: Operation, key: str) -> list[str]:
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
        return page

    def _limit_error(
        self, op: Operation, reply: Reply, option: str, detail: str
    ) -> PagingLimitError:
        value = getattr(self._limits, option)
        return PagingLimitError(
            f"{op.what}: {detail} ({option}={value}); stopped. If the "
            f"{'repository' if op.name else 'registry'} really lists that many, "
            f"{how_to_raise(option)}",
            registry=self.registry,
            name=op.name or None,
            limit=option,
            value=value,
            http=http_context("GET", reply.url, reply.status),
        )

    def _paginate(
        self,
        url: str,
        op: Operation,
        scopes: tuple[str, ...],
        key: str,
        invalid: _InvalidNames,
        *,
        complete: bool = False,
    ) -> list[str]:
        pages = self._paginate_items(
            url,
            op,
            scopes,
            lambda reply: self._page_items(reply, op, key),
            "application/json",
            complete=complete,
            keep=invalid.keep,
        )
        assert pages is not None  # only None when a 404 is accepted
        invalid.warn(op, "tags" if key == "tags" else "repository names")
        return pages

    def _paginate_items(
        self,
        url: str,
        op: Operation,
        scopes: tuple[str, ...],
        items: Callable[[Reply], list[_T]],
        accept: str,
        *,
        absent_ok: bool = False,
        complete: bool = False,
        keep: Callable[[_T], bool] | None = None,
    ) -> list[_T] | None:
        """Every item of every page (``items`` reads one page), bounded as the module says.

        With ``absent_ok`` a 404 on the first page returns None (the endpoint does not exist
        there, e.g. referrers on registry 2.8) instead of raising. A next-page Link that is
        not followed (another origin, a page read already) ends the list with a warning;
        with ``complete`` it raises PagingError instead (a caller deleting what the list
        lacks must not take a list cut short for the whole). ``keep`` decides, as each page
        is read, whether to keep an item not kept yet (received items all count towards
        ``max_list_entries``, kept or not).
        """
        limits = self._limits
        found: dict[_T, None] = {}  # insertion-ordered set
        fetched: set[str] = set()
        asked_last: set[str] = set()
        received = 0
        pages = 0
        while True:
            first = pages == 0
            reply = self._call(
                "GET",
                url,
                op,
                ok=(200, 404) if absent_ok and first else (200,),
                scopes=scopes,
                headers={"Accept": accept},
            )
            if reply.status == 404:
                return None
            pages += 1
            fetched.add(url)
            last = query_value(url, "last")
            if last is not None:
                asked_last.add(last)
            page = items(reply)
            received += len(page)
            if received > limits.max_list_entries:
                raise self._limit_error(
                    op,
                    reply,
                    "max_list_entries",
                    f"the registry sent more than {limits.max_list_entries} names",
                )
            if keep is not None:
                page = [item for item in page if item in found or keep(item)]
            found.update(dict.fromkeys(page))
            try:
                following = parse_next_link(reply.headers.get("Link"), reply.url)
            except ValueError as exc:
                raise RegistryError(
                    f"{op.what}: the registry sent an unusable Link header ({exc})",
                    http=http_context("GET", reply.url, reply.status),
                ) from None
            if following is None:
                break
            if not self._endpoint.owns(following) or following in fetched:
                why = (
                    "goes back to a page already read"
                    if following in fetched
                    else "leads to another origin, not followed"
                )
                if complete:
                    raise PagingError(
                        f"{op.what}: the next-page Link {redact_url(following)} {why}: the list "
                        f"may lack names after the {received} read",
                        registry=self.registry,
                        name=op.name or None,
                        http=http_context("GET", reply.url, reply.status),
                    )
                log.warning(
                    "%s: the next-page Link %s %s; the list ends there",
                    op.what,
                    redact_url(following),
                    why,
                )
                break
            next_last = query_value(following, "last")
            if next_last is not None and next_last in asked_last:
                raise PagingError(
                    f"{op.what}: the registry's next-page Link asks again for last={next_last!r}, "
                    "a position already listed: its paging does not advance",
                    registry=self.registry,
                    name=op.name or None,
                    http=http_context("GET", reply.url, reply.status),
                )
            if pages >= limits.max_pages:
                raise self._limit_error(
                    op,
                    reply,
                    "max_pages",
                    f"the registry still had a next page after {pages} pages",
                )
            url = following
        return list(found)

    def list_image_tags(
        self, name: str, n: int | None = None, *, complete: bool = False
    ) -> list[str]:
        """Every tag of repository ``name``, across all pages (any order, each tag once).

        ``n`` is the page size to ask for; registries may ignore it. A next-page Link that is
        not followed (another origin, a page already read) ends the list with a warning; with
        ``complete``, PagingError instead. Names that are not valid tags are in the list only
        while they fit in :data:`INVALID_NAMES_KEPT` characters (the rest: one warning).

        Raises:
            RepositoryNotFoundError: the repository does not exist.
            PagingLimitError: more than the client's ``max_pages`` pages or
                ``max_list_entries`` tags.
            PagingError: the registry's paging goes back to a position already listed.
        """
        validate_name(name)
        if n is not None and n < 1:
            raise ValueError("n must be a positive page size")
        op = Operation("tags", f"listing tags of {name} on {self.registry}", name=name)
        return self._paginate(
            self._endpoint.tags_url(name, n),
            op,
            pull_scope(name),
            "tags",
            _InvalidNames(validate_tag, _TAG_MAX_LENGTH),
            complete=complete,
        )

    def catalog(self, n: int | None = None) -> list[str]:
        """Every repository name the registry lists in ``/v2/_catalog`` (a Docker extension),
        across all pages, each once; ``n`` is the page size to ask for. Bounded like
        :meth:`list_image_tags` (PagingLimitError, PagingError)."""
        if n is not None and n < 1:
            raise ValueError("n must be a positive page size")
        op = Operation("catalog", f"listing the repositories of {self.registry}")
        return self._paginate(
            self._endpoint.catalog_url(n),
            op,
            CATALOG_SCOPE,
            "repositories",
            _InvalidNames(validate_name, NAME_MAX_LENGTH),
        )
