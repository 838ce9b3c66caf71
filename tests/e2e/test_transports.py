"""TCP and WebSocket transports (stdio is what every other e2e test uses), loopback by default."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

from tests.e2e.conftest import server_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


async def _read_message(reader: asyncio.StreamReader) -> dict:
    length = 0
    while True:
        line = await reader.readline()
        if line.startswith(b"Content-Length:"):
            length = int(line.split(b":")[1])
        if line in (b"\r\n", b""):
            break
    return json.loads(await reader.readexactly(length))


async def _connect(port: int, proc: subprocess.Popen) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for _ in range(200):
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            await asyncio.sleep(0.05)
    raise AssertionError("server did not listen")


async def test_tcp_transport_serves_inline_completion(fake):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hapa_lsp", "--tcp", str(port)], env=server_env(fake),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        reader, writer = await _connect(port, proc)
        writer.write(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                             "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
        msg = await _read_message(reader)
        while msg.get("id") != 1:
            msg = await _read_message(reader)
        assert "inlineCompletionProvider" in msg["result"]["capabilities"]
        writer.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        writer.write(_frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///ws/t.py", "languageId": "python", "version": 1, "text": "def f(a, b):\n    \n"}}}))
        writer.write(_frame({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": "file:///ws/t.py"}, "position": {"line": 1, "character": 4},
            "context": {"triggerKind": 1}}}))
        while True:
            msg = await asyncio.wait_for(_read_message(reader), 10)
            if msg.get("id") == 2:
                break
        assert msg["result"]["items"][0]["insertText"] == "return a + b"
        writer.write(_frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
        writer.write(_frame({"jsonrpc": "2.0", "method": "exit"}))
        await writer.drain()
        writer.close()
    finally:
        proc.kill()
        proc.wait(5)
    # Nothing but the protocol on the socket: stdout of the process stays empty.
    assert proc.stdout is not None and proc.stdout.read() == b""


async def test_websocket_transport_answers_initialize(fake):
    from websockets.asyncio.client import connect

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hapa_lsp", "--ws", f"127.0.0.1:{port}"], env=server_env(fake),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                ws = await connect(f"ws://127.0.0.1:{port}")
                break
            except OSError:
                assert proc.poll() is None
                await asyncio.sleep(0.05)
        async with ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                      "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("id") == 1:
                    break
            assert msg["result"]["serverInfo"]["name"] == "hapa-lsp"
    finally:
        proc.kill()
        proc.wait(5)
