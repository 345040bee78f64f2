"""Start-up of the CLI: ``regstore --help`` imports click and the leaves, nothing heavy; and
its exit: after a command that ended well the interpreter's teardown skips its collection.

What is imported is checked (in a fresh interpreter), not how long it takes: a timing assert
would fail on a loaded machine. ``python -X importtime -c "from regstore.cli import main;
main(['--help'])"`` shows the cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from regstore.cli import cli
from regstore.testing.builders import build_image
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer

#: Modules `regstore --help` must not import (each costs tens of milliseconds or more; the
#: data-class modules of the public API as many together).
HEAVY = (
    "regstore.manifest",
    "regstore.reference",
    "regstore.digest",
    "regstore.events",
    "regstore.storetypes",
    "regstore.wire",
    "rich",
    "yaml",
    "requests",
    "urllib3",
    "fsspec",
    "pluggy",
    "boto3",
    "botocore",
    "s3fs",
    "aiohttp",
    "importlib.metadata",
    "regstore.engine",
    "regstore.client",
    "regstore.store",
    "regstore.backends",
    "regstore.plugins",
)

_CHILD = """
    import json, sys
    from regstore.cli import main
    sys.argv = ["regstore", *sys.argv[1:]]
    try:
        main()
    except SystemExit:
        pass
    sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def _modules_after(*args: str) -> tuple[str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout, set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_help_imports_nothing_heavy() -> None:
    out, modules = _modules_after("--help")
    assert "Commands:" in out and "pull" in out and "sync" in out
    assert [m for m in HEAVY if m in modules] == []


def test_a_command_imports_its_module_when_it_runs() -> None:
    out, modules = _modules_after("pull", "--help")
    assert "--semver" in out
    assert "regstore.cli.transfer" in modules


#: Modules a pull or a sync into a directory store does without (fsspec serves walks and other
#: backends; semver only tags that look like versions; repair and verify a pull --repair, the
#: referrers walk a move of referrers).
NOT_FOR_A_MIRROR = (
    "fsspec",
    "semver",
    "regstore.engine.repair",
    "regstore.engine.verify",
    "regstore.engine.referrers",
)


def _mirror_file(tmp_path: Path, registry: RegistryServer, name: str) -> Path:
    """A sync file mirroring every tag of ``name`` into the store ``tmp_path/mirror``."""
    source = {"registry": registry.host, "plain_http": True, "repositories": [{"name": name}]}
    syncfile = tmp_path / "sync.json"
    syncfile.write_text(
        json.dumps({"target": {"store": (tmp_path / "mirror").as_uri()}, "sources": [source]})
    )
    return syncfile


def test_a_pull_and_a_sync_into_a_directory_store_import_only_what_they_use(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = build_image(layers=2, layer_size=4096, seed=61, media="oci")
    seed_registry(registry.url, "lean/app", "t1", image)
    store = tmp_path / "store"
    _, modules = _modules_after(
        "-q", "--store", str(store), "pull", "--plain-http", f"{registry.host}/lean/app:t1"
    )
    assert [m for m in NOT_FOR_A_MIRROR if m in modules] == []
    listed, _ = _modules_after("--json", "--store", str(store), "ls", "lean/app")
    assert image.manifest_digest in listed and '"t1"' in listed, listed  # the pull did pull

    syncfile = _mirror_file(tmp_path, registry, "lean/app")
    for run, moved in (("first", "copied"), ("no-op", "skipped")):
        out, modules = _modules_after("sync", "--json", str(syncfile))
        assert [m for m in NOT_FOR_A_MIRROR if m in modules] == [], run
        report = json.loads(out)
        assert report["ok"] and report[moved] == 1, out
    # a re-sync with nothing to move writes nothing, forks nothing, runs no credential helper
    assert [m for m in ("ctypes", "pickle", "subprocess") if m in modules] == []
    mirrored, _ = _modules_after("--json", "--store", str(tmp_path / "mirror"), "ls", "lean/app")
    assert image.manifest_digest in mirrored, mirrored


def test_a_no_op_re_sync_settled_early_never_loads_what_would_move_a_blob(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from regstore.engine.early import MIN_TAGS

    base = build_image(layers=1, layer_size=4096, seed=70, media="oci")
    for i in range(MIN_TAGS):  # (fewer are not asked early: each image then asks its own)
        image = build_image(
            layers=1, layer_size=512, seed=71 + i, media="oci", shared_layers=base.layers
        )
        seed_registry(registry.url, "settled/app", f"t{i}", image)
    syncfile = _mirror_file(tmp_path, registry, "settled/app")
    out, modules = _modules_after("sync", "--json", str(syncfile))
    assert json.loads(out)["copied"] == MIN_TAGS
    assert "regstore.engine.transfer" in modules  # (what the check below looks for is real)
    out, modules = _modules_after("sync", "--json", str(syncfile))
    assert json.loads(out)["skipped"] == MIN_TAGS, out
    moving = ("regstore.engine.transfer", "regstore.engine.blobs", "regstore.retry")
    assert [m for m in moving if m in modules] == []


# The regstore modules importing (themselves, or another module under them) when the
# collector ran, once ``regstore`` itself is loaded (the package's own import is every
# importer's, left as it is); then the collector's state once the command ended, written as
# the last line of stderr.
_COLLECTED_CHILD = """
    import gc, json, sys
    import regstore
    seen = set()

    def look(phase, info):
        frame = sys._getframe()
        while phase == "start" and frame is not None:
            if frame.f_code.co_name == "<module>":
                name = frame.f_globals.get("__name__", "")
                if name.startswith("regstore"):
                    seen.add(name)
                    break
            frame = frame.f_back

    gc.callbacks.append(look)
    gc.set_threshold(50)  # (many collections: an import the collector is left on for meets one)
    from regstore.cli import main
    sys.argv = ["regstore", *sys.argv[1:]]
    code = None
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    sys.stderr.write(json.dumps([sorted(seen), gc.isenabled(), code]))
"""


def _collected_during_imports(*args: str) -> tuple[str, list[str], bool]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_COLLECTED_CHILD), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen, enabled, code = json.loads(proc.stderr.strip().splitlines()[-1])
    assert code in (None, 0), proc.stderr  # the command itself ended well
    return proc.stdout, seen, enabled


def _imported(seen: list[str]) -> list[str]:
    return [name for name in seen if name != "regstore.cli"]


def test_the_cli_and_a_no_op_sync_import_with_the_collector_paused(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # Each collection among start-up imports walked every object the modules so far built.
    # (The CLI package's own statements after its imports, which import nothing, may meet
    # one: only the modules it and the command import are paused for.)
    out, seen, enabled = _collected_during_imports("--help")
    assert "Commands:" in out and _imported(seen) == [] and enabled
    seed_registry(registry.url, "calm/app", "t1", build_image(seed=62, layer_size=1024))
    syncfile = _mirror_file(tmp_path, registry, "calm/app")
    for moved in ("copied", "skipped"):
        out, seen, enabled = _collected_during_imports("sync", "--json", str(syncfile))
        assert json.loads(out)[moved] == 1, out
        assert _imported(seen) == [] and enabled, moved


@pytest.mark.parametrize("collecting", [True, False])
def test_importing_the_cli_leaves_the_importers_collector_as_it_was(collecting: bool) -> None:
    code = f"""
        import gc
        {"" if collecting else "gc.disable()"}
        import regstore.cli
        print(gc.isenabled(), [n for n in vars(regstore.cli) if n == "_collecting"])
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.split() == [str(collecting), "[]"]


def test_the_lazy_table_lists_every_command_with_its_own_short_help() -> None:
    import importlib

    table = dict(cli.lazy_commands)  # type: ignore[attr-defined]
    for module in {m for m, _ in table.values()}:
        importlib.import_module(module)
    ctx = click.Context(cli)
    commands = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    assert set(commands) == set(table) | {"completion"}, "a command is missing from the table"
    for name, (module, short_help) in table.items():
        command = commands[name]
        assert command is not None
        assert command.callback is not None and command.callback.__module__ == module, name
        assert command.get_short_help_str(1000) == short_help, name


def test_the_concurrency_bound_matches_the_engine() -> None:
    from regstore.cli.app import MAX_CONCURRENCY
    from regstore.engine.transfer import MAX_CONCURRENCY as ENGINE_MAX

    assert MAX_CONCURRENCY == ENGINE_MAX


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    proc = subprocess.run(
        [sys.executable, "-c", "from regstore.cli import main; main(['--version'])"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert version("regstore") in proc.stdout, proc.stdout + proc.stderr


_EXIT_CHILD = """
    import atexit, gc, sys
    # registered first, so it runs last: after any exit handler regstore registered
    atexit.register(lambda: print("frozen" if gc.get_freeze_count() else "collected"))
    from regstore.cli import main
    main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    ("args", "code", "teardown"),
    [(["--version"], 0, "frozen"), (["--no-such-option"], 2, "collected"),
     (["inspect", "nothing:here"], 1, "collected")],
    ids=["success", "usage-error", "failure"],
)  # fmt: skip
def test_only_a_command_that_ended_well_skips_the_final_collection(
    tmp_path: Path, args: list[str], code: int, teardown: str
) -> None:
    # The teardown's collection of every imported module's objects cost ~45 ms of a no-op
    # pull; after a failure it stays, so that what an exception dropped is released.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXIT_CHILD), "--store", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.splitlines()[-1] == teardown


def test_main_run_in_process_leaves_the_callers_heap_collectable() -> None:
    import gc

    from regstore.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert gc.get_freeze_count() == 0  # frozen only at the exit


@pytest.fixture
def console() -> Any:
    """The console script's start-up collector for one test, always ended (nothing of the test
    process stays frozen)."""
    from regstore.cli import startup

    startup.begin()
    try:
        yield startup
    finally:
        startup.end()


@pytest.fixture
def importing() -> Iterator[Callable[[], None]]:
    """Import a module (a stand-in put into sys.modules, taken out after the test)."""
    import types

    names: list[str] = []

    def imported() -> None:
        names.append(f"_regstore_startup_test_{len(names)}")
        sys.modules[names[-1]] = types.ModuleType(names[-1])

    yield imported
    for name in names:
        del sys.modules[name]


def test_start_up_imports_run_uncollected_and_stay_frozen_until_the_end(
    console: Any, importing: Callable[[], None]
) -> None:
    import gc

    assert gc.get_freeze_count() == 0
    with console.imports():
        assert not gc.isenabled()
        importing()
        made = [[] for _ in range(1000)]  # what an import builds, the collector off
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)  # frozen: later collections pass over it
    console.end()
    assert gc.get_freeze_count() == 0  # the caller's heap collectable again


def test_a_block_that_imports_nothing_freezes_nothing(console: Any) -> None:
    # (AppState.client runs one per registry of a sync file: only the first imports)
    import gc

    with console.imports():
        cycle: list[Any] = []
        cycle.append(cycle)
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_main_inside_main_thaws_once_the_outer_one_ends(
    console: Any, importing: Callable[[], None]
) -> None:
    import gc

    with console.imports():
        importing()
    frozen = gc.get_freeze_count()
    console.begin()  # a main run inside this one
    with console.imports():
        importing()
    console.end()
    assert gc.get_freeze_count() >= frozen > 0  # the outer one still runs on it
    console.end()
    assert gc.get_freeze_count() == 0


def test_a_failing_start_up_import_still_turns_the_collector_back_on(console: Any) -> None:
    import gc

    with pytest.raises(ImportError), console.imports():
        raise ImportError("a plugin's module is gone")
    assert gc.isenabled()


def test_outside_the_console_script_start_up_changes_nothing() -> None:
    import gc

    from regstore.cli import startup

    with startup.imports():  # no begin(): click's test runner, a library caller
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("caller", ["froze", "paused"])
def test_a_callers_own_collector_settings_are_left_alone(caller: str) -> None:
    import gc

    from regstore.cli import startup

    mine = [[] for _ in range(10)]
    if caller == "froze":
        gc.freeze()
    else:
        gc.disable()
    try:
        frozen = gc.get_freeze_count()
        made_since = [[] for _ in range(1000)]  # (what a freeze of ours would take too)
        startup.begin()
        with startup.imports():
            # an import (what the block's freezing is for)
            sys.modules["regstore_test_startup_probe"] = types.ModuleType("probe")
        startup.end()
        # theirs neither thawed (all at once: gc.unfreeze) nor added to (by ours); a frozen
        # object another thread drops meanwhile leaves the permanent generation on its own
        assert 0 < gc.get_freeze_count() <= frozen if frozen else gc.get_freeze_count() == 0
        assert gc.isenabled() == (caller == "froze")
    finally:
        sys.modules.pop("regstore_test_startup_probe", None)
        gc.unfreeze()
        gc.enable()
    assert mine and made_since


_FROZEN_CHILD = """
    import gc, sys
    from regstore.cli import app, main
    opened = app.AppState.store
    def store(self, *args, **kwargs):
        found = opened(self, *args, **kwargs)
        print("while", gc.get_freeze_count())
        return found
    app.AppState.store = store
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        print("after", gc.get_freeze_count(), gc.isenabled(), exc.code)
"""


def test_a_command_runs_on_what_its_start_up_froze_and_main_thaws_it(tmp_path: Path) -> None:
    from regstore import open_store
    from regstore.testing.builders import oci_image, write_image

    with open_store(str(tmp_path / "s")) as made:
        write_image(made, "app", "1", oci_image())
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_FROZEN_CHILD),
            "--store",
            str(tmp_path / "s"),
            "ls",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert int(lines["while"]) > 1000, proc  # the command's module and the store's stack
    assert lines["after"] == "0 True 0", proc  # an in-process caller's heap: collectable
