"""The command line, through the real console script, against a real registry (and moto S3).

One registry, seeded once per module with skopeo, serves the read-only tests; tests that write
to it use repositories of their own. Every test has its own store and HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from regstore import open_store
from regstore.testing.builders import (
    BuiltIndex,
    build_image,
    build_index,
    random_blob,
    sha256_digest,
)

from .support.cli import (
    CliResult,
    SeededRegistry,
    blob_path,
    cli_env,
    damage_tag_link,
    flip_byte,
    only_lines,
    put_image,
    run_cli,
    run_in_pty,
    seed_app_images,
    tag_digests,
)
from .support.engine import seed_registry
from .support.registry import RegistryServer, serve_directory


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededRegistry]:
    server = RegistryServer(tmp_path_factory.mktemp("cli-registry")).start()
    try:
        yield seed_app_images(server)
    finally:
        server.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


class CLI:
    """``cli("pull", ...)`` with this test's HOME and store."""

    def __init__(self, home: Path, store: str) -> None:
        self.home = home
        self.store = store

    def __call__(self, *args: str, expect: int | None = 0, **kwargs: object) -> CliResult:
        kwargs.setdefault("store", self.store)
        result = run_cli(*args, home=self.home, **kwargs)  # type: ignore[arg-type]
        if expect is not None:
            assert result.returncode == expect, str(result)
        return result


@pytest.fixture
def cli(home: Path, store_root: Path) -> CLI:
    return CLI(home, str(store_root))


def one_error_line(result: CliResult) -> str:
    lines = only_lines(result.stderr)
    errors = [line for line in lines if line.startswith("regstore: error:")]
    assert len(errors) == 1, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return errors[0]


# -- help, usage and exit codes ------------------------------------------------------------------


def test_help_documents_references_stores_and_exit_codes(cli: CLI) -> None:
    text = cli("--help").stdout
    words = ["Exit codes", "0  success", "1  failure", "2  usage error", "store:NAME"]
    words += ["130  interrupted", "141  its output was closed"]
    words += ["REGSTORE_STORE", "pull", "push", "copy", "sync", "gc", "verify", "plugins"]
    for word in words:
        assert word in text
    assert "--semver RANGE" in cli("pull", "--help").stdout
    assert cli("--version").stdout.startswith("regstore, version ")


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("pull",),
        ("pull", "team/App"),
        ("pull", "127.0.0.1:9/app", "--semver", "not-a-range"),
        ("pull", "127.0.0.1:9/app", "--include", "("),
        ("pull", "127.0.0.1:9/app:1", "--semver", ">=1"),  # filters need a repository
        ("pull", "127.0.0.1:9/app", "--platform", "linux"),
        ("pull", "127.0.0.1:9/app", "--platform", "linux/amd64", "--all-platforms"),
        ("push", "app:1", "store:app:2"),
        ("delete", "store:app"),  # which tag?
        ("gc", "--grace", "-1"),
        ("--password-stdin", "ls"),  # without --username
        ("--concurrency", "0", "ls"),
        ("push", "app:1", "localhost:5000"),  # a registry, not an image
    ],
)
def test_usage_errors_exit_2(cli: CLI, args: tuple[str, ...]) -> None:
    result = cli(*args, expect=2)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # with --json, its result on stdout too: click's own usage errors printed none
    as_json = cli(*args, "--json", expect=2)
    report = as_json.json()
    assert report["ok"] is False and report["error"]["message"]
    assert report["error"]["message"].split(":")[0] in as_json.stderr
    assert "Traceback" not in as_json.stderr


def test_a_registry_alone_is_not_read_as_a_docker_hub_image(cli: CLI) -> None:
    # `localhost:5000` is, by the reference grammar, docker.io/library/localhost:5000: a push
    # to it went to Docker Hub (with the user's Docker Hub credentials, if any)
    for command, dest in (
        ("push", "127.0.0.1:5000"),
        ("push", "localhost:5000"),
        ("copy", "docker://registry.example:443"),
    ):
        args = ("app:1", dest) if command == "push" else ("store:app:1", dest)
        refused = cli(command, *args, expect=2).stderr
        assert f"'{dest.removeprefix('docker://')}': names a registry, not an image" in refused
    from regstore.cli.refs import RegistryRef, parse_image_ref

    for text, name in (("alpine:3", "library/alpine"), ("localhost/app:5000", "app")):
        parsed = parse_image_ref(text)  # an image name with no dot, a host with a path: images
        assert isinstance(parsed, RegistryRef) and parsed.name == name


# -- pull, ls, inspect ---------------------------------------------------------------------------


def test_pull_json_ls_and_inspect(cli: CLI, seeded: SeededRegistry) -> None:
    image = seeded.app["1.0.0"]
    result = cli("--json", "pull", f"{seeded.host}/team/app:1.0.0", "--concurrency", "2")
    report = result.json()
    assert result.stderr == ""  # --json: no progress, nothing but the result
    assert report["ok"] is True
    assert report["manifest_digest"] == image.manifest_digest
    assert report["destination"] == "store:team/app:1.0.0"
    assert sorted(report["transferred"]) == sorted(image.blobs)
    assert report["bytes_moved"] == sum(len(b) for b in image.blobs.values())

    listing = cli("ls", "--json").json()
    assert listing["repositories"] == [{"name": "team/app", "tags": ["1.0.0"]}]
    assert tag_digests(cli("ls", "team/app", "--json")) == {"1.0.0": image.manifest_digest}
    plain = cli("ls", "store:team/app").stdout
    assert "1.0.0" in plain and image.manifest_digest[:19] in plain and "KiB" in plain

    info = cli("inspect", "store:team/app:1.0.0", "--json").json()
    assert info["digest"] == image.manifest_digest
    assert info["platforms"] == ["linux/amd64"]
    assert [layer["digest"] for layer in info["layers"]] == image.layer_digests
    assert info["config"]["digest"] == image.config_digest
    raw = cli("inspect", "--raw", "store:team/app:1.0.0").stdout_bytes
    assert raw == image.manifest_bytes  # the exact bytes, never re-serialised
    remote = cli("inspect", f"{seeded.host}/team/app:1.0.0", "--json").json()
    assert remote["digest"] == image.manifest_digest and remote["platforms"] == ["linux/amd64"]
    human = cli("inspect", f"{seeded.host}/team/multi:1").stdout
    assert "linux/amd64" in human and "linux/arm64" in human


