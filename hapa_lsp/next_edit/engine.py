"""Next edit suggestions: the edit the user will make next, in a region near the cursor or at the next place the
last change calls for.

::

    NextEditEngine.suggest    supersede the document's older request -> rebase the last suggestion over what the
                              user typed (no model call) -> region (cursor, or the jump target) -> prompt in the
                              model's format (formats.py) with the edit history (history.py) -> cache -> debounce
                              -> model (raw or chat, closed on cancel) -> parse -> minimal edits (edits.py) ->
                              Python syntax check -> NextEdit (LSP positions)

One engine per server (``HapaServer.next_edits``); the LSP surface is ``features/next_edit.py``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.cache import digest
from hapa_lsp.context import units_len, units_to_index
from hapa_lsp.context.syntax import code_only, multiline_strings, parses, statement_end, statement_start
from hapa_lsp.next_edit import formats
from hapa_lsp.next_edit.edits import Edit, apply, minimal_edits, only_whitespace, rebase
from hapa_lsp.next_edit.history import EditHistory, original_lines

if TYPE_CHECKING:
    from hapa_lsp.config import Settings
    from hapa_lsp.upstream import Upstream

# LSP line breaks (\n, \r\n, \r), each line with its break; the last line may have none.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_DEF = re.compile(r"\b(?:def|function|func|fn|fun|sub)\s+([A-Za-z_]\w*)\s*\(")
# How far above the excerpt's first line a string that it would cut may start (a long docstring).
_STRING_SCAN = 200
_KEYWORDS = frozenset(["def", "class", "return", "if", "else", "elif", "for", "while", "in", "is", "not", "and", "or", "import", "from", "as", "with", "try", "except", "finally", "raise", "pass", "break", "continue", "lambda", "yield", "await", "async", "None", "True", "False", "self"])


def lines_of(text: str) -> list[str]:
    """``text`` as LSP lines, each with its line break."""
    return _LINE.findall(text)


@dataclass(frozen=True, slots=True)
class TextEdit:
    """One edit in document coordinates: (line, column in position units) to (line, column), new text."""

    start: tuple[int, int]
    end: tuple[int, int]
    text: str


@dataclass(slots=True)
class NextEdit:
    """The suggested edits (best first; one alternative today) and where they came from."""

    edits: list[TextEdit]
    request_id: str
    model: str
    format: str
    source: str  # "model", "cache" or "rebased"
    jump: bool  # the region is the next place the last change calls for, not the cursor's
    region: tuple[int, int] = (0, 0)  # first line, line past the end
    timings: dict[str, float] = field(default_factory=dict)
    prompt_chars: int = 0


@dataclass(slots=True)
class _Shown:
    """The last suggestion for a document, to rebase while the user types it."""

    head: str
    tail: str
    region: str
    edits: list[Edit]
    first_line: int
    model: str
    format: str
    jump: bool


@dataclass(slots=True)
class _Doc:
    task: asyncio.Task | None = None
    shown: _Shown | None = None


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def changed_symbols(diff: str) -> tuple[set[str], set[str]]:
    """From one history hunk: identifiers the change removed (renamed away), and functions whose signature it
    changed (their calls are the next places to edit)."""
    removed = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
    added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+")]
    old_ids = {m.group() for ln in removed for m in _IDENT.finditer(ln)}
    new_ids = {m.group() for ln in added for m in _IDENT.finditer(ln)}
    gone = {i for i in old_ids - new_ids if i not in _KEYWORDS}
    old_defs = {m.group(1): _arity(ln[m.end():]) for ln in removed for m in _DEF.finditer(ln)}
    new_defs = {m.group(1): _arity(ln[m.end():]) for ln in added for m in _DEF.finditer(ln)}
    # A parameter added or removed: calls need the change too (a renamed parameter does not change them).
    signatures = {name for name in old_defs.keys() & new_defs.keys() if old_defs[name] != new_defs[name]}
    return gone, signatures


def _arity(rest: str) -> int:
    """Parameters in a signature, from just after its ``(`` (to the matching ``)`` or the end of the line)."""
    depth, count, seen = 0, 0, False
    for ch in rest:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            count += 1
            seen = False
            continue
        if not ch.isspace():
            seen = True
    return count + (1 if seen else 0)


def _module_level(diff: str) -> set[str]:
    """Functions the hunk's new lines define at column 0 (module-level: ``x.name(`` calls another object's)."""
    return {m.group(1) for ln in diff.splitlines() if ln.startswith("+") and ln[1:2] not in (" ", "\t")
            for m in _DEF.finditer(ln[1:])}


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_BLOCK = re.compile(r"\s*(?:async\s+)?(?:def|class)\b")


def added_rows(diff: str) -> list[tuple[int, str]]:
    """The hunk's added lines as (0-based row in the new text, line without its ``+``)."""
    out: list[tuple[int, str]] = []
    row = None
    for ln in diff.splitlines():
        m = _HUNK.match(ln)
        if m:
            row = int(m.group(1)) - 1
            continue
        if row is None:
            continue
        if ln.startswith("+"):
            out.append((row, ln[1:]))
            row += 1
        elif not ln.startswith("-"):
            row += 1
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _block_end(lines: list[str], row: int) -> int:
    """Past the last line of the block that the line at ``row`` opens (its more-indented lines after it)."""
    depth = _indent(lines[row])
    for i in range(row + 1, len(lines)):
        if lines[i].strip() and _indent(lines[i]) <= depth and not lines[i].lstrip().startswith((")", "]", "}")):
            return i
    return len(lines)


