"""hapa.generateCode over workspace/executeCommand: fields, applying edits, streaming progress, cancellation,
profiles, validation, the cache and the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import open_doc, reset_fake, start_client, stop_client
from tests.fakes.model_server import FakeModelServer

ANSWER = ("```python\ndef dedupe(items):\n    seen = set()\n    out = []\n    for x in items:\n"
          "        if x not in seen:\n            seen.add(x)\n            out.append(x)\n    return out\n```\n"
          "Keeps the first occurrence of each item.")
CODE = ANSWER.split("```python\n", 1)[1].split("```", 1)[0].rstrip("\n")


def attach_editor(client: Any) -> Any:
    """Make the test client behave like an editor: apply edits it is sent and record hapa/streamChunk."""
    client.applied = []
    client.chunks = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(ls: Any, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        ls.applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    @client.feature("hapa/streamChunk")
    def chunk(ls: Any, params: Any) -> None:
        ls.chunks.append(params)

    return client


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    """Apply LSP text edits (ASCII positions) to ``text`` the way an editor does."""
    lines = text.split("\n")

    def offset(p: types.Position) -> int:
        return sum(len(ln) + 1 for ln in lines[:p.line]) + p.character

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


def edits_for(edit: types.WorkspaceEdit, uri: str) -> list[types.TextEdit]:
    """The text edits a WorkspaceEdit makes to ``uri`` (changes or documentChanges)."""
    if edit.changes:
        return list(edit.changes.get(uri, []))
    out: list[types.TextEdit] = []
    for dc in edit.document_changes or []:
        if isinstance(dc, types.TextDocumentEdit) and dc.text_document.uri == uri:
            out.extend(dc.edits)  # type: ignore[arg-type]
    return out


def field(obj: Any, name: str) -> Any:
    """A field of a notification payload (pygls hands custom params over as objects or dicts)."""
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


async def run(client: Any, command: str, *args: Any, token: Any = None, msg_id: str | None = None) -> Any:
    """workspace/executeCommand, optionally with a work-done token and a fixed request id."""
    params = types.ExecuteCommandParams(command=command, arguments=list(args), work_done_token=token)
    if token is not None:
        client.progress_reports.setdefault(token, [])  # a client knows the tokens it hands out
    if msg_id is None:
        return await client.workspace_execute_command_async(params)
    return await client.protocol.send_request_async(types.WORKSPACE_EXECUTE_COMMAND, params, msg_id=msg_id)


def env_for(tmp_path: Any, **extra: str) -> dict[str, str]:
    """Server environment with the database in ``tmp_path``."""
    return {"HAPA_STORAGE_PATH": str(tmp_path / "hapa.db"), "HAPA_COMPLETION_DEBOUNCE_MS": "0", **extra}


# One server for the module (each start costs about a second on a busy machine); tests use distinct questions
# and documents so the generation cache and open documents never couple them.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_fake():
    server = FakeModelServer(model="qwen2.5-coder:7b-instruct")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_editor(shared_fake, tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    client = attach_editor(await start_client(shared_fake, root=root, env=env_for(root)))
    try:
        yield client
    finally:
        await stop_client(client)


@pytest_asyncio.fixture(loop_scope="module")
async def fake(shared_fake):
    """The module's fake model server, reset to a clean state for each test."""
    return reset_fake(shared_fake)


@pytest_asyncio.fixture(loop_scope="module")
async def editor(shared_editor, fake):
    """The module's editor session, with what it recorded cleared for each test."""
    shared_editor.applied.clear()
    shared_editor.chunks.clear()
    return shared_editor


async def test_generate_code_returns_the_original_backend_fields(editor, fake):
    fake.queue(ANSWER)
    result = await run(editor, "hapa.generateCode", {"user_question": "remove duplicates from a list, keep order",
                                                     "stream": False})
    assert result["status"] == "success"
    assert result["generated_code"] == CODE
    assert result["explanation"] == "Keeps the first occurrence of each item."
    assert isinstance(result["response_time_ms"], (int, float)) and result["response_time_ms"] > 0
    assert isinstance(result["history_id"], int)
    assert result["validation"]["valid"] is True and result["warnings"] == []
    req = fake.requests[-1]
    assert req.path == "/api/chat" and req.json["model"] == "qwen2.5-coder:7b-instruct"
    assert req.messages[-1]["content"] == "remove duplicates from a list, keep order"
    assert editor.applied == []  # no location: nothing is applied


