"""Every URI an editor sends names its document: percent-escapes, Windows drives, non-ASCII, untitled buffers.

Editors escape paths (``file:///tmp/my%20project/a.py``; VS Code on Windows always ``file:///c%3A/...``) and
pygls keys open documents by the unquoted form. These tests open documents under such URIs, through a real
server, and use every feature on them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import inline_params, open_doc, reset_fake, start_client, stop_client
from tests.e2e.test_code_actions import actions_at
from tests.e2e.test_completion_list import completion_params, labels
from tests.e2e.test_generate_command import apply_text_edits, attach_editor, edits_for, env_for, run
from tests.fakes.model_server import FakeModelServer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

SOURCE = "import os\n\n# add two numbers and return the sum\n\nos.pa\n"
CODE = "def add(a, b):\n    return a + b"


def _answer(record: Any) -> str:
    # Chat (code actions, generateCode) gets a fenced function; FIM (inline, completion) the rest of a line.
    return f"```python\n{CODE}\n```" if getattr(record, "messages", None) else "th.join('a', 'b')"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_fake():
    server = FakeModelServer(model="qwen2.5-coder:1.5b-base")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_editor(shared_fake, tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    client = attach_editor(await start_client(shared_fake, root=root, env=env_for(
        root, HAPA_COMPLETION_MAX_DEBOUNCE_MS="0")))
    try:
        yield client
    finally:
        await stop_client(client)


@pytest_asyncio.fixture(loop_scope="module")
async def editor(shared_editor, shared_fake):
    fake = reset_fake(shared_fake)
    fake.script(_answer)
    shared_editor.applied.clear()
    return shared_editor


# ---- URIs as editors spell them ----------------------------------------------------------------------------------
_SEGMENT = st.text(alphabet=st.sampled_from(list("abcXYZ019_-.") + [" ", "%", "#", "[", "]", "+", "&", "'", "(",
                                                                     ")", "é", "ü", "日", "本", "ß", "🐍", "Ω"]),
                   min_size=1, max_size=10).filter(lambda s: s.strip(". ") == s and s not in (".", ".."))


def vscode_uri(path: str) -> str:
    """How VS Code writes a file URI: everything but unreserved characters and ``/`` escaped, also a drive's
    colon (``file:///c%3A/...``)."""
    return "file://" + quote(path, safe="/")


def plain_uri(path: str) -> str:
    """How Neovim and most clients write one: the drive's colon kept."""
    return "file://" + quote(path, safe="/:")


@st.composite
def editor_uris(draw: Any) -> str:
    folders = draw(st.lists(_SEGMENT, min_size=1, max_size=3))
    name = draw(_SEGMENT) + ".py"
    form = draw(st.sampled_from(["posix", "vscode-windows", "windows-upper", "windows-lower"]))
    if form == "posix":
        return vscode_uri("/tmp/" + "/".join(folders) + "/" + name)
    drive = "C" if form == "windows-upper" else "c"
    path = f"/{drive}:/Users/" + "/".join(folders) + "/" + name
    return vscode_uri(path) if form == "vscode-windows" else plain_uri(path)


_seq = iter(range(1, 1_000_000))


async def exercise(client: Any, uri: str) -> None:
    """Open ``uri`` and use inline completion, the completion list, a code action and generateCode on it."""
    open_doc(client, uri, SOURCE)
    # Inline completion, asked for explicitly: an answer, never E4006.
    inline = await client.text_document_inline_completion_async(inline_params(uri, 4, 5, invoked=True))
    assert inline is not None and inline.items[0].insert_text == "th.join('a', 'b')", uri
    # The completion list: jedi's names for the editor's text and the AI item.
    result = await client.text_document_completion_async(completion_params(uri, 4, 5, invoked=True))
    assert "path" in labels(result), uri
    assert "path.join('a', 'b')" in labels(result), uri
    # A code action on the comment, resolved into an edit for this very URI.
    actions = await actions_at(client, uri, (2, 5))
    gen = [a for a in actions if a.title.endswith("Generate code from comment")]
    assert gen, (uri, [a.title for a in actions])
    resolved = await client.code_action_resolve_async(gen[0])
    new = apply_text_edits(SOURCE, edits_for(resolved.edit, uri))
    assert CODE in new, uri
    # hapa.generateCode at a position in the document: the edit is applied to this URI.
    before = len(client.applied)
    out = await run(client, "hapa.generateCode", {"user_question": f"add two numbers {next(_seq)}", "uri": uri,
                                                  "position": {"line": 3, "character": 0}, "stream": False})
    assert out["status"] == "success", out
    assert len(client.applied) == before + 1
    assert CODE in apply_text_edits(SOURCE, edits_for(client.applied[-1].edit, uri))
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(uri=editor_uris())
async def test_every_feature_works_for_any_path_an_editor_sends(editor, uri):
    await exercise(editor, uri)


@pytest.mark.parametrize("uri", [
    "file:///tmp/my%20project/sample.py",
    "file:///c%3A/Users/Me/My%20Project/app.py",
    "file:///C:/Users/Me/app%20one.py",
    "file:///tmp/%C3%BCber/caf%C3%A9%20%E6%97%A5%E6%9C%AC.py",
    "file:///tmp/a%23b/%5Bdraft%5D/x%25y.py",
])
async def test_named_ugly_paths(editor, uri):
    await exercise(editor, uri)


@pytest.mark.parametrize("uri", ["untitled:Untitled-1", "vscode-notebook-cell:/tmp/my%20nb.ipynb#W0sZmlsZQ%3D%3D"])
async def test_documents_that_are_not_files_get_completions_from_the_editors_text(editor, uri):
    """Untitled buffers and notebook cells: AI completion and jedi on the text; nothing is read from disk."""
    open_doc(editor, uri, SOURCE)
    inline = await editor.text_document_inline_completion_async(inline_params(uri, 4, 5, invoked=True))
    assert inline is not None and inline.items[0].insert_text == "th.join('a', 'b')"
    result = await editor.text_document_completion_async(completion_params(uri, 4, 5, invoked=True))
    assert "path" in labels(result) and "path.join('a', 'b')" in labels(result)
    actions = await actions_at(editor, uri, (2, 5))
    resolved = await editor.code_action_resolve_async(
        next(a for a in actions if a.title.endswith("Generate code from comment")))
    assert CODE in apply_text_edits(SOURCE, edits_for(resolved.edit, uri))


async def test_a_request_naming_the_document_with_other_escaping_finds_it(editor):
    """The same file, opened as VS Code spells it and asked for with the drive's colon and case as typed."""
    open_doc(editor, "file:///c%3A/Users/Me/other%20dir/m.py", SOURCE)
    inline = await editor.text_document_inline_completion_async(
        inline_params("file:///C:/Users/Me/other dir/m.py", 4, 5, invoked=True))
    assert inline is not None and inline.items[0].insert_text == "th.join('a', 'b')"


@pytest.mark.parametrize("uri", ["file:///tmp/my%20project/.env", "file:///c%3A/Users/Me/my%20app/.env.local",
                                 "file:///tmp/my%20project/secrets/settings.py"])
async def test_excluded_files_match_by_their_decoded_path(editor, shared_fake, uri):
    open_doc(editor, uri, "API_KEY=abc\n")
    calls = shared_fake.count()
    with pytest.raises(JsonRpcException) as info:
        await editor.text_document_inline_completion_async(inline_params(uri, 0, 11, invoked=True))
    assert info.value.data["code"] == "E4007"
    result = await editor.text_document_completion_async(completion_params(uri, 0, 11, invoked=True))
    assert not any((i.detail or "").startswith("hapa AI") for i in result.items)
    assert shared_fake.count() == calls, "an excluded file reached the model"
