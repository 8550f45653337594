"""The pluggy plugin: registers the ``postgresql`` backend (imports no driver)."""

from __future__ import annotations

from evercore.hookspecs import hookimpl
from evercore.registry import BackendRegistry, BackendSpec
from evercore.spi import SPI_VERSION


@hookimpl
def evercore_register_backends(registry: BackendRegistry) -> None:
    """Register the ``postgresql`` backend for the ``postgresql://`` and ``postgres://`` schemes."""
    registry.add(
        BackendSpec(
            name="postgresql",
            schemes=("postgresql", "postgres"),
            factory="evercore_postgres.engine:open_postgres_engine",
            description="PostgreSQL via psycopg 3: binary COPY writes, gap-free subscriptions",
            spi_version=SPI_VERSION,
        )
    )
