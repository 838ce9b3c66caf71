"""Context for prompts: the cursor's place in a document and the budgeted prefix / suffix windows."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache

from hapa_lsp.errors import FileExcluded


@dataclass(frozen=True, slots=True)
class CursorText:
    """A document split at the cursor (position clamped into the document)."""

    text: str
    offset: int
    line: int  # 0-based line of the cursor, after clamping
    character: int  # code points into the line, after clamping
    line_prefix: str
    line_suffix: str

    @property
    def prefix(self) -> str:
        """Everything before the cursor."""
        return self.text[: self.offset]

    @property
    def suffix(self) -> str:
        """Everything after the cursor."""
        return self.text[self.offset:]


def _unit_len(ch: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(ch.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return 1
    return 2 if ord(ch) > 0xFFFF else 1


def units_len(text: str, encoding: str = "utf-16") -> int:
    """Length of ``text`` in the negotiated position units (UTF-16 unless the client chose otherwise)."""
    if text.isascii() or encoding == "utf-32":
        return len(text)
    return sum(_unit_len(c, encoding) for c in text)


def units_to_index(line: str, units: int, encoding: str = "utf-16") -> int:
    """Code-point index into ``line`` of a column given in the negotiated position units (the inverse of
    ``units_len``)."""
    return _units_to_index(line, units, encoding)


def _units_to_index(line: str, units: int, encoding: str) -> int:
    """Code-point index of a column given in position units."""
    if line.isascii() or encoding == "utf-32":
        return min(units, len(line))
    count = 0
    for i, ch in enumerate(line):
        if count >= units:
            return i
        count += _unit_len(ch, encoding)
    return len(line)


_LONE_CR = re.compile("\r(?!\n)")
_LINE_BREAK = re.compile("\r\n|\r|\n")
# The last text checked for lone CR line breaks, and the answer (a document's text is split several times).
_known_breaks: list = [None, False]


def remember_line_breaks(text: str, lone_cr: bool) -> None:
    """Record whether ``text`` has a lone CR line break (documents.py knows it from the edit, for free)."""
    _known_breaks[0], _known_breaks[1] = text, lone_cr


def has_lone_cr(text: str) -> bool:
    """True when ``text`` breaks a line with a CR not followed by LF (LSP counts it as a line break)."""
    if "\r" not in text:
        return False
    if text is _known_breaks[0]:
        return bool(_known_breaks[1])
    found = _LONE_CR.search(text) is not None
    remember_line_breaks(text, found)
    return found


def split_at(text: str, line: int, character: int, encoding: str = "utf-16") -> CursorText:
    """Split ``text`` at an LSP position; positions past the end are clamped, never an error."""
    if has_lone_cr(text):
        return _split_any_breaks(text, line, character, encoding)
    return _split_from(text, line, character, encoding, 0, 0)


def _split_any_breaks(text: str, line: int, character: int, encoding: str) -> CursorText:
    # Documents with lone CR line breaks (old Mac files, mixed endings) are rare: a full scan is fine here.
    starts = [0]
    ends = []
    for m in _LINE_BREAK.finditer(text):
        ends.append(m.start())
        starts.append(m.end())
    ends.append(len(text))
    row = min(max(0, line), len(starts) - 1)
    line_text = text[starts[row]:ends[row]]
    col = len(line_text) if row < line else _units_to_index(line_text, max(0, character), encoding)
    return CursorText(text, starts[row] + col, row, col, line_text[:col], line_text[col:])


def split_near(text: str, line: int, character: int, encoding: str, known_line: int, known_start: int
               ) -> CursorText:
    """``split_at``, walking from a line whose start offset is already known instead of from the top.

    The caller guarantees that ``known_start`` is still where line ``known_line`` starts in ``text``
    (no edit above it since it was computed); on a 4,600-line file this turns ~0.7 ms into microseconds.
    """
    if known_line <= 0 or known_start <= 0 or known_start > len(text) or text[known_start - 1] != "\n":
        return split_at(text, line, character, encoding)
    if has_lone_cr(text):
        return _split_any_breaks(text, line, character, encoding)
    return _split_from(text, line, character, encoding, known_line, known_start)


def _split_from(text: str, line: int, character: int, encoding: str, row: int, start: int) -> CursorText:
    # Walk line starts with str.find / rfind from (row, start): no list of lines is built on the typing path.
    line = max(0, line)
    while row > line:
        start = text.rfind("\n", 0, start - 1) + 1
        row -= 1
    while row < line:
        nl = text.find("\n", start)
        if nl == -1:
            break
        start = nl + 1
        row += 1
    end = text.find("\n", start)
    if end == -1:
        end = len(text)
    line_text = text[start:end]
    if line_text.endswith("\r"):
        line_text = line_text[:-1]
    # Past the last line: the end of the document.
    col = len(line_text) if row < line else _units_to_index(line_text, max(0, character), encoding)
    return CursorText(text, start + col, row, col, line_text[:col], line_text[col:])


@dataclass(frozen=True, slots=True)
class Window:
    """The prefix and suffix that fit the prompt budget, cut at line boundaries."""

    prefix: str
    suffix: str
    prefix_truncated: bool
    suffix_truncated: bool


def budget_window(cur: CursorText, *, max_tokens: int, prefix_ratio: float, chars_per_token: float,
                  reserve_tokens: int = 0) -> Window:
    """Take whole lines around the cursor until the character budget for each side is spent."""
    budget = max(64, int((max_tokens - reserve_tokens) * chars_per_token))
    return window_for_chars(cur, budget, prefix_ratio)


def window_step(chars: int) -> int:
    """The grid, in characters, that a window of ``chars`` characters snaps its edges to: the largest power of
    two at most a 32nd of it (128 for a 2,048-token prompt), so that it changes only when the budget doubles."""
    return 1 << max(0, (chars // 32).bit_length() - 1)


def window_for_chars(cur: CursorText, budget: int, prefix_ratio: float) -> Window:
    """Whole lines around the cursor within ``budget`` characters, ``prefix_ratio`` of them before the cursor.

    The edges are stable from one keystroke to the next, so that a model server with a prompt cache (llama.cpp,
    vLLM, Ollama) finds the previous prompt's start again. The prefix starts at the first line break after
    a point on a grid of ``window_step(budget)`` characters, computed from the cursor's line and its column
    rounded up to that step (not from the cursor itself): typing along a line shorter than the step never
    moves the first line, a budget that changes by a few characters (another fact in the prompt, an exact
    tokenizer's count) rarely does, and moving to the next line moves it by at most one step. The suffix ends
    at the last line break before a grid point (it moves once every ``step`` characters typed). The cost: up
    to two steps of the prefix's budget and one of the suffix's are left unused.
    """
    pre_budget = int(budget * prefix_ratio)
    suf_budget = budget - pre_budget
    text, off = cur.text, cur.offset
    # Give unused suffix budget to the prefix and vice versa (a cursor near either end).
    suf_avail = len(text) - off
    if suf_avail < suf_budget:
        pre_budget += suf_budget - suf_avail
        suf_budget = suf_avail
    if off < pre_budget:
        suf_budget += pre_budget - off
        pre_budget = off
    step = window_step(budget)
    pstart = 0
    p_trunc = off > pre_budget
    if p_trunc:
        raw = off - pre_budget  # the earliest start within budget
        col = len(cur.line_prefix)
        # The cursor's column rounded up to the grid, from its line's start: the same for a whole bucket of
        # columns, and never before the cursor, so the prefix stays within budget.
        anchor = off - col % step + step
        grid = -(-(anchor - pre_budget) // step) * step  # rounded up: >= raw
        nl = text.find("\n", grid, off)
        if nl == -1:
            nl = text.find("\n", raw, off)  # the cursor's line alone is nearly the whole budget
        # Keep at least the end of the cursor's own line even if it alone is over budget.
        pstart = nl + 1 if nl != -1 else (grid if grid < off else raw)
    send = min(len(text), off + suf_budget)
    s_trunc = send < len(text)
    if s_trunc:
        grid = send // step * step  # rounded down: within budget
        nl = text.rfind("\n", off, grid) if grid > off else -1
        if nl == -1:
            nl = text.rfind("\n", off, send)
        send = nl + 1 if nl != -1 else send
    return Window(text[pstart:off], text[off:send], p_trunc, s_trunc)


@lru_cache(maxsize=256)
def _compiled(globs: tuple[str, ...]):
    import re

    return re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None


def is_excluded(path: str, globs: tuple[str, ...] | list[str]) -> bool:
    """True when ``path`` (or its file name) matches one of the exclude globs."""
    rx = _compiled(tuple(globs))
    if rx is None or not path:
        return False
    p = path.replace("\\", "/")
    name = p.rsplit("/", 1)[-1]
    return bool(rx.match(name) or rx.match(p))


def exclusion_error(path: str, globs: tuple[str, ...] | list[str]) -> FileExcluded | None:
    """E4007 when ``path`` is excluded from AI (``hapa.context.excludeGlobs``): the one test every feature that
    sends a document's text to the model makes."""
    if not is_excluded(path, globs):
        return None
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return FileExcluded(f"{name} is excluded from AI (hapa.context.excludeGlobs)")
