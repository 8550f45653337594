"""The built-in storage engines (memory, SQLite), each a plugin like any other."""
