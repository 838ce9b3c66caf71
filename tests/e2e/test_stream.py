"""A broken byte stream on stdio: the server resynchronises, answers what it can, and keeps serving.

These tests write bytes straight onto a real server's stdin (no client library that would frame them
properly) and read its stdout frame by frame.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import server_env

INIT_PARAMS = {"processId": None, "rootUri": None, "capabilities": {}}
pytestmark = pytest.mark.timeout(20)


def frame(obj: Any) -> bytes:
    """One correctly framed message."""
    return frame_bytes(json.dumps(obj).encode())


def frame_bytes(body: bytes) -> bytes:
    """A correct header in front of any bytes."""
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def request(msg_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def command(msg_id: Any, name: str, *args: Any) -> dict[str, Any]:
    return request(msg_id, "workspace/executeCommand", {"command": name, "arguments": list(args)})


class RawServer:
    """``python -m hapa_lsp`` on pipes; every frame it writes is kept in ``messages``."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path):
        self.proc = proc
        self.stderr = stderr
        self.messages: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, fake: Any, tmp_path: Path, env: dict[str, str] | None = None) -> RawServer:
        stderr = tmp_path / "server-stderr.log"
        with open(stderr, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hapa_lsp", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, env=server_env(fake, {"HAPA_STORAGE_PATH": str(tmp_path / "hapa.db"), **(env or {})}))
        return cls(proc, stderr)

    async def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = await out.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line == b"\r\n":
                    break
            assert length is not None, "the server wrote a frame without Content-Length"
            self.messages.append(json.loads(await out.readexactly(length)))
            self._arrived.set()

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def send(self, obj: Any) -> None:
        await self.write(frame(obj))

    def answers(self, msg_id: Any) -> list[dict[str, Any]]:
        """The responses with this id (``None``: those with "id": null, as JSON-RPC wants when it is unknown)."""
        return [m for m in self.messages if "method" not in m and "id" in m and m["id"] == msg_id]

    async def answer(self, msg_id: Any, timeout: float = 8.0) -> dict[str, Any]:
        """The response to ``msg_id`` (fails the test when none comes within ``timeout``)."""
        async def wait() -> dict[str, Any]:
            while True:
                found = self.answers(msg_id)
                if found:
                    return found[0]
                self._arrived.clear()
                await self._arrived.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no answer to request {msg_id!r} within {timeout} s; the server wrote "
                                 f"{self.messages!r}; stderr tail: {self.log()[-2000:]}") from None

    async def initialize(self, msg_id: Any = "init", *, initialized: bool = True) -> dict[str, Any]:
        """initialize, and unless told otherwise initialized (settings are read then; incidents stored from then)."""
        await self.send(request(msg_id, "initialize", INIT_PARAMS))
        res = await self.answer(msg_id)
        assert res["result"]["serverInfo"]["name"] == "hapa-lsp", res
        if initialized:
            await self.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        return res

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def assert_no_traceback(self) -> None:
        for m in self.messages:
            text = json.dumps(m).lower()
            assert "traceback" not in text and 'file "' not in text, m

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def raw(fake, tmp_path):
    server = await RawServer.start(fake, tmp_path)
    try:
        yield server
    finally:
        await server.close()


# ---- 1. framing: wrong Content-Length, no header, junk without CRLF ------------------------------------------------
def _short(msg: dict) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % (len(body) - 10) + body


def _long(msg: dict) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % (len(body) + 10) + body


def _headerless(msg: dict) -> bytes:
    return json.dumps(msg).encode()


def _junk(_msg: dict) -> bytes:
    return b"\x00\xff\xfe\x13binary junk \x89PNG\x1a\x00 no line end"


@pytest.mark.parametrize("broken", [_short, _long, _headerless, _junk], ids=["short", "long", "headerless", "junk"])
async def test_a_broken_frame_is_skipped_and_the_next_request_answered(raw, broken):
    # Before initialize (the editor's first message may be the broken one) ...
    await raw.write(broken(command(1, "hapa.stats")))
    await raw.initialize("init")
    # ... and in the middle of a session.
    await raw.write(broken(command(2, "hapa.stats")))
    await raw.send(command(3, "hapa.stats"))
    res = await raw.answer(3)
    assert "status" in res["result"], res
    # The broken requests were answered at most with an error, never twice, never with a traceback.
    for msg_id in (1, 2):
        got = raw.answers(msg_id)
        assert len(got) <= 1 and all("error" in m or "result" in m for m in got), got
    raw.assert_no_traceback()
    log = raw.log()
    assert "E4001" in log and "INC-" in log, "a stream violation is logged with its catalog code and incident"


