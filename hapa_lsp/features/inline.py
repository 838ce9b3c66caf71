"""textDocument/inlineCompletion (LSP 3.18): ghost text while typing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from hapa_lsp.documents import doc_key, fs_path, name_of
from hapa_lsp.features.common import (accept_command, after_response, bind_request, boundary, language_of,
                                      open_document, position_encoding)
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.engine import Suggestion
    from hapa_lsp.server import HapaServer


def _automatic(params: types.InlineCompletionParams) -> bool:
    """Ghost text nobody asked for: a failure is no answer (it was reported once where it happened)."""
    return params.context.trigger_kind != types.InlineCompletionTriggerKind.Invoked


def register(server: HapaServer) -> None:
    """Register the inline completion provider (advertised explicitly: pygls does not without options)."""

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    @boundary(types.TEXT_DOCUMENT_INLINE_COMPLETION, quiet=_automatic)
    async def inline_completion(ls: HapaServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList | None:
        invoked = not _automatic(params)
        uri = params.text_document.uri
        rid = ls.engine.next_request_id()
        bind_request(rid, types.TEXT_DOCUMENT_INLINE_COMPLETION)
        if not ls.settings.completion.inline:
            return None
        doc = open_document(ls, uri)
        language = language_of(doc)
        name = name_of(doc)
        why_not = ls.engine.applies_to(name, language)
        if why_not is not None:
            if invoked:
                raise why_not
            return None
        pos = params.position
        sug = await ls.engine.suggest(uri=doc_key(uri), path=name, on_disk=fs_path(doc) is not None,
                                      language=language, text=doc.source, line=pos.line, character=pos.character,
                                      invoked=invoked, encoding=position_encoding(ls), request_id=rid)
        if sug is None:
            return None
        after_response(_log_answer, sug)
        at = types.Position(*sug.at)
        item = types.InlineCompletionItem(insert_text=sug.text, range=types.Range(at, at),
                                          command=accept_command(sug, uri, language))
        return types.InlineCompletionList(items=[item])


def _log_answer(sug: Suggestion) -> None:
    get_logger().info("inline", request_id=sug.request_id, source=sug.source, chars=len(sug.text),
                      **{k: round(v, 2) for k, v in sug.timings.items()})
