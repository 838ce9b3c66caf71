"""Splitting a document at an LSP position: clamping, encodings, and the walk from a known line start."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lsprotocol import types
from pygls.workspace import TextDocument

from hapa_lsp.context import split_at, split_near

LINES = st.lists(st.text(alphabet=st.sampled_from(list("ab \t(é😀\r")), max_size=12), min_size=1, max_size=30)


def test_positions_are_clamped():
    cur = split_at("ab\ncd", 9, 9)
    assert (cur.line, cur.character, cur.offset, cur.line_prefix) == (1, 2, 5, "cd")
    cur = split_at("ab\ncd", 0, 99)
    assert (cur.line, cur.offset, cur.line_suffix) == (0, 2, "")


def test_utf16_and_utf8_columns():
    text = "x = '😀é'\n"
    assert split_at(text, 0, 7, "utf-16").line_prefix == "x = '😀"  # the emoji is two UTF-16 units
    assert split_at(text, 0, 9, "utf-8").line_prefix == "x = '😀"  # and four UTF-8 bytes
    assert split_at(text, 0, 6, "utf-32").line_prefix == "x = '😀"


@settings(max_examples=300, deadline=None)
@given(LINES, st.data())
def test_split_near_equals_split_at(lines, data):
    text = "\n".join(lines)
    n = len(lines)
    known_line = data.draw(st.integers(0, n - 1))
    known = split_at(text, known_line, 0)
    line = data.draw(st.integers(0, n + 2))
    col = data.draw(st.integers(0, 20))
    a = split_at(text, line, col)
    b = split_near(text, line, col, "utf-16", known_line, known.offset)
    assert (a.offset, a.line, a.character, a.line_prefix, a.line_suffix) == (
        b.offset, b.line, b.character, b.line_prefix, b.line_suffix)


BREAKS = st.lists(st.sampled_from(["a", "é", " ", "\n", "\r", "\r\n"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(BREAKS, st.data())
def test_every_lsp_line_break_counts_as_pygls_does(text, data):
    """\n, \r\n and a lone \r each end a line (LSP 3.17); offsets agree with pygls' own position mapping."""
    doc = TextDocument("file:///a.txt", text)
    lines = doc.lines
    if not lines:
        return
    line = data.draw(st.integers(0, len(lines) - 1))
    col = data.draw(st.integers(0, len(lines[line].rstrip("\r\n"))))
    cur = split_at(text, line, col)
    assert cur.offset == doc.offset_at_position(types.Position(line, col))
    assert cur.line_prefix + cur.line_suffix == lines[line].rstrip("\r\n")


def test_a_lone_cr_starts_a_new_line():
    text = "old\rmac\r\nwin\nunix"
    assert [split_at(text, n, 0).line_suffix for n in range(4)] == ["old", "mac", "win", "unix"]
    assert split_at(text, 1, 2).offset == text.index("mac") + 2
    assert split_near(text, 3, 1, "utf-16", 2, text.index("win")).line_prefix == "u"
