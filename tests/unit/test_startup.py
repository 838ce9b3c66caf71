"""What the server imports before it answers initialize: the editor waits for every module of it."""

from __future__ import annotations

import json
import subprocess
import sys

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