def test_pull_one_platform_of_an_index_under_another_name(cli: CLI, seeded: SeededRegistry) -> None:
    assert seeded.multi is not None
    report = cli(
        "pull", f"{seeded.host}/team/multi:1", "--platform", "linux/arm64",
        "--as", "mirror/multi:v1", "--json",
    ).json()  # fmt: skip
    assert report["partial"] is True
    assert report["manifest_digest"] == seeded.multi.manifest_digest
    assert tag_digests(cli("--json", "ls", "mirror/multi")) == {"v1": seeded.multi.manifest_digest}
    assert cli("verify", "mirror/multi").returncode == 0  # a partial index is not damage


def test_copy_one_platform_to_a_registry_reports_the_child_and_its_source_index(
    cli: CLI, seeded: SeededRegistry
) -> None:
    multi = seeded.multi
    assert isinstance(multi, BuiltIndex)
    arm = multi.children[1]
    report = cli(
        "copy", f"{seeded.host}/team/multi:1", f"{seeded.host}/backup/multi:arm",
        "--platform", "linux/arm64", "--json",
    ).json()  # fmt: skip
    assert report["manifest_digest"] == arm.manifest_digest
    assert report["rewritten_from"] == multi.manifest_digest
    human = cli("copy", f"{seeded.host}/team/multi:1", f"{seeded.host}/backup/multi:arm2",
                "--platform", "linux/arm64").stdout  # fmt: skip
    assert f"from index {multi.manifest_digest[:19]}" in human


@pytest.mark.parametrize("platforms", [["linux/arm64"], ["linux/amd64", "linux/arm64"]])
def test_the_dry_run_of_some_platforms_into_a_registry_says_what_the_run_says(
    cli: CLI, seeded: SeededRegistry, tmp_path: Path, platforms: list[str]
) -> None:
    # The registry holds the index rewritten to the platforms (or the one child taken): the
    # dry run compared the source index's digest with it and said copy for ever.
    name = f"team/tri{len(platforms)}"
    three = [("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x")]
    seed_registry(seeded.server.url, name, "1", build_index(seed=78, platforms=three))
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(
        f"target: {{registry: '{seeded.host}', prefix: dry, plain_http: true}}\n"
        f"sources:\n  - registry: '{seeded.host}'\n    plain_http: true\n"
        f"    repositories: [{{name: {name}, platforms: {json.dumps(platforms)}}}]\n"
    )
    preview = cli("sync", str(sync_file), "--dry-run", "--json").json()
    assert [j["action"] for j in preview["jobs"]] == ["copy"]
    report = cli("sync", str(sync_file), "--json").json()
    assert report["copied"] == 1 and report["images"][0]["result"]["rewritten_from"]
    assert cli("sync", str(sync_file), "--json").json()["skipped"] == 1
    again = cli("sync", str(sync_file), "--dry-run", "--json").json()
    assert [j["action"] for j in again["jobs"]] == ["skip"]

    # another index under the source tag: the dry run says copy again
    seed_registry(seeded.server.url, name, "1", build_index(seed=79, platforms=three))
    again = cli("sync", str(sync_file), "--dry-run", "--json").json()
    assert [j["action"] for j in again["jobs"]] == ["copy"]


def test_pull_with_tag_filters_takes_exactly_the_matching_tags(
    cli: CLI, seeded: SeededRegistry
) -> None:
    result = cli(
        "pull", f"{seeded.host}/team/app", "--semver", ">=1.1 <3", "--exclude", "-rc",
        "--latest", "2", "--all-platforms", "--json",
    )  # fmt: skip
    report = result.json()
    assert report["ok"] is True and report["copied"] == 2
    stored = tag_digests(cli("--json", "ls", "team/app"))
    assert stored == {t: seeded.app[t].manifest_digest for t in ("1.2.0", "2.0.0")}

    nothing = cli("pull", f"{seeded.host}/team/app", "--semver", ">=9", expect=1)
    assert "matches" in one_error_line(nothing)


# -- push and copy -------------------------------------------------------------------------------


def test_push_copy_and_mount(cli: CLI, seeded: SeededRegistry, tmp_path: Path) -> None:
    host = seeded.host
    image = seeded.app["1.1.0"]
    cli("pull", f"{host}/team/app:1.1.0", "-q")
    pushed = cli("push", "team/app:1.1.0", f"{host}/pushed/app", "--json").json()
    assert pushed["destination"] == f"{host}/pushed/app:1.1.0"  # the source's tag is kept
    assert pushed["manifest_digest"] == image.manifest_digest

    mounted = cli(
        "push", "store:team/app:1.1.0", f"{host}/pushed/other:stable", "--mount-from",
        "pushed/app", "--json",
    ).json()  # fmt: skip
    assert sorted(mounted["mounted"]) == sorted(image.blobs)
    assert mounted["transferred"] == []

    remote = cli("inspect", f"{host}/pushed/other:stable", "--json").json()
    assert remote["digest"] == image.manifest_digest

    copied = cli(
        "copy", f"{host}/team/app:2.0.0", f"{host}/copied/app", "--mount-from", "team/app",
        "--platform", "linux/amd64", "--json",
    ).json()  # fmt: skip
    assert copied["destination"] == f"{host}/copied/app:2.0.0"
    assert copied["manifest_digest"] == seeded.app["2.0.0"].manifest_digest

    batch = cli(
        "copy", f"{host}/team/app", f"{host}/copied/filtered", "--include", r"^1\.",
        "--exclude", "rc", "--json",
    ).json()  # fmt: skip
    assert batch["copied"] == 3
    assert sorted(i["destination"] for i in batch["images"]) == [
        f"{host}/copied/filtered:{t}" for t in ("1.0.0", "1.1.0", "1.2.0")
    ]

    other_store = tmp_path / "other-store"
    cli(
        "copy", "store:team/app:1.1.0", "store:elsewhere/app", "--src-store", cli.store,
        "--dest-store", str(other_store),
    )  # fmt: skip
    # --store (here after the command) wins over REGSTORE_STORE
    assert "elsewhere/app" in cli("ls", "--store", str(other_store)).stdout
    with open_store(str(other_store)) as store:
        assert store.tags("elsewhere/app") == ["1.1.0"]
        assert store.resolve("elsewhere/app", "1.1.0") == image.manifest_digest


