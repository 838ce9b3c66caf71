"""textDocument/inlineCompletion (LSP 3.18): ghost text while typing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lsprotocol import types

from hapa_lsp.protocol import rpc_error
from hapa_lsp import errors
from hapa_lsp.documents import doc_key, fs_path, name_of
from hapa_lsp.features.common import after_response, bind_request, language_of, open_document, position_encoding
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.engine import Suggestion
    from hapa_lsp.server import HapaServer

ACCEPT_COMMAND = "hapa.didAcceptCompletion"


def accept_command(sug: Suggestion, uri: str, language: str) -> types.Command:
    """The command an editor runs when the user accepts a suggestion (feedback and acceptance rate)."""
    return types.Command(title="Accept hapa suggestion", command=ACCEPT_COMMAND,
                         arguments=[{"request_id": sug.request_id, "uri": uri, "language": language,
                                     "model": sug.model, "source": sug.source, "length": len(sug.text)}])


def register(server: HapaServer) -> None:
    """Register the inline completion provider (advertised explicitly: pygls does not without options)."""

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: HapaServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList | None:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        uri = params.text_document.uri
        rid = ls.engine.next_request_id()
        bind_request(rid, types.TEXT_DOCUMENT_INLINE_COMPLETION)
        try:
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
                                          language=language, text=doc.source,
                                          line=pos.line, character=pos.character, invoked=invoked,
                                          encoding=position_encoding(ls), request_id=rid)
        except errors.HapaError as exc:
            if invoked:
                if exc.code != "E4006" and not getattr(exc, "recorded", False):
                    ls.record_incident(exc, types.TEXT_DOCUMENT_INLINE_COMPLETION)
                raise rpc_error(exc) from exc
            return None  # automatic requests fail quietly; background_failure already told the user once
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not take typing down with it
            err = errors.as_hapa_error(exc)
            get_logger().exception("inline completion failed", incident_id=err.incident_id)
            ls.background_failure(err, method=types.TEXT_DOCUMENT_INLINE_COMPLETION)
            if invoked:
                raise rpc_error(err) from exc
            return None
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
