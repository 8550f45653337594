"""Built-in plugin: the in-memory engine (``memory://``), for tests and prototypes."""

from __future__ import annotations

from evercore.hookspecs import hookimpl
from evercore.registry import BackendRegistry, BackendSpec


@hookimpl
def evercore_register_backends(registry: BackendRegistry) -> None:
    """Register the ``memory`` backend."""
    registry.add(
        BackendSpec(
            name="memory",
            schemes=("memory",),
            factory="evercore.engines.memory.engine:open_memory_engine",
            description="In-process memory engine: thread-safe, transactional, not durable",
        )
    )
