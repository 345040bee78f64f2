"""A sync's source HEADs, asked while the sync is still starting (the asking: what to ask is
:mod:`regstore.engine.early`'s).

A re-sync of a few hundred unchanged tags is a few hundred manifest HEADs the source registry
answers, and a start-up of regstore's own (``requests``, the engine, the destination's reads)
that the registry would otherwise wait for: on a machine of two cores, the two took turns.
:class:`EarlyHeads` asks them on a thread per registry, over a few kept-alive connections of
its own (:mod:`.heads`), while the rest of regstore loads: this module imports neither
``requests`` nor the rest of the client. The look-ahead
(:func:`~regstore.engine.lookahead.look_ahead`) then takes these answers instead of asking
them again.

Only a shortcut, asked as the client would ask it:

- never through a proxy (one set in the environment: nothing is asked) nor with credentials
  (the caller leaves out a registry the client would send them to);
- anonymous, as the client's first request is: a 401 (the registry wants credentials), a 429
  and any other status but 200 and 404 stop the registry's HEADs, any answer but one clean
  page its listings, and the client asks those as it always did;
- a registry named twice (by entries of different settings) is not asked at all: an answer
  is known by the registry's name only;
- an answer is kept only when it is a clean 200 with digest, type and length, or a 404
  (as the client's own HEADs at once keep); it is trusted as long as anything the look-ahead
  learns (:data:`~regstore.engine.lookahead.MAX_AGE`, counted from the HEAD).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from regstore.errors import InvalidReferenceError
from regstore.manifest import MANIFEST_ACCEPT
from regstore.reference import validate_tag

from .agent import default_user_agent
from .answers import announced_digest, manifest_info
from .heads import HeadAnswer, HeadConnections, connector, get_body, many_heads, tls_context
from .limits import ClientLimits
from .urls import Endpoint

if TYPE_CHECKING:
    import ssl

__all__ = ["CONNECTIONS", "Asked", "EarlyHeads", "Questions"]

log = logging.getLogger("regstore.client.early")

#: Connections per registry (as the client's own HEADs at once)
CONNECTIONS = 8
#: Seconds to connect, and to wait for each answer
TIMEOUT = (10.0, 60.0)
#: The largest page of tags read early (a longer one: the client lists it)
MAX_LIST_BODY = 4 << 20
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")

#: What to ask of one repository: its tags, or a function choosing them from its listing
#: (given None when it was not listed, or not in one clean page)
Asked: TypeAlias = "Sequence[str] | Callable[[Sequence[str] | None], Sequence[str]]"
#: One registry's questions: ``(registry, plain_http, verify, names, {name: asked})``: the
#: repositories whose tags to list and what to ask of each repository, the registry reached
#: as its client will be (``plain_http``: None on loopback only; ``verify``: False, True or a
#: CA file)
Questions: TypeAlias = tuple[
    str, "bool | None", "bool | str", "Sequence[str]", "Mapping[str, Asked]"
]


@dataclass(frozen=True)
class _Answer:
    digest: str | None  #: None: the source has no such tag (a 404)
    at: float  #: ``time.monotonic()`` of the HEAD


class EarlyHeads:
    """HEADs asked early (:meth:`start`), each registry's on a thread of its own;
    :meth:`digest` waits for the registry asked and answers what it learned (as
    :class:`~regstore.engine.lookahead.AskedEarly`)."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str, str], _Answer] = {}
        self._listed: dict[tuple[str, str], list[str]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._listers: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        #: by registry, the tags still worth asking of each repository (:meth:`hold`)
        self._held: dict[str, dict[str, frozenset[str]]] = {}
        #: the repositories whose listing is over (listed or not), by registry; notified, as
        #: :meth:`hold` and :meth:`close` are
        self._tried: set[tuple[str, str]] = set()
        self._listing = threading.Condition()
        #: the registries that answered a HEAD with anything but 200 or 404: asked no more
        self._refused: set[str] = set()

    @classmethod
    def start(cls, questions: Sequence[Questions]) -> EarlyHeads | None:
        """Start asking each registry of ``questions`` (each once: a registry named twice is
        not asked at all), on threads of its own; None when nothing is asked (no questions, a
        proxy in the environment). Never raises: what cannot be asked early is not.

        A repository's tags given as a function are chosen from its listing, once it is in;
        :meth:`hold` narrows the tags still to ask, later."""
        if _proxied():
            return None
        early = cls()
        parsed: list[tuple[Endpoint, Questions]] = []
        for question in questions:
            try:
                parsed.append((Endpoint.parse(question[0], plain_http=question[1]), question))
            except ValueError as exc:  # (the client reports it: nothing asked here)
                log.debug("%s: nothing asked early: %s", question[0], exc)
        named = collections.Counter(endpoint.registry for endpoint, _ in parsed)
        for endpoint, (registry, _, verify, names, tags) in parsed:
            if named[endpoint.registry] > 1:
                continue
            try:
                early._start_registry(endpoint, verify, names, tags)
            except Exception as exc:  # a shortcut: the caller asks for itself
                log.debug("%s: nothing asked early: %s", registry, exc)
        return early if early._listers or early._threads else None

    @property
    def asked_digests(self) -> bool:
        """True when some digest was asked, or is still to be (not only listings): of a
        registry :meth:`hold` narrowed, only when it left some tag to ask."""
        return any(
            registry not in self._held or any(self._held[registry].values())
            for registry in self._threads
        )

    def hold(self, registry: str, held: Mapping[str, Collection[str]]) -> None:
        """From now on, ask ``registry`` only the tags ``held`` names of each repository (the
        tags a store holds: the digests of the others are of no use); a repository it does
        not name is asked nothing more. Answers already in are kept."""
        with self._listing:  # (an asker waiting to ask what a listing could not tell)
            self._held[registry] = {name: frozenset(tags) for name, tags in held.items()}
            self._listing.notify_all()

    def _wanted(self, key: tuple[str, str, str]) -> bool:
        registry, name, tag = key
        if self._stop.is_set() or registry in self._refused:
            return False
        held = self._held.get(registry)
        return held is None or tag in held.get(name, ())

    def _start_registry(
        self,
        endpoint: Endpoint,
        verify: bool | str,
        names: Sequence[str],
        asked: Mapping[str, Asked],
    ) -> None:
        # everything that can fail, before any thread starts
        tls = _tls(verify) if endpoint.scheme == "https" else None
        connect = connector(endpoint.base_url, timeout=TIMEOUT, tls=tls)
        headers = {"User-Agent": default_user_agent(), "Connection": "keep-alive"}
        listed = list(dict.fromkeys(names))
        lists = [(name, endpoint.tags_url(name)) for name in listed]
        for name, tags in asked.items():
            if not callable(tags):  # (a tag no URL can name fails here, before any thread)
                for tag in tags:
                    endpoint.manifest_url(name, tag)
        jobs: dict[str, tuple[dict[str, threading.Thread], Callable[[], None]]] = {}
        if lists:
            jobs["tags-"] = (
                self._listers,
                functools.partial(self._list, endpoint.registry, lists, headers, connect),
            )
        if any(callable(tags) or tags for tags in asked.values()):
            heads = {**headers, "Accept": MANIFEST_ACCEPT}
            jobs[""] = (
                self._threads,
                functools.partial(self._choose_and_ask, endpoint, listed, asked, heads, connect),
            )
        for kind, (threads, work) in jobs.items():
            thread = threading.Thread(
                target=work, name=f"regstore-early-{kind}{endpoint.registry}", daemon=True
            )
            thread.start()
            threads[endpoint.registry] = thread  # (only a started thread is waited for)

    def _list(
        self,
        registry: str,
        lists: list[tuple[str, str]],
        headers: dict[str, str],
        connect: Callable[[], socket.socket],
    ) -> None:
        # One page each, over one connection; anything but one clean page is left to the client
        # (pages, invalid names, errors: its own listing reports them as it always did).
        sock: socket.socket | None = None
        try:
            sock = connect()
            for name, url in lists:
                if self._stop.is_set():
                    return
                answer, body = get_body(
                    sock, url, {**headers, "Accept": "application/json"}, MAX_LIST_BODY, TIMEOUT[1]
                )
                listed = None if body is None or "Link" in answer.headers else _tags(body)
                if listed is not None:
                    self._listed[(registry, name)] = listed
                self._tried_listing(registry, [name])
                if body is None or "close" in answer.headers.get("Connection", "").lower():
                    return  # (an unread body would be taken for the next answer)
        except Exception as exc:  # a shortcut: the client lists what is not listed here
            log.debug("early listings failed: %s", exc)
        finally:
            if sock is not None:
                sock.close()
            self._tried_listing(registry, [name for name, _ in lists])  # (the rest: none)

    def _tried_listing(self, registry: str, names: Sequence[str]) -> None:
        with self._listing:
            self._tried.update((registry, name) for name in names)
            self._listing.notify_all()

    def _choose_and_ask(
        self,
        endpoint: Endpoint,
        listed: Sequence[str],
        asked: Mapping[str, Asked],
        headers: dict[str, str],
        connect: Callable[[], socket.socket],
    ) -> None:
        # Each repository's tags are chosen once its listing is over (at once for tags given
        # as such; where the listing could not tell, once held tags are known), and asked in
        # batches of what is ready: the listings of the next repositories go on meanwhile.
        # The connections stay open from one batch to the next; a refusal ends them all.
        registry = endpoint.registry
        waiting = dict(asked)
        kept = HeadConnections(connect, CONNECTIONS)
        try:
            while waiting:
                with self._listing:
                    if self._stop.is_set() or registry in self._refused:
                        return
                    ready = [
                        n for n, tags in waiting.items() if self._ready(registry, n, listed, tags)
                    ]
                    if not ready:
                        self._listing.wait()
                        continue
                keys: list[tuple[str, str, str]] = []
                urls: list[str] = []
                for name in ready:
                    tags = waiting.pop(name)
                    try:
                        listing = self._listed.get((registry, name), None)
                        if callable(tags) and (listing is not None or name not in listed):
                            tags = tags(listing)
                        elif callable(tags):  # (not listed cleanly: the tags the store holds)
                            tags = sorted(self._held.get(registry, {}).get(name, ()))
                        chosen = list(dict.fromkeys(tags))
                        urls += [endpoint.manifest_url(name, tag) for tag in chosen]
                    except Exception as exc:  # a shortcut: the images ask for themselves
                        log.debug("%s: nothing asked early: %s", name, exc)
                        continue
                    keys += [(registry, name, tag) for tag in chosen]
                self._ask(registry, urls, keys, headers, kept)
        finally:
            kept.close()

    def _ready(self, registry: str, name: str, listed: Sequence[str], tags: Asked) -> bool:
        """Whether the tags to ask of ``name`` can be chosen: given as such, or its listing
        is over (or none), and where it could not tell them, the tags held are known."""
        if not callable(tags) or name not in listed:
            return True
        if (registry, name) not in self._tried:
            return False
        return (registry, name) in self._listed or registry in self._held

    def _ask(
        self,
        registry: str,
        urls: list[str],
        keys: list[tuple[str, str, str]],
        headers: dict[str, str],
        connect: Callable[[], socket.socket] | HeadConnections,
    ) -> None:
        if not urls:
            return

        def on_answer(answer: HeadAnswer) -> bool:  # (False stops the batch, a refusal all)
            if answer.status not in (200, 404):
                self._refused.add(registry)
            return answer.status in (200, 404) and not self._stop.is_set()

        asked = time.monotonic()  # (an answer is as old as the batch: trusted no longer)
        # Each answer read as it comes, while the rest are asked: the caller, waiting for the
        # last, then finds them all read (300 of them took 2 ms after the last answer).
        learned: dict[tuple[str, str, str], _Answer] = {}

        def each(index: int, answer: HeadAnswer) -> None:
            kept = _kept(answer, asked)
            if kept is not None:
                learned[keys[index]] = kept

        try:
            many_heads(
                urls,
                headers,
                connections=CONNECTIONS,
                connect=connect,
                on_answer=on_answer,
                each=each,
                wanted=lambda index: self._wanted(keys[index]),
            )
        except Exception as exc:  # a shortcut: the caller asks for itself
            log.debug("early HEADs failed: %s", exc)
            return
        self._answers.update(learned)

    def digest(self, registry: str, name: str, reference: str) -> tuple[str | None, float] | None:
        """What the early HEAD of ``name:reference`` at ``registry`` answered (after waiting for
        that registry's HEADs): the digest (None: no such tag) and when it was asked; None when
        it was not asked or not cleanly answered."""
        thread = self._threads.get(registry)
        if thread is None:
            return None
        thread.join()
        answer = self._answers.get((registry, name, reference))
        return None if answer is None else (answer.digest, answer.at)

    def tags(self, registry: str, name: str) -> list[str] | None:
        """The tags of ``name`` at ``registry``, listed early (after waiting for that
        registry's listings): what the client's listing would give, each once; None when not
        listed, or not in one clean page of valid tags."""
        lister = self._listers.get(registry)
        if lister is None:
            return None
        lister.join()
        listed = self._listed.get((registry, name))
        return None if listed is None else list(listed)

    def wait(self) -> None:
        """Wait until every registry has answered (or given up)."""
        for thread in (*self._listers.values(), *self._threads.values()):
            thread.join()

    def close(self) -> None:
        """Stop asking and wait for every thread (before a fork: none may be left running)."""
        self._stop.set()
        with self._listing:  # (an asker waiting for a listing)
            self._listing.notify_all()
        self.wait()


def _proxied() -> bool:
    """True when the environment names a proxy (as ``requests`` would read it, any case)."""
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES)


def _tls(verify: bool | str) -> ssl.SSLContext:
    # requests' own default bundle, and the variables it reads in place of it
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    import certifi

    return tls_context(verify, certifi.where())


def _tags(body: bytes) -> list[str] | None:
    """The tags of one page of ``/tags/list``, each once; None unless every entry is a valid
    tag (the client's listing keeps and reports invalid ones its own way)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    page = doc.get("tags") if isinstance(doc, dict) else None
    if page is None:
        page = []
    if not isinstance(page, list) or len(page) > ClientLimits.resolve().max_list_entries:
        return None
    for tag in page:
        if not isinstance(tag, str):
            return None
        try:
            validate_tag(tag)
        except InvalidReferenceError:
            return None
    return list(dict.fromkeys(page))


def _kept(answer: HeadAnswer | None, asked: float) -> _Answer | None:
    """What is kept of an answer: a 404, or a 200 with digest, type and length (as the
    client's own HEADs keep)."""
    if answer is None or answer.status not in (200, 404):
        return None
    if answer.status == 404:
        return _Answer(None, asked)
    info = manifest_info(answer.headers, announced_digest(answer.headers, "an early HEAD"))
    return None if info is None else _Answer(str(info.digest), asked)
