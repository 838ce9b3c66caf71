"""hapa_lsp.edits: where generated code goes and how it is indented; pure functions, no session."""

from __future__ import annotations

from lsprotocol import types

from hapa_lsp.edits import (block_indent, edit_diagnostics, full_lines, indent_of, insert_below, insertion_at,
                            issue_diagnostics, module_name, reindent, text_of)
from hapa_lsp.validation import validate


def _rng(a: int, b: int, c: int, d: int) -> types.Range:
    return types.Range(types.Position(a, b), types.Position(c, d))


def test_indentation_of_a_line_and_of_a_blank_line_in_a_block():
    lines = ["class A:", "    def f(self):", "", "        x = 1", ""]
    assert indent_of("    x") == "    " and indent_of("\tx") == "\t" and indent_of("x") == ""
    assert block_indent(lines, 2) == "        "  # after a colon: one level deeper than the def
    assert block_indent(lines, 4) == "        "  # after a statement: the same level
    assert block_indent(["", ""], 1) == ""


def test_reindent_dedents_then_prefixes_every_non_blank_line():
    assert reindent("    a = 1\n\n    b = 2\n", "  ") == "  a = 1\n\n  b = 2"
    assert reindent("\tif x:\n\t\ty()", "    ") == "    if x:\n        y()"  # tabs become spaces under spaces


def test_insertion_replaces_a_blank_line_or_goes_below_a_code_line():
    lines = ["def f():", "    ", "x = 1"]
    blank = insertion_at(lines, 1, "return 2")
    assert blank.range == _rng(1, 0, 1, 4) and blank.new_text == "    return 2"
    below = insertion_at(lines, 0, "return 3")
    assert below.range == _rng(1, 0, 1, 0) and below.new_text == "    return 3\n"
    last = insertion_at(lines, 2, "y = 2")
    assert last.range == _rng(2, 5, 2, 5) and last.new_text == "\ny = 2"
    assert insertion_at(lines, 99, "z") == insertion_at(lines, 2, "z")  # clamped into the document


def test_insert_below_a_row():
    assert insert_below(["a", "b"], 0, "x") == types.TextEdit(_rng(1, 0, 1, 0), "x\n")
    assert insert_below(["a", "b"], 1, "x") == types.TextEdit(_rng(1, 1, 1, 1), "\nx")


def test_selections_widen_to_whole_lines():
    lines = ["aa", "bbb", "c", ""]
    assert full_lines(lines, _rng(0, 1, 1, 2)) == _rng(0, 0, 1, 3)
    assert full_lines(lines, _rng(1, 2, 0, 1)) == _rng(0, 0, 1, 3)  # backwards selections too
    assert full_lines(lines, _rng(0, 0, 2, 0)) == _rng(0, 0, 1, 3)  # ending at column 0: the line before
    assert full_lines(lines, _rng(0, 0, 40, 0)) == _rng(0, 0, 2, 1)  # past the end: clamped, then column 0
    assert text_of(lines, _rng(0, 0, 1, 3)) == "aa\nbbb"


def test_issues_land_where_the_inserted_code_is():
    code = "def f(x):\n    return eval(x)\n"
    report = validate(code, "python")
    assert report.issues, "the check for eval() changed"
    edit = types.TextEdit(_rng(4, 0, 4, 0), "\n" + reindent(code, "    "))
    diags = edit_diagnostics(edit, report)
    unused = next(i for i in report.issues if i.rule == "dynamic-eval")
    d = next(d for d in diags if d.code == unused.rule)
    assert d.range.start.line == 5 + unused.line  # one leading newline, then the code
    assert d.range.start.character == unused.column + 4 and d.source == "hapa"
    assert edit_diagnostics(edit, None) == []
    assert issue_diagnostics([], 0, 0) == []


def test_module_names_relative_to_the_workspace():
    assert module_name("/w/src/pkg/mod.py", "/w") == "pkg.mod"
    assert module_name("/w/pkg/__init__.py", "/w") == "pkg"
    assert module_name("/elsewhere/tool.py", "/w") == "tool"
    assert module_name("/w/a.py", None) == "a"
