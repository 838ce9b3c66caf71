"""What the server imports before it answers initialize: the editor waits for every module of it."""

from __future__ import annotations

import json
import subprocess
import sys

DEFERRED = ["httpx", "jedi", "parso", "structlog", "prometheus_client", "aiohttp", "limits", "stamina", "redis",
            "sqlite3", "cachetools", "hapa_lsp.config", "hapa_lsp.engine", "hapa_lsp.generation", "hapa_lsp.store",
            "hapa_lsp.context.report"]


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
