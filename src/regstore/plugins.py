"""The global plugin manager: entry points, built-ins, blocking, tracing, listing.

This module and :mod:`regstore.store` are the only callers of ``pm.hook``; everything else
uses the typed functions here.

Environment variables (the escape hatches pytest and tox users know):

- ``REGSTORE_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party entry points; regstore's own
  built-in backends (distribution ``regstore``) still load.
- ``REGSTORE_BLOCK_PLUGINS=a,b``: never load the plugins (entry-point names) listed.
- ``REGSTORE_TRACE_PLUGINS=1``: log every hook call (logger ``regstore.plugins``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from regstore.errors import BackendNotFoundError, RegstoreError
from regstore.hookspecs import PROJECT, BackendFactory, DiscoverySpec, StoreSpec

if TYPE_CHECKING:
    from regstore.events import TransferEvent

__all__ = [
    "BackendInfo",
    "backend_factory",
    "backends",
    "credentials_for",
    "emit_event",
    "get_plugin_manager",
    "has_event_observers",
    "new_store_manager",
    "register_plugin",
    "reset_plugin_manager",
]

log = logging.getLogger(__name__)

#: Schemes whose backend ships separately, and what to install for them.
KNOWN_EXTERNAL_BACKENDS = {
    "s3": "pip install regstore-s3 (or: pip install 'regstore[s3]')",
    "gs": "no Google Cloud Storage backend is published yet; write one (see regstore.testing)",
    "gcs": "no Google Cloud Storage backend is published yet; write one (see regstore.testing)",
    "az": "no Azure backend is published yet; write one (see regstore.testing)",
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


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_backends: dict[str, BackendInfo] | None = None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=PROJECT), key=lambda e: e.name)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    blocked = {b.strip() for b in os.environ.get("REGSTORE_BLOCK_PLUGINS", "").split(",")}
    if _flag("REGSTORE_DISABLE_PLUGIN_AUTOLOAD"):
        blocked |= {
            ep.name
            for ep in _entry_points()
            if ep.dist is None or ep.dist.metadata["Name"] != PROJECT
        }
    for name in blocked - {""}:
        pm.set_blocked(name)
    # pluggy records each plugin's distribution, which `regstore plugins` lists
    pm.load_setuptools_entrypoints(PROJECT)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use (entry points loaded)."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(PROJECT)
            pm.add_hookspecs(DiscoverySpec)
            _load_entry_points(pm)
            if _flag("REGSTORE_TRACE_PLUGINS"):
                pm.trace.root.setwriter(log.debug)
                pm.enable_tracing()
            _pm = pm
        return _pm


def reset_plugin_manager() -> None:
    """Forget the global manager so the next use rebuilds it (tests, freshly installed plugins)."""
    global _pm, _backends
    with _lock:
        _pm = None
        _backends = None


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin (an observer, a credential provider, a backend module)."""
    global _backends
    with _lock:
        get_plugin_manager().register(plugin, name=name)
        _backends = None


def _dist_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str | None, str | None]:
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return dist.project_name, dist.version
    return None, None


def backends() -> dict[str, BackendInfo]:
    """Every installed backend by URL scheme, with the plugin and distribution it came from."""
    global _backends
    with _lock:
        if _backends is not None:
            return dict(_backends)
        pm = get_plugin_manager()
        found: dict[str, BackendInfo] = {}
        entry_points = {ep.name: ep.value for ep in _entry_points()}
        for plugin in pm.get_plugins():
            plugin_name = pm.get_name(plugin) or repr(plugin)
            dist, version = _dist_of(pm, plugin)

            def register(
                scheme: str,
                factory: BackendFactory,
                description: str = "",
                *,
                _plugin: str = plugin_name,
                _dist: str | None = dist,
                _version: str | None = version,
            ) -> None:
                scheme = scheme.lower()
                if scheme in found:
                    raise RegstoreError(
                        f"URL scheme {scheme!r} is registered by both {found[scheme].plugin!r} "
                        f"and {_plugin!r}; block one with REGSTORE_BLOCK_PLUGINS"
                    )
                found[scheme] = BackendInfo(
                    scheme, factory, description, _plugin, _dist, _version,
                    entry_points.get(_plugin),
                )  # fmt: skip

            caller = pm.subset_hook_caller(
                "regstore_register_backends",
                remove_plugins=[p for p in pm.get_plugins() if p is not plugin],
            )
            caller(register=register)
        _backends = found
        return dict(found)


def backend_factory(scheme: str) -> BackendFactory:
    """The factory registered for ``scheme``; BackendNotFoundError says what to install."""
    info = backends().get(scheme.lower())
    if info is None:
        raise BackendNotFoundError(scheme, KNOWN_EXTERNAL_BACKENDS.get(scheme.lower(), ""))
    return info.factory


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
