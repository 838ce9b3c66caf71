"""Syntax around the cursor: one line or a block (parso's tokenizer), and whether Python code still parses.

Everything here works on a bounded region around the cursor (the enclosing top-level statement, at most
``_MAX_REGION`` lines each way) so that it costs about a millisecond on any file size.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_MAX_REGION = 400
_OPEN, _CLOSE = "([{", ")]}"
_PAIR = {")": "(", "]": "[", "}": "{"}
# Lines at column 0 that continue a statement rather than start one.
_CONTINUATION = re.compile(r"(else\b|elif\b|except\b|finally\b|case\b|[)\]}]|#)")


@dataclass(frozen=True, slots=True)
class Decision:
    """How much the model may write at this cursor, and why."""

    multiline: bool
    reason: str  # mid-line, end-of-line, empty-line, after-colon, open-bracket


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


# Comments, strings (triple-quoted ones may span lines or run to the end) and brackets, as one C-level
# regex pass with unrolled string loops; parso's tokenizer cost several ms on the 200 lines before a
# cursor, on every keystroke. String prefixes (r, b, f) need no care: a backslash-quote never ends a
# string in any of them.
_TOKENS = re.compile("|".join((
    r"#[^\n]*",
    r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*(?:"""|\Z)',
    r"'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*(?:'''|\Z)",
    # A one-line string continued by a backslash-newline runs to its closing quote, whatever lines follow
    # (as parso tokenizes it), then the plain one-line string.
    r'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*\\\n[^"\\]*(?:\\.[^"\\]*)*"?',
    r"'[^'\\\n]*(?:\\[^\n][^'\\\n]*)*\\\n[^'\\]*(?:\\.[^'\\]*)*'?",
    r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"?',
    r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'?",
    r"[()\[\]{}]",
)), re.DOTALL)  # re.S: a backslash escapes a newline too (a string continued on the next line)


def _fstring_code(literal: str) -> str:
    """An f-string token with its literal text blanked and its replacement fields (``{...}``) kept as code."""
    out: list[str] = []
    depth, i = 0, 0
    while i < len(literal):
        ch = literal[i]
        if depth == 0:
            if ch == "{" and literal[i + 1:i + 2] == "{":
                out.append("  ")
                i += 2
                continue
            if ch == "{":
                depth = 1
            out.append(ch if ch in "\r\n" else " ")
        else:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            out.append(" " if depth == 0 else ch)
        i += 1
    return "".join(out)


_FSTRING_PREFIX = re.compile(r"(?<![\w])(?:[fF][rR]?|[rR][fF])\Z")


def code_only(code: str) -> str:
    """``code`` with the insides of comments and strings blanked (spaces; line breaks kept), so a search for names
    finds code, not prose: same length, same lines. An f-string's replacement fields stay: they are code."""
    out: list[str] = []
    pos = 0
    for m in _TOKENS.finditer(code):
        s = m.group()
        if len(s) == 1 and s not in "#\"'":
            continue
        out.append(code[pos:m.start()])
        if s[0] != "#" and _FSTRING_PREFIX.search(code, max(0, m.start() - 3), m.start()):
            out.append(_fstring_code(s))
        else:
            out.append(re.sub(r"[^\r\n]", " ", s))
        pos = m.end()
    out.append(code[pos:])
    return "".join(out)


def multiline_strings(code: str) -> list[tuple[int, int]]:
    """(first line, last line), 0-based, of each string in ``code`` that spans lines, in order."""
    out: list[tuple[int, int]] = []
    line, pos = 0, 0
    for m in _TOKENS.finditer(code):
        s = m.group()
        if s[0] not in "\"'" or "\n" not in s:
            continue
        line += code.count("\n", pos, m.start())
        pos = m.start()
        out.append((line, line + s.count("\n")))
    return out


def open_brackets(code: str) -> str:
    """The brackets left open at the end of ``code`` (strings and comments ignored), innermost last."""
    stack: list[str] = []
    for m in _TOKENS.finditer(code):
        s = m.group()
        if len(s) != 1 or s in "#\"'":
            continue
        if s in _OPEN:
            stack.append(s)
        elif stack and stack[-1] == _PAIR[s]:
            stack.pop()
    return "".join(stack)


def statement_start(lines: list[str], row: int) -> int:
    """Index of the line where the top-level statement containing ``row`` starts (or max(0, row - bound))."""
    lo = max(0, row - _MAX_REGION)
    for i in range(row, lo - 1, -1):
        ln = lines[i]
        if ln and not ln[0].isspace() and not _CONTINUATION.match(ln):
            return i
    return lo


def statement_end(lines: list[str], row: int) -> int:
    """Index just past the top-level statement containing ``row`` (the next column-0 statement start)."""
    hi = min(len(lines), row + 1 + _MAX_REGION)
    for i in range(row + 1, hi):
        ln = lines[i]
        if ln and not ln[0].isspace() and not _CONTINUATION.match(ln):
            return i
    return hi


def decide(prefix: str, line_prefix: str, line_suffix: str, language: str = "python") -> Decision:
    """Multi-line decision: mid-line -> one line; empty line, after ``:`` or inside an open bracket -> block."""
    if line_suffix.strip():
        return Decision(False, "mid-line")
    stripped = line_prefix.strip()
    if not stripped:
        return Decision(True, "empty-line")
    code = stripped.split("#", 1)[0].rstrip() if language == "python" else stripped
    if code.endswith(":") or code.endswith("{"):
        return Decision(True, "after-colon")
    if language == "python":
        # Only the statement around the cursor matters: tokenizing the whole prefix would cost ~1 ms per 100 lines.
        tail = prefix[-8000:]
        lines = tail.split("\n")
        start = statement_start(lines, len(lines) - 1)
        if open_brackets("\n".join(lines[start:])):
            return Decision(True, "open-bracket")
    elif any(c in code for c in _OPEN) and code.count("(") + code.count("[") > code.count(")") + code.count("]"):
        return Decision(True, "open-bracket")
    return Decision(False, "end-of-line")


def parses(code: str) -> bool:
    """True when ``code`` is valid Python (compiled to an AST only: nothing runs)."""
    try:
        compile(code, "<hapa>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Region:
    """The code of the top-level statement around the cursor, split at the cursor."""

    before: str
    after: str


def region_at(prefix: str, suffix: str) -> Region | None:
    """The enclosing top-level statement(s) around the cursor, or None when it cannot be delimited."""
    plines = prefix.split("\n")
    start = statement_start(plines, len(plines) - 1)
    first = plines[start] if plines else ""
    if start == 0 and first[:1].isspace():
        return None  # the window starts inside a block: we cannot know what parsed
    slines = suffix.split("\n")
    # The first suffix line continues the cursor's line; the region ends at the next column-0 statement.
    end = statement_end(slines, 0)
    return Region("\n".join(plines[start:]), "\n".join(slines[:end]))
