"""textDocument/copilotInlineEdit end to end: after a rename, the next use is the suggested edit, with its exact
range; acceptance is recorded; stale versions and excluded files get nothing; cancelling closes the upstream
request. The fake model applies the last change in the prompt's edit history to the region (tests/fakes)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig

from tests.e2e.conftest import (
    editor_capabilities,
    make_client,
    open_doc,
    server_env,
    start_client,
    stop_client,
)
from tests.fakes.next_edit_rule import next_edit_answer

INLINE_EDIT = "textDocument/copilotInlineEdit"
SRC = ("def area(count, scale):\n"
       "    \"\"\"Twice the size, scaled.\"\"\"\n"
       "    x = 1\n"
       "    return count * 2 * scale\n"
       "\n"
       "\n"
       "print(area(3, 1))\n")
ENV = {"HAPA_NEXT_EDIT_DEBOUNCE_MS": "0", "HAPA_NEXT_EDIT_HISTORY_PAUSE_MS": "60000"}


def replace(client: Any, uri: str, line: int, start: int, end: int, text: str, version: int) -> None:
    """One didChange replacing a range on a line (incremental sync), as an editor sends a keystroke."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(line, start), types.Position(line, end)), text=text)]))


def rename_at_def(client: Any, uri: str, version: int = 1) -> int:
    """The user renames `count` to `total` in the def line, key by key: delete, then type."""
    version += 1
    replace(client, uri, 0, 9, 14, "", version)
    for k, ch in enumerate("total"):
        version += 1
        replace(client, uri, 0, 9 + k, 9 + k, ch, version)
    return version


async def inline_edit(client: Any, uri: str, line: int, character: int, version: int | None) -> Any:
    params = {"textDocument": {"uri": uri, "version": version}, "position": {"line": line, "character": character}}
    return await asyncio.wait_for(client.protocol.send_request_async(INLINE_EDIT, params), 15)


def plain(obj: Any) -> Any:
    """pygls hands an unknown method's result back as namedtuples: plain dicts and lists for asserting."""
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


@pytest.fixture
def rule(fake):
    fake.script(next_edit_answer)
    yield fake
    fake.script(None)


