"""The multi-line decision from the syntax around the cursor."""

from __future__ import annotations

import pytest

from hapa_lsp.context.syntax import decide, open_brackets, parses, region_at


@pytest.mark.parametrize("prefix,suffix,multiline,reason", [
    ("x = compute(", ")\n", False, "mid-line"),
    ("for item in ", ":\n", False, "mid-line"),
    ("def f(a):\n    ", "\n", True, "empty-line"),
    ("class A:\n    def m(self):\n        x = 1\n        ", "\n        return x\n", True, "empty-line"),
    ("def f(a):", "\n", True, "after-colon"),
    ("if ready:  # go", "\n", True, "after-colon"),
    ("total = ", "\n", False, "end-of-line"),
    ("result = compute(\n    alpha,", "\n", True, "open-bracket"),
    ("s = ')('", "\n", False, "end-of-line"),
])
def test_decision(prefix, suffix, multiline, reason):
    d = decide(prefix, prefix.rsplit("\n", 1)[-1], suffix.split("\n", 1)[0], "python")
    assert (d.multiline, d.reason) == (multiline, reason)


def test_brackets_in_strings_and_comments_do_not_count():
    assert open_brackets("f('(', \"[\")  # {") == ""
    assert open_brackets("f(g([1, 2]") == "(("
    assert open_brackets("x = {\"a\": [1, (2") == "{[("


def test_region_is_the_enclosing_top_level_statement():
    reg = region_at("import os\n\ndef f():\n    x = 1\n    ", "\n    return x\n\nprint(f())\n")
    assert reg is not None
    assert reg.before == "def f():\n    x = 1\n    "
    assert reg.after == "\n    return x\n"
    assert parses(reg.before + "y = 2" + reg.after)
    assert not parses(reg.before + "y = (" + reg.after)


def test_window_starting_inside_a_block_has_no_region():
    assert region_at("    x = 1\n    ", "\n") is None