async def test_generate_code_at_a_location_applies_an_indented_edit(editor, fake):
    fake.queue("```python\nif not items:\n    return []\n```\nGuard for empty input.")
    uri = "file:///ws/m.py"
    source = "def first(items):\n    \n    return items[0]\n"
    open_doc(editor, uri, source)
    result = await run(editor, "hapa.generateCode", {"user_question": "return [] for empty input", "uri": uri,
                                                     "position": {"line": 1, "character": 4}, "stream": False})
    assert result["status"] == "success" and result["applied"] is True
    (applied,) = editor.applied
    new_text = apply_text_edits(source, edits_for(applied.edit, uri))
    assert new_text == ("def first(items):\n    if not items:\n        return []\n    return items[0]\n")
    # The document around the position was the context the model saw.
    assert "def first(items):" in fake.requests[-1].messages[-1]["content"]


@pytest.mark.parametrize("args,code,field_name", [
    ({}, "E4002", "user_question"),
    ({"user_question": "   "}, "E4002", "user_question"),
    ({"user_question": 42}, "E4001", "user_question"),
    ({"user_question": "x", "temperature": "hot"}, "E4001", "temperature"),
    ({"user_question": "x", "temperature": 5}, "E4001", "temperature"),
    ({"user_question": "x", "stream": "yes"}, "E4001", "stream"),
    ({"user_question": "x", "user_profile": {"pythonSkillLevel": "guru"}}, "E4001", "user_profile.pythonSkillLevel"),
    ({"user_question": "x", "user_profile": "expert"}, "E4001", "user_profile"),
    ({"user_question": "x", "position": {"line": 0, "character": 0}}, "E4002", "uri"),
    ({"user_question": "x", "uri": "file:///ws/m.py"}, "E4002", "position"),
    ({"user_question": "x", "uri": "file:///ws/m.py", "position": {"line": -1, "character": 0}}, "E4001",
     "position.line"),
    ({"user_question": "x", "colour": "red"}, "E4001", "colour"),
    ({"user_question": "x", "code_context": "x = 1\n" * 20000}, "E4012", "code_context"),
])
async def test_invalid_arguments_get_a_code_naming_the_field(editor, fake, args, code, field_name):
    with pytest.raises(JsonRpcException) as info:
        await run(editor, "hapa.generateCode", args)
    data = info.value.data
    assert data["code"] == code and data["field"] == field_name
    assert data["incident_id"].startswith("INC-")
    assert fake.count() == 0


async def test_streaming_reports_progress_and_chunks(editor, fake):
    fake.token_delay = 0.01
    fake.queue(ANSWER)
    result = await run(editor, "hapa.generateCode", {"user_question": "dedupe a list"}, token="tok-stream")
    assert result["status"] == "success"
    reports = editor.progress_reports["tok-stream"]
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and reports[0].cancellable
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    assert sum(isinstance(r, types.WorkDoneProgressReport) for r in reports) >= 2
    texts = [field(c, "text") for c in editor.chunks]
    assert len(texts) >= 2 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert texts[-1] == ANSWER and field(editor.chunks[-1], "done") is True
    assert {field(c, "request_id") for c in editor.chunks} == {result["request_id"]}
    # The status bar said "busy" while it streamed, and "ok" once it was done.
    states = [s.state for s in editor.statuses]
    assert "busy" in states and states[-1] == "ok" and states.index("busy") < len(states) - 1


async def test_server_creates_a_progress_token_when_the_client_sends_none(editor, fake):
    fake.token_delay = 0.01
    fake.queue(ANSWER)
    await run(editor, "hapa.generateCode", {"user_question": "dedupe a list, server token"})
    (token,) = [t for t in editor.progress_reports if str(t).startswith("hapa-")]
    kinds = [type(r).__name__ for r in editor.progress_reports[token]]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"


