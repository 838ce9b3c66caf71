"""textDocument/completion: jedi's items plus the AI item; jedi items come back even when the model is slow or down."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from lsprotocol import types

from tests.e2e.conftest import kill_server, open_doc, start_client, stop_client

SOURCE = "import os\n\ndef add(a, b):\n    return a + b\n\nos.pa\n"


def completion_params(uri: str, line: int, character: int, invoked: bool = False) -> types.CompletionParams:
    kind = types.CompletionTriggerKind.Invoked if invoked else types.CompletionTriggerKind.TriggerCharacter
    ctx = types.CompletionContext(trigger_kind=kind, trigger_character=None if invoked else ".")
    return types.CompletionParams(text_document=types.TextDocumentIdentifier(uri),
                                  position=types.Position(line, character), context=ctx)


async def complete_when_jedi_ready(client, params, deadline_s: float = 30.0):
    """Ask again while the list is incomplete (jedi still warming up), as an editor does while typing (a cold jedi
    on two busy cores takes 10+ s for its first `os.path` completion)."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = await client.text_document_completion_async(params)
        if not result.is_incomplete or time.monotonic() > deadline:
            return result


async def jedi_idle(client, deadline_s: float = 30.0) -> None:
    """Wait until the jedi worker has no background work (the didOpen warm-up, facts) left: a request's job queued
    behind it would wait for it, which is not what a test about the slow model measures."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.stats"))
        if not stats["jedi_worker"]["warming"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("jedi still busy with background work after %.0f s" % deadline_s)


def labels(result) -> list[str]:
    items = result.items if isinstance(result, types.CompletionList) else result
    return [i.label for i in items]


async def test_jedi_items_and_ai_item_with_text_edit(lsp, fake):
    fake.default_text = "th.join('a', 'b')"
    open_doc(lsp, "file:///ws/m.py", SOURCE)
    result = await complete_when_jedi_ready(lsp, completion_params("file:///ws/m.py", 5, 5, invoked=True))
    assert isinstance(result, types.CompletionList)
    assert "path" in labels(result) and "pardir" in labels(result)
    ai = [i for i in result.items if i.detail and i.detail.startswith("hapa AI")]
    assert len(ai) == 1
    edit = ai[0].text_edit
    assert isinstance(edit, types.TextEdit)
    # Replaces the word being typed ("pa") with the whole suggestion.
    assert edit.range == types.Range(types.Position(5, 3), types.Position(5, 5))
    assert edit.new_text == "path.join('a', 'b')"
    jedi_path = next(i for i in result.items if i.label == "path")
    assert jedi_path.text_edit.range.start == types.Position(5, 3)


async def test_jedi_items_return_while_model_is_down(fake, tmp_path):
    fake.fault = "refuse"
    client = await start_client(fake, root=tmp_path)
    try:
        open_doc(client, "file:///ws/m.py", SOURCE)
        result = await complete_when_jedi_ready(client, completion_params("file:///ws/m.py", 5, 5))
        assert "path" in labels(result)
        assert not any((i.detail or "").startswith("hapa AI") for i in result.items)
        # The outage was reported once, with its catalog code and an incident id.
        errors = [m.message for m in client.messages if "E5005" in m.message]
        assert len(errors) == 1 and "INC-" in errors[0]
    finally:
        await stop_client(client)


async def test_slow_model_list_is_incomplete_then_ai_item_arrives(fake, tmp_path):
    fake.latency = 3.0
    fake.default_text = "th.exists('x')"
    client = await start_client(fake, root=tmp_path, env={"HAPA_COMPLETION_DEBOUNCE_MS": "0",
                                                          "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0",
                                                          "HAPA_COMPLETION_LIST_WAIT_MS": "100"})
    try:
        open_doc(client, "file:///ws/m.py", SOURCE)
        # Let jedi warm up so the first list is not late because of jedi's own start.
        await complete_when_jedi_ready(client, completion_params("file:///ws/m.py", 5, 4))
        await jedi_idle(client)
        t0 = time.perf_counter()
        first = await client.text_document_completion_async(completion_params("file:///ws/m.py", 5, 5))
        elapsed = time.perf_counter() - t0
        assert "path" in labels(first)
        assert first.is_incomplete is True
        assert elapsed < 2.0, "the list must not wait for the slow model"
        await fake.wait_for_requests(1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            again = await client.text_document_completion_async(completion_params("file:///ws/m.py", 5, 5))
            if any((i.detail or "").startswith("hapa AI") for i in again.items):
                break
        assert any(i.label == "path.exists('x')" for i in again.items)
        assert "path" in labels(again)
    finally:
        await stop_client(client)


async def test_non_python_documents_get_only_the_ai_item(lsp, fake):
    fake.queue("ole.log(x);")
    open_doc(lsp, "file:///ws/a.js", "const x = 1;\ncons\n", language="javascript")
    result = await lsp.text_document_completion_async(completion_params("file:///ws/a.js", 1, 4, invoked=True))
    assert labels(result) == ["console.log(x);"]


async def test_jedi_runs_in_a_worker_that_is_replaced_when_it_dies(lsp, fake):
    import os
    import signal

    open_doc(lsp, "file:///ws/m.py", SOURCE)
    params = completion_params("file:///ws/m.py", 5, 5, invoked=True)
    assert "path" in labels(await complete_when_jedi_ready(lsp, params))
    stats = await lsp.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.stats"))
    worker = stats["jedi_worker"]
    assert worker["pid"] not in (None, lsp._server.pid) and worker["rss_mb"] > 10
    os.kill(worker["pid"], signal.SIGKILL)
    # The user keeps typing: jedi's items come back from a new worker, the server never noticed more than that.
    assert "path" in labels(await complete_when_jedi_ready(lsp, params))
    stats = await lsp.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.stats"))
    assert stats["jedi_worker"]["pid"] not in (None, worker["pid"])
    assert stats["jedi_worker"]["failures"] == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_jedi_worker_never_outlives_the_server(fake, tmp_path):
    """An editor that kills its server (crash, force quit) leaves no jedi process behind."""
    import os
    import signal

    client = await start_client(fake, root=tmp_path)
    try:
        open_doc(client, "file:///ws/m.py", SOURCE)
        params = completion_params("file:///ws/m.py", 5, 5, invoked=True)
        assert "path" in labels(await complete_when_jedi_ready(client, params))
        stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.stats"))
        worker = stats["jedi_worker"]["pid"]
        os.kill(client._server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{worker}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break  # exited; waiting for init to reap it
            except FileNotFoundError:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"jedi worker {worker} still running after its server was killed")
    finally:
        await kill_server(client)


async def test_the_first_invoked_list_after_didopen_has_jedis_items_even_with_a_cold_cache(fake, tmp_path):
    """A user opens a file and asks for completions once: the menu has jedi's names, not just the AI item."""
    client = await start_client(fake, root=tmp_path, env={"HAPA_JEDI_CACHE_DIR": str(tmp_path / "cold-jedi-cache")})
    try:
        uri = (tmp_path / "m.py").as_uri()
        open_doc(client, uri, SOURCE)
        await asyncio.sleep(1.0)
        result = await client.text_document_completion_async(completion_params(uri, 5, 5, invoked=True))
        assert "path" in labels(result) and "pardir" in labels(result)
        assert result.is_incomplete is False
        # The worker was still parsing builtins when the file was opened: a helper worker parsed `os` meanwhile.
        stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hapa.stats"))
        assert stats["jedi_worker"]["helper_runs"] == 1
    finally:
        await stop_client(client)