def test_s3_store_pull_verify_and_push_back(
    cli: CLI, seeded: SeededRegistry, s3_bucket: object
) -> None:
    endpoint, bucket = s3_bucket  # type: ignore[misc]
    store = f"s3://{bucket}/mirror?endpoint_url={endpoint}"
    image = seeded.app["1.0.0"]
    cli("pull", f"{seeded.host}/team/app:1.0.0", store=store)
    assert tag_digests(cli("--json", "ls", "team/app", store=store)) == {
        "1.0.0": image.manifest_digest
    }
    assert cli("verify", "--json", store=store).json()["ok"] is True
    back = cli("push", "team/app:1.0.0", f"{seeded.host}/from-s3/app", "--json", store=store)
    assert back.json()["manifest_digest"] == image.manifest_digest


# -- sync ----------------------------------------------------------------------------------------


def write_sync_file(path: Path, host: str) -> Path:
    path.write_text(
        f"""
defaults:
  concurrency: 2
sources:
  - registry: "{host}"
    plain_http: true
    repositories:
      - name: team/app
        tags:
          semver: ">=1.1.0"
          exclude: ["-rc"]
          latest: 2
      - name: team/app
        as: pinned/app
        tags: ["1.0.0", "latest"]
      - name: team/multi
        platforms: [linux/amd64]
      - name: team/does-not-exist
"""
    )
    return path


def test_sync_moves_exactly_the_selected_tags_then_nothing(
    cli: CLI, seeded: SeededRegistry, tmp_path: Path
) -> None:
    sync_file = write_sync_file(tmp_path / "mirror.yaml", seeded.host)
    expected = {
        ("team/app", "1.2.0"), ("team/app", "2.0.0"), ("pinned/app", "1.0.0"),
        ("pinned/app", "latest"), ("team/multi", "1"),
    }  # fmt: skip

    preview = cli("sync", str(sync_file), "--dry-run", "--json", expect=1).json()
    assert preview["dry_run"] is True
    assert {(j["destination"], j["action"]) for j in preview["jobs"]} == {
        (f"store:{n}:{t}", "copy") for n, t in expected
    }
    assert [f["source"] for f in preview["failed"]] == [f"{seeded.host}/team/does-not-exist"]
    # a dry run moves nothing, and does not even create the store
    assert "no store at" in cli("ls", "--json", expect=1).stderr

    first = cli("sync", str(sync_file), "--json", expect=1)
    report = first.json()
    assert report["ok"] is False and report["failed"] == 1 and report["copied"] == 5
    failed = [i for i in report["images"] if i["status"] == "failed"]
    assert failed[0]["source"].endswith("team/does-not-exist")
    assert "does-not-exist" in failed[0]["error"]
    moved = {tuple(i["destination"][len("store:") :].split(":")) for i in report["images"]
             if i["status"] == "copied"}  # fmt: skip
    assert moved == expected
    assert tag_digests(cli("--json", "ls", "team/app")) == {
        "1.2.0": seeded.app["1.2.0"].manifest_digest,
        "2.0.0": seeded.app["2.0.0"].manifest_digest,
    }
    # the rest of the team/app tags did not move: 1.0.0, 1.1.0, the rc, latest
    assert cli("--json", "ls", "pinned/app").json()["tags"][0]["tag"] == "1.0.0"

    second = cli("sync", str(sync_file), "--json", expect=1).json()
    statuses = {i["destination"]: i["status"] for i in second["images"] if i["destination"]}
    assert second["copied"] == 0 and second["skipped"] == 5 and second["bytes_moved"] == 0
    assert all(s == "skipped" for d, s in statuses.items() if "does-not-exist" not in d)

    again = cli("sync", str(sync_file), "--dry-run", "--json", expect=1).json()
    assert {j["action"] for j in again["jobs"]} == {"skip"}

    # command-line filters narrow the file's: only the 2.x tag of team/app is left
    narrowed = cli("sync", str(sync_file), "--include", "^2", "--json", expect=1).json()
    assert [i["source"] for i in narrowed["images"] if i["status"] != "failed"] == [
        f"{seeded.host}/team/app:2.0.0"
    ]
    human = cli("sync", str(sync_file), expect=1)
    assert "0 copied, 1 skipped" not in human.stdout and "skipped" in human.stdout
    assert "does-not-exist" in one_error_line(human)


