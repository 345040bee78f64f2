"""The Python examples of the documentation work: each one runs and passes ``mypy --strict``.

Every ```` ```python ```` block of :data:`DOCUMENTS` is extracted (nothing is listed by hand, so
a new example is tested the moment it is written). Each block runs in a fresh interpreter
(``python -c``) against a real ``docker-registry`` seeded with the images the examples name
(:data:`SEED`) and, when the block mentions ``s3://``, the moto S3 server; the placeholders the
examples use are replaced first (:func:`substitutions`, a small documented table). All blocks are
then type-checked together in one ``mypy --strict`` run.

A block may be marked by an HTML comment on the line right before it:

- ``<!-- not-run: why -->``: type-checked, not run (e.g. it needs a service we do not start);
- ``<!-- fragment: why -->``: neither (a piece of a larger file that uses names defined
  elsewhere, e.g. a plugin's code around it).

Marked blocks are few and listed exactly in :data:`NOT_RUN` and :data:`FRAGMENTS` (by document
and first line), so a block is never skipped silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from regstore.testing.builders import Built, build_image, build_index
from tests.support.registry import RegistryServer

ROOT = Path(__file__).resolve().parent.parent

#: The documents whose Python examples are tested: the README, every plugin's README, the guides.
DOCUMENTS = (
    "README.md",
    *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("plugins/*/README.md")),
    *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.md")),
)

#: Marked blocks, by (document, first line of the block): exactly these, no more, no fewer.
NOT_RUN: frozenset[tuple[str, str]] = frozenset()
FRAGMENTS = frozenset(
    {
        ("README.md", "# regstore_mystore/__init__.py"),
        ("docs/plugin-guide.md", "class SqliteBackend(ComposedBlobs):"),
        ("docs/plugin-guide.md", "class RowStaging(AppendStaging):"),
        (
            "docs/plugin-guide.md",
            '@location_factory({"timeout": Option(float, default=30.0, help="seconds to wait for'
            ' a lock")})',
        ),
        ("docs/plugin-guide.md", "@hookimpl"),
        ("docs/plugin-guide.md", "import pytest"),
    }
)


def _seed_images() -> dict[str, dict[str, Built]]:
    return {
        "team/app": {"1.2": build_image(layers=2, layer_size=4096, seed=1)},
        "team/multi": {"1.0": build_index(seed=4)},  # an index of several platforms
        "a/b": {"1.0": build_image(layers=1, seed=2), "2.0": build_image(layers=1, seed=3)},
    }


#: The images the examples name, pushed to the registry before each block runs (an example
#: naming another image needs it added here).
SEED = _seed_images()

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!--\s*(not-run|fragment):\s*(.+?)\s*-->\s*\Z")


@dataclass(frozen=True)
class Block:
    """One Python example: where it is, its code and its marker (``run``, ``not-run``...)."""

    document: str
    line: int
    code: str
    mark: str
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.document, self.code.splitlines()[0] if self.code.strip() else "")

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def extract_blocks(document: str) -> list[Block]:
    """Every ```` ```python ```` block of ``document`` with the marker just before it, if any."""
    text = (ROOT / document).read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n")
        last_line = before.rsplit("\n", 1)[-1]
        mark = _MARK.search(last_line)
        line = text.count("\n", 0, match.start()) + 2  # first line of code, 1-based
        blocks.append(
            Block(
                document,
                line,
                match.group(1),
                mark.group(1) if mark else "run",
                mark.group(2) if mark else "",
            )
        )
    return blocks


ALL_BLOCKS = [block for document in DOCUMENTS for block in extract_blocks(document)]


def substitutions(
    registry: RegistryServer, tmp_path: Path, s3_endpoint: str | None = None
) -> list[tuple[str, str]]:
    """The placeholder table: what the documents write → what the test uses, in this order.

    - the registry ``127.0.0.1:5000`` → the real registry started for the test;
    - the store directory ``/srv/mirror`` (in ``file://`` URLs and plain paths) → a tmp dir;
    - the S3-compatible endpoint ``http://127.0.0.1:9000`` → the moto server.
    Bucket names stay; S3 blocks get ``AWS_ENDPOINT_URL`` and test keys in their environment.
    """
    table = [("127.0.0.1:5000", registry.host), ("/srv/mirror", str(tmp_path / "mirror"))]
    if s3_endpoint is not None:
        table.append(("http://127.0.0.1:9000", s3_endpoint))
    return table


def apply(code: str, table: list[tuple[str, str]]) -> str:
    for placeholder, real in table:
        code = code.replace(placeholder, real)
    return code


def test_documents_have_python_examples() -> None:
    # the extraction itself can fail: a changed fence style would silently test nothing
    by_document = {document: 0 for document in DOCUMENTS}
    for block in ALL_BLOCKS:
        by_document[block.document] += 1
    assert by_document["README.md"] >= 3
    assert by_document["docs/plugin-guide.md"] >= 1
    assert "plugins/regstore-s3/README.md" in by_document


def test_marked_blocks_are_exactly_the_listed_ones() -> None:
    assert {b.key for b in ALL_BLOCKS if b.mark == "not-run"} == NOT_RUN
    assert {b.key for b in ALL_BLOCKS if b.mark == "fragment"} == FRAGMENTS
    assert all(b.reason for b in ALL_BLOCKS if b.mark != "run"), "a marker must say why"


def test_extraction_reads_markers(tmp_path: Path) -> None:
    assert _MARK.search("<!-- not-run: needs AWS -->").group(1) == "not-run"  # type: ignore[union-attr]
    assert _MARK.search("text <!-- fragment: x --> more") is None


def _seed(registry: RegistryServer) -> None:
    for name, tags in SEED.items():
        for tag, image in tags.items():
            registry.push_content(name, tag, image)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.mark == "run"], ids=lambda b: b.id)
def test_example_runs(
    block: Block,
    registry: RegistryServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    _seed(registry)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    s3_endpoint = None
    if "s3://" in block.code:
        bucket = request.getfixturevalue("s3_bucket")
        s3_endpoint = bucket.endpoint_url
        env.update(
            AWS_ENDPOINT_URL=bucket.endpoint_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
    code = apply(block.code, substitutions(registry, tmp_path, s3_endpoint))
    (tmp_path / "mirror").mkdir()
    (tmp_path / "work").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{block.id} failed:\n{code}\n--- stderr:\n{done.stderr}"


def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    checked = [b for b in ALL_BLOCKS if b.mark != "fragment"]
    assert checked
    files: dict[str, Block] = {}
    for block in checked:
        stem = re.sub(r"\W", "_", f"{block.document}_{block.line}")
        path = tmp_path / f"example_{stem}.py"
        path.write_text(block.code, encoding="utf-8")
        files[path.name] = block
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--config-file",
            os.devnull,
            *sorted(str(tmp_path / name) for name in files),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout
    for name, block in files.items():  # name each failing block by its place in the document
        report = report.replace(name, f"{block.id} ({name})")
    assert done.returncode == 0, report + done.stderr


#: The modules a user or a plugin author imports: each has a page in the API reference.
PUBLIC_MODULES = {
    "regstore",
    "regstore.client",
    "regstore.store",
    "regstore.engine",
    "regstore.errors",
    "regstore.reference",
    "regstore.manifest",
    "regstore.digest",
    "regstore.plugins",
    "regstore.hookspecs",
    "regstore.backends.kit",
    "regstore.testing",
    "regstore.testing.conformance",
    "regstore.testing.builders",
}


def test_api_reference_has_a_page_per_public_module() -> None:
    # `mkdocs build --strict` (scripts/test) proves the pages render; this proves none is missing
    pages = sorted((ROOT / "docs" / "api").glob("*.md"))
    documented = {
        target
        for page in pages
        for target in re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert documented >= PUBLIC_MODULES, PUBLIC_MODULES - documented
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert all(f"api/{page.name}" in nav for page in pages)
