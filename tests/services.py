"""Reach the local PostgreSQL and Redis, starting them when installed but not running.

In CI (``CI`` set) an unreachable service fails the test session; it is never skipped.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import time

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379

POSTGRES_START = (
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ensure(name: str, host: str, port: int, start_command: str, installed: bool) -> None:
    if _port_open(host, port):
        return
    if installed:
        subprocess.run(start_command, shell=True, check=False, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _port_open(host, port):
                return
            time.sleep(0.2)
    raise RuntimeError(
        f"{name} is not reachable on {host}:{port} and could not be started "
        f"(tried: {start_command})"
    )


def ensure_postgres() -> None:
    """Make sure the local PostgreSQL answers on 127.0.0.1:5432."""
    _ensure(
        "PostgreSQL", POSTGRES_HOST, POSTGRES_PORT, POSTGRES_START,
        installed=bool(glob.glob("/etc/postgresql/*")),
    )


def ensure_redis() -> None:
    """Make sure the local Redis answers on 127.0.0.1:6379."""
    _ensure(
        "Redis", REDIS_HOST, REDIS_PORT, REDIS_START,
        installed=os.path.exists("/usr/bin/redis-server"),
    )
