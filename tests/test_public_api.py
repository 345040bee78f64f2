"""Meta tests on the public surface: exports, typing marker, docstrings, the hook specs."""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import importlib.resources
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import regstore
from regstore import hookspecs
from regstore.hookspecs import DiscoverySpec, StoreSpec

SRC = Path(regstore.__file__).parent
TESTS = Path(__file__).parent

LEAVES = ["regstore.errors", "regstore.reference", "regstore.digest", "regstore.manifest",
          "regstore.events", "regstore.safetext", "regstore.storetypes",
          "regstore.entrypoints"]  # fmt: skip
DOCUMENTED_MODULES = [*LEAVES, "regstore.plugins", "regstore.hookspecs", "regstore.store",
                     "regstore.bundle.api", "regstore.bundle.archive", "regstore.bundle.contents",
                     "regstore.bundle.format", "regstore.bundle.place"]  # fmt: skip

# The file-object protocol: io documents these; a docstring on each would say nothing new.
IO_PROTOCOL = {"read", "readinto", "readable", "write", "writable", "close", "closed", "seek",
               "tell", "flush", "seekable"}  # fmt: skip


def test_all_names_import() -> None:
    assert len(regstore.__all__) == len(set(regstore.__all__))
    for name in regstore.__all__:
        assert hasattr(regstore, name), name
    namespace: dict[str, object] = {}
    exec("from regstore import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(regstore.__all__)


def test_submodules_are_attributes_of_a_bare_import_and_misspelt_names_are_not() -> None:
    # a fresh interpreter: here every submodule is imported already
    code = """
import sys, regstore
assert "regstore.manifest" not in sys.modules
assert regstore.manifest.Manifest is regstore.Manifest
assert regstore.digest.CHUNK_SIZE > 0 and regstore.reference.Digest is regstore.Digest
for missing in ("manifests", "_private", "__wrapped__"):
    assert not hasattr(regstore, missing), missing
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_public_api_of_the_design_is_exported() -> None:
    for name in ["open_store", "ObjectStore", "Layer", "LayerReader", "LayerWriter", "Manifest",
                 "Descriptor", "Digest", "Reference", "parse_reference", "RegstoreError",
                 "BlobNotFoundError", "__version__"]:  # fmt: skip
        assert name in regstore.__all__, name
    assert isinstance(regstore.__version__, str) and regstore.__version__


def test_version_matches_the_installed_distribution() -> None:
    from importlib.metadata import version

    assert regstore.__version__ == version("regstore")


def test_py_typed_is_shipped() -> None:
    marker = importlib.resources.files("regstore").joinpath("py.typed")
    assert marker.is_file()
    pyproject = (TESTS.parent / "pyproject.toml").read_text()
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert "py.typed" in package_data


@pytest.mark.parametrize("module_name", DOCUMENTED_MODULES)
def test_module_all_lists_real_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__ and module.__doc__.strip(), module_name
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


def _own_public_objects(module: ModuleType) -> dict[str, object]:
    """Public functions and classes defined in ``module`` (exported or not)."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }


def _has_own_docstring(obj: object) -> bool:
    doc = obj.__doc__
    if not doc or not doc.strip():
        return False
    if inspect.isclass(obj):
        # dataclasses make up a docstring from the signature, Enum from its base
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return False
        if issubclass(obj, enum.Enum) and doc in ("An enumeration.", enum.Enum.__doc__):
            return False
    return True


def _undocumented_members(cls: type) -> list[str]:
    missing = []
    for name, member in vars(cls).items():
        if name.startswith("_") or name in IO_PROTOCOL:
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            member = member.fget
        if not inspect.isfunction(member):
            continue
        # a Protocol may document its methods in the class docstring, one bullet each
        if member.__doc__ and member.__doc__.strip():
            continue
        if f"``{name}(" in (cls.__doc__ or ""):
            continue
        missing.append(f"{cls.__name__}.{name}")
    return missing


@pytest.mark.parametrize("module_name", DOCUMENTED_MODULES)
def test_every_public_function_and_class_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    objects = _own_public_objects(module)
    assert objects, module_name
    missing = [name for name, obj in objects.items() if not _has_own_docstring(obj)]
    for obj in objects.values():
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            missing += _undocumented_members(obj)
    assert not missing, f"{module_name}: no docstring on {', '.join(missing)}"


@pytest.mark.parametrize("module_name", DOCUMENTED_MODULES)
def test_everything_exported_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert _has_own_docstring(obj), f"{module_name}.{name}"


# -- the hook specifications -----------------------------------------------------------------


def _hooks(spec: type) -> dict[str, object]:
    return {name: member for name, member in vars(spec).items() if not name.startswith("_")}


@pytest.mark.parametrize("spec", [DiscoverySpec, StoreSpec], ids=lambda s: s.__name__)
def test_every_hook_is_a_documented_regstore_hookspec(spec: type) -> None:
    hooks = _hooks(spec)
    assert hooks
    prefix = "regstore_store_" if spec is StoreSpec else "regstore_"
    for name, hook in hooks.items():
        assert name.startswith(prefix), name
        assert getattr(hook, f"{hookspecs.PROJECT}_spec", None) is not None, f"{name} unmarked"
        doc = inspect.getdoc(hook)
        assert doc and len(doc) > 20, f"{name} has no docstring"
        signature = inspect.signature(hook)  # type: ignore[arg-type]
        assert signature.return_annotation is not inspect.Signature.empty, name
        for parameter in list(signature.parameters.values())[1:]:
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)


