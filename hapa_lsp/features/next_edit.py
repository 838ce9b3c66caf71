"""textDocument/copilotInlineEdit, textDocument/didShowInlineEdit: next edit suggestions, in the shapes of GitHub
Copilot's language server (clients that speak it work unchanged) -> next_edit/engine.py.

Request ``{textDocument: {uri, version}, position}``; answer ``{edits: [{text, textDocument: {uri, version}, range,
command}]}`` (alternatives, best first; ``command`` reports acceptance). A stale version gets ``{edits: []}``.
The edit history (next_edit/history.py) is fed from didChange through ``HapaServer.document_observers``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.documents import doc_key, name_of
from hapa_lsp.features import args as A
from hapa_lsp.features.common import (
    INLINE_EDIT,
    INLINE_EDIT_ACCEPT,
    INLINE_EDIT_SHOWN,
    after_response,
    arguments,
    bind_request,
    boundary,
    language_of,
    open_document,
    position_encoding,
)
from hapa_lsp.features.running import record_suggestion_event
from hapa_lsp.log import get_logger
from hapa_lsp.protocol import accept_method

if TYPE_CHECKING:
    from hapa_lsp.next_edit.engine import NextEdit, NextEditEngine
    from hapa_lsp.server import HapaServer

_STATE = "next_edit"
_NOTHING: dict[str, Any] = {"edits": []}


def _engine(ls: HapaServer) -> NextEditEngine:
    eng = ls.feature_state.get(_STATE + ".engine")
    if eng is None:
        # deferred: the next-edit engine imports the cache and the upstream path (tests/unit/test_startup.py)
        from hapa_lsp.next_edit.engine import NextEditEngine

        eng = NextEditEngine(ls.settings, ls.upstream, ls.edits.history, model_gate=ls.typing_gate,
                             notify_failure=lambda e, rid, explicit: ls.background_failure(
                                 e, rid, explicit, method=INLINE_EDIT),
                             notify_success=ls.background_success)
        ls.feature_state[_STATE + ".engine"] = eng
        ls.edits.change_listeners.append(eng.did_change)
        ls.edits.close_listeners.append(eng.did_close)
        ls.settings_observers.append(lambda old, new: eng.update_settings(new))
    return eng


def register(server: HapaServer) -> None:
    """Register the next-edit methods and advertise them (``experimental.copilotInlineEdit``)."""
    accept_method(INLINE_EDIT, typing=True)
    accept_method(INLINE_EDIT_SHOWN, notification=True)
    server.experimental_capabilities["copilotInlineEdit"] = {"didShow": True, "acceptCommand": INLINE_EDIT_ACCEPT}

    @server.feature(INLINE_EDIT)
    @boundary(INLINE_EDIT)
    async def inline_edit(ls: HapaServer, params: Any) -> dict[str, Any]:
        try:
            return await _inline_edit(ls, params)
        except errors.HapaError as exc:
            if exc.recorded:
                return _NOTHING  # a model failure, already in the status and told once (like ghost text)
            raise  # bad params, a document never opened: the client's answer says what and why

    async def _inline_edit(ls: HapaServer, params: Any) -> dict[str, Any]:
        a = arguments(ls, (params,) if params is not None else (), A.InlineEditArgs, INLINE_EDIT)
        rid = ls.engine.next_request_id()
        bind_request(rid, INLINE_EDIT)
        if not ls.settings.next_edit.enabled:
            return _NOTHING
        doc = open_document(ls, a.text_document.uri)
        version = doc.version
        if a.text_document.version is not None and a.text_document.version != version:
            return _NOTHING  # the editor asked about text that has changed since
        language = language_of(doc)
        if ls.engine.applies_to(name_of(doc), language) is not None:
            return _NOTHING  # excluded, off, or a language not completed: as quiet as ghost text
        h = ls.edits
        ne = await _engine(ls).suggest(
            uri=doc_key(doc.uri), path=h.shown_path(doc), language=language, text=doc.source,
            line=a.position.line, character=a.position.character, request_id=rid,
            encoding=position_encoding(ls), still_current=lambda: doc.version == version)
        if ne is None or doc.version != version:
            return _NOTHING
        after_response(_log_answer, ne)
        return {"edits": [_item(ls, ne, a.text_document.uri, version, language)]}

    @server.feature(INLINE_EDIT_SHOWN)
    @boundary(INLINE_EDIT_SHOWN, notification=True)
    async def did_show(ls: HapaServer, params: Any) -> None:
        shown = arguments(ls, (params,) if params is not None else (), A.InlineEditShownArgs, INLINE_EDIT_SHOWN)
        info = _event_args(ls, shown.item)
        if info is not None:
            await record_suggestion_event(ls, "shown", info)

    @server.command(INLINE_EDIT_ACCEPT)
    @boundary(INLINE_EDIT_ACCEPT)
    async def did_accept(ls: HapaServer, *args: Any) -> dict[str, Any]:
        info = arguments(ls, args, A.SuggestionEventArgs, INLINE_EDIT_ACCEPT)
        ls.upstream.count("accepted")
        await record_suggestion_event(ls, "accepted", info)
        eng = ls.feature_state.get(_STATE + ".engine")
        if eng is not None and info.uri:
            eng.forget_shown(doc_key(info.uri))  # made: the next request asks for the edit after it
        get_logger().info("next edit accepted", request_id=info.request_id, model=info.model)
        return {"recorded": True}


def _event_args(ls: HapaServer, item: dict[str, Any] | None) -> A.SuggestionEventArgs | None:
    """The acceptance arguments inside a shown item's command (ours), or None for an item without them."""
    cmd = (item or {}).get("command")
    argv = cmd.get("arguments") if isinstance(cmd, dict) else None
    if not isinstance(argv, list) or not argv or not isinstance(argv[0], dict):
        return None
    return arguments(ls, (argv[0],), A.SuggestionEventArgs, INLINE_EDIT_SHOWN)


def _item(ls: HapaServer, ne: NextEdit, uri: str, version: int | None, language: str) -> dict[str, Any]:
    e = ne.edits[0]
    return {
        "text": e.text,
        "textDocument": {"uri": uri, "version": version},
        "range": {"start": {"line": e.start[0], "character": e.start[1]},
                  "end": {"line": e.end[0], "character": e.end[1]}},
        "command": {"title": "Accept next edit", "command": INLINE_EDIT_ACCEPT,
                    "arguments": [{"request_id": ne.request_id, "uri": uri, "language": language, "model": ne.model,
                                   "source": ne.source, "length": len(e.text)}]},
    }


def _log_answer(ne: NextEdit) -> None:
    get_logger().info("next edit", request_id=ne.request_id, source=ne.source, format=ne.format, jump=ne.jump,
                      region=list(ne.region), prompt_chars=ne.prompt_chars,
                      **{k: round(v, 2) for k, v in ne.timings.items()})
