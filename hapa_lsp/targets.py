"""Pure text functions that find what a code action acts on: a comment describing code, a TODO, a stub function.

Lines in, a ``Target`` (a line range and what is there) out; no LSP session. Used by ``features/code_actions.py``
(listing needs no model call: it reads the text alone); unit-tested in ``tests/unit/test_targets.py``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_DEF = re.compile(r"^(\s*)(async\s+)?def\s+\w+")
_TODO = re.compile(r"^\s*(#|//)\s*(TODO|FIXME)\b[:\s]*(.*)$")
_COMMENT = re.compile(r"^\s*(#|//)\s?(.*)$")
_NOT_A_DESCRIPTION = re.compile(r"^(!|-\*-|\s*(type|noqa|pragma|fmt|pylint|mypy|isort|region|endregion)\b)")
_STUB = re.compile(r"^(\.\.\.|pass|raise\s+NotImplementedError\b.*)$")
_SCAN_UP = 400  # lines looked at above the cursor for an enclosing stub


@dataclass(frozen=True, slots=True)
class Target:
    """Where an action acts: a line range (inclusive, 0-based) and what is there."""

    kind: str  # comment, todo, stub
    start: int
    end: int


def _comment_text(line: str) -> str | None:
    m = _COMMENT.match(line)
    return m.group(2).strip() if m else None


def comment_block(lines: list[str], row: int) -> Target | None:
    """The comment lines around ``row`` when they describe code (a TODO, or three words or more)."""
    if row >= len(lines):
        return None
    line = lines[row]
    text = _comment_text(line)
    if text is None or (row == 0 and line.startswith("#!")) or _NOT_A_DESCRIPTION.match(text):
        return None
    if _TODO.match(line):
        return Target("todo", row, row)
    indent = len(line) - len(line.lstrip())
    start = end = row
    while start > 0 and _comment_text(lines[start - 1]) is not None and \
            len(lines[start - 1]) - len(lines[start - 1].lstrip()) == indent and not _TODO.match(lines[start - 1]):
        start -= 1
    while end + 1 < len(lines) and _comment_text(lines[end + 1]) is not None and \
            len(lines[end + 1]) - len(lines[end + 1].lstrip()) == indent and not _TODO.match(lines[end + 1]):
        end += 1
    words = " ".join(_comment_text(lines[i]) or "" for i in range(start, end + 1)).split()
    if len(words) < 3 or _commented_out_code(lines, start, end):
        return None
    return Target("comment", start, end)


def _commented_out_code(lines: list[str], start: int, end: int) -> bool:
    """True for ``# total = sum(prices)``: code switched off, not a description of code to write."""
    text = "\n".join(_comment_text(lines[i]) or "" for i in range(start, end + 1))
    if not any(c in text for c in "=()[]:"):
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def stub_at(lines: list[str], row: int) -> tuple[Target, int, int] | None:
    """The function whose body is only a docstring and ``...``/``pass``/``raise NotImplementedError``, around ``row``.

    Returns (target from the ``def`` line to the end of the body, first body line, stub statement line).
    """
    lo = max(0, row - _SCAN_UP)
    for d in range(min(row, len(lines) - 1), lo - 1, -1):
        m = _DEF.match(lines[d])
        if not m:
            continue
        def_indent = len(m.group(1))
        # The signature may span lines; it ends at the first line whose code ends with a colon.
        sig_end = d
        while sig_end < len(lines) and not lines[sig_end].split("#", 1)[0].rstrip().endswith(":"):
            sig_end += 1
            if sig_end - d > 30:
                return None
        if sig_end >= len(lines):
            return None
        body: list[int] = []
        i = sig_end + 1
        while i < len(lines):
            ln = lines[i]
            if ln.strip() and _indent(ln) <= def_indent:
                break
            body.append(i)
            i += 1
        while body and not lines[body[-1]].strip():
            body.pop()
        if not body:
            return None
        end = body[-1]
        if row > end:
            return None  # the nearest def above ends before the cursor: the cursor is not in a stub
        stmts = [j for j in body if lines[j].strip() and not lines[j].lstrip().startswith("#")]
        # Skip a leading docstring (one or more lines).
        if stmts:
            first = lines[stmts[0]].strip()
            q = first[:3] if first[:3] in ('"""', "'''") else (first[:4][1:] if first[:1] in "rRuU" and
                                                                 first[1:4] in ('"""', "'''") else "")
            if q:
                rest = first[first.index(q) + 3:]
                if q in rest:
                    stmts = stmts[1:]
                else:
                    k = 1
                    while k < len(stmts) and q not in lines[stmts[k]]:
                        k += 1
                    stmts = stmts[k + 1:]
        if len(stmts) != 1 or not _STUB.match(lines[stmts[0]].strip()):
            return None
        return Target("stub", d, end), sig_end + 1, stmts[0]
    return None
