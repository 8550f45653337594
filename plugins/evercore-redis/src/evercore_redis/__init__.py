"""Redis Streams storage backend for evercore (``redis://``, ``rediss://``, ``unix://``).

Install it next to evercore and open a store with
``evercore.connect("redis://127.0.0.1:6379/0?prefix=myapp")``. The engine class is
:class:`evercore_redis.engine.RedisStorageEngine`; this package imports redis-py
only when an engine is opened, never when plugins are discovered.
"""

from __future__ import annotations

__all__: list[str] = []
