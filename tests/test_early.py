"""A sync asks its sources for the digests of the tags its store holds while it is still
starting (``engine/early.py``): the same answers the client gets, only where nothing is wasted
and nothing is sent that the client would not send — against the real registry behind a fault
proxy, into a file store; and the command asks them before it has imported ``requests``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store
from regstore.cli.app import DeferredClient
from regstore.client import Client
from regstore.client.early import CONNECTIONS, EarlyHeads
from regstore.engine import RegistryImage, StoreImage, transfer_many
from regstore.engine.early import MIN_TAGS, early_questions, listed_questions
from regstore.engine.filters import TagFilter
from regstore.engine.lookahead import look_ahead
from regstore.engine.syncfile import SyncSpec, parse_sync_text
from regstore.store import ObjectStore
from regstore.testing.builders import build_image
from tests.support.engine import seed_registry
from tests.support.proxy import FaultProxy
from tests.support.registry import RegistryServer

TAGS = [f"e{i}" for i in range(MIN_TAGS + 2)]
HEADS = r"^/v2/ea/app/manifests/"


def _start(
    spec: SyncSpec, tags_of: Callable[[str], list[str]], extra: TagFilter | None = None
) -> EarlyHeads | None:
    """As the command: the questions of ``spec``, asked of each source over plain HTTP."""
    questions = early_questions(spec, tags_of, extra)
    return EarlyHeads.start([(c.registry, True, True, n, h) for c, n, h in questions])


def _start_listed(spec: SyncSpec, extra: TagFilter | None = None) -> EarlyHeads | None:
    """As the command, before its store is open: what the file alone asks of each source."""
    questions = listed_questions(spec, extra)
    return EarlyHeads.start([(c.registry, True, True, n, a) for c, n, a in questions])


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy in the environment turns early asking off (the client would go through it)
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _raw(host: str, store: Path, **repo: object) -> dict[str, object]:
    source = {"registry": host, "plain_http": True, "repositories": [{"name": "ea/app", **repo}]}
    return {"target": {"store": store.as_uri()}, "sources": [source]}


def _spec(host: str, store: Path, **repo: object) -> SyncSpec:
    return parse_sync_text(json.dumps(_raw(host, store, **repo)))


@pytest.fixture
def mirrored(
    registry: RegistryServer, fault_proxy_factory: Callable[..., FaultProxy], tmp_path: Path
) -> Iterator[tuple[FaultProxy, Client, ObjectStore, Path]]:
    """TAGS seeded into ``ea/app`` and mirrored into a file store through a proxy whose
    records start empty: (the proxy, its client, the store, the store's path)."""
    for i, tag in enumerate(TAGS):
        seed_registry(registry.url, "ea/app", tag, build_image(seed=700 + i, layer_size=256))
    proxy = fault_proxy_factory(registry)
    client = Client(proxy.host, use_docker_config=False, backoff=0.01, sleep=lambda s: None)
    path = tmp_path / "mirror"
    with open_store(str(path)) as store:
        jobs = [(RegistryImage(client, "ea/app", t), StoreImage(store, "ea/app")) for t in TAGS]
        assert transfer_many(jobs).ok
        proxy.clear_records()
        yield proxy, client, store, path


def _started(proxy: FaultProxy, store: ObjectStore, path: Path, **repo: object) -> EarlyHeads:
    early = _start(_spec(proxy.host, path, **repo), store.tags)
    assert early is not None
    return early


def test_the_early_answers_are_the_clients_and_each_tag_is_asked_once(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, store, path = mirrored
    before = time.monotonic()
    early = _started(proxy, store, path)
    for tag in TAGS:
        got = early.digest(client.registry, "ea/app", tag)
        info = client.head_manifest("ea/app", tag)
        assert got is not None and info is not None
        assert got[0] == str(info.digest)
        assert before <= got[1] <= time.monotonic()
    assert proxy.count("HEAD", HEADS) == 2 * len(TAGS)  # the early ones, then the client's
    assert early.digest(client.registry, "ea/app", "never-asked") is None
    assert early.digest("elsewhere:5000", "ea/app", TAGS[0]) is None


def test_the_early_answers_are_read_as_they_come_not_after_the_last(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the look-ahead waits for the last answer: what is left to read then, it waits for too)
    import regstore.client.early as early_module

    proxy, client, store, path = mirrored
    batch_over: list[bool] = []
    read_when: list[bool] = []
    real_heads, real_kept = early_module.many_heads, early_module._kept

    def heads(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_heads(*args, **kwargs)
        finally:
            batch_over.append(True)

    def kept(*args: Any) -> Any:
        read_when.append(bool(batch_over))
        return real_kept(*args)

    monkeypatch.setattr(early_module, "many_heads", heads)
    monkeypatch.setattr(early_module, "_kept", kept)
    early = _started(proxy, store, path)
    for tag in TAGS:
        got = early.digest(client.registry, "ea/app", tag)
        assert got is not None and got[0] == store.manifest_digest("ea/app", tag)
    assert batch_over and read_when == [False] * len(TAGS)


def test_closing_stops_the_heads_at_once(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, _, store, path = mirrored
    proxy.delay("HEAD", HEADS, 0.2, times=None)
    early = _started(proxy, store, path)
    early.close()  # (a sync about to fork, or failing: nothing may be left running)
    assert proxy.count("HEAD", HEADS) <= CONNECTIONS < len(TAGS)


def test_the_early_listing_is_the_clients_and_asked_once(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, store, path = mirrored
    early = _started(proxy, store, path)
    assert early.tags(client.registry, "ea/app") == client.list_image_tags("ea/app")
    assert sorted(early.tags(client.registry, "ea/app") or ()) == sorted(TAGS)
    assert proxy.count("GET", r"^/v2/ea/app/tags/list") == 2  # early, then the client's
    assert early.tags(client.registry, "ea/other") is None


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Link": '</v2/ea/app/tags/list?last=e1&n=2>; rel="next"'}, '{"tags": ["e0", "e1"]}'),
        ({}, '{"name": "ea/app", "tags": ["e0", ".."]}'),
        ({}, '{"name": "ea/app", "tags": "e0"}'),
        ({}, "not json"),
    ],
    ids=["paged", "invalid tag", "not a list", "not json"],
)
def test_a_listing_the_client_reads_its_own_way_is_left_to_it(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], headers: dict[str, str], body: str
) -> None:
    proxy, client, store, path = mirrored
    proxy.override_status("GET", r"^/v2/ea/app/tags/list", 200, times=1, headers=headers, body=body)
    early = _started(proxy, store, path)
    assert early.tags(client.registry, "ea/app") is None
    # the digests are asked all the same
    assert early.digest(client.registry, "ea/app", TAGS[0]) is not None


def test_a_tag_gone_from_the_source_is_known_absent(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, store, path = mirrored
    proxy.override_status("HEAD", HEADS + TAGS[0] + "$", 404, times=None, forward=False)
    early = _started(proxy, store, path)
    gone = early.digest(client.registry, "ea/app", TAGS[0])
    assert gone is not None and gone[0] is None
    kept = early.digest(client.registry, "ea/app", TAGS[1])
    assert kept is not None and kept[0] is not None


def test_only_the_tags_the_filters_take_are_asked(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, store, path = mirrored
    spec = _spec(proxy.host, path, tags={"exclude": ["^e1$"]})
    early = _start(spec, store.tags, TagFilter(exclude=("^e2$",)))
    assert early is not None
    early.wait()
    assert proxy.count("HEAD", HEADS) == len(TAGS) - 2
    assert early.digest(client.registry, "ea/app", "e1") is None
    assert early.digest(client.registry, "ea/app", "e2") is None
    assert early.digest(client.registry, "ea/app", "e3") is not None


@pytest.mark.parametrize("case", ["few tags", "proxy", "catalog", "registry target"])
def test_no_digest_is_asked_where_few_tags_are_held_or_the_client_would_go_elsewhere(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    proxy, _, store, path = mirrored
    spec = _spec(proxy.host, path)
    tags_of: Callable[[str], list[str]] = store.tags
    source = {"registry": proxy.host, "plain_http": True}
    if case == "few tags":
        tags_of = lambda name: store.tags(name)[: MIN_TAGS - 1]  # noqa: E731
    elif case == "proxy":
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    elif case == "catalog":
        catalog = {**source, "catalog": {"include": ["^ea/"]}}
        spec = parse_sync_text(
            json.dumps({"target": {"store": path.as_uri()}, "sources": [catalog]})
        )
    else:
        repos = {**source, "repositories": [{"name": "ea/app"}], "prefix": "copy/"}
        spec = parse_sync_text(json.dumps({"target": source, "sources": [repos]}))
    early = _start(spec, tags_of)
    if case == "few tags":  # listed all the same (the plan lists it anyway), no digest asked
        assert early is not None and early.tags(proxy.host, "ea/app") is not None
        assert all(early.digest(proxy.host, "ea/app", tag) is None for tag in TAGS)
    else:
        assert early is None
    assert proxy.count("HEAD") == 0


def test_a_no_op_re_sync_never_makes_a_client(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], tmp_path: Path
) -> None:
    proxy, _, _, path = mirrored
    spec_path = tmp_path / "sync.json"
    spec_path.write_text(json.dumps(_raw(proxy.host, path)))
    # nor imports what only a transfer, TLS, a non-ASCII host or an entry-point lookup
    # importlib.metadata must do would need (each costs a start-up milliseconds)
    unused = ["requests", "ssl", "encodings.idna", "importlib.metadata", "email"]
    probe = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print('loaded at exit:', [m for m in {unused!r} "
        "if m in sys.modules], file=sys.stderr))\n"
    )
    done = _sync_cli(spec_path, "--json", probe=probe)
    assert done.returncode == 0, done.stderr
    statuses = [o["status"] for o in json.loads(done.stdout)["images"]]
    assert statuses == ["skipped"] * len(TAGS)
    assert "loaded at exit: []" in done.stderr
    assert proxy.count("GET", r"/tags/list") == 1
    assert proxy.count("HEAD", HEADS) == len(TAGS)


def test_a_first_mirror_stops_asking_once_it_has_read_its_empty_store(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], tmp_path: Path
) -> None:
    proxy, _, _, _ = mirrored
    proxy.delay("HEAD", HEADS, 1.0, times=None)  # (the store is read long before these end)
    spec_path = tmp_path / "sync.json"
    spec_path.write_text(json.dumps(_raw(proxy.host, tmp_path / "fresh")))
    done = _sync_cli(spec_path, "--json", probe=PROBE)
    assert done.returncode == 0, done.stderr
    assert "early HEADs: True" in done.stderr
    statuses = [o["status"] for o in json.loads(done.stdout)["images"]]
    assert statuses == ["copied"] * len(TAGS)
    # at most what was in flight when the store was read: none of its tags is held
    assert proxy.count("HEAD", HEADS) <= CONNECTIONS < len(TAGS)


def test_a_sync_given_credentials_asks_nothing_early(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], tmp_path: Path
) -> None:
    proxy, _, _, path = mirrored
    spec_path = tmp_path / "sync.json"
    spec_path.write_text(json.dumps({"target": {"store": path.as_uri()}, "sources": [
        {"registry": proxy.host, "plain_http": True, "username": "someone",
         "password_env": "EARLY_PASSWORD", "repositories": [{"name": "ea/app"}]}]}))  # fmt: skip
    done = _sync_cli(spec_path, "--json", probe=PROBE, env={"EARLY_PASSWORD": "secret"})
    assert done.returncode == 0, done.stderr
    assert "early HEADs: False" in done.stderr
    # the client's own HEADs at once: the first the ordinary way, the rest over its connections
    assert proxy.count("HEAD", HEADS) == len(TAGS)


def test_a_registry_wanting_credentials_stops_the_early_heads(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, store, path = mirrored
    proxy.override_status(
        "HEAD", HEADS, 401, times=None, headers={"WWW-Authenticate": 'Basic realm="r"'}
    )
    early = _started(proxy, store, path)
    assert all(early.digest(client.registry, "ea/app", tag) is None for tag in TAGS)
    # each connection stops at its first 401: the rest is left to the client
    assert proxy.count("HEAD", HEADS) <= CONNECTIONS


def test_a_question_that_cannot_be_asked_leaves_the_others_asked(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, _store, _ = mirrored
    # a held tag no registry could be asked for (a plugin store's), on another registry
    early = EarlyHeads.start(
        [
            ("127.0.0.1:9", True, True, ["ea/app"], {"ea/app": [".."] * MIN_TAGS}),
            (proxy.host, True, True, ["ea/app"], {"ea/app": TAGS}),
        ]
    )
    assert early is not None
    assert early.tags("127.0.0.1:9", "ea/app") is None
    assert early.digest("127.0.0.1:9", "ea/app", "..") is None
    assert early.digest(client.registry, "ea/app", TAGS[0]) is not None
    early.close()


def test_a_registry_named_twice_is_not_asked(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, _client, _, _ = mirrored
    early = EarlyHeads.start(
        [
            (proxy.host, True, True, ["ea/app"], {"ea/app": TAGS}),
            (f"http://{proxy.host}", None, False, ["ea/app"], {}),
        ]
    )
    assert early is None
    assert proxy.count() == 0


def test_latest_narrows_the_held_tags_asked(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, _client, store, path = mirrored
    early = _start(_spec(proxy.host, path, tags={"latest": MIN_TAGS}), store.tags)
    assert early is not None
    early.wait()
    assert proxy.count("HEAD", HEADS) == MIN_TAGS
    # a repository moving its referrers: each image asks its own, none early
    early = _start(_spec(proxy.host, path, referrers=True), store.tags)
    assert early is not None and not early.asked_digests
    early.wait()
    # exact tags: asked, never listed (the plan lists nothing)
    proxy.clear_records()
    early = _start(_spec(proxy.host, path, tags=TAGS), store.tags)
    assert early is not None
    early.wait()
    assert proxy.count("GET") == 0 and proxy.count("HEAD", HEADS) == len(TAGS)


def test_the_look_ahead_takes_the_early_answers_and_asks_the_source_nothing(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, store, path = mirrored
    early = _started(proxy, store, path)
    early.wait()
    asked = proxy.count("HEAD", HEADS)
    jobs = [(RegistryImage(client, "ea/app", t), StoreImage(store, "ea/app"), t) for t in TAGS]
    known = look_ahead(jobs, early=early)
    assert proxy.count("HEAD", HEADS) == asked  # nothing asked again
    for (_, _, tag), k in zip(jobs, known, strict=True):
        answer = early.digest(client.registry, "ea/app", tag)
        assert k is not None and answer is not None
        assert k.source == answer[0] == k.destination  # unchanged: both ends name one digest
        assert k.at == answer[1]  # trusted as long as from the HEAD, not from now


def test_before_the_store_is_read_the_tags_listed_that_the_filters_take_are_asked(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, _, path = mirrored
    spec = _spec(proxy.host, path, tags={"exclude": ["^e1$"]})
    early = _start_listed(spec, TagFilter(exclude=("^e2$",)))
    assert early is not None and early.asked_digests
    early.wait()
    # listed once, then each tag the filters take asked once, as the client would answer
    assert proxy.count("GET", r"^/v2/ea/app/tags/list") == 1
    assert proxy.count("HEAD", HEADS) == len(TAGS) - 2
    assert early.digest(client.registry, "ea/app", "e1") is None
    got = early.digest(client.registry, "ea/app", "e3")
    info = client.head_manifest("ea/app", "e3")
    assert got is not None and info is not None and got[0] == str(info.digest)
    # exact tags: asked, never listed; a listing that is not one clean page: nothing asked
    proxy.clear_records()
    early = _start_listed(_spec(proxy.host, path, tags=TAGS[:3]))
    assert early is not None
    early.wait()
    assert proxy.count("GET") == 0 and proxy.count("HEAD", HEADS) == 3
    # a listing that is not one clean page: the tags the store holds, once they are known
    proxy.clear_records()
    proxy.override_status("GET", r"^/v2/ea/app/tags/list", 200, times=1, body="not json")
    early = _start_listed(_spec(proxy.host, path))
    assert early is not None
    time.sleep(0.3)  # (listed by now: nothing asked before the store's tags are known)
    assert proxy.count("HEAD") == 0 and early.tags(client.registry, "ea/app") is None
    early.hold(client.registry, {"ea/app": TAGS[:3]})
    early.wait()
    assert proxy.count("HEAD", HEADS) == 3
    assert all(early.digest(client.registry, "ea/app", tag) is not None for tag in TAGS[:3])


def test_a_refusal_stops_every_batch_of_the_registry(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, _, path = mirrored
    proxy.override_status(
        "HEAD", r"^/v2/ea/", 401, times=None, headers={"WWW-Authenticate": 'Basic realm="r"'}
    )
    proxy.delay("GET", r"^/v2/ea/app/tags/list", 0.5)  # (its batch would come second)
    repositories = [{"name": "ea/first", "tags": TAGS[:2]}, {"name": "ea/app"}]
    source = {"registry": proxy.host, "plain_http": True, "repositories": repositories}
    spec = parse_sync_text(json.dumps({"target": {"store": path.as_uri()}, "sources": [source]}))
    early = _start_listed(spec)
    assert early is not None
    early.wait()
    # the first batch met the refusal: the listed repository's tags are never asked
    assert proxy.count("GET", r"^/v2/ea/app/tags/list") == 1
    assert proxy.count("HEAD") <= 2 and proxy.count("HEAD", HEADS) == 0
    assert early.digest(client.registry, "ea/app", TAGS[0]) is None


def test_entries_of_one_connection_are_asked_as_one_question(tmp_path: Path) -> None:
    source = {"registry": "127.0.0.1:5000", "plain_http": True}
    raw = {
        "target": {"store": (tmp_path / "m").as_uri()},
        "sources": [
            {**source, "repositories": [{"name": "ea/app", "tags": ["a"]}, {"name": "ea/x"}]},
            {**source, "repositories": [{"name": "ea/app", "tags": ["b"]}, {"name": "ea/x"}]},
        ],
    }
    ((conn, listed, asked),) = listed_questions(parse_sync_text(json.dumps(raw)))
    assert conn.registry == "127.0.0.1:5000" and listed == ["ea/x"]
    assert asked["ea/app"](None) == ["a", "b"]  # what either entry takes
    assert asked["ea/x"](["t2", "t1", "t1"]) == ["t1", "t2"] and asked["ea/x"](None) == []


def test_holding_narrows_the_asking_to_the_tags_the_store_holds(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
) -> None:
    proxy, client, _, path = mirrored
    proxy.delay("HEAD", HEADS, 1.0, times=None)  # (held long before these end)
    early = _start_listed(_spec(proxy.host, path))
    assert early is not None
    held = TAGS[:2]
    early.hold(client.registry, {"ea/app": held, "ea/other": TAGS})
    early.wait()
    # what was in flight when the store was read (the first tags), then only those it holds
    assert len(held) <= proxy.count("HEAD", HEADS) <= CONNECTIONS < len(TAGS)
    for tag in held:
        got = early.digest(client.registry, "ea/app", tag)
        assert got is not None and got[0] is not None
    assert all(early.digest(client.registry, "ea/app", tag) is None for tag in TAGS[CONNECTIONS:])
    assert early.asked_digests
    # a store holding nothing of it: asked nothing more, and no digest counts as asked
    proxy.clear_records()
    early = _start_listed(_spec(proxy.host, path))
    assert early is not None and early.asked_digests
    early.hold(client.registry, {})
    assert not early.asked_digests
    early.wait()
    assert proxy.count("HEAD", HEADS) <= CONNECTIONS


#: Run before the command: says whether the early HEADs started, and if ``requests`` was
#: loaded by then
PROBE = (
    "import sys\n"
    "import regstore.client.early as early\n"
    "started = early.EarlyHeads.start.__func__\n"
    "def start(cls, *a, **k):\n"
    "    got = started(cls, *a, **k)\n"
    "    print('early HEADs:', got is not None, file=sys.stderr)\n"
    "    print('requests loaded:', 'requests' in sys.modules, file=sys.stderr)\n"
    "    return got\n"
    "early.EarlyHeads.start = classmethod(start)\n"
)


def _sync_cli(
    spec_path: Path, *args: str, probe: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("REGSTORE_") and not k.lower().endswith("_proxy")
    } | (env or {})
    code = probe + (
        "import sys\n"
        "from regstore.cli import main\n"
        f"sys.argv = ['regstore', *{list(args)!r}, 'sync', {str(spec_path)!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_a_re_sync_asks_early_before_requests_is_imported_and_still_copies_a_change(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    proxy, _, store, path = mirrored
    changed = build_image(seed=799, layer_size=256)
    seed_registry(registry.url, "ea/app", TAGS[3], changed)
    spec_path = tmp_path / "sync.json"
    spec_path.write_text(json.dumps(_raw(proxy.host, path)))
    done = _sync_cli(spec_path, "--json", probe=PROBE)
    assert done.returncode == 0, done.stderr
    assert "early HEADs: True" in done.stderr
    assert "requests loaded: False" in done.stderr
    assert proxy.count("GET", r"/tags/list") == 1  # listed early, not again
    outcomes = {o["destination"]: o["status"] for o in json.loads(done.stdout)["images"]}
    assert outcomes.pop(f"store:ea/app:{TAGS[3]}") == "copied"
    assert set(outcomes.values()) == {"skipped"} and len(outcomes) == len(TAGS) - 1
    # one HEAD per tag (asked early); only the changed image, which the run moves, asks again
    assert proxy.count("HEAD", HEADS) == len(TAGS) + 1
    assert str(store.manifest_digest("ea/app", TAGS[3])) == changed.manifest_digest


def test_a_deferred_client_is_made_once_on_first_use_and_names_its_registry_before() -> None:
    made: list[object] = []

    class Made:
        registry = "example.test"

        def list_image_tags(self, name: str) -> list[str]:
            return [name]

    def make() -> Any:
        time.sleep(0.05)  # (threads asking at once wait for the one being made)
        made.append(Made())
        return made[-1]

    deferred = DeferredClient("example.test", make)
    assert deferred.registry == "example.test" and made == []
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: deferred.list_image_tags("a/b"), range(8)))
    assert answers == [["a/b"]] * 8 and len(made) == 1
    assert deferred.made() is made[0]
    with pytest.raises(AttributeError):
        _ = deferred.no_such_method


def test_one_process_stays_one_when_digests_were_asked_early(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path],
    registry: RegistryServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # settling the unchanged in one process (digests asked early) must not re-decide the
    # number of processes that --fail-fast, --concurrency or the store made one
    from regstore.cli import syncforked
    from regstore.cli.app import AppState
    from regstore.cli.progress import ProgressDisplay
    from regstore.engine.sync import plan_sync

    proxy, client, store, path = mirrored
    for i, tag in enumerate(TAGS[:3]):
        seed_registry(registry.url, "ea/app", tag, build_image(seed=780 + i, layer_size=256))
    spec = _spec(proxy.host, path)
    early = _start(spec, store.tags)
    assert early is not None and early.asked_digests
    plan = plan_sync(spec, client_for=lambda c: client, target_store=store, early=early)
    forked: list[int] = []
    monkeypatch.setattr(syncforked, "default_processes", lambda n: 4)
    monkeypatch.setattr(
        syncforked, "run_sync_forked", lambda state, rest, n, *a, **k: forked.append(n)
    )
    state = AppState()
    state.settings.quiet = True
    batch, processes = syncforked.run_here(
        state,
        plan,
        1,
        ProgressDisplay("off"),
        asked=False,
        keep_going=False,
        referrer_types=(),
        early=early,
    )
    assert forked == [] and processes == 1
    statuses = sorted(o.status for o in batch.outcomes)
    assert statuses == ["copied"] * 3 + ["skipped"] * (len(TAGS) - 3)


def test_the_global_password_is_read_once_and_nothing_asked_early(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], tmp_path: Path
) -> None:
    # --username/--password-stdin: the one client given them is made at once; a deferred one
    # would be made in each forked process, each reading stdin (all but one read nothing)
    proxy, _, _, _ = mirrored
    spec_path = tmp_path / "sync.json"
    raw = _raw(proxy.host, tmp_path / "fresh", tags=TAGS)  # exact tags: nothing listed
    spec_path.write_text(json.dumps(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGSTORE_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE + "from regstore.cli import main\nmain()\n",
         "--username", "someone", "--password-stdin", "--json", "sync", "--processes", "2",
         str(spec_path)],
        input="secret\n", capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "early HEADs" not in done.stderr  # never started
    report = json.loads(done.stdout)
    assert report["processes"] == 2
    assert [o["status"] for o in report["images"]] == ["copied"] * len(TAGS)


def test_a_trickling_answer_ends_at_its_deadline() -> None:
    import socket
    import threading

    from regstore.client.heads import get_body

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):  # a byte every 0.1 s: 10 s in all
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        get_body(sock, f"http://127.0.0.1:{port}/v2/a/tags/list", {}, 1000, 0.5)
    assert time.monotonic() - started < 3  # (each byte came within the socket's timeout)
    sock.close()
    server.close()


def test_a_registry_reached_two_ways_by_the_file_is_not_asked_early(
    mirrored: tuple[FaultProxy, Client, ObjectStore, Path], tmp_path: Path
) -> None:
    proxy, _, _, path = mirrored
    raw: dict[str, Any] = _raw(proxy.host, path)
    second = {"registry": proxy.host, "plain_http": True, "username": "someone",
              "password_env": "EARLY_PASSWORD", "repositories": [{"name": "ea/other"}]}  # fmt: skip
    raw["sources"] = [*raw["sources"], second]
    spec_path = tmp_path / "sync.json"
    spec_path.write_text(json.dumps(raw))
    done = _sync_cli(spec_path, "--json", probe=PROBE, env={"EARLY_PASSWORD": "secret"})
    assert "early HEADs: False" in done.stderr
    # (ea/other does not exist: that entry fails, the first is mirrored as always)
    outcomes = json.loads(done.stdout)["images"]
    assert {o["status"] for o in outcomes if "ea/app" in o["source"]} == {"skipped"}


def test_a_lazy_package_names_what_a_submodule_import_really_failed_on(tmp_path: Path) -> None:
    from regstore.lazy import lazy_exports

    package = tmp_path / "lazypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("import os\nos.no_such_function\n")
    (package / "fine.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        namespace: dict[str, Any] = {}
        getter, listed = lazy_exports("lazypkg", {"VALUE": "lazypkg.fine"}, namespace, "EXTRA")
        assert listed() == ["EXTRA"]
        assert getter("VALUE") == 1 and namespace["VALUE"] == 1
        assert getter("fine").VALUE == 1
        assert listed() == ["EXTRA", "VALUE", "fine"]
        with pytest.raises(AttributeError, match="no_such_function"):
            getter("broken")
        with pytest.raises(AttributeError, match="has no attribute 'missing'"):
            getter("missing")
        with pytest.raises(AttributeError, match="has no attribute '_private'"):
            getter("_private")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("lazypkg")]:
            del sys.modules[name]
