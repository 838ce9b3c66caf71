"""The jedi worker process: answers, skips stale work, survives a crash or a hang, and is replaced when big."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from hapa_lsp import jedi_client, jedi_spawn
from hapa_lsp.jedi_client import JediError, JediRunner

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals")

SOURCE = "import os\nos.pa"


@pytest.fixture
async def runner():
    r = JediRunner()
    yield r
    await r.aclose()


async def _gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (within 5 s)."""
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


async def _labels(r: JediRunner, source: str = SOURCE, column: int = 5) -> list[str] | None:
    items = await r.complete(source, "", None, 1, column, source.split("\n")[1][:column], timeout=60.0)
    return None if items is None else [i.label for i in items]


async def test_completions_come_from_another_process_with_lsp_ranges(runner):
    items = await runner.complete(SOURCE, "", None, 1, 5, "os.pa", timeout=60.0)
    assert items is not None
    labels = [i.label for i in items]
    assert "path" in labels and "pardir" in labels
    path = items[labels.index("path")]
    # The edit replaces the two characters typed ("pa") with the whole name.
    assert (path.text_edit.range.start.character, path.text_edit.range.end.character) == (3, 5)
    assert path.text_edit.new_text == "path"
    assert runner.pid is not None and runner.pid != os.getpid()
    assert runner.rss_mb > 10
    assert "jedi" not in sys.modules or runner.pid != os.getpid()


async def test_stale_jobs_are_skipped_not_computed(runner):
    await runner.warm_up()
    got = await asyncio.gather(*(runner.run("complete", SOURCE, "", None, 1, 5, 50, timeout=60.0,
                                            still_wanted=lambda: False) for _ in range(5)))
    assert got == [None] * 5
    assert runner.skipped == 5


async def test_jedi_failure_is_an_error_and_the_worker_keeps_serving(runner):
    with pytest.raises(JediError, match="ValueError"):
        await runner.complete(SOURCE, "", None, 40, 5, "", timeout=60.0)  # line 41 does not exist
    assert "path" in (await _labels(runner))


async def test_a_killed_worker_is_replaced_on_the_next_job(runner):
    assert await _labels(runner)
    first = runner.pid
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.2)
    # The job in flight when the worker dies answers None; the one after runs in a fresh worker.
    labels = await _labels(runner) or await _labels(runner)
    assert "path" in labels
    assert runner.pid not in (None, first)
    assert runner.failures == 1


async def test_a_hung_worker_is_killed_and_the_queue_goes_on(runner, monkeypatch):
    assert await _labels(runner)  # the first answer (jedi's import, os inferred) may take seconds on a busy machine
    monkeypatch.setattr(jedi_client, "HANG_S", 1.0)
    hung = runner.pid
    os.kill(hung, signal.SIGSTOP)  # jedi stuck in a pathological file, as far as the server can tell
    try:
        first = asyncio.ensure_future(_labels(runner))
        second = asyncio.ensure_future(_labels(runner))
        assert await asyncio.wait_for(first, 10) is None
        assert "path" in await asyncio.wait_for(second, 60)
    finally:
        try:
            os.kill(hung, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert runner.failures == 1 and runner.pid != hung


async def test_a_worker_over_its_memory_limit_is_replaced_when_idle():
    r = JediRunner(max_memory_mb=50)  # warmed ~32 MB here; having inferred os.path, ~68 MB
    try:
        await r.warm_up()
        first = r.pid
        assert first is not None and r.rss_mb < 50 and r.restarts == 0
        assert "path" in await _labels(r)
        for _ in range(50):
            if r.restarts:
                break
            await asyncio.sleep(0.05)
        assert r.restarts == 1
        assert await _gone(first)
        # The replacement was started and warmed while idle, ready for the next keystroke.
        for _ in range(200):
            if r.pid is not None and r.rss_mb > 0:
                break
            await asyncio.sleep(0.05)
        second = r.pid
        assert second not in (None, first)
        assert "path" in await _labels(r)
    finally:
        await r.aclose()


async def test_after_shutdown_jobs_answer_none_at_once(runner):
    assert await _labels(runner)
    proc_pid = runner.pid
    await runner.aclose()
    assert await _labels(runner) is None
    assert await _gone(proc_pid)


async def test_a_worker_that_cannot_start_costs_one_warning_and_no_items(tmp_path):
    r = JediRunner(python=str(tmp_path / "no-such-python"))
    try:
        for _ in range(3):
            assert await _labels(r) is None
        assert r.failures == 1  # reported once, not on every keystroke
    finally:
        await r.aclose()


async def test_a_job_that_cannot_be_sent_fails_alone(runner):
    with pytest.raises(Exception, match="pickle"):
        await runner.run("complete", lambda: None, timeout=10.0)
    assert "path" in await _labels(runner)


async def test_a_cancelled_callers_job_is_skipped_not_computed(runner):
    await runner.warm_up()
    blocker = asyncio.ensure_future(_labels(runner))  # keeps the worker busy while the others queue
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(_labels(runner)) for _ in range(3)]
    await asyncio.sleep(0)
    for w in waiting:
        w.cancel()  # the editor sent $/cancelRequest for each
    assert "path" in await blocker
    await runner.idle(timeout=30)
    assert runner.skipped == 3


