"""The prompt never exceeds its token budget, whatever the document, cursor, settings and extra context."""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapa_lsp.config import BackendSettings, ContextSettings, Settings
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.context.facts import Fact
from hapa_lsp.context.neighbours import Snippet

line = st.lists(st.sampled_from(list("abcdefxyz_ ()[]{}:=.,'\"#\t") + ["é", "漢", "🙂", "    ", "def ", "return "]),
                max_size=60).map("".join)
document = st.lists(line, min_size=1, max_size=150).map("\n".join)
models = st.sampled_from(["qwen2.5-coder:1.5b-base", "bigcode/starcoder2-3b", "codestral-latest",
                          "deepseek-coder-1.3b-base", "codellama-7b-code", "gpt-4o-mini"])
extra_text = st.text(alphabet=st.sampled_from(list("abc def():\n    ") + ["漢"]), min_size=1, max_size=600)


def _engine(max_prompt, max_tokens, ratio, extra_ratio, model, native, cpt):
    s = Settings()
    s = attrs.evolve(s, context=attrs.evolve(ContextSettings(), max_prompt_tokens=max_prompt, prefix_ratio=ratio,
                                             extra_context_ratio=extra_ratio, chars_per_token=cpt),
                     backend=attrs.evolve(BackendSettings(), completion_model=model, max_tokens=max_tokens,
                                          fim_mode="native" if native else "template"))
    ce = ContextEngine(s, runner=None, root="/w", environ={})
    ce.counter_loaded().result(timeout=10)  # one counter for the whole test, not the estimate and then another
    return ce


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=document, row=st.integers(0, 200), col=st.integers(0, 200), max_prompt=st.integers(64, 1500),
       max_tokens=st.integers(1, 600), ratio=st.floats(0.05, 0.95), extra_ratio=st.floats(0.0, 0.8),
       model=models, native=st.booleans(), cpt=st.floats(1.0, 10.0),
       facts=st.lists(extra_text, max_size=8), snippets=st.lists(extra_text, max_size=4))
def test_prompt_fits_budget(doc, row, col, max_prompt, max_tokens, ratio, extra_ratio, model, native, cpt, facts,
                            snippets):
    ce = _engine(max_prompt, max_tokens, ratio, extra_ratio, model, native, cpt)
    req = ce.start(uri="file:///w/a.py", path="/w/a.py", language="python", text=doc, line=row, character=col)
    req.facts = [Fact(f"/w/m{i}.py", 1, f"f{i}", "function", t, rank=i) for i, t in enumerate(facts)]
    req.snippets = [Snippet(f"u{i}", f"/w/n{i}.py", 0, t, 0.5) for i, t in enumerate(snippets)]
    built = ce.assemble(req)
    count = ce.counter.count(built.prompt.budgeted_text())
    assert count == built.tokens
    assert count <= built.budget <= max_prompt
    # The window is always text from around the cursor, in order.
    assert doc.endswith(built.window.suffix, 0, len(doc)) or built.window.suffix in doc
    assert built.window.prefix in doc


@settings(max_examples=15, deadline=None)
@given(doc=document, row=st.integers(0, 200), max_prompt=st.integers(64, 600), facts=st.lists(extra_text, max_size=5))
def test_prompt_fits_budget_with_an_exact_tokenizer(tmp_path_factory, doc, row, max_prompt, facts):
    from tests.unit.test_context_tokens import _write_tokenizer

    tj = _write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    ce = _engine(max_prompt, 128, 0.7, 0.4, "qwen2.5-coder:1.5b-base", False, 3.4)
    ce.update_settings(attrs.evolve(ce.settings, context=attrs.evolve(ce.settings.context, tokenizer_path=str(tj))))
    assert ce.counter_loaded().result(timeout=10).exact
    assert ce.counter.exact
    req = ce.start(uri="file:///w/a.py", path="/w/a.py", language="python", text=doc, line=row, character=0)
    req.facts = [Fact(f"/w/m{i}.py", 1, f"f{i}", "function", t, rank=i) for i, t in enumerate(facts)]
    built = ce.assemble(req)
    assert ce.counter.count(built.prompt.budgeted_text()) <= built.budget


def test_extra_context_takes_at_most_its_share_and_best_facts_win():
    ce = _engine(400, 64, 0.75, 0.25, "qwen2.5-coder:1.5b-base", False, 3.4)
    doc = "\n".join(f"value_{i} = compute({i})" for i in range(300))
    req = ce.start(uri="file:///w/a.py", path="/w/a.py", language="python", text=doc, line=150, character=0)
    req.facts = [Fact(f"/w/m{i}.py", 1, f"f{i}", "function", f"def f{i}(a, b, c): ...\n" * 3, rank=i)
                 for i in range(20)]
    built = ce.assemble(req)
    extra = [p for p in built.pieces if p.source == "fact"]
    assert extra and sum(p.tokens for p in extra) <= int(built.budget * 0.25)
    assert extra[0].where == "m0.py:1"  # ranked first, kept first
    assert len(extra) < 20


def test_fact_shown_in_full_by_a_neighbour_snippet_is_not_repeated():
    ce = _engine(2048, 64, 0.75, 0.35, "qwen2.5-coder:1.5b-base", False, 3.4)
    doc = "from m import area\n\nprint(area(1, 2))\n"
    req = ce.start(uri="file:///w/a.py", path="/w/a.py", language="python", text=doc, line=3, character=0)
    header = "def area(w: float, h: float) -> float:"
    req.facts = [Fact("/w/m.py", 1, "area", "function", header + '\n    """Area."""', rank=0),
                 Fact("/w/n.py", 1, "other", "function", "def other(): ...", rank=1)]
    req.snippets = [Snippet("file:///w/m.py", "/w/m.py", 0, header + "\n    return w * h\n", 0.5)]
    built = ce.assemble(req)
    assert [(p.source, p.where) for p in built.pieces if p.source in ("fact", "neighbour")] == \
        [("fact", "n.py:1"), ("neighbour", "m.py:1")]
    assert built.prompt.text().count(header) == 1
