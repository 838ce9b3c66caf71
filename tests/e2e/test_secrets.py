"""No credential reaches a log line, a message, a stored incident or a sidecar answer, even at DEBUG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client
from tests.e2e.test_sidecar import ops_env
from tests.fakes.model_server import FakeModelServer

URI = "file:///ws/s.py"
INIT_KEY = "init-key-Qw7Zr9Lx"
WS_KEY = "ws-key-Hn3Vb8Kp"
SIDECAR_KEY = "sidecar-key-Jt5Mc2Ye"


@pytest.mark.parametrize("where", ["file-json", "stderr-console"])
async def test_debug_logs_never_show_api_keys_from_init_options_or_configuration(
        fake: FakeModelServer, tmp_path: Path, capfd: pytest.CaptureFixture[str], where: str):
    log_file = tmp_path / "server.log"
    env = ops_env(tmp_path, HAPA_LOGGING_LEVEL="DEBUG")
    if where == "file-json":
        env.update(HAPA_LOGGING_FILE=str(log_file), HAPA_LOGGING_FORMAT="json")
    client = await start_client(
        fake, root=tmp_path, env=env,
        init_options={"hapa": {"backend": {"apiKey": INIT_KEY}, "sidecar": {"apiKey": SIDECAR_KEY}}},
        configuration={"hapa": {"backend": {"apiKey": WS_KEY}}})
    try:
        open_doc(client, URI, "def add(a, b):\n    \n")
        await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
        # The workspace layer's key is the one in use: the model call carried it.
        assert fake.requests[-1].headers.get("authorization") == f"Bearer {WS_KEY}"
    finally:
        await stop_client(client)
    stderr = capfd.readouterr().err
    text = log_file.read_text(encoding="utf-8") if where == "file-json" else stderr
    assert "Language server initialized" in text  # pygls' own DEBUG/INFO lines are there ...
    assert "Received result" in text
    for key in (INIT_KEY, WS_KEY, SIDECAR_KEY):  # ... and no key in any of them
        assert key not in text
        assert key not in stderr
    if where == "file-json":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines
        for ln in lines:  # the lines before structlog is loaded are JSON too
            rec = json.loads(ln)
            assert {"event", "level", "logger", "timestamp"} <= set(rec)
