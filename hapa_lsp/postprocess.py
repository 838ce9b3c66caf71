"""Cleaning model output into a suggestion: stop tokens, suffix overlap, block end, loops, junk, and syntax.

The syntax-aware steps (none of the peers has them): brackets the suggestion leaves open are closed only
when the code after the cursor does not close them; closing lines that the suffix already has are dropped;
and for Python, when the code around the cursor parsed before, a suggestion that breaks it is cut to its
longest prefix that parses, or dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hapa_lsp.context.syntax import open_brackets, parses, region_at

# Compiled at import (the warm-up thread imports this module): the first answer pays no regex compile.
_SPACE = re.compile(r"\s")
_TOKEN_END = re.compile(r"[\w.]+|\S")
_NEW_TOPLEVEL = re.compile(r"(def |class |async def |@|if __name__)")
_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n?|\n?\s*```\s*$")


@dataclass(frozen=True, slots=True)
class Cursor:
    """What the post-processor needs to know about the cursor's surroundings."""

    line_prefix: str  # text of the cursor's line before the cursor
    line_suffix: str  # text of the cursor's line after the cursor
    suffix: str  # everything after the cursor (the window sent to the model)
    prefix: str = ""  # everything before the cursor (the window); enables the syntax checks
    language: str = ""
    single_line: bool | None = None  # the context engine's multi-line decision; None: mid-line means one line

    @property
    def mid_line(self) -> bool:
        """True when there is code after the cursor on its line: only a single-line answer fits."""
        return bool(self.line_suffix.strip())

    @property
    def one_line(self) -> bool:
        """True when the suggestion must stay on the cursor's line."""
        return self.mid_line if self.single_line is None else self.single_line

    @classmethod
    def at(cls, prefix: str, suffix: str, language: str = "python", single_line: bool | None = None) -> Cursor:
        """A cursor between ``prefix`` and ``suffix`` (line parts derived from them)."""
        return cls(prefix.rsplit("\n", 1)[-1], suffix.split("\n", 1)[0], suffix, prefix, language, single_line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def strip_stop_tokens(text: str, stop: tuple[str, ...]) -> str:
    """Cut at the first stop token, for servers that do not apply ``stop`` themselves."""
    cut = len(text)
    for s in stop:
        if s and s != "\n":
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def trim_suffix_overlap(text: str, cursor: Cursor) -> str:
    """Drop the end of ``text`` that repeats what already follows the cursor."""
    if not text:
        return text
    # Whole lines that the suffix already has (the model re-wrote the code after the hole).
    suffix_lines = [ln for ln in cursor.suffix.split("\n") if ln.strip()]
    if suffix_lines:
        lines = text.split("\n")
        first_after = suffix_lines[0].strip()
        for i, ln in enumerate(lines):
            if i > 0 and ln.strip() and ln.strip() == first_after:
                # Keep only if the suffix line is a trivial closer that may legitimately repeat.
                if len(first_after) > 2:
                    text = "\n".join(lines[:i]).rstrip() + ("\n" if i < len(lines) else "")
                    text = text.rstrip("\n") if not cursor.line_suffix.strip() else text
                    break
    # Characters the rest of the line already has, e.g. the closing ``)`` the editor auto-inserted.
    rest = cursor.line_suffix.rstrip()
    if rest:
        first_line, nl, tail = text.partition("\n")
        for k in range(min(len(rest), len(first_line)), 0, -1):
            if first_line.endswith(rest[:k]):
                first_line = first_line[:-k]
                break
        text = first_line + nl + tail
    return text


def cut_at_block_end(text: str, cursor: Cursor) -> str:
    """Stop where the code leaves the block the cursor is in (a line dedented to or below it)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    first = cursor.line_prefix + lines[0]
    base = _indent(first) if first.strip() else len(cursor.line_prefix)
    opens = first.rstrip().endswith((":", "{", "(", "["))
    kept = [lines[0]]
    next_code = next((ln.strip() for ln in cursor.suffix.split("\n") if ln.strip()), "")
    for ln in lines[1:]:
        if ln.strip():
            ind = _indent(ln)
            if ind < base:
                closer = ln.strip()
                if closer[0] in ")]}" and not next_code.startswith(closer[0]):
                    kept.append(ln)  # closes the block the cursor is in, which the code after does not
                break
            if ind == base and (opens or _is_new_toplevel(ln)):
                if opens and ln.lstrip()[0] in ")]}":
                    kept.append(ln)  # the line that closes the bracket the cursor's line opened
                break
        kept.append(ln)
    return "\n".join(kept).rstrip()


def _is_new_toplevel(line: str) -> bool:
    """A new top-level definition after the completed one ends the suggestion."""
    return bool(_NEW_TOPLEVEL.match(line))


def cut_repetition(text: str) -> str:
    """Stop a loop: the same non-trivial line three times in a row, or a block repeating itself."""
    lines = text.split("\n")
    out: list[str] = []
    for ln in lines:
        if len(out) >= 2 and ln.strip() and len(ln.strip()) > 3 and ln == out[-1] == out[-2]:
            # Keep a single copy: the rest is the loop.
            out = out[:-1]
            break
        out.append(ln)
    text = "\n".join(out)
    # A chunk of >= 2 lines repeated back to back.
    lines = text.split("\n")
    n = len(lines)
    for size in range(2, n // 2 + 1):
        for start in range(0, n - 2 * size + 1):
            a = lines[start:start + size]
            if any(x.strip() for x in a) and a == lines[start + size:start + 2 * size]:
                return "\n".join(lines[:start + size]).rstrip()
    return text


def strip_fences(text: str) -> str:
    """Remove markdown code fences that chat models wrap answers in."""
    if "```" not in text:
        return text
    return _FENCE.sub("", text)


def clean(raw: str, cursor: Cursor, *, stop: tuple[str, ...] = (), max_lines: int = 16, min_chars: int = 2,
          prefix_tail: str = "") -> str | None:
    """The suggestion to show for ``raw`` model output, or None when nothing worth showing remains."""
    text = strip_stop_tokens(raw, stop)
    text = strip_fences(text).replace("\r\n", "\n")
    if not text.strip():
        return None
    # A model that starts by repeating the line's beginning (chat models do) is re-aligned to the cursor.
    lp = cursor.line_prefix
    if lp.strip() and text.startswith(lp) and len(text) > len(lp):
        text = text[len(lp):]
    if cursor.one_line:
        text = text.split("\n", 1)[0]
    else:
        text = cut_at_block_end(text, cursor)
        text = cut_repetition(text)
        lines = text.split("\n")
        if len(lines) > max_lines:
            text = "\n".join(lines[:max_lines])
    text = trim_suffix_overlap(text, cursor)
    text = text.rstrip() if "\n" in text else text.rstrip("\n")
    text = close_brackets(text, cursor)
    text = drop_duplicate_closers(text, cursor)
    if cursor.language == "python" and cursor.prefix:
        fixed = fix_syntax(text, cursor)
        if fixed is None:
            return None
        text = fixed.rstrip() if "\n" in fixed else fixed
    if prefix_tail and text.strip() and prefix_tail.rstrip().endswith(text.strip()) and len(text.strip()) > 8:
        # The model repeated the line before the cursor.
        return None
    if len(_SPACE.sub("", text)) < min_chars:
        return None
    return text


_CLOSER_LINE = re.compile(r"^[)\]}]+[;,]?$|^end$")
_CLOSE_FOR = {"(": ")", "[": "]", "{": "}"}


def _simple_open(code: str) -> str:
    """Open brackets for C-like languages: quotes and // comments skipped (good enough for one statement)."""
    stack: list[str] = []
    quote = ""
    i = 0
    while i < len(code):
        c = code[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c == "/" and code.startswith("//", i):
            nl = code.find("\n", i)
            i = len(code) if nl == -1 else nl
            continue
        elif c in "([{":
            stack.append(c)
        elif c in ")]}" and stack and _CLOSE_FOR[stack[-1]] == c:
            stack.pop()
        i += 1
    return "".join(stack)


def _open_brackets(code: str, language: str) -> str:
    if language == "python":
        return open_brackets(code)
    return _simple_open(code)


def close_brackets(text: str, cursor: Cursor) -> str:
    """Close brackets the suggestion leaves open, but only when the code after the cursor does not close them."""
    if not text.strip() or not cursor.prefix:
        return text
    reg = region_at(cursor.prefix, cursor.suffix)
    if reg is None:
        return text
    lang = cursor.language
    # Only brackets opened on the cursor's line or by the suggestion: older ones are not ours to close.
    opened = _open_brackets(cursor.line_prefix + text, lang)
    if not opened:
        return text
    if not _open_brackets(reg.before + text + reg.after, lang):
        return text  # the suffix already closes them (an auto-inserted ``)``, a multi-line call's last line)
    closers = "".join(_CLOSE_FOR[b] for b in reversed(opened))
    # Only when closing here makes the whole statement balanced: otherwise we would be guessing.
    if _open_brackets(reg.before + text + closers + reg.after, lang):
        return text
    return text.rstrip(" ") + closers


def drop_duplicate_closers(text: str, cursor: Cursor) -> str:
    """Remove trailing closing-only lines (``)``, ``]``, ``}``, ``end``) that the suffix starts with anyway."""
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    tail = 0
    while tail < len(lines) - 1 and _CLOSER_LINE.match(lines[len(lines) - 1 - tail].strip()):
        tail += 1
    if not tail:
        return text
    after = [ln.strip() for ln in cursor.suffix.split("\n")[1:] if ln.strip()] if not cursor.line_suffix.strip() \
        else [ln.strip() for ln in cursor.suffix.split("\n") if ln.strip()]
    for k in range(tail, 0, -1):
        mine = [ln.strip() for ln in lines[len(lines) - k:]]
        if after[:k] == mine:
            return "\n".join(lines[:len(lines) - k]).rstrip()
    return text


def _cut_points(text: str) -> list[str]:
    """Prefixes of ``text`` to try, longest first: whole lines, then token ends within the first line."""
    lines = text.split("\n")
    out = ["\n".join(lines[:i]).rstrip() for i in range(len(lines) - 1, 0, -1)]
    first = lines[0]
    ends = [m.end() for m in _TOKEN_END.finditer(first)]
    out.extend(first[:e] for e in reversed(ends[:-1][-60:]))
    return [c for c in out if c.strip()]


def fix_syntax(text: str, cursor: Cursor) -> str | None:
    """Python: if the code around the cursor parsed before, cut a suggestion that breaks it (None: drop it)."""
    reg = region_at(cursor.prefix, cursor.suffix)
    if reg is None:
        return text
    if not parses(reg.before + reg.after):
        # An empty body (``def f():`` then the cursor) does not parse empty; with a placeholder it does.
        if cursor.line_prefix.strip() or not parses(reg.before + "pass" + reg.after):
            return text  # it did not parse before: we cannot tell what the suggestion broke
    if parses(reg.before + text + reg.after):
        return text
    for cand in _cut_points(text):
        if parses(reg.before + cand + reg.after):
            return cand
    return None
