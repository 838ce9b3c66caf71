"""jedi for the server: a worker process (``hapa_lsp.jedi_worker``) fed one job at a time, stale jobs skipped.

The event loop never runs jedi and never waits on it beyond a caller's time box. The first worker is the one
``hapa_lsp.jedi_spawn`` started with the server process (adopted on first use, e.g. by ``warm_up`` after
``initialized``), or one started then; a worker is restarted when it dies or hangs, and replaced when idle once it
holds more than ``max_memory_mb``. While the first worker is still starting, ``run_aside`` can run a few jobs in a
short-lived helper worker of their own (``hapa_lsp.context.builder.ContextEngine.warm_document`` does, for a file
opened then).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import os
import pickle
import struct
import subprocess
import sys
import time
from typing import Any, Callable

from lsprotocol import types

from hapa_lsp import jedi_spawn
from hapa_lsp.context import units_len
from hapa_lsp.log import get_logger

_HEAD = struct.Struct(">I")
# A job running longer than this means jedi is stuck (a pathological file): the worker is killed.
HANG_S = 20.0
WARM_HANG_S = 90.0
START_BACKOFF_S = 60.0

_KINDS = {
    "module": types.CompletionItemKind.Module,
    "class": types.CompletionItemKind.Class,
    "instance": types.CompletionItemKind.Variable,
    "function": types.CompletionItemKind.Function,
    "param": types.CompletionItemKind.Variable,
    "path": types.CompletionItemKind.File,
    "keyword": types.CompletionItemKind.Keyword,
    "property": types.CompletionItemKind.Property,
    "statement": types.CompletionItemKind.Variable,
}


class JediError(Exception):
    """jedi raised in the worker (the message carries its traceback)."""


class _WorkerGone(Exception):
    def __init__(self, reason: str, *, quiet: bool = False):
        super().__init__(reason)
        self.quiet = quiet


class _Job:
    __slots__ = ("prepare", "still_wanted", "future", "abandoned")

    def __init__(self, prepare: Callable[[], tuple[str, tuple[Any, ...]] | None],
                 still_wanted: Callable[[], bool], future: asyncio.Future[Any]):
        self.prepare = prepare
        self.still_wanted = still_wanted
        self.future = future
        self.abandoned = False  # its caller was cancelled: nobody will read the result


class JediRunner:
    """Client of the jedi worker process.

    Jobs queue in the server and go to the worker one at a time; a job whose ``still_wanted()`` is False
    when its turn comes is skipped rather than computed: that is how a burst of keystrokes avoids a backlog.
    Background jobs (warming a document that was just opened) run only when no request's job is waiting.
    """

    def __init__(self, *, max_memory_mb: float = 150.0, python: str | None = None) -> None:
        self.max_memory_mb = max_memory_mb
        self._python = python or sys.executable
        self._queue: collections.deque[_Job] = collections.deque()
        self._background: collections.deque[_Job] = collections.deque()
        self._served = False  # the current worker has answered a real job (jedi imported, builtins inferred)
        self._in_background = False  # the job in the worker now is a background one
        self._proc: asyncio.subprocess.Process | _Adopted | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        self._no_start_until = 0.0
        self._last_op = ""
        self._fresh = False
        self._reaping: set[asyncio.Future[Any]] = set()
        self._answered: asyncio.Event | None = None  # set when the current worker answers its first job
        self._aside: asyncio.subprocess.Process | None = None
        self.aside_runs = 0  # helper workers run while the first worker was starting (``run_aside``)
        self.skipped = 0
        self.restarts = 0  # replaced for memory
        self.failures = 0  # died or hung
        self.rss_mb = 0.0  # the worker's resident memory after its last job

    # ---- public API ------------------------------------------------------------------------------------------
    def warm_up(self) -> asyncio.Future[Any]:
        """Start the worker and import jedi there in the background, so the first request is not slow.

        No completion is run by this job (inferring builtins costs ~50 MB); the worker started with the process
        (``hapa_lsp.jedi_spawn``) has run one on an empty file by itself.
        """
        return asyncio.ensure_future(self.submit(lambda: ("warm", ()), timeout=WARM_HANG_S, background=True))

    @property
    def warming(self) -> bool:
        """True while jedi is warming up: the current worker has not answered a real job yet (its first one pays
        for starting, importing jedi and inferring builtins: seconds on a cold disk cache), or it is parsing a
        newly opened document's imports (itself, or a helper worker of ``run_aside``: the worker then parses on
        its own what the helper has not reached yet). An explicit request then waits longer than the usual time box."""
        return (not self._served or self._proc is None or self._in_background or bool(self._background)
                or self._aside is not None)

    @property
    def starting(self) -> bool:
        """The current worker has not answered any job yet: it is importing jedi and parsing builtins, typing and
        what they import (~1.7 s of one core the first time this machine runs it, ~0.2 s with its parse cache)."""
        return self._proc is None or self._fresh

    async def wait_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the current worker's first answer; False while it is still starting."""
        if not self.starting:
            return True
        if self._answered is None:
            self._answered = asyncio.Event()
        try:
            await asyncio.wait_for(self._answered.wait(), timeout)
        except TimeoutError:
            pass
        return not self.starting

    @property
    def aside_pid(self) -> int | None:
        """The process id of the helper worker ``run_aside`` is running (None when there is none)."""
        return self._aside.pid if self._aside is not None and self._aside.returncode is None else None

    async def run_aside(self, jobs: list[tuple[str, tuple[Any, ...]]], *, timeout: float) -> list[Any] | None:
        """Run ``jobs`` in a second worker of their own, which exits after them: the results (None for a job that
        failed in jedi), or None if no helper could run them (one at a time; closed; it died or ran out of time).

        For the first seconds of a never-seen machine: the first worker then spends ~2 s of one core parsing what
        every completion needs, while the other core idles. A helper parses what a newly opened document imports
        meanwhile; the parse cache is shared (atomic writes), so the first worker then loads those modules
        instead of parsing them, and the helper's facts go straight to the caller.
        """
        if self._closed or self._aside is not None or not helper_allowed():
            return None
        deadline = time.monotonic() + timeout
        try:
            proc = self._aside = await asyncio.create_subprocess_exec(
                self._python, "-m", "hapa_lsp.jedi_worker", "--helper",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
        except (OSError, ValueError) as exc:
            self._aside = None
            _log("debug", "no helper jedi worker", error=repr(exc))
            return None
        self.aside_runs += 1
        assert proc.stdin is not None and proc.stdout is not None
        out: list[Any] = []
        try:
            for op, args in jobs:
                data = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.write(_HEAD.pack(len(data)) + data)
                await proc.stdin.drain()
                head = await asyncio.wait_for(proc.stdout.readexactly(_HEAD.size), deadline - time.monotonic())
                body = await asyncio.wait_for(proc.stdout.readexactly(_HEAD.unpack(head)[0]),
                                              max(0.5, deadline - time.monotonic()))
                ok, value, _rss = pickle.loads(body)
                out.append(value if ok else None)
                if not ok:
                    _log("debug", "helper jedi job failed", op=op, error=str(value)[:500])
            proc.stdin.close()  # EOF ends it
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                pass  # slow to exit on a loaded machine: every job has answered; it is killed below
            return out
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, BrokenPipeError, OSError) as exc:
            _log("debug", "helper jedi worker gave up", error=repr(exc), done=len(out))
            return None
        finally:
            self._aside = None
            if proc.returncode is None:
                proc.kill()
                reap = asyncio.ensure_future(proc.wait())
                self._reaping.add(reap)  # shutdown waits for it; cancelled callers leave no zombie
                reap.add_done_callback(self._reaping.discard)

    async def run(self, op: str, *args: Any, timeout: float, still_wanted: Callable[[], bool] = lambda: True,
                  background: bool = False) -> Any:
        """Run worker operation ``op`` within ``timeout``; None when skipped as stale, timed out or lost."""
        return await self.submit(lambda: (op, args), timeout=timeout, still_wanted=still_wanted,
                                 background=background)

    async def submit(self, prepare: Callable[[], tuple[str, tuple[Any, ...]] | None], *, timeout: float,
                     still_wanted: Callable[[], bool] = lambda: True, background: bool = False) -> Any:
        """Queue a job whose ``(op, args)`` are made by ``prepare()`` at its turn (None: nothing to do).

        Waits at most ``timeout``; the job itself goes on after that (its result then only reaches whoever
        awaits the same work later, e.g. a cache filled by ``prepare``'s owner).
        """
        if self._closed:
            return None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # A failure that arrives after the caller stopped waiting is not an unhandled error.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        job = _Job(prepare, still_wanted, fut)
        (self._background if background else self._queue).append(job)
        if self._pump_task is None or self._pump_task.done():
            # A context of its own: the queue serves every request, its log lines belong to none of them.
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), context=contextvars.Context())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            # The editor cancelled the request (or a newer one replaced it): skip the job if not started yet.
            job.abandoned = True
            raise

    async def idle(self, timeout: float) -> None:
        """Wait until every job queued so far has finished (benchmarks: background work done)."""
        await self.submit(lambda: None, timeout=timeout, background=True)

    async def complete(self, source: str, path: str, root: str | None, line: int, column: int, line_prefix: str,
                       encoding: str = "utf-16", limit: int = 200, *, timeout: float,
                       still_wanted: Callable[[], bool] = lambda: True) -> list[types.CompletionItem] | None:
        """jedi completions at a 0-based position (code points) as LSP items in jedi's order; None when not
        ready within ``timeout`` or skipped as stale. Raises JediError when jedi failed on this code."""
        raw = await self.run("complete", source, path, root, line, column, limit, timeout=timeout,
                             still_wanted=still_wanted)
        if raw is None:
            return None
        end = types.Position(line, units_len(line_prefix, encoding))
        items: list[types.CompletionItem] = []
        for i, (name, kind, description, typed) in enumerate(raw):
            start = types.Position(line, units_len(line_prefix[:max(0, column - typed)], encoding))
            items.append(types.CompletionItem(
                label=name,
                kind=_KINDS.get(kind, types.CompletionItemKind.Text),
                detail=description or None,
                sort_text=f"b{i:04d}",
                filter_text=name,
                text_edit=types.TextEdit(types.Range(start, end), name),
            ))
        return items

    @property
    def pid(self) -> int | None:
        """The worker's process id (None when not running)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def aclose(self) -> None:
        """``shutdown`` and wait for the worker to exit, so that its pipes close on this event loop."""
        self.shutdown()
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=5.0)

    def shutdown(self) -> None:
        """Stop the worker at once and fail nothing loudly: queued jobs answer None."""
        self._closed = True
        for queue in (self._queue, self._background):
            while queue:
                job = queue.popleft()
                if not job.future.done():
                    job.future.set_result(None)
        if self._pump_task is not None:
            self._pump_task.cancel()
        self._kill()
        if self._aside is not None and self._aside.returncode is None:
            try:
                self._aside.kill()  # run_aside reaps it
            except ProcessLookupError:
                pass

    # ---- the worker ------------------------------------------------------------------------------------------
    async def _pump(self) -> None:
        while (self._queue or self._background) and not self._closed:
            self._in_background = not self._queue
            job = self._queue.popleft() if self._queue else self._background.popleft()
            if job.future.done():
                continue
            try:
                if job.abandoned or not job.still_wanted():
                    self.skipped += 1
                    job.future.set_result(None)
                    continue
                call = job.prepare()
            except Exception as exc:  # noqa: BLE001 - the job's owner sees its own failure
                job.future.set_exception(exc)
                continue
            if call is None:
                job.future.set_result(None)
                continue
            try:
                ok, value = await self._call(call[0], call[1])
            except asyncio.CancelledError:  # shutdown
                if not job.future.done():
                    job.future.set_result(None)
                raise
            except _WorkerGone as exc:
                if not exc.quiet:
                    self.failures += 1
                    _log("warning", "jedi worker lost; starting a new one", reason=str(exc), op=call[0])
                self._kill()
                if not job.future.done():
                    job.future.set_result(None)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. arguments that cannot be pickled: the caller's bug
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(JediError(value))
        self._in_background = False
        if (not self._closed and self._proc is not None and self.rss_mb > self.max_memory_mb
                and self._last_op != "warm"):  # a fresh worker over the limit would be replaced forever
            # Idle and too big: jedi's caches never shrink, so the process is replaced by a fresh one, warmed
            # now so that the next keystroke does not wait for its start (the server's cache of facts stays).
            self.restarts += 1
            _log("info", "jedi worker replaced", rss_mb=round(self.rss_mb, 1), limit_mb=self.max_memory_mb)
            self._kill()
            self.rss_mb = 0.0
            warm = self.warm_up()
            self._reaping.add(warm)  # referenced until done; shutdown waits for it like for a reap
            warm.add_done_callback(self._reaping.discard)

    async def _ensure(self) -> asyncio.subprocess.Process | _Adopted:
        proc = self._proc
        if proc is not None and proc.returncode is not None:
            self.failures += 1  # it was not stopped by us (that clears self._proc)
            _log("warning", "jedi worker exited; starting a new one", returncode=proc.returncode)
        if proc is None or proc.returncode is not None:
            early = jedi_spawn.take() if self._python == sys.executable else None
            adopted: _Adopted | None = None
            if early is not None:
                # Started with the process (hapa_lsp.jedi_spawn): jedi is imported and builtins parsed, or nearly.
                try:
                    adopted = await _Adopted.adopt(early)
                except (OSError, ValueError, RuntimeError, NotImplementedError) as exc:
                    _log("warning", "the early jedi worker could not be adopted; starting another", error=repr(exc))
                    early.kill()
            if adopted is not None:
                proc = self._proc = adopted
            else:
                proc = self._proc = await asyncio.create_subprocess_exec(
                    self._python, "-m", "hapa_lsp.jedi_worker",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
            self._fresh = True
            self._served = False
        return proc

    async def _call(self, op: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        if time.monotonic() < self._no_start_until:
            raise _WorkerGone("not restarted yet", quiet=True)
        try:
            proc = await self._ensure()
        except (OSError, ValueError) as exc:
            # Said once per minute at most; meanwhile jedi's items and facts are simply missing.
            self._no_start_until = time.monotonic() + START_BACKOFF_S
            raise _WorkerGone(f"cannot start {self._python!r}: {exc}") from None
        data = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
        assert proc.stdin is not None and proc.stdout is not None
        # A new worker's first job includes importing jedi: it is not hung for taking a few seconds.
        limit = WARM_HANG_S if op == "warm" or self._fresh else HANG_S
        t0 = time.monotonic()
        try:
            proc.stdin.write(_HEAD.pack(len(data)) + data)
            await proc.stdin.drain()
            head = await asyncio.wait_for(proc.stdout.readexactly(_HEAD.size), limit)
            body = await asyncio.wait_for(proc.stdout.readexactly(_HEAD.unpack(head)[0]),
                                          max(1.0, limit - (time.monotonic() - t0)))
        except TimeoutError:
            raise _WorkerGone(f"no answer within {limit:.0f} s") from None
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            raise _WorkerGone(f"exited ({type(exc).__name__})") from None
        ok, value, rss = pickle.loads(body)
        _log("debug", "jedi job", op=op, ms=round((time.monotonic() - t0) * 1000, 1), ok=ok,
             fresh=self._fresh)
        self._fresh = False
        if self._answered is not None:
            self._answered.set()
            self._answered = None
        if op != "warm":
            self._served = True
        self.rss_mb = rss
        self._last_op = op
        return ok, value

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            # Reaped on this loop, so its pipes close here (not at garbage collection after the loop is gone).
            reap = asyncio.ensure_future(proc.wait())
            self._reaping.add(reap)
            reap.add_done_callback(self._reaping.discard)
        except RuntimeError:  # no running loop (interpreter exit)
            pass


class _Adopted:
    """A ``subprocess.Popen`` worker seen through the parts of ``asyncio.subprocess.Process`` the runner uses."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader):
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stdout = stdout

    @classmethod
    async def adopt(cls, popen: subprocess.Popen[bytes]) -> _Adopted:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
        return cls(popen, asyncio.StreamWriter(transport, protocol, None, loop), reader)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def kill(self) -> None:
        self._popen.kill()

    async def wait(self) -> int:
        """Wait for the exit (polled: asyncio's child watcher does not know this process)."""
        while (code := self._popen.poll()) is None:
            await asyncio.sleep(0.02)
        self.stdin.close()
        return code


def helper_allowed() -> bool:
    """Whether ``run_aside`` may start a helper: a second core to run it on, and ``HAPA_JEDI_HELPER`` not 0."""
    if os.environ.get("HAPA_JEDI_HELPER", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return (os.cpu_count() or 1) >= 2


def _log(level: str, msg: str, **kw: Any) -> None:
    getattr(get_logger(), level)(msg, **kw)