# ---- jedi's parse cache: hapa-lsp's own, written atomically, damaged entries healed --------------------------------
def test_parso_cache_functions_that_the_worker_wraps_still_exist():
    """The worker wraps two functions of parso's cache (it has no public hook); a parso release that renames them
    must fail here, not silently write the shared cache in place again."""
    import inspect

    import parso.cache as pc

    from hapa_lsp import jedi_worker

    for name in ("_save_to_file_system", "_load_from_file_system", "_get_hashed_path"):
        assert callable(getattr(pc, name)), name
    assert list(inspect.signature(pc._save_to_file_system).parameters)[:3] == ["hashed_grammar", "path", "item"]
    assert list(inspect.signature(pc._load_from_file_system).parameters)[:3] == ["hashed_grammar", "path", "p_time"]
    assert "_load_from_file_system(" in inspect.getsource(pc.load_module)
    assert "_save_to_file_system(" in inspect.getsource(pc.try_to_save_module)
    assert jedi_worker.cache_directory()  # a path under the user cache dir (or HAPA_JEDI_CACHE_DIR)
    # Jedi.parse_ahead: a grammar's cache key, and the grammar jedi parses stubs with (its "latest").
    import jedi.inference
    import parso

    assert isinstance(parso.load_grammar(version="3.13")._hashed, str)
    assert "load_grammar(version='3.13')" in inspect.getsource(jedi.inference.InferenceState)


async def test_the_worker_never_writes_the_cache_other_jedi_tools_share(tmp_path, monkeypatch):
    monkeypatch.delenv("HAPA_JEDI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    r = JediRunner()
    try:
        assert "path" in (await _labels(r) or [])
    finally:
        await r.aclose()
    assert not (tmp_path / "jedi").exists(), "wrote into jedi's shared cache directory"
    own = list((tmp_path / "hapa-lsp" / "jedi").rglob("*.pkl"))
    assert own, "jedi's parse cache should be in hapa-lsp's own cache directory"


async def test_a_damaged_cache_entry_is_removed_and_jedi_still_answers(tmp_path, monkeypatch):
    cache = tmp_path / "jedi-cache"
    monkeypatch.setenv("HAPA_JEDI_CACHE_DIR", str(cache))
    r = JediRunner()
    try:
        assert "path" in (await _labels(r) or [])
        entries = sorted(cache.rglob("*.pkl"))
        assert entries
        for f in entries:  # what a process killed mid-write used to leave behind
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 3])
        old = r.pid
        os.kill(old, signal.SIGKILL)  # a new worker has no parse trees in memory: it must read the files
        assert await _gone(old)
        labels: list[str] | None = None
        for _ in range(3):  # the exit may reach the runner only through the next job (it answers None then)
            labels = await _labels(r)
            if labels:
                break
        assert "path" in (labels or [])
        assert r.pid != old
    finally:
        await r.aclose()
    import pickle

    for f in cache.rglob("*.pkl"):
        with open(f, "rb") as fh:
            pickle.load(fh)  # every entry whole again
    assert not list(cache.rglob(".tmp-*")), "temporary files left behind"


