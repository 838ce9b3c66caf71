"""Session-wide fixtures: a real redis-server on an ephemeral loopback port (Debian's redis-server package)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import hypothesis  # noqa: F401  # see below
import pytest

# hypothesis' pytest plugin imports hypothesis lazily in pytest_terminal_summary when no test module did; on CPython
# 3.11.7 that import, nested deep in pluggy's hook calls, fails in assertion rewriting with "SystemError: AST
# constructor recursion depth mismatch" and a run of a few test files ends in a traceback. Imported here, it is
# loaded (and rewritten) at collection instead.


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One redis-server process without persistence, killed by ``kill()``."""

    def __init__(self) -> None:
        last = ""
        for _ in range(5):  # the free port may be taken between choosing and binding it
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--logfile", "", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return
            last = (self.proc.stderr.read() or b"").decode(errors="replace") if self.proc.poll() is not None else ""
            self.kill()
        raise RuntimeError(f"redis-server did not start: {last}")

    @property
    def url(self) -> str:
        """The redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def kill(self) -> None:
        """Kill the server at once (as a crash would) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()


def start_redis() -> RedisProcess:
    """Start a private redis-server (skips the test when the binary is not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server package)")
    return RedisProcess()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server shared by the session's tests (each test uses its own key namespace)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.kill()
