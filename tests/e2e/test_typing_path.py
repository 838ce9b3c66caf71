"""The typing path: cancellation aborts upstream, debounce + supersede, cache hits and type-through reuse."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client, type_text

URI = "file:///ws/t.py"


async def stats(client) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.stats"))


async def test_cancel_request_aborts_the_upstream_request(lsp, fake):
    fake.latency = 5.0
    open_doc(lsp, URI, "def f(x):\n    \n")
    fut = lsp.protocol.send_request("textDocument/inlineCompletion", inline_params(URI, 1, 4, invoked=True))
    await fake.wait_for_requests(1)
    lsp.protocol.notify("$/cancelRequest", types.CancelParams(id=_last_request_id(lsp)))
    record = await fake.wait_for_disconnect(timeout=2.0)
    assert record.path == "/api/generate" and not record.completed
    # The editor gets the standard RequestCancelled answer, not a suggestion.
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 2.0)
    assert err.value.code == types.LSPErrorCodes.RequestCancelled
    # The server keeps serving.
    fake.latency = 0.0
    fake.queue("return x")
    result = await lsp.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
    assert result.items[0].insert_text == "return x"


def _last_request_id(client):
    return max((k for k in client.protocol._request_futures), key=lambda k: str(k))


async def test_newer_keystroke_aborts_the_upstream_request(lsp, fake):
    fake.latency = 5.0
    open_doc(lsp, URI, "def f(x):\n    r\n")
    first = asyncio.ensure_future(lsp.text_document_inline_completion_async(inline_params(URI, 1, 5)))
    await fake.wait_for_requests(1)
    type_text(lsp, URI, 1, 5, "e", version=2)
    record = await fake.wait_for_disconnect(timeout=2.0)
    assert not record.completed
    assert await asyncio.wait_for(first, 2.0) is None  # superseded: no ghost text for the old text


async def test_rapid_typing_is_debounced_and_superseded(fake, tmp_path):
    fake.latency = 0.15
    fake.default_text = "  # only the positive ones"
    client = await start_client(fake, root=tmp_path, env={"HAPA_COMPLETION_DEBOUNCE_MS": "60"})
    try:
        line = "    total = sum(x for x in values if x > 0)"
        open_doc(client, URI, "def f(values):\n\n")
        pending = []
        for i, ch in enumerate(line):
            type_text(client, URI, 1, i, ch, version=i + 2)
            pending.append(asyncio.ensure_future(
                client.text_document_inline_completion_async(inline_params(URI, 1, i + 1))))
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*pending)
        keystrokes = len(line)
        calls = fake.count("/api/generate")
        assert calls <= keystrokes // 4, f"{calls} upstream calls for {keystrokes} keystrokes"
        # The last request (after the typist stopped) gets its answer.
        assert results[-1] is not None and results[-1].items[0].insert_text == "  # only the positive ones"
        assert all(r is None for r in results[:-3])
    finally:
        await stop_client(client)


async def test_identical_context_is_served_from_cache(lsp, fake):
    open_doc(lsp, URI, "def add(a, b):\n    \n")
    first = await lsp.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert first.items[0].insert_text == "return a + b"
    calls = fake.count()
    again = await lsp.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert again.items[0].insert_text == "return a + b"
    assert fake.count() == calls
    assert (await stats(lsp))["cache_hits"] == 1


async def test_typing_the_suggestion_serves_its_rest_without_a_model_call(lsp, fake):
    fake.queue("result = compute(a, b)\n    return result")
    open_doc(lsp, URI, "def add(a, b):\n    \n")
    first = await lsp.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert first.items[0].insert_text == "result = compute(a, b)\n    return result"
    calls = fake.count()
    typed = "result = comp"
    for i, ch in enumerate(typed):
        type_text(lsp, URI, 1, 4 + i, ch, version=i + 2)
        res = await lsp.text_document_inline_completion_async(inline_params(URI, 1, 5 + i))
        assert res.items[0].insert_text == "result = compute(a, b)\n    return result"[i + 1:]
    assert fake.count() == calls
    # Typing something else leaves the suggestion: the model is asked again.
    type_text(lsp, URI, 1, 4 + len(typed), "X", version=99)
    fake.queue("ute_other()")
    res = await lsp.text_document_inline_completion_async(inline_params(URI, 1, 5 + len(typed)))
    assert res.items[0].insert_text == "ute_other()"
    assert fake.count() == calls + 1


async def test_edits_above_the_cursor_keep_the_prompt_exact(lsp, fake):
    open_doc(lsp, URI, "import os\n\ndef f(x):\n    \n")
    await lsp.text_document_inline_completion_async(inline_params(URI, 3, 4, invoked=True))
    # A line inserted at the top moves the cursor's line down by one.
    type_text(lsp, URI, 0, 0, "import sys\n", version=2)
    fake.queue("return x")
    res = await lsp.text_document_inline_completion_async(inline_params(URI, 4, 4, invoked=True))
    assert res.items[0].range.start == types.Position(4, 4)
    assert fake.requests[-1].json["prompt"].startswith("<|fim_prefix|>import sys\nimport os\n\ndef f(x):\n    <|fim_suffix|>") or \
        "import sys\nimport os\n\ndef f(x):\n    <|fim_suffix|>" in fake.requests[-1].json["prompt"]
