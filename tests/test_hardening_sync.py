"""Hardening of sync (issue 10): hostile tag lists, YAML aliases, concurrency caps and
symlinks inside a filesystem store root.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from regstore import open_store, pull
from regstore.client import Client
from regstore.engine import MAX_CONCURRENCY
from regstore.engine.filters import TagFilter, partition_tags
from regstore.engine.sync import SyncFileError, parse_sync_text, plan_sync, run_sync
from regstore.engine.verify import verify
from regstore.errors import FilterError, StoreEscapeError
from regstore.testing.builders import BuiltImage, build_image

from .support.cli import cli_env, run_cli
from .support.fake_registry import FakeRegistry, FakeRequest

NAME = "team/app"


def serve_images(
    fake: FakeRegistry,
    name: str,
    tags: Sequence[object],
    images: dict[str, BuiltImage],
    catalog: Sequence[object] = (),
) -> None:
    """Make ``fake`` answer like a registry holding ``images`` (by tag) in ``name``, whose tag
    list is ``tags`` and catalog ``catalog`` as given (invalid entries included: a registry
    may send anything)."""
    by_reference: dict[str, tuple[str, bytes]] = {}
    blobs: dict[str, bytes] = {}
    for tag, image in images.items():
        entry = (image.manifest_media_type, image.manifest_bytes)
        by_reference[tag] = by_reference[image.manifest_digest] = entry
        blobs.update(image.blobs)
    prefix = f"/v2/{name}/"

    def respond(request: FakeRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        path = request.path
        if path == "/v2/":
            return 200, [("Content-Type", "application/json")], b"{}"
        if path == "/v2/_catalog" and request.method == "GET":
            body = json.dumps({"repositories": list(catalog)}).encode()
            return 200, [("Content-Type", "application/json")], body
        if path == prefix + "tags/list" and request.method == "GET":
            body = json.dumps({"name": name, "tags": list(tags)}).encode()
            return 200, [("Content-Type", "application/json")], body
        if path.startswith(prefix + "manifests/"):
            found = by_reference.get(path[len(prefix + "manifests/") :])
            if found is not None:
                media_type, raw = found
                digest = next(d for d, v in by_reference.items() if v == found and ":" in d)
                headers = [("Content-Type", media_type), ("Docker-Content-Digest", digest)]
                headers.append(("Content-Length", str(len(raw))))
                return 200, headers, b"" if request.method == "HEAD" else raw
        if path.startswith(prefix + "blobs/"):
            blob = blobs.get(path[len(prefix + "blobs/") :])
            if blob is not None:
                headers = [("Content-Type", "application/octet-stream")]
                headers.append(("Content-Length", str(len(blob))))
                return 200, headers, b"" if request.method == "HEAD" else blob
        error = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}
        return 404, [("Content-Type", "application/json")], json.dumps(error).encode()

    fake.fallback = respond


# -- 7. one unusable tag must not fail the repository -------------------------------------------

INVALID_TAGS = ["..", "-dash", ".hidden", "a/b", "x" * 129, "ü"]


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_invalid_tags_from_the_registry_are_skipped_and_the_valid_ones_mirrored(
    fake_registry: FakeRegistry, tmp_path: Path, order: str
) -> None:
    valid = {
        tag: build_image(layers=1, layer_size=64, seed=i)
        for i, tag in enumerate(["0.9", "1.0", "latest", "a", "zz"])
    }
    listed = sorted([*valid, *INVALID_TAGS])
    if order == "reversed":
        listed.reverse()
    serve_images(fake_registry, NAME, listed, valid)
    spec = parse_sync_text(
        f"sources:\n  - registry: {fake_registry.host}\n    repositories: [{NAME}]\n"
    )
    store = open_store(f"memory://i10-{uuid.uuid4().hex}")
    plan = plan_sync(
        spec, client_for=lambda c: Client(c.registry, plain_http=True), target_store=store
    )
    batch = run_sync(plan)
    assert sorted(store.tags(NAME)) == sorted(valid)
    for tag, image in valid.items():
        assert store.resolve(NAME, tag) == image.manifest_digest
    skipped = {o.source: o for o in batch.by_status("skipped")}
    shown = [*INVALID_TAGS[:-2], "x" * 64 + "... (129 characters)", "ü"]
    assert sorted(skipped) == sorted(f"{fake_registry.host}/{NAME}:{tag}" for tag in shown)
    for outcome in skipped.values():
        assert outcome.result is None
        assert outcome.error is not None
        assert outcome.error.startswith("invalid tag listed by the registry, not mirrored: ")
    assert batch.ok
    assert not batch.by_status("failed")


def test_the_cli_warns_of_an_invalid_tag_and_reports_it_skipped_in_json(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    valid = {"1.0": build_image(layers=1, layer_size=64, seed=7)}
    serve_images(fake_registry, NAME, ["..", "1.0"], valid)
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(
        f"sources:\n  - registry: {fake_registry.host}\n    repositories: [{NAME}]\n"
    )
    store = tmp_path / "store"
    result = run_cli("sync", str(sync_file), "--json", home=tmp_path, store=str(store))
    assert result.returncode == 0, result
    report = json.loads(result.stdout)
    by_source = {image["source"]: image for image in report["images"]}
    bad = by_source[f"{fake_registry.host}/{NAME}:.."]
    assert bad["status"] == "skipped" and "invalid tag" in bad["error"]
    assert by_source[f"{fake_registry.host}/{NAME}:1.0"]["status"] == "copied"
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"regstore: warning: {fake_registry.host}/{NAME}:..: invalid tag listed by the "
        "registry, not mirrored: must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
    ]
    assert open_store(str(store)).resolve(NAME, "1.0") == valid["1.0"].manifest_digest


def test_invalid_repository_names_in_a_catalog_are_skipped_not_failed(
    fake_registry: FakeRegistry,
) -> None:
    serve_images(fake_registry, NAME, ["1.0"], {}, catalog=["../etc", NAME, "Upper/Case"])
    spec = parse_sync_text(f"sources:\n  - registry: {fake_registry.host}\n    catalog: true\n")
    store = open_store(f"memory://i10-{uuid.uuid4().hex}")
    plan = plan_sync(
        spec, client_for=lambda c: Client(c.registry, plain_http=True), target_store=store
    )
    assert plan.failures == []
    assert [str(job.source) for job in plan.jobs] == [f"{fake_registry.host}/{NAME}:1.0"]
    assert sorted(o.source for o in plan.skipped) == [
        f"{fake_registry.host} (catalog): ../etc",
        f"{fake_registry.host} (catalog): Upper/Case",
    ]
    assert all("invalid repository name" in (o.error or "") for o in plan.skipped)


def test_tag_filters_never_keep_an_invalid_tag_and_partition_says_why() -> None:
    listed: list[object] = ["1.0", "..", 7, "1.0", "-x", "2.0"]
    valid, invalid = partition_tags(listed)
    assert valid == ["1.0", "2.0"]
    assert [bad.tag for bad in invalid] == ["..", 7, "-x"]
    assert "expected a string" in invalid[1].reason
    assert TagFilter().select(["1.0", "..", "-x", "a" * 200, "latest"]) == ["latest", "1.0"]
    assert TagFilter(include=[r"\.\."]).select(["..", "1..2", "ok"]) == ["1..2"]


def test_an_exact_tag_that_is_invalid_is_a_filter_and_sync_file_error() -> None:
    with pytest.raises(FilterError, match="invalid tag"):
        TagFilter(exact=[".."])
    text = (
        "sources:\n  - registry: r.example\n    repositories:\n      - name: a\n"
        "        tags: {exact: ['..']}\n"
    )
    with pytest.raises(SyncFileError, match=r"^<sync file>:5: sources\[0\]"):
        parse_sync_text(text)


# -- 9. YAML aliases in a sync file ---------------------------------------------------------------

SELF_ALIAS = """\
sources: &s
  - registry: r.example
    repositories: *s
