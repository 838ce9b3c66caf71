"""Next-edit prompt formats: golden prompts from each model's published layout, answers read back, model names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hapa_lsp.next_edit.formats import (
    CURSOR,
    FORMATS,
    REGION_END,
    REGION_START,
    EditInput,
    EditPrompt,
    Event,
    build,
    format_for,
    parse,
)
from hapa_lsp.prompts import ChatMessage

# The user renamed the parameter `count` to `total`; its next use, inside the region, still says `count`.
ORIGINAL = "def average(values, count):\n    return sum(values) / count\n"
REGION = "def average(values, total):\n    return sum(values) / count\n"
RENAME = Event("src/stats.py", "@@ -3,2 +3,2 @@\n-def average(values, count):\n+def average(values, total):\n"
                               "     return sum(values) / count\n")
INP = EditInput(path="src/stats.py", language="python", events=(RENAME,), before="import math\n\n", region=REGION,
                cursor=len("def average(values, total"), after="\n\nprint(average([1, 2, 3], 3))\n",
                original_region=ORIGINAL, at_file_start=True)
FIXED = "def average(values, total):\n    return sum(values) / total\n"


# ---- golden prompts ---------------------------------------------------------------------------------------------

def test_zeta_golden_prompt():
    p = build("zeta", INP)
    assert p.raw == (
        "### Instruction:\n"
        "You are a code completion assistant and your task is to analyze user edits and then rewrite an excerpt "
        "that the user provides, suggesting the appropriate edits within the excerpt, taking into account the "
        "cursor location.\n"
        "\n"
        "### User Edits:\n"
        "\n"
        'User edited "src/stats.py":\n'
        "```diff\n"
        "@@ -3,2 +3,2 @@\n"
        "-def average(values, count):\n"
        "+def average(values, total):\n"
        "     return sum(values) / count\n"
        "\n"
        "```\n"
        "\n"
        "### User Excerpt:\n"
        "\n"
        "```src/stats.py\n"
        "<|start_of_file|>\n"
        "import math\n"
        "\n"
        "<|editable_region_start|>\n"
        "def average(values, total<|user_cursor_is_here|>):\n"
        "    return sum(values) / count\n"
        "<|editable_region_end|>\n"
        "\n"
        "\n"
        "print(average([1, 2, 3], 3))\n"
        "```\n"
        "\n"
        "### Response:\n"
        "\n"
    )
    assert p.format == "zeta" and p.messages == ()
    assert p.stop == ("<|endoftext|>",)
    # The answer repeats the excerpt's 154 characters around the region: 512 for the region plus 154 / 3 tokens.
    assert p.max_tokens == 512 + 52
    assert p.text() == p.raw


INSTINCT_SYSTEM_PUBLISHED = (
    "You are Instinct, an intelligent next-edit predictor developed by Continue.dev. Your role as an AI assistant "
    "is to help developers complete their code tasks by predicting the next edit that they will make within the "
    "section of code marked by <|editable_region_start|> and <|editable_region_end|> tags.\n"
    "\n"
    "You have access to the following information to help you make informed suggestions:\n"
    "\n"
    '- Context: In the section marked "### Context", there are context items from potentially relevant files in '
    "the developer's codebase. Each context item consists of a <|context_file|> marker, the filepath, a "
    "<|snippet|> marker, and then some content from that file, in that order. Keep in mind that not all of the "
    "context information may be relevant to the task, so use your judgement to determine which parts to "
    "consider.\n"
    '- User Edits: In the section marked "### User Edits:", there is a record of the most recent changes made to '
    "the code, helping you understand the evolution of the code and the developer's intentions. These changes are "
    "listed from most recent to least recent. It's possible that some of the edit diff history is entirely "
    "irrelevant to the developer's change. The changes are provided in a unified line-diff format, i.e. with "
    "pluses and minuses for additions and deletions to the code.\n"
    '- User Excerpt: In the section marked "### User Excerpt:", there is a filepath to the developer\'s current '
    "file, and then an excerpt from that file. The <|editable_region_start|> and <|editable_region_end|> markers "
    "are within this excerpt. Your job is to rewrite only this editable region, not the whole excerpt. The excerpt "
    "provides additional context on the surroundings of the developer's edit.\n"
    "- Cursor Position: Within the user excerpt's editable region, the <|user_cursor_is_here|> flag indicates "
    "where the developer's cursor is currently located, which can be crucial for understanding what part of the "
    "code they are focusing on. Do not produce this marker in your output; simply take it into account.\n"
    "\n"
    "Your task is to predict and complete the changes the developer would have made next in the editable region. "
    "The developer may have stopped in the middle of typing. Your goal is to keep the developer on the path that "
    "you think they're following. Some examples include further implementing a class, method, or variable, or "
    "improving the quality of the code. Make sure the developer doesn't get distracted by ensuring your "
    "suggestion is relevant. Consider what changes need to be made next, if any. If you think changes should be "
    "made, ask yourself if this is truly what needs to happen. If you are confident about it, then proceed with "
    "the changes.\n"
    "\n"
    "# Steps\n"
    "\n"
    "1. **Review Context**: Analyze the context from the resources provided, such as recently viewed snippets, "
    "edit history, surrounding code, and cursor location.\n"
    "2. **Evaluate Current Code**: Determine if the current code within the tags requires any corrections or "
    "enhancements.\n"
    "3. **Suggest Edits**: If changes are required, ensure they align with the developer's patterns and improve "
    "code quality.\n"
    "4. **Maintain Consistency**: Ensure indentation and formatting follow the existing code style.\n"
    "\n"
    "# Output Format\n"
    "\n"
    "- Provide only the revised code within the tags. Do not include the tags in your output.\n"
    "- Ensure that you do not output duplicate code that exists outside of these tags.\n"
    "- Avoid undoing or reverting the developer's last change unless there are obvious typos or errors."
)


def test_instinct_golden_prompt():
    p = build("instinct", INP)
    assert p.raw is None and p.stop == () and p.max_tokens == 512
    assert p.messages == (
        ChatMessage("system", INSTINCT_SYSTEM_PUBLISHED),
        ChatMessage("user", (
            "Reference the user excerpt, user edits, and the snippets to understand the developer's intent. Update "
            "the editable region of the user excerpt by predicting and completing the changes they would have made "
            "next. This may be a deletion, addition, or modification of code.\n"
            "\n"
            "### Context:\n"
            "\n"
            "\n"
            "### User Edits:\n"
            "\n"
            'User edited file "src/stats.py"\n'
            "\n"
            "```diff\n"
            "@@ -3,2 +3,2 @@\n"
            "-def average(values, count):\n"
            "+def average(values, total):\n"
            "     return sum(values) / count\n"
            "```\n"
            "\n"
            "### User Excerpt:\n"
            "src/stats.py\n"
            "\n"
            "import math\n"
            "\n"
            "<|editable_region_start|>\n"
            "def average(values, total<|user_cursor_is_here|>):\n"
            "    return sum(values) / count\n"
            "<|editable_region_end|>\n"
            "\n"
            "\n"
            "print(average([1, 2, 3], 3))\n"
            "```\n"
            "### Response:"
        )),
    )
    assert p.text() == p.messages[0].content + "\n" + p.messages[1].content


def test_sweep_golden_prompt():
    p = build("sweep", INP, max_tokens=300)
    assert p.raw == (
        "<|file_sep|>src/stats.py\n"
        "import math\n"
        "\n"
        "def average(values, total):\n"
        "    return sum(values) / count\n"
        "\n"
        "\n"
        "print(average([1, 2, 3], 3))\n"
        "<|file_sep|>src/stats.py.diff\n"
        "original:\n"
        "def average(values, count):\n"
        "    return sum(values) / count\n"
        "updated:\n"
        "def average(values, total):\n"
        "    return sum(values) / count\n"
        "<|file_sep|>original/src/stats.py\n"
        "def average(values, count):\n"
        "    return sum(values) / count\n"
        "<|file_sep|>current/src/stats.py\n"
        "def average(values, total):\n"
        "    return sum(values) / count\n"
        "<|file_sep|>updated/src/stats.py\n"
    )
    assert p.stop == ("<|file_sep|>", "<|endoftext|>") and p.max_tokens == 300 and p.messages == ()


def test_generic_golden_prompt():
    p = build("generic", INP, max_tokens=200)
    assert p.raw is None and p.stop == () and p.max_tokens == 200
    system, user = p.messages
    assert system.role == "system" and user.role == "user"
    assert system.content == (
        "You predict the next edit a programmer will make. You get their recent edits (unified diffs, oldest first) "
        "and an excerpt of the file they are editing, with an editable region between <|editable_region_start|> "
        "and <|editable_region_end|> and their cursor at <|user_cursor_is_here|>. Answer with the rewritten region "
        "only, between the same two markers, with the edit they are about to make applied; keep the text outside "
        "the region untouched and do not repeat it. If no change is needed, answer the region unchanged."
    )
    assert user.content == (
        "File: src/stats.py\n"
        "Language: python\n"
        "\n"
        "Recent edits (oldest first):\n"
        "```diff\n"
        "--- a/src/stats.py\n"
        "+++ b/src/stats.py\n"
        "@@ -3,2 +3,2 @@\n"
        "-def average(values, count):\n"
        "+def average(values, total):\n"
        "     return sum(values) / count\n"
        "```\n"
        "\n"
        "Excerpt:\n"
        "```\n"
        "import math\n"
        "\n"
        "<|editable_region_start|>\n"
        "def average(values, total<|user_cursor_is_here|>):\n"
        "    return sum(values) / count\n"
        "<|editable_region_end|>\n"
        "\n"
        "\n"
        "print(average([1, 2, 3], 3))\n"
        "```\n"
        "\n"
        "Rewrite the text between <|editable_region_start|> and <|editable_region_end|>."
    )


# ---- layout details ---------------------------------------------------------------------------------------------

def _inp(**kw: object) -> EditInput:
    fields: dict[str, object] = {"path": "a.py", "language": "python", "events": (), "before": "",
                                  "region": "x = 1\n", "cursor": 0, "after": "", "original_region": "x = 1\n"}
    fields.update(kw)
    return EditInput(**fields)  # type: ignore[arg-type]


def test_generic_without_events_says_none_and_a_last_line_without_newline_still_ends_before_the_marker():
    inp = _inp(region="x = 1", cursor=5, original_region="x = 1")
    user = build("generic", inp).messages[1].content
    assert user == ("File: a.py\nLanguage: python\n\nRecent edits (oldest first):\n(none)\n\n"
                    "Excerpt:\n```\n<|editable_region_start|>\nx = 1<|user_cursor_is_here|>\n"
                    "<|editable_region_end|>\n```\n\n"
                    "Rewrite the text between <|editable_region_start|> and <|editable_region_end|>.")


def test_generic_lists_edits_oldest_first_and_instinct_most_recent_first():
    first, second = Event("a.py", "@@ -1 +1 @@\n-x = 0\n+x = 1\n"), Event("b.py", "@@ -1 +1 @@\n-y\n+z\n")
    inp = _inp(events=(first, second))
    generic = build("generic", inp).messages[1].content
    assert ("```diff\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 0\n+x = 1\n```\n"
            "```diff\n--- a/b.py\n+++ b/b.py\n@@ -1 +1 @@\n-y\n+z\n```\n\nExcerpt:") in generic
    instinct = build("instinct", inp).messages[1].content
    assert ('### User Edits:\n\nUser edited file "b.py"\n\n```diff\n@@ -1 +1 @@\n-y\n+z\n```\n'
            'User edited file "a.py"\n\n```diff\n@@ -1 +1 @@\n-x = 0\n+x = 1\n```\n\n### User Excerpt:') in instinct
    zeta = build("zeta", inp).raw or ""
    assert ('### User Edits:\n\nUser edited "a.py":\n```diff\n@@ -1 +1 @@\n-x = 0\n+x = 1\n\n```\n\n'
            'User edited "b.py":\n```diff\n@@ -1 +1 @@\n-y\n+z\n\n```\n\n### User Excerpt:') in zeta


def test_zeta_without_events_or_file_start():
    raw = build("zeta", _inp(before="import os\n", at_file_start=False)).raw or ""
    assert ("### User Edits:\n\n\n\n### User Excerpt:\n\n```a.py\nimport os\n<|editable_region_start|>\n"
            "<|user_cursor_is_here|>x = 1\n<|editable_region_end|>\n```\n\n### Response:\n\n") in raw
    assert "<|start_of_file|>" not in raw


def test_zeta_keeps_only_its_trained_context_budget_nearest_the_region():
    line = "v = 'abcdefghijklmnopqrstuvwxyz0123456789'\n"  # 41 bytes + newline: 13 tokens at 3 bytes a token
    before = "".join(f"# above {i}\n{line}" for i in range(20))
    after = "".join(f"{line}# below {i}\n" for i in range(20))
    raw = build("zeta", _inp(before=before, after=after, at_file_start=True)).raw or ""
    excerpt = raw[raw.index("```a.py\n"):raw.index("\n\n### Response:")]
    assert "<|start_of_file|>" not in excerpt  # the start of the file is no longer shown
    assert "# above 19\n" in excerpt and "# above 0\n" not in excerpt
    assert "# below 0\n" in excerpt and "# below 19\n" not in excerpt
    assert 300 < len(excerpt) - len("x = 1\n") < 600  # ~150 tokens of context, as Zeta was trained
    shown_above = excerpt[len("```a.py\n"):excerpt.index(REGION_START)]
    assert before.endswith(shown_above) and before[-len(shown_above) - 1] == "\n"  # whole lines, nearest first


def test_sweep_turns_each_hunk_into_an_original_and_updated_pair():
    diff = "@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 3\n c = 4\n@@ -9,2 +9,3 @@\n x\n+y\n\\ No newline at end of file\n"
    raw = build("sweep", _inp(events=(Event("m.py", diff),))).raw or ""
    assert ("<|file_sep|>m.py.diff\noriginal:\na = 1\nb = 2\nc = 4\nupdated:\na = 1\nb = 3\nc = 4\n"
            "<|file_sep|>m.py.diff\noriginal:\nx\nupdated:\nx\ny\n<|file_sep|>original/a.py\n") in raw


# ---- parsing ----------------------------------------------------------------------------------------------------

ZETA_ANSWER = ("```src/stats.py\n<|start_of_file|>\nimport math\n\n<|editable_region_start|>\n"
               "def average(values, total):\n    return sum(values) / total<|user_cursor_is_here|>\n"
               "<|editable_region_end|>\n\n\nprint(average([1, 2, 3], 3))\n```")


def test_parse_zeta_answer():
    assert parse("zeta", ZETA_ANSWER, INP) == FIXED


@pytest.mark.parametrize("answer", [
    ZETA_ANSWER[:ZETA_ANSWER.index(REGION_END)],  # cut off by the token limit
    ZETA_ANSWER.replace(REGION_START, ""),  # no region
    ZETA_ANSWER + "\n" + ZETA_ANSWER,  # two regions
    "", "  \n",
])
def test_parse_zeta_unusable(answer: str):
    assert parse("zeta", answer, INP) is None


@pytest.mark.parametrize("answer", [
    "def average(values, total):\n    return sum(values) / total",  # the published shape: the region alone
    "def average(values, total):\n    return sum(values) / total\n",
    "```python\ndef average(values, total):\n    return sum(values) / total\n```",
    f"{REGION_START}\ndef average(values, total):\n    return sum(values) / total{CURSOR}\n{REGION_END}",
    f"def average(values, total):\n    return sum(values) / total\n{REGION_END}",
])
def test_parse_instinct_answers(answer: str):
    assert parse("instinct", answer, INP) == FIXED


@pytest.mark.parametrize("answer", [
    "```python\ndef average(values, total):\n    return sum(",  # an unclosed fence: truncated
    f"{REGION_START}\ndef average(values, total):\n    return sum(",  # a start marker without an end marker
    "", "\n\n",
])
def test_parse_instinct_unusable(answer: str):
    assert parse("instinct", answer, INP) is None


@pytest.mark.parametrize("answer", [
    "def average(values, total):\n    return sum(values) / total\n",
    "def average(values, total):\n    return sum(values) / total\n<|file_sep|>src/stats.py\n",  # stop string kept
    "def average(values, total):\n    return sum(values) / total<|endoftext|>",
])
def test_parse_sweep_answers(answer: str):
    assert parse("sweep", answer, INP) == FIXED


def test_parse_sweep_unusable():
    assert parse("sweep", "", INP) is None
    assert parse("sweep", "<|file_sep|>src/other.py\n", INP) is None


@pytest.mark.parametrize("answer", [
    f"{REGION_START}\ndef average(values, total):\n    return sum(values) / total\n{REGION_END}",
    f"```\n{REGION_START}\ndef average(values, total{CURSOR}):\n    return sum(values) / total\n{REGION_END}\n```",
    (f"Here you go:\n```python\n{REGION_START}\n```python\ndef average(values, total):\n"
     f"    return sum(values) / total\n```\n{REGION_END}\n```"),
])
def test_parse_generic_answers(answer: str):
    assert parse("generic", answer, INP) == FIXED


@pytest.mark.parametrize("answer", [
    f"```\n{REGION_START}\ndef average(values, total):\n    return sum(va",
    "def average(values, total):\n    return sum(values) / total\n",  # no markers: no region found
    f"{REGION_END}\nx\n{REGION_START}\n",
    "",
])
def test_parse_generic_unusable(answer: str):
    assert parse("generic", answer, INP) is None


def test_parse_keeps_the_regions_final_newline_convention():
    at_eof = _inp(region="x = 1", original_region="x = 1")
    assert parse("generic", f"{REGION_START}\nx = 2\n{REGION_END}", at_eof) == "x = 2"
    assert parse("sweep", "x = 2\n", at_eof) == "x = 2"
    assert parse("instinct", "x = 2", _inp()) == "x = 2\n"
    assert parse("zeta", f"{REGION_START}\n{REGION_END}", _inp()) == ""  # the region deleted


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError):
        build("fim", INP)
    with pytest.raises(ValueError):
        parse("fim", "x", INP)


# ---- format_for -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "fmt"), [
    ("zed-industries/zeta", "zeta"),
    ("zeta:7b-q8", "zeta"),
    ("hf.co/bartowski/zed-industries_zeta-GGUF:Q6_K_L", "zeta"),
    ("continuedev/instinct", "instinct"),
    ("nate/Instinct:latest", "instinct"),
    ("sweep-next-edit-1.5b", "sweep"),
    ("sweepai/Sweep-Next-Edit-1.5B", "sweep"),
    ("qwen2.5-coder:7b", "generic"),
    ("gpt-4o-mini", "generic"),
])
def test_format_for_model_names(model: str, fmt: str):
    assert format_for(model) == fmt


def test_format_for_override():
    assert format_for("qwen2.5-coder:7b", "zeta") == "zeta"
    assert format_for("zed-industries/zeta", "generic") == "generic"
    assert format_for("zed-industries/zeta", "auto") == "zeta"
    with pytest.raises(ValueError):
        format_for("zeta", "fim")


def test_edit_prompt_text_joins_messages():
    p = EditPrompt("generic", None, (ChatMessage("system", "s"), ChatMessage("user", "u")), (), 10)
    assert p.text() == "s\nu"
    assert EditPrompt("sweep", "raw", (), (), 10).text() == "raw"


# ---- round trip -------------------------------------------------------------------------------------------------

_text = st.text(alphabet="ab \n", max_size=24)


@st.composite
def _inputs(draw: st.DrawFn) -> EditInput:
    region = draw(_text)
    before = "".join(draw(st.lists(st.text(alphabet="ab ", max_size=6).map(lambda s: s + "\n"), max_size=4)))
    after = draw(_text)
    return EditInput(path="p.py", language="python", events=(), before=before, region=region,
                     cursor=draw(st.integers(0, len(region))), after=after, original_region=region,
                     at_file_start=draw(st.booleans()))


def _perfect_echo(fmt: str, inp: EditInput, fenced: bool) -> str:
    """The answer a faithful model gives when nothing needs to change, in the format's own shape."""
    p = build(fmt, inp)
    if fmt == "zeta":  # the whole fenced excerpt, markers and all
        raw = p.raw or ""
        return raw[raw.index("### User Excerpt:\n\n") + 19:raw.rindex("\n\n### Response:")]
    if fmt == "generic":  # the marked region, perhaps in a fence
        user = p.messages[1].content
        marked = user[user.index(REGION_START):user.index(REGION_END) + len(REGION_END)]
        return f"```\n{marked}\n```" if fenced else marked
    if fmt == "instinct":  # the region alone (the published shape), perhaps in a fence
        return f"```python\n{inp.region if inp.region.endswith(chr(10)) else inp.region + chr(10)}```" if fenced \
            else inp.region
    return inp.region  # sweep: the updated block, the stop string already cut by the server


@settings(max_examples=300, deadline=None)
@given(_inputs(), st.booleans())
def test_a_perfect_echo_parses_back_to_the_region(inp: EditInput, fenced: bool):
    for fmt in FORMATS:
        if fmt in ("instinct", "sweep") and not inp.region.strip():
            # Without markers a blank region's echo is a blank answer, which parse treats as empty (None).
            assert parse(fmt, _perfect_echo(fmt, inp, fenced), inp) in (None, inp.region)
            continue
        assert parse(fmt, _perfect_echo(fmt, inp, fenced), inp) == inp.region, fmt