# ---- 2. a declared length over hapa.server.maxMessageBytes -------------------------------------------------------
def _peak_rss(pid: int) -> int:
    """The process's resident-set high-water mark in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for the memory check")
async def test_an_oversized_message_is_skipped_without_being_buffered(fake, tmp_path):
    cap = 1 << 20
    server = await RawServer.start(fake, tmp_path, env={"HAPA_SERVER_MAX_MESSAGE_BYTES": str(cap)})
    try:
        # A length no client could mean, followed at once by a real request: the real one is answered.
        await server.write(b"Content-Length: 1000000000000\r\n\r\n")
        # Not initialized: its warm-up (imports, the sidecar) would grow the memory measured below.
        await server.initialize(initialized=False)
        await server.send(command(1, "hapa.stats"))  # everything the next request needs is imported now
        await server.answer(1)
        before = _peak_rss(server.proc.pid)
        # A real 40 MB request over the (lowered) cap: read and thrown away in chunks, answered with E4001.
        await server.send(command(2, "hapa.stats", {"padding": "x" * (40 << 20)}))
        res = await server.answer(2, timeout=15)
        assert res["error"]["code"] == -32600, res
        assert res["error"]["data"]["code"] == "E4001" and res["error"]["data"]["incident_id"].startswith("INC-")
        assert str(cap) in res["error"]["message"], res
        grown = _peak_rss(server.proc.pid) - before
        assert grown < 16 << 20, f"the server's peak memory grew by {grown >> 20} MB while skipping 40 MB"
        await server.send(command(3, "hapa.stats"))
        assert "status" in (await server.answer(3))["result"]
        server.assert_no_traceback()
    finally:
        await server.close()


# ---- 3. nesting too deep, batches ----------------------------------------------------------------------------------
async def test_a_request_nested_ten_thousand_deep_is_answered(raw):
    await raw.initialize()
    deep = b"[" * 10_000 + b"]" * 10_000
    # The id comes before the nesting: it is recovered and answered.
    await raw.write(frame_bytes(b'{"jsonrpc":"2.0","id":1,"method":"textDocument/hover","params":' + deep + b"}"))
    res = await raw.answer(1)
    assert res["error"]["code"] == -32600 and res["error"]["data"]["code"] == "E4001", res
    # The id comes after it: it cannot be read, the answer has id null.
    await raw.write(frame_bytes(b'{"params":' + deep + b',"jsonrpc":"2.0","id":2,"method":"textDocument/hover"}'))
    res = await raw.answer(None)
    assert res["error"]["code"] == -32600 and res["error"]["data"]["code"] == "E4001", res
    await raw.send(command(3, "hapa.stats"))
    assert "status" in (await raw.answer(3))["result"]
    raw.assert_no_traceback()


async def test_a_batch_is_an_invalid_request_without_popups(raw):
    await raw.initialize()
    for i in range(5):
        await raw.send([command(10 + i, "hapa.stats"), command(20 + i, "hapa.stats")])
    await raw.send(command(3, "hapa.stats"))
    assert "status" in (await raw.answer(3))["result"]
    nulls = raw.answers(None)
    assert len(nulls) == 5, raw.messages
    assert all(m["error"]["code"] == -32600 and m["error"]["data"]["code"] == "E4001" for m in nulls), nulls
    assert not [m for m in raw.messages if m.get("method") == "window/showMessage"], raw.messages
    # One incident for the burst, and it is stored.
    ids = {m["error"]["data"]["incident_id"] for m in nulls}
    assert len(ids) == 1, ids
    await raw.send(command(4, "hapa.errors.get", {"incident_id": ids.pop()}))
    assert (await raw.answer(4))["result"]["error_code"] == "E4001"
    raw.assert_no_traceback()


# ---- 4. text that is not valid Unicode (lone surrogates) -----------------------------------------------------------
async def test_a_lone_surrogate_in_a_command_argument_is_rejected_with_e4001(raw):
    await raw.initialize()
    # json.dumps writes the lone surrogate as the escape \ud800, as a client would.
    await raw.send(command(1, "hapa.generateCode", {"user_question": "add \ud800 two numbers"}))
    res = await raw.answer(1)
    data = res["error"]["data"]
    assert res["error"]["code"] == -32602 and data["code"] == "E4001" and data["field"] == "user_question", res
    # An unknown field whose very name is not valid Unicode: named (escaped) in the answer.
    await raw.send(command(2, "hapa.generateCode", {"\udc80bad": 1, "user_question": "add two numbers"}))
    res2 = await raw.answer(2)
    assert res2["error"]["data"]["code"] == "E4001" and res2["error"]["data"]["field"] == "\\udc80bad", res2
    # Both incidents are stored, so the ids the user was given can be looked up.
    for n, r in ((3, res), (4, res2)):
        await raw.send(command(n, "hapa.errors.get", {"incident_id": r["error"]["data"]["incident_id"]}))
        got = await raw.answer(n)
        assert got.get("result", {}).get("error_code") == "E4001", got
    # Nothing of it reached the history, and the next generation works.
    await raw.send(command(5, "hapa.generateCode", {"user_question": "add two numbers", "stream": False}))
    ok = await raw.answer(5, timeout=15)
    assert ok["result"]["status"] == "success", ok
    await raw.send(command(6, "hapa.history.list", {}))
    history = (await raw.answer(6))["result"]
    assert [row["question"] for row in history["items"]] == ["add two numbers"], history
    raw.assert_no_traceback()