"""

# "billion laughs": nine levels of nine aliases each, 9**9 leaves once expanded
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)

ALIAS_ERROR = "YAML aliases (*name) are not allowed in a sync file"


def test_a_self_referencing_alias_is_a_one_line_error_naming_the_line() -> None:
    with pytest.raises(SyncFileError) as caught:
        parse_sync_text(SELF_ALIAS, "loop.yaml")
    message = str(caught.value)
    assert message.startswith(f"loop.yaml:3: {ALIAS_ERROR}")
    assert "*s" in message and "\n" not in message


def test_merge_keys_are_aliases_too_and_refused_with_a_hint() -> None:
    text = "defaults: &d {concurrency: 2}\nother:\n  <<: *d\n"
    with pytest.raises(SyncFileError, match=r"^s\.yaml:3: .*merge keys \(<<: \*d\) included"):
        parse_sync_text(text, "s.yaml")


def test_an_anchor_without_alias_is_harmless() -> None:
    spec = parse_sync_text("sources: &s\n  - registry: r.example\n    repositories: [a]\n")
    assert spec.sources[0].repositories[0].name == "a"


def test_deep_nesting_is_a_one_line_error_not_a_recursion_error() -> None:
    text = "sources: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(SyncFileError, match=r"^deep\.yaml:1: .*nested more than"):
        parse_sync_text(text, "deep.yaml")


def test_deep_flow_nesting_is_refused_by_the_scanner_before_its_work_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyYAML's scanner looks through one possible key per open '[' or '{' at every token
    (quadratic in the depth); the 65th level is refused as it opens, on its own line."""
    import yaml.scanner

    looks = 0
    stale = yaml.scanner.Scanner.stale_possible_simple_keys

    def counted(self: Any) -> None:
        nonlocal looks
        looks += len(self.possible_simple_keys)
        stale(self)

    monkeypatch.setattr(yaml.scanner.Scanner, "stale_possible_simple_keys", counted)
    with pytest.raises(SyncFileError, match=r"^deep\.yaml:1: .*nested more than 64 levels"):
        parse_sync_text("sources: " + "[" * 20_000, "deep.yaml")
    assert looks < 64 * 64 * 2, looks  # unbounded, it was ~1.9 million


