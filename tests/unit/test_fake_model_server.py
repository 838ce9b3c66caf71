"""Tests for the scripted fake model server used by the rest of the test suite."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.fakes import FakeModelServer, apply_stop, tokenize

pytestmark = pytest.mark.asyncio

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = "return a + b\n"


@pytest_asyncio.fixture
async def fake():
    """A started fake on the test's event loop."""
    async with FakeModelServer() as server:
        yield server


@pytest_asyncio.fixture
async def client(fake):
    """An httpx client pointed at the fake."""
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0) as c:
        yield c


async def _stream_lines(client: httpx.AsyncClient, path: str, body: dict) -> list[str]:
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        return [line async for line in response.aiter_lines() if line]


def _sse_payloads(lines: list[str]) -> list[str]:
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[len("data: "):] for line in lines]


# ------------------------------------------------------------------ helpers


async def test_tokenize_round_trips_and_splits_into_small_tokens():
    text = "def add(a, b):\n    return a + b\n"
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert len(tokens) > 5
    assert max(len(t.strip()) for t in tokens) <= 4


async def test_apply_stop_cuts_at_earliest_stop_string():
    assert apply_stop("foo\nbar END baz", ["END", "\n"]) == ("foo", True)
    assert apply_stop("foo", "x") == ("foo", False)
    assert apply_stop("foo", None) == ("foo", False)


# ------------------------------------------------------------ OpenAI routes


async def test_openai_completion_non_stream(fake, client):
    body = {"model": "m1", "prompt": "def add(a, b):\n    ", "suffix": "\n", "max_tokens": 64}
    response = await client.post("/v1/completions", json=body, headers={"Authorization": "Bearer sk-test"})
    assert response.status_code == 200
    assert response.headers["content-length"]
    data = response.json()
    assert data["object"] == "text_completion"
    assert data["model"] == "m1"
    assert data["choices"][0]["text"] == DEFAULT
    assert data["choices"][0]["finish_reason"] == "stop"
    usage = data["usage"]
    assert usage["completion_tokens"] == len(tokenize(DEFAULT))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    (record,) = fake.requests
    assert (record.method, record.path) == ("POST", "/v1/completions")
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.json["suffix"] == "\n"
    assert record.prompt == "def add(a, b):\n    " and record.suffix == "\n" and record.model == "m1"
    assert record.completed and not record.client_disconnected and not record.stream
    assert record.status == 200 and record.response_text == DEFAULT
    assert record.finished_at >= record.started_at


