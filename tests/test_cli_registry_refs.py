"""Registry references where a newcomer writes them: ``ls`` lists a registry's tags, store-only
commands say a registry image is not theirs, and a registry's not-found points at its tags.

``ls 127.0.0.1:5000/team/app`` failed with "must be lowercase path components" (a store name
cannot hold a port), as did ``delete`` and ``push`` of a registry image; a tag missing on a
registry was answered with a hint about the store.
"""

from __future__ import annotations

import json
from pathlib import Path

from regstore.testing.builders import build_image

from .support.cli import run_cli
from .support.engine import seed_registry
from .support.registry import RegistryServer


def test_ls_lists_the_tags_of_a_registry_repository(
    registry: RegistryServer, tmp_path: Path
) -> None:
    for tag in ("1.0", "2.0"):
        seed_registry(registry.url, "refs/app", tag, build_image(seed=90, layers=1))
    listed = run_cli("--json", "ls", f"{registry.host}/refs/app", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "ok": True,
        "registry": registry.host,
        "repository": "refs/app",
        "tags": ["1.0", "2.0"],
    }
    table = run_cli("ls", f"{registry.host}/refs/app", home=tmp_path)
    assert table.stdout.split() == ["TAG", "1.0", "2.0"]
    tagged = run_cli("ls", f"{registry.host}/refs/app:1.0", home=tmp_path)
    assert tagged.returncode == 2 and "without a tag" in tagged.stderr


def test_a_store_only_command_given_a_registry_image_says_so(tmp_path: Path) -> None:
    for args in (("delete", "127.0.0.1:5000/team/app:1"), ("verify", "127.0.0.1:5000/team/app")):
        result = run_cli(*args, home=tmp_path)
        assert result.returncode == 2
        assert "names an image of the registry 127.0.0.1:5000" in result.stderr
        assert "lowercase" not in result.stderr


def test_a_tag_missing_on_a_registry_points_at_its_tags(
    registry: RegistryServer, tmp_path: Path
) -> None:
    seed_registry(registry.url, "refs/other", "1.0", build_image(seed=91, layers=1))
    pulled = run_cli("pull", f"{registry.host}/refs/other:nosuch", home=tmp_path)
    assert pulled.returncode == 1
    assert f"regstore ls {registry.host}/refs/other" in pulled.stderr
    assert "stored repository" not in pulled.stderr