async def until(predicate: Any, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (notifications may arrive before or after a request's answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _wait_for_chunk(client: Any) -> None:
    await until(lambda: client.chunks)


async def test_cancel_request_aborts_the_upstream_stream_and_applies_nothing(editor, fake):
    fake.token_delay = 0.05
    fake.queue(ANSWER * 4)
    uri = "file:///ws/c.py"
    open_doc(editor, uri, "x = 1\n\n")
    task = asyncio.ensure_future(run(editor, "hapa.generateCode", {
        "user_question": "long thing", "uri": uri, "position": {"line": 1, "character": 0}}, msg_id="gen-cancel-1"))
    await _wait_for_chunk(editor)
    editor.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="gen-cancel-1"))
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == types.LSPErrorCodes.RequestCancelled
    record = await fake.wait_for_disconnect(timeout=3)
    assert record.client_disconnected and not record.completed
    await asyncio.sleep(0.2)
    assert editor.applied == []


async def test_progress_cancel_aborts_the_stream_and_answers_cancelled(editor, fake):
    fake.token_delay = 0.05
    fake.queue(ANSWER * 4)
    uri = "file:///ws/p.py"
    open_doc(editor, uri, "x = 1\n\n")
    task = asyncio.ensure_future(run(editor, "hapa.generateCode", {
        "user_question": "long thing 2", "uri": uri, "position": {"line": 1, "character": 0}}, token="tok-cancel"))
    await _wait_for_chunk(editor)
    editor.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token="tok-cancel"))
    result = await asyncio.wait_for(task, 5)
    assert result["status"] == "cancelled" and result["error"]["code"] == "E4008"
    record = await fake.wait_for_disconnect(timeout=3)
    assert not record.completed
    assert editor.applied == []
    assert isinstance(editor.progress_reports["tok-cancel"][-1], types.WorkDoneProgressEnd)


async def test_profile_changes_the_prompt_the_model_receives(editor, fake):
    fake.queue(ANSWER, ANSWER)
    await run(editor, "hapa.generateCode", {"user_question": "sum a list", "stream": False,
                                            "user_profile": {"pythonSkillLevel": "beginner",
                                                             "explanationStyle": "educational"}})
    beginner = fake.requests[-1].messages[0]["content"]
    result = await run(editor, "hapa.generateCode", {"user_question": "sum a list", "stream": False,
                                                     "user_profile": {"pythonSkillLevel": "expert",
                                                                      "codeOutputStructure": "minimal",
                                                                      "explanationStyle": "brief"}})
    expert = fake.requests[-1].messages[0]["content"]
    assert "beginner" in beginner and "comment above every step" in beginner and "exercise" in beginner
    assert "expert" in expert and "terse" in expert and "no docstrings" in expert and "one sentence" in expert
    assert result["user_profile"] == {"pythonSkillLevel": "expert", "codeOutputStructure": "minimal",
                                      "explanationStyle": "brief"}


async def test_profile_from_settings_is_used_by_default(fake, tmp_path):  # its own server: other settings
    client = attach_editor(await start_client(fake, root=tmp_path, env=env_for(tmp_path),
                                              init_options={"profile": {"pythonSkillLevel": "beginner"}}))
    try:
        fake.queue(ANSWER)
        result = await run(client, "hapa.generateCode", {"user_question": "sum a list", "stream": False})
        assert result["user_profile"]["pythonSkillLevel"] == "beginner"
        assert "The user is a beginner" in fake.requests[-1].messages[0]["content"]
    finally:
        await stop_client(client)


async def test_code_that_does_not_parse_is_repaired_once(editor, fake):
    fake.queue("```python\ndef total(xs)\n    return sum(xs)\n```",
               "```python\ndef total(xs):\n    return sum(xs)\n```")
    result = await run(editor, "hapa.generateCode", {"user_question": "total of a list", "stream": False})
    assert result["status"] == "success" and result["repaired"] is True
    assert result["generated_code"] == "def total(xs):\n    return sum(xs)"
    repair = fake.requests[-1].messages
    assert repair[-2]["role"] == "assistant" and "def total(xs)\n" in repair[-2]["content"]
    assert "does not parse" in repair[-1]["content"] and "line 1" in repair[-1]["content"]


