"""Retries, Retry-After and the circuit breaker around the real backends, over HTTP to the fake model server."""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import pytest
import pytest_asyncio

from hapa_lsp import errors
from hapa_lsp.backends import Usage, create_backend, make_client
from hapa_lsp.config import BackendSettings, ResilienceSettings
from hapa_lsp.prompts import ChatMessage, build_fim_prompt
from hapa_lsp.resilience import CircuitBreaker, ResilientBackend
from tests.fakes.model_server import FakeModelServer

MODEL = "qwen2.5-coder:1.5b-base"


@pytest_asyncio.fixture
async def fake():
    server = FakeModelServer(model=MODEL)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Rig:
    """A ResilientBackend over the real Ollama or OpenAI backend, recording emitted events."""

    def __init__(self, fake: FakeModelServer, kind: str = "ollama", **resilience: Any):
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.settings = ResilienceSettings(**{"retries": 3, "retry_max_wait": 0.05, "breaker_failures": 3,
                                              "breaker_cooldown": 0.4, **resilience})
        b = BackendSettings(kind=kind, endpoint=fake.url, connect_timeout=0.5)
        self.client = make_client(b)
        emit = lambda event, **f: self.events.append((event, f))  # noqa: E731
        self.breaker = CircuitBreaker(lambda: self.settings, emit)
        self.backend = ResilientBackend(create_backend(b, self.client), self.breaker, lambda: self.settings, emit)

    async def chat(self) -> str:
        async with aclosing(self.backend.stream_chat([ChatMessage("user", "write add")], model="chat-model",
                                                     max_tokens=64, temperature=0.0, usage=Usage())) as s:
            return "".join([d async for d in s])

    async def fim(self) -> str:
        prompt = build_fim_prompt(model=MODEL, family_override="auto", prefix="def add(a, b):\n    ",
                                  suffix="\n", language="python", path="/w/a.py", max_tokens=32, temperature=0.0,
                                  single_line=False)
        async with aclosing(self.backend.stream_fim(prompt, Usage(), timeout=5)) as s:
            return "".join([d async for d in s])

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_generation_retried_after_transient_failures_then_succeeds(fake, kind):
    rig = Rig(fake, kind)
    try:
        fake.fail_next("500", times=2)
        fake.queue("return a + b")
        assert await rig.chat() == "return a + b"
        assert fake.count() == 3
        assert [(r["code"], r["attempt"]) for r in rig.named("retry")] == [("E5009", 1), ("E5009", 2)]
        assert not rig.breaker.is_open("chat-model")
    finally:
        await rig.client.aclose()


async def test_generation_gives_up_after_the_configured_attempts(fake):
    rig = Rig(fake, retries=2)
    try:
        fake.fault = "500"
        with pytest.raises(errors.UpstreamServerError) as info:
            await rig.chat()
        assert fake.count() == 2
        assert getattr(info.value, "model", None) == "chat-model"
    finally:
        await rig.client.aclose()


async def test_timeouts_of_generations_are_retried(fake):
    rig = Rig(fake)
    try:
        fake.fail_next("timeout")
        fake.queue("ok()")
        b = rig.backend
        async with aclosing(b.stream_chat([ChatMessage("user", "x")], model="chat-model", max_tokens=8,
                                          temperature=0.0, usage=Usage(), timeout=0.3)) as s:
            assert "".join([d async for d in s]) == "ok()"
        assert [r["code"] for r in rig.named("retry")] == ["E5001"]
    finally:
        await rig.client.aclose()


async def test_inline_completions_are_never_retried(fake):
    rig = Rig(fake)
    try:
        fake.fail_next("500")
        with pytest.raises(errors.UpstreamServerError):
            await rig.fim()
        assert fake.count() == 1 and rig.named("retry") == []
    finally:
        await rig.client.aclose()