def test_sync_prune_keeps_a_mirror_of_the_newest_tags(
    cli: CLI, registry: RegistryServer, tmp_path: Path
) -> None:
    images = {tag: build_image(seed=80 + i, layers=1, layer_size=2048)
              for i, tag in enumerate(["1.0.0", "1.1.0", "1.2.0"])}  # fmt: skip
    for tag in ("1.0.0", "1.1.0"):
        seed_registry(registry.url, "team/rolling", tag, images[tag])
    sync_file = tmp_path / "rolling.yaml"
    sync_file.write_text(
        f"sources:\n  - registry: '{registry.host}'\n    prune: true\n    repositories:\n"
        "      - {name: team/rolling, tags: {latest: 2}}\n"
    )
    assert cli("sync", str(sync_file), "--json").json()["copied"] == 2
    seed_registry(registry.url, "team/rolling", "1.2.0", images["1.2.0"])  # 1.0.0 leaves

    preview = cli("sync", str(sync_file), "--dry-run", "--json").json()
    assert {(j["destination"], j["action"]) for j in preview["jobs"]} == {
        ("store:team/rolling:1.0.0", "prune"),
        ("store:team/rolling:1.1.0", "skip"),
        ("store:team/rolling:1.2.0", "copy"),
    }
    human = cli("sync", str(sync_file))
    assert "1 copied, 1 skipped, 0 failed, 1 pruned" in human.stdout
    assert tag_digests(cli("--json", "ls", "team/rolling")) == {
        t: images[t].manifest_digest for t in ("1.1.0", "1.2.0")
    }
    freed = {b["digest"] for b in cli("gc", "--grace", "0", "--json").json()["removed"]}
    assert freed == set(images["1.0.0"].blobs) | {images["1.0.0"].manifest_digest}
    report = cli("sync", str(sync_file), "--json").json()
    assert (report["pruned"], report["skipped"], report["ok"]) == (0, 2, True)

    # --prune turns it on for every source; a registry target keeps its tags
    assert "--prune" in cli("sync", "--help").stdout
    to_registry = tmp_path / "to-registry.yaml"
    to_registry.write_text(
        f"target: {{registry: '{registry.host}', prefix: copy}}\n"
        f"sources: [{{registry: '{registry.host}', repositories: [team/rolling]}}]\n"
    )
    refused = cli("sync", str(to_registry), "--prune", expect=2)
    assert "--prune deletes tags in a store" in refused.stderr


def test_sync_fail_fast_cancels_what_a_failure_leaves_unstarted(
    cli: CLI, seeded: SeededRegistry, tmp_path: Path
) -> None:
    sync_file = write_sync_file(tmp_path / "mirror.yaml", seeded.host)
    report = cli("sync", str(sync_file), "--fail-fast", "--json", expect=1).json()
    assert report["ok"] is False
    assert (report["failed"], report["cancelled"], report["copied"]) == (1, 5, 0)
    cancelled = [i for i in report["images"] if i["status"] == "cancelled"]
    assert all("earlier image failed" in i["error"] for i in cancelled)
    assert "no store at" in cli("ls", "--json", expect=1).stderr  # nothing was written


def test_sync_file_mistakes_are_usage_errors_naming_the_line(cli: CLI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - registry: h:5000\n    repositories:\n      - name: a\n"
                   "        tags: {semvr: '>=1'}\n")  # fmt: skip
    result = cli("sync", str(bad), expect=2)
    line = one_error_line(result)
    assert f"{bad}:5: sources[0].repositories[0].tags.semvr: unknown key" in line
    assert cli("sync", str(tmp_path / "missing.yaml"), expect=2).returncode == 2


# -- verify, gc, delete --------------------------------------------------------------------------


def test_verify_detects_a_blob_corrupted_on_disk(
    cli: CLI, seeded: SeededRegistry, store_root: Path
) -> None:
    image = seeded.app["1.0.0"]
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    ok = cli("verify")
    assert "OK" in ok.stdout
    assert cli("verify", "--json").json()["blobs_checked"] == len(image.blobs)

    victim = image.layer_digests[1]
    flip_byte(blob_path(store_root, victim))
    damaged = cli("verify", "--json", expect=1)
    problems = damaged.json()["problems"]
    assert [(p["kind"], p["subject"]) for p in problems] == [("damaged-blob", victim)]
    assert image.manifest_digest in problems[0]["referenced_by"]
    human = cli("verify", "team/app", expect=1)
    assert victim in human.stdout
    assert "damaged" in one_error_line(human)


def test_verify_names_a_blob_a_served_store_would_not_serve_and_a_pull_links_it(
    cli: CLI, seeded: SeededRegistry, store_root: Path, tmp_path: Path
) -> None:
    # A stock registry serving the store reaches a repository's blob through its _layers link
    # only, read as exactly a digest, and follows it: verify said OK to all of this.
    image, beside = seeded.app["1.0.0"], seeded.app["1.1.0"]
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    cli("pull", f"{seeded.host}/team/app:1.1.0", "-q")
    missing, newline = image.layer_digests
    other = image.config_digest  # its link made to name a blob of 1.1.0, linked and intact
    elsewhere = beside.layer_digests[0]
    layers = store_root / "docker/registry/v2/repositories/team/app/_layers/sha256"
    links = {d: layers / d.split(":")[1] / "link" for d in (missing, newline, other)}
    assert all(link.read_text() == d for d, link in links.items())
    links[missing].unlink()
    links[newline].write_text(newline + "\n")
    links[other].write_text(elsewhere)

    served = serve_directory(store_root, tmp_path / "served")
    try:
        url = f"{served.url}/v2/team/app/blobs/"
        assert requests.get(url + missing, timeout=30).status_code == 404
        assert requests.get(url + newline, timeout=30).status_code == 500
        wrong = requests.get(url + other, timeout=30)  # another blob's bytes, as if they were it
        assert wrong.status_code == 200 and sha256_digest(wrong.content) == elsewhere
        problems = cli("verify", "--json", expect=1).json()["problems"]
        assert sorted((p["kind"], p["subject"]) for p in problems) == sorted(
            ("unlinked-blob", d) for d in links
        )
        assert all(p["referenced_by"] == [image.manifest_digest] for p in problems)
        human = cli("verify", expect=1)
        assert "answers 404" in human.stdout and "fails on it" in human.stdout
        assert "answers with that blob's bytes" in human.stdout
        hint = one_error_line(human) + human.stderr
        assert f"team/app@{image.manifest_digest}" in hint and "--repair" not in hint

        cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")  # one image: its links written again
        assert all(link.read_text() == d for d, link in links.items())
        assert "OK" in cli("verify").stdout
        for digest in links:
            answer = requests.get(url + digest, timeout=30)
            assert answer.status_code == 200 and sha256_digest(answer.content) == digest
    finally:
        served.stop()