async def test_after_a_rename_the_next_use_is_the_suggested_edit_and_accepting_it_is_recorded(rule, tmp_path):
    folder = tmp_path / "my project"
    folder.mkdir()
    uri = (folder / "geo.py").as_uri()
    client = await start_client(rule, root=folder, env=ENV)
    try:
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        result = plain(await inline_edit(client, uri, 0, 14, version))
        assert len(result["edits"]) == 1, (result, [(r.path, r.response_text) for r in rule.requests])
        edit = result["edits"][0]
        assert edit["text"] == "total"
        assert edit["range"] == {"start": {"line": 3, "character": 11}, "end": {"line": 3, "character": 16}}
        assert edit["textDocument"] == {"uri": uri, "version": version}
        # The model saw the rename as the last edit, the region with the cursor, and the file's relative path.
        prompt = "\n".join(m["content"] for m in rule.last_request.messages)
        assert "-def area(count, scale):\n+def area(total, scale):" in prompt
        assert "<|user_cursor_is_here|>" in prompt and "geo.py" in prompt and str(tmp_path) not in prompt
        cmd = edit["command"]
        assert cmd["command"] == "hapa.didAcceptInlineEdit"
        client.protocol.notify("textDocument/didShowInlineEdit", {"item": edit})
        accepted = plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=cmd["command"], arguments=cmd["arguments"])))
        assert accepted == {"recorded": True}
        # The shown and accepted rows are written off the event loop: the stats show them shortly after.
        overall: dict = {}
        for _ in range(100):
            stats = plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command="hapa.feedback.stats", arguments=[{}])))
            overall = stats["overall"]
            if overall["accepted"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert (overall["shown"], overall["accepted"]) == (1, 1), stats
    finally:
        await stop_client(client)


async def test_after_accepting_a_suggestion_the_next_one_goes_to_the_following_use(rule, tmp_path):
    body = "".join(f"    step{i} = {i}\n" for i in range(20))
    src = f"def run(count):\n    x = 1\n    y = 2\n    print(count)\n{body}    return count\n"
    last = 4 + 20  # the line of `return count`
    uri = (tmp_path / "far.py").as_uri()
    client = await start_client(rule, root=tmp_path, env={**ENV, "HAPA_NEXT_EDIT_LINES_BELOW": "5"})
    try:
        open_doc(client, uri, src)
        version = 2
        replace(client, uri, 0, 8, 13, "total", version)
        first = plain(await inline_edit(client, uri, 0, 13, version))
        assert [e["text"] for e in first["edits"]] == ["total"], first
        edit = first["edits"][0]
        assert edit["range"] == {"start": {"line": 3, "character": 10}, "end": {"line": 3, "character": 15}}
        # The editor applies the edit (one didChange with its range and text), then runs its command.
        r = edit["range"]
        version += 1
        replace(client, uri, r["start"]["line"], r["start"]["character"], r["end"]["character"], edit["text"],
                version)
        cmd = edit["command"]
        assert plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=cmd["command"], arguments=cmd["arguments"]))) == {"recorded": True}
        calls = rule.count()
        # The cursor is where the accepted edit ended: the next suggestion is the use below the region.
        second = plain(await inline_edit(client, uri, 3, 15, version))
        assert rule.count() == calls + 1  # a new model call, not the accepted suggestion served again
        assert [e["text"] for e in second["edits"]] == ["total"], second
        assert second["edits"][0]["range"] == {"start": {"line": last, "character": 11},
                                               "end": {"line": last, "character": 16}}
        assert second["edits"][0]["textDocument"] == {"uri": uri, "version": version}
        # And after that one is applied too, nothing is left to suggest.
        version += 1
        replace(client, uri, last, 11, 16, "total", version)
        assert plain(await inline_edit(client, uri, last, 16, version)) == {"edits": []}
    finally:
        await stop_client(client)


async def test_the_next_edit_jumps_to_a_use_beyond_the_region(rule, tmp_path):
    body = "".join(f"    step{i} = {i}\n" for i in range(20))
    src = f"def run(count):\n{body}    return count\n"
    uri = (tmp_path / "far.py").as_uri()
    client = await start_client(rule, root=tmp_path, env={**ENV, "HAPA_NEXT_EDIT_LINES_BELOW": "5"})
    try:
        open_doc(client, uri, src)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(0, 8), types.Position(0, 13)), text="total")]))
        result = plain(await inline_edit(client, uri, 0, 13, 2))
        assert [e["text"] for e in result["edits"]] == ["total"]
        assert result["edits"][0]["range"]["start"] == {"line": 21, "character": 11}
    finally:
        await stop_client(client)


async def test_a_stale_version_gets_no_edit_and_no_model_call(rule, tmp_path):
    uri = (tmp_path / "geo.py").as_uri()
    client = await start_client(rule, root=tmp_path, env=ENV)
    try:
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        before = rule.count()
        assert plain(await inline_edit(client, uri, 0, 14, version - 1)) == {"edits": []}
        assert rule.count() == before
    finally:
        await stop_client(client)


async def test_typing_the_suggested_edit_keeps_the_rest_of_it_without_a_model_call(rule, tmp_path):
    uri = (tmp_path / "geo.py").as_uri()
    client = await start_client(rule, root=tmp_path, env=ENV)
    try:
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        first = plain(await inline_edit(client, uri, 0, 14, version))
        assert first["edits"][0]["text"] == "total"
        calls = rule.count()
        # The user goes there and starts typing the suggestion: "count" -> "to" + the rest still to come.
        version += 1
        replace(client, uri, 3, 11, 16, "to", version)
        rest = plain(await inline_edit(client, uri, 3, 13, version))
        assert rule.count() == calls
        edit = rest["edits"][0]
        assert edit["text"] == "tal"
        assert edit["range"] == {"start": {"line": 3, "character": 13}, "end": {"line": 3, "character": 13}}
    finally:
        await stop_client(client)


