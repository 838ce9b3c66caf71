"""Generation prompts: the profile visibly changes them, agents add their instructions, answers are split and
re-indented correctly."""

from __future__ import annotations

import pytest

from hapa_lsp import errors
from hapa_lsp.config import Agent, ProfileSettings
from hapa_lsp.edits import reindent
from hapa_lsp.generation import Profile, GenerationRequest, build_messages, repair_messages, split_answer


def system(**profile: str) -> str:
    return build_messages(GenerationRequest("generate", question="sum a list", profile=Profile(**profile)))[0].content


def test_beginner_and_expert_prompts_differ_in_what_the_user_sees():
    beginner = system(python_skill_level="beginner", code_output_structure="detailed",
                      explanation_style="educational")
    expert = system(python_skill_level="expert", code_output_structure="minimal", explanation_style="brief")
    assert "comment above every step" in beginner and "Args, Returns, Raises" in beginner
    assert "exercise" in beginner
    assert "terse" in expert and "fully type-hinted" in expert and "no docstrings" in expert
    assert "one sentence" in expert
    assert "comment above every step" not in expert


def test_every_profile_value_changes_the_system_prompt():
    seen = set()
    for level in ("beginner", "intermediate", "advanced", "expert"):
        for structure in ("minimal", "standard", "detailed"):
            for style in ("brief", "standard", "detailed", "educational"):
                seen.add(system(python_skill_level=level, code_output_structure=structure,
                                explanation_style=style))
    assert len(seen) == 4 * 3 * 4


def test_profile_from_settings_and_command_override():
    base = Profile.from_settings(ProfileSettings(python_skill_level="advanced"))
    merged = base.merged({"explanationStyle": "brief", "code_output_structure": "minimal"})
    assert merged == Profile("advanced", "minimal", "brief")
    assert merged.to_dict() == {"pythonSkillLevel": "advanced", "codeOutputStructure": "minimal",
                                "explanationStyle": "brief"}


@pytest.mark.parametrize("override,field", [
    ({"pythonSkillLevel": "guru"}, "user_profile.pythonSkillLevel"),
    ({"explanation_style": "long"}, "user_profile.explanationStyle"),
    ({"favouriteColour": "red"}, "user_profile.favouriteColour"),
    ("expert", "user_profile"),
])
def test_bad_profile_fields_are_named(override, field):
    with pytest.raises(errors.InputError) as info:
        Profile().merged(override)
    assert info.value.code == "E4001" and info.value.field == field


def test_agent_instructions_come_before_the_profile():
    agent = Agent(name="Reviewer", system_prompt="You review code for security problems.")
    msgs = build_messages(GenerationRequest("agent", target="eval(x)", agent=agent))
    assert "You review code for security problems." in msgs[0].content
    assert "```python\neval(x)\n```" in msgs[1].content


def test_tasks_carry_the_target_and_the_module_for_tests():
    tests = build_messages(GenerationRequest("tests", target="def f(): ...", module="pkg.shop"))[1].content
    assert "module `pkg.shop`" in tests and "def f(): ..." in tests and "pytest" in tests
    explain = build_messages(GenerationRequest("explain", target="x = 1"))
    assert "Answer in Markdown" in explain[0].content and "fenced code block" not in explain[0].content


def test_repair_prompt_quotes_the_answer_and_the_error():
    msgs = build_messages(GenerationRequest("generate", question="q"))
    repair = repair_messages(msgs, "```python\ndef f(\n```", "SyntaxError at line 1, column 7: '(' was never closed",
                             "python")
    assert [m.role for m in repair] == ["system", "user", "assistant", "user"]
    assert "line 1, column 7" in repair[-1].content


@pytest.mark.parametrize("answer,code,explanation", [
    ("```python\nx = 1\n```\nSets x.", "x = 1", "Sets x."),
    ("Here you go:\n```py\nx = 1\ny = 2\n```", "x = 1\ny = 2", "Here you go:"),
    ("x = 1\n", "x = 1", ""),
    ("```python\nx = 1\n", "x = 1", ""),  # a stream cut before the closing fence
    ("```python\nprint('```')\n```\n", "print('```')", ""),
])
def test_split_answer(answer, code, explanation):
    assert split_answer(answer) == (code, explanation)


def test_reindent_keeps_relative_indentation_and_blank_lines():
    code = "    if x:\n        return 1\n\n    return 2\n"
    assert reindent(code, "        ") == "        if x:\n            return 1\n\n        return 2"
