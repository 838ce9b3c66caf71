"""Neighbouring code: snippets of other open and recently edited documents, ranked by identifier overlap.

Each document is cut into overlapping chunks of lines once per version, each chunk reduced to its set of
identifiers; a request compares the identifiers around the cursor with every chunk (Jaccard similarity).
Closed documents stay in the index for a while as "recently edited". Excluded files are never indexed.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from hapa_lsp.context import is_excluded

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_COMMON = frozenset("""self cls def class return import from None True False and not for while with else elif
try except finally pass raise lambda yield async await print len str int list dict set tuple var let const
function this new null undefined the""".split())

CHUNK_LINES = 24
STRIDE = 12
_RECENT_S = 900.0
_MAX_DOCS = 40


def identifiers(text: str) -> frozenset[str]:
    """The identifier tokens of ``text`` (3+ characters, keywords and ubiquitous names left out)."""
    return frozenset(t for t in _IDENT.findall(text) if t not in _COMMON)


@dataclass(frozen=True, slots=True)
class Snippet:
    """A chunk of another document and how similar it is to the cursor's surroundings."""

    uri: str
    path: str
    start: int  # 0-based first line
    text: str
    score: float


@dataclass(slots=True)
class _Doc:
    path: str
    version: object
    chunks: list[tuple[int, str, frozenset[str]]]
    seen: float


class NeighbourIndex:
    """Chunks of the documents the user has open or edited recently, by identifier set."""

    def __init__(self, exclude_globs: tuple[str, ...] = ()):
        self.exclude_globs = tuple(exclude_globs)
        self._docs: OrderedDict[str, _Doc] = OrderedDict()
        self._memo: tuple[tuple, list[Snippet]] | None = None

    def update(self, uri: str, path: str, version: object, text: str) -> None:
        """Index (or re-index, when its version changed) one document."""
        if is_excluded(path, self.exclude_globs):
            self._docs.pop(uri, None)
            return
        now = time.monotonic()
        d = self._docs.get(uri)
        if d is not None and d.version == version:
            d.seen = now
            self._docs.move_to_end(uri)
            return
        lines = text.split("\n")
        chunks = []
        for start in range(0, max(1, len(lines) - STRIDE), STRIDE):
            body = "\n".join(lines[start:start + CHUNK_LINES])
            ids = identifiers(body)
            if len(ids) >= 3:
                chunks.append((start, body, ids))
        self._docs[uri] = _Doc(path, version, chunks, now)
        self._docs.move_to_end(uri)
        self._memo = None
        while len(self._docs) > _MAX_DOCS:
            self._docs.popitem(last=False)

    def sync(self, docs: list[tuple[str, str, object, str]]) -> None:
        """Index the currently open documents ``(uri, path, version, text)``; others age out as 'recent'."""
        for uri, path, version, text in docs:
            self.update(uri, path, version, text)
        now = time.monotonic()
        for uri in [u for u, d in self._docs.items() if now - d.seen > _RECENT_S]:
            del self._docs[uri]
            self._memo = None

    def search(self, query: str, *, exclude_uri: str = "", limit: int = 3, min_score: float = 0.04
               ) -> list[Snippet]:
        """The ``limit`` best non-overlapping chunks of other documents for the text around the cursor."""
        q = identifiers(query)
        if not q or limit <= 0:
            return []
        key = (q, exclude_uri, limit, tuple((u, d.version) for u, d in self._docs.items()))
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]  # same identifiers around the cursor as the last keystroke
        scored: list[tuple[float, str, int, str]] = []
        nq = len(q)
        for uri, d in self._docs.items():
            if uri == exclude_uri:
                continue
            for start, body, ids in d.chunks:
                inter = len(q & ids)
                if inter:
                    s = inter / (nq + len(ids) - inter)
                    if s >= min_score:
                        scored.append((s, uri, start, body))
        scored.sort(key=lambda t: -t[0])
        out: list[Snippet] = []
        taken: dict[str, list[int]] = {}
        for s, uri, start, body in scored:
            if any(abs(start - o) < CHUNK_LINES for o in taken.get(uri, [])):
                continue  # overlaps a better chunk of the same document
            taken.setdefault(uri, []).append(start)
            out.append(Snippet(uri, self._docs[uri].path, start, body, s))
            if len(out) >= limit:
                break
        self._memo = (key, out)
        return out
