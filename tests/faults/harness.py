"""Tools of the fault tests: worker processes to kill and a TCP proxy to cut.

Everything listens on and connects to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A ``tests.faults.workers`` child process whose stdout lines are collected."""

    def __init__(self, *args: object) -> None:
        command = [sys.executable, "-m", "tests.faults.workers"]
        command += [a if isinstance(a, str) else json.dumps(a) for a in args]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float) -> str:
        """The next line, or ``TimeoutError`` (with the worker's stderr)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"worker silent for {timeout} s; stderr: {self.stderr()}") from None
        self.seen.append(line)
        return line

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Read lines until ``count`` of them start with ``prefix``; return those."""
        deadline = time.monotonic() + timeout
        found: list[str] = []
        while len(found) < count:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                found.append(line)
        return found

    def drain(self) -> list[str]:
        """Every line printed so far (after the process ended, all of them)."""
        self._reader.join(timeout=5)
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker."""
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the worker and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit; its exit code."""
        return self.process.wait(timeout=timeout)

    def stderr(self) -> str:
        """What the worker wrote on stderr (only once it has exited)."""
        if self.process.poll() is None or self.process.stderr is None:
            return "<still running>"
        return self.process.stderr.read()[-2000:]

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process must die too
        self.kill()


class PostgresCommitDetector:
    """Follows one client-to-server PostgreSQL stream (frontend protocol 3, no TLS) and
    says when a COMMIT goes by: as a simple query, as an unnamed or named Parse, or as a
    Bind of a statement prepared earlier as COMMIT (psycopg prepares statements it runs
    often, so after a while the text "COMMIT" is no longer sent)."""

    _SSL_REQUEST = 80877103
    _GSS_REQUEST = 80877104

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False
        self.commit_statements: set[bytes] = set()

    def feed(self, data: bytes) -> bool:
        """Take the next bytes of the stream; True when they hold a COMMIT."""
        self.buffer += data
        seen = False
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return seen
                length, code = struct.unpack(">ii", self.buffer[:8])
                if code not in (self._SSL_REQUEST, self._GSS_REQUEST):
                    self.started = True
                self.buffer = self.buffer[length:]
                continue
            if len(self.buffer) < 5:
                return seen
            kind = self.buffer[:1]
            (length,) = struct.unpack(">i", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return seen
            payload, self.buffer = self.buffer[5 : 1 + length], self.buffer[1 + length :]
            seen = self._message(kind, payload) or seen

    def _message(self, kind: bytes, payload: bytes) -> bool:
        fields = payload.split(b"\x00")
        if kind == b"Q":
            return _is_commit(fields[0])
        if kind == b"P" and _is_commit(fields[1]):
            if fields[0]:
                self.commit_statements.add(fields[0])
                return False
            return True
        return kind == b"B" and fields[1] in self.commit_statements


def _is_commit(query: bytes) -> bool:
    return query.strip().rstrip(b";").upper() == b"COMMIT"


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server.

    While ``cut_on_commit`` is set, the first commit a client sends is forwarded to
    the server and then both connections are closed before any answer gets back, so
    the client cannot know whether it committed. A commit is a PostgreSQL COMMIT
    (``postgres=True``; connect with ``sslmode=disable`` so the proxy can read the
    protocol) or any client data holding ``marker`` (for Redis: the commit script's
    SHA). ``close()`` drops every connection and stops listening (the server is "gone").
    """

    def __init__(
        self, target_port: int, *, postgres: bool = False, marker: bytes | None = None
    ) -> None:
        self.target = ("127.0.0.1", target_port)
        self.postgres = postgres
        self.marker = marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_on_commit = False
        self.cuts = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        sockets = [client, server]
        detector = self._detector()
        try:
            while not self._closed:
                ready, _, _ = select.select(sockets, [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (server if sock is client else client).sendall(data)
                    commit = sock is client and detector is not None and detector(data)
                    if commit and self._take_cut():
                        time.sleep(0.2)  # let the server receive and act on it
                        return
        except OSError:
            return
        finally:
            for sock in sockets:
                _close(sock)

    def _detector(self) -> Callable[[bytes], bool] | None:
        """A function telling whether the next client bytes of one connection commit."""
        if self.postgres:
            return PostgresCommitDetector().feed
        marker = self.marker
        if marker is not None:
            return lambda data: marker in data
        return None

    def _take_cut(self) -> bool:
        with self._lock:
            if not self.cut_on_commit:
                return False
            self.cut_on_commit = False
            self.cuts += 1
            return True

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._closed = True
        _close(self.listener)
        with self._lock:
            for pair in self._pairs:
                for sock in pair:
                    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
