"""The context engine: one budgeted prompt from the window, jedi facts and neighbouring snippets.

Used by the server's typing path (``Engine._suggest``), by ``hapa-lsp context`` and by
``benchmarks/context_recall.py`` through the same three steps:

1. ``start`` (sync, on the event loop, ~1 ms): cursor split, multi-line decision, the names used near
   the cursor, neighbour snippets, and the facts already cached from earlier keystrokes;
2. ``complete`` (async): resolve the missing facts in the jedi worker until the time box ends;
3. ``assemble`` (sync): fit window + facts + snippets into the token budget and render the prompt in the
   model family's multi-file format. The whole prompt is counted, so the budget is never exceeded.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from hapa_lsp.cache_dirs import facts_cache_directory
from hapa_lsp.context import CursorText, Window, budget_window, is_excluded, split_at, window_for_chars
from hapa_lsp.context.facts import Fact, FactsEngine, Use, Uses, find_uses, imports_of
from hapa_lsp.context.facts_store import FactsStore
from hapa_lsp.context.jedi_facts import import_statement
from hapa_lsp.context.neighbours import NeighbourIndex, Snippet
from hapa_lsp.context.static_facts import StaticFacts
from hapa_lsp.context.syntax import Decision, decide
from hapa_lsp.context.tokens import CounterLoader, TokenCounter
from hapa_lsp.context.uses import namespace_chains
from hapa_lsp.documents import doc_key, name_of
from hapa_lsp.jedi_client import JediError
from hapa_lsp.log import get_logger
from hapa_lsp.prompts import ContextFile, FimPrompt, build_fim_prompt

if TYPE_CHECKING:
    from hapa_lsp.config import Settings

# Lines of text around the cursor whose identifiers select neighbour snippets.
_QUERY_BEFORE, _QUERY_AFTER = 20, 6
# The enclosing class's outline ranks like a name used ~10 lines away: after what the cursor's statement and
# its neighbours use, before the file's other imports (ranked by their nearest use, 20+ lines).
_OUTLINE_RANK = 10.0
# The newest edited region ranks like an imported name used on a nearby line; each older one 3 lower.
_RECENT_RANK = -4.0
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
# Tokens kept for the format's own markers when a small document leaves budget over for extra context.
_FORMAT_RESERVE = 48
# A newly opened document's imports go to a helper worker if the jedi worker has not answered within this long
# (it is parsing builtins on a cold cache), and the helper gets at most this long.
ASIDE_AFTER_S = 0.1
ASIDE_TIMEOUT_S = 30.0
# The typing path's warm-up (imports, HTTP client: ~0.3 s after initialized) goes first, but no longer than this.
ASIDE_WAIT_MAX_S = 1.0
#: The helper's file-level parse of the document's imports (``jedi_worker.Jedi.parse_ahead``) stops after this.
ASIDE_PARSE_S = 2.0
#: Its facts job resolves every import of the document: no typing-path request queues behind a helper, so it is
#: not held to the queue's per-job cap (``facts.OPEN_JOB_CAP_S``), which on a loaded machine left names unresolved.
ASIDE_FACTS_S = 10.0


def _by_file(chosen: list[tuple[str, str, str, Any]]) -> list[ContextFile]:
    """The chosen pieces grouped by file for the multi-file formats: worst file first, so the best context sits
    next to the prefix; within a file, in rank order."""
    files: dict[str, list[str]] = {}
    order: list[str] = []
    for _source, where, text, _ in reversed(chosen):
        dp = where.rsplit(":", 1)[0]
        if dp not in files:
            files[dp] = []
            order.append(dp)
        files[dp].insert(0, text)
    return [ContextFile(dp, "\n\n".join(files[dp])) for dp in order]


def _edited_region(event: Any) -> tuple[int, int, str] | None:
    """An edit's region as it reads now: (first line, last line, text) of its hunks' new side, or None when the
    edit only deleted lines."""
    lines: list[str] = []
    first = last = 0
    for ln in event.diff.split("\n"):
        m = _HUNK.match(ln)
        if m:
            start = int(m.group(1))
            first = first or start
            last = max(last, start + int(m.group(2) or 1) - 1)
            if lines:
                lines.append("...")
        elif ln[:1] in (" ", "+"):
            lines.append(ln[1:])
    text = "\n".join(lines).strip("\n")
    return (max(1, first), max(first, last), text) if text.strip() else None


def _brief(text: str, source: str, outline_tokens: int, counter: TokenCounter) -> str:
    """A candidate's brief form: what the first pass of ``assemble`` takes for every candidate that fits."""
    if source in ("class-outline", "recent-edit"):
        if counter.count(text) <= outline_tokens:
            return text
        return _compact(text, outline_tokens, counter, outline=True) or text.split("\n", 1)[0]
    if "\n" not in text:
        return text
    return _compact(text, 10 ** 6, counter, outline=False) or text