def rename_scope(lines: list[str], diff: str) -> tuple[int, int] | None:
    """The lines a rename in ``diff`` concerns (Python): a parameter renamed on a ``def`` line, that function's
    body; a local renamed inside a function, the rest of that function. None: the whole document (module
    level, or the changed line is no longer where the hunk says)."""
    for row, text in added_rows(diff):
        body = text.rstrip("\r\n")
        at = next((r for r in (row, *range(row - 20, row + 21)) if 0 <= r < len(lines)
                   and _strip_eol(lines[r]) == body), None)
        if at is None:
            continue
        if _BLOCK.match(body) and _DEF.search(body):
            return at + 1, _block_end(lines, at)
        depth = _indent(lines[at])
        for i in range(at - 1, -1, -1):
            ln = lines[i]
            if ln.strip() and _indent(ln) < depth:
                if _BLOCK.match(ln) and _DEF.search(ln):
                    return at, _block_end(lines, i)
                depth = _indent(ln)
                if depth == 0:
                    break
        return None
    return None


def _needs_work(line: str, code: str, gone: set[str], signatures: set[str], module_level: set[str] = frozenset()
                ) -> bool:
    """Whether the line names a renamed identifier (anywhere: a rename covers docstrings and comments too), or
    calls, in code (``code`` is the line with strings and comments blanked), a function whose signature changed
    (for a module-level function, not an attribute of the same name: ``_curses.initscr()`` is not ``initscr()``)."""
    body = _strip_eol(line)
    for m in _IDENT.finditer(body):
        if m.group() in gone:
            return True
    for name in signatures:
        for m in re.finditer(rf"\b{re.escape(name)}\s*\(", code):
            if name in module_level and code[:m.start()].rstrip().endswith("."):
                continue
            if not _DEF.search(code[:m.end()]):
                return True
    return False


def jump_target(lines: list[str], region: tuple[int, int], diff: str | None, code: list[str] | None = None,
                scoped: bool = False) -> int | None:
    """The next line (after the region, then before it) that the last change calls for, when the region itself
    has none: a use of a renamed name, a call of a function whose signature changed. ``code`` is ``lines`` with
    strings and comments blanked (Python), so a function named in prose is not taken for a call; ``scoped``
    (Python): a renamed parameter or local is looked for in its function only (``rename_scope``)."""
    if not diff:
        return None
    gone, signatures = changed_symbols(diff)
    if not gone and not signatures:
        return None
    code = code if code is not None and len(code) == len(lines) else lines
    module_level = _module_level(diff) & signatures
    # A renamed parameter or local: its uses in other functions are other variables of the same name.
    scope = rename_scope(lines, diff) if gone and scoped else None

    def needs_work(i: int) -> bool:
        renamed = gone if scope is None or scope[0] <= i < scope[1] else set()
        return _needs_work(lines[i], code[i], renamed, signatures, module_level)

    r0, r1 = region
    if any(needs_work(i) for i in range(r0, min(r1, len(lines)))):
        return None
    for i in list(range(r1, len(lines))) + list(range(r0)):
        if needs_work(i):
            return i
    return None