def test_a_linked_repository_is_listed_served_and_kept_by_gc_and_one_out_of_the_store_stops_gc(
    cli: CLI, seeded: SeededRegistry, store_root: Path, tmp_path: Path
) -> None:
    # An operator short of space moves a repository's directory and links it back: a stock
    # registry serving the store follows the link. regstore passed over it, and gc deleted the
    # blobs only that repository used.
    image = seeded.app["1.0.0"]
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    repositories = store_root / "docker/registry/v2/repositories"
    moved = store_root / "moved" / "team"
    moved.parent.mkdir()
    (repositories / "team").rename(moved)
    (repositories / "team").symlink_to(moved)

    served = serve_directory(store_root, tmp_path / "served")
    try:
        catalog = requests.get(f"{served.url}/v2/_catalog", timeout=30).json()
        assert "team/app" in catalog["repositories"]
        for digest in image.blobs:
            answer = requests.get(f"{served.url}/v2/team/app/blobs/{digest}", timeout=30)
            assert answer.status_code == 200 and sha256_digest(answer.content) == digest
    finally:
        served.stop()
    assert "team/app" in cli("ls").stdout
    assert cli("gc", "--grace", "0", "--json").json()["removed"] == []
    assert all(blob_path(store_root, digest).exists() for digest in image.blobs)
    assert cli("verify", "--json").json()["ok"] is True

    outside = tmp_path / "elsewhere" / "team"
    outside.parent.mkdir()
    (repositories / "team").unlink()
    moved.rename(outside)
    (repositories / "team").symlink_to(outside)
    failed = cli("gc", "--grace", "0", expect=1)
    assert str(repositories / "team") in one_error_line(failed)
    assert "leads out of the store root" in one_error_line(failed)
    assert all(blob_path(store_root, digest).exists() for digest in image.blobs)


def test_gc_untagged_frees_the_earlier_images_of_a_moving_tag(
    cli: CLI, registry: RegistryServer, store_root: Path, tmp_path: Path
) -> None:
    # A mirror of `latest` pulled every day kept each day's image, and its blobs, for ever.
    first, second = (build_image(seed=s, layers=2, layer_size=4096, media="oci") for s in (61, 62))
    seed_registry(registry.url, "team/moving", "latest", first)
    cli("pull", f"{registry.host}/team/moving:latest", "-q")
    seed_registry(registry.url, "team/moving", "latest", second)
    cli("pull", f"{registry.host}/team/moving:latest", "-q")
    named = f"team/moving@{first.manifest_digest}"

    plain = cli("gc", "--grace", "0", "--json").json()
    assert plain["untagged_removed"] == [] and plain["removed"] == []  # without the flag
    dry = cli("gc", "--untagged", "--grace", "0", "--dry-run")
    assert f"would remove untagged manifest {named}" in dry.stdout
    assert "would remove 1 untagged manifest(s)" in dry.stdout
    young = cli("gc", "--untagged", "--json").json()  # the default grace: an hour
    assert young["untagged_kept"] == [named] and young["removed"] == []

    report = cli("gc", "--untagged", "--grace", "0", "--json").json()
    assert report["untagged_removed"] == [named]
    removed = {b["digest"] for b in report["removed"]}
    assert removed == set(first.blobs) | {first.manifest_digest}
    assert cli("verify", "--json").json()["ok"] is True
    served = serve_directory(store_root, tmp_path / "served")  # a stock registry reads it still
    try:
        accept = {"Accept": second.manifest_media_type}
        url = f"{served.url}/v2/team/moving/manifests"
        answer = requests.get(f"{url}/latest", headers=accept, timeout=30)
        assert answer.status_code == 200
        assert sha256_digest(answer.content) == second.manifest_digest
        gone = requests.get(f"{url}/{first.manifest_digest}", headers=accept, timeout=30)
        assert gone.status_code == 404
    finally:
        served.stop()


@pytest.mark.parametrize("name", ["Local.Host/team/tool", "Team/app"])
def test_gc_keeps_what_a_registry_serves_under_a_name_regstore_refuses(
    cli: CLI, seeded: SeededRegistry, store_root: Path, tmp_path: Path, name: str
) -> None:
    # A stock registry serving the store takes names regstore refuses (a first component with
    # capitals): no listing of regstore names them, and gc deleted their blobs.
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    served = serve_directory(store_root, tmp_path / "served")
    foreign = build_image(seed=90, layers=2, layer_size=4096, media="oci")
    try:
        seed_registry(served.url, name, "1", foreign)
        assert name in requests.get(f"{served.url}/v2/_catalog", timeout=30).json()["repositories"]
        assert cli("ls", "--json").json()  # regstore's own repositories only, as before
        report = cli("gc", "--grace", "0", "--json").json()
        assert report["removed"] == []
        for digest, data in foreign.blobs.items():
            answer = requests.get(f"{served.url}/v2/{name}/blobs/{digest}", timeout=30)
            assert answer.status_code == 200 and answer.content == data
        answer = requests.get(
            f"{served.url}/v2/{name}/manifests/1",
            headers={"Accept": foreign.manifest_media_type},
            timeout=30,
        )
        assert (
            answer.status_code == 200 and sha256_digest(answer.content) == foreign.manifest_digest
        )
    finally:
        served.stop()


