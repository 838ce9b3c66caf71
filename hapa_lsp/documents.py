"""Open documents: pygls' TextDocument with an incremental edit that does not rebuild the text line by line.

pygls applies every keystroke by splitting the whole document into lines and writing them back one by
one through a StringIO: ~2 ms per keystroke on a 4,600-line file, on the event loop. Here an edit finds
its two offsets by walking from the line the previous edit touched (its start never moves when the edit
is at or below it) and splices the string once.
"""

from __future__ import annotations

import types as _pytypes
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.workspace import TextDocument

from hapa_lsp.context import has_lone_cr, remember_line_breaks, split_at, split_near

if TYPE_CHECKING:
    from pygls.workspace import Workspace


class FastTextDocument(TextDocument):
    """A TextDocument whose incremental edits cost a splice, not a rebuild."""

    _hint: tuple[int, int] | None = None  # (line, offset of its start) where the last edit began

    def _encoding(self) -> str:
        enc = self._position_codec.encoding
        return str(getattr(enc, "value", enc) or "utf-16")

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        text = self.source
        enc = self._encoding()
        rng = change.range
        hint = self._hint
        if hint is None:
            start = split_at(text, rng.start.line, rng.start.character, enc)
        else:
            start = split_near(text, rng.start.line, rng.start.character, enc, hint[0], hint[1])
        start_line_offset = start.offset - start.character
        if (rng.end.line, rng.end.character) == (rng.start.line, rng.start.character):
            end_offset = start.offset
        else:
            end = split_near(text, rng.end.line, rng.end.character, enc, start.line, start_line_offset)
            end_offset = max(start.offset, end.offset)
        self._source = text[: start.offset] + change.text + text[end_offset:]
        # A lone CR (a line break for LSP) can only appear through the new text or where the edit joins
        # a CR to what follows: everything else keeps the old answer, with no scan of the document.
        if (not has_lone_cr(text) and "\r" not in change.text
                and not (start.offset > 0 and text[start.offset - 1] == "\r")):
            remember_line_breaks(self._source, False)
        # The edit began on this line, so the line's start did not move.
        self._hint = (start.line, start_line_offset)

    def _apply_full_change(self, change: types.TextDocumentContentChangeEvent) -> None:
        self._hint = None
        super()._apply_full_change(change)


def install(workspace: Workspace) -> None:
    """Make ``workspace`` create FastTextDocuments for the documents the editor opens."""

    def create(self: Any, doc_uri: str, source: str | None = None, version: int | None = None,
               language_id: str | None = None) -> TextDocument:
        return FastTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                                sync_kind=self._sync_kind, position_codec=self._position_codec)

    # pygls has no public hook for the document class; this is the method its Workspace calls.
    workspace._create_text_document = _pytypes.MethodType(create, workspace)  # type: ignore[method-assign]
