"""Hook specifications for evercore plugins (pluggy project ``"evercore"``).

A backend plugin is a module (or object) with functions marked ``@hookimpl``,
exposed through the entry-point group ``"evercore"``::

    # pyproject.toml of your distribution
    [project.entry-points.evercore]
    mybackend = "evercore_mybackend.plugin"

    # evercore_mybackend/plugin.py
    from evercore import hookimpl, BackendSpec

    @hookimpl
    def evercore_register_backends(registry):
        registry.add(BackendSpec(
            name="mybackend",
            schemes=("mydb",),
            factory="evercore_mybackend.engine:open_engine",
            description="My database as an evercore backend",
            spi_version=1,
        ))

The factory is named as a ``"module:attr"`` string so that discovering plugins never
imports a database driver; it is imported the first time a URI of that scheme is
opened, and called as ``factory(uri, **options)``. It returns an object satisfying
``evercore.StorageEngine``. Hook names are checked when plugins load
(``check_pending``), so a misspelled hook fails loudly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from evercore.registry import BackendRegistry

PROJECT_NAME = "evercore"
"""The pluggy project name and the entry-point group plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a hook specification (used by evercore itself)."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin's hook implementation."""


@hookspec
def evercore_register_backends(registry: BackendRegistry) -> None:
    """Add the plugin's backends to ``registry`` with ``registry.add(BackendSpec(...))``.

    Called once per plugin when the registry loads. A backend name or URI scheme
    that another plugin already registered is an error naming both plugins.
    """
