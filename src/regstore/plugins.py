"""The global plugin manager: entry points, built-ins, blocking, tracing, listing.

This module and :mod:`regstore.store` are the only callers of ``pm.hook``; everything else
uses the typed functions here.

regstore's own backends (``memory``, ``file``) are registered directly, by module, as pytest
registers its default plugins: they keep working whatever state other distributions' metadata
is in. (regstore's ``pyproject.toml`` still declares them as entry points, for tools that list
entry points; loading skips those.) Third-party plugins come from the entry-point group
``regstore``, one at a time: a plugin that cannot be loaded (its module gone after an editable
install moved, an exception at import, an object without hooks, a misspelt hook name) is
recorded as broken (:func:`plugin_statuses`) and left out, and only a request for what it would
have provided fails, with :class:`~regstore.errors.PluginLoadError` naming it.

Environment variables (the escape hatches pytest and tox users know):

- ``REGSTORE_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party entry points; regstore's own
  built-in backends (distribution ``regstore``) still load.
- ``REGSTORE_BLOCK_PLUGINS=a,b``: never load the plugins (entry-point names) listed.
- ``REGSTORE_TRACE_PLUGINS=1``: log every hook call, and each plugin's load status, at DEBUG
  (logger ``regstore.plugins``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from regstore import entrypoints
from regstore.errors import BackendNotFoundError, PluginLoadError
from regstore.hookspecs import PROJECT, BackendFactory, DiscoverySpec, StoreSpec

if TYPE_CHECKING:
    from regstore.events import TransferEvent

__all__ = [
    "BUILTIN_PLUGINS",
    "BackendInfo",
    "PluginStatus",
    "backend_factory",
    "backends",
    "broken_plugins",
    "credentials_for",
    "emit_event",
    "get_plugin_manager",
    "has_event_observers",
    "new_store_manager",
    "plugin_statuses",
    "register_plugin",
    "reset_plugin_manager",
]

log = logging.getLogger(__name__)

#: regstore's own plugins: name -> module, registered directly (not through entry points).
BUILTIN_PLUGINS = {
    "memory": "regstore.backends.memory",
    "file": "regstore.backends.filesystem",
}

#: Schemes whose backend ships separately, and what to install for them.
KNOWN_EXTERNAL_BACKENDS = {
    "s3": "pip install regstore-s3 (or: pip install 'regstore[s3]')",
    "gs": "no Google Cloud Storage backend is published yet; write one (see regstore.testing)",
    "gcs": "no Google Cloud Storage backend is published yet; write one (see regstore.testing)",
    "az": "pip install regstore-azure (or: pip install 'regstore[azure]')",
    "abfs": "pip install regstore-azure (or: pip install 'regstore[azure]')",
}


@dataclass(frozen=True)
class BackendInfo:
    """An installed backend: which scheme, from which plugin and distribution."""

    scheme: str
    factory: BackendFactory
    description: str
    plugin: str
    distribution: str | None
    version: str | None
    entry_point: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``regstore plugins --json``)."""
        return {
            "scheme": self.scheme,
            "description": self.description,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
        }


LoadState = Literal["ok", "broken", "blocked"]
OK: LoadState = "ok"
BROKEN: LoadState = "broken"
BLOCKED: LoadState = "blocked"