def _compact(text: str, tokens: int, counter: TokenCounter, *, outline: bool) -> str:
    """``text`` cut to at most ``tokens``: an outline keeps its header and as many members as fit; a stub keeps
    its header line (``def f(a, b): ...`` / ``class C(Base): ...``). '' when not even that fits."""
    lines = text.split("\n")
    if tokens <= 0 or len(lines) < 2:
        return ""
    if outline:
        kept = [lines[0]]
        for ln in lines[1:]:
            if counter.count("\n".join([*kept, ln])) > tokens:
                break
            kept.append(ln)
        return "\n".join(kept) if len(kept) > 1 else ""
    head = lines[0].rstrip()
    if head.startswith("class ") and len(lines) > 1 and lines[-1].lstrip().startswith("def __init__("):
        # A class with its constructor: the call signature is what code using it needs most.
        short = head + "\n" + lines[-1]
    else:
        short = head if head.endswith(" ...") else head + " ..."
    return short if counter.count(short) <= tokens else ""


@dataclass(frozen=True, slots=True)
class Piece:
    """One part of the prompt, where it came from and what it costs."""

    source: str  # prefix, suffix, fact, class-outline, neighbour, format
    where: str  # path[:line] of the text's origin
    tokens: int
    text: str


@dataclass(slots=True)
class Request:
    """The state of one prompt being built (between ``start`` and ``assemble``)."""

    uri: str
    path: str  # the document's decoded path, or its name when it is not a file (hapa_lsp.documents.name_of)
    language: str
    cur: CursorText
    decision: Decision
    uses: Uses | None
    facts: list[Fact]
    missing: list[Any]
    snippets: list[Snippet]
    t0: float
    deadline: float
    timings: dict[str, float] = field(default_factory=dict)
    on_disk: bool = True  # False for untitled buffers and notebook cells: jedi gets no path for them
    # Signatures read from the workspace's own modules without jedi, per use expression: they stand in for
    # jedi's facts until the worker has resolved them (the first keystrokes after opening a file).
    static: dict[str, Fact] = field(default_factory=dict)
    # The user's latest edited regions (``next_edit.formats.Event``: shown path + diff hunks), newest last.
    recent: Sequence[Any] = ()

    @property
    def jedi_path(self) -> str:
        """The path jedi analyses the document as ("" when it is not a file)."""
        return self.path if self.on_disk else ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A piece of extra context that was considered: taken, or left out and why."""

    source: str  # fact, static-fact, class-outline, neighbour
    where: str
    tokens: int
    taken: bool
    reason: str  # "ranked in", "trimmed to fit", "in the window", "duplicate", "over budget", ...


@dataclass(slots=True)
class BuiltContext:
    """The prompt and everything ``hapa-lsp context`` shows about it."""

    prompt: FimPrompt
    window: Window
    decision: Decision
    pieces: list[Piece]
    tokens: int
    budget: int
    timings: dict[str, float]
    facts_missing: int
    token_counter: str
    # Every candidate for the extra context and why it is in or out (``hapa-lsp context`` shows them).
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def single_line(self) -> bool:
        """True when the suggestion must stay on the cursor's line."""
        return not self.decision.multiline

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (the CLI's ``--json`` output)."""
        p = self.prompt
        return {
            "model": p.model, "family": p.family, "budget_tokens": self.budget, "prompt_tokens": self.tokens,
            "token_counter": self.token_counter,
            "multiline": self.decision.multiline, "multiline_reason": self.decision.reason,
            "pieces": [{"source": x.source, "where": x.where, "tokens": x.tokens, "text": x.text}
                       for x in self.pieces],
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
            "facts_unresolved": self.facts_missing,
            "candidates": [{"source": c.source, "where": c.where, "tokens": c.tokens, "taken": c.taken,
                            "reason": c.reason} for c in self.candidates],
            "prompt": p.text(),
        }


@lru_cache(maxsize=2048)
def _real(path: str) -> str:
    return os.path.realpath(path) if os.path.isabs(path) else path


def display_path(path: str, root: str | None) -> str:
    """A short path for the model: workspace-relative, or from the package root inside site-packages."""
    p = path.replace("\\", "/")
    if root:
        r = root.replace("\\", "/").rstrip("/") + "/"
        if p.startswith(r):
            return p[len(r):]
    for marker in ("/site-packages/", "/dist-packages/", "/typeshed/stdlib/", "/typeshed/stubs/"):
        i = p.rfind(marker)
        if i != -1:
            return p[i + len(marker):]
    parts = p.split("/")
    if len(parts) > 2 and parts[-3].startswith("python3"):
        return "/".join(parts[-2:]) if parts[-2] != parts[-3] else parts[-1]
    for i, part in enumerate(parts):
        if part.startswith("python3.") and i + 1 < len(parts):
            return "/".join(parts[i + 1:])
    return "/".join(parts[-3:]) if len(parts) > 3 else p


class ContextEngine:
    """Builds budgeted prompts; one per server (or per CLI run), shared by all documents."""

    def __init__(self, settings: Settings, *, runner: Any = None, root: str | None = None,
                 environ: Any = None, token_counters: CounterLoader | None = None,
                 facts_store: FactsStore | None | str = "default"):
        self.settings = settings
        self.runner = runner
        self.root = root
        ctx = settings.context
        # jedi's facts of imported names kept between sessions ("default": under hapa-lsp's jedi cache directory;
        # None: none, e.g. a benchmark measuring a never-opened project).
        if facts_store == "default":
            facts_store = FactsStore(facts_cache_directory()) if runner is not None else None
        self.facts_store = facts_store
        self.facts = FactsEngine(runner, exclude_globs=tuple(ctx.exclude_globs), store=facts_store)
        self.static = StaticFacts(tuple(ctx.exclude_globs))
        self.neighbours = NeighbourIndex(tuple(ctx.exclude_globs))
        # The server's Engine shares its loader (started at settings apply); a CLI run or a test gets its own.
        self._counters = token_counters if token_counters is not None else CounterLoader(environ)
        self._counters.load(settings)
        self._uses_memo: tuple[tuple, Uses] | None = None
        self._imports_memo: tuple[str, int, dict[str, tuple[int, int, str, str | None]]] | None = None

    def update_settings(self, settings: Settings) -> None:
        """Apply new settings (the exclusion list reaches the facts and the neighbour index at once)."""
        self.settings = settings
        self._counters.load(settings)
        globs = tuple(settings.context.exclude_globs)
        if globs != self.facts.exclude_globs:
            self.facts = FactsEngine(self.runner, exclude_globs=globs, store=self.facts_store)
            self.static = StaticFacts(globs)
            self.neighbours = NeighbourIndex(globs)

    @property
    def counter(self) -> TokenCounter:
        """The token counter for the configured model: the estimate until its tokenizer.json is loaded (in a
        worker thread; a keystroke never waits for it)."""
        return self._counters.current(self.settings)

    def counter_loaded(self) -> Future[TokenCounter]:
        """The counter the settings ask for, once loaded (for a CLI run that wants exact counts at once)."""
        return self._counters.load(self.settings)

    def wants_jedi(self, path: str, language: str, text: str) -> bool:
        """Whether jedi facts are built for this document at all."""
        ctx = self.settings.context
        return (ctx.facts and language == "python" and len(text) <= ctx.jedi_max_bytes
                and not is_excluded(path, ctx.exclude_globs))

    async def warm_document(self, *, uri: str, path: str, language: str, text: str, on_disk: bool = True,
                            still_wanted: Any = None, after: asyncio.Event | None = None) -> None:
        """A document was opened: resolve its imports in the jedi worker (background priority), so that the
        first completion and the first prompt do not pay for parsing every module it imports. ``after``: a helper
        worker (``_warm_aside``) starts only once it is set (at most ``ASIDE_WAIT_MAX_S`` later)."""
        if self.runner is None or language != "python" or len(text) > self.settings.context.jedi_max_bytes:
            return
        wanted = still_wanted or (lambda: True)
        if on_disk and self.wants_jedi(path, language, text):
            imports = imports_of(text)
            # Facts of its imported names from an earlier session, while jedi starts.
            await self.facts.restore(uri, path, text, imports)
            # The workspace's own modules it imports, scanned now (one at a time, yielding to keystrokes
            # between them): the first request then pays a lookup, not a file read.
            for name, (_row, _col, module, orig) in imports.items():
                if not wanted():
                    return
                self.static.lookup(path, module, orig or name, self.root)
                await asyncio.sleep(0)
        if (self.wants_jedi(path, language, text) or self.settings.completion.jedi) and wanted():
            await self._warm_aside(uri, path if on_disk else "", text, imports_of(text), after)
        if self.wants_jedi(path, language, text):
            await self.facts.warm_document(uri, path if on_disk else "", self.root, text, wanted)
        if self.settings.completion.jedi and wanted():
            # A completion on the document itself: parses it and loads what completing needs (builtins).
            try:
                await self.runner.run("complete", text, path if on_disk else "", self.root, 0, 0, 1, timeout=60.0,
                                      still_wanted=wanted, background=True)
            except JediError:
                pass  # the first real completion reports it

    async def _warm_aside(self, uri: str, path: str, text: str,
                          imports: dict[str, tuple[int, int, str, str | None]],
                          after: asyncio.Event | None = None) -> None:
        """While the jedi worker is still starting on a cold parse cache (the first run on a machine), a helper
        worker on the other core parses what this document imports: the facts of its imported names, and the
        completion lists of the namespaces the text uses (``os.path.``). With a warm parse cache the worker has
        answered within ``ASIDE_AFTER_S`` and its own queue does the same in a fraction of a second."""
        runner = self.runner
        if runner is None or not imports:
            return
        if after is not None and not after.is_set():
            try:
                await asyncio.wait_for(after.wait(), ASIDE_WAIT_MAX_S)
            except TimeoutError:
                pass
        if await runner.wait_started(ASIDE_AFTER_S):
            return
        # First the files of the modules it imports, parsed without inference: that needs none of builtins and
        # typing, which the first worker is parsing meanwhile, and is what its first completion here would parse
        # next (``os``: ~0.5 s). Then jedi's own jobs, which load all of those from the parse cache.
        modules = [m for _r, _c, m, _o in sorted(imports.values()) if m and not m.startswith(".")]
        jobs: list[tuple[str, tuple[Any, ...]]] = [("parse_ahead", (list(dict.fromkeys(modules)), ASIDE_PARSE_S))]
        facts_job = (self.facts.open_job(uri, path, self.root, text, ASIDE_FACTS_S)
                     if self.wants_jedi(path, "python", text) else None)
        if facts_job is not None:
            jobs.append(facts_job)
        if self.settings.completion.jedi:
            for chain in namespace_chains(text, imports):
                head = chain.split(".", 1)[0]
                script = f"{import_statement(head, imports[head])}\n{chain}.\n"
                jobs.append(("complete", (script, path, self.root, 1, len(chain) + 1, 1000)))
        t0 = time.perf_counter()
        results = await runner.run_aside(jobs, timeout=ASIDE_TIMEOUT_S)
        get_logger().debug("helper jedi worker", jobs=len(jobs), ms=round((time.perf_counter() - t0) * 1000),
                           ok=results is not None, parsed_ahead=results[0] if results else None)
        if results and facts_job is not None and len(results) > 1 and isinstance(results[1], dict):
            self.facts.take(uri, path, results[1])

    # ---- 1. start ---------------------------------------------------------------------------------------
    def start(self, *, uri: str, path: str, language: str, text: str = "", line: int = 0, character: int = 0,
              on_disk: bool = True,
              encoding: str = "utf-16", cur: CursorText | None = None,
              open_docs: Iterable[tuple[str, str, Any, str]] = (), time_box_ms: float | None = None,
              recent: Sequence[Any] = ()) -> Request:
        """Everything that needs no waiting: cursor, multi-line decision, uses, snippets, cached facts; ``recent``
        are the user's latest edits elsewhere (``next_edit.recorder.EditRecorder.recent``)."""
        t0 = time.perf_counter()
        ctx = self.settings.context
        if cur is None:
            cur = split_at(text, line, character, encoding)
        decision = decide(cur.prefix, cur.line_prefix, cur.line_suffix, language)
        t1 = time.perf_counter()
        uses: Uses | None = None
        facts: list[Fact] = []
        missing: list[Any] = []
        static: dict[str, Fact] = {}
        if self.wants_jedi(path, language, cur.text):
            uses = self._uses(uri, cur)
            facts, missing = self.facts.known(uri, uses.uses)
            if on_disk:
                # Names jedi has not resolved yet, or resolved to nothing (a dynamic re-export, a module it
                # could not follow): the workspace's own text may still say what they are.
                unresolved = missing + [u for u in uses.uses if u.imported and self.facts.found_nothing(uri, u.expr)]
                if unresolved:
                    static = self._static(uri, path, cur.text, unresolved)
        t2 = time.perf_counter()
        snippets: list[Snippet] = []
        if ctx.neighbour_snippets > 0:
            # The current document is indexed once it is not current any more: re-chunking it on every
            # keystroke would cost milliseconds, and its own text is in the window anyway.
            self.neighbours.sync([d for d in open_docs if d[0] != uri])
            snippets = self.neighbours.search(self._query(cur), exclude_uri=uri, limit=ctx.neighbour_snippets)
        t3 = time.perf_counter()
        box = (ctx.facts_time_budget_ms if time_box_ms is None else time_box_ms) / 1000
        return Request(uri, path, language, cur, decision, uses, facts, missing, snippets, t0, t0 + box,
                       {"syntax_ms": (t1 - t0) * 1000, "uses_ms": (t2 - t1) * 1000,
                        "neighbours_ms": (t3 - t2) * 1000}, on_disk, static,
                       recent[-ctx.recent_edits:] if ctx.recent_edits > 0 else ())

    def _static(self, uri: str, path: str, text: str, missing: list[Use]) -> dict[str, Fact]:
        """Signatures of the missing imported names that the workspace's own modules define (no jedi)."""
        imports = self.facts.imports_for(uri)
        if imports is None:
            memo = self._imports_memo
            if memo is None or memo[0] != uri or memo[1] != len(text):
                memo = self._imports_memo = (uri, len(text), imports_of(text))
            imports = memo[2]
        out: dict[str, Fact] = {}
        for u in missing:
            if not u.imported:
                continue
            head, _, attr = u.expr.partition(".")
            src = imports.get(head)
            if src is None:
                continue
            _row, _col, module, orig = src
            if attr:
                # ``from . import utils; utils.helper`` / ``import pkg.mod as m; m.helper``: a module's name.
                sub = module if orig is None else (module + orig if module.endswith(".") else f"{module}.{orig}")
                fact = self.static.lookup(path, sub, attr, self.root)
            else:
                fact = self.static.lookup(path, module, orig or head, self.root)
            if fact is not None:
                out[u.expr] = Fact(fact.path, fact.line, fact.name, fact.kind, fact.text, u.rank, "static-fact")
        return out

    def _uses(self, uri: str, cur: CursorText) -> Uses:
        """find_uses + rerank, reused while only the word at the cursor changes (most keystrokes)."""
        text = cur.text
        ls = cur.offset - len(cur.line_prefix)
        le = cur.offset + len(cur.line_suffix)
        # Everything but the identifier being typed: other lines, and the cursor's line without its last word.
        key = (uri, cur.line, len(text) - (le - ls), hash(text[:ls]), hash(text[le:]),
               cur.line_prefix.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."),
               cur.line_suffix)
        memo = self._uses_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        uses = find_uses(text, cur.line, cur.character, imports=self.facts.imports_for(uri), doc=uri)
        uses.uses = self.facts.rerank(uri, uses.uses, cur.line)
        self._uses_memo = (key, uses)
        return uses

    @staticmethod
    def _query(cur: CursorText) -> str:
        text, off = cur.text, cur.offset
        a = off
        for _ in range(_QUERY_BEFORE):
            a = text.rfind("\n", 0, a - 1) if a > 0 else -1
            if a <= 0:
                a = 0
                break
        b = off
        for _ in range(_QUERY_AFTER):
            b = text.find("\n", b + 1)
            if b == -1:
                b = len(text)
                break
        return text[a:b]

    # ---- 2. complete -------------------------------------------------------------------------------------
    async def complete(self, req: Request, *, still_wanted: Any = None) -> bool:
        """Resolve missing facts in the jedi worker until the time box ends; True when new facts arrived."""
        if not req.missing or req.uses is None or self.runner is None:
            return False
        t = time.perf_counter()
        remaining = max(0.0, req.deadline - t)
        await self.facts.resolve(req.uri, req.jedi_path, self.root, req.cur.text, req.missing, timeout=remaining,
                                 still_wanted=still_wanted or (lambda: True))
        before = {f.key for f in req.facts}
        req.facts, req.missing = self.facts.known(req.uri, req.uses.uses)
        req.timings["facts_wait_ms"] = (time.perf_counter() - t) * 1000
        return {f.key for f in req.facts} != before

    async def warm(self, req: Request, *, rounds: int = 40) -> None:
        """Resolve every fact the request wants, however long it takes (CLI, benchmarks' warm-up)."""
        for _ in range(rounds):
            if not req.missing or req.uses is None or self.runner is None:
                return
            await self.facts.resolve(req.uri, req.jedi_path, self.root, req.cur.text, req.missing, timeout=60.0,
                                     wait_slow=True)
            req.facts, req.missing = self.facts.known(req.uri, req.uses.uses)

    # ---- 3. assemble --------------------------------------------------------------------------------------
    def assemble(self, req: Request, *, explain: bool = True) -> BuiltContext:
        """Fit everything into the token budget and render the prompt. ``explain``: also say, per candidate, why
        it is in or out (``BuiltContext.candidates``; ``hapa-lsp context``); the typing path does without."""
        t0 = time.perf_counter()
        s = self.settings
        ctx, b = s.context, s.backend
        counter = self.counter
        budget = ctx.max_prompt_tokens - min(b.max_tokens // 4, ctx.max_prompt_tokens // 2)
        extra_budget = int(budget * ctx.extra_context_ratio)
        cur = req.cur
        # Lines the smallest window surely shows: definitions there need no fact.
        min_win = budget_window(cur, max_tokens=budget - extra_budget, prefix_ratio=ctx.prefix_ratio,
                                chars_per_token=counter.chars_per_token)
        win_lo = cur.line - min_win.prefix.count("\n")
        win_hi = cur.line + min_win.suffix.count("\n")
        here = _real(req.path) if req.path else ""
        # A small document is all in the window and leaves budget over: that goes to extra context.
        doc_tokens: int | None = None
        base_extra = extra_budget
        if len(cur.text) <= (budget - extra_budget) * 8:
            # What the window needs to take all of it: its count, and the characters ``fit_window`` starts from.
            doc_tokens = max(counter.count(cur.text), int(len(cur.text) / counter.chars_per_token) + 1)
            extra_budget = max(extra_budget, budget - doc_tokens - _FORMAT_RESERVE)
        chosen: list[tuple[str, str, str, Fact | Snippet]] = []  # (source, where, text, origin)
        considered: list[Candidate] = []
        spent = 0

        per_file: dict[str, int] = {}  # pieces taken per shown path: a file's header is paid for once

        def cost_of(path: str, text: str) -> int:
            # The file's marker and path are written once per file; each further piece costs its separator.
            return counter.count(text) + (1 if per_file.get(path) else counter.count(path) + 3)

        def take(source: str, where: str, path: str, text: str, origin: Any) -> bool:
            nonlocal spent
            cost = cost_of(path, text)
            if spent + cost <= extra_budget:
                chosen.append((source, where, text, origin))
                per_file[path] = per_file.get(path, 0) + 1
                spent += cost
                return True
            return False

        def untake(c: tuple[str, str, str, Any]) -> None:
            nonlocal spent
            chosen.remove(c)
            path = c[1].rsplit(":", 1)[0]
            per_file[path] -= 1
            spent -= cost_of(path, c[2])

        # Candidates ranked by expected use: names used near the cursor first (the nearer and the more often, the
        # better; imported ones before local ones), the enclosing class's outline, then the file's other imports
        # by their nearest use. jedi's facts where the worker has them, the workspace's signatures meanwhile.
        ranked: list[tuple[float, int, str, Fact]] = []
        outline = req.uses.outline if req.uses else None
        if outline is not None and outline.line - 1 < win_lo:
            ranked.append((_OUTLINE_RANK, 0, "class-outline", outline))
        for i, f in enumerate(req.facts):
            ranked.append((f.rank, i + 1, "fact", f))
        if req.static:
            waiting = {u.expr for u in req.missing}
            for i, (expr, f) in enumerate(req.static.items()):
                if expr in waiting or self.facts.found_nothing(req.uri, expr):
                    ranked.append((f.rank, len(req.facts) + i + 1, "static-fact", f))
        shown_here = display_path(req.path, self.root) if req.path else ""
        for age, ev in enumerate(reversed(req.recent)):
            region = _edited_region(ev)
            if region is None:
                continue
            first, last, text = region
            if ev.path == shown_here and first - 1 <= win_hi and last - 1 >= win_lo:
                if explain:
                    considered.append(Candidate("recent-edit", f"{ev.path}:{first}", 0, False, "in the window"))
                continue
            ranked.append((_RECENT_RANK + 3.0 * age, -1 - age, "recent-edit",
                           Fact(ev.path, first, "", "edit", text)))
        ranked.sort(key=lambda r: (r[0], r[1]))
        seen_text: set[str] = set()
        seen_def: set[tuple[str, int]] = set()
        # Two passes over the candidates in rank order: first each one's brief form (a one-line signature, a class
        # header with its constructor, an outline or edit cut short), so that as many definitions as possible get
        # in; then, with what is left, the full forms (docstrings, whole outlines), best first.
        eligible: list[tuple[str, str, str, Fact]] = []
        report: list[tuple[int, Candidate]] = []  # (rank position, candidate): shown in rank order
        positions: list[int] = []  # of the eligible ones
        for n, (_rank, _i, source, f) in enumerate(ranked):
            dp = (display_path(req.path, self.root) if source == "class-outline" else
                  f.path if source == "recent-edit" else display_path(f.path, self.root))
            where = f"{dp}:{f.line}"
            if source not in ("class-outline", "recent-edit"):
                same_file = bool(here) and _real(f.path) == here
                reason = ""
                if same_file and win_lo <= f.line - 1 <= win_hi:
                    reason = "in the window"
                elif same_file and f.kind not in ("function", "class"):
                    reason = "a local variable"
                elif f.text in seen_text or (_real(f.path), f.line) in seen_def:
                    reason = "duplicate"
                if reason:
                    if explain:
                        report.append((n, Candidate(source, where, cost_of(dp, f.text), False, reason)))
                    continue
                seen_text.add(f.text)
                seen_def.add((_real(f.path), f.line))
            eligible.append((source, where, dp, f))
            positions.append(n)
        taken: set[int] = set()  # eligible indexes in ``chosen`` (found there by their Fact, ``c[3]``)
        over: set[int] = set()

        def where_taken() -> dict[int, int]:
            """id of each chosen piece's origin -> its index in ``chosen`` (one pass, not one scan per piece)."""
            return {id(c[3]): j for j, c in enumerate(chosen)}

        def fill() -> None:
            nonlocal spent
            for k, (source, where, dp, f) in enumerate(eligible):
                if k in taken:
                    continue
                brief = _brief(f.text, source, extra_budget // 4, counter)
                if not take(source, where, dp, brief, f):
                    # Not even the brief form fits what is left: the part of it that does (an outline's first
                    # members, an edit's first lines), else nothing.
                    room = extra_budget - spent - (cost_of(dp, brief) - counter.count(brief))
                    short = _compact(brief, room, counter, outline=source in ("class-outline", "recent-edit"))
                    if not (short and take(source, where, dp, short, f)):
                        over.add(k)
                        continue
                over.discard(k)
                taken.add(k)
            index = where_taken()
            for k, (source, where, _dp, f) in enumerate(eligible):
                i = index.get(id(f), -1) if k in taken else -1
                if i >= 0 and chosen[i][2] != f.text:
                    extra = counter.count(f.text) - counter.count(chosen[i][2])
                    if spent + extra <= extra_budget:
                        chosen[i] = (source, where, f.text, f)
                        spent += extra

        fill()
        for sn in req.snippets:
            dp = display_path(sn.path, self.root)
            # A fact whose definition the snippet shows in full is redundant: give its tokens back first.
            dup = [c for c in chosen if c[0] in ("fact", "static-fact") and c[2].split("\n", 1)[0].strip() in sn.text
                   and _real(c[3].path) == _real(sn.path)]
            for c in dup:
                untake(c)
            before = len(chosen)
            take("neighbour", f"{dp}:{sn.start + 1}", dp, sn.text, sn)
            if len(chosen) == before:
                if explain:
                    considered.append(Candidate("neighbour", f"{dp}:{sn.start + 1}", cost_of(dp, sn.text), False,
                                                "over budget"))
                for c in dup:  # the snippet did not fit after all: keep the facts
                    take(*c[:2], c[1].rsplit(":", 1)[0], c[2], c[3])
            elif explain:
                considered.append(Candidate("neighbour", f"{dp}:{sn.start + 1}", cost_of(dp, sn.text), True,
                                            "ranked in"))
                considered.extend(Candidate(c[0], c[1], cost_of(c[1].rsplit(":", 1)[0], c[2]), False,
                                            "shown by a neighbour snippet") for c in dup)

        context_files = _by_file(chosen)
        single = not req.decision.multiline
        repo = os.path.basename(self.root.rstrip("/")) if self.root else ""

        def build(win: Window, cf: list[ContextFile]) -> FimPrompt:
            return build_fim_prompt(model=b.completion_model, family_override=b.fim_template, prefix=win.prefix,
                                    suffix=win.suffix, language=req.language, path=display_path(req.path, self.root)
                                    if req.path else "", max_tokens=b.max_tokens, temperature=b.temperature,
                                    single_line=single, context_files=cf, repo_name=repo,
                                    native=b.fim_mode == "native")

        empty = Window("", "", True, True)
        overhead = counter.count(build(empty, context_files).budgeted_text())
        index = where_taken()
        if doc_tokens is not None and (over or any(chosen[index[id(eligible[k][3])]][2] != eligible[k][3].text
                                                   for k in taken if id(eligible[k][3]) in index)):
            # Pieces counted one by one cost more than the rendered whole (rounding, shared separators): what
            # the prompt really has left goes to the candidates still waiting, once.
            slack = budget - overhead - doc_tokens - 2
            if slack > budget // 50 and not req.snippets:
                extra_budget = spent + slack
                fill()
                context_files = _by_file(chosen)
                overhead = counter.count(build(empty, context_files).budgeted_text())
                index = where_taken()
        if explain:
            for k, (source, where, dp, f) in enumerate(eligible):
                i = index.get(id(f), -1)
                if i < 0:
                    if k in taken:
                        continue  # a neighbour snippet shows it (said with the snippets)
                    report.append((positions[k], Candidate(source, where, cost_of(dp, f.text), False,
                                                           "over budget")))
                else:
                    now = chosen[i][2]
                    report.append((positions[k], Candidate(source, where, counter.count(now), True,
                                                           "ranked in" if now == f.text else "trimmed to fit")))
            report.sort(key=lambda r: r[0])
            considered[:0] = [c for _, c in report]
        for _ in range(3):
            # A small document was promised room for all of it: when the format's own tokens took more than the
            # reserve, the last-ranked pieces taken beyond the usual share go back.
            if doc_tokens is None or overhead + doc_tokens <= budget or spent <= base_extra or not chosen:
                break
            excess = overhead + doc_tokens - budget
            while chosen and excess > 0 and spent > base_extra:
                c = chosen[-1]
                before = spent
                untake(c)
                excess -= before - spent
                if explain:
                    considered = [Candidate(x.source, x.where, x.tokens, False, "over budget")
                                  if x.taken and x.where == c[1] and x.source == c[0] else x for x in considered]
            context_files = _by_file(chosen)
            overhead = counter.count(build(empty, context_files).budgeted_text())
        if overhead > budget:
            context_files, chosen = [], []
            overhead = counter.count(build(empty, []).budgeted_text())
        win_tokens = max(0, budget - overhead)
        prompt = build(empty, context_files)
        win = empty
        total = overhead
        for _ in range(6):
            win = fit_window(cur, win_tokens, ctx.prefix_ratio, counter)
            prompt = build(win, context_files)
            total = counter.count(prompt.budgeted_text())
            if total <= budget:
                break
            # Exact tokenizers disagree with the estimate at the edges: shrink by what was over and retry.
            win_tokens = max(0, win_tokens - (total - budget) - 2)
        else:
            win = empty
            prompt = build(win, [])
            total = counter.count(prompt.budgeted_text())
            chosen = []
        pieces = [Piece("prefix", display_path(req.path, self.root), counter.count(win.prefix), win.prefix),
                  Piece("suffix", display_path(req.path, self.root), counter.count(win.suffix), win.suffix)]
        pieces.extend(Piece(src, where, counter.count(text), text) for src, where, text, _ in chosen)
        fmt = total - sum(p.tokens for p in pieces)
        pieces.append(Piece("format", prompt.family, max(0, fmt), ""))
        timings = dict(req.timings)
        timings["assemble_ms"] = (time.perf_counter() - t0) * 1000
        timings["total_ms"] = (time.perf_counter() - req.t0) * 1000
        if not chosen and explain:
            considered = [c if not c.taken else Candidate(c.source, c.where, c.tokens, False, "prompt too small")
                          for c in considered]
        return BuiltContext(prompt, win, req.decision, pieces, total, budget, timings, len(req.missing),
                            counter.source, considered)

    async def build(self, *, uri: str, path: str, language: str, text: str, line: int, character: int,
                    encoding: str = "utf-16", open_docs: Iterable[tuple[str, str, Any, str]] = (),
                    time_box_ms: float | None = None) -> BuiltContext:
        """start + complete + assemble: the whole path, as the server runs it for an invoked request."""
        req = self.start(uri=uri, path=path, language=language, text=text, line=line, character=character,
                         encoding=encoding, open_docs=open_docs, time_box_ms=time_box_ms)
        await self.complete(req)
        return self.assemble(req)


def fit_window(cur: CursorText, tokens: int, prefix_ratio: float, counter: TokenCounter) -> Window:
    """The largest line-aligned window whose prefix + suffix count at most ``tokens`` tokens.

    The window comes from ``window_for_chars``, whose edges stay put from one keystroke to the next (a prefix-
    caching model server reuses the prompt's start). When the count is over (an exact tokenizer counts more
    than the estimate), the character budget steps down a fixed ladder (3 % a rung), not by the overshoot: the
    next keystroke, a token more or less, lands on the same rung and gets the same window.
    """
    if tokens <= 0:
        return Window("", "", cur.offset > 0, cur.offset < len(cur.text))
    chars = counter.chars_for(tokens)
    rung = 0
    for _ in range(12):
        budget = int(chars * 0.97 ** rung)
        win = window_for_chars(cur, budget, prefix_ratio)
        n = counter.count(win.prefix) + counter.count(win.suffix)
        if n <= tokens:
            return win
        # The first rung below what the overshoot suggests (at most halving the budget per step).
        target = budget * max(0.5, min(0.97, tokens / n))
        rung += 1
        while chars * 0.97 ** rung > target:
            rung += 1
    return Window("", "", cur.offset > 0, cur.offset < len(cur.text))


def open_documents(workspace: Any) -> list[tuple[str, str, Any, str]]:
    """``(key, name, version, text)`` of a pygls workspace's open documents (the editor's text, not the disk),
    keyed by ``hapa_lsp.documents.doc_key``."""
    if workspace is None:
        return []
    try:
        docs = list(workspace.text_documents.values())
    except Exception:  # noqa: BLE001 - a workspace without documents has no neighbours
        return []
    return [(doc_key(d.uri), name_of(d), d.version, d.source) for d in docs]