def _limited_memory() -> None:  # runs in the child: 1 GiB of address space, no more
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize(("text", "line"), [(SELF_ALIAS, 3), (BOMB, 2)])
def test_the_cli_refuses_an_alias_with_exit_code_2_without_expanding(
    tmp_path: Path, text: str, line: int
) -> None:
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(text)
    proc = subprocess.run(  # a bounded child: an expanding parser dies of MemoryError
        [sys.executable, "-m", "regstore", "sync", str(sync_file)],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path, str(tmp_path / "store")),
        preexec_fn=_limited_memory,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    (only_line,) = proc.stderr.splitlines()
    assert only_line.startswith(f"regstore: error: {sync_file}:{line}: {ALIAS_ERROR}")


# -- one concurrency cap for the command line and the sync file ----------------------------------


def test_sync_file_concurrency_above_the_cap_is_an_error_naming_the_line() -> None:
    text = f"defaults:\n  concurrency: {MAX_CONCURRENCY + 1}\nsources: []\n"
    with pytest.raises(SyncFileError) as caught:
        parse_sync_text(text, "s.yaml")
    assert str(caught.value) == (
        f"s.yaml:2: defaults.concurrency: expected a positive integer up to {MAX_CONCURRENCY}, "
        f"got {MAX_CONCURRENCY + 1}"
    )
    ok = parse_sync_text(
        f"defaults: {{concurrency: {MAX_CONCURRENCY}}}\n"
        "sources: [{registry: r.io, catalog: true}]\n"
    )
    assert ok.defaults.concurrency == MAX_CONCURRENCY


