"""Settings: env < initializationOptions < workspace/configuration, re-read on change; bad values reported and defaulted."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client

URI = "file:///ws/c.py"


async def test_invalid_settings_are_reported_once_and_defaulted(fake, tmp_path):
    client = await start_client(fake, root=tmp_path, init_options={
        "backend": {"maxTokens": -5, "kind": "sideways"}, "completion": {"debounceMs": "soon"}})
    try:
        problems = [m.message for m in client.messages if "E4009" in m.message]
        assert len(problems) == 3
        assert any("hapa.backend.maxTokens" in p and ">= 1" in p for p in problems)
        assert any("hapa.backend.kind" in p and "ollama, openai" in p for p in problems)
        assert any("hapa.completion.debounceMs" in p for p in problems)
        assert all("INC-" in p for p in problems)
        # The server still works with the defaults (Ollama dialect, 128 tokens).
        open_doc(client, URI, "def f(x):\n    \n")
        res = await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
        assert res.items[0].insert_text == "return a + b"
        assert fake.requests[-1].path == "/api/generate"
        assert fake.requests[-1].json["options"]["num_predict"] == 128
    finally:
        await stop_client(client)


async def test_layers_merge_and_workspace_configuration_is_reread(fake, tmp_path):
    client = await start_client(
        fake, root=tmp_path,
        env={"HAPA_BACKEND_MAX_TOKENS": "11", "AI_MODEL_ENDPOINT": "http://127.0.0.1:9"},
        init_options={"backend": {"maxTokens": 22, "endpoint": fake.url}},
        configuration={"hapa": {"backend": {"maxTokens": 33}}})
    try:
        open_doc(client, URI, "def f(x):\n    \n")
        await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
        assert fake.requests[-1].json["options"]["num_predict"] == 33
        client.set_configuration({"hapa": {"backend": {"maxTokens": 44, "completionModel": "starcoder2:3b"}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        for _ in range(100):
            await asyncio.sleep(0.02)
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text="def g(x):\n    \n")]))
            await client.text_document_inline_completion_async(inline_params(URI, 1, 4, invoked=True))
            if fake.requests[-1].json["options"]["num_predict"] == 44:
                break
        req = fake.requests[-1].json
        assert req["options"]["num_predict"] == 44
        assert req["model"] == "starcoder2:3b" and req["prompt"].startswith("<fim_prefix>")
    finally:
        await stop_client(client)
