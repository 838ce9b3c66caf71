"""The typing path's Engine in-process, over a fake backend object (no HTTP, no subprocess): supersede, join,
cancellation, debounce, the cache and type-through, and the upstream accounting it shares with the generations."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import attrs
import pytest

from hapa_lsp import errors
from hapa_lsp.config import Settings
from hapa_lsp.engine import Engine
from hapa_lsp.upstream import Upstream


class FakeBackend:
    """A Backend object: ``stream_fim`` yields the scripted answer after ``delay`` seconds, and records what
    happened to each call (finished, closed early by the engine, cancelled)."""

    def __init__(self, answer: str = "return a + b\n", delay: float = 0.0, fail: errors.HapaError | None = None,
                 first_delay: float | None = None):
        self.answer = answer
        self.delay = delay
        self.first_delay = first_delay  # the first call's delay, when it differs
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    async def stream_fim(self, prompt: Any, usage: Any, timeout: float | None = None):
        call = {"prefix": prompt.prefix, "outcome": "running"}
        self.calls.append(call)
        try:
            first = len(self.calls) == 1 and self.first_delay is not None
            await asyncio.sleep(self.first_delay if first else self.delay)
            if self.fail is not None:
                raise self.fail
            usage.prompt_tokens = 10
            for piece in re.findall(r"\S+\s*|\s+", self.answer):
                usage.chunks += 1
                yield piece
            call["outcome"] = "done"
        except asyncio.CancelledError:
            call["outcome"] = "cancelled"
            raise
        except GeneratorExit:
            call["outcome"] = "closed"
            raise


def _settings(**completion: Any) -> Settings:
    s = Settings()
    comp = attrs.evolve(s.completion, debounce_ms=completion.pop("debounce_ms", 0),
                        max_debounce_ms=completion.pop("max_debounce_ms", 0), **completion)
    ctx = attrs.evolve(s.context, facts=False)
    return attrs.evolve(s, completion=comp, context=ctx)


FAILURES: list = []


def _engine(backend: FakeBackend, **completion: Any) -> tuple[Engine, Upstream, list]:
    settings = _settings(**completion)
    upstream = Upstream(settings, backend=backend)
    events: list = []
    upstream.observers.append(lambda event, fields: events.append((event, fields)))
    FAILURES.clear()
    engine = Engine(settings, upstream, notify_failure=lambda e, rid, explicit: FAILURES.append((e, explicit)))
    return engine, upstream, events


TEXT = "def add(a, b):\n    \n"


async def _suggest(engine: Engine, text: str = TEXT, line: int = 1, character: int = 4, **kw: Any):
    return await engine.suggest(uri="file:///t.py", path="/t.py", language="python", text=text, line=line,
                                character=character, invoked=kw.pop("invoked", False), **kw)


async def test_a_suggestion_is_the_models_answer_post_processed_and_counted():
    backend = FakeBackend("return a + b\n")
    engine, upstream, events = _engine(backend)
    sug = await _suggest(engine)
    assert sug is not None and sug.source == "model" and sug.text == "return a + b"
    assert [c["outcome"] for c in backend.calls] == ["done"]
    assert upstream.counters["upstream_calls"] == 1 and upstream.counters["requests"] == 1
    upstream_events = [f for e, f in events if e == "upstream"]
    assert upstream_events and upstream_events[0]["outcome"] == "ok" and upstream_events[0]["kind"] == "completion"
    assert upstream.counters["tokens"] == 10 + upstream_events[0]["completion_tokens"]


async def test_the_same_context_again_is_a_cache_hit_without_a_model_call():
    backend = FakeBackend("return a + b\n")
    engine, upstream, _ = _engine(backend)
    first = await _suggest(engine)
    engine.did_change("file:///t.py")  # a change elsewhere and back: the same text and cursor
    again = await _suggest(engine)
    assert first is not None and again is not None and again.source == "cache" and again.text == first.text
    assert len(backend.calls) == 1 and upstream.counters["cache_hits"] == 1


async def test_typing_the_start_of_the_shown_suggestion_serves_the_rest():
    backend = FakeBackend("return a + b\n")
    engine, upstream, _ = _engine(backend)
    assert (await _suggest(engine)).text == "return a + b"
    engine.did_change("file:///t.py")
    typed = "def add(a, b):\n    ret\n"
    rest = await _suggest(engine, typed, 1, 7)
    assert rest is not None and rest.source == "typed-through" and rest.text == "urn a + b"
    assert len(backend.calls) == 1 and upstream.counters["typed_through"] == 1


async def test_identical_requests_join_one_computation():
    backend = FakeBackend("return a + b\n", delay=0.05)
    engine, upstream, _ = _engine(backend)
    inline, listed = await asyncio.gather(_suggest(engine), _suggest(engine, slot="list"))
    assert inline is not None and listed is not None and inline.text == listed.text
    assert len(backend.calls) == 1 and upstream.counters["joined"] == 1


async def test_a_newer_context_supersedes_the_older_request_and_closes_its_upstream_call():
    # The first call waits long enough that it is surely still waiting on the model on a loaded machine.
    backend = FakeBackend("return a + b\n", delay=0.05, first_delay=30.0)
    engine, upstream, events = _engine(backend)
    old = asyncio.ensure_future(_suggest(engine))
    while not backend.calls:  # the old request is waiting on the model
        await asyncio.sleep(0.01)
    newer = await _suggest(engine, "def add(a, b):\n    r\n", 1, 5)
    assert await old is None  # superseded: no answer, no error
    assert newer is not None
    assert backend.calls[0]["outcome"] == "cancelled" and upstream.counters["superseded"] == 1
    assert upstream.counters["upstream_aborted"] == 1
    assert [f["outcome"] for e, f in events if e == "upstream"][0] == "aborted"


async def test_a_keystroke_cancels_work_for_the_previous_text():
    backend = FakeBackend("x\n", delay=0.2)
    engine, _, _ = _engine(backend)
    pending = asyncio.ensure_future(_suggest(engine))
    await asyncio.sleep(0.05)
    engine.did_change("file:///t.py")
    assert await pending is None
    assert backend.calls[0]["outcome"] == "cancelled"


async def test_the_client_cancelling_the_last_waiter_cancels_the_model_call():
    backend = FakeBackend("x\n", delay=0.5)
    engine, _, _ = _engine(backend)
    request = asyncio.ensure_future(_suggest(engine))
    await asyncio.sleep(0.05)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.sleep(0)
    assert backend.calls[0]["outcome"] == "cancelled"


async def test_a_model_failure_is_reported_once_and_raised_to_the_request():
    backend = FakeBackend(fail=errors.ModelUnreachable("connection refused"))
    engine, upstream, events = _engine(backend)
    with pytest.raises(errors.ModelUnreachable):
        await _suggest(engine, invoked=True)
    assert [(type(e), explicit) for e, explicit in FAILURES] == [(errors.ModelUnreachable, True)]
    assert upstream.counters["errors"] == 1
    assert [f["code"] for e, f in events if e == "upstream"] == ["E5005"]


async def test_the_rate_limit_gate_is_asked_before_each_model_call_only():
    backend = FakeBackend("return a + b\n")
    settings = _settings()
    upstream = Upstream(settings, backend=backend)
    asked: list[bool] = []

    def gate(explicit: bool) -> bool:
        asked.append(explicit)
        return False  # over the limit: the request is dropped quietly

    engine = Engine(settings, upstream, model_gate=gate)
    assert await _suggest(engine) is None
    assert asked == [False] and backend.calls == []


def test_the_debounce_follows_the_typing_rhythm_within_its_bounds():
    engine, _, _ = _engine(FakeBackend(), debounce_ms=40, max_debounce_ms=250)
    uri = "file:///t.py"
    assert engine.debounce_seconds(uri) == pytest.approx(0.040)  # too few keystrokes to know the rhythm
    st = engine._state(uri)
    st.intervals.extend([0.1, 0.1, 0.1])
    assert engine.debounce_seconds(uri) == pytest.approx(0.15)  # 1.5x the median gap
    st.intervals.extend([0.5] * 6)
    assert engine.debounce_seconds(uri) == pytest.approx(0.25)  # capped at max_debounce_ms
    st.intervals.clear()
    st.intervals.extend([0.001] * 5)
    assert engine.debounce_seconds(uri) == pytest.approx(0.040)  # never below debounce_ms


def test_why_a_document_gets_no_suggestions():
    engine, _, _ = _engine(FakeBackend(), languages=("python",))
    assert engine.applies_to("/w/a.py", "python") is None
    assert isinstance(engine.applies_to("/w/a.rs", "rust"), errors.UnsupportedLanguage)
    assert isinstance(engine.applies_to("/w/.env", "python"), errors.FileExcluded)
    off, _, _ = _engine(FakeBackend(), enabled=False)
    assert isinstance(off.applies_to("/w/a.py", "python"), errors.PermissionDenied)


class BusyJedi:
    """A jedi runner whose worker is busy with a job queued before any facts job: none of them starts."""

    starting = warming = False

    def __init__(self) -> None:
        self.submitted = 0

    async def submit(self, prepare: Any, *, timeout: float, still_wanted: Any = None, background: bool = False):
        self.submitted += 1
        await asyncio.Event().wait()


async def test_an_invoked_list_with_its_own_jedi_job_ahead_does_not_hold_the_model_call_for_facts():
    """The completion list queues its jedi items first; facts queued behind them cannot arrive in the time box,
    so the AI item's model call goes at once (the facts job is still queued, for the next request). Without the
    list's own job ahead, the same request waits for facts up to the box."""
    backend = FakeBackend()
    s = _settings()
    s = attrs.evolve(s, context=attrs.evolve(s.context, facts=True, facts_time_budget_ms=5000))
    jedi = BusyJedi()
    engine = Engine(s, Upstream(s, backend=backend), jedi=lambda: jedi)
    text = "import os\n\nos.path.\n"
    sug = await asyncio.wait_for(_suggest(engine, text, 2, 8, invoked=True, slot="list", jedi_ahead=True), 3.0)
    assert sug is not None and sug.text and len(backend.calls) == 1
    assert jedi.submitted == 1  # the facts job was queued all the same

    waiting = asyncio.ensure_future(_suggest(engine, text + "\n", 2, 8, invoked=True, slot="list"))
    done, _ = await asyncio.wait({waiting}, timeout=1.0)
    assert not done and len(backend.calls) == 1  # held for facts: the 5 s box
    waiting.cancel()
