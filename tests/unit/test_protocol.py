"""hapa_lsp.protocol is the one place pygls' private names are used; each use is guarded here by name.

A pygls release that renames or reshapes one of them fails one of these tests, instead of an editor session.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import threading
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCProtocol, LanguageServerProtocol
from pygls.workspace import TextDocument, Workspace

from hapa_lsp import protocol
from hapa_lsp.protocol import FastTextDocument, HapaProtocol, install_fast_documents
from hapa_lsp.server import HapaServer

ROOT = Path(__file__).resolve().parents[2]
PYGLS_BASES = ("LanguageServer", "LanguageServerProtocol", "JsonRPCProtocol", "TextDocument", "Workspace")


def _pygls_private_names() -> set[str]:
    server = LanguageServer("probe", "0")
    names: set[str] = set()
    for obj in (server, server.protocol, Workspace(None), TextDocument("file:///a.py"), server.work_done_progress):
        names |= {n for n in set(dir(obj)) | set(vars(obj)) if n.startswith("_") and not n.startswith("__")}
    return names


def test_no_module_but_protocol_touches_a_pygls_private_name():
    names = _pygls_private_names()
    found = []
    for path in sorted((ROOT / "hapa_lsp").rglob("*.py")):
        if path.name == "protocol.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own_self: set[int] = set()  # `self._x` inside our own classes (not pygls subclasses) is our own state
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            if not any(b in ast.unparse(base) for base in cls.bases for b in PYGLS_BASES):
                own_self |= {id(n) for n in ast.walk(cls) if isinstance(n, ast.Attribute)
                             and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in names and id(node) not in own_self:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.FunctionDef) and node.name in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} overrides {node.name}")
    assert found == []


# ---- each private name protocol.py uses --------------------------------------------------------------------------
def test_protocol_internals_hapa_protocol_overrides_exist_with_their_signatures():
    """_handle_request, _send_handler_result, _send_response, _send_data: overridden or called by HapaProtocol."""
    sig = {name: list(inspect.signature(getattr(JsonRPCProtocol, name)).parameters) for name in
           ("_handle_request", "_send_handler_result", "_send_response", "_send_data")}
    assert sig["_handle_request"] == ["self", "msg_id", "method_name", "params"]
    assert sig["_send_handler_result"][:2] == ["self", "future"] and "msg_id" in sig["_send_handler_result"]
    assert sig["_send_response"][:3] == ["self", "msg_id", "result"] and "error" in sig["_send_response"]
    assert sig["_send_data"][:2] == ["self", "data"]
    assert issubclass(HapaProtocol, LanguageServerProtocol)


def test_protocol_knows_its_server_and_keeps_request_futures():
    """_server (the server a protocol belongs to) and _request_futures (running requests by id)."""
    server = HapaServer()
    assert server.protocol._server is server
    assert isinstance(server.protocol._request_futures, dict)


async def test_follow_cancellation_cancels_the_handler_task_when_pygls_cancels_its_future():
    server = HapaServer()
    proto = server.protocol
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    proto._request_futures["cmd-1"] = fut
    proto.command_progress_tokens["cmd-1"] = "tok"
    seen: dict[str, object] = {}

    async def handler() -> None:
        proto._ctx_msg_id.set("cmd-1")  # pygls sets it in the context each request runs in
        seen["token"] = proto.follow_cancellation()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(handler())
    await asyncio.sleep(0)
    fut.cancel()  # what pygls does on $/cancelRequest
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert seen["token"] == "tok"


def test_to_json_and_from_json_use_pygls_converter():
    """_converter: pygls' cattrs converter for lsprotocol types (and our attrs argument classes)."""
    proto = HapaServer().protocol
    assert proto._converter is not None
    diag = types.Diagnostic(range=types.Range(types.Position(1, 2), types.Position(1, 5)), message="m",
                            severity=types.DiagnosticSeverity.Warning, source="hapa", code="E1")
    raw = proto.to_json(diag)
    assert raw["range"]["start"] == {"line": 1, "character": 2} and raw["severity"] == 2
    assert proto.from_json(raw, types.Diagnostic) == diag


def test_the_stop_event_pygls_shutdown_sets_ends_our_stdio_loop():
    """LanguageServer._stop_event: serve_stdio creates it; pygls' shutdown (exit) sets it."""
    server = HapaServer()
    assert hasattr(server, "_stop_event")
    server._stop_event = threading.Event()
    server.shutdown()
    assert server._stop_event.is_set()


async def test_serve_stream_stops_once_the_stop_event_is_set():
    server = HapaServer()
    server._stop_event = threading.Event()
    server._stop_event.set()
    calls = []

    async def read(n: int) -> bytes:
        calls.append(n)
        return b""

    await asyncio.wait_for(protocol.serve_stream(server, read), 5)
    assert calls == []


