"""Consecutive keystrokes get prompts with a common start, so a model server's prompt cache can reuse it.

Local servers (llama.cpp ``cache_prompt``, vLLM prefix caching, Ollama) skip evaluating the part of a prompt
that equals the start of the previous one. The window's edges must therefore not move on every keystroke:
while the user types along a line, everything before the cursor is the same text as in the previous prompt.
"""

from __future__ import annotations

import os
import random
from itertools import pairwise

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapa_lsp.config import Settings
from hapa_lsp.context import split_at, window_for_chars, window_step
from hapa_lsp.context.builder import BuiltContext, ContextEngine
from hapa_lsp.context.facts import Fact

TYPED = "        result = compute_total(values, weights) + offset_value  # done"
ROW = 1500


def _document(n: int = 3000, seed: int = 7) -> list[str]:
    """Lines of 5 to ~100 characters, indented like code (a big file: the window is a small part of it)."""
    rng = random.Random(seed)
    words = ["value", "total", "self", "items", "count", "result", "data", "index", "name", "key"]
    return ["    " * rng.randint(0, 3) + " = ".join(rng.choice(words) + str(rng.randint(0, 99))
                                             for _ in range(rng.randint(1, 8))) for _ in range(n)]


def _engine(*, ratio: float = 0.75, tokenizer: str = "", chars_per_token: float = 3.4) -> ContextEngine:
    s = Settings()
    ctx = attrs.evolve(s.context, facts=False, neighbour_snippets=0, prefix_ratio=ratio, tokenizer_path=tokenizer,
                       chars_per_token=chars_per_token)
    ce = ContextEngine(attrs.evolve(s, context=ctx), runner=None, root="/w", environ={})
    ce.counter_loaded().result(timeout=10)
    return ce


def _type_line(ce: ContextEngine, facts: list[Fact] = ()) -> list[BuiltContext]:
    """Type TYPED into an empty line in the middle of the document, one character per prompt."""
    lines = _document()
    lines.insert(ROW, "")
    built = []
    for col in range(1, len(TYPED) + 1):
        lines[ROW] = TYPED[:col]
        req = ce.start(uri="file:///w/a.py", path="/w/a.py", language="python", text="\n".join(lines), line=ROW,
                       character=col)
        req.facts = list(facts)
        b = ce.assemble(req)
        assert ce.counter.count(b.prompt.budgeted_text()) == b.tokens <= b.budget
        built.append(b)
    return built


def _shares(built: list[BuiltContext]) -> list[float]:
    texts = [b.prompt.raw() for b in built]
    for a, b in pairwise(texts):
        # Everything before the cursor (other files, the window's first line onwards) is the previous prompt's.
        assert b.startswith(a[:a.index("<|fim_suffix|>")])
    return [len(os.path.commonprefix([a, b])) / len(b) for a, b in pairwise(texts)]


@pytest.mark.timeout(30)
def test_typing_along_a_line_keeps_the_window_start():
    built = _type_line(_engine())
    assert len({b.window.prefix.split("\n", 1)[0] for b in built}) == 1
    assert all(b.window.prefix_truncated for b in built)
    # Only the text after the cursor (a quarter of the window) is new: the ceiling with prefixRatio 0.75.
    assert min(_shares(built)) > 0.7


@pytest.mark.timeout(30)
def test_with_a_small_suffix_share_the_prompt_is_nine_tenths_shared():
    built = _type_line(_engine(ratio=0.9))
    assert min(_shares(built)) >= 0.88


@pytest.mark.timeout(30)
def test_other_files_first_and_the_window_start_stays_put():
    facts = [Fact(f"/w/lib/m{i}.py", 10 * i + 1, f"helper_{i}", "function",
                  f"def helper_{i}(values: list[int], weight: float = 1.0) -> float: ...", rank=i) for i in range(6)]
    built = _type_line(_engine(ratio=0.9), facts)
    assert all(b.prompt.raw().startswith("<|repo_name|>") for b in built)
    assert all(sum(p.source == "fact" for p in b.pieces) == 6 for b in built)
    assert min(_shares(built)) >= 0.88


@pytest.mark.timeout(30)
def test_an_exact_tokenizer_that_counts_more_than_the_estimate_keeps_it_too(tmp_path):
    from tests.unit.test_context_tokens import _write_tokenizer

    # A word-level tokenizer counts far more tokens than 8 characters a token: the window shrinks, by rungs.
    tok = _write_tokenizer(tmp_path / "tok" / "tokenizer.json")
    ce = _engine(tokenizer=str(tok), chars_per_token=8.0)
    assert ce.counter.exact
    built = _type_line(ce)
    assert len({b.window.prefix.split("\n", 1)[0] for b in built}) == 1
    assert all(b.tokens > 0.85 * b.budget for b in built)  # the ladder costs little of the budget
    _shares(built)


@pytest.mark.timeout(30)
def test_the_window_is_the_same_for_the_same_inputs():
    text = "\n".join(_document(400))
    cur = split_at(text, 200, 7)
    assert window_for_chars(cur, 3000, 0.75) == window_for_chars(split_at(text, 200, 7), 3000, 0.75)
    assert window_step(6000) == 128 and window_step(8192) == 256 and window_step(40) == 1


line = st.lists(st.sampled_from(list("abc xyz_=()") + ["    ", "é", "🙂"]), max_size=60).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line, min_size=1, max_size=300).map(lambda ls: ls * (300 // len(ls))), row=st.integers(0, 299), col=st.integers(0, 60),
       budget=st.integers(0, 3000), ratio=st.floats(0.05, 1.0), typed=st.text("abcd_ (", min_size=1, max_size=30))
@pytest.mark.timeout(60)
def test_window_within_budget_line_aligned_and_stable_while_typing(lines, row, col, budget, ratio, typed):
    row = min(row, len(lines) - 1)
    text = "\n".join(lines)
    cur = split_at(text, row, col, "utf-32")
    win = window_for_chars(cur, budget, ratio)
    off = cur.offset
    pstart, send = off - len(win.prefix), off + len(win.suffix)
    assert text[pstart:off] == win.prefix and text[off:send] == win.suffix
    assert len(win.prefix) + len(win.suffix) <= budget
    assert win.prefix_truncated == (pstart > 0) and win.suffix_truncated == (send < len(text))
    # Whole lines, unless the cursor's own line alone is over the budget of its side.
    assert pstart == 0 or text[pstart - 1] == "\n" or "\n" not in win.prefix
    assert send == len(text) or text[send - 1] == "\n" or "\n" not in win.suffix
    # Type along the line: while the column stays in its grid cell (and the lines before the cursor's reach the
    # grid point), the window's first line does not move.
    step = window_step(budget)
    if cur.character + len(typed) + 2 * step > int(budget * ratio):
        return
    for i in range(1, len(typed) + 1):
        if (cur.character + i) // step != cur.character // step:
            break
        new = split_at(text[:off] + typed[:i] + text[off:], row, cur.character + i, "utf-32")
        new_win = window_for_chars(new, budget, ratio)
        if win.prefix_truncated and new_win.prefix_truncated:
            assert new.offset - len(new_win.prefix) == pstart
