"""What the user changed, per document and across files, grouped into hunks at typing pauses: the edit history a
next-edit model reads.

Each didChange costs a reference to the new text (no diff while typing). A group of changes closes when the user
pauses (``pause_s``), starts editing far from the last change (``far_lines``), or edits another document; its diff is
computed only when a prompt needs it, and once. The history is bounded in groups and in characters; excluded
documents are never recorded (the caller checks ``hapa.context.excludeGlobs`` before ``changed``).
"""

from __future__ import annotations

import difflib
import re
import time
from collections import deque
from dataclasses import dataclass

from hapa_lsp.next_edit.formats import Event


@dataclass(slots=True)
class _Group:
    """Changes to one document between two boundaries: its text before and after them."""

    uri: str
    path: str
    before: str
    after: str
    first_line: int | None
    last_line: int | None
    last: float
    diff: str | None = None  # computed on first use

    def hunks(self, context: int) -> str:
        if self.diff is None:
            self.diff = hunk_diff(self.before, self.after, context)
        return self.diff


@dataclass(slots=True)
class _Doc:
    path: str
    text: str
    open: _Group | None = None


def hunk_diff(before: str, after: str, context: int = 2) -> str:
    """Unified-diff hunks (no ``---``/``+++`` header) from ``before`` to ``after``; the unchanged head and tail
    are cut first so the cost follows the change, not the document."""
    a = before.splitlines(keepends=True)
    b = after.splitlines(keepends=True)
    head = 0
    n = min(len(a), len(b))
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    lo = max(0, head - context)
    a_mid = a[lo:len(a) - max(0, tail - context)]
    b_mid = b[lo:len(b) - max(0, tail - context)]
    out: list[str] = []
    # The first two lines difflib writes are the ---/+++ file header: the prompt formats write their own.
    for line in list(difflib.unified_diff(a_mid, b_mid, n=context))[2:]:
        if line.startswith("@@"):
            line = _shift(line, lo)
        out.append(line if line.endswith("\n") else line + "\n")
    return "".join(out)


_RANGE = re.compile(r"([-+])(\d+)")


def _shift(header: str, by: int) -> str:
    """An ``@@ -a,b +c,d @@`` header with both starts moved down by ``by`` lines (an empty side keeps 0)."""
    return _RANGE.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + by}", header, count=2)


