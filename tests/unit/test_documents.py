"""FastTextDocument applies incremental edits exactly as pygls' TextDocument does, without the rebuild."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import PositionCodec

from hapa_lsp.protocol import FastTextDocument

CHARS = st.sampled_from(list("ab (é😀") + ["\n", "\r\n", "\r"])  # LSP: a lone CR breaks a line too
TEXT = st.lists(CHARS, max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.lists(st.tuples(st.integers(0, 12), st.integers(0, 14), st.integers(0, 3), st.integers(0, 14),
                                 TEXT), min_size=1, max_size=8),
       st.sampled_from(["utf-16", "utf-8", "utf-32"]))
def test_same_text_as_pygls_after_any_edits(text, edits, encoding):
    codec = PositionCodec(encoding=encoding)
    ours = FastTextDocument("file:///a.py", text, position_codec=codec)
    theirs = TextDocument("file:///a.py", text, position_codec=codec)
    for line, col, extra_lines, end_col, new in edits:
        end_line = line + extra_lines
        # Keep the range ordered, as editors send it.
        if extra_lines == 0:
            end_col = max(col, end_col)
        change = types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(line, col), types.Position(end_line, end_col)), text=new)
        lines = theirs.lines
        if line >= len(lines) or end_line >= len(lines):
            continue  # pygls' own behaviour past the end differs by line; ours clamps, tested below
        if any(len(ln.rstrip("\r\n")) < c for ln, c in ((lines[line], col), (lines[end_line], end_col))):
            continue
        ours.apply_change(change)
        theirs.apply_change(change)
        assert ours.source == theirs.source


def test_edits_past_the_end_are_clamped():
    doc = FastTextDocument("file:///a.py", "ab\ncd")
    doc.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(9, 9), types.Position(9, 9)), text="!"))
    assert doc.source == "ab\ncd!"
    doc.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(0, 1), types.Position(7, 0)), text="X"))
    assert doc.source == "aX"


def test_typing_many_keystrokes_keeps_the_text_exact():
    body = "def f(x):\n    return [i * 2 for i in range(x)]\n"
    doc = FastTextDocument("file:///a.py", "# top\n\n# bottom\n")
    line, col = 1, 0
    for ch in body:
        doc.apply_change(types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(line, col), types.Position(line, col)), text=ch))
        line, col = (line + 1, 0) if ch == "\n" else (line, col + 1)
    assert doc.source == "# top\n" + body + "\n# bottom\n"