def test_gc_removes_old_unreferenced_blobs_and_keeps_young_ones(
    cli: CLI, seeded: SeededRegistry, store_root: Path
) -> None:
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    old, young = random_blob(3000, seed=1), random_blob(3000, seed=2)
    with open_store(str(store_root)) as store:
        for data in (old, young):
            with store.layer(sha256_digest(data)).writer() as writer:
                writer.write(data)
                writer.commit(len(data))
    two_hours_ago = time.time() - 7200
    os.utime(blob_path(store_root, sha256_digest(old)), (two_hours_ago, two_hours_ago))

    dry = cli("gc", "--dry-run", "--json").json()
    assert [b["digest"] for b in dry["removed"]] == [sha256_digest(old)]
    assert blob_path(store_root, sha256_digest(old)).exists()

    report = cli("gc", "--json").json()  # default grace: one hour
    assert [b["digest"] for b in report["removed"]] == [sha256_digest(old)]
    assert [b["digest"] for b in report["kept_young"]] == [sha256_digest(young)]
    assert not blob_path(store_root, sha256_digest(old)).exists()
    assert blob_path(store_root, sha256_digest(young)).exists()

    for odd in ("nan", "inf", "-1", "1x", "h", "1.5.0h", "nanh", "-2m", ""):
        refused = cli("gc", "--grace", odd, "--json", expect=2)  # nan acted as 0
        assert "--grace" in refused.stderr and "is not a duration" in refused.stderr
    assert blob_path(store_root, sha256_digest(young)).exists()

    # a duration with its unit: the young blob made two hours old
    os.utime(blob_path(store_root, sha256_digest(young)), (two_hours_ago, two_hours_ago))
    for grace, removed in (("3h", []), ("0.1d", []), ("90m", [young]), ("5400s", [young])):
        dry = cli("gc", "--dry-run", "--grace", grace, "--json").json()
        assert [b["digest"] for b in dry["removed"]] == [sha256_digest(b) for b in removed]

    now = cli("gc", "--grace", "0")
    assert f"removed {sha256_digest(young)}" in now.stdout
    assert cli("verify", "--json").json()["ok"] is True  # the image's blobs were kept


def test_delete_a_tag_then_gc_frees_its_blobs(
    cli: CLI, seeded: SeededRegistry, store_root: Path
) -> None:
    a, b = seeded.app["1.0.0"], seeded.app["1.1.0"]
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    cli("pull", f"{seeded.host}/team/app:1.1.0", "-q")
    cli("pull", f"{seeded.host}/team/app:1.1.0", "--as", "team/app:same", "-q")
    deleted = cli("delete", "store:team/app:1.0.0", "--json").json()
    assert deleted["manifests_deleted"] == [a.manifest_digest]
    # another tag still points at 1.1.0's manifest: only the tag goes
    assert cli("delete", "team/app:same", "--json").json()["manifests_deleted"] == []
    removed = {x["digest"] for x in cli("gc", "--grace", "0", "--json").json()["removed"]}
    assert set(a.blobs) | {a.manifest_digest} <= removed
    assert not removed & set(b.blobs)
    # a tag and a digest: which was meant cannot be told (the digest alone was deleted, with
    # every tag of it, while the tag named stayed)
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    both = cli("delete", f"store:team/app:1.0.0@{b.manifest_digest}", expect=2)
    assert "not both" in both.stderr
    assert sorted(cli("--json", "ls").json()["repositories"][0]["tags"]) == ["1.0.0", "1.1.0"]
    by_digest = cli("delete", f"store:team/app@{b.manifest_digest}", "--json").json()
    assert by_digest["tags_deleted"] == ["1.1.0"]  # named: a deletion by digest takes them
    assert by_digest["manifests_deleted"] == [b.manifest_digest]
    assert "deleted tag 1.0.0" in cli("delete", f"store:team/app@{a.manifest_digest}").stdout
    assert cli("--json", "ls").json()["repositories"] == []
    cli("delete", "store:team/app:1.0.0", expect=1)


def test_a_damaged_tag_link_is_listed_verified_and_deleted(cli: CLI, store_root: Path) -> None:
    a, b = build_image(seed=70), build_image(seed=71)
    with open_store(str(store_root)) as store:
        put_image(store, "team/app", "a", a)
        put_image(store, "team/app", "b", b)
    damage_tag_link(store_root, "team/app", "a")
    listed = cli("--json", "ls").json()["repositories"]
    assert [(r["name"], sorted(r["tags"])) for r in listed] == [("team/app", ["a", "b"])]
    tags = cli("--json", "ls", "team/app")  # the readable tags, and a warning for the other
    assert [row["tag"] for row in tags.json()["tags"]] == ["b"]
    assert [row["tag"] for row in tags.json()["unreadable"]] == ["a"]
    assert "tag a not listed: tag a of team/app is damaged: corrupt link file" in tags.stderr
    assert "UNIQUE sizes leave it out" in tags.stderr
    problems = cli("verify", "--json", expect=1).json()["problems"]
    assert [(p["kind"], p["subject"]) for p in problems] == [("damaged-tag", "a")]
    stray = random_blob(500, seed=72)
    with open_store(str(store_root)) as store, store.layer(sha256_digest(stray)).writer() as w:
        w.write(stray)
        w.commit(len(stray))
    refused = one_error_line(cli("gc", "--grace", "0", expect=1))
    assert "tag a of team/app is damaged" in refused and "pull that image again" in refused
    assert blob_path(store_root, sha256_digest(stray)).exists()  # nothing collected
    assert cli("delete", "store:team/app:a", "--json").json()["manifests_deleted"] == []
    assert cli("verify", "--json").json()["ok"] is True


