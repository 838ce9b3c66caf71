"""Semantic facts from jedi: signatures and first docstring lines of what the code near the cursor uses.

Three modules, by where they run: finding the names is cheap text work done on the event loop
(``hapa_lsp.context.uses``); resolving them is jedi work done in the jedi worker process
(``hapa_lsp.context.jedi_facts``); this module schedules that work (``FactsEngine.resolve``), time-boxed by
the caller, and caches what comes back: whatever is resolved when the box ends is used, and the job keeps
filling the per-document cache a little longer so the next keystroke has it. Resolutions are cached per
(document, expression) across keystrokes; a job is coalesced per document (one queued at a time, always
working on the latest text).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from typing import Any, Callable

from hapa_lsp.context.facts_store import FactsStore
from hapa_lsp.context.jedi_facts import module_excluded, render, resolve_batch
from hapa_lsp.context.uses import Fact, Use, Uses, class_outline, find_uses, imports_of
from hapa_lsp.jedi_client import JediError
from hapa_lsp.log import get_logger

__all__ = ["JOB_CAP_S", "Fact", "FactsEngine", "Use", "Uses", "class_outline", "find_uses", "imports_of",
           "module_excluded", "render", "resolve_batch"]

# How long one resolution job may keep the jedi worker, even after the caller's time box ended.
JOB_CAP_S = 0.12
# Warming a newly opened document: every import resolved, in background jobs of this length, at most this long.
OPEN_JOB_CAP_S = 0.4
OPEN_TOTAL_S = 20.0
SLOW_PER_JOB = 2
IDLE_S = 1.5  # a pause in requests this long (the user reads or thinks) lets jedi do the expensive resolutions
_TTL_S = 300.0
_MAX_ENTRIES = 4000
SAVE_DELAY_S = 3.0  # resolved facts reach the on-disk store this long after the last new one (or at close)


class FactsEngine:
    """Resolves uses to facts in the jedi worker, with a per-document cache (on the event loop) across keystrokes."""

    def __init__(self, runner: Any, *, exclude_globs: tuple[str, ...] = (), store: FactsStore | None = None):
        self.runner = runner
        self.exclude_globs = tuple(exclude_globs)
        # Facts of imported names kept between sessions (facts_store.py), per document: expr -> (module, facts).
        self.store = store
        self._persist: dict[str, dict[str, tuple[str, tuple[Fact, ...]]]] = {}
        self._paths: dict[str, str] = {}
        self._save_at: dict[str, asyncio.TimerHandle] = {}
        self._writes: set[asyncio.Future[Any]] = set()
        self._cache: OrderedDict[tuple[str, str], tuple[float, tuple[Fact, ...]]] = OrderedDict()
        self._pending: dict[tuple[str, str], tuple[str, str, str | None, list[Use]]] = {}
        self._jobs: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._started: set[tuple[str, str]] = set()
        self._wanted: dict[tuple[str, str], Callable[[], bool]] = {}
        # Per document: the lines where each imported name is used, and the imports themselves (refreshed by
        # resolution jobs, so that a keystroke does not rescan the whole file).
        self._usage: dict[str, dict[str, list[int]]] = {}
        self._imports: dict[str, dict[str, tuple[int, int, str, str | None]]] = {}
        self._job_s: dict[str, float] = {}
        self._job_s_all = 0.0
        self._requests = 0
        self._failures_seen: set[str] = set()

        self.stats = {"resolved": 0, "jobs": 0, "job_ms": 0.0}

    def imports_for(self, uri: str) -> dict[str, tuple[int, int, str, str | None]] | None:
        """The imports of ``uri`` as the last resolution job saw them (None before the first job)."""
        return self._imports.get(uri)

    # ---- cache ----------------------------------------------------------------------------------------------
    def _get(self, uri: str, expr: str) -> tuple[Fact, ...] | None:
        hit = self._cache.get((uri, expr))
        if hit is None:
            return None
        if time.monotonic() - hit[0] > _TTL_S:
            del self._cache[(uri, expr)]
            return None
        self._cache.move_to_end((uri, expr))
        return hit[1]

    def _put(self, uri: str, expr: str, facts: tuple[Fact, ...]) -> None:
        self._cache[(uri, expr)] = (time.monotonic(), facts)
        self._cache.move_to_end((uri, expr))
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)

    def forget(self, uri: str) -> None:
        """Drop a document's cached resolutions (it was closed); what is not on disk yet is written now."""
        handle = self._save_at.pop(uri, None)
        if handle is not None:
            handle.cancel()
            self._save(uri)
        self._persist.pop(uri, None)
        self._paths.pop(uri, None)
        self._usage.pop(uri, None)
        self._imports.pop(uri, None)
        self._job_s.pop(uri, None)
        for kind in ("fast", "slow", "open"):
            self._pending.pop((uri, kind), None)  # a queued job for it then has nothing to do
            self._wanted.pop((uri, kind), None)
        for k in [k for k in self._cache if k[0] == uri]:
            del self._cache[k]

    def found_nothing(self, uri: str, expr: str) -> bool:
        """Whether jedi was asked about ``expr`` and found no definition (a stand-in from the text may do)."""
        return self._get(uri, expr) == ()

    def known(self, uri: str, uses: list[Use]) -> tuple[list[Fact], list[Use]]:
        """Facts already resolved for ``uses`` (ranked by their best use) and the uses still unresolved."""
        best: dict[tuple[str, int], Fact] = {}
        missing: list[Use] = []
        for u in uses:
            facts = self._get(uri, u.expr)
            if facts is None:
                missing.append(u)
                continue
            r = u.rank
            for f in facts:
                prev = best.get(f.key)
                if prev is None or r < prev.rank:
                    best[f.key] = Fact(f.path, f.line, f.name, f.kind, f.text, r, f.source)
        return sorted(best.values(), key=lambda f: f.rank), missing

    # ---- resolution (jedi worker process) ------------------------------------------------------------------
    def _prepare(self, key: tuple[str, str]) -> tuple[str, tuple[Any, ...]] | None:
        """At the job's turn in the worker queue: the latest snapshot, minus what is cached meanwhile."""
        snap = self._pending.pop(key, None)
        if snap is None:
            return None
        text, path, root, uses = snap
        uri = key[0]
        todo = [u for u in uses if self._get(uri, u.expr) is None]
        far = ([u.expr for u in uses if u.imported and u.dist >= 1000 and "." not in u.expr]
               if key[1] in ("fast", "open") else [])
        if not todo and not far:
            return None
        self._started.add(key)
        return "facts", (text, path, root, todo, far, self.exclude_globs,
                         OPEN_JOB_CAP_S if key[1] == "open" else JOB_CAP_S)

    async def _job(self, key: tuple[str, str], still_wanted: Callable[[], bool]) -> None:
        try:
            out = await self.runner.submit(lambda: self._prepare(key), timeout=JOB_CAP_S + 60.0,
                                           still_wanted=lambda: self._wanted.get(key, still_wanted)(),
                                           background=key[1] == "open")
        except JediError as exc:
            # Facts are optional: a prompt without them is still a prompt. Said once per kind of failure.
            self._jedi_failed(exc)
            return
        finally:
            self._started.discard(key)
        if out:
            self._apply(key[0], out)

    def _jedi_failed(self, exc: Exception) -> None:
        sig = str(exc).split("\n", 1)[0][:120]
        if sig not in self._failures_seen:
            self._failures_seen.add(sig)
            get_logger().warning("jedi failed resolving facts; prompts go without them", error=str(exc)[:2000])

    def open_job(self, uri: str, path: str, root: str | None, text: str, cap_s: float = OPEN_JOB_CAP_S
                 ) -> tuple[str, tuple[Any, ...]] | None:
        """The first job of ``warm_document`` as ``(op, args)``, for a worker other than the runner's queue
        (``JediRunner.run_aside``), stopping after ``cap_s``; its result goes to ``take``. None: nothing to
        resolve."""
        todo = [u for u in _open_uses(text) if self._get(uri, u.expr) is None]
        if not todo:
            return None
        return "facts", (text, path, root, todo, [u.expr for u in todo], self.exclude_globs, cap_s)

    def take(self, uri: str, path: str, out: dict[str, Any]) -> None:
        """Store the result of an ``open_job`` run elsewhere, as if the queue had run it."""
        if path and self.store is not None:
            self._paths[uri] = path
        self._apply(uri, out)

    async def warm_document(self, uri: str, path: str, root: str | None, text: str,
                            still_wanted: Callable[[], bool]) -> None:
        """Resolve every name the document imports, in background jobs, right after it was opened: the worker
        parses the modules it imports (the first completion then answers fast) and the first prompt has facts."""
        if self.runner is None:
            return
        uses = _open_uses(text)
        if not uses:
            return
        deadline = time.monotonic() + OPEN_TOTAL_S
        key = (uri, "open")
        while still_wanted() and time.monotonic() < deadline:
            before = self.stats["resolved"]
            await self._submit(key, (text, path, root, uses), still_wanted)
            if self.stats["resolved"] == before:
                return  # all resolved (or jedi cannot resolve the rest)

    def _apply(self, uri: str, out: dict[str, Any]) -> None:
        """Store what a worker job resolved (event loop)."""
        if out.get("imports") is not None:
            self._imports[uri] = out["imports"]
        if out.get("usage"):
            self._usage[uri] = {**self._usage.get(uri, {}), **out["usage"]}
        imports = self._imports.get(uri) or {}
        fresh = False
        for expr, facts in out.get("facts", ()):
            self._put(uri, expr, tuple(facts))
            src = imports.get(expr.split(".", 1)[0])
            if facts and src is not None and self.store is not None and self._paths.get(uri):
                self._persist.setdefault(uri, {})[expr] = (src[2], tuple(facts))
                fresh = True
        if fresh and uri not in self._save_at:
            self._save_at[uri] = asyncio.get_running_loop().call_later(SAVE_DELAY_S, self._save, uri)
        self.stats["resolved"] += out.get("resolved", 0)
        if out.get("est_s") is None:
            return
        self.stats["jobs"] += 1
        self.stats["job_ms"] += out["took_s"] * 1000
        est = out["est_s"]
        # Per document, how long a job takes (parse + two names), smoothed: decides whether waiting pays.
        prev = self._job_s.get(uri)
        self._job_s[uri] = est if prev is None else 0.5 * prev + 0.5 * est
        # Across documents too: a document never seen yet is expected to cost what the others did.
        self._job_s_all = 0.8 * self._job_s_all + 0.2 * est if self._job_s_all else est

    def rerank(self, uri: str, uses: list[Use], row: int) -> list[Use]:
        """Far imports ranked by their nearest use in the whole file (from the last resolution job)."""
        usage = self._usage.get(uri)
        if not usage:
            return uses
        out = []
        for u in uses:
            rows = usage.get(u.expr) if u.dist >= 1000 else None
            if rows is not None:
                # Uses on the cursor's own line are being typed, and the import line is no use: neither counts.
                skip = (row, u.line)
                k = bisect.bisect_left(rows, row)
                near = None
                lo, hi = k - 1, k
                while lo >= 0 and rows[lo] in skip:
                    lo -= 1
                while hi < len(rows) and rows[hi] in skip:
                    hi += 1
                for j in (lo, hi):
                    if 0 <= j < len(rows):
                        d = abs(rows[j] - row)
                        near = d if near is None else min(near, d)
                n = len(rows) - sum(1 for x in skip if x in rows)
                if near is not None:
                    u = Use(u.expr, u.line, u.col, near + 20, max(1, n), u.imported, u.slow, u.module)
                else:
                    # Imported but not used yet: what the user is about to write is the likeliest use.
                    u = Use(u.expr, u.line, u.col, 30, u.count, u.imported, u.slow, u.module)
            out.append(u)
        out.sort(key=lambda x: x.rank)
        return out

    async def resolve(self, uri: str, path: str, root: str | None, text: str, uses: list[Use], *,
                      timeout: float, still_wanted: Callable[[], bool] = lambda: True, wait_slow: bool = False
                      ) -> None:
        """Resolve ``uses`` in the jedi worker, waiting at most ``timeout``; the job may finish later."""
        if self.runner is None or not uses:
            return
        # Imported names resolve in a tiny import script (cheap); everything else needs the whole document
        # parsed, and attributes of local values need type inference: those wait until jedi is idle.
        fast = [u for u in uses if u.module and not u.slow]
        slow = [u for u in uses if not u.module or u.slow]
        # Attributes of local values need type inference (often 100+ ms): they are resolved in the background,
        # after the cheap names, and never waited for.
        waits = []
        if fast:
            job = self._submit((uri, "fast"), (text, path, root, fast), still_wanted)
            # Waiting is worth it only for names from other files, and only when this document's jobs have been
            # fast enough to finish inside the box (jedi parses a 2,700-line file in ~50 ms): otherwise the
            # request goes now and the results serve the next keystroke.
            expected = self._job_s.get(uri, self._job_s_all)
            if wait_slow or (any(u.imported for u in fast) and expected <= timeout):
                waits.append(job)
        self._requests += 1
        if slow and wait_slow:
            waits.append(self._submit((uri, "slow"), (text, path, root, slow), still_wanted))
        elif slow:
            # Only after a pause in requests, a couple at a time: a whole-document parse or one inference can take
            # 100+ ms, and the next keystroke's imported names must not wait behind it.
            stamp = self._requests
            asyncio.get_running_loop().call_later(IDLE_S, self._when_idle, stamp, (uri, "slow"),
                                                  (text, path, root, slow[:SLOW_PER_JOB]), still_wanted)
        if timeout <= 0 or not waits:
            return
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*waits)), timeout)
        except TimeoutError:
            pass

    def _busy(self) -> bool:
        return any(not j.done() for j in self._jobs.values())

    def _when_idle(self, stamp: int, key: tuple[str, str], snap: tuple[str, str, str | None, list[Use]],
                   still_wanted: Callable[[], bool]) -> None:
        if stamp == self._requests and not self._busy():
            self._submit(key, snap, still_wanted)

    # ---- the on-disk store ----------------------------------------------------------------------------------
    async def restore(self, uri: str, path: str, text: str,
                      imports: dict[str, tuple[int, int, str, str | None]] | None = None) -> int:
        """Facts of ``uri``'s imported names from an earlier session (read in a thread); how many were usable.
        ``imports``: ``imports_of(text)`` when the caller has it already."""
        if self.store is None or not path:
            return 0
        self._paths[uri] = path
        if imports is None:
            imports = imports_of(text)
        modules = {name: module for name, (_r, _c, module, _o) in imports.items()}
        try:
            found = await asyncio.to_thread(self.store.load, path, modules)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be read is no cache; said once
            self._store_failed(exc)
            return 0
        kept = self._persist.setdefault(uri, {})
        for expr, facts in found.items():
            if self._get(uri, expr) is None:
                self._put(uri, expr, facts)
            kept.setdefault(expr, (modules[expr.split(".", 1)[0]], facts))
        return len(found)

    def _save(self, uri: str) -> None:
        self._save_at.pop(uri, None)
        entries, path = self._persist.get(uri), self._paths.get(uri)
        if not entries or not path or self.store is None:
            return
        job = asyncio.ensure_future(asyncio.to_thread(self.store.save, path, dict(entries)))
        self._writes.add(job)
        job.add_done_callback(self._saved)

    def _saved(self, job: asyncio.Future[Any]) -> None:
        self._writes.discard(job)
        if not job.cancelled() and job.exception() is not None:
            self._store_failed(job.exception())

    def _store_failed(self, exc: BaseException) -> None:
        sig = "store:" + type(exc).__name__
        if sig not in self._failures_seen:
            self._failures_seen.add(sig)
            get_logger().warning("the on-disk facts cache failed; facts are resolved again each session",
                                 error=str(exc)[:500], directory=self.store.directory if self.store else "")

    async def flush(self) -> None:
        """Write every document's pending facts now and wait for the writes (shutdown, tests)."""
        for uri in list(self._save_at):
            self._save_at.pop(uri).cancel()
            self._save(uri)
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def _submit(self, key: tuple[str, str], snap: tuple[str, str, str | None, list[Use]],
                still_wanted: Callable[[], bool]) -> asyncio.Future[Any]:
        self._pending[key] = snap
        if snap[1] and self.store is not None:
            self._paths[key[0]] = snap[1]
        self._wanted[key] = still_wanted  # a queued job works for the newest request, so asks it
        job = self._jobs.get(key)
        if job is None or job.done() or key in self._started:
            # A running job already took its snapshot: queue another (it runs next, on the latest text).
            job = asyncio.ensure_future(self._job(key, still_wanted))
            self._jobs[key] = job
            job.add_done_callback(lambda f, k=key: self._jobs.pop(k, None) if self._jobs.get(k) is f else None)
        return job


def _open_uses(text: str) -> list[Use]:
    """What warming a newly opened document resolves: every name it imports, at its import statement."""
    return [Use(name, row, col, 1000, 1, True, False, module)
            for name, (row, col, module, _orig) in imports_of(text).items()]