class EditHistory:
    """The user's recent edits, oldest first, for next-edit prompts."""

    def __init__(self, *, max_events: int = 16, max_chars: int = 4000, pause_s: float = 1.0, far_lines: int = 8,
                 context: int = 2):
        self.max_events = max_events
        self.max_chars = max_chars
        self.pause_s = pause_s
        self.far_lines = far_lines
        self.context = context
        self._docs: dict[str, _Doc] = {}
        self._closed: deque[_Group] = deque(maxlen=max(1, max_events))
        self._last_uri: str | None = None

    def configure(self, *, max_events: int, max_chars: int, pause_s: float) -> None:
        """Apply new bounds (settings changed); groups beyond the new count are dropped, oldest first."""
        self.max_events, self.max_chars, self.pause_s = max_events, max_chars, pause_s
        self._closed = deque(self._closed, maxlen=max(1, max_events))

    def opened(self, uri: str, path: str, text: str) -> None:
        """A document was opened: its text is the base of its first group."""
        self._docs[uri] = _Doc(path, text)

    def closed(self, uri: str) -> None:
        """A document was closed: its open group is kept as history, its text forgotten."""
        doc = self._docs.pop(uri, None)
        if doc is not None and doc.open is not None:
            self._close(doc)

    def forget(self, uri: str) -> None:
        """Drop everything recorded for ``uri`` (it became excluded)."""
        self._docs.pop(uri, None)
        self._closed = deque((g for g in self._closed if g.uri != uri), maxlen=self._closed.maxlen)

    def changed(self, uri: str, path: str, text: str, line: int | None, now: float | None = None) -> None:
        """The document's text after one didChange; ``line`` is where the change began (None: whole document)."""
        now = time.monotonic() if now is None else now
        doc = self._docs.get(uri)
        if doc is None:  # changed before we saw it open (history starts now)
            self._docs[uri] = _Doc(path, text)
            return
        doc.path = path
        if self._last_uri is not None and self._last_uri != uri:
            prev = self._docs.get(self._last_uri)
            if prev is not None and prev.open is not None:
                self._close(prev)  # editing another file ends the hunk in the last one
        g = doc.open
        if g is not None and (now - g.last > self.pause_s or self._last_uri != uri or line is None
                              or g.last_line is None or abs(line - g.last_line) > self.far_lines):
            self._close(doc)
            g = None
        if g is None:
            g = doc.open = _Group(uri, path, doc.text, text, line, line, now)
        else:
            g.after, g.last_line, g.last, g.diff = text, line, now, None
        doc.text = text
        self._last_uri = uri

    def _close(self, doc: _Doc) -> None:
        g = doc.open
        doc.open = None
        if g is not None and g.before != g.after:
            self._closed.append(g)

    def _groups(self, skip_open_of: str | None = None) -> list[_Group]:
        """Closed groups, then the groups still open (the latest last), without ``skip_open_of``'s open one."""
        return list(self._closed) + sorted((d.open for k, d in self._docs.items()
                                            if d.open is not None and k != skip_open_of), key=lambda g: g.last)

    def events(self, *, exclude: object = None) -> tuple[Event, ...]:
        """The history as prompt events, oldest first: closed groups, then the groups still open (the latest
        last), within ``max_events`` and ``max_chars`` (the oldest dropped first). ``exclude(path)`` true drops a
        document's events (settings changed since they were recorded)."""
        groups = self._groups()
        out: list[Event] = []
        used = 0
        for g in reversed(groups):
            if len(out) >= self.max_events:
                break
            if callable(exclude) and exclude(g.path):
                continue
            diff = g.hunks(self.context)
            if not diff.strip():
                continue
            if used + len(diff) > self.max_chars:
                break
            used += len(diff)
            out.append(Event(g.path, diff))
        return tuple(reversed(out))

    def recent(self, limit: int, *, skip_open_of: str | None = None) -> tuple[Event, ...]:
        """The ``limit`` latest hunks, newest last, without the group still open in ``skip_open_of`` (the change
        being typed at the cursor: an inline prompt's window shows it); cheap, a keystroke asks."""
        out: list[Event] = []
        for g in reversed(self._groups(skip_open_of)):
            if len(out) >= limit:
                break
            diff = g.hunks(self.context)
            if diff.strip():
                out.append(Event(g.path, diff))
        return tuple(reversed(out))

    def original_text(self, uri: str) -> str | None:
        """``uri``'s text before the oldest change the history still holds (None: nothing recorded)."""
        for g in self._closed:
            if g.uri == uri:
                return g.before
        doc = self._docs.get(uri)
        return doc.open.before if doc is not None and doc.open is not None else None

    def last_event(self, uri: str) -> Event | None:
        """The latest change to ``uri`` (its open group, else its newest closed one), or None."""
        doc = self._docs.get(uri)
        if doc is not None and doc.open is not None:
            d = doc.open.hunks(self.context)
            if d.strip():
                return Event(doc.open.path, d)
        for g in reversed(self._closed):
            if g.uri == uri:
                return Event(g.path, g.hunks(self.context))
        return None


# Beyond this many changed lines on either side, the old region is not worth a line match on the typing path.
_MAX_MATCH_LINES = 2000


def original_lines(old: list[str], new: list[str], r0: int, r1: int) -> list[str] | None:
    """The lines of ``old`` that became lines ``[r0, r1)`` of ``new`` (a line match: unchanged lines map one to one,
    a changed block maps whole, a deletion at either edge of the range is included). None when the changed part is
    too large to match cheaply."""
    head = 0
    n = min(len(old), len(new))
    while head < n and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < n - head and old[len(old) - 1 - tail] == new[len(new) - 1 - tail]:
        tail += 1
    a, b = old[head:len(old) - tail], new[head:len(new) - tail]
    if len(a) > _MAX_MATCH_LINES or len(b) > _MAX_MATCH_LINES:
        return None
    ops = [("equal", 0, head, 0, head)] if head else []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        ops.append((tag, i1 + head, i2 + head, j1 + head, j2 + head))
    if tail:
        ops.append(("equal", len(old) - tail, len(old), len(new) - tail, len(new)))
    start, end = None, None
    for tag, i1, i2, j1, j2 in ops:
        if start is None and (j2 > r0 or j1 == j2 == r0):
            start = i1 + (r0 - j1 if tag == "equal" and r0 > j1 else 0)
        if j1 < r1 or j1 == j2 == r1:
            end = i1 + (min(r1, j2) - j1) if tag == "equal" else i2
    if start is None:
        start = len(old)
    if end is None or end < start:
        end = start
    return old[start:end]