@dataclass(frozen=True)
class PluginStatus:
    """One plugin the global manager knows of: where it comes from and whether it loaded.

    ``status`` is ``"ok"`` (registered), ``"broken"`` (``cause`` says why; left out) or
    ``"blocked"`` (by ``REGSTORE_BLOCK_PLUGINS`` or ``REGSTORE_DISABLE_PLUGIN_AUTOLOAD``).
    ``entry_point`` is the entry point's value (``module`` or ``module:attr``), or the module
    of a built-in; it and ``distribution`` are None for a plugin registered in-process.
    """

    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None
    builtin: bool = False
    status: LoadState = OK
    cause: str | None = None
    #: the URL schemes it registered (known once it loaded; a broken plugin's clash keeps them)
    schemes: tuple[str, ...] = ()
    #: the original exception of a broken plugin, chained under its PluginLoadError
    exception: BaseException | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when the plugin is registered and in use."""
        return self.status == OK

    def error(self, scheme: str | None = None) -> PluginLoadError:
        """The error that explains this broken plugin (for ``scheme``, when one was asked)."""
        return PluginLoadError(
            self.name,
            self.cause or "unknown cause",
            distribution=self.distribution,
            version=self.version,
            entry_point=self.entry_point,
            scheme=scheme,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``regstore plugins --json``)."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "builtin": self.builtin,
            "status": self.status,
            "error": self.cause,
            "schemes": list(self.schemes),
        }


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_backends: dict[str, BackendInfo] | None = None
#: plugin name -> status, in the order plugins were tried
_statuses: dict[str, PluginStatus] = {}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _entry_points() -> list[entrypoints.EntryPointLike]:
    # one distribution per name (the first on sys.path), as Python does
    return sorted(entrypoints.entry_points(PROJECT), key=lambda e: e.name)


def _module_of(ep: entrypoints.EntryPointLike) -> str | None:
    """The module an entry point names; None for a value that is no ``module:attr`` (its
    load fails, and the plugin is recorded as broken)."""
    try:
        return ep.module
    except (AttributeError, AssertionError, ValueError):  # (importlib 3.10-3.12 | 3.13 | ours)
        return None


_Origin = Callable[[entrypoints.EntryPointLike], tuple[str | None, str | None]]


def _origin(ep: entrypoints.EntryPointLike) -> tuple[str | None, str | None]:
    """The name and version of the distribution declaring ``ep``; (None, None) without one."""
    return (None, None) if ep.dist is None else entrypoints.name_and_version(ep.dist)


def _origins() -> _Origin:
    """:func:`_origin`, its METADATA read once per distribution (the entry points of one
    distribution share its ``dist``), for as long as the entry points are kept."""
    read: dict[int, tuple[str | None, str | None]] = {}

    def origin(ep: entrypoints.EntryPointLike) -> tuple[str | None, str | None]:
        key = id(ep.dist)
        if key not in read:
            read[key] = _origin(ep)
        return read[key]

    return origin


def _own_version(
    entry_points: list[entrypoints.EntryPointLike], origin: _Origin = _origin
) -> str | None:
    # regstore's distribution declares its built-ins as entry points too (the first of that
    # name on sys.path, as importlib.metadata.version finds it): its version is at hand
    for ep in entry_points:
        if ep.dist is not None and _module_of(ep) in BUILTIN_PLUGINS.values():
            name, version = origin(ep)
            if name == PROJECT:
                return version
    found = entrypoints.installed_version(PROJECT)
    if found is not None:
        return found
    import importlib.metadata  # (only here: the lookups above do without it)

    try:
        return importlib.metadata.version(PROJECT)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without metadata
        return None


def _describe(exc: BaseException) -> str:
    # one line: it ends up in a table cell and in the CLI's one error line
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _import_cause(exc: BaseException, module: str) -> str:
    cause = _describe(exc)
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name is not None
        and (module == exc.name or module.startswith(exc.name + "."))
    ):
        # the plugin's own module is gone while its metadata stays: the classic stale editable
        # install (its source directory moved or deleted) or a half-removed package
        cause += " (its metadata is installed but its module is not: a moved or deleted editable "
        cause += "checkout, or a half-removed package?)"
    return cause


def _register(pm: pluggy.PluginManager, status: PluginStatus, load: Callable[[], object]) -> None:
    """Load and register one plugin; a failure is recorded as broken, never raised."""

    def broken(cause: str, exc: BaseException | None) -> None:
        _statuses[status.name] = dataclasses.replace(
            status, status=BROKEN, cause=cause, exception=exc
        )
        log.warning("%s", _statuses[status.name].error())

    module = (status.entry_point or "").partition(":")[0]
    try:
        plugin = load()
    except (Exception, SystemExit) as exc:  # whatever the plugin's import raises
        broken(_import_cause(exc, module), exc)
        return
    try:
        pm.register(plugin, name=status.name)
    except Exception as exc:  # a hook with the wrong arguments, an object registered twice
        broken(_describe(exc), exc)
        return
    if not pm.get_hookcallers(plugin):
        pm.unregister(plugin)
        broken(
            f"{plugin!r} implements no regstore hook (is @regstore.hookspecs.hookimpl missing, "
            "or does the entry point name the wrong object?)",
            None,
        )
        return
    try:
        # a misspelt hook name registers fine and is never called; refuse it here. The plugins
        # registered before passed this check, so a failure is this plugin's.
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(plugin)
        broken(f"{_describe(exc)} (a misspelt hook name? the hooks are in regstore.hookspecs)", exc)
        return
    _statuses[status.name] = status


def _load_plugins(pm: pluggy.PluginManager) -> None:
    blocked = {b.strip() for b in os.environ.get("REGSTORE_BLOCK_PLUGINS", "").split(",")}
    entry_points = _entry_points()
    origin = _origins()  # (the list above keeps each dist alive, and its id unique)
    if _flag("REGSTORE_DISABLE_PLUGIN_AUTOLOAD"):
        blocked |= {ep.name for ep in entry_points if origin(ep)[0] != PROJECT}
    for name in blocked - {""}:
        pm.set_blocked(name)
    version = _own_version(entry_points, origin)
    for name, module in BUILTIN_PLUGINS.items():
        status = PluginStatus(name, PROJECT, version, module, builtin=True)
        if pm.is_blocked(name):
            _statuses[name] = dataclasses.replace(status, status=BLOCKED)
            continue
        _register(pm, status, functools.partial(importlib.import_module, module))
    builtin_modules = set(BUILTIN_PLUGINS.values())
    for ep in entry_points:
        if _module_of(ep) in builtin_modules:
            continue  # regstore's own declaration of a built-in registered above
        dist_name, dist_version = origin(ep)
        status = PluginStatus(ep.name, dist_name, dist_version, ep.value)
        if pm.is_blocked(ep.name):
            _statuses.setdefault(ep.name, dataclasses.replace(status, status=BLOCKED))
        elif ep.name in _statuses:
            taken = _statuses[ep.name]
            _statuses[f"{ep.name} ({status.distribution})"] = dataclasses.replace(
                status,
                status=BROKEN,
                cause=f"the plugin name {ep.name!r} is already taken by "
                f"{taken.entry_point} of {taken.distribution}; rename the entry point",
            )
        else:
            _register(pm, status, ep.load)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use (built-ins and entry points loaded).

    Never fails for a plugin that cannot be loaded: that plugin is recorded as broken
    (:func:`broken_plugins`) and the others work.
    """
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(PROJECT)
            pm.add_hookspecs(DiscoverySpec)
            _statuses.clear()
            _load_plugins(pm)
            if _flag("REGSTORE_TRACE_PLUGINS"):
                pm.trace.root.setwriter(log.debug)
                pm.enable_tracing()
                for status in _statuses.values():
                    log.debug(
                        "plugin %s: %s (%s %s, %s)%s", status.name, status.status,
                        status.distribution, status.version, status.entry_point,
                        f": {status.cause}" if status.cause else "",
                    )  # fmt: skip
            _pm = pm
        return _pm


