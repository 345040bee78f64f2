"""A real docker credential helper for tests: ``docker-credential-<name>`` in a directory.

It speaks docker's helper protocol (``store``: JSON ``ServerURL``/``Username``/``Secret`` on
stdin; ``get``/``erase``: the server URL on stdin; ``list``), keeps its secrets in
``store.json`` beside it and appends ``<action> <server>`` to ``calls.log`` (never a secret).
A file named ``fail`` beside it makes every call fail, as a locked keychain does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CredentialHelper", "install_credential_helper"]

_SCRIPT = """#!{python}
import json, pathlib, sys
here = pathlib.Path({dir!r})
action, data = sys.argv[1], sys.stdin.read()
path = here / "store.json"
store = json.loads(path.read_text()) if path.exists() else {{}}
server = json.loads(data)["ServerURL"] if action == "store" else data.strip()
with open(here / "calls.log", "a") as log:
    log.write(action + " " + server + "\\n")
if (here / "fail").exists():
    print("the keychain is locked")
    sys.exit(1)
if action == "store":
    request = json.loads(data)
    store[server] = [request["Username"], request["Secret"]]
elif action == "list":
    print(json.dumps({{k: v[0] for k, v in store.items()}}))
    sys.exit(0)
elif server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
elif action == "get":
    user, secret = store[server]
    print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
    sys.exit(0)
elif action == "erase":
    del store[server]
else:
    sys.exit(2)
path.write_text(json.dumps(store))
"""


@dataclass(frozen=True)
class CredentialHelper:
    """An installed fake helper: ``name`` for docker's config, ``bindir`` to put on PATH."""

    name: str
    bindir: Path

    @property
    def secrets(self) -> dict[str, list[str]]:
        """What it holds: {server: [username, secret]}."""
        path = self.bindir / "store.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def calls(self) -> list[str]:
        """``"<action> <server>"`` for every call so far."""
        path = self.bindir / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def path_env(self) -> str:
        """A PATH value with the helper first."""
        return f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}"

    def fail(self, failing: bool = True) -> None:
        """Make every call fail (or succeed again)."""
        marker = self.bindir / "fail"
        if failing:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)


def install_credential_helper(bindir: Path, name: str = "test") -> CredentialHelper:
    """Write ``docker-credential-<name>`` into ``bindir`` (created) and return it."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    script.write_text(_SCRIPT.format(python=sys.executable, dir=str(bindir)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return CredentialHelper(name, bindir)
