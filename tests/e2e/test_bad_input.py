"""Bad input: malformed JSON-RPC, unknown methods, positions past the end, huge and odd documents."""

from __future__ import annotations

import asyncio
import time

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import inline_params, open_doc

URI = "file:///ws/b.py"


def _raw(client, payload: bytes) -> None:
    """Write bytes straight onto the server's stdin, bypassing the client's serializer."""
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(payload) + payload)


async def _still_serving(client, fake) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri="file:///ws/ok.py", language_id="python", version=1, text="def ok(a, b):\n    \n")))
    res = await client.text_document_inline_completion_async(inline_params("file:///ws/ok.py", 1, 4, invoked=True))
    assert res.items[0].insert_text == "return a + b"


async def test_malformed_messages_do_not_stop_the_server(lsp, fake):
    _raw(lsp, b"{this is not json")
    _raw(lsp, b"\xff\xfe\x00binary junk\x00")
    _raw(lsp, b'{"jsonrpc": "2.0", "id": 77, "method": "textDocument/completion", "params": {"position": "x"}}')
    await asyncio.sleep(0.3)
    await _still_serving(lsp, fake)
    errors = [m.message for m in lsp.messages if "E4001" in m.message]
    assert errors and all("INC-" in e for e in errors)
    assert len(errors) <= 2, "garbage must not flood the user with messages"


async def test_request_with_wrong_params_gets_an_e4001_answer(lsp, fake):
    import concurrent.futures

    fut: concurrent.futures.Future = concurrent.futures.Future()
    lsp.protocol._request_futures["bad-params-1"] = fut
    _raw(lsp, b'{"jsonrpc": "2.0", "id": "bad-params-1", "method": "textDocument/inlineCompletion", '
              b'"params": {"textDocument": {"uri": "file:///ws/b.py"}, "position": {"line": "one"}}}')
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 5)
    assert err.value.code == types.ErrorCodes.InvalidParams
    assert err.value.data["code"] == "E4001" and err.value.data["incident_id"].startswith("INC-")


async def test_unknown_method_is_answered_and_serving_continues(lsp, fake):
    fut = lsp.protocol.send_request("hapa/noSuchThing", {})
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 5)
    assert err.value.code == types.ErrorCodes.MethodNotFound
    lsp.protocol.notify("hapa/noSuchNotification", {})
    await _still_serving(lsp, fake)


async def test_positions_past_the_end_are_clamped(lsp, fake):
    open_doc(lsp, URI, "def f(a, b):\n    ")
    res = await lsp.text_document_inline_completion_async(inline_params(URI, 500, 900, invoked=True))
    assert res.items[0].insert_text == "return a + b"
    assert res.items[0].range.start == types.Position(1, 4)
    res = await lsp.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=types.Position(99, 99)))
    assert isinstance(res, types.CompletionList)


async def test_document_that_was_never_opened(lsp, fake):
    assert await lsp.text_document_inline_completion_async(inline_params("file:///nowhere.py", 0, 0)) is None
    with pytest.raises(JsonRpcException) as err:
        await lsp.text_document_inline_completion_async(inline_params("file:///nowhere.py", 0, 0, invoked=True))
    assert err.value.data["code"] == "E4006"


async def test_five_megabyte_and_odd_documents(lsp, fake):
    big = ("x = 1  # padding line for a very large generated file\n" * 100_000) + "def f(a, b):\n    \n"
    assert len(big) > 5_000_000
    open_doc(lsp, "file:///ws/big.py", big)
    t0 = time.perf_counter()
    res = await lsp.text_document_inline_completion_async(inline_params("file:///ws/big.py", 100_001, 4,
                                                                        invoked=True))
    assert res.items[0].insert_text == "return a + b"
    assert time.perf_counter() - t0 < 5
    # The prompt is a window around the cursor, not the whole file.
    assert len(fake.requests[-1].json["prompt"]) < 20_000
    # Lone surrogates and control characters (legal in JSON strings) do not break the model call.
    open_doc(lsp, "file:///ws/odd.py", "s = '\udc80\x00'\ndef f(a, b):\n    \n")
    res = await lsp.text_document_inline_completion_async(inline_params("file:///ws/odd.py", 2, 4, invoked=True))
    assert res.items[0].insert_text == "return a + b"
    res = await lsp.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier("file:///ws/odd.py"), position=types.Position(2, 4)))
    assert isinstance(res, types.CompletionList)
