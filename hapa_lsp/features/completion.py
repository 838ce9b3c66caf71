"""textDocument/completion: jedi's local items plus the AI suggestion as an item, never waiting on a slow model."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from lsprotocol import types

from hapa_lsp import errors
from hapa_lsp.documents import doc_key, fs_path, name_of
from hapa_lsp.features.common import (accept_command, bind_request, boundary, language_of, open_document,
                                      position_encoding)

if TYPE_CHECKING:
    from hapa_lsp.engine import Suggestion
    from hapa_lsp.server import HapaServer

_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*$")
# How long an explicitly invoked completion waits for jedi while the worker is warming up.
JEDI_WARMING_WAIT_S = 10.0


def ai_item(sug: Suggestion, line_prefix: str, uri: str, language: str) -> types.CompletionItem:
    """The AI suggestion as a completion item whose textEdit replaces the word being typed."""
    word = _WORD_TAIL.search(line_prefix).group(0)  # type: ignore[union-attr]
    line, col = sug.at
    start = types.Position(line, max(0, col - len(word)))
    first = sug.text.split("\n", 1)[0].strip() or sug.text.strip().split("\n", 1)[0]
    label = (word + first) if word else first
    if len(label) > 60:
        label = label[:57] + "..."
    return types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Snippet,
        detail=f"hapa AI · {sug.model}",
        documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```\n{word}{sug.text}\n```"),
        sort_text="a0000",
        filter_text=word + sug.text.split("\n", 1)[0],
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(types.Range(start, types.Position(line, col)), word + sug.text),
        command=accept_command(sug, uri, language),
    )


def register(server: HapaServer) -> None:
    """Register the completion provider."""

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=["."], resolve_provider=False))
    @boundary(types.TEXT_DOCUMENT_COMPLETION)
    async def completion(ls: HapaServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        rid = ls.engine.next_request_id()
        bind_request(rid, types.TEXT_DOCUMENT_COMPLETION)
        try:
            doc = open_document(ls, uri)
        except errors.DocumentNotOpen:
            return types.CompletionList(is_incomplete=False, items=[])
        settings = ls.settings
        language = language_of(doc)
        text = doc.source
        pos = params.position
        encoding = position_encoding(ls)
        key, name, disk = doc_key(uri), name_of(doc), fs_path(doc)
        cur = ls.engine.split(key, text, pos.line, pos.character, encoding)
        engine = ls.engine
        gen = engine.generation(key)
        invoked = bool(params.context and params.context.trigger_kind == types.CompletionTriggerKind.Invoked)

        jedi_task: asyncio.Future | None = None
        if (settings.completion.jedi and language == "python"
                and len(text) <= settings.context.jedi_max_bytes):
            box = settings.completion.jedi_timeout_ms / 1000
            if invoked and ls.jedi.warming:
                # The user asked for completions: an empty jedi part just because jedi is starting or parsing
                # what a newly opened file imports would be a wrong answer. Wait for it (bounded).
                box = max(box, JEDI_WARMING_WAIT_S)
            jedi_task = asyncio.ensure_future(ls.jedi.complete(
                text, disk or "", ls.root_path, cur.line, cur.character, cur.line_prefix, encoding,
                timeout=box,
                still_wanted=lambda: engine.generation(key) == gen))
        ai_task: asyncio.Future | None = None
        # Over the rate limit (checked by the engine before a model call) the list keeps jedi's items.
        if settings.completion.in_completion_list and engine.applies_to(name, language) is None:
            ai_task = asyncio.ensure_future(engine.suggest(
                uri=key, path=name, on_disk=disk is not None, language=language, text=text, line=pos.line,
                character=pos.character, invoked=invoked, slot="list", encoding=encoding, request_id=rid,
                jedi_ahead=jedi_task is not None))
            ai_task.add_done_callback(_swallow)

        items: list[types.CompletionItem] = []
        incomplete = False
        try:
            if jedi_task is not None:
                try:
                    jedi_items = await jedi_task
                except Exception as exc:  # noqa: BLE001 - jedi failing on odd code must not cost the AI item
                    ls.degraded("jedi", exc, "jedi's completions are missing")
                    jedi_items = None
                if jedi_items is None:
                    incomplete = True  # timed out or skipped: ask again on the next keystroke
                else:
                    items.extend(jedi_items)
            if ai_task is not None:
                wait = settings.completion.list_wait_ms / 1000
                if invoked:
                    wait = max(wait, settings.backend.inline_timeout)
                done, _ = await asyncio.wait({ai_task}, timeout=wait)
                if ai_task in done:
                    sug = None if ai_task.cancelled() or ai_task.exception() else ai_task.result()
                    if sug is not None:
                        items.insert(0, ai_item(sug, cur.line_prefix, uri, language))
                else:
                    # The model is slow: answer with what is ready; the finished suggestion lands in the
                    # cache and comes with the client's next request for this incomplete list.
                    incomplete = True
        except asyncio.CancelledError:
            if ai_task is not None:
                ai_task.cancel()
            raise
        return types.CompletionList(is_incomplete=incomplete, items=items)


def _swallow(fut: asyncio.Future) -> None:
    # Failures were reported by the engine (once); a list must not raise because of them.
    if not fut.cancelled():
        fut.exception()
