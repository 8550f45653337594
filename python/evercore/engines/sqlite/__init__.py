"""Built-in plugin: the SQLite engine (``sqlite://``), the durable embedded default."""

from __future__ import annotations

from evercore.hookspecs import hookimpl
from evercore.registry import BackendRegistry, BackendSpec


@hookimpl
def evercore_register_backends(registry: BackendRegistry) -> None:
    """Register the ``sqlite`` backend."""
    registry.add(
        BackendSpec(
            name="sqlite",
            schemes=("sqlite",),
            factory="evercore.engines.sqlite.engine:open_sqlite_engine",
            description="SQLite file (WAL) via the standard library: durable, embedded",
        )
    )