def reset_plugin_manager() -> None:
    """Forget the global manager so the next use rebuilds it (tests, freshly installed plugins)."""
    global _pm, _backends
    with _lock:
        _pm = None
        _backends = None
        _statuses.clear()


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin (an observer, a credential provider, a backend module).

    A plugin whose name is blocked by ``REGSTORE_BLOCK_PLUGINS`` is not registered.

    Raises:
        PluginLoadError: the plugin implements a hook regstore does not know (a misspelt name)
            or with arguments its spec does not have.
    """
    global _backends
    with _lock:
        pm = get_plugin_manager()
        try:
            plugin_name = pm.register(plugin, name=name)
            if plugin_name is not None:
                pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            raise PluginLoadError(name or repr(plugin), _describe(exc)) from exc
        if plugin_name is None:  # blocked by name
            _statuses[name or repr(plugin)] = PluginStatus(name or repr(plugin), None, None, None,
                                                           status=BLOCKED)  # fmt: skip
        else:
            _statuses[plugin_name] = PluginStatus(plugin_name, None, None, None)
        _backends = None


def backends() -> dict[str, BackendInfo]:
    """Every installed backend by URL scheme, with the plugin and distribution it came from.

    A plugin whose ``regstore_register_backends`` raises, or that registers something that is
    no URL scheme, is recorded as broken and left out; so is one that registers a scheme another
    plugin registers too (both, unless the other is a built-in, which keeps its scheme).
    """
    global _backends
    with _lock:
        if _backends is not None:
            return dict(_backends)
        pm = get_plugin_manager()
        claims: list[tuple[object, str, dict[str, BackendInfo]]] = []
        for plugin in list(pm.get_plugins()):
            plugin_name = pm.get_name(plugin) or repr(plugin)
            status = _statuses.get(plugin_name) or PluginStatus(plugin_name, None, None, None)
            registered: dict[str, BackendInfo] = {}

            def register(
                scheme: str,
                factory: BackendFactory,
                description: str = "",
                *,
                _status: PluginStatus = status,
                _registered: dict[str, BackendInfo] = registered,
            ) -> None:
                if not isinstance(scheme, str) or not _URL_SCHEME.fullmatch(scheme):
                    # (a store URL with it could never be opened: its scheme would not parse)
                    raise ValueError(
                        f"{scheme!r} is no URL scheme (a letter, then letters, digits, +, - or .)"
                    )
                scheme = scheme.lower()
                _registered[scheme] = BackendInfo(
                    scheme, factory, description, _status.name, _status.distribution,
                    _status.version, _status.entry_point,
                )  # fmt: skip

            caller = pm.subset_hook_caller(
                "regstore_register_backends",
                remove_plugins=[p for p in pm.get_plugins() if p is not plugin],
            )
            try:
                caller(register=register)
            except Exception as exc:  # the plugin's own code failed: leave it out, explained
                _leave_out(pm, plugin, f"regstore_register_backends raised {_describe(exc)}", exc)
                continue
            _statuses[plugin_name] = dataclasses.replace(status, schemes=tuple(registered))
            claims.append((plugin, plugin_name, registered))
        clashing = _clashes([(name, registered) for _, name, registered in claims])
        found: dict[str, BackendInfo] = {}
        for plugin, plugin_name, registered in claims:
            if plugin_name in clashing:
                _leave_out(pm, plugin, clashing[plugin_name])
                continue
            found.update(registered)
        _backends = found
        return dict(found)


#: What a store URL's scheme may be (RFC 3986)
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _leave_out(
    pm: pluggy.PluginManager, plugin: object, cause: str, exc: BaseException | None = None
) -> None:
    """Unregister a plugin whose backends cannot be used, recorded as broken for ``cause``."""
    name = pm.get_name(plugin) or repr(plugin)
    pm.unregister(plugin)
    status = _statuses.get(name) or PluginStatus(name, None, None, None)
    _statuses[name] = dataclasses.replace(status, status=BROKEN, cause=cause, exception=exc)
    log.warning("%s", _statuses[name].error())


def _clashes(claims: list[tuple[str, dict[str, BackendInfo]]]) -> dict[str, str]:
    """The plugins that register a scheme another one registers too, each with why it is left
    out. Against a built-in the built-in keeps the scheme; between others, none does (which one
    the user meant is theirs to say, by blocking the other): a request for their schemes fails,
    naming them, and every other plugin keeps working."""
    by_scheme: dict[str, list[str]] = {}
    for name, registered in claims:
        for scheme in registered:
            by_scheme.setdefault(scheme, []).append(name)
    causes: dict[str, str] = {}
    for scheme, names in sorted(by_scheme.items()):
        if len(names) < 2:
            continue
        builtin = [n for n in names if n in _statuses and _statuses[n].builtin]
        for name in sorted(names):
            if name in builtin:
                continue
            if builtin:
                cause = f"registers the URL scheme {scheme!r} of the built-in plugin {builtin[0]!r}"
            else:
                others = ", ".join(repr(n) for n in sorted(names) if n != name)
                cause = f"registers the URL scheme {scheme!r}, as {others} does too"
            causes.setdefault(name, f"{cause}; block one with REGSTORE_BLOCK_PLUGINS={name}")
    return causes


def plugin_statuses() -> list[PluginStatus]:
    """Every plugin the global manager tried (built-ins, entry points, in-process), in order,
    each ok, broken (with its cause) or blocked."""
    with _lock:
        backends()  # a plugin whose backend registration fails is found broken here
        pm = get_plugin_manager()
        # a plugin unregistered since (through the manager) is no longer listed as loaded
        return [s for s in _statuses.values() if not s.ok or pm.has_plugin(s.name)]


def broken_plugins() -> list[PluginStatus]:
    """The plugins that could not be loaded, each with its cause."""
    return [s for s in plugin_statuses() if s.status == BROKEN]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _may_serve(status: PluginStatus, scheme: str) -> bool:
    """Whether a broken plugin is the likely provider of ``scheme`` (``s3`` from the entry point
    ``s3`` or the distribution ``regstore-s3``): the schemes a plugin registers are known only
    once it loads."""
    return (
        scheme in status.schemes
        or status.name.lower() == scheme
        or (
            status.distribution is not None
            and _normalize(status.distribution) == f"regstore-{scheme}"
        )
    )


def backend_factory(scheme: str) -> BackendFactory:
    """The factory registered for ``scheme``.

    Raises:
        PluginLoadError: the plugin that would serve ``scheme`` is installed but broken.
        BackendNotFoundError: no plugin serves it; says what to install (and which installed
            plugins could not be loaded, one of which might have).
    """
    scheme = scheme.lower()
    info = backends().get(scheme)
    if info is not None:
        return info.factory
    broken = broken_plugins()
    for status in broken:
        if _may_serve(status, scheme):
            raise status.error(scheme) from status.exception
    hint = KNOWN_EXTERNAL_BACKENDS.get(scheme, "")
    if broken:
        names = ", ".join(f"{s.name} ({s.distribution or 'in-process'})" for s in broken)
        note = f"these plugins could not be loaded (one may serve it): {names}; "
        note += "see `regstore plugins --check`"
        hint = f"{hint}; {note}" if hint else note
    raise BackendNotFoundError(scheme, hint)


def new_store_manager() -> pluggy.PluginManager:
    """A fresh manager for one store: the store hook specs, nothing registered yet."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(StoreSpec)
    if _flag("REGSTORE_TRACE_PLUGINS"):
        pm.trace.root.setwriter(log.debug)
        pm.enable_tracing()
    return pm


def has_event_observers() -> bool:
    """True if any plugin observes transfer events (lets the engine skip building events)."""
    return bool(get_plugin_manager().hook.regstore_transfer_event.get_hookimpls())


def emit_event(event: TransferEvent) -> None:
    """Send a transfer event to every observer."""
    get_plugin_manager().hook.regstore_transfer_event(event=event)


def credentials_for(registry: str) -> tuple[str, str] | None:
    """Ask credential-provider plugins for ``registry``; None when none answers."""
    result = get_plugin_manager().hook.regstore_credentials(registry=registry)
    return result  # type: ignore[no-any-return]
