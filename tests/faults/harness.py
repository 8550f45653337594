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
import subprocess
import sys
import threading
import time
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


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server (PostgreSQL here).

    While ``cut_after`` is set, the first client message that contains it is
    forwarded to the server and then both connections are closed before any
    answer gets back: the client cannot know whether the server acted on it.
    ``close()`` drops every connection and stops listening (the server is "gone").
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_after: bytes | None = None
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
        try:
            while True:
                ready, _, _ = select.select(sockets, [], [], 0.5)
                if self._closed:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    other = server if sock is client else client
                    other.sendall(data)
                    marker = self.cut_after
                    if sock is client and marker is not None and marker in data:
                        self.cut_after = None
                        self.cuts += 1
                        time.sleep(0.2)  # let the server receive and act on it
                        return
        except OSError:
            return
        finally:
            for sock in sockets:
                _close(sock)

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
