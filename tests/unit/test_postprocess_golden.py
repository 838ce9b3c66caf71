"""Golden post-processing cases: real-looking (prefix, suffix, raw model output) -> the suggestion a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hapa_lsp.postprocess import Cursor, clean

CASES = json.loads((Path(__file__).parent / "golden" / "postprocess_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case):
    got = clean(case["raw"], Cursor.at(case["prefix"], case["suffix"], case["language"]))
    assert got == case["expected"], case["why"]


def test_golden_file_covers_each_syntax_rule():
    names = {c["name"] for c in CASES}
    assert len(CASES) >= 20
    # Cut to a parsing prefix, dropped, brackets closed, brackets left alone, duplicated closers removed.
    assert {"broken-suggestion-cut-to-parsing-prefix", "invalid-syntax-dropped", "close-call-when-suffix-does-not",
            "auto-inserted-paren-not-duplicated", "dict-literal-closing-line-duplicated"} <= names
    assert any(c["expected"] is None for c in CASES)
