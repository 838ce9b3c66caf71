"""Each upstream fault reaches the user as its catalog code with an incident id, and the server keeps serving."""

from __future__ import annotations

import asyncio
import re

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client

URI = "file:///ws/f.py"
INCIDENT = re.compile(r"INC-\d{8}-[0-9A-F]{8}")


@pytest.fixture
async def client(fake, tmp_path):
    c = await start_client(fake, root=tmp_path, env={"HAPA_BACKEND_INLINE_TIMEOUT": "0.5",
                                                     "HAPA_COMPLETION_DEBOUNCE_MS": "0",
                                                     "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0"})
    try:
        yield c
    finally:
        await stop_client(c)


FAULTS = [("refuse", "E5005"), ("timeout", "E5001"), ("401", "E5006"), ("403", "E5006"), ("404", "E5010"),
          ("429", "E5007"), ("500", "E5009"), ("malformed", "E5008"), ("cut", "E5008")]


async def test_each_fault_maps_to_its_code_and_the_server_recovers(client, fake):
    open_doc(client, URI, "def f(x):\n    \n")
    for n, (fault, code) in enumerate(FAULTS):
        # A different line each time, so no answer comes from the cache.
        text = f"def f{n}(x):\n    \n"
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=n + 2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        fake.fault = fault
        if fault == "refuse":
            await asyncio.sleep(0.05)
        with pytest.raises(JsonRpcException) as err:
            await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
        data = err.value.data
        assert data["code"] == code, (fault, data)
        assert INCIDENT.fullmatch(data["incident_id"])
        assert data["remedy"] and code in err.value.message and data["incident_id"] in err.value.message
        if fault == "429":
            assert data["retry_after"] == pytest.approx(fake.retry_after, abs=0.1)
            await asyncio.sleep(fake.retry_after)  # the server honours Retry-After before calling again
        fake.restore()
        ok = await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
        assert ok.items[0].insert_text == "return a + b", fault


async def test_background_failures_show_one_message_and_a_status(client, fake):
    fake.fault = "500"
    open_doc(client, URI, "def f(x):\n    \n")
    for i in range(3):  # fewer than the circuit breaker's threshold, so recovery is immediate
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=i + 2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=f"def f{i}(x):\n    \n")]))
        # Automatic (typing) requests fail quietly: no error answer per keystroke.
        assert await client.text_document_inline_completion_async(inline_params(URI, 1, 4)) is None
    shown = [m for m in client.messages if "E5009" in m.message]
    assert len(shown) == 1 and INCIDENT.search(shown[0].message)
    assert any(s.state in ("warning", "error") and s.code == "E5009" for s in client.statuses)
    fake.restore()
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=50),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="def g(x):\n    \n")]))
    ok = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert ok.items[0].insert_text == "return a + b"
    assert client.statuses[-1].state == "ok"


async def test_garbage_model_output_is_not_shown(client, fake):
    fake.queue("\x00\x01\x02 \n\n   \n")
    open_doc(client, URI, "def f(x):\n    \n")
    assert await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True)) is None
    fake.queue("x = 1\nx = 1\nx = 1\nx = 1\nx = 1\nx = 1")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=3),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="def g(x):\n    \n")]))
    res = await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
    assert res.items[0].insert_text == "x = 1"  # the repetition loop is cut


async def test_a_request_still_running_at_its_deadline_is_answered_with_a_code(fake, tmp_path):
    """The last-resort guarantee: whatever hangs inside, the editor gets an answer (E5004, an incident id) once
    hapa.resilience.requestDeadline has passed, and the server keeps serving."""
    fake.latency = 60.0
    client = await start_client(fake, root=tmp_path, env={"HAPA_RESILIENCE_REQUEST_DEADLINE": "2",
                                                          "HAPA_BACKEND_REQUEST_TIMEOUT": "120"})
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
                command="hapa.generateCode", arguments=[{"user_question": "a slow one", "stream": False}])), 20)
        assert loop.time() - t0 < 10
        assert info.value.data["code"] == "E5004" and INCIDENT.search(info.value.data["incident_id"])
        assert "no answer within 2 s" in info.value.message
        fake.latency = 0.0
        health = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.health"))
        assert health["status"] in ("healthy", "degraded", "ok")
    finally:
        await stop_client(client)
