"""The typing path: one keystroke's cursor context in, a suggestion (or nothing) out, with as few model calls as
possible.

::

    Engine.suggest        join an identical request (inline + completion list), supersede older contexts
      └─ _suggest         type-through of the shown suggestion -> context.builder (window, facts, neighbours)
                          -> Upstream.cache -> adaptive debounce while jedi facts resolve -> rate-limit gate
                          -> _call_model (Upstream.call + backend.stream_fim, closed early) -> postprocess.clean
    did_open / did_change / did_close    per-document state: typing rhythm, cancellation, the line hint

One ``Engine`` per server, built by ``HapaServer.engine``; the LSP handlers (``features/inline.py``,
``features/completion.py``) stay thin and call ``suggest``. The backend, cache and call accounting are the
``Upstream`` it shares with the generations (``generation.py``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hapa_lsp import errors
from hapa_lsp.cache import digest
from hapa_lsp.context import CursorText, exclusion_error, split_at, split_near, units_len
from hapa_lsp.context.builder import ContextEngine, open_documents
from hapa_lsp.context.tokens import CounterLoader
from hapa_lsp.log import get_logger
from hapa_lsp.postprocess import Cursor, clean

if TYPE_CHECKING:
    from hapa_lsp.config import Settings
    from hapa_lsp.upstream import Upstream


@dataclass(slots=True)
class Suggestion:
    """A post-processed suggestion and where it came from."""

    text: str
    source: str  # "model", "cache" or "typed-through"
    model: str
    request_id: str
    cache_key: str = ""
    at: tuple[int, int] = (0, 0)  # (line, UTF-16 column) of the cursor, clamped into the document
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Shown:
    """The last suggestion shown in a document, for serving its rest while the user types it."""

    prefix: str
    suffix_head: str
    text: str
    model: str


@dataclass(slots=True)
class _DocState:
    tasks: dict[tuple, asyncio.Task] = field(default_factory=dict)
    waiters: dict[tuple, int] = field(default_factory=dict)
    last_change: float = 0.0
    intervals: deque = field(default_factory=lambda: deque(maxlen=12))
    shown: _Shown | None = None
    generation: int = 0
    line_hint: tuple[int, int] | None = None  # (line, offset of its start) at the last request


_SUFFIX_HEAD = 256
_TIMER_SLACK_S = 0.001
# Control characters a model may emit as garbage; never worth showing (tabs and newlines are kept).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Engine:
    """Turns (document text, position) into a suggestion, spending as few model calls as possible.

    Everything it needs is given to the constructor: the settings, the ``Upstream`` (backend, cache, accounting)
    it shares with the generations, and the server's session as getters (open documents, the jedi worker, the
    workspace root: they exist once the editor initialized the session), the rate-limit gate asked before each
    model call, and where model failures and recoveries are reported.
    """

    def __init__(self, settings: Settings, upstream: Upstream, *,
                 workspace: Callable[[], Any] = lambda: None,
                 jedi: Callable[[], Any] = lambda: None,
                 root: Callable[[], str | None] = lambda: None,
                 model_gate: Callable[[bool], bool] | None = None,
                 notify_failure: Callable[[errors.HapaError, str, bool], None] | None = None,
                 notify_success: Callable[[], None] | None = None,
                 recent_edits: Callable[[str], Sequence[Any]] = lambda uri: ()):
        self.settings = settings
        self.upstream = upstream
        self._workspace = workspace  # () -> pygls Workspace or None: open documents for neighbour snippets
        self._jedi = jedi  # () -> hapa_lsp.jedi_client.JediRunner or None: where facts are resolved
        self._root = root
        # (document key) -> the user's latest edited regions elsewhere (next_edit.recorder.EditRecorder.recent).
        self._recent_edits = recent_edits
        # Asked before each typing-path model call (the rate limit): False drops the request quietly;
        # for an explicit request it raises E4004 instead.
        self._model_gate = model_gate
        self._docs: dict[str, _DocState] = {}
        self._notify_failure = notify_failure or (lambda e, rid, explicit: None)
        self._notify_success = notify_success or (lambda: None)
        self._seq = 0
        self._context: ContextEngine | None = None
        # Work started for no request (warming a newly opened document): referenced until done.
        self._background: set[asyncio.Task] = set()
        #: Set once the typing path's modules and HTTP client are built (``features.lifecycle._warm_up``): work that
        #: only gets ahead (a helper jedi worker) starts after it, so that it does not slow the first keystroke's.
        self.typing_path_ready = asyncio.Event()
        # The prompt's token counter: its tokenizer.json is found and loaded in a worker thread from now on,
        # and again whenever the settings name another one (the estimate serves until then).
        self.token_counters = CounterLoader()
        self.token_counters.load(settings)

    # ---- plumbing -------------------------------------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        """The shared upstream counters (requests, cache hits, superseded, ...)."""
        return self.upstream.counters

    @property
    def context(self) -> ContextEngine:
        """The context engine (hapa_lsp.context.builder.ContextEngine, created on first use)."""
        if self._context is None:
            self._context = ContextEngine(self.settings, runner=self._jedi(), root=self._root(),
                                          token_counters=self.token_counters)
        return self._context

    def prepare(self) -> None:
        """Build what the first model call needs, in a worker thread after ``initialized``: the pooled HTTP client
        and the modules of the path. The first keystroke then pays nothing extra."""
        # deferred on purpose: warm-up imports, in a worker thread after initialize
        import anyio._backends._asyncio  # noqa: F401  # httpcore imports it on the first connection (~20 ms)
        import h11  # noqa: F401
        import httpx_sse  # noqa: F401

        import hapa_lsp.ops.telemetry  # noqa: F401

        self.upstream.prepare()

    def update_settings(self, settings: Settings) -> None:
        """Apply new settings (the upstream follows them on its own; the server tells both)."""
        self.settings = settings
        self.token_counters.load(settings)
        if self._context is not None:
            self._context.update_settings(settings)

    def emit(self, event: str, **fields: Any) -> None:
        """An event for the upstream's observers (metrics); see ``Upstream.emit``."""
        self.upstream.emit(event, **fields)

    def _state(self, uri: str) -> _DocState:
        st = self._docs.get(uri)
        if st is None:
            st = self._docs[uri] = _DocState()
        return st

    def next_request_id(self) -> str:
        """A short id bound to every log line of one request."""
        self._seq += 1
        return f"r{self._seq}"

    # ---- events ---------------------------------------------------------------------------------------------
    def did_change(self, uri: str, changes: Any = ()) -> None:
        """A keystroke: learn the typing rhythm and abort work for the previous text.

        ``changes`` are the LSP content changes; an edit above the remembered cursor line (or a
        whole-document change) forgets where that line starts.
        """
        st = self._state(uri)
        if st.line_hint is not None:
            for ch in changes or (None,):
                rng = getattr(ch, "range", None)
                if rng is None or rng.start.line < st.line_hint[0]:
                    st.line_hint = None
                    break
        now = time.monotonic()
        if st.last_change:
            gap = now - st.last_change
            if gap < 1.5:  # pauses longer than this are thinking, not typing rhythm
                st.intervals.append(gap)
        st.last_change = now
        st.generation += 1
        for kind, task in list(st.tasks.items()):
            if not task.done():
                task.cancel()

    def split(self, uri: str, text: str, line: int, character: int, encoding: str = "utf-16") -> CursorText:
        """The document split at the cursor, starting from the line start remembered for ``uri``."""
        st = self._state(uri)
        hint = st.line_hint
        if hint is None:
            cur = split_at(text, line, character, encoding)
        else:
            cur = split_near(text, line, character, encoding, hint[0], hint[1])
        st.line_hint = (cur.line, cur.offset - cur.character)
        return cur

    async def flush(self) -> None:
        """Write what is kept between sessions (the facts store) before the server exits; bounded to 2 s."""
        if self._context is not None:
            try:
                await asyncio.wait_for(self._context.facts.flush(), 2.0)
            except TimeoutError:
                get_logger().warning("the facts cache was not written within 2 s at shutdown")

    def did_open(self, uri: str, path: str, language: str, text: str, on_disk: bool = True) -> None:
        """A document was opened: warm jedi for it in the background (its imports parsed, facts resolved)."""
        s = self.settings
        if self._jedi() is None or language != "python" or not (s.completion.jedi or s.context.facts):
            return
        task = asyncio.ensure_future(self.context.warm_document(
            uri=uri, path=path, language=language, text=text, on_disk=on_disk,
            still_wanted=lambda: uri in self._docs, after=self.typing_path_ready))
        self._state(uri)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            get_logger().warning("background work failed", error=repr(task.exception())[:500])

    def did_close(self, uri: str) -> None:
        """Forget a closed document and abort its work (per-document state must not grow with every file ever
        opened)."""
        st = self._docs.pop(uri, None)
        if st:
            for task in st.tasks.values():
                task.cancel()
        if self._context is not None:
            self._context.facts.forget(uri)

    def generation(self, uri: str) -> int:
        """Changes seen for ``uri``; a request remembers it to know when it went stale."""
        return self._state(uri).generation

    def debounce_seconds(self, uri: str) -> float:
        """Wait adapted to the typing rhythm: 1.5x the median recent gap, within the configured bounds."""
        c = self.settings.completion
        lo, hi = c.debounce_ms / 1000, max(c.debounce_ms, c.max_debounce_ms) / 1000
        iv = self._state(uri).intervals
        if len(iv) < 3:
            return lo
        med = sorted(iv)[len(iv) // 2]
        return min(hi, max(lo, 1.5 * med))

    # ---- the suggestion path ---------------------------------------------------------------------------------
    def applies_to(self, path: str, language: str) -> errors.HapaError | None:
        """Why this document gets no AI suggestions, or None when it does."""
        s = self.settings
        if not s.completion.enabled:
            return errors.PermissionDenied("AI completion is turned off (hapa.completion.enabled)")
        excluded = exclusion_error(path, s.context.exclude_globs)
        if excluded is not None:
            return excluded
        if s.completion.languages and language not in s.completion.languages:
            return errors.UnsupportedLanguage(f"language '{language}' is not in hapa.completion.languages")
        return None

    async def suggest(self, *, uri: str, path: str, language: str, text: str, line: int, character: int,
                      invoked: bool, slot: str = "inline", request_id: str | None = None,
                      encoding: str = "utf-16", on_disk: bool = True, jedi_ahead: bool = False
                      ) -> Suggestion | None:
        """Compute a suggestion for one cursor context (or None), sharing work between identical requests.

        Requests for the same document text and position (an inline request and a completion list
        request, or a list the editor asks for again) join one computation. A request for another
        context supersedes the older ones: they return None and their upstream HTTP request is closed
        at once. A request cancelled by the client raises CancelledError; when it was the last one
        waiting, the computation and its upstream request are cancelled too. ``slot`` names the
        caller for logs. ``uri`` is the document's key (``hapa_lsp.documents.doc_key``), ``path`` its decoded
        path or name; ``on_disk`` is False for documents that are not files (jedi then gets no path).
        ``jedi_ahead``: the caller has just queued a jedi job of its own (a completion list's jedi items), so facts
        still to resolve would come after it: an invoked request then does not wait for them (the jedi worker
        runs one job at a time: on ``os.path.`` the list's job took ~60 ms, the facts job behind it ~45 ms, and
        the model call waited the whole 40 ms time box for nothing). The facts job still runs, for the next one.
        """
        st = self._state(uri)
        asked = (st.generation, len(text), line, character, encoding)
        for other, t in list(st.tasks.items()):
            if other != asked and not t.done():
                t.cancel()
                self.counters["superseded"] += 1
                self.emit("superseded", slot=slot)
        task = st.tasks.get(asked)
        if task is None or task.done():
            rid = request_id or self.next_request_id()
            task = asyncio.ensure_future(self._suggest(uri, path, language, text, line, character, invoked, rid,
                                                     encoding, on_disk, invoked and jedi_ahead))
            st.tasks[asked] = task
            st.waiters[asked] = 0
            task.add_done_callback(lambda t, st=st, asked=asked: self._forget(st, asked, t))
        else:
            self.counters["joined"] = self.counters.get("joined", 0) + 1
        st.waiters[asked] = st.waiters.get(asked, 0) + 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cur = asyncio.current_task()
            if cur is not None and cur.cancelling():
                # The client cancelled this request; nobody else waiting means nobody needs the answer.
                if st.waiters.get(asked, 0) <= 1 and not task.done():
                    task.cancel()
                raise
            return None  # superseded by a newer keystroke or request
        finally:
            if asked in st.waiters:
                st.waiters[asked] -= 1

    @staticmethod
    def _forget(st: _DocState, asked: tuple, task: asyncio.Task) -> None:
        if st.tasks.get(asked) is task:
            del st.tasks[asked]
            st.waiters.pop(asked, None)

    async def _suggest(self, uri: str, path: str, language: str, text: str, line: int, character: int,
                       invoked: bool, rid: str, encoding: str = "utf-16", on_disk: bool = True,
                       no_facts_wait: bool = False) -> Suggestion | None:
        t0 = time.perf_counter()
        self.counters["requests"] += 1
        s = self.settings
        cur = self.split(uri, text, line, character, encoding)
        at = (cur.line, units_len(cur.line_prefix, encoding))
        st = self._state(uri)

        # Type-through: the user typed the start of the suggestion shown last; serve the rest.
        shown = st.shown
        if shown is not None:
            rest = self._typed_through(shown, cur)
            if rest is not None:
                self.counters["typed_through"] += 1
                self.emit("suggestion", source="typed-through", model=shown.model, chars=len(rest), timings={})
                return Suggestion(rest, "typed-through", shown.model, rid, at=at,
                                  timings={"total_ms": (time.perf_counter() - t0) * 1000})

        # Context engine (hapa_lsp.context.builder): window + cached jedi facts + neighbour snippets, in budget.
        builder = self.context
        req = builder.start(uri=uri, path=path, language=language, cur=cur, on_disk=on_disk,
                            open_docs=open_documents(self._workspace()), recent=self._recent_edits(uri),
                            time_box_ms=0.0 if no_facts_wait else None)
        built = builder.assemble(req, explain=False)
        for attempt in (0, 1):
            prompt, win, single = built.prompt, built.window, built.single_line
            key = digest(s.backend.kind, s.backend.endpoint, prompt.model, prompt.family, s.backend.fim_mode,
                         prompt.max_tokens, prompt.temperature, prompt.text())
            cached = await self.upstream.cache.aget("completions", key) or None  # "" (an older entry) is no hit
            self.emit("cache", hit=cached is not None, region="completions")
            if cached is not None:
                self.counters["cache_hits"] += 1
                self.emit("suggestion", source="cache", model=prompt.model, chars=len(cached), timings={})
                self._remember(st, cur, cached, prompt.model)
                return Suggestion(cached, "cache", prompt.model, rid, key, at=at,
                                  timings={"total_ms": (time.perf_counter() - t0) * 1000})
            if attempt:
                break
            debounce = self.debounce_seconds(uri) if not invoked else 0.0
            prepared = time.perf_counter() - t0
            prepare_ms = prepared * 1000
            # The debounce counts from the request's arrival: preparing the prompt above took part of it.
            # Facts not cached yet are resolved in the jedi worker meanwhile, within the time box.
            # asyncio's epoll selector rounds a timeout up to whole milliseconds and fires timers within its clock
            # resolution, so a sleep ends 0.5-1.5 ms late: aim that much early.
            rest = debounce - prepared - _TIMER_SLACK_S
            if rest > 0:
                warm = getattr(self.upstream.backend, "warm", None)  # kind llamacpp: fill the server's cache meanwhile
                if warm is not None and not self.upstream.breaker.is_open(prompt.model):
                    warm(prompt)
            gen = st.generation
            # A keystroke after this request makes its jedi work stale: skip it instead of queueing it.
            waits = [builder.complete(req, still_wanted=lambda: st.generation == gen)] + (
                [asyncio.sleep(rest)] if rest > 0 else [])
            if not (await asyncio.gather(*waits))[0]:
                break
            built = builder.assemble(req, explain=False)

        if self._model_gate is not None and not self._model_gate(invoked):
            return None  # over the rate limit: dropped without a popup, and counted by the limiter
        t_model = time.perf_counter()
        raw = _CONTROL.sub("", await self._call_model(prompt, single, rid, invoked))
        model_ms = (time.perf_counter() - t_model) * 1000

        text_out = clean(raw, Cursor(cur.line_prefix, cur.line_suffix, win.suffix, win.prefix, language, single),
                         stop=prompt.stop,
                         max_lines=s.completion.max_lines, min_chars=s.completion.min_chars,
                         prefix_tail=win.prefix[-200:])
        total_ms = (time.perf_counter() - t0) * 1000
        timings = {"total_ms": total_ms, "model_ms": model_ms, "debounce_ms": debounce * 1000,
                   "overhead_ms": total_ms - model_ms - debounce * 1000, "prepare_ms": prepare_ms}
        if text_out is None:
            self.counters["empty"] += 1
            # Not cached: a cached "" would come back as an item with empty insertText, and an empty answer is
            # often a moment's (a cut stream, a busy server), not the context's.
            return None
        self.upstream.cache.put("completions", key, text_out)
        self._remember(st, cur, text_out, prompt.model)
        self.emit("suggestion", source="model", model=prompt.model, chars=len(text_out), timings=timings)
        return Suggestion(text_out, "model", prompt.model, rid, key, at=at, timings=timings)

    def _remember(self, st: _DocState, cur: CursorText, text: str, model: str) -> None:
        if text:
            st.shown = _Shown(cur.prefix, cur.suffix[:_SUFFIX_HEAD], text, model)

    @staticmethod
    def _typed_through(shown: _Shown, cur: CursorText) -> str | None:
        off = cur.offset
        n = len(shown.prefix)
        if off <= n or off - n >= len(shown.text):
            return None
        typed = cur.text[n:off]
        if not shown.text.startswith(typed):
            return None
        if cur.text[off:off + _SUFFIX_HEAD] != shown.suffix_head:
            return None
        if cur.text[:n] != shown.prefix:
            return None
        rest = shown.text[len(typed):]
        return rest if rest.strip() else None

    async def _call_model(self, prompt: Any, single_line: bool, rid: str, explicit: bool = False) -> str:
        """Stream the model's answer, stopping early once the post-processor would cut it anyway."""
        parts: list[str] = []
        max_lines = self.settings.completion.max_lines
        try:
            async with self.upstream.call(prompt.model, "completion") as usage, aclosing(
                    self.upstream.backend.stream_fim(prompt, usage, timeout=self.settings.backend.inline_timeout)
            ) as stream:
                newlines = 0
                async for delta in stream:
                    parts.append(delta)
                    if single_line and "\n" in delta:
                        break
                    newlines += delta.count("\n")
                    if newlines > max_lines + 1:
                        break  # the rest would be cut; closing the stream frees the model server too
        except errors.HapaError as exc:
            self._notify_failure(exc, rid, explicit)
            raise
        self._notify_success()
        return "".join(parts)

    # ---- status -----------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for the benchmark, doctor and health."""
        return self.upstream.stats()
