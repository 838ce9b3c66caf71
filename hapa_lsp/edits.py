"""Pure text functions for edits: indentation, where generated code goes, whole-line selections, diagnostics.

No LSP session, no documents: lines in, ``lsprotocol`` values out (Range, TextEdit, Diagnostic are plain data).
Used by ``features/generate.py`` and ``features/code_actions.py``; unit-tested in ``tests/unit/test_edits.py``.
"""

from __future__ import annotations

import os
import textwrap
from typing import TYPE_CHECKING

from lsprotocol import types

if TYPE_CHECKING:
    from hapa_lsp.validation import Issue, Report


def reindent(code: str, indent: str) -> str:
    """``code`` dedented, then every non-blank line prefixed with ``indent``."""
    code = textwrap.dedent(code.expandtabs(4) if "\t" in code and " " in indent else code).strip("\n")
    return "\n".join((indent + ln) if ln.strip() else "" for ln in code.split("\n"))


def indent_of(line: str) -> str:
    """The leading whitespace of ``line``."""
    return line[: len(line) - len(line.lstrip())]


def block_indent(lines: list[str], row: int) -> str:
    """Indentation for code at a blank line: that of the previous code line, one level deeper after a colon."""
    for i in range(min(row, len(lines)) - 1, -1, -1):
        s = lines[i].rstrip()
        if s.strip():
            base = indent_of(lines[i])
            return base + "    " if s.endswith(":") else base
    return ""


def insertion_at(lines: list[str], row: int, code: str) -> types.TextEdit:
    """Put ``code`` on the blank line ``row`` (replacing it) or on new lines below a non-blank one."""
    row = max(0, min(row, len(lines) - 1))
    line = lines[row]
    if not line.strip():
        indent = indent_of(line) or block_indent(lines, row)
        rng = types.Range(types.Position(row, 0), types.Position(row, len(line)))
        return types.TextEdit(rng, reindent(code, indent))
    indent = indent_of(line) + ("    " if line.rstrip().endswith(":") else "")
    if row + 1 < len(lines):
        at = types.Position(row + 1, 0)
        return types.TextEdit(types.Range(at, at), reindent(code, indent) + "\n")
    at = types.Position(row, len(line))
    return types.TextEdit(types.Range(at, at), "\n" + reindent(code, indent))


def full_lines(lines: list[str], rng: types.Range) -> types.Range:
    """A selection widened to whole lines (a selection ending at column 0 stops at the line before)."""
    start, end = rng.start, rng.end
    if (end.line, end.character) < (start.line, start.character):
        start, end = end, start
    last = len(lines) - 1
    s_line = min(start.line, last)
    e_line = min(end.line, last)
    if end.character == 0 and e_line > s_line:
        e_line -= 1
    return types.Range(types.Position(s_line, 0), types.Position(e_line, len(lines[e_line])))


def text_of(lines: list[str], rng: types.Range) -> str:
    """The text of a whole-line range."""
    return "\n".join(lines[rng.start.line:rng.end.line + 1])


def issue_diagnostics(issues: list[Issue], start_line: int, indent: int) -> list[types.Diagnostic]:
    """Validation issues of code inserted at ``start_line`` (re-indented by ``indent`` columns) as diagnostics."""
    out = []
    for i in issues:
        sev = types.DiagnosticSeverity.Error if i.severity == "error" else types.DiagnosticSeverity.Warning
        out.append(types.Diagnostic(
            range=types.Range(types.Position(start_line + i.line, i.column + indent),
                              types.Position(start_line + i.end_line, i.end_column + indent)),
            message=i.message, severity=sev, source="hapa", code=i.rule))
    return out


def edit_diagnostics(edit: types.TextEdit, report: Report | None) -> list[types.Diagnostic]:
    """Diagnostics for the issues of code inserted by ``edit``, positioned where it lands."""
    if report is None or not report.issues:
        return []
    text = edit.new_text
    lead_nl = 1 if text.startswith("\n") else 0
    first = text.lstrip("\n").split("\n", 1)[0]
    start = edit.range.start.line + lead_nl
    return issue_diagnostics(report.issues, start, len(indent_of(first)))


def module_name(path: str, root: str | None) -> str:
    """Dotted module name of a Python file relative to the workspace root (``src/`` layouts understood)."""
    rel = os.path.relpath(path, root) if root and path.startswith(root) else os.path.basename(path)
    rel = rel[:-3] if rel.endswith(".py") else rel
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def insert_below(lines: list[str], row: int, text: str) -> types.TextEdit:
    """``text`` on new lines below line ``row``."""
    if row + 1 < len(lines):
        at = types.Position(row + 1, 0)
        return types.TextEdit(types.Range(at, at), text + "\n")
    at = types.Position(row, len(lines[row]))
    return types.TextEdit(types.Range(at, at), "\n" + text)
