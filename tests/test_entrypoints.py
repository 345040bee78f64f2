"""The fast entry-point lookup gives what ``importlib.metadata`` gives, or leaves it to it.

Each test lays out distributions (``.dist-info`` and ``.egg-info`` directories) in fresh
directories on ``sys.path`` and compares :func:`regstore.entrypoints.entry_points` with
``importlib.metadata.entry_points(group=...)``, entry by entry and distribution by distribution.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from regstore import entrypoints
from regstore.hookspecs import PROJECT

GROUP = "regstore_entrypoints_test"


def install(site: Path, directory: str, entry_points: str | None, name: str | None = None) -> Path:
    """A distribution's metadata directory ``directory`` in ``site``, with ``entry_points.txt``
    (None: without one) and a METADATA naming it ``name``."""
    path = site / directory
    path.mkdir(parents=True)
    stem = directory.rpartition(".")[0]
    dist, _, version = stem.partition("-")
    (path / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name or dist}\nVersion: {version or '0'}\n\n"
        "A long description that only the body holds.\nName: not-a-header\n"
    )
    if entry_points is not None:
        (path / "entry_points.txt").write_text(entry_points)
    return path


def described(found: Any) -> list[tuple[str, str, str, str | None]]:
    return [(e.name, e.value, e.group, e.dist.metadata["Name"] if e.dist else None) for e in found]


def assert_same_as_importlib(group: str = GROUP) -> None:
    fast = entrypoints.entry_points(group)
    assert described(fast) == described(importlib.metadata.entry_points(group=group))


def _stdlib_find_distributions(*args: Any, **kwargs: Any) -> Any:
    # the standard path finder's own (Python 3.10-3.13): the metadata path finder's answer
    return importlib.metadata.MetadataPathFinder.find_distributions(*args, **kwargs)


@pytest.fixture(autouse=True)
def standard_finders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distributions found as a plain interpreter finds them (the CLI starts so). A package the
    test run imported may have changed that: importlib_metadata, the backport, adds a finder of
    its own on import and deletes the standard finder's ``find_distributions``. The fast way
    then leaves every answer to importlib, as it should (the finder tests below cover that)."""
    path_finder = importlib.machinery.PathFinder
    standard = [
        finder
        for finder in sys.meta_path
        if finder is path_finder or getattr(finder, "find_distributions", None) is None
    ]
    monkeypatch.setattr(sys, "meta_path", standard)
    if not hasattr(path_finder, "find_distributions"):
        monkeypatch.setattr(
            path_finder,
            "find_distributions",
            staticmethod(_stdlib_find_distributions),
            raising=False,
        )


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two directories, first and second on sys.path."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    return first, second


def test_the_group_is_found_as_importlib_finds_it(sites: tuple[Path, Path]) -> None:
    first, second = sites
    install(first, "alpha-1.0.dist-info", f"[{GROUP}]\none = alpha.one\ntwo = alpha:Two\n")
    install(first, "beta-2.0.dist-info", "[console_scripts]\nbeta = beta:main\n")
    install(first, "gamma-0.1.dist-info", None)  # no entry points at all
    install(second, "delta-3.0.egg-info", f"[console_scripts]\nd = d:m\n\n[{GROUP}]\nd = delta\n")
    install(second, "epsilon-1.0.dist-info", f"# [{GROUP}] in a comment only\n[other]\ne = e\n")
    found = entrypoints.entry_points(GROUP)
    assert sorted((e.name, e.value) for e in found) == [
        ("d", "delta"),
        ("one", "alpha.one"),
        ("two", "alpha:Two"),
    ]
    assert entrypoints._scan(GROUP) is not None  # the fast way answered
    assert_same_as_importlib()


