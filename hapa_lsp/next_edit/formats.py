"""Next-edit prompt formats (Zeta, Instinct, Sweep, generic chat): build the prompt, read the rewritten region back."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hapa_lsp.prompts import ChatMessage

REGION_START = "<|editable_region_start|>"
REGION_END = "<|editable_region_end|>"
CURSOR = "<|user_cursor_is_here|>"
FORMATS = ("zeta", "instinct", "sweep", "generic")

START_OF_FILE = "<|start_of_file|>"
FILE_SEP = "<|file_sep|>"
END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True, slots=True)
class Event:
    """One hunk of the user's edit history."""

    path: str  # the file's path as shown to the model (relative to the workspace when possible)
    diff: str  # unified-diff hunks WITHOUT ---/+++ header lines: "@@ -3,2 +3,2 @@\n-old\n+new\n ctx\n" (ends with \n)


@dataclass(frozen=True, slots=True)
class EditInput:
    """Everything a next-edit prompt shows: the history and the document around the editable region."""

    path: str
    language: str
    events: tuple[Event, ...]  # oldest first (may be empty)
    before: str  # document text above the region (whole lines, ends with "\n" or is "")
    region: str  # the editable region (whole lines, ends with "\n" unless at end of file)
    cursor: int  # offset of the cursor inside region (0 <= cursor <= len(region))
    after: str  # document text below the region
    original_region: str  # the region's text before the recent edits (== region when unknown)
    at_file_start: bool = False  # `before` starts at line 1 (zeta marks <|start_of_file|>)


@dataclass(frozen=True, slots=True)
class EditPrompt:
    """One next-edit request: a raw completion prompt or chat messages, with its stop strings."""

    format: str
    raw: str | None  # raw completion prompt (zeta, sweep), else None
    messages: tuple[ChatMessage, ...]  # chat prompt (instinct, generic), else ()
    stop: tuple[str, ...]
    max_tokens: int

    def text(self) -> str:
        """Everything the model reads, as one string."""
        if self.raw is not None:
            return self.raw
        return "\n".join(m.content for m in self.messages)


def format_for(model: str, override: str = "auto") -> str:
    """The prompt format for ``model`` (from its name, case-insensitive), unless ``override`` names one."""
    if override != "auto":
        if override not in FORMATS:
            raise ValueError(f"unknown next-edit format {override!r}; expected auto or one of {', '.join(FORMATS)}")
        return override
    name = model.lower()
    for fmt in ("zeta", "instinct", "sweep"):
        if fmt in name:
            return fmt
    return "generic"


# ---- shared layout helpers -------------------------------------------------------------------------------------

def _line_ended(text: str) -> str:
    """``text`` ending in a newline (an empty text becomes one empty line)."""
    return text if text.endswith("\n") else text + "\n"


def _lines_ended(text: str) -> str:
    """``text`` ending in a newline, or "" when empty."""
    return _line_ended(text) if text else ""


def _marked_region(inp: EditInput) -> str:
    """The region with the cursor marker, ending in a newline so that the end marker starts its own line.

    The newline is added before the cursor goes in, so a cursor at the very end stays right before the end
    marker and ``parse`` recovers the region exactly."""
    body = _line_ended(inp.region)
    cursor = max(0, min(inp.cursor, len(inp.region)))
    return body[:cursor] + CURSOR + body[cursor:]


def _excerpt_core(before: str, inp: EditInput, after: str) -> str:
    """``before``, the marked region between the region markers, then ``after`` (each marker on its own line)."""
    return f"{before}{REGION_START}\n{_marked_region(inp)}{REGION_END}\n{_lines_ended(after)}"


