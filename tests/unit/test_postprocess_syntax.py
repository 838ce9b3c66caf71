"""Syntax-aware post-processing: parse checks, bracket closing, duplicated closing lines, one-line decisions."""

from __future__ import annotations

from hapa_lsp.postprocess import Cursor, clean, close_brackets, drop_duplicate_closers, fix_syntax


def test_suggestion_that_breaks_parsing_code_is_cut_to_longest_parsing_prefix():
    cur = Cursor.at("def total(items):\n    ", "\n\n\nprint(total([]))\n")
    assert fix_syntax("s = 0\n    for i in items:\n        s += i\n    return s +", cur) == \
        "s = 0\n    for i in items:\n        s += i"


def test_suggestion_with_nothing_parseable_is_dropped():
    cur = Cursor.at("x = 1\n", "\ny = 2\n")
    assert fix_syntax("]]]", cur) is None
    assert clean("]]]", cur) is None


def test_no_syntax_verdict_when_the_code_was_broken_before():
    cur = Cursor.at("def f(:\n    ", "\n")
    assert fix_syntax("return ((", cur) == "return (("


def test_other_languages_get_no_python_parse_check():
    cur = Cursor.at("function f() {\n  ", "\n}\n", "javascript")
    assert clean("return a +;", cur) == "return a +;"


def test_brackets_closed_only_when_the_suffix_does_not():
    assert close_brackets("a, b", Cursor.at("x = max(", "\n")) == "a, b)"
    assert close_brackets("a, b", Cursor.at("x = max(", ")\n")) == "a, b"
    # A bracket opened lines before the cursor is not the suggestion's to close.
    assert close_brackets("b,", Cursor.at("x = max(\n    a,\n    ", "\n")) == "b,"


def test_duplicated_closing_lines_removed():
    cur = Cursor.at("data = [\n    ", "\n]\nprint(data)\n")
    assert drop_duplicate_closers("1,\n    2,\n]", cur) == "1,\n    2,"
    # A closer the suffix does not have stays.
    assert drop_duplicate_closers("1,\n]", Cursor.at("data = [\n    ", "\nprint(data)\n")) == "1,\n]"


def test_engine_decision_keeps_single_line_at_end_of_line():
    # The context engine decided "one line" (end of a statement line): a multi-line answer keeps its first line.
    cur = Cursor.at("total = ", "\n", single_line=True)
    assert clean("price * qty\nprint(total)", cur) == "price * qty"


def test_legacy_three_field_cursor_still_works():
    assert clean("return a + b\n", Cursor("    ", "", "\n")) == "return a + b"
