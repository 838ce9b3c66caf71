"""hapa_lsp.targets: what a code action acts on, found from the text alone."""

from __future__ import annotations

from hapa_lsp.targets import Target, comment_block, stub_at


def test_a_comment_describing_code_is_a_target_and_spans_its_block():
    lines = ["x = 1", "# parse the config file and", "# return its sections", "y = 2"]
    assert comment_block(lines, 1) == Target("comment", 1, 2)
    assert comment_block(lines, 2) == Target("comment", 1, 2)
    assert comment_block(lines, 0) is None


def test_a_todo_is_its_own_target():
    lines = ["# explain the module here", "# TODO: handle empty input", "# two words"]
    assert comment_block(lines, 1) == Target("todo", 1, 1)
    assert comment_block(lines, 0) == Target("comment", 0, 0)  # the TODO below is not part of it
    assert comment_block(lines, 2) is None  # two words describe no code


def test_machinery_and_commented_out_code_are_not_descriptions():
    assert comment_block(["#!/usr/bin/env python3 and more words"], 0) is None
    assert comment_block(["# type: ignore the rest of it"], 0) is None
    assert comment_block(["# total = sum(prices) + tax"], 0) is None
    assert comment_block(["// compute the total price here"], 0) == Target("comment", 0, 0)


def test_a_stub_function_is_found_from_inside_it_with_its_docstring():
    lines = ["@cache", "def load(path: str,", "         strict: bool = False) -> dict:", '    """Read it."""',
             "    ...", "", "def done():", "    return 1"]
    found = stub_at(lines, 4)
    assert found == (Target("stub", 1, 4), 3, 4)  # from the def to the stub statement; body starts at 3
    assert stub_at(lines, 2) == found  # the cursor on the signature
    assert stub_at(lines, 7) is None  # a real body
    assert stub_at(lines, 5) is None  # below the stub


def test_pass_and_not_implemented_are_stubs_and_a_multiline_docstring_is_skipped():
    lines = ["def f():", '    """One.', "", '    Two."""', "    raise NotImplementedError('later')"]
    assert stub_at(lines, 0) == (Target("stub", 0, 4), 1, 4)
    assert stub_at(["def g():", "    pass"], 1) == (Target("stub", 0, 1), 1, 1)
    assert stub_at(["def h():", "    x = 1", "    pass"], 2) is None