def _rust_debug(path: str) -> str:
    """``path`` quoted the way Rust's ``{:?}`` prints a path (Zed writes ``User edited {:?}:``)."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- zeta -------------------------------------------------------------------------------------------------------

ZETA_INSTRUCTION = (
    "You are a code completion assistant and your task is to analyze user edits and then rewrite an excerpt that "
    "the user provides, suggesting the appropriate edits within the excerpt, taking into account the cursor "
    "location."
)

# Zeta was trained on excerpts with ~150 tokens of read-only context around the region (Zed's MAX_CONTEXT_TOKENS,
# counted as 3 bytes a token), and it echoes that context in its answer: more context costs output tokens too.
_ZETA_CONTEXT_TOKENS = 150
_BYTES_PER_TOKEN = 3


def _zeta_context(inp: EditInput) -> tuple[str, str, bool]:
    """(lines above, lines below, whether the file start is shown): the region's neighbours, one line above and one
    below at a time, until the context budget is spent (as Zed's ``expand_range`` grows the context range)."""
    above = inp.before.splitlines(keepends=True)
    below = inp.after.splitlines(keepends=True)
    first, last = len(above), 0
    remaining = _ZETA_CONTEXT_TOKENS
    grew = True
    while grew:
        grew = False
        if remaining > 0 and first > 0:
            first -= 1
            remaining = max(0, remaining - len(above[first].rstrip("\n").encode()) // _BYTES_PER_TOKEN)
            grew = True
        if remaining > 0 and last < len(below):
            remaining = max(0, remaining - len(below[last].rstrip("\n").encode()) // _BYTES_PER_TOKEN)
            last += 1
            grew = True
    return "".join(above[first:]), "".join(below[:last]), first == 0


def _build_zeta(inp: EditInput, max_tokens: int) -> EditPrompt:
    """Zed's Zeta (zed-industries/zeta, Qwen2.5-Coder-7B fine-tune): an Alpaca-style raw prompt.

    Sources: zed-industries/zed ``crates/zeta/src/zeta.rs`` (events: ``User edited {:?}:`` + a ``diff`` fence
    around hunks that end in a newline, joined by blank lines; markers ``<|editable_region_start|>``,
    ``<|editable_region_end|>``, ``<|user_cursor_is_here|>``, ``<|start_of_file|>``) and
    ``crates/zeta/src/zeta1/input_excerpt.rs`` (the excerpt: a fence opened with the path, each marker on its own
    line, the region's last line ending before the end marker); the prompt template is the one in the
    zed-industries/zeta dataset card as vllm-project/vllm reproduces it for its next-edit benchmark
    (``zeta_prompt`` / ``NextEditPredictionDataset``, ``vllm/benchmarks/datasets.py``).
    The model echoes the whole fenced excerpt with the markers.

    Choices of ours: the read-only context is cut to Zeta's trained budget (``_zeta_context``), and the token
    limit grows by the echoed context. The stop strings do not include the end marker: servers drop a matched stop
    string from the answer, and ``parse`` needs the end marker to tell a complete answer from a truncated one.
    """
    before, after, file_start = _zeta_context(inp)
    head = f"```{inp.path}\n" + (f"{START_OF_FILE}\n" if file_start and inp.at_file_start else "")
    excerpt = f"{head}{_excerpt_core(before, inp, after)}```"
    events = "\n\n".join(f"User edited {_rust_debug(e.path)}:\n```diff\n{e.diff}\n```" for e in inp.events)
    raw = (f"### Instruction:\n{ZETA_INSTRUCTION}\n\n### User Edits:\n\n{events}\n\n"
           f"### User Excerpt:\n\n{excerpt}\n\n### Response:\n\n")
    echoed = len(excerpt) - len(inp.region)  # what the answer repeats besides the region
    return EditPrompt("zeta", raw, (), (END_OF_TEXT,), max_tokens + math.ceil(echoed / _BYTES_PER_TOKEN))


# ---- instinct ---------------------------------------------------------------------------------------------------

INSTINCT_SYSTEM = """\
You are Instinct, an intelligent next-edit predictor developed by Continue.dev. Your role as an AI assistant is to \
help developers complete their code tasks by predicting the next edit that they will make within the section of code \
marked by <|editable_region_start|> and <|editable_region_end|> tags.

You have access to the following information to help you make informed suggestions:

- Context: In the section marked "### Context", there are context items from potentially relevant files in the \
developer's codebase. Each context item consists of a <|context_file|> marker, the filepath, a <|snippet|> marker, \
and then some content from that file, in that order. Keep in mind that not all of the context information may be \
relevant to the task, so use your judgement to determine which parts to consider.
- User Edits: In the section marked "### User Edits:", there is a record of the most recent changes made to the \
code, helping you understand the evolution of the code and the developer's intentions. These changes are listed \
from most recent to least recent. It's possible that some of the edit diff history is entirely irrelevant to the \
developer's change. The changes are provided in a unified line-diff format, i.e. with pluses and minuses for \
additions and deletions to the code.
- User Excerpt: In the section marked "### User Excerpt:", there is a filepath to the developer's current file, and \
then an excerpt from that file. The <|editable_region_start|> and <|editable_region_end|> markers are within this \
excerpt. Your job is to rewrite only this editable region, not the whole excerpt. The excerpt provides additional \
context on the surroundings of the developer's edit.
- Cursor Position: Within the user excerpt's editable region, the <|user_cursor_is_here|> flag indicates where the \
developer's cursor is currently located, which can be crucial for understanding what part of the code they are \
focusing on. Do not produce this marker in your output; simply take it into account.

Your task is to predict and complete the changes the developer would have made next in the editable region. The \
developer may have stopped in the middle of typing. Your goal is to keep the developer on the path that you think \
they're following. Some examples include further implementing a class, method, or variable, or improving the quality \
of the code. Make sure the developer doesn't get distracted by ensuring your suggestion is relevant. Consider what \
changes need to be made next, if any. If you think changes should be made, ask yourself if this is truly what needs \
to happen. If you are confident about it, then proceed with the changes.

# Steps

1. **Review Context**: Analyze the context from the resources provided, such as recently viewed snippets, edit \
history, surrounding code, and cursor location.
2. **Evaluate Current Code**: Determine if the current code within the tags requires any corrections or enhancements.
3. **Suggest Edits**: If changes are required, ensure they align with the developer's patterns and improve code \
quality.
4. **Maintain Consistency**: Ensure indentation and formatting follow the existing code style.

# Output Format

- Provide only the revised code within the tags. Do not include the tags in your output.
- Ensure that you do not output duplicate code that exists outside of these tags.
- Avoid undoing or reverting the developer's last change unless there are obvious typos or errors."""

INSTINCT_USER_PREFIX = (
    "Reference the user excerpt, user edits, and the snippets to understand the developer's intent. Update the "
    "editable region of the user excerpt by predicting and completing the changes they would have made next. This "
    "may be a deletion, addition, or modification of code."
)


def _instinct_diff(diff: str) -> str:
    """The hunk lines Continue keeps (``@@``, ``+``, ``-`` and context lines), without the final newline."""
    return "\n".join(ln for ln in diff.split("\n") if ln[:1] in ("@", "+", "-", " "))


def _build_instinct(inp: EditInput, max_tokens: int) -> EditPrompt:
    """Continue's Instinct (continuedev/instinct, Qwen2.5-Coder-7B fine-tune): a system prompt and one user message.

    Sources: continuedev/continue ``core/nextEdit/constants.ts`` (``INSTINCT_SYSTEM_PROMPT``,
    ``INSTINCT_USER_PROMPT_PREFIX``, the marker tokens), ``core/nextEdit/templating/NextEditPromptEngine.ts`` (the
    user template: prefix, ``### Context:``, ``### User Edits:``, ``### User Excerpt:`` with the path, the excerpt,
    a closing fence, ``### Response:``), ``core/nextEdit/templating/instinct.ts`` (``User edited file "path"`` + a
    blank line + a ``diff`` fence per edit, joined by newlines; the excerpt's lines joined with the markers on
    their own lines) and ``core/nextEdit/context/processNextEditData.ts`` (edits most recent first, as the system
    prompt says). The published answer is the rewritten region alone (no tags); ``parse`` also takes it between
    the markers, fenced or not.

    Choices of ours: no other-file context (``### Context:`` stays empty); the excerpt always ends in a newline
    before the closing fence (Continue's two template versions differ there; the newer joins with one).
    """
    edits = "\n".join(f'User edited file "{e.path}"\n\n```diff\n{_instinct_diff(e.diff)}\n```'
                      for e in reversed(inp.events))
    user = (f"{INSTINCT_USER_PREFIX}\n\n### Context:\n\n\n### User Edits:\n\n{edits}\n\n"
            f"### User Excerpt:\n{inp.path}\n\n{_excerpt_core(inp.before, inp, inp.after)}```\n### Response:")
    return EditPrompt("instinct", None, (ChatMessage("system", INSTINCT_SYSTEM), ChatMessage("user", user)), (),
                      max_tokens)


# ---- sweep ------------------------------------------------------------------------------------------------------

def _hunk_sides(diff: str) -> list[tuple[str, str]]:
    """(old text, new text) of each ``@@`` hunk: context and removed lines, context and added lines."""
    sides: list[tuple[list[str], list[str]]] = []
    for line in diff.split("\n"):
        if line.startswith("@@"):
            sides.append(([], []))
            continue
        if not sides or line.startswith("\\"):
            continue
        old, new = sides[-1]
        tag, text = line[:1], line[1:]
        if tag == "-":
            old.append(text)
        elif tag == "+":
            new.append(text)
        elif tag == " ":
            old.append(text)
            new.append(text)
    return [("\n".join(o).strip("\n"), "\n".join(n).strip("\n")) for o, n in sides if o or n]


def _build_sweep(inp: EditInput, max_tokens: int) -> EditPrompt:
    """Sweep Next-Edit (sweepai/sweep-next-edit-1.5B, Qwen2.5-Coder base): Qwen's repository format, raw.

    Sources: sweepai/vscode-nes ``src/local/completions.ts`` (``<|file_sep|>original/{path}``, ``current/{path}``,
    ``updated/{path}`` blocks, the model writing the updated block) and ``src/constants.ts`` (``<|file_sep|>`` ends
    the answer); sweepai/cursortab.nvim ``server/provider/sweep/sweep.go`` (each recent change as
    ``<|file_sep|>{path}.diff`` with ``original:`` / ``updated:`` blocks before the triple, no blank lines between
    blocks). The file context first as ``<|file_sep|>{path}`` follows the Sweep blog post "Open sourcing a 1.5B
    parameter Next-Edit Autocomplete Model" (blog.sweep.dev/posts/oss-next-edit) and Sweep's v2 inference code.

    Choices of ours: the file context is the shown document (``before + region + after``); each unified hunk
    becomes one ``original:`` / ``updated:`` pair (context lines on both sides, trimmed of blank edge lines), oldest
    first; no cursor marker (the 1.5B format has none; only Sweep's later v2 format adds ``<|cursor|>``).
    """
    parts = [f"{FILE_SEP}{inp.path}\n{_lines_ended(inp.before + inp.region + inp.after)}"]
    for e in inp.events:
        for old, new in _hunk_sides(e.diff):
            parts.append(f"{FILE_SEP}{e.path}.diff\noriginal:\n{old}\nupdated:\n{new}\n")
    parts.append(f"{FILE_SEP}original/{inp.path}\n{_lines_ended(inp.original_region)}")
    parts.append(f"{FILE_SEP}current/{inp.path}\n{_lines_ended(inp.region)}")
    parts.append(f"{FILE_SEP}updated/{inp.path}\n")
    return EditPrompt("sweep", "".join(parts), (), (FILE_SEP, END_OF_TEXT), max_tokens)


# ---- generic ----------------------------------------------------------------------------------------------------

GENERIC_SYSTEM = (
    "You predict the next edit a programmer will make. You get their recent edits (unified diffs, oldest first) and "
    f"an excerpt of the file they are editing, with an editable region between {REGION_START} and {REGION_END} and "
    f"their cursor at {CURSOR}. Answer with the rewritten region only, between the same two markers, with the edit "
    "they are about to make applied; keep the text outside the region untouched and do not repeat it. If no change "
    "is needed, answer the region unchanged."
)


def _build_generic(inp: EditInput, max_tokens: int) -> EditPrompt:
    """Our format for any chat model (the fake model server in the tests parses this exact layout)."""
    edits = "\n".join(f"```diff\n--- a/{e.path}\n+++ b/{e.path}\n{_lines_ended(e.diff)}```" for e in inp.events)
    user = (f"File: {inp.path}\nLanguage: {inp.language}\n\nRecent edits (oldest first):\n{edits or '(none)'}\n\n"
            f"Excerpt:\n```\n{_excerpt_core(inp.before, inp, inp.after)}```\n\n"
            f"Rewrite the text between {REGION_START} and {REGION_END}.")
    return EditPrompt("generic", None, (ChatMessage("system", GENERIC_SYSTEM), ChatMessage("user", user)), (),
                      max_tokens)


_BUILDERS = {"zeta": _build_zeta, "instinct": _build_instinct, "sweep": _build_sweep, "generic": _build_generic}


def build(fmt: str, inp: EditInput, *, max_tokens: int = 512) -> EditPrompt:
    """The next-edit prompt for ``inp`` in format ``fmt``."""
    try:
        builder = _BUILDERS[fmt]
    except KeyError:
        raise ValueError(f"unknown next-edit format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return builder(inp, max_tokens)


# ---- parsing ----------------------------------------------------------------------------------------------------

def _conform(text: str, inp: EditInput) -> str:
    """``text`` with the final newline ``inp.region`` has (or lacks); an empty text stays empty (a deletion)."""
    if not text:
        return ""
    if inp.region.endswith("\n"):
        return _line_ended(text)
    return text.removesuffix("\n")


def _unfence(text: str, inp: EditInput) -> str | None:
    """``text`` without a code fence around it (None when the fence is never closed: a truncated answer). A region
    that itself starts with a fence keeps it."""
    if not text.lstrip().startswith("```") or inp.region.lstrip().startswith("```"):
        return text
    body = text.lstrip()
    newline = body.find("\n")
    if newline < 0:
        return None
    body = body[newline + 1:]
    tail = body.rstrip()
    if not tail.endswith("```"):
        return None
    return tail[:-3]


def _between_markers(answer: str) -> str | None:
    """The text between the region markers (the newline after the start marker dropped), or None unless the
    answer holds exactly one complete marked region."""
    if answer.count(REGION_START) != 1 or answer.count(REGION_END) != 1:
        return None
    start = answer.index(REGION_START) + len(REGION_START)
    end = answer.index(REGION_END)
    if end < start:
        return None
    inner = answer[start:end]
    return inner.removeprefix("\n")


def _parse_marked(answer: str, inp: EditInput) -> str | None:
    inner = _between_markers(answer.replace(CURSOR, ""))
    if inner is None:
        return None
    inner = _unfence(inner, inp)
    return None if inner is None else _conform(inner, inp)


def _parse_instinct(answer: str, inp: EditInput) -> str | None:
    if REGION_START in answer:
        return _parse_marked(answer, inp)
    text = answer.replace(CURSOR, "")
    if REGION_END in text:  # the region alone, closed by the end marker
        if text.count(REGION_END) != 1:
            return None
        text = text[:text.index(REGION_END)]
    text = _unfence(text, inp)
    if text is None or not text.strip():
        return None
    return _conform(text, inp)


def _parse_sweep(answer: str, inp: EditInput) -> str | None:
    text = answer
    for token in (FILE_SEP, END_OF_TEXT):  # a server that hands stop strings back
        if token in text:
            text = text[:text.index(token)]
    text = text.replace(CURSOR, "").replace("<|cursor|>", "")
    if not text.strip():
        return None
    return _conform(text, inp)


def parse(fmt: str, answer: str, inp: EditInput) -> str | None:
    """The model's rewritten region (whole lines, ``inp.region``'s final-newline convention), or None when the
    answer is unusable: empty, no region found, or truncated (a start marker without an end marker, an unclosed
    fence)."""
    if fmt not in _BUILDERS:
        raise ValueError(f"unknown next-edit format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not answer.strip():
        return None
    if fmt == "sweep":
        return _parse_sweep(answer, inp)
    if fmt == "instinct":
        return _parse_instinct(answer, inp)
    return _parse_marked(answer, inp)
