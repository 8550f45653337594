"""evercore-postgres: the PostgreSQL storage engine for evercore.

Importing this package does not import psycopg; the engine lives in
:mod:`evercore_postgres.engine` and is loaded the first time a ``postgresql://``
or ``postgres://`` URI is opened.
"""

__version__ = "0.1.0"