# -- plugins, credentials, transport -------------------------------------------------------------


def test_plugins_lists_installed_backends(cli: CLI) -> None:
    backends = {b["scheme"]: b for b in cli("plugins", "--json").json()["backends"]}
    assert {"file", "memory"} <= set(backends)
    assert backends["file"]["distribution"] == "regstore"
    assert backends["file"]["version"]
    assert backends["file"]["entry_point"] == "regstore.backends.filesystem"
    assert "memory://" in cli("plugins").stdout


def test_wrong_password_is_one_line_and_never_printed(
    cli: CLI, basic_registry: RegistryServer, seeded: SeededRegistry
) -> None:
    secret = "Wr0ng-Pa55word-Zq9"
    assert basic_registry.username is not None and basic_registry.password is not None
    image = build_image(seed=55, layer_size=512)
    with open_store(cli.store) as store:
        put_image(store, "secret/app", "1", image)
    for extra in ((), ("--json",), ("-v",)):
        result = cli(
            "--username", basic_registry.username, "--password-stdin", *extra,
            "push", "secret/app:1", f"{basic_registry.host}/secret/app", input=secret + "\n",
            expect=1,
        )  # fmt: skip
        assert secret not in result.stdout and secret not in result.stderr
        if "-v" not in extra:
            line = one_error_line(result)
            assert "pushing store:secret/app:1" in line and "credentials" in line
        if extra == ("--json",):
            assert result.json()["error"]["type"] == "AuthenticationError"
    good = cli(
        "--username", basic_registry.username, "--password-stdin", "push", "secret/app:1",
        f"{basic_registry.host}/secret/app", "--json", input=basic_registry.password + "\n",
    )  # fmt: skip
    assert good.json()["manifest_digest"] == image.manifest_digest
    assert basic_registry.password not in good.stdout + good.stderr


def test_the_global_password_goes_to_one_registry_only(
    cli: CLI, basic_registry: RegistryServer, seeded: SeededRegistry, tmp_path: Path
) -> None:
    # a copy or sync sent the destination's password to its source too (to Docker Hub's
    # token server, say): refused before any registry is asked
    assert basic_registry.username is not None and basic_registry.password is not None
    login = ("--username", basic_registry.username, "--password-stdin")
    before = len(seeded.server.log_path.read_text()) if seeded.server.log_path else 0
    copied = cli(
        *login, "copy", f"{seeded.host}/team/app:1.0.0", f"{basic_registry.host}/cp/app:1",
        input=basic_registry.password + "\n", expect=2,
    )  # fmt: skip
    line = one_error_line(copied)
    assert "would send one password to" in line and seeded.host in line, line
    assert basic_registry.password not in copied.stdout + copied.stderr
    sync_file = tmp_path / "two.yaml"
    sync_file.write_text(
        f"target: {{registry: '{basic_registry.host}', plain_http: true}}\n"
        f"sources: [{{registry: '{seeded.host}', plain_http: true, repositories: [team/app]}}]\n"
    )
    synced = cli(*login, "sync", str(sync_file), input=basic_registry.password + "\n", expect=2)
    assert "would send one password to" in one_error_line(synced)
    if seeded.server.log_path:  # the source was never asked
        assert "/v2/team/app" not in seeded.server.log_path.read_text()[before:]
    # one registry: as before
    pulled = cli(
        *login, "pull", f"{basic_registry.host}/cp/app:1", input=basic_registry.password + "\n",
        expect=1,
    )  # fmt: skip
    assert "would send" not in pulled.stderr
    # the source has credentials of its own in docker's config: no guess which registry the
    # password is for (a stale entry, a failing helper sent it to the other)
    config = cli.home / ".docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"auths": {seeded.host: {"auth": "c291cmNlOnNlY3JldA=="}}}))
    again = cli(
        *login, "copy", f"{seeded.host}/team/app:1.0.0", f"{basic_registry.host}/cp/app:1",
        input=basic_registry.password + "\n", expect=2,
    )  # fmt: skip
    assert "would send one password to" in one_error_line(again)


def test_every_json_result_says_ok(cli: CLI, seeded: SeededRegistry, tmp_path: Path) -> None:
    # ls, inspect, gc, plugins and bundle ls printed objects without it: a script checking
    # `.ok` read them as failures
    cli("pull", f"{seeded.host}/team/app:1.0.0", "-q")
    bundle = str(tmp_path / "b.tar")
    cli("bundle", "create", bundle, "store:team/app:1.0.0", "-q")
    for command in (
        ["ls"],
        ["ls", "team/app"],
        ["inspect", "store:team/app:1.0.0"],
        ["inspect", "store:team/app:1.0.0", "--referrers"],
        ["gc", "--dry-run"],
        ["gc"],
        ["plugins"],
        ["bundle", "ls", bundle],
        ["verify"],
    ):
        assert cli("--json", *command).json()["ok"] is True, command


def test_unreachable_registry_and_transport_options(
    cli: CLI, seeded: SeededRegistry, tmp_path: Path
) -> None:
    down = cli("--retries", "0", "pull", "127.0.0.1:9/team/app:1", expect=1)
    line = one_error_line(down)
    assert line.startswith("regstore: error: pulling 127.0.0.1:9/team/app:1 failed:")
    assert "try:" in line

    insecure = cli("--insecure", "inspect", f"{seeded.host}/team/app:1.0.0", "--json")
    # (a loopback registry speaks plain HTTP: no certificate left unchecked to warn of)
    assert "NOT verified" not in insecure.stderr and insecure.json()["digest"]
    ca = tmp_path / "ca.pem"
    ca.write_text("not used over plain HTTP\n")
    cli("--plain-http", "--ca-cert", str(ca), "inspect", f"{seeded.host}/team/app:1.0.0", "-q")
    verbose = cli("-v", "pull", f"{seeded.host}/team/app:1.0.0")
    assert "INFO" in verbose.stderr or "DEBUG" in verbose.stderr