class NextEditEngine:
    """Turns (document, cursor, edit history) into the next edit, or nothing."""

    def __init__(self, settings: Settings, upstream: Upstream, history: EditHistory, *,
                 model_gate: Callable[[bool], bool] | None = None,
                 notify_failure: Callable[[errors.HapaError, str, bool], None] | None = None,
                 notify_success: Callable[[], None] | None = None):
        self.settings = settings
        self.upstream = upstream
        self.history = history
        self._model_gate = model_gate
        self._notify_failure = notify_failure or (lambda e, rid, explicit: None)
        self._notify_success = notify_success or (lambda: None)
        self._docs: dict[str, _Doc] = {}

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings

    def model(self) -> str:
        """The model next edits use."""
        return self.settings.next_edit.model or self.settings.backend.chat_model

    def did_change(self, uri: str) -> None:
        """A keystroke: the request computing for the previous text is of no use any more."""
        st = self._docs.get(uri)
        if st is not None and st.task is not None and not st.task.done():
            st.task.cancel()

    def did_close(self, uri: str) -> None:
        st = self._docs.pop(uri, None)
        if st is not None and st.task is not None:
            st.task.cancel()

    def forget_shown(self, uri: str) -> None:
        """The user rejected (or the editor dropped) the shown suggestion: do not serve it again by rebase."""
        st = self._docs.get(uri)
        if st is not None:
            st.shown = None

    async def suggest(self, *, uri: str, path: str, language: str, text: str, line: int, character: int,
                      request_id: str, encoding: str = "utf-16", still_current: Callable[[], bool] = lambda: True
                      ) -> NextEdit | None:
        """The next edit for this document state (or None). A newer request for the document supersedes this one
        (it returns None and its upstream request is closed); a request the client cancels raises
        CancelledError and closes its upstream request too."""
        st = self._docs.setdefault(uri, _Doc())
        if st.task is not None and not st.task.done():
            st.task.cancel()
        task = asyncio.ensure_future(self._suggest(st, uri, path, language, text, line, character, request_id,
                                                   encoding, still_current))
        st.task = task
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cur = asyncio.current_task()
            if cur is not None and cur.cancelling():
                task.cancel()
                raise
            return None  # superseded
        finally:
            if st.task is task and task.done():
                st.task = None

    async def _suggest(self, st: _Doc, uri: str, path: str, language: str, text: str, line: int, character: int,
                       rid: str, encoding: str, still_current: Callable[[], bool]) -> NextEdit | None:
        t0 = time.perf_counter()
        s = self.settings.next_edit
        lines = lines_of(text)
        if not lines or lines[-1].endswith(("\n", "\r")):
            lines.append("")  # the empty last line the cursor can be on
        line = max(0, min(line, len(lines) - 1))
        rebased = self._rebase(st, text, lines, encoding, rid, t0)
        if rebased is not None:
            return rebased
        r0, r1, target = self.region_for(uri, text, lines, line, language)
        jump = target is not None
        if target is not None:
            cursor_line, cursor_col = target, 0
        else:
            cursor_line, cursor_col = line, units_to_index(_strip_eol(lines[line]), character, encoding)
        region = "".join(lines[r0:r1])
        cursor = sum(len(x) for x in lines[r0:cursor_line]) + cursor_col
        head = "".join(lines[:r0])
        tail = "".join(lines[r1:])
        model = self.model()
        fmt = formats.format_for(model, s.format)
        b0, a1 = max(0, r0 - s.context_lines), min(len(lines), r1 + s.context_lines)
        if language == "python":
            b0, a1 = self._excerpt_bounds(lines, b0, r0, r1, a1)
        inp = formats.EditInput(
            path=path, language=language, events=self.history.events(), before="".join(lines[b0:r0]),
            region=region, cursor=min(cursor, len(region)), after="".join(lines[r1:a1]),
            original_region=self._original_region(uri, lines, r0, r1) if fmt == "sweep" else region,
            at_file_start=b0 == 0)
        prompt = formats.build(fmt, inp, max_tokens=s.max_tokens)
        b = self.settings.backend
        key = digest("next_edit", b.kind, b.endpoint, model, fmt, s.max_tokens, b.temperature, prompt.text())
        prepare_ms = (time.perf_counter() - t0) * 1000
        cached = await self.upstream.cache.aget("completions", key)
        source = "cache"
        model_ms = 0.0
        if cached is None:
            source = "model"
            wait = s.debounce_ms / 1000 - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
            if not still_current():
                return None
            if self._model_gate is not None and not self._model_gate(False):
                return None
            t_model = time.perf_counter()
            answer = await self._call(prompt, model, rid)
            model_ms = (time.perf_counter() - t_model) * 1000
            new_region = formats.parse(fmt, answer, inp)
            cached = new_region if new_region is not None else ""
            self.upstream.cache.put("completions", key, cached)
        self.upstream.emit("cache", hit=source == "cache", region="completions")
        timings = {"prepare_ms": prepare_ms, "model_ms": model_ms,
                   "total_ms": (time.perf_counter() - t0) * 1000}
        timings["overhead_ms"] = timings["total_ms"] - model_ms - (s.debounce_ms if source == "model" else 0)
        if not cached:
            return None
        edits = self._acceptable(region, cached, head, tail, lines, r0, r1, language)
        if not edits:
            return None
        st.shown = _Shown(head, tail, region, edits, r0, model, fmt, jump)
        out = NextEdit(self._combined(region, r0, edits, encoding), rid, model, fmt, source, jump, (r0, r1),
                       timings, len(prompt.text()))
        self.upstream.emit("suggestion", source=source, model=model, chars=sum(len(e.new) for e in edits),
                           timings=timings)
        return out

    def region_for(self, uri: str, text: str, lines: list[str], line: int, language: str
                   ) -> tuple[int, int, int | None]:
        """The lines the model may rewrite, ``(first, past the last, jump target or None)``: around the cursor, or
        around the next place the document's last change calls for when the cursor's region has none."""
        s = self.settings.next_edit
        r0, r1 = max(0, line - s.lines_above), min(len(lines), line + s.lines_below + 1)
        last = self.history.last_event(uri)
        code = None
        if last is not None and language == "python" and changed_symbols(last.diff)[1]:
            code = lines_of(code_only(text))
            if not code or code[-1].endswith(("\n", "\r")):
                code.append("")
        target = jump_target(lines, (r0, r1), last.diff if last else None, code, scoped=language == "python")
        if target is not None:
            r0, r1 = max(0, target - s.lines_above), min(len(lines), target + s.lines_below + 1)
        return r0, r1, target

    @staticmethod
    def _excerpt_bounds(lines: list[str], b0: int, r0: int, r1: int, a1: int) -> tuple[int, int]:
        """The excerpt's lines ``[b0, a1)`` around the region, moved so that neither end cuts a string in two (a
        docstring's middle read as code, its closing quotes as an opening, or one left open at the end): the first
        line goes below a string it would cut (to the string's start when the string runs into the region), the
        last line above one (or to its end when the string starts in the region)."""
        top = b0
        if b0 > 0:
            lo = max(0, b0 - _STRING_SCAN)
            top = lo + statement_start([_strip_eol(x) for x in lines[lo:b0 + 1]], b0 - lo)
        end = min(len(lines), a1 + _STRING_SCAN)
        for first, last in multiline_strings("".join(lines[top:end])):
            first, last = first + top, last + top
            if first < b0 <= last:
                b0 = last + 1 if last + 1 < r0 else first
            if first < a1 <= last:
                a1 = first if first >= r1 else min(len(lines), last + 1)
            if first >= a1:
                break
        return b0, a1

    def _original_region(self, uri: str, lines: list[str], r0: int, r1: int) -> str:
        """The region's text before the document's recorded edits (Sweep's ``original/`` block), or the region
        itself when nothing is recorded or the change is too large to match."""
        region = "".join(lines[r0:r1])
        text = self.history.original_text(uri)
        if text is None:
            return region
        old = lines_of(text)
        if not old or old[-1].endswith(("\n", "\r")):
            old.append("")
        found = original_lines(old, lines, r0, r1)
        return region if found is None else "".join(found)

    def _rebase(self, st: _Doc, text: str, lines: list[str], encoding: str, rid: str, t0: float
                ) -> NextEdit | None:
        shown = st.shown
        if shown is None:
            return None
        if not (text.startswith(shown.head) and text.endswith(shown.tail)
                and len(text) >= len(shown.head) + len(shown.tail)):
            st.shown = None
            return None
        now = text[len(shown.head):len(text) - len(shown.tail)]
        rest = rebase(shown.region, shown.edits, now)
        if rest is None or not rest:
            st.shown = None  # stale, or the user made all of it
            return None
        st.shown = _Shown(shown.head, shown.tail, now, rest, shown.first_line, shown.model, shown.format, shown.jump)
        r1 = shown.first_line + len(lines_of(now))
        timings = {"total_ms": (time.perf_counter() - t0) * 1000, "model_ms": 0.0}
        timings["overhead_ms"] = timings["total_ms"]
        return NextEdit(self._combined(now, shown.first_line, rest, encoding), rid, shown.model, shown.format,
                        "rebased", shown.jump, (shown.first_line, r1), timings)

    def _acceptable(self, region: str, new_region: str, head: str, tail: str, lines: list[str], r0: int, r1: int,
                    language: str) -> list[Edit]:
        """The minimal edits, or [] for a no-op, whitespace-only noise, or Python the edit would break."""
        edits = minimal_edits(region, new_region)
        if not edits or only_whitespace(region, edits):
            return []
        if language == "python":
            # The top-level statements around the region, before and after the edit: a suggestion must not
            # break code that parsed (code that did not parse may stay broken: the user is mid-edit).
            bare = [_strip_eol(x) for x in lines]
            s0 = statement_start(bare, r0) if r0 < len(bare) else r0
            s1 = statement_end(bare, max(r0, r1 - 1)) if r1 > 0 else r1
            before = "".join(lines[s0:r0])
            after = "".join(lines[r1:max(r1, s1)])
            if parses(before + region + after) and not parses(before + new_region + after):
                return []
        return edits

    @classmethod
    def _combined(cls, region: str, first_line: int, edits: list[Edit], encoding: str) -> list[TextEdit]:
        """The edits as one replacement of the span from the first to the last (Copilot's shape: one text and one
        range per alternative)."""
        lo, hi = edits[0].start, edits[-1].end
        span = apply(region[lo:hi], [Edit(e.start - lo, e.end - lo, e.new) for e in edits])
        return cls._positions(region, first_line, [Edit(lo, hi, span)], encoding)

    @staticmethod
    def _positions(region: str, first_line: int, edits: list[Edit], encoding: str) -> list[TextEdit]:
        """Region offsets as LSP positions (line, column in the negotiated units)."""
        rl = lines_of(region) or [""]
        starts = [0]
        for x in rl:
            starts.append(starts[-1] + len(x))

        def pos(off: int) -> tuple[int, int]:
            # The line holding offset `off` (an offset at a line's end, after its break, is the next line's start).
            lo, hi = 0, len(rl)
            while lo < hi:
                mid = (lo + hi) // 2
                if starts[mid + 1] <= off:
                    lo = mid + 1
                else:
                    hi = mid
            if lo >= len(rl):
                return first_line + len(rl), 0
            return first_line + lo, units_len(_strip_eol(rl[lo])[:off - starts[lo]], encoding)

        return [TextEdit(pos(e.start), pos(e.end), e.new) for e in edits]

    async def _call(self, prompt: formats.EditPrompt, model: str, rid: str) -> str:
        parts: list[str] = []
        b = self.settings.backend
        timeout = self.settings.next_edit.timeout
        try:
            async with self.upstream.call(model, "next_edit") as usage:
                if prompt.raw is not None:
                    stream = self.upstream.backend.stream_raw(prompt.raw, model=model, max_tokens=prompt.max_tokens,
                                                              temperature=b.temperature, usage=usage,
                                                              stop=prompt.stop, timeout=timeout)
                else:
                    stream = self.upstream.backend.stream_chat(list(prompt.messages), model=model,
                                                               max_tokens=prompt.max_tokens,
                                                               temperature=b.temperature, usage=usage,
                                                               stop=prompt.stop, timeout=timeout)
                async with aclosing(stream) as chunks:
                    async for delta in chunks:
                        parts.append(delta)
        except errors.HapaError as exc:
            self._notify_failure(exc, rid, False)
            raise
        self._notify_success()
        return "".join(parts)

    def stats(self) -> dict[str, Any]:
        return {"documents": len(self._docs)}