def test_a_distribution_earlier_on_the_path_shadows_a_later_one(sites: tuple[Path, Path]) -> None:
    first, second = sites
    # the same distribution by its normalized name (case, dots, dashes and underscores)
    install(first, "Foo.Bar-1.0.dist-info", None, name="Foo.Bar")
    install(second, "foo_bar-2.0.dist-info", f"[{GROUP}]\nshadowed = foo_bar\n", name="foo-bar")
    install(first, "zeta-1.0.dist-info", f"[{GROUP}]\nfirst = zeta.first\n")
    install(second, "Zeta-2.0.dist-info", f"[{GROUP}]\nsecond = zeta.second\n", name="Zeta")
    assert [(e.name, e.value) for e in entrypoints.entry_points(GROUP)] == [("first", "zeta.first")]
    assert entrypoints._scan(GROUP) is not None
    assert_same_as_importlib()


def test_regstore_s_own_group_is_the_same_as_importlib_s() -> None:
    # where this interpreter's sys.path holds nothing the fast way leaves to importlib (a zip
    # archive, an egg: a python3X.zip exists on some systems), the fast way answers
    plain = all(isinstance(p, str) and not os.path.isfile(p) and not p.endswith(".egg")
                for p in sys.path)  # fmt: skip
    assert (entrypoints._scan(PROJECT) is not None) == plain
    assert_same_as_importlib(PROJECT)
    assert {e.name for e in entrypoints.entry_points(PROJECT)} >= {"file", "memory"}


def test_within_one_directory_the_order_is_importlib_s(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    # one distribution twice in one directory (importlib takes the first it lists), two
    # distributions of the group, and an old-style .egg-info file (no entry points)
    install(first, "kappa-1.0.dist-info", f"[{GROUP}]\nk = kappa.one\n")
    install(first, "Kappa-2.0.dist-info", f"[{GROUP}]\nk = kappa.two\n", name="Kappa")
    install(first, "lambda_-1.0.dist-info", f"[{GROUP}]\nl = lambda_\nm = lambda_.m\n")
    (first / "mu-1.0.egg-info").write_text("Metadata-Version: 1.0\nName: mu\n")
    found = entrypoints._scan(GROUP)
    assert found is not None
    assert sorted(e.name for e in found) == ["k", "l", "m"]
    assert_same_as_importlib()


def test_the_current_directory_on_the_path_is_read_as_importlib_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, "nu-1.0.dist-info", f"[{GROUP}]\nnu = nu\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")
    found = entrypoints._scan(GROUP)
    assert found is not None and [(e.name, e.value) for e in found] == [("nu", "nu")]
    assert_same_as_importlib()


def test_an_unrelated_distribution_s_unreadable_entry_points_are_not_parsed(
    sites: tuple[Path, Path],
) -> None:
    first, second = sites
    install(first, "xi-1.0.dist-info", "[console_scripts]\nno equals sign here\n")
    (install(first, "omicron-1.0.dist-info", None) / "entry_points.txt").write_bytes(
        b"[console_scripts]\nomicron = omicron:\xff\n"
    )
    install(second, "pi-1.0.dist-info", f"[{GROUP}]\npi = pi\n")
    # importlib.metadata parses every distribution's file and fails on both: regstore goes on
    found = entrypoints._scan(GROUP)
    assert found is not None and [(e.name, e.value) for e in found] == [("pi", "pi")]


@pytest.mark.parametrize("entry", ["eggs/rho-1.0-py3.11.egg", None])
def test_an_egg_or_an_entry_not_a_string_is_left_to_importlib(
    sites: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str | None
) -> None:
    first, _ = sites
    install(first, "sigma-1.0.dist-info", f"[{GROUP}]\nsigma = sigma\n")
    if entry is None:
        monkeypatch.setattr(sys, "path", [*sys.path, Path(tmp_path)])
    else:
        (tmp_path / entry).mkdir(parents=True)
        monkeypatch.syspath_prepend(str(tmp_path / entry))
    assert entrypoints._scan(GROUP) is None
    assert [(e.name, e.value) for e in entrypoints.entry_points(GROUP)] == [("sigma", "sigma")]


