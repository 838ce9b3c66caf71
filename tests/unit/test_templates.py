"""FIM templates per model family, chosen from the model name, with their stop tokens."""

from __future__ import annotations

import pytest

from hapa_lsp.prompts import TEMPLATES, build_fim_prompt, family_for


@pytest.mark.parametrize("model,family", [
    ("qwen2.5-coder:1.5b-base", "qwen"), ("Qwen/Qwen2.5-Coder-7B", "qwen"),
    ("starcoder2:3b", "starcoder"), ("bigcode/starcoder", "starcoder"),
    ("codellama:7b-code", "codellama"), ("deepseek-coder:1.3b-base", "deepseek"),
    ("codestral-latest", "codestral"), ("codegemma:2b", "codegemma"),
    ("gpt-4o-mini", "chat"), ("llama3.1:8b", "chat"), ("mistral-large", "chat"),
])
def test_family_from_model_name(model, family):
    assert family_for(model) == family


def test_override_wins():
    assert family_for("gpt-4o", "starcoder") == "starcoder"


@pytest.mark.parametrize("family,expected", [
    ("qwen", "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"),
    ("starcoder", "<fim_prefix>P<fim_suffix>S<fim_middle>"),
    ("codellama", "<PRE> P <SUF>S <MID>"),
    ("deepseek", "<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>"),
    ("codestral", "[SUFFIX]S[PREFIX]P"),
    ("codegemma", "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"),
])
def test_render(family, expected):
    assert TEMPLATES[family].render("P", "S") == expected


def test_every_template_stops_on_its_own_fim_tokens():
    for t in TEMPLATES.values():
        assert t.prefix_token.strip() in t.stop or t.prefix_token in t.stop
        assert t.stop


def test_chat_only_models_get_a_hole_filling_chat_prompt():
    p = build_fim_prompt(model="gpt-4o", family_override="auto", prefix="def f():\n    ", suffix="\n",
                         language="python", path="/w/a.py", max_tokens=64, temperature=0.1, single_line=False)
    assert p.template is None
    assert p.messages[0].role == "system" and "<FILL_HERE>" in p.messages[1].content
    assert "def f():\n    <FILL_HERE>\n" in p.messages[1].content


def test_single_line_adds_newline_stop():
    p = build_fim_prompt(model="starcoder2", family_override="auto", prefix="x = ", suffix=")", language="python",
                         path="", max_tokens=8, temperature=0, single_line=True)
    assert "\n" in p.stop and "<fim_prefix>" in p.stop
