"""The backend registry: discovers plugins with pluggy and opens URIs.

Discovery order: plugins from the entry-point group ``"evercore"``, then the
built-in memory and SQLite plugins, then ``check_pending()``. Environment switches:

* ``EVERCORE_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry-point plugins (built-ins only);
* ``EVERCORE_DISABLE_PLUGINS=name1,name2`` skips the named entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import pluggy

from evercore import hookspecs
from evercore.errors import ConfigurationError, EvercoreError, UnknownBackendError
from evercore.spi import SPI_VERSION, StorageEngine

BUILTIN_PLUGINS = ("evercore.engines.memory", "evercore.engines.sqlite")
"""Modules of the built-in plugins, registered through the same hook as any other."""

EngineFactory = Callable[..., StorageEngine]


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend a plugin offers.

    ``factory`` is ``"module:attr"``; ``attr`` is called as ``factory(uri, **options)``.
    """

    name: str
    schemes: tuple[str, ...]
    factory: str
    description: str
    spi_version: int = SPI_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemes", tuple(s.lower() for s in self.schemes))
        if ":" not in self.factory:
            raise ConfigurationError(
                f"backend {self.name!r}: factory {self.factory!r} must be 'module:attr'"
            )

    def load_factory(self) -> EngineFactory:
        """Import the factory (the first time the backend is used)."""
        module_name, _, attr = self.factory.partition(":")
        module = importlib.import_module(module_name)
        return cast(EngineFactory, getattr(module, attr))


@dataclass(frozen=True, slots=True)
class InstalledBackend:
    """A registered backend and where it came from (for ``evercore backends``)."""

    spec: BackendSpec
    plugin: str
    distribution: str | None
    version: str | None


class BackendRegistry:
    """What every plugin registered, by name and by URI scheme."""

    def __init__(self) -> None:
        self._by_name: dict[str, InstalledBackend] = {}
        self._by_scheme: dict[str, InstalledBackend] = {}
        self._current_plugin = "<unknown>"
        self._current_dist: tuple[str | None, str | None] = (None, None)

    def add(self, spec: BackendSpec) -> None:
        """Register a backend; a name or scheme already taken raises ``EvercoreError``."""
        installed = InstalledBackend(spec, self._current_plugin, *self._current_dist)
        if spec.spi_version > SPI_VERSION:
            raise EvercoreError(
                f"backend {spec.name!r} from plugin {self._current_plugin!r} implements SPI "
                f"version {spec.spi_version}; this evercore supports up to {SPI_VERSION}"
            )
        previous = self._by_name.get(spec.name)
        if previous is not None:
            raise EvercoreError(
                f"backend name {spec.name!r} is registered by both plugin "
                f"{previous.plugin!r} and plugin {self._current_plugin!r}"
            )
        for scheme in spec.schemes:
            taken = self._by_scheme.get(scheme)
            if taken is not None:
                raise EvercoreError(
                    f"URI scheme {scheme!r} is registered by both plugin {taken.plugin!r} "
                    f"(backend {taken.spec.name!r}) and plugin {self._current_plugin!r} "
                    f"(backend {spec.name!r})"
                )
        self._by_name[spec.name] = installed
        for scheme in spec.schemes:
            self._by_scheme[scheme] = installed

    def backends(self) -> list[InstalledBackend]:
        """Every registered backend, in registration order."""
        return list(self._by_name.values())

    def schemes(self) -> list[str]:
        """Every registered URI scheme, sorted."""
        return sorted(self._by_scheme)

    def for_uri(self, uri: str) -> BackendSpec:
        """The backend that handles ``uri``'s scheme, else ``UnknownBackendError``."""
        scheme = uri_scheme(uri)
        installed = self._by_scheme.get(scheme)
        if installed is None:
            raise UnknownBackendError(
                f"no backend is installed for URI scheme {scheme!r}; installed schemes: "
                f"{', '.join(self.schemes()) or '(none)'}"
            )
        return installed.spec

    def collect(self, plugin_manager: pluggy.PluginManager) -> None:
        """Ask each registered plugin for its backends, recording which plugin added what."""
        dists = {id(plugin): dist for plugin, dist in plugin_manager.list_plugin_distinfo()}
        for name, plugin in plugin_manager.list_name_plugin():
            hook = getattr(plugin, "evercore_register_backends", None)
            if hook is None:
                continue
            dist = dists.get(id(plugin))
            self._current_plugin = name
            self._current_dist = (
                (dist.project_name, dist.version)
                if dist is not None
                else ("evercore", _own_version())
            )
            try:
                hook(registry=self)
            finally:
                self._current_plugin = "<unknown>"
                self._current_dist = (None, None)


def _own_version() -> str | None:
    try:
        return importlib.metadata.version("evercore")
    except importlib.metadata.PackageNotFoundError:
        return None


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")


def uri_scheme(uri: str) -> str:
    """The lower-cased scheme of ``uri``; a malformed URI is a ``ConfigurationError``."""
    scheme = uri.partition("://")[0].lower() if isinstance(uri, str) and "://" in uri else ""
    try:
        well_formed = bool(_SCHEME.match(scheme)) and bool(urlsplit(uri).scheme)
    except ValueError:  # urlsplit refuses e.g. an unclosed IPv6 bracket
        well_formed = False
    if not well_formed:
        raise ConfigurationError(
            f"malformed store URI {redact_uri(str(uri))!r}: expected scheme://..., "
            "for example memory:// or sqlite:///events.db"
        )
    return scheme


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (safe for errors, logs and reprs).

    Works on strings too malformed for ``urlsplit``; when unsure it masks more
    rather than less.
    """
    head, separator, rest = uri.partition("://")
    if not separator:
        head, rest = "", uri
    userinfo, at, tail = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{head}{separator}{user}:***@{tail}"


def make_plugin_manager(extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with entry-point plugins, built-ins and ``extra_plugins`` loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for blocked in _disabled_plugins():
        pm.set_blocked(blocked)
    if os.environ.get("EVERCORE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes"):
        pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    for module_name in BUILTIN_PLUGINS:
        if not pm.has_plugin(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def _disabled_plugins() -> list[str]:
    raw = os.environ.get("EVERCORE_DISABLE_PLUGINS", "")
    return [name.strip() for name in raw.split(",") if name.strip()]


_lock = threading.Lock()
_default: BackendRegistry | None = None


def get_registry() -> BackendRegistry:
    """The process-wide registry, built on first use."""
    global _default
    with _lock:
        if _default is None:
            registry = BackendRegistry()
            registry.collect(make_plugin_manager())
            _default = registry
        return _default


def reset_registry() -> None:
    """Forget the process-wide registry so the next use rediscovers plugins."""
    global _default
    with _lock:
        _default = None


def open_engine(uri: str, **options: Any) -> StorageEngine:
    """Open the storage engine for ``uri`` (without migrating it)."""
    spec = get_registry().for_uri(uri)
    return spec.load_factory()(uri, **options)