async def test_a_worker_killed_while_it_writes_leaves_no_partial_entry(tmp_path, monkeypatch):
    """Kill the worker at many moments during its first (cold) completions: no entry is ever truncated."""
    import pickle

    cache = tmp_path / "jedi-cache"
    monkeypatch.setenv("HAPA_JEDI_CACHE_DIR", str(cache))
    r = JediRunner()
    try:
        for delay in (0.3, 0.6, 0.9, 1.2):
            job = asyncio.ensure_future(_labels(r, "import email.mime.multipart, json, asyncio\nos.pa"))
            await asyncio.sleep(delay)
            if r.pid is not None:
                os.kill(r.pid, signal.SIGKILL)
            await job
    finally:
        await r.aclose()
    for f in cache.rglob("*.pkl"):
        with open(f, "rb") as fh:
            pickle.load(fh)


def test_writes_cut_off_by_a_killed_worker_are_swept_and_never_read(tmp_path, monkeypatch):
    """A killed worker leaves its half-written entry under a name parso never reads; the next worker removes it
    once it is old enough not to be another worker's write in progress."""
    import time

    import jedi

    from hapa_lsp import jedi_worker

    monkeypatch.setattr(jedi.settings, "cache_directory", jedi.settings.cache_directory)  # restored after
    sub = tmp_path / "CPython-311-33"
    sub.mkdir()
    old = sub / ".hapa-abc.part"
    old.write_bytes(b"\x80\x05partial")
    os.utime(old, (time.time() - 3600,) * 2)
    fresh = sub / ".hapa-def.part"
    fresh.write_bytes(b"\x80\x05partial")
    entry = sub / "module-hash.pkl"
    entry.write_bytes(b"entry")
    jedi_worker.use_own_cache(str(tmp_path))
    assert not old.exists() and fresh.exists() and entry.exists()


@pytest.fixture
def early_worker(monkeypatch, tmp_path):
    """The worker `hapa-lsp` starts with its process (hapa_lsp.jedi_spawn), ended after the test."""
    monkeypatch.setenv("HAPA_JEDI_CACHE_DIR", str(tmp_path / "jedi-cache"))
    monkeypatch.delenv("HAPA_JEDI_EARLY", raising=False)
    jedi_spawn.start_early()
    early = jedi_spawn._early
    assert early is not None
    yield early
    jedi_spawn.discard()


async def test_the_runner_adopts_the_worker_started_with_the_process(early_worker):
    """`hapa-lsp` starts its jedi worker before importing pygls; the runner's first worker is that one, and a new
    one replaces it when it dies, as for any worker."""
    early = early_worker
    r = JediRunner()
    try:
        assert "path" in (await _labels(r) or [])
        assert r.pid == early.pid
        os.kill(early.pid, signal.SIGKILL)
        labels = None
        for _ in range(3):  # the job in flight when it died answers None; the next one gets a new worker
            labels = await _labels(r)
            if labels:
                break
        assert labels and "path" in labels and r.pid not in (None, early.pid)
        assert await _gone(early.pid)  # reaped by the runner, not left a zombie
    finally:
        await r.aclose()


def test_an_early_worker_is_ended_when_jedi_is_off_and_not_started_when_asked_not_to(early_worker, monkeypatch):
    early = early_worker
    assert early.poll() is None
    jedi_spawn.discard()
    assert early.poll() is not None and jedi_spawn.take() is None
    monkeypatch.setenv("HAPA_JEDI_EARLY", "0")
    jedi_spawn.start_early()
    assert jedi_spawn._early is None


async def test_an_early_worker_that_cannot_be_adopted_is_ended_and_another_one_answers(early_worker, monkeypatch):
    async def refuse(cls, popen):
        raise OSError("pipes cannot be adopted here")

    monkeypatch.setattr(jedi_client._Adopted, "adopt", classmethod(refuse))
    early = early_worker
    r = JediRunner()
    try:
        assert "path" in (await _labels(r) or [])
        assert r.pid not in (None, early.pid)
        early.wait(timeout=5)  # killed, not left running beside the new worker
    finally:
        await r.aclose()


