"""evercore."""
