"""What the server imports before it answers initialize: the editor waits for every module of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from hapa_lsp.features import lifecycle

DEFERRED = ["httpx", "jedi", "parso", "structlog", "prometheus_client", "aiohttp", "limits", "stamina", "redis",
            "sqlite3", "cachetools", "hapa_lsp.config", "hapa_lsp.engine", "hapa_lsp.generation", "hapa_lsp.store",
            "hapa_lsp.cli_context"]


def test_server_start_defers_heavy_modules():
    code = (
        "import sys, json\n"
        "from hapa_lsp import cli\n"
        "full = cli.build_parser(False)\n"
        "cli._configure_logging(full.parse_args([]))\n"
        "from hapa_lsp.server import create_server\n"
        "create_server()\n"
        f"print(json.dumps([m for m in {DEFERRED!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_the_server_uses_fast_documents():
    """Guards the one pygls internal we replace (Workspace._create_text_document)."""
    from pygls.workspace import Workspace

    from hapa_lsp.protocol import FastTextDocument, install_fast_documents

    ws = Workspace(None)
    install_fast_documents(ws)
    ws.put_text_document(__import__("lsprotocol.types", fromlist=["x"]).TextDocumentItem(
        uri="file:///a.py", language_id="python", version=1, text="x = 1\n"))
    assert isinstance(ws.get_text_document("file:///a.py"), FastTextDocument)


def test_the_typing_path_never_imports_jedi_in_the_server_process():
    """jedi runs in its worker process: the server's own process must not pay its import (time and memory)."""
    code = ("import sys, json\nimport hapa_lsp.engine, hapa_lsp.context.builder, hapa_lsp.jedi_client\n"
            "print(json.dumps([m for m in ('jedi', 'parso') if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


class _Typing:
    """The parts of a server _after_warm_up reads: when the user last typed, and the hooks it runs."""

    def __init__(self) -> None:
        self.protocol = type("P", (), {"last_typing_at": time.monotonic()})()
        self.hooks_at: float | None = None

    async def run_startup_hooks(self) -> None:
        self.hooks_at = time.monotonic()


async def _type(ls: _Typing, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ls.protocol.last_typing_at = time.monotonic()
        await asyncio.sleep(0.02)


async def test_background_startup_work_waits_for_the_warm_up_and_a_pause_in_typing(monkeypatch):
    """The sidecar and incident pruning (aiohttp, prometheus_client imports) start when the user pauses, not while
    the first keystrokes' requests need the interpreter."""
    monkeypatch.setattr(lifecycle, "STARTUP_PAUSE_S", 0.15)
    monkeypatch.setattr(lifecycle, "STARTUP_PAUSE_MAX_S", 5.0)
    ls = _Typing()
    warm: asyncio.Future = asyncio.get_running_loop().create_future()
    t0 = time.monotonic()
    waiting = asyncio.ensure_future(lifecycle._after_warm_up(ls, warm))
    await asyncio.sleep(0.3)
    assert ls.hooks_at is None, "started before the typing path was warm"
    warm.set_result(None)
    await _type(ls, 0.5)
    assert ls.hooks_at is None, "started while the user was typing"
    typed_until = time.monotonic()
    await asyncio.wait_for(waiting, 5)
    assert ls.hooks_at is not None and ls.hooks_at - typed_until >= 0.1 and ls.hooks_at - t0 >= 0.8


async def test_background_startup_work_starts_after_the_bound_however_long_the_user_types(monkeypatch):
    monkeypatch.setattr(lifecycle, "STARTUP_PAUSE_S", 0.15)
    monkeypatch.setattr(lifecycle, "STARTUP_PAUSE_MAX_S", 0.4)
    ls = _Typing()
    warm: asyncio.Future = asyncio.get_running_loop().create_future()
    warm.set_result(None)
    t0 = time.monotonic()
    typing = asyncio.ensure_future(_type(ls, 3.0))
    await asyncio.wait_for(lifecycle._after_warm_up(ls, warm), 5)
    typing.cancel()
    assert ls.hooks_at is not None and 0.4 <= ls.hooks_at - t0 < 2.5


class _StartingJedi:
    """The part of a JediRunner _after_warm_up reads: its worker answers its first job after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.started_at = time.monotonic() + seconds

    async def wait_started(self, timeout: float) -> bool:
        wait = self.started_at - time.monotonic()
        await asyncio.sleep(max(0.0, min(wait, timeout)))
        return wait <= timeout


async def test_background_startup_work_waits_for_the_jedi_worker_to_start_within_the_bound(monkeypatch):
    """On a never-seen machine jedi's first parse needs both cores (a helper worker parses the document's imports):
    the sidecar's imports wait until the worker has started, but never past the bound."""
    monkeypatch.setattr(lifecycle, "STARTUP_PAUSE_S", 0.05)
    monkeypatch.setattr(lifecycle, "STARTUP_PAUSE_MAX_S", 2.0)
    warm: asyncio.Future = asyncio.get_running_loop().create_future()
    warm.set_result(None)
    ls = _Typing()
    ls.protocol.last_typing_at = 0.0
    t0 = time.monotonic()
    await asyncio.wait_for(lifecycle._after_warm_up(ls, warm, _StartingJedi(0.6)), 5)
    assert ls.hooks_at is not None and 0.6 <= ls.hooks_at - t0 < 1.5
    ls = _Typing()
    ls.protocol.last_typing_at = 0.0
    t0 = time.monotonic()
    await asyncio.wait_for(lifecycle._after_warm_up(ls, warm, _StartingJedi(30.0)), 5)
    assert ls.hooks_at is not None and 1.9 <= ls.hooks_at - t0 < 3.0
