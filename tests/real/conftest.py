"""A real llama.cpp llama-server on a loopback port, serving the bigram test model built here (llama_model.py).

The binary comes from `.ci/build-llama-server` (which `.ci/run` calls): ``HAPA_LLAMA_SERVER`` names it, else
the build's cache, else a `llama-server` on PATH. Without one the tests skip and say how to build it; when
``HAPA_LLAMA_SERVER`` is set (as `.ci/run` does) a missing binary fails instead, so CI cannot skip silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.real import llama_model

MODEL = "qwen2.5-coder:bigram"  # the alias served; "qwen...coder" picks the Qwen FIM template


def llama_server_binary() -> str | None:
    """The llama-server to run, or None when none is built."""
    named = os.environ.get("HAPA_LLAMA_SERVER")
    if named:
        if not os.access(named, os.X_OK):
            pytest.fail(f"HAPA_LLAMA_SERVER={named} is not an executable (.ci/build-llama-server builds it)")
        return named
    cache = Path(os.environ.get("HAPA_CI_CACHE") or Path.home() / ".cache" / "hapa-lsp-ci")
    built = cache / "llama-server-0.3.36" / "bin" / "llama-server"
    if os.access(built, os.X_OK):
        return str(built)
    return shutil.which("llama-server")


class LlamaServer:
    """One llama-server process with one slot (so its prompt cache is the one every request meets)."""

    def __init__(self, binary: str, model: Path, log: Path, extra_args: tuple[str, ...] = ()):
        self.log_path = log
        last = ""
        for _ in range(3):  # the free port may be taken between choosing and binding it
            self.port = free_port()
            self._log = open(log, "wb")
            self.proc = subprocess.Popen(
                [binary, "-m", str(model), "--alias", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
                 "-c", "8192", "-b", "2048", "-np", "1", "-t", "1", "--no-warmup", *extra_args],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return
            self.kill()
            last = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"llama-server did not start:\n{last}")

    @property
    def url(self) -> str:
        """The server root (the OpenAI routes are under /v1)."""
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200 and json.loads(resp.read()).get("status") == "ok":
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """Stop the server and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def llama_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bigram GGUF, written for this test session."""
    pytest.importorskip("gguf", reason="the gguf package writes the test model (pip install -e '.[test]')")
    return llama_model.build(tmp_path_factory.mktemp("llama-model") / "bigram.gguf")


@pytest.fixture(scope="session")
def llama(llama_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A llama-server for the session (one per xdist worker)."""
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("llama-server is not built: run .ci/build-llama-server (.ci/run builds it, ~7 min, cached)")
    server = LlamaServer(binary, llama_model_path, tmp_path_factory.mktemp("llama-log") / "llama-server.log")
    try:
        yield server
    finally:
        server.kill()


def llama_env(server: LlamaServer, **extra: str) -> dict[str, str]:
    """hapa settings (as environment variables) pointing both models at ``server``."""
    env = {"HAPA_BACKEND_KIND": "openai", "HAPA_BACKEND_ENDPOINT": server.url,
           "HAPA_BACKEND_COMPLETION_MODEL": MODEL, "HAPA_BACKEND_CHAT_MODEL": MODEL,
           "HAPA_BACKEND_TEMPERATURE": "0"}
    env.update(extra)
    return env