async def test_a_jedi_that_keeps_failing_is_reported_once_with_its_code(fake, tmp_path):
    """jedi cannot work (here: its cache directory is a file): the lists still carry the AI item, and the user is
    told once, with a catalog code and an incident id, instead of silently getting less."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    fake.default_text = "th.join('a', 'b')"
    client = await start_client(fake, root=tmp_path, env={"HAPA_JEDI_CACHE_DIR": str(blocker)})
    try:
        uri = (tmp_path / "m.py").as_uri()
        open_doc(client, uri, SOURCE)
        for col in (5, 4, 5):
            result = await client.text_document_completion_async(completion_params(uri, 5, col, invoked=True))
            assert any((i.detail or "").startswith("hapa AI") for i in result.items)
        shown = [m.message for m in client.messages if "jedi" in m.message]
        assert len(shown) == 1, shown
        assert "E5004" in shown[0] and "INC-" in shown[0]
    finally:
        await stop_client(client)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_with_jedi_off_the_worker_started_with_the_process_is_ended(fake, tmp_path):
    """The worker starts before the settings are known; a session without jedi does not keep it."""
    client = await start_client(fake, root=tmp_path, env={"HAPA_COMPLETION_JEDI": "false",
                                                          "HAPA_CONTEXT_FACTS": "false"})
    try:
        server = client._server.pid
        deadline = time.monotonic() + 10
        while True:
            with open(f"/proc/{server}/task/{server}/children") as fh:
                kids = [int(p) for p in fh.read().split()]
            workers = []
            for pid in kids:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        if b"hapa_lsp.jedi_worker" in fh.read():
                            workers.append(pid)
                except FileNotFoundError:
                    pass
            if not workers or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert workers == []
    finally:
        await stop_client(client)
