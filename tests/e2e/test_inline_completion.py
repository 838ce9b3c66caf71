"""textDocument/inlineCompletion against both model dialects, with what the model server received."""

from __future__ import annotations

import pytest
from lsprotocol import types

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client

SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


async def test_inline_completion_ollama_dialect(lsp, fake):
    fake.queue("return a + b\n")
    open_doc(lsp, "file:///ws/calc.py", SOURCE)
    result = await lsp.text_document_inline_completion_async(inline_params("file:///ws/calc.py", 1, 4))
    assert result is not None
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    assert [i.insert_text for i in items] == ["return a + b"]
    assert items[0].range == types.Range(types.Position(1, 4), types.Position(1, 4))
    assert items[0].command is not None and items[0].command.command == "hapa.didAcceptCompletion"
    req = fake.requests[-1]
    assert req.path == "/api/generate"
    assert req.json["model"] == "qwen2.5-coder:1.5b-base"
    assert req.json["raw"] is True
    # Qwen2.5-Coder FIM template with the prefix and suffix around the cursor.
    assert req.json["prompt"] == ("<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n"
                                  "<|fim_middle|>")
    assert "<|endoftext|>" in req.json["options"]["stop"]


@pytest.mark.parametrize("model,prefix_token", [
    ("bigcode/starcoder2-3b", "<fim_prefix>"),
    ("deepseek-coder-1.3b-base", "<｜fim▁begin｜>"),
    ("codellama-7b-code", "<PRE> "),
])
async def test_inline_completion_openai_dialect(fake, tmp_path, model, prefix_token):
    client = await start_client(fake, root=tmp_path, env={
        "HAPA_BACKEND_KIND": "openai", "HAPA_BACKEND_COMPLETION_MODEL": model, "HAPA_BACKEND_API_KEY": "sk-test-secret-123",
        "HAPA_COMPLETION_DEBOUNCE_MS": "0", "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0"})
    try:
        fake.queue("return a + b")
        open_doc(client, "file:///ws/calc.py", SOURCE)
        result = await client.text_document_inline_completion_async(inline_params("file:///ws/calc.py", 1, 4))
        assert result is not None and result.items[0].insert_text == "return a + b"
        req = fake.requests[-1]
        assert req.path == "/v1/completions"
        assert req.json["stream"] is True
        assert req.json["prompt"].startswith(prefix_token + "def add(a, b):")
        assert req.headers["authorization"] == "Bearer sk-test-secret-123"
    finally:
        await stop_client(client)


async def test_chat_only_model_gets_hole_filling_chat_prompt(fake, tmp_path):
    client = await start_client(fake, root=tmp_path, env={
        "HAPA_BACKEND_KIND": "openai", "HAPA_BACKEND_COMPLETION_MODEL": "gpt-4o-mini",
        "HAPA_COMPLETION_DEBOUNCE_MS": "0", "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0"})
    try:
        fake.queue("```python\nreturn a + b\n```")
        open_doc(client, "file:///ws/calc.py", SOURCE)
        result = await client.text_document_inline_completion_async(inline_params("file:///ws/calc.py", 1, 4))
        assert result is not None and result.items[0].insert_text == "return a + b"
        req = fake.requests[-1]
        assert req.path == "/v1/chat/completions"
        assert "<FILL_HERE>" in req.messages[-1]["content"]
    finally:
        await stop_client(client)


async def test_any_language_gets_prefix_suffix_completion(lsp, fake):
    fake.queue("  return a + b;\n}")
    open_doc(lsp, "file:///ws/add.js", "function add(a, b) {\n\n", language="javascript")
    result = await lsp.text_document_inline_completion_async(inline_params("file:///ws/add.js", 1, 0))
    assert result is not None
    assert result.items[0].insert_text == "  return a + b;\n}"


async def test_mid_line_suggestion_is_single_line_and_trims_overlap(lsp, fake):
    fake.queue("1, 2))\nprint('more')\n")
    open_doc(lsp, "file:///ws/m.py", "print(add())\n")
    result = await lsp.text_document_inline_completion_async(inline_params("file:///ws/m.py", 0, 10))
    assert result is not None
    assert result.items[0].insert_text == "1, 2"


async def test_lone_cr_line_endings_put_the_cursor_where_the_editor_has_it(lsp, fake):
    # An old Mac file: every line ends with a lone CR, which LSP counts as a line break like LF and CRLF.
    fake.queue("return a + b")
    text = "def add(a, b):\r    \r\rprint(add(1, 2))\r"
    open_doc(lsp, "file:///ws/mac.py", text)
    result = await lsp.text_document_inline_completion_async(inline_params("file:///ws/mac.py", 1, 4))
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    assert [i.insert_text for i in items] == ["return a + b"]
    assert items[0].range.start == types.Position(1, 4)
    prompt = fake.requests[-1].json["prompt"]
    assert prompt.startswith("<|fim_prefix|>def add(a, b):\r    <|fim_suffix|>\r\rprint(add(1, 2))")