async def test_openai_completion_stream_sse_ends_with_done(fake, client):
    async with client.stream("POST", "/v1/completions", json={"prompt": "x", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        lines = [line async for line in response.aiter_lines() if line]
    payloads = _sse_payloads(lines)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == DEFAULT
    assert len(chunks) == len(tokenize(DEFAULT)) + 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == len(tokenize(DEFAULT))
    assert fake.requests[0].stream and fake.requests[0].completed


async def test_spec_sse_framing_spreads_events_over_lines_fields_and_chunks(fake, client):
    fake.configure(sse_framing="spec", sse_newline="\r\n")
    async with client.stream("POST", "/v1/completions", json={"prompt": "x", "stream": True}) as response:
        raw = b"".join([part async for part in response.aiter_raw()]).decode()
    events = raw.split("\r\n\r\n")
    assert events[-1] == "" and events[-2].endswith("data: [DONE]\r\ndata")
    first = events[0].split("\r\n")
    assert first[0].startswith(": ") and "ignoredfield" in first and "id: 1" in first
    data = [ln for ln in first if ln.startswith("data")]
    assert len(data) > 3 and any(ln.startswith("data:") and not ln.startswith("data: ") for ln in data)
    # The data lines joined with "\n" (a trailing bare "data" adds an empty line) are the event's JSON.
    joined = "\n".join(ln[5:].removeprefix(" ") if ln != "data" else "" for ln in data)
    assert json.loads(joined)["choices"][0]["text"] == tokenize(DEFAULT)[0]
    assert fake.requests[0].chunks_sent == 3 * len(events[:-1])


async def test_openai_chat_non_stream_and_stream(fake, client):
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    data = (await client.post("/v1/chat/completions", json=body)).json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": DEFAULT}
    assert fake.requests[0].prompt == "hi"

    payloads = _sse_payloads(await _stream_lines(client, "/v1/chat/completions", dict(body, stream=True)))
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == DEFAULT
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_models(fake, client):
    fake.models = ["a", "b"]
    data = (await client.get("/v1/models")).json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["a", "b"]


# ------------------------------------------------------------ Ollama routes


async def test_ollama_generate_non_stream(fake, client):
    body = {"model": "qwen", "prompt": "<PRE> x <SUF>", "raw": True, "stream": False}
    data = (await client.post("/api/generate", json=body)).json()
    assert data["model"] == "qwen"
    assert data["response"] == DEFAULT
    assert data["done"] is True and data["done_reason"] == "stop"
    assert data["eval_count"] == len(tokenize(DEFAULT))
    assert data["prompt_eval_count"] > 0
    assert fake.requests[0].json["raw"] is True and not fake.requests[0].stream


async def test_ollama_generate_streams_ndjson_by_default(fake, client):
    async with client.stream("POST", "/api/generate", json={"model": "qwen", "prompt": "x"}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert all(line["done"] is False for line in lines[:-1])
    assert "".join(line["response"] for line in lines[:-1]) == DEFAULT
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
    assert final["eval_count"] == len(lines) - 1
    assert fake.requests[0].stream


async def test_ollama_chat_non_stream_and_stream(fake, client):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    data = (await client.post("/api/chat", json=dict(body, stream=False))).json()
    assert data["message"] == {"role": "assistant", "content": DEFAULT}
    assert data["done"] is True

    lines = [json.loads(line) for line in await _stream_lines(client, "/api/chat", body)]
    assert "".join(line["message"]["content"] for line in lines) == DEFAULT
    assert lines[-1]["done"] is True and all(not line["done"] for line in lines[:-1])


async def test_ollama_tags_version_and_root(fake, client):
    fake.model = "codellama:7b"
    assert (await client.get("/api/tags")).json()["models"][0]["name"] == "codellama:7b"
    assert (await client.get("/api/version")).json() == {"version": "0.0.0-fake"}
    assert (await client.get("/")).text == "Ollama is running"
    assert (await client.get("/nope")).status_code == 404
    assert (await client.get("/api/generate")).status_code == 405
    assert fake.count() == 5 and fake.count("/api/tags") == 1


async def test_invalid_json_body_is_400(fake, client):
    response = await client.post("/api/generate", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "error" in response.json()
    assert fake.requests[0].json is None and fake.requests[0].body == b"{nope"


# ---------------------------------------------------------------- scripting


async def test_stop_strings_and_token_limits(fake, client):
    fake.queue("foo\nbar\nbaz", "foo\nbar\nbaz")
    data = (await client.post("/v1/completions", json={"prompt": "p", "stop": ["\n"]})).json()
    assert data["choices"][0]["text"] == "foo"
    data = (await client.post("/api/generate", json={"prompt": "p", "stream": False,
                                                     "options": {"stop": ["baz"]}})).json()
    assert data["response"] == "foo\nbar\n"

    data = (await client.post("/v1/completions", json={"prompt": "p", "max_tokens": 2})).json()
    assert data["choices"][0]["text"] == "".join(tokenize(DEFAULT)[:2])
    assert data["choices"][0]["finish_reason"] == "length"
    data = (await client.post("/api/generate", json={"prompt": "p", "stream": False,
                                                     "options": {"num_predict": 1}})).json()
    assert data["response"] == tokenize(DEFAULT)[0] and data["done_reason"] == "length"
    data = (await client.post("/api/generate", json={"prompt": "p", "stream": False,
                                                     "options": {"num_predict": -1}})).json()
    assert data["response"] == DEFAULT


async def test_script_and_queue(fake, client):
    fake.script(lambda record: record.prompt.upper())
    fake.queue("one-shot")

    async def generate(prompt: str) -> str:
        response = await client.post("/api/generate", json={"prompt": prompt, "stream": False})
        return response.json()["response"]

    assert await generate("abc") == "one-shot"
    assert await generate("abc") == "ABC"
    fake.script(None)
    fake.default_text = "changed"
    assert await generate("abc") == "changed"


async def test_script_exception_becomes_500(fake, client):
    fake.script(lambda record: 1 / 0)
    response = await client.post("/api/generate", json={"prompt": "p", "stream": False})
    assert response.status_code == 500
    assert "ZeroDivisionError" in response.json()["error"]


# -------------------------------------------------------------------- faults


async def test_refuse_then_restore_on_same_port(fake):
    port = fake.port
    fake.fault = "refuse"
    async with httpx.AsyncClient(base_url=fake.url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/api/version")
    fake.restore()
    assert fake.port == port and fake.fault is None
    async with httpx.AsyncClient(base_url=fake.url) as client:
        assert (await client.get("/api/version")).status_code == 200


async def test_refuse_drops_pooled_keep_alive_connections(fake, client):
    assert (await client.get("/api/version")).status_code == 200
    fake.fault = "refuse"
    await asyncio.sleep(0.05)  # let the server's FIN reach the pooled connection
    with pytest.raises(httpx.ConnectError):
        await client.get("/api/version")
    fake.restore()
    assert (await client.get("/api/version")).status_code == 200


async def test_timeout_fault_hangs_until_client_gives_up(fake):
    fake.fault = "timeout"
    async with httpx.AsyncClient(base_url=fake.url, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/generate", json={"prompt": "p"})
    record = await fake.wait_for_disconnect(1.0)
    assert record.fault == "timeout" and not record.completed and record.status is None


@pytest.mark.parametrize("fault", ["401", "403", "404", "500"])
async def test_status_faults_ollama_style(fake, client, fault):
    fake.fail_next(fault)
    response = await client.post("/api/generate", json={"model": "ghost", "prompt": "p", "stream": False})
    assert response.status_code == int(fault)
    error = response.json()["error"]
    assert isinstance(error, str) and error
    if fault == "404":
        assert error == "model 'ghost' not found, try pulling it first"
    # One-shot: the next request succeeds.
    assert (await client.post("/api/generate", json={"prompt": "p", "stream": False})).status_code == 200


@pytest.mark.parametrize("fault", ["401", "403", "404", "500"])
async def test_status_faults_openai_style(fake, client, fault):
    fake.fault = fault
    response = await client.post("/v1/completions", json={"model": "ghost", "prompt": "p", "stream": True})
    assert response.status_code == int(fault)
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    if fault == "404":
        assert error["code"] == "model_not_found" and "ghost" in error["message"]
    assert fake.requests[0].fault == fault and fake.requests[0].completed


async def test_429_carries_retry_after(fake, client):
    fake.configure(retry_after=7)
    fake.fail_next(429, times=2)
    for path in ("/api/generate", "/v1/completions"):
        response = await client.post(path, json={"prompt": "p", "stream": False})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
    assert (await client.post("/v1/completions", json={"prompt": "p"})).status_code == 200


async def test_fail_next_path_filter(fake, client):
    fake.fail_next("500", path="/api/generate")
    assert (await client.get("/api/tags")).status_code == 200
    assert (await client.post("/api/generate", json={"prompt": "p", "stream": False})).status_code == 500
    assert (await client.post("/api/generate", json={"prompt": "p", "stream": False})).status_code == 200


async def test_malformed_fault(fake, client):
    fake.fault = "malformed"
    response = await client.post("/v1/completions", json={"prompt": "p"})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()

    payloads = _sse_payloads(await _stream_lines(client, "/v1/completions", {"prompt": "p", "stream": True}))
    with pytest.raises(json.JSONDecodeError):
        for payload in payloads:
            json.loads(payload)

    lines = await _stream_lines(client, "/api/generate", {"prompt": "p"})
    with pytest.raises(json.JSONDecodeError):
        for line in lines:
            json.loads(line)


async def test_cut_fault_breaks_stream_and_plain_body(fake, client):
    fake.fault = "cut"
    seen = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/api/generate", json={"prompt": "p"}) as response:
            async for line in response.aiter_lines():
                seen.append(line)
    assert len(seen) >= 1
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/completions", json={"prompt": "p"})
    first, second = fake.requests
    assert first.chunks_sent == 2 and not first.completed and not first.client_disconnected
    assert not second.completed


async def test_unknown_fault_rejected(fake):
    with pytest.raises(ValueError):
        fake.fault = "explode"
    with pytest.raises(ValueError):
        fake.fail_next("refuse")


# ------------------------------------------- disconnects, latency, keep-alive


async def test_client_closing_stream_is_detected(fake, client):
    fake.queue("word " * 40)
    fake.token_delay = 0.02
    async with client.stream("POST", "/api/generate", json={"prompt": "p"}) as response:
        async for _line in response.aiter_lines():
            break
    record = await fake.wait_for_disconnect(1.0)
    assert record.client_disconnected and not record.completed
    assert 1 <= record.chunks_sent < 40


async def test_request_visible_in_flight_and_cancel_detected(fake, client):
    fake.latency = 2.0
    task = asyncio.create_task(client.post("/api/generate", json={"prompt": "p", "stream": False}))
    (record,) = await fake.wait_for_requests(1, timeout=1.0)
    assert record.json["prompt"] == "p" and not record.done
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake.wait_for_disconnect(1.0) is record
    assert not record.completed


async def test_latency_and_token_delay_are_honoured(fake, client):
    fake.configure(latency=0.15)
    start = time.monotonic()
    assert (await client.get("/api/version")).status_code == 200
    assert time.monotonic() - start >= 0.14

    fake.configure(latency=0.0, token_delay=0.03)
    fake.queue("a b c d")  # 4 tokens + final line = 5 chunks -> >= 4 delays
    start = time.monotonic()
    await _stream_lines(client, "/api/generate", {"prompt": "p"})
    assert time.monotonic() - start >= 0.11


async def test_keep_alive_reuses_one_connection(fake, client):
    await client.post("/v1/completions", json={"prompt": "p"})
    await _stream_lines(client, "/v1/completions", {"prompt": "p", "stream": True})
    await client.get("/v1/models")
    assert fake.connections_accepted == 1
    assert len({r.connection_id for r in fake.requests}) == 1
    fake.reset()
    assert fake.requests == [] and fake.connections_accepted == 0


async def test_chunked_request_body(fake, client):
    async def body():
        yield b'{"prompt": '
        yield b'"chunked", "stream": false}'

    response = await client.post("/api/generate", content=body())
    assert response.status_code == 200
    assert fake.requests[0].headers["transfer-encoding"] == "chunked"
    assert fake.requests[0].json == {"prompt": "chunked", "stream": False}


async def test_garbage_and_pipelined_requests_over_raw_socket(fake):
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    writer.write(b"\x00\xff garbage\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 2)).startswith(b"HTTP/1.1 400 ")
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    one = b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(one + one.replace(b"Host: x", b"Host: x\r\nConnection: close"))
    data = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2 and data.count(b"0.0.0-fake") == 2

    # Half a request followed by a hang-up must not break the server either.
    _reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    writer.write(b"POST /api/generate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    writer.close()
    async with httpx.AsyncClient(base_url=fake.url) as client:
        assert (await client.get("/api/version")).status_code == 200


async def test_stop_is_prompt_with_hung_requests():
    server = await FakeModelServer(fault="timeout").start()
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
        task = asyncio.create_task(client.post("/api/generate", json={"prompt": "p"}))
        await server.wait_for_requests(1, timeout=1.0)
        start = time.monotonic()
        await server.stop()
        assert time.monotonic() - start < 0.5
        with pytest.raises(httpx.TransportError):
            await task


# --------------------------------------------------- thread mode and the CLI


def _thread_mode_roundtrip() -> None:
    with FakeModelServer.run_in_thread(default_text="threaded") as fake:
        with httpx.Client(base_url=fake.url, timeout=2.0) as client:
            data = client.post("/api/generate", json={"prompt": "p", "stream": False}).json()
            assert data["response"] == "threaded"
            fake.fault = "refuse"
        with httpx.Client(base_url=fake.url, timeout=2.0) as client:
            with pytest.raises(httpx.ConnectError):
                client.get("/api/version")
            fake.restore()
            assert client.get("/api/version").status_code == 200
        assert [r.path for r in fake.wait_for_requests_sync(2, timeout=1.0)] == ["/api/generate", "/api/version"]
    assert not fake._thread.is_alive()


async def test_thread_mode():
    await asyncio.to_thread(_thread_mode_roundtrip)


def _cli_roundtrip() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.model_server", "--port", "0", "--latency", "0.15", "--response", "hi"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("PORT="), (first, proc.stderr.read() if proc.poll() is not None else "")
        port = int(first.removeprefix("PORT="))
        start = time.monotonic()
        response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "p"}, timeout=5.0)
        assert time.monotonic() - start >= 0.14
        assert response.json()["choices"][0]["text"] == "hi"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert "Traceback" not in stderr and "RuntimeWarning" not in stderr, stderr


async def test_cli_prints_port_and_serves():
    await asyncio.to_thread(_cli_roundtrip)


async def test_port_is_free_after_stop():
    server = await FakeModelServer().start()
    port = server.port
    await server.stop()
    with socket.socket() as probe:
        with pytest.raises(OSError):
            probe.connect(("127.0.0.1", port))