async def test_cancelling_closes_the_upstream_request(fake, tmp_path):
    fake.configure(default_text="<|editable_region_start|>\n" + "x\n" * 200 + "<|editable_region_end|>",
                   token_delay=0.05)
    uri = (tmp_path / "geo.py").as_uri()
    client = await start_client(fake, root=tmp_path, env=ENV)
    try:
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        params = {"textDocument": {"uri": uri, "version": version}, "position": {"line": 0, "character": 14}}
        task = asyncio.ensure_future(client.protocol.send_request_async(INLINE_EDIT, params, msg_id="ne-cancel"))
        await fake.wait_for_requests(1, timeout=10)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="ne-cancel"))
        record = await fake.wait_for_disconnect(timeout=5)
        assert record.client_disconnected
        with pytest.raises(Exception):
            await asyncio.wait_for(task, 5)
    finally:
        await stop_client(client)


async def test_excluded_files_contribute_no_history(rule, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secret_uri = (secrets / "keys.py").as_uri()
    uri = (tmp_path / "geo.py").as_uri()
    client = await start_client(rule, root=tmp_path, env=ENV)
    try:
        open_doc(client, secret_uri, "TOKEN = 'hunter2'\n")
        replace(client, secret_uri, 0, 9, 16, "swordfish", 2)
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        result = plain(await inline_edit(client, uri, 0, 14, version))
        assert result["edits"]
        prompt = "\n".join(m["content"] for m in rule.last_request.messages)
        assert "swordfish" not in prompt and "hunter2" not in prompt and "keys.py" not in prompt
        # And the excluded file itself gets no next edit (nothing is sent for it).
        calls = rule.count()
        assert plain(await inline_edit(client, secret_uri, 0, 10, 2)) == {"edits": []}
        assert rule.count() == calls
    finally:
        await stop_client(client)


async def test_initialize_advertises_the_method(fake):
    client = await ClientServerConfig(server_command=[sys.executable, "-m", "hapa_lsp"], client_factory=make_client,
                                      server_env=server_env(fake)).start()
    try:
        result = await client.initialize_session(types.InitializeParams(capabilities=editor_capabilities()))
        experimental = plain(result.capabilities.experimental)
        assert experimental["copilotInlineEdit"]["acceptCommand"] == "hapa.didAcceptInlineEdit"
    finally:
        await stop_client(client)


async def test_bad_params_get_e4001_and_the_server_keeps_serving(rule, tmp_path):
    client = await start_client(rule, root=tmp_path, env=ENV)
    try:
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(client.protocol.send_request_async(INLINE_EDIT, {"position": {"line": -1}}), 10)
        assert "E4001" in str(info.value) or "E4002" in str(info.value)
        uri = (tmp_path / "geo.py").as_uri()
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        assert plain(await inline_edit(client, uri, 0, 14, version))["edits"]
    finally:
        await stop_client(client)


async def test_a_newer_keystroke_closes_the_upstream_request_and_the_old_request_gets_no_edit(fake, tmp_path):
    fake.configure(default_text="<|editable_region_start|>\n" + "x\n" * 200 + "<|editable_region_end|>",
                   token_delay=0.05)
    uri = (tmp_path / "geo.py").as_uri()
    client = await start_client(fake, root=tmp_path, env=ENV)
    try:
        open_doc(client, uri, SRC)
        version = rename_at_def(client, uri)
        pending = asyncio.ensure_future(inline_edit(client, uri, 0, 14, version))
        await fake.wait_for_requests(1, timeout=10)
        replace(client, uri, 6, 0, 0, "#", version + 1)  # the user types on
        record = await fake.wait_for_disconnect(timeout=5)
        assert record.client_disconnected
        assert plain(await pending) == {"edits": []}
    finally:
        await stop_client(client)
