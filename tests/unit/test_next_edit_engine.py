"""Where a next edit goes: the region around the cursor, or the next place the last change calls for."""

from __future__ import annotations

from hapa_lsp.context.syntax import code_only
from hapa_lsp.next_edit.engine import changed_symbols, jump_target, lines_of

RENAME = "@@ -1,2 +1,2 @@\n-def run(count):\n+def run(total):\n     x = 1\n"
ADD = "@@ -1 +1 @@\n-def area(w):\n+def area(w, h):\n"


def test_a_rename_and_an_added_parameter_are_told_apart():
    assert changed_symbols(RENAME) == ({"count"}, set())  # a renamed parameter changes no call
    assert changed_symbols(ADD) == (set(), {"area"})


def test_the_jump_goes_to_the_next_use_below_the_region_then_above_it():
    lines = lines_of("def run(total):\n" + "    x = 1\n" * 20 + "    return count\n")
    assert jump_target(lines, (0, 6), RENAME) == 21
    assert jump_target(lines, (15, 22), RENAME) is None  # the use is in the region: no jump
    above = lines_of("print(area(2))\n\n\n\n\ndef area(w, h):\n    return w\n")
    assert jump_target(above, (3, 7), ADD) == 0


def test_a_function_named_in_a_comment_or_docstring_is_no_call_site():
    text = 'def area(w, h):\n    """area(w) is ..."""\n    # area(3) is 3\n    return w\n\n\nprint(area(5))\n'
    lines = lines_of(text)
    code = lines_of(code_only(text))
    assert jump_target(lines, (0, 1), ADD, code) == 6
    assert jump_target(lines, (0, 1), ADD) == 1  # without the mask, prose would be taken for a call


def test_code_only_blanks_strings_and_comments_and_keeps_every_line():
    text = 'x = "f(a)"  # g(b)\ns = """\nf(c)\n"""\ny = f(d)\n'
    out = code_only(text)
    assert len(out) == len(text) and out.count("\n") == text.count("\n")
    assert "f(a)" not in out and "g(b)" not in out and "f(c)" not in out
    assert out.splitlines()[-1] == "y = f(d)"