def test_a_directory_name_only_metadata_can_name_is_left_to_importlib(
    sites: tuple[Path, Path],
) -> None:
    first, second = sites
    # "..dist-info": importlib names it by its METADATA (zed), which shadows zed-1.0 below
    install(first, "..dist-info", None, name="zed")
    install(second, "zed-1.0.dist-info", f"[{GROUP}]\nzed = zed\n")
    assert entrypoints._scan(GROUP) is None
    assert_same_as_importlib()


def test_a_name_lower_case_makes_two_of_is_left_to_importlib(sites: tuple[Path, Path]) -> None:
    first, second = sites
    # Greek capital sigma lowers by its context: importlib lists this directory under a medial
    # sigma (the whole name lowered) but tells distributions apart by a final one (its dots
    # made dashes first)
    install(first, "\u0391\u03a3.a-1.dist-info", None)
    install(second, "\u03b1\u03c2.a-2.dist-info", f"[{GROUP}]\nsigma = sigma\n")
    assert entrypoints._scan(GROUP) is None
    assert_same_as_importlib()


def test_without_the_standard_path_finder_importlib_answers(
    sites: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = sites
    install(first, "tau-1.0.dist-info", f"[{GROUP}]\ntau = tau\n")
    without = [f for f in sys.meta_path if f is not importlib.machinery.PathFinder]
    monkeypatch.setattr(sys, "meta_path", without)
    assert entrypoints._scan(GROUP) is None
    assert_same_as_importlib()


def test_a_zip_archive_on_the_path_is_left_to_importlib(
    sites: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\n")
        z.writestr("zipped-1.0.dist-info/entry_points.txt", f"[{GROUP}]\nz = zipped\n")
    monkeypatch.syspath_prepend(str(archive))
    assert entrypoints._scan(GROUP) is None
    assert [(e.name, e.value) for e in entrypoints.entry_points(GROUP)] == [("z", "zipped")]
    assert_same_as_importlib()


def test_a_finder_of_distributions_of_its_own_is_left_to_importlib(
    sites: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = sites
    elsewhere = install(first.parent / "elsewhere", "eta-1.0.dist-info", f"[{GROUP}]\neta = eta\n")

    class Finder:
        @staticmethod
        def find_spec(*args: Any, **kwargs: Any) -> None:
            return None

        @staticmethod
        def find_distributions(*args: Any, **kwargs: Any) -> list[importlib.metadata.Distribution]:
            return [importlib.metadata.PathDistribution(elsewhere)]

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert entrypoints._scan(GROUP) is None
    assert [(e.name, e.value) for e in entrypoints.entry_points(GROUP)] == [("eta", "eta")]
    assert_same_as_importlib()


def test_a_name_only_metadata_can_tell_is_left_to_importlib(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    install(first, "theta-1.0.DIST-INFO", f"[{GROUP}]\ntheta = theta\n", name="theta")
    assert entrypoints._scan(GROUP) is None
    assert_same_as_importlib()


def test_name_and_version_are_read_from_the_headers_as_metadata_gives_them(
    sites: tuple[Path, Path],
) -> None:
    first, _ = sites
    path = install(first, "iota-4.2.dist-info", None, name="Iota-Dist")
    dist = importlib.metadata.PathDistribution(path)
    assert entrypoints.name_and_version(dist) == ("Iota-Dist", "4.2")
    assert entrypoints.name_and_version(dist) == (dist.metadata["Name"], dist.metadata["Version"])
    (path / "METADATA").rename(path / "PKG-INFO")  # what an sdist's metadata is called
    assert entrypoints.name_and_version(dist) == ("Iota-Dist", "4.2")
    (path / "PKG-INFO").unlink()  # nothing to read: nothing known, no error
    assert entrypoints.name_and_version(dist) == (None, None)


def test_name_and_version_of_a_finder_s_own_distribution_come_from_its_metadata() -> None:
    class Elsewhere(importlib.metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            return None  # keeps its metadata elsewhere

        def locate_file(self, path: Any) -> Path:
            raise NotImplementedError

        @property
        def metadata(self) -> Any:
            return {"Name": "elsewhere", "Version": "7"}

    assert entrypoints.name_and_version(Elsewhere()) == ("elsewhere", "7")


def test_regstore_s_own_version_is_its_distribution_s() -> None:
    from regstore import plugins

    expected = importlib.metadata.version(PROJECT)
    assert plugins._own_version(plugins._entry_points()) == expected
    assert plugins._own_version([]) == expected  # no built-ins declared: importlib is asked


def test_an_entry_point_found_the_fast_way_is_importlib_s(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    values = {"a": "os.path:join", "b": "os", "c": "os:path.join", "d": " os.path : join [x] "}
    text = "".join(f"{k} = {v}\n" for k, v in values.items())
    install(first, "upsilon-1.0.dist-info", f"# a comment\n[{GROUP}]\n{text}\n[other]\nz = z\n")
    found = entrypoints._scan(GROUP)
    assert found is not None
    theirs = {e.name: e for e in importlib.metadata.entry_points(group=GROUP)}
    assert [e.name for e in found] == list(values) == list(theirs)
    for ep in found:
        assert (ep.value, ep.group, ep.module, ep.attr) == (
            theirs[ep.name].value, GROUP, theirs[ep.name].module, theirs[ep.name].attr,
        )  # fmt: skip
        assert ep.load() is theirs[ep.name].load()
    assert entrypoints.name_and_version(found[0].dist) == ("upsilon", "1.0")
    assert found[0].dist.metadata["Name"] == "upsilon"


def test_a_value_that_names_nothing_fails_to_load_and_a_line_without_equals_as_importlib(
    sites: tuple[Path, Path],
) -> None:
    first, second = sites
    install(first, "phi-1.0.dist-info", f"[{GROUP}]\nphi = not a module!\n")
    [bad] = entrypoints.entry_points(GROUP)
    with pytest.raises(ValueError, match="no entry point value"):
        bad.load()
    with pytest.raises(ValueError):
        _ = bad.module
    # a file naming the group with a line of no pair anywhere: importlib refuses it, and so
    # does the fast way, with the same kind of error
    install(second, "chi-1.0.dist-info", f"[{GROUP}]\nchi = chi\n[other]\nno pair\n")
    with pytest.raises(Exception) as theirs:
        list(importlib.metadata.entry_points(group=GROUP))
    with pytest.raises(theirs.type):
        entrypoints._scan(GROUP)


def test_the_fast_way_never_imports_importlib_metadata() -> None:
    code = (
        "import sys\n"
        "from regstore import entrypoints, plugins\n"
        "from regstore.client.agent import default_user_agent\n"
        "names = sorted(e.name for e in entrypoints.entry_points('regstore'))\n"
        "statuses = [(s.name, s.distribution, s.version) for s in plugins.plugin_statuses()]\n"
        "agent = default_user_agent()\n"
        "loaded = 'importlib.metadata' in sys.modules or 'email' in sys.modules\n"
        "fast = entrypoints._scan('regstore') is not None and all(\n"
        "    entrypoints.installed_version(d) for d in ('regstore', 'requests'))\n"
        "print(names, statuses, agent, 'plain' if fast else 'not plain', loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = sorted(e.name for e in importlib.metadata.entry_points(group=PROJECT))
    version = importlib.metadata.version(PROJECT)
    agent = f"regstore/{version} python-requests/{importlib.metadata.version('requests')}"
    assert done.stdout.startswith(f"{names} [('memory', 'regstore', '{version}')")
    assert f" {agent} " in done.stdout
    # where the standard path finder alone finds distributions, importlib.metadata never loads
    assert done.stdout.rstrip().endswith(("plain False", "not plain True"))


def test_a_version_is_importlib_s(sites: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = sites
    install(first, "Omega.Pkg-2.0rc1.dist-info", None, name="Omega.Pkg")
    install(second, "omega_pkg-1.0.dist-info", None, name="omega-pkg")  # shadowed
    install(second, "psi-3.0.egg-info", None, name="psi")  # (its version: METADATA's)
    # the version METADATA gives, not the directory's name; PKG-INFO where METADATA is not
    (install(first, "rho-1.0.dist-info", None) / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rho\nVersion: 1.0.post7\n"
    )
    (install(first, "sigma_x-4.0.dist-info", None) / "METADATA").rename(
        first / "sigma_x-4.0.dist-info" / "PKG-INFO"
    )
    for name in ("omega-pkg", "OMEGA.PKG", "psi", "rho", "sigma-x"):
        assert entrypoints.installed_version(name) == importlib.metadata.version(name)
    assert entrypoints.installed_version("rho") == "1.0.post7"
    # a folded Version, which importlib re-indents: left to it
    (install(first, "tau_x-5.0.dist-info", None) / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tau-x\nVersion: 5.0\n folded\n"
    )
    assert entrypoints.installed_version("tau-x") is None
    assert entrypoints.installed_version("absent-here") is None
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("omega_pkg-9.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: omega-pkg\n")
    sys.path.insert(0, str(archive))
    try:  # a zip archive first on the path: importlib's answer (None here)
        assert entrypoints.installed_version("omega-pkg") is None
    finally:
        sys.path.remove(str(archive))


def test_several_versions_are_found_in_one_walk_of_the_path(
    sites: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = sites
    install(first, "Omega.Pkg-2.0rc1.dist-info", None, name="Omega.Pkg")
    install(second, "omega_pkg-1.0.dist-info", None, name="omega-pkg")  # shadowed
    install(second, "psi-3.0.egg-info", None, name="psi")
    names = ("omega-pkg", "psi", "absent-here")
    alone = {name: entrypoints.installed_version(name) for name in names}
    assert alone == {"omega-pkg": "2.0rc1", "psi": "3.0", "absent-here": None}
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: Any) -> list[str]:
        listed.append(os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(entrypoints.os, "listdir", listdir)
    assert entrypoints.installed_versions(*names) == alone
    # one walk: the entries of sys.path, each listed once, in order (as far as it went)
    assert listed == [entry or "." for entry in sys.path][: len(listed)]
    listed.clear()
    assert entrypoints.installed_versions("omega-pkg") == {"omega-pkg": "2.0rc1"}
    assert str(second) not in listed  # the walk ends once every name is found
    # one distribution named two ways: both get its version
    assert entrypoints.installed_versions("Omega.Pkg", "omega_pkg") == {
        "Omega.Pkg": "2.0rc1",
        "omega_pkg": "2.0rc1",
    }


def test_versions_found_before_a_path_entry_only_importlib_reads_are_kept(
    sites: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = sites
    install(first, "psi-3.0.dist-info", None, name="psi")
    archive = tmp_path / "later.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("chi-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: chi\n")
    sys.path.append(str(archive))
    try:  # as each alone: psi is found before the archive, chi only importlib can tell
        names = ("psi", "chi")
        alone = {name: entrypoints.installed_version(name) for name in names}
        assert alone == {"psi": "3.0", "chi": None}
        assert entrypoints.installed_versions(*names) == alone
    finally:
        sys.path.remove(str(archive))


def test_metadata_headers_are_read_as_email_reads_them() -> None:
    import email.parser

    texts = [
        "Metadata-Version: 2.1\nName: x\r\nVersion: 1.0\n folded\nName: y\n\nName: body\n",
        "Summary: a\x85b\u2028c\nName: foo\nVersion: 1\n",  # (no line break for email)
        "Bad Header: x\nName: foo\n",  # (no field: the headers end)
        "Name: foo\rVersion: 2\r\n \r\nSummary: s",
        "From someone\nName: foo\nVersion: 7\n",  # (a Unix From line, passed over)
    ]
    for text in texts:
        theirs = email.parser.HeaderParser().parsestr(text)
        mine = entrypoints._headers(text)
        assert (mine.get("name"), mine.get("version")) == (theirs["Name"], theirs["Version"])
