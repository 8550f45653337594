"""The evercore plugin entry point: registers the ``redis`` backend.

Discovery imports only this module, so it must not import redis-py.
"""

from __future__ import annotations

from evercore.hookspecs import hookimpl
from evercore.registry import BackendRegistry, BackendSpec


@hookimpl
def evercore_register_backends(registry: BackendRegistry) -> None:
    """Register the ``redis`` backend for ``redis://``, ``rediss://`` and ``unix://``."""
    registry.add(
        BackendSpec(
            name="redis",
            schemes=("redis", "rediss", "unix"),
            factory="evercore_redis.engine:open_redis_engine",
            description="Redis: atomic Lua appends, the global log as a Redis Stream",
        )
    )