def test_hooks_with_one_answer_stop_at_the_first() -> None:
    """Store hooks ask the one backend of a store; only close (and the observers) fan out."""
    opts = {name: getattr(hook, f"{hookspecs.PROJECT}_spec") for name, hook in
            {**_hooks(StoreSpec), **_hooks(DiscoverySpec)}.items()}  # fmt: skip
    fan_out = {"regstore_store_close", "regstore_register_backends", "regstore_transfer_event"}
    for name, opt in opts.items():
        assert bool(opt.get("firstresult")) is (name not in fan_out), name


def test_every_store_hook_is_called_by_the_facade_only() -> None:
    facade = (SRC / "store.py").read_text()
    for name in _hooks(StoreSpec):
        assert name in facade, f"ObjectStore never calls {name}"
    discovery = (SRC / "plugins.py").read_text()
    for name in _hooks(DiscoverySpec):
        assert f"hook.{name}" in discovery or f'"{name}"' in discovery, name
    # and no other module of the library calls hooks (backends implement them, never call)
    for path in SRC.rglob("*.py"):
        if path.name in ("store.py", "plugins.py") and path.parent == SRC:
            continue
        text = path.read_text()
        assert ".hook.regstore_" not in text, f"{path.relative_to(SRC)} calls a hook"


def test_every_discovery_hook_is_tested() -> None:
    tests = (TESTS / "test_plugins.py").read_text()
    for name in _hooks(DiscoverySpec):
        assert f"def {name}(" in tests, f"no test implements {name}"


# -- the leaves stay leaves ------------------------------------------------------------------


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module or "")
    return found


@pytest.mark.parametrize("module_name", LEAVES)
def test_leaves_import_only_the_standard_library_and_other_leaves(module_name: str) -> None:
    path = SRC / f"{module_name.rsplit('.', 1)[1]}.py"
    for name in _imported_modules(path):
        top = name.split(".")[0]
        if top == "regstore":
            assert name in LEAVES, f"{module_name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", (
                f"{module_name} imports {name}"
            )


def test_store_urls_never_show_their_secrets() -> None:
    from regstore import open_store
    from regstore.store import redact_store_url

    url = "memory://redact-check?secret=hunter2&key=AKIA1&token=t0k"
    assert redact_store_url(url) == "memory://redact-check?secret=***&key=***&token=***"
    assert redact_store_url("s3://user:pw@bucket/p?layout=oci") == "s3://***@bucket/p?layout=oci"
    assert redact_store_url("/plain/path") == "/plain/path"
    store = open_store("memory://redact-check")
    store.url = url  # as if the user had passed credentials in the URL
    assert "hunter2" not in repr(store) and "hunter2" not in str(store.describe())


def test_the_classes_the_exported_functions_name_are_exported_too() -> None:
    # create_bundle takes BundleInput and BundleManifest lists BundledReferrer: a program
    # annotating with them had to reach into regstore.bundle (the package docstring says
    # everything a program names in its annotations is in regstore)
    import typing

    exported = {name: getattr(regstore, name) for name in regstore.__all__}  # (lazy imports)
    # names a module imports only for type checking, from every regstore module loaded
    names: dict[str, object] = {}
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("regstore") and module is not None:
            names.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    missing = set()
    for name, value in exported.items():
        if not inspect.isfunction(value) and not dataclasses.is_dataclass(value):
            continue
        hints = typing.get_type_hints(value, localns=names)
        for hint in hints.values():
            for part in _classes_in(hint):
                public = not part.__name__.startswith("_")
                if (
                    part.__module__.startswith("regstore")
                    and public
                    and part.__name__ not in regstore.__all__
                ):
                    missing.add(f"{name}: {part.__module__}.{part.__name__}")
    assert sorted(missing) == [], sorted(missing)


def _classes_in(hint: object) -> list[type]:
    import typing

    if isinstance(hint, type):
        return [hint]
    found: list[type] = []
    for arg in typing.get_args(hint):
        found += _classes_in(arg)
    return found