async def test_429_retry_after_is_honoured(fake):
    rig = Rig(fake, retry_max_wait=2.0)
    try:
        fake.retry_after = 1
        fake.fail_next("429")
        fake.queue("done")
        t0 = time.monotonic()
        assert await rig.chat() == "done"
        assert time.monotonic() - t0 >= 0.95  # waited as long as the server asked, not the short backoff
        assert rig.named("retry")[0]["wait"] == pytest.approx(1.0)
    finally:
        await rig.client.aclose()


async def test_429_holds_inline_calls_until_retry_after_without_calling(fake):
    rig = Rig(fake)
    try:
        fake.retry_after = 1
        fake.fail_next("429")
        with pytest.raises(errors.UpstreamRateLimited):
            await rig.fim()
        with pytest.raises(errors.UpstreamRateLimited) as info:
            await rig.fim()
        assert fake.count() == 1  # the second call never reached the server
        assert 0 < info.value.retry_after <= 1
        time.sleep(info.value.retry_after + 0.05)
        fake.queue("return a + b")
        assert await rig.fim() == "return a + b"
    finally:
        await rig.client.aclose()


async def test_retry_after_longer_than_we_wait_is_not_retried(fake):
    rig = Rig(fake, retry_max_wait=0.5)
    try:
        fake.retry_after = 30
        fake.fail_next("429")
        with pytest.raises(errors.UpstreamRateLimited) as info:
            await rig.chat()
        assert fake.count() == 1 and info.value.retry_after == pytest.approx(30, abs=1)
    finally:
        await rig.client.aclose()


async def test_circuit_opens_after_repeated_failures_then_recovers_by_itself(fake):
    rig = Rig(fake)
    try:
        fake.fault = "500"
        for _ in range(3):
            with pytest.raises(errors.UpstreamServerError):
                await rig.fim()
        assert fake.count() == 3
        assert rig.breaker.is_open(MODEL)
        opened = rig.named("circuit")
        assert [c["state"] for c in opened] == ["open"] and opened[0]["code"] == "E5009"
        assert "marked down after 3 failures" in opened[0]["message"]
        # While open: no calls reach the model, and the failure says when it is tried again.
        for _ in range(5):
            with pytest.raises(errors.UpstreamServerError) as info:
                await rig.fim()
        assert fake.count() == 3
        assert "marked down" in info.value.detail and 0 < info.value.retry_after <= 0.4
        assert len(rig.named("circuit")) == 1  # said once
        # The model comes back; after the cool-down one call probes it and closes the circuit.
        fake.restore()
        fake.queue("return a + b")
        time.sleep(0.45)
        assert await rig.fim() == "return a + b"
        assert not rig.breaker.is_open(MODEL)
        assert [c["state"] for c in rig.named("circuit")] == ["open", "closed"]
    finally:
        await rig.client.aclose()


async def test_failed_probe_reopens_without_announcing_again(fake):
    rig = Rig(fake, breaker_failures=1, breaker_cooldown=0.2)
    try:
        fake.fault = "500"
        with pytest.raises(errors.UpstreamServerError):
            await rig.fim()
        time.sleep(0.25)
        with pytest.raises(errors.UpstreamServerError):
            await rig.fim()  # the probe, which fails
        assert fake.count() == 2
        with pytest.raises(errors.UpstreamServerError):
            await rig.fim()  # open again: fails fast
        assert fake.count() == 2
        assert [c["state"] for c in rig.named("circuit")] == ["open"]
    finally:
        await rig.client.aclose()


async def test_refused_connections_count_towards_the_breaker(fake):
    rig = Rig(fake, breaker_failures=2)
    try:
        fake.fault = "refuse"
        for _ in range(2):
            with pytest.raises(errors.ModelUnreachable):
                await rig.fim()
        assert rig.breaker.is_open(MODEL)
        assert rig.breaker.snapshot()[MODEL]["state"] == "open"
        assert rig.breaker.snapshot()[MODEL]["last_code"] == "E5005"
    finally:
        await rig.client.aclose()