def test_workspace_document_factory_and_its_attributes():
    """Workspace._create_text_document, _sync_kind, _position_codec: the factory install_fast_documents replaces."""
    ws = Workspace(None)
    assert callable(ws._create_text_document) and hasattr(ws, "_sync_kind") and hasattr(ws, "_position_codec")
    install_fast_documents(ws)
    ws.put_text_document(types.TextDocumentItem(uri="file:///a.py", language_id="python", version=1, text="x\n"))
    doc = ws.get_text_document("file:///a.py")
    assert isinstance(doc, FastTextDocument) and doc._position_codec is ws._position_codec


def test_fast_documents_edit_like_pygls_through_source_and_apply_change():
    """TextDocument._source, _apply_incremental_change, _apply_full_change: what FastTextDocument overrides."""
    assert {"_apply_incremental_change", "_apply_full_change"} <= set(vars(TextDocument))
    text = "def f(x):\n    return x\n\nclass A:\n    pass\n"
    changes = [types.TextDocumentContentChangePartial(range=types.Range(types.Position(1, 11),
                                                                        types.Position(1, 12)), text="x + 1"),
               types.TextDocumentContentChangePartial(range=types.Range(types.Position(3, 0),
                                                                        types.Position(3, 0)), text="# A\n"),
               types.TextDocumentContentChangeWholeDocument(text="y = 2\n")]
    ours, theirs = FastTextDocument("file:///a.py", text), TextDocument("file:///a.py", text)
    for ch in changes[:2]:
        ours.apply_change(ch)
        theirs.apply_change(ch)
        assert ours.source == theirs.source and ours._source == ours.source
    ours.apply_change(changes[2])
    assert ours.source == "y = 2\n"


def test_capability_helpers_read_nested_client_capabilities():
    caps = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(workspace_edit=types.WorkspaceEditClientCapabilities(
            resource_operations=[types.ResourceOperationKind.Create])),
        text_document=types.TextDocumentClientCapabilities(code_action=types.CodeActionClientCapabilities(
            resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]))))

    class View:
        client_capabilities = caps

    assert protocol.client_supports(View, "window.work_done_progress")
    assert not protocol.client_supports(View, "workspace.apply_edit")
    assert protocol.supports_document_changes(View)  # CreateFile is enough
    assert protocol.resolve_supports(View, "edit") and not protocol.resolve_supports(View, "command")

    class Bare:
        client_capabilities = types.ClientCapabilities()

    assert not protocol.client_supports(Bare, "window.show_document.support")
    assert not protocol.supports_document_changes(Bare) and not protocol.resolve_supports(Bare, "edit")


def test_pygls_initialize_is_a_generator_we_can_extend_with_experimental_capabilities():
    """HapaProtocol.lsp_initialize delegates to pygls' generator (``yield from``) and adds ``experimental``; pygls
    finds its built-in handlers by the ``method_name`` attribute ``lsp_method`` sets."""
    assert inspect.isgeneratorfunction(LanguageServerProtocol.lsp_initialize)
    assert HapaProtocol.lsp_initialize.method_name == types.INITIALIZE
    server = HapaServer()
    server.experimental_capabilities["probe"] = {"on": True}
    proto = server.protocol
    gen = proto.lsp_initialize(types.InitializeParams(capabilities=types.ClientCapabilities()))
    try:
        step = next(gen)  # pygls yields to the user's initialize handler (ours is registered)
        while True:
            step = gen.send(None)
    except StopIteration as done:
        result = done.value
    else:  # pragma: no cover
        raise AssertionError(step)
    assert result.capabilities.experimental == {"probe": {"on": True}}


def test_an_accepted_method_reaches_its_handler_with_plain_json_params():
    """accept_method replaces pygls' opaque namedtuple params by plain JSON (get_message_type is pygls' hook)."""
    assert "get_message_type" in vars(LanguageServerProtocol)
    protocol.accept_method("test/probeMethod")
    proto = HapaServer().protocol
    msg = proto.structure_message({"jsonrpc": "2.0", "id": 7, "method": "test/probeMethod",
                                   "params": {"textDocument": {"uri": "file:///a.py"}}})
    assert isinstance(msg, protocol.CustomRequest)
    assert msg.params == {"textDocument": {"uri": "file:///a.py"}}


def test_typing_messages_are_timed_for_background_start_up_work(monkeypatch):
    """didOpen/didChange and the typing requests mark when the user last typed (start-up work waits for a pause);
    other messages do not."""
    server = HapaServer()
    monkeypatch.setattr(LanguageServerProtocol, "handle_message", lambda self, message: None)
    proto = server.protocol
    assert proto.last_typing_at == 0.0
    proto.handle_message(types.ExecuteCommandRequest(id=1, params=types.ExecuteCommandParams("hapa.stats")))
    assert proto.last_typing_at == 0.0
    proto.handle_message(types.DidChangeTextDocumentNotification(params=types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(version=2, uri="file:///a.py"), content_changes=[])))
    first = proto.last_typing_at
    assert first > 0.0
    proto.handle_message(types.InlineCompletionRequest(id=2, params=types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier("file:///a.py"), position=types.Position(0, 0))))
    assert proto.last_typing_at >= first