async def test_a_helper_worker_runs_jobs_in_a_process_of_its_own_and_exits(runner, tmp_path, monkeypatch):
    """run_aside: while the first worker starts on a cold cache, a second one parses a new document's imports."""
    from hapa_lsp.jedi_worker import HELPER_NICE  # local: the rest of this module never imports jedi here

    monkeypatch.setenv("HAPA_JEDI_CACHE_DIR", str(tmp_path / "jedi-cache"))
    seen: list[int] = []
    nice: list[int] = []

    async def watch() -> None:
        while True:
            pid = runner.aside_pid
            if pid is not None:
                if pid not in seen:
                    seen.append(pid)
                try:
                    nice.append(os.getpriority(os.PRIO_PROCESS, pid))
                except OSError:
                    pass
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    jobs = [("complete", (SOURCE, "", None, 1, 5, 100)), ("complete", (SOURCE, "", None, 9, 0, 100)),
            ("complete", ("import os\nos.path.\n", "", None, 1, 8, 100))]
    task = asyncio.ensure_future(runner.run_aside(jobs, timeout=60.0))
    await asyncio.sleep(0.05)
    assert await runner.run_aside(jobs[:1], timeout=60.0) is None  # one helper at a time
    out = await task
    watcher.cancel()
    assert out is not None and len(out) == 3
    assert "path" in [c[0] for c in out[0]]
    assert out[1] is None  # jedi failed on that one (no line 10): None, and the next job still ran
    assert "join" in [c[0] for c in out[2]]
    assert len(seen) == 1 and seen[0] != os.getpid()
    # It yields the CPU to the server (and to the first worker): it only gets ahead of their work.
    assert max(nice) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + HELPER_NICE)
    assert runner.pid is None  # the runner's own worker was not started for it
    assert runner.aside_pid is None and await _gone(seen[0])  # it exited when its jobs were done
    assert runner.aside_runs == 1


async def test_jedi_counts_as_warming_while_a_helper_worker_runs(runner, tmp_path, monkeypatch):
    """An Invoked list waits for jedi (``warming``) while a helper parses a new document's imports: the worker would
    otherwise parse on its own, within the usual 800 ms box, what the helper has not reached yet."""
    monkeypatch.setenv("HAPA_JEDI_CACHE_DIR", str(tmp_path / "jedi-cache"))
    assert await runner.run("complete", "import os\nos.", "", None, 1, 3, 10, timeout=60.0)
    while runner.warming:  # its own background work, if any
        await asyncio.sleep(0.02)
    seen: list[bool] = []

    async def watch() -> None:
        while True:
            if runner.aside_pid is not None:
                seen.append(runner.warming)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    out = await runner.run_aside([("parse_ahead", (["json"], 30.0)), ("complete", ("import json\njson.", "", None,
                                                                                 1, 5, 10))], timeout=60.0)
    watcher.cancel()
    assert out is not None and seen and all(seen)
    assert runner.warming is False


async def test_a_helper_worker_that_hangs_is_ended_and_shutdown_ends_a_running_one(tmp_path):
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    r = JediRunner(python=str(hang))
    try:
        t0 = asyncio.get_running_loop().time()
        assert await r.run_aside([("warm", ())], timeout=0.5) is None  # out of time: given up, not waited for
        assert asyncio.get_running_loop().time() - t0 < 5
        task = asyncio.ensure_future(r.run_aside([("warm", ())], timeout=60.0))
        for _ in range(200):
            if r.aside_pid is not None:
                break
            await asyncio.sleep(0.01)
        pid = r.aside_pid
        assert pid is not None
        r.shutdown()
        assert await asyncio.wait_for(task, 5) is None
        assert await _gone(pid)
    finally:
        await r.aclose()


async def test_no_helper_worker_when_turned_off_or_on_one_core(runner, monkeypatch):
    job = [("complete", (SOURCE, "", None, 1, 5, 100))]
    monkeypatch.setenv("HAPA_JEDI_HELPER", "0")
    assert await runner.run_aside(job, timeout=60.0) is None
    monkeypatch.delenv("HAPA_JEDI_HELPER")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # it would only take the core the server answers keystrokes on
    assert await runner.run_aside(job, timeout=60.0) is None
    assert runner.aside_runs == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = await runner.run_aside(job, timeout=60.0)
    assert out and "path" in [c[0] for c in out[0]]


# ---- a helper's parse-ahead: files jedi will read, in the cache before it reads them -----------------------------
_COMPLETE_OS_PATH = """
import sys
from hapa_lsp import jedi_worker
jedi_worker.use_own_cache(sys.argv[1])
names = [c[0] for c in jedi_worker.Jedi().complete("import os\\nos.path.", "", None, 1, 8, 500)]
print("join" in names, "exists" in names)
"""