def test_the_cli_and_the_sync_file_share_the_cap(tmp_path: Path) -> None:
    sync_file = tmp_path / "sync.yaml"
    sync_file.write_text(
        "defaults:\n  concurrency: 100000\nsources: [{registry: r.io, catalog: true}]\n"
    )
    from_file = run_cli("sync", str(sync_file), home=tmp_path, store=str(tmp_path / "s"))
    assert from_file.returncode == 2
    assert f"{sync_file}:2: defaults.concurrency: expected a positive integer up to " in (
        from_file.stderr
    )
    option = run_cli(
        "sync", str(sync_file), "--concurrency", str(MAX_CONCURRENCY + 1), home=tmp_path
    )
    assert option.returncode == 2
    assert f"is not in the range 1<=x<={MAX_CONCURRENCY}" in option.stderr


# -- symbolic links inside a filesystem store root ----------------------------------------------

V2 = Path("docker", "registry", "v2")


def _pull_into(fake_registry: FakeRegistry, root: Path, layout: str = "distribution") -> BuiltImage:
    image = build_image(layers=2, layer_size=256, seed=3)
    serve_images(fake_registry, NAME, ["1.0"], {"1.0": image})
    store = open_store(str(root), layout=layout)
    try:
        pull(Client(fake_registry.host, plain_http=True), store, NAME, "1.0")
    finally:
        store.close()
    return image


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("layout", "linked"),
    [
        ("distribution", V2 / "repositories"),
        ("distribution", V2 / "blobs"),
        ("distribution", V2 / "blobs" / "sha256"),
        ("distribution", V2),
        ("distribution", Path("_regstore")),
        ("distribution", Path("_regstore", "locks")),
        ("oci", Path("blobs")),
        ("oci", Path("blobs", "sha256")),
    ],
    ids=str,
)
def test_a_symlink_leading_out_of_the_store_root_is_refused_and_nothing_lands_there(
    fake_registry: FakeRegistry, tmp_path: Path, layout: str, linked: Path
) -> None:
    root, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / linked).parent.mkdir(parents=True)
    (root / linked).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StoreEscapeError) as caught:
        _pull_into(fake_registry, root, layout)
    message = str(caught.value)
    assert f"{root / linked} -> {elsewhere}" in message, message
    assert "leads out of the store root" in message
    assert list(elsewhere.iterdir()) == []
    assert caught.value.link == str(root / linked)


def test_a_store_root_that_is_itself_a_symlink_works_and_inner_links_may_stay_inside(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    (real / V2 / "elsewhere-in-root").mkdir(parents=True)
    (real / V2 / "repositories").symlink_to(real / V2 / "elsewhere-in-root")
    root = tmp_path / "link"
    root.symlink_to(real, target_is_directory=True)
    image = _pull_into(fake_registry, root)
    store = open_store(str(root))
    assert store.resolve(NAME, "1.0") == image.manifest_digest
    assert _files_under(real / V2 / "elsewhere-in-root")  # the links landed inside the root
    assert verify(store).ok


def test_reading_through_a_symlink_out_of_the_root_is_refused(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    image = _pull_into(fake_registry, root)
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    layer = image.layer_digests[0]
    data = root / V2 / "blobs" / "sha256" / layer[7:9] / layer[7:] / "data"
    data.unlink()
    data.symlink_to(secret)
    store = open_store(str(root))
    with pytest.raises(StoreEscapeError, match=f"{data} -> {secret}"):
        store.layer(layer).reader()
    tag_link = root / V2 / "repositories" / NAME / "_manifests" / "tags" / "1.0" / "current"
    shutil.rmtree(tag_link)
    tag_link.symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(StoreEscapeError):
        store.resolve(NAME, "1.0")


def test_the_cli_pull_into_a_store_with_an_escaping_link_fails_with_one_line(
    fake_registry: FakeRegistry, tmp_path: Path
) -> None:
    image = build_image(layers=1, layer_size=64, seed=5)
    serve_images(fake_registry, NAME, ["1.0"], {"1.0": image})
    root, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / V2).mkdir(parents=True)
    (root / V2 / "repositories").symlink_to(elsewhere, target_is_directory=True)
    result = run_cli("pull", f"{fake_registry.host}/{NAME}:1.0", home=tmp_path, store=str(root))
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("regstore: error: ")]
    assert f"the symbolic link {root / V2 / 'repositories'} -> {elsewhere} leads out" in line
    assert list(elsewhere.iterdir()) == []
