"""No credential reaches a log line, a message, a stored incident or a sidecar answer, even at DEBUG."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.conftest import free_port
from tests.e2e.conftest import inline_params, open_doc, server_env, start_client, stop_client
from tests.e2e.test_sidecar import ops_env, sidecar_url
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


URL_PASSWORD = "S3cr3t-Pw-0x91"


def _dump(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: getattr(o, "__dict__", repr(o)))


async def _failing(client: Any, uri: str, invoked: bool) -> Any:
    if not invoked:
        return await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    with pytest.raises(JsonRpcException) as info:
        await client.text_document_inline_completion_async(inline_params(uri, 1, 4, invoked=True))
    return info.value


@pytest.mark.parametrize("target", ["closed-port", "fake-500"])
async def test_a_password_in_the_endpoint_url_is_shown_and_stored_nowhere(fake: FakeModelServer, tmp_path: Path,
                                                                         target: str):
    port = free_port() if target == "closed-port" else fake.port
    if target == "fake-500":
        fake.fault = "500"
    endpoint = f"http://alice:{URL_PASSWORD}@127.0.0.1:{port}"
    log_file = tmp_path / "server.log"
    env = ops_env(tmp_path, HAPA_LOGGING_LEVEL="DEBUG", HAPA_LOGGING_FILE=str(log_file),
                  HAPA_BACKEND_ENDPOINT=endpoint, HAPA_RESILIENCE_RETRIES="1")
    client = await start_client(None, root=tmp_path, env=env)
    seen: list[str] = []
    try:
        open_doc(client, URI, "def add(a, b):\n    \n")
        quiet = await _failing(client, URI, invoked=False)  # typing: a popup and a status notification
        assert not getattr(quiet, "items", None)
        err = await _failing(client, URI, invoked=True)  # asked for: the error is the answer
        code = "E5005" if target == "closed-port" else "E5009"
        assert err.data["code"] == code, err.data
        assert f"127.0.0.1:{port}" in err.data["detail"]  # the endpoint is still named, without its userinfo
        seen += [str(err), _dump(err.data)]
        gen = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            "hapa.generateCode", [{"user_question": "add two numbers", "stream": False}]))
        assert gen["status"] == "error" and gen["error"]["code"] == code  # a generation fails the same way
        seen.append(_dump(gen))
        for _ in range(100):
            if any(code in m.message for m in client.messages):
                break
            await asyncio.sleep(0.05)
        assert any(code in m.message for m in client.messages)
        seen += [m.message for m in client.messages] + [m.message for m in client.log_messages]
        statuses = [_dump(s) for s in client.statuses]  # type: ignore[attr-defined]
        assert any(code in s for s in statuses)
        seen += statuses
        url = await sidecar_url(client)
        async with httpx.AsyncClient(trust_env=False) as http:
            dash = await http.get(f"{url}/errors/dashboard")
            seen.append(dash.text)
            ids = [i["incident_id"] for i in dash.json()["recent_incidents"]]
            assert err.data["incident_id"] in ids
            for incident_id in ids:
                one = await http.get(f"{url}/errors/{incident_id}")
                assert one.status_code == 200
                seen.append(one.text)
                if incident_id == err.data["incident_id"]:
                    assert f"127.0.0.1:{port}" in one.json()["detail"]
            seen.append((await http.get(f"{url}/errors/patterns?period=1h")).text)
            seen.append((await http.get(f"{url}/metrics")).text)
        seen.append(_dump(await client.workspace_execute_command_async(
            types.ExecuteCommandParams("hapa.errors.get", [err.data["incident_id"]]))))
        if target == "fake-500":  # the credentials still reach the model server, as Basic auth
            auth = fake.requests[-1].headers.get("authorization", "")
            assert auth == "Basic " + base64.b64encode(f"alice:{URL_PASSWORD}".encode()).decode()
    finally:
        await stop_client(client)
    with sqlite3.connect(tmp_path / "hapa.db") as db:
        rows = db.execute("SELECT * FROM incidents").fetchall()
    assert rows
    seen.append(repr(rows))
    seen.append(log_file.read_text(encoding="utf-8"))
    for what in (server_env(None, env), {**server_env(None, env), "HAPA_LOGGING_FILE": ""}):
        for args in (["doctor"], ["doctor", "--json"]):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hapa_lsp", *args, env=what,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, errs = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 1  # unusable either way
            assert f"127.0.0.1:{port}" in out.decode()
            seen += [out.decode(), errs.decode()]
    for text in seen:
        assert URL_PASSWORD not in text
        assert "alice:" not in text
