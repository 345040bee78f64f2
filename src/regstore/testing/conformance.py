"""The backend conformance suite: one set of tests every regstore store backend must pass.

Modelled on fsspec's ``tests/abstract``: the tests live in regstore, a backend's test module
subclasses them and provides fixtures. Everything goes through the public facades
(:func:`regstore.open_store`, :class:`regstore.store.ObjectStore`, :class:`~regstore.store.Layer`),
so the suite checks what users get, whatever the backend does inside.

Usage (a plugin's ``tests/test_conformance.py``)::

    import pytest
    from regstore.testing.conformance import BackendConformance, CrossProcessConformance

    class TestMyBackend(BackendConformance, CrossProcessConformance):
        @pytest.fixture
        def store_url(self, tmp_path):             # a fresh, empty store per test
            return f"mybackend://{tmp_path}/store"

(leave out :class:`CrossProcessConformance` for a process-local backend such as memory).

Fixtures a subclass provides (function-scoped):

``store_url``
    URL of a fresh, empty store, opened with :func:`regstore.open_store` (the backend must be
    installed so its entry point is found). When given, ``store`` and ``store_factory`` derive
    from it: ``store`` opens it once, ``store_factory()`` opens it again, giving a second handle
    on the *same* store (for cross-handle locking tests). Required by
    :class:`CrossProcessConformance`, whose tests open it from child processes.
``store``
    Override instead of ``store_url`` when a store cannot be opened by URL: a fresh, empty
    :class:`~regstore.store.ObjectStore`.
``store_factory``
    Optional with ``store``: a zero-argument callable returning another handle on the same
    store (default: the same handle again, which still tests threads).
``store_wrappers``
    Optional: wrappers to register on every handle ``store`` and ``store_factory`` open, as
    ``{name: zero-argument factory}`` (default none). :class:`WrappedConformance` sets it.

Class attributes to tune for slow media: ``large_blob_size`` (default 8 MiB, streamed in
``chunk_size`` chunks), ``thread_timeout`` (seconds a concurrency test waits),
``process_timeout``.

:class:`BackendConformance` covers manifests of every media type with exact bytes, tags,
listings, deletion, the Layer write/commit/resume/lock/wait semantics (the seed's, with its two
bugs fixed), digest and size verification, concurrency across threads and handles, hostile
names, the housekeeping behind verify and gc (quarantine, the staging area, existence), and
the shipped wrappers around the backend (a read-only handle reads everything and changes
nothing; a traced one counts every operation).
:class:`CrossProcessConformance` adds exclusion and lost-update checks across processes, and
staging held by another process, for backends shared by several processes (not
``memory://``). :class:`WrappedConformance` runs all of :class:`BackendConformance` with a
pass-through wrapper and the tracing wrapper around the backend (see
:mod:`regstore.backends.wrappers`), proving that wrappers may sit around it::

    class TestMyBackendWrapped(WrappedConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mybackend://{tmp_path}/store"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from regstore.errors import ImageManifestNotFoundError
from regstore.store import TRACER, ObjectStore, TracingWrapper, open_store

from ._blob_tests import BlobTests
from ._housekeeping_tests import HousekeepingTests
from ._kit_tests import KitTests
from ._manifest_tests import ManifestTests
from ._process_tests import ProcessTests
from ._safety_tests import SafetyTests
from ._suite import SuiteSettings
from ._wrapper_tests import WrapperTests
from .passthrough import PASS_THROUGH, PassThroughWrapper

__all__ = [
    "BackendConformance",
    "ConformanceFixtures",
    "CrossProcessConformance",
    "StoreFactory",
    "WrappedConformance",
    "WrapperFactories",
]

StoreFactory = Callable[[], ObjectStore]
#: ``{name: factory}``: the wrappers registered on every handle the fixtures open.
WrapperFactories = dict[str, Callable[[], object]]


def _wrapped(handle: ObjectStore, wrappers: WrapperFactories) -> ObjectStore:
    for name, factory in wrappers.items():
        handle.add_wrapper(factory(), name=name)
    return handle


class ConformanceFixtures(SuiteSettings):
    """The fixtures and knobs shared by every conformance test class."""

    @pytest.fixture
    def store_url(self) -> str | None:
        """Override: the URL of a fresh, empty store (None: override ``store`` instead)."""
        return None

    @pytest.fixture
    def store_wrappers(self) -> WrapperFactories:
        """Override: wrappers to register on every handle the fixtures open (default none)."""
        return {}

    @pytest.fixture
    def store(
        self, store_url: str | None, store_wrappers: WrapperFactories
    ) -> Iterator[ObjectStore]:
        """A fresh, empty store (opened from ``store_url`` unless overridden)."""
        if store_url is None:
            pytest.fail(
                f"{type(self).__name__} must define a `store_url` or a `store` fixture "
                "(see regstore.testing.conformance)"
            )
        opened = _wrapped(open_store(store_url), store_wrappers)
        yield opened
        opened.close()

    @pytest.fixture
    def store_factory(
        self, store: ObjectStore, store_url: str | None, store_wrappers: WrapperFactories
    ) -> Iterator[StoreFactory]:
        """Another handle on the same store each call (the same handle without a URL)."""
        opened: list[ObjectStore] = []

        def factory() -> ObjectStore:
            if store_url is None:
                return store
            handle = _wrapped(open_store(store_url), store_wrappers)
            opened.append(handle)
            return handle

        yield factory
        for handle in opened:
            handle.close()


class BackendConformance(
    ConformanceFixtures,
    ManifestTests,
    BlobTests,
    SafetyTests,
    HousekeepingTests,
    KitTests,
    WrapperTests,
):
    """Every contract point of a store, through the public facades. Subclass it (see module)."""


class WrappedConformance(BackendConformance):
    """All of :class:`BackendConformance` with wrappers around the backend on every handle:
    a :class:`~regstore.testing.passthrough.PassThroughWrapper` and the tracing wrapper.

    Give it a ``store_url`` (or ``store``) like :class:`BackendConformance`. A ``store``
    override must register ``store_wrappers`` itself.
    """

    @pytest.fixture
    def store_wrappers(self) -> WrapperFactories:
        """A pass-through wrapper inside the tracing wrapper, on every handle."""
        return {PASS_THROUGH: PassThroughWrapper, TRACER: TracingWrapper}

    def test_every_call_goes_through_the_wrappers(self, store: ObjectStore) -> None:
        passthrough = store.get_wrapper(PASS_THROUGH)
        assert isinstance(passthrough, PassThroughWrapper), "store_wrappers were not registered"
        before = len(passthrough.calls)
        traced = store.metrics().get("list_repositories")
        assert store.repositories() == []
        with pytest.raises(ImageManifestNotFoundError):
            store.manifest("nothing", "here")
        assert passthrough.calls[before:] == [
            ("list_repositories", None),
            ("get_manifest", "ImageManifestNotFoundError"),
        ]
        assert store.metrics()["list_repositories"].count == (traced.count if traced else 0) + 1


class CrossProcessConformance(ConformanceFixtures, ProcessTests):
    """Locks and shared-file updates across processes; needs the ``store_url`` fixture."""
