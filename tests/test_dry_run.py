"""``pull``, ``push`` and ``copy --dry-run`` against the real registry: what would move is
said (copy or unchanged, the image's blobs, those the destination lacks and their size), and
nothing moves."""

from __future__ import annotations

from pathlib import Path

from regstore import RegistryImage, StoreImage, open_store, preview_transfer
from regstore.client import Client
from regstore.testing.builders import build_image
from tests.support.cli import run_cli
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer

BASE = build_image(seed=4100, layers=1, layer_size=4096)
APP = build_image(seed=4101, layers=1, layer_size=2048, shared_layers=BASE.layers)


def _sizes(image: object, digests: list[str]) -> int:
    return sum(len(image.blobs[d]) for d in digests)  # type: ignore[attr-defined]


def test_pull_dry_run_says_what_would_move_and_moves_nothing(
    registry: RegistryServer, tmp_path: Path
) -> None:
    seed_registry(registry.url, "team/app", "1", APP)
    seed_registry(registry.url, "team/base", "1", BASE)
    home, store = tmp_path / "home", str(tmp_path / "store")

    empty = run_cli("--json", "pull", f"{registry.host}/team/app:1", "--dry-run", home=home,
                    store=store)  # fmt: skip
    assert empty.returncode == 0, empty
    (job,) = empty.json()["jobs"]
    size = sum(len(b) for b in APP.blobs.values())
    assert job["action"] == "copy" and job["digest"] == APP.manifest_digest
    assert (job["blobs"], job["size"]) == (len(APP.blobs), size)
    assert (job["missing_blobs"], job["missing_size"]) == (len(APP.blobs), size)
    assert job["destination"] == "store:team/app:1"
    assert not Path(store).exists() or open_store(store).repositories() == []  # nothing moved

    # the base's layer is there once the base is pulled: only the rest is lacking
    assert run_cli("pull", f"{registry.host}/team/base:1", home=home, store=store).returncode == 0
    shared = run_cli("--json", "pull", f"{registry.host}/team/app:1", "--dry-run", home=home,
                     store=store).json()["jobs"][0]  # fmt: skip
    lacking = [d for d in APP.blobs if d not in BASE.blobs]
    assert (shared["missing_blobs"], shared["missing_size"]) == (
        len(lacking),
        _sizes(APP, lacking),
    )
    with open_store(store) as opened:
        assert opened.repositories() == ["team/base"]

    assert run_cli("pull", f"{registry.host}/team/app:1", home=home, store=store).returncode == 0
    text = run_cli("pull", f"{registry.host}/team/app:1", "--dry-run", home=home, store=store)
    assert text.returncode == 0, text
    assert "skip" in text.stdout and "0 lacking (0 B)" in text.stdout, text
    assert "dry run: 0 to copy" in text.stderr + text.stdout


def test_push_and_copy_dry_runs_ask_the_registry_and_write_nothing(
    registry: RegistryServer, tmp_path: Path
) -> None:
    seed_registry(registry.url, "team/app", "1", APP)
    seed_registry(registry.url, "team/app", "2", BASE)
    seed_registry(registry.url, "team/base", "1", BASE)
    home, store = tmp_path / "home", str(tmp_path / "store")
    assert run_cli("pull", f"{registry.host}/team/app:1", home=home, store=store).returncode == 0

    pushed = run_cli("--json", "push", "team/app:1", f"{registry.host}/pushed/app", "--dry-run",
                     home=home, store=store)  # fmt: skip
    assert pushed.returncode == 0, pushed
    (job,) = pushed.json()["jobs"]
    assert job["action"] == "copy" and job["missing_blobs"] == len(APP.blobs)
    client = Client(registry.host, use_docker_config=False)
    assert client.head_manifest("pushed/app", "1") is None  # nothing written

    # every tag of the repository: the base's own image is held by team/base already
    copied = run_cli("--json", "copy", f"{registry.host}/team/app", f"{registry.host}/team/base",
                     "--include", ".*", "--dry-run", home=home, store=store)  # fmt: skip
    assert copied.returncode == 0, copied
    rows = {row["source"].rsplit(":", 1)[-1]: row for row in copied.json()["jobs"]}
    assert rows["2"]["action"] == "copy"  # team/base has no tag 2 ...
    assert rows["2"]["missing_blobs"] == 0  # ... but holds every blob of it
    assert rows["1"]["missing_blobs"] == len([d for d in APP.blobs if d not in BASE.blobs])
    assert client.list_image_tags("team/base") == ["1"]


def test_a_dry_run_fails_what_the_run_would_fail(registry: RegistryServer, tmp_path: Path) -> None:
    seed_registry(registry.url, "team/app", "1", APP)
    home, store = tmp_path / "home", str(tmp_path / "store")
    missing = run_cli("--json", "pull", f"{registry.host}/team/app:nope", "--dry-run", home=home,
                      store=store)  # fmt: skip
    assert missing.returncode == 1, missing
    doc = missing.json()
    assert doc["ok"] is False and doc["jobs"][0]["action"] == "fail"
    assert "nope" in doc["jobs"][0]["error"]
    refused = run_cli("pull", f"{registry.host}/team/app:1", "--dry-run", "--repair", home=home,
                      store=store)  # fmt: skip
    assert refused.returncode == 2 and "--repair and --dry-run" in refused.stderr


def test_preview_transfer_is_the_python_api_of_the_dry_run(
    registry: RegistryServer, tmp_path: Path
) -> None:
    seed_registry(registry.url, "team/app", "1", APP)
    client = Client(registry.host, use_docker_config=False)
    with open_store(str(tmp_path / "store")) as store:
        preview = preview_transfer(RegistryImage(client, "team/app", "1"), StoreImage(store, "x"))
        assert preview.action == "copy" and preview.destination == "store:x:1"
        assert preview.manifests == 1 and preview.missing_blobs == len(APP.blobs)
        assert store.repositories() == []