def test_parse_ahead_fills_the_cache_with_what_jedi_then_loads_instead_of_parsing(tmp_path):
    """What ``JediRunner.run_aside`` runs first at didOpen on a never-seen machine: ``os``'s stub and source and
    the stubs they import are parsed into the cache, with the grammar and key jedi uses, so the worker's first
    ``os.path.`` completion loads them (their entries are not rewritten) and lists ``join``."""
    import subprocess
    from pathlib import Path

    import jedi
    import parso
    import parso.cache as pc

    from hapa_lsp import jedi_worker

    cache = str(tmp_path / "jedi")
    jedi_worker.use_own_cache(cache)
    try:
        state = jedi_worker.Jedi()
        assert state.parse_ahead(["os"], 30.0) >= 4  # os.pyi, os.py, os/path.pyi, posixpath.pyi, ...
        assert state.parse_ahead(["os"], 30.0) == 0  # already cached: skipped
    finally:
        jedi_worker.use_own_cache()  # this process's later tests use the default directory again
    stub = os.path.join(os.path.dirname(jedi.__file__), "third_party", "typeshed", "stdlib", "os", "__init__.pyi")
    entry = Path(pc._get_hashed_path(parso.load_grammar(version="3.13")._hashed, stub, cache_path=Path(cache)))
    assert entry.is_file()
    before = entry.stat().st_mtime_ns
    out = subprocess.run([sys.executable, "-c", _COMPLETE_OS_PATH, cache], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert out.stdout.split() == ["True", "True"], out.stderr
    assert entry.stat().st_mtime_ns == before  # loaded, not parsed and saved again


def test_parse_ahead_stops_at_its_budget_and_ignores_names_that_are_not_modules(tmp_path):
    from hapa_lsp import jedi_worker

    jedi_worker.use_own_cache(str(tmp_path / "jedi"))
    try:
        state = jedi_worker.Jedi()
        assert state.parse_ahead(["no_such_module_here", "os path", ""], 30.0) >= 1  # then the prewarm's files
        assert jedi_worker.Jedi().parse_ahead(["email"], 0.0) == 0
    finally:
        jedi_worker.use_own_cache()


def test_the_worker_collects_cyclic_garbage_between_jobs_but_not_while_a_request_waits():
    """The worker runs CPython's cyclic collector itself (``GC_THRESHOLD``): a job's cycles (parse trees point to
    their parents) are freed once it has answered, unless the next request is already in the pipe."""
    import gc
    import weakref

    from hapa_lsp import jedi_worker

    class Node:
        pass

    def garbage() -> weakref.ref:
        first = None
        for _ in range(jedi_worker.GC_IDLE_AFTER + 1000):
            n = Node()
            n.me = n  # a cycle: only the cyclic collector frees it
            first = first or n
        return weakref.ref(first)

    r, w = os.pipe()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with os.fdopen(r, "rb", buffering=0) as inp:
            os.write(w, b"x")  # a request waits: no collection now
            ref = garbage()
            assert jedi_worker._collect_if_idle(inp) is False and ref() is not None
            inp.read(1)  # read: the pipe is empty again
            assert jedi_worker._collect_if_idle(inp) is True and ref() is None
            assert jedi_worker._collect_if_idle(inp) is False  # nothing due
    finally:
        os.close(w)
        if was_enabled:
            gc.enable()


def test_serving_with_a_managed_collector_answers_every_job_and_collects_after_each(monkeypatch):
    import gc
    import io
    import pickle

    from hapa_lsp import jedi_worker

    collected = []
    monkeypatch.setattr(jedi_worker, "GC_IDLE_AFTER", 0)
    monkeypatch.setattr(jedi_worker.gc, "collect", lambda *a: collected.append(a) or 0)
    frames = b"".join(jedi_worker._HEAD.pack(len(d)) + d for d in (
        pickle.dumps(("complete", ("import os\nos.pa", "", None, 1, 5, 5))), pickle.dumps(("no such op", ()))))
    out = io.BytesIO()
    try:
        jedi_worker.serve(io.BytesIO(frames), out, manage_gc=True)
    finally:
        gc.unfreeze()
    data, replies = out.getvalue(), []
    while data:
        n = jedi_worker._HEAD.unpack(data[:4])[0]
        replies.append(pickle.loads(data[4:4 + n]))
        data = data[4 + n:]
    assert [ok for ok, *_ in replies] == [True, False]
    assert "path" in [name for name, *_ in replies[0][1]]
    assert len(collected) == 2  # after each answer (no pipe to wait on here)