def test_default_store_is_in_the_user_data_directory(home: Path, seeded: SeededRegistry) -> None:
    result = run_cli("pull", f"{seeded.host}/team/app:1.0.0", home=home)
    assert result.returncode == 0, str(result)
    root = home / ".local" / "share" / "regstore"
    digest = seeded.app["1.0.0"].manifest_digest
    assert blob_path(root, digest).exists()


# -- progress ------------------------------------------------------------------------------------


def test_plain_progress_lines_when_not_a_terminal(cli: CLI, seeded: SeededRegistry) -> None:
    image = seeded.app["1.2.0"]
    result = cli("pull", f"{seeded.host}/team/app:1.2.0")
    for digest in image.blobs:
        assert f"pulled {digest[:19]}" in result.stderr
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log
    assert result.stdout.startswith(f"pulled {seeded.host}/team/app:1.2.0 -> store:team/app:1.2.0")
    quiet = cli("pull", f"{seeded.host}/team/app:1.2.0", "-q")
    assert quiet.stdout == "" and quiet.stderr == ""


def test_progress_bars_on_a_terminal(cli: CLI, seeded: SeededRegistry) -> None:
    env = cli_env(cli.home, cli.store, {"TERM": "xterm-256color", "COLUMNS": "120"})
    env.pop("NO_COLOR", None)
    code, text = run_in_pty(["pull", f"{seeded.host}/team/app:2.0.0"], env)
    assert code == 0, text
    assert "━" in text  # rich's bar
    assert "100%" in text
    assert "total" in text
    assert "KiB" in text


def test_json_mode_prints_only_json_even_on_a_terminal(cli: CLI, seeded: SeededRegistry) -> None:
    env = cli_env(cli.home, cli.store, {"TERM": "xterm-256color"})
    code, text = run_in_pty(["--json", "pull", f"{seeded.host}/team/app:2.0.0"], env)
    assert code == 0, text
    assert "━" not in text
    assert json.loads(text)["ok"] is True


def test_output_whose_reader_went_away_ends_the_command_quietly(cli: CLI, store_root: Path) -> None:
    # `regstore inspect ... | head -1` printed "error: ... BrokenPipeError" and exited 1
    with open_store(str(store_root)) as store:
        put_image(store, "team/app", "1", build_image(seed=80))
    environ = cli_env(cli.home, cli.store, None)
    for command in (["inspect", "store:team/app:1"], ["--json", "ls"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "regstore", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader goes before the command writes a byte
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, stderr  # as if SIGPIPE had stopped it
        assert stderr == ""


def test_reading_commands_on_a_directory_that_holds_no_store_of_their_layout_fail(
    cli: CLI, tmp_path: Path
) -> None:
    # each said "checked 0 ... OK": a cron job's verify stayed green looking at nothing
    oci, dist = tmp_path / "oci", tmp_path / "dist"
    with open_store(f"file://{oci}?layout=oci") as store:
        put_image(store, "team/app", "1", build_image(seed=81))
    with open_store(str(dist)) as store:
        put_image(store, "team/app", "1", build_image(seed=82))
    for url, other in ((str(oci), "oci"), (f"file://{dist}?layout=oci", "distribution")):
        for command in (["verify"], ["ls"], ["gc", "--dry-run"]):
            failed = cli(*command, store=url, expect=1)
            line = one_error_line(failed)
            assert f"holds a store of the {other} layout" in line
            assert f"file://{url.removeprefix('file://').split('?')[0]}?layout={other}" in line
            assert "writable" not in line  # (a plain path takes no ?layout=: a URL is given)
    (tmp_path / "empty").mkdir()
    for url in (str(tmp_path), str(tmp_path / "empty")):  # a parent directory, an empty one
        assert "no store at" in one_error_line(cli("verify", store=url, expect=1))
    assert cli("verify", store=f"file://{oci}?layout=oci").returncode == 0
    assert cli("verify", store=str(dist)).returncode == 0


def test_a_store_on_the_command_line_and_a_sync_file_target_are_two_destinations(
    cli: CLI, seeded: SeededRegistry, tmp_path: Path, store_root: Path
) -> None:
    # --store was taken and then ignored without a word: the images went to the file's target.
    theirs = tmp_path / "theirs"
    sync_file = tmp_path / "sync.yaml"
    source = f"sources:\n  - registry: '{seeded.host}'\n    plain_http: true\n"
    source += "    repositories: [{name: team/app, tags: ['1.0.0']}]\n"
    sync_file.write_text(f"target: {{store: '{theirs}'}}\n{source}")
    mine = tmp_path / "mine"
    for where in ("--store", "sync"):  # before the command or after it
        args = ["--store", str(mine), "sync", str(sync_file)]
        if where == "sync":
            args = ["sync", str(sync_file), "--store", str(mine)]
        refused = cli(*args, expect=2)
        assert f"--store {mine} and the sync file's target (the store {theirs})" in refused.stderr
        assert not theirs.exists() and not mine.exists()
    # a registry target: the same
    sync_file.write_text(f"target: {{registry: '{seeded.host}', plain_http: true}}\n{source}")
    refused = cli("--store", str(mine), "sync", str(sync_file), "--json", expect=2)
    assert f"target (the registry {seeded.host})" in refused.json()["error"]["message"]
    # the same store twice is one destination; REGSTORE_STORE is a default the file overrides
    sync_file.write_text(f"target: {{store: '{theirs}'}}\n{source}")
    assert cli("--store", str(theirs), "sync", str(sync_file), "--json").json()["copied"] == 1
    # REGSTORE_STORE (store_root) is a default the file's target overrides
    assert cli("sync", str(sync_file), "--json").json()["skipped"] == 1
    assert not store_root.exists()