async def test_code_still_broken_after_repair_is_rejected_with_e4011(editor, fake):
    uri = "file:///ws/r.py"
    open_doc(editor, uri, "\n")
    fake.queue("```python\ndef total(xs)\n    return\n```", "```python\ndef total(xs:\n```")
    result = await run(editor, "hapa.generateCode", {"user_question": "broken please", "stream": False, "uri": uri,
                                                     "position": {"line": 0, "character": 0}})
    assert result["status"] == "error" and result["error"]["code"] == "E4011"
    assert result["incident_id"].startswith("INC-") and result["validation"]["valid"] is False
    assert fake.count("/api/chat") == 2
    assert editor.applied == []


async def test_dangerous_code_is_flagged_and_shown_as_diagnostics_on_the_inserted_range(editor, fake):
    uri = "file:///ws/d.py"
    open_doc(editor, uri, "import os\n\ndef clean(path):\n    \n")
    fake.queue("```python\nos.system('rm -rf ' + path)\n```")
    result = await run(editor, "hapa.generateCode", {"user_question": "delete the path", "stream": False,
                                                     "uri": uri, "position": {"line": 3, "character": 4}})
    assert result["status"] == "success" and result["applied"] is True
    assert [i["rule"] for i in result["validation"]["issues"]] == ["os-command"]
    assert result["warnings"] and "os-command" in result["warnings"][0]
    await until(lambda: editor.diagnostics.get(uri))
    (diag,) = editor.diagnostics[uri]
    assert diag.code == "os-command" and diag.source == "hapa"
    assert diag.range == types.Range(types.Position(3, 4), types.Position(3, 31))


async def test_upstream_failure_returns_status_error_with_incident(editor, fake):
    fake.fail_next("401")
    result = await run(editor, "hapa.generateCode", {"user_question": "anything", "stream": False})
    assert result["status"] == "error" and result["error"]["code"] == "E5006"
    assert result["incident_id"] == result["error"]["incident_id"]


async def test_validate_code_command(editor):
    result = await run(editor, "hapa.validateCode", {"code": "import pickle\nobj = pickle.loads(blob)\n"})
    assert result["valid"] is True and [i["rule"] for i in result["issues"]] == ["unsafe-deserialization"]
    bad = await run(editor, "hapa.validateCode", {"code": "def f(:\n"})
    assert bad["valid"] is False and bad["error"]["code"] == "E4011" and bad["syntax_error"]["line"] == 0
    with pytest.raises(JsonRpcException) as info:
        await run(editor, "hapa.validateCode", {"language": "python"})
    assert info.value.data["code"] == "E4002" and info.value.data["field"] == "code"


async def test_cli_generate_prints_the_code(fake, tmp_path):
    import os
    import sys

    fake.queue(ANSWER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPA_")}
    env.update(HAPA_BACKEND_ENDPOINT=fake.url, HAPA_STORAGE_PATH=str(tmp_path / "cli.db"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hapa_lsp", "generate", "dedupe a list from the cli", "--skill", "expert",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode() == CODE + "\n"
    assert "Keeps the first occurrence" in err.decode()
    assert "The user is an expert" in fake.requests[-1].messages[0]["content"]


async def test_the_same_generation_is_answered_from_the_cache(editor, fake):
    fake.queue(ANSWER)
    first = await run(editor, "hapa.generateCode", {"user_question": "cache me please", "stream": False})
    calls = fake.count()
    again = await run(editor, "hapa.generateCode", {"user_question": "cache me please", "stream": False})
    assert first["cached"] is False and again["cached"] is True
    assert again["generated_code"] == first["generated_code"] and fake.count() == calls
    stats = await run(editor, "hapa.stats")
    assert stats["cache"]["regions"]["code_generation"] >= 1
