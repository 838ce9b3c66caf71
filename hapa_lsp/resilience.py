"""Retries with jittered backoff (tenacity) and a per-model circuit breaker, around any Backend.

``ResilientBackend`` wraps the backend the engine uses. Generations (chat) are retried on transient
failures (connect errors, timeouts, 5xx, 429 with a Retry-After we are willing to wait for) but only
before the first text arrived: a retry after partial output would repeat text. Inline completions
(FIM) are never retried, a newer keystroke makes them stale long before a backoff ends. After
``breaker_failures`` failures in a row a model is marked down: calls fail at once for
``breaker_cooldown`` seconds, then one call probes it and a success closes the circuit again.
A 429 with Retry-After holds every call to that model until the time has passed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from hapa_lsp import errors
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.backends import Backend, Usage
    from hapa_lsp.config import ResilienceSettings
    from hapa_lsp.prompts import ChatMessage, FimPrompt

#: Failures that say nothing about our request and may pass: retried, and counted by the breaker.
RETRYABLE = frozenset({"E5001", "E5005", "E5007", "E5009"})
#: Failures that count towards marking a model down (a broken stream is the model server's fault too).
BREAKING = frozenset({"E5001", "E5005", "E5008", "E5009"})

Emit = Callable[..., None]


_IMPORT_LOCK = threading.Lock()


def load_tenacity() -> Any:
    """tenacity, imported once under a lock (the startup warm-up imports it in a worker thread)."""
    with _IMPORT_LOCK:
        import tenacity  # deferred: every import goes through this lock (the warm-up thread imports it)

        return tenacity


@dataclass(slots=True)
class _ModelState:
    failures: int = 0
    open_until: float = 0.0  # circuit open until this monotonic time (0: closed)
    hold_until: float = 0.0  # Retry-After: no call before this monotonic time
    probing: bool = False
    last_error: errors.HapaError | None = None
    hold_error: errors.HapaError | None = None


class CircuitBreaker:
    """Per-model failure counting; ``before`` raises at once while a model is marked down or on hold."""

    def __init__(self, settings: Callable[[], ResilienceSettings], emit: Emit):
        self._settings = settings
        self._emit = emit
        self._models: dict[str, _ModelState] = {}

    def before(self, model: str) -> None:
        """Raise the fast failure when ``model`` must not be called now; else let the call through."""
        m = self._models.get(model)
        if m is None:
            return
        now = time.monotonic()
        if m.hold_until > now and m.hold_error is not None:
            raise _fast(m.hold_error, model, f"the model server asked to wait; {model} is called again in "
                        f"{_secs(m.hold_until - now)}", m.hold_until - now)
        if not m.open_until:
            return
        if now < m.open_until or m.probing:
            wait = max(0.0, m.open_until - now)
            assert m.last_error is not None
            raise _fast(m.last_error, model, f"{model} is marked down after {m.failures} failures in a row; "
                        f"it is tried again in {_secs(wait)}", wait)
        m.probing = True  # cool-down over: this call is the probe, the others keep failing fast

    def success(self, model: str) -> None:
        """A call reached the model: close the circuit."""
        m = self._models.get(model)
        if m is None:
            return
        was_open = bool(m.open_until)
        self._models.pop(model, None)
        if was_open:
            self._emit("circuit", model=model, state="closed", code=None, retryable=True, message="")

    def aborted(self, model: str) -> None:
        """A call was cancelled before it could tell anything: a probe slot is given back."""
        m = self._models.get(model)
        if m is not None:
            m.probing = False

    def failure(self, model: str, err: errors.HapaError) -> None:
        """A call failed with ``err``; open the circuit when that makes enough failures in a row."""
        if err.fast:
            return
        m = self._models.setdefault(model, _ModelState())
        now = time.monotonic()
        if err.code == "E5007" and err.retry_after:
            m.hold_until = now + err.retry_after
            m.hold_error = err
        if err.code not in BREAKING:
            m.probing = False
            return
        m.failures += 1
        m.last_error = err
        s = self._settings()
        if m.probing or (not m.open_until and m.failures >= s.breaker_failures):
            first = not m.open_until
            m.open_until = now + s.breaker_cooldown
            m.probing = False
            if first:
                self._emit("circuit", model=model, state="open", code=err.code, retryable=err.retryable,
                           message=f"{model} is marked down after {m.failures} failures in a row "
                                   f"({err.code} {err.spec.title}); it is tried again in "
                                   f"{_secs(s.breaker_cooldown)}", incident_id=err.incident_id)

    def reset(self) -> None:
        """Forget every model's state: the backend changed (another endpoint, dialect or key), so failures and
        Retry-After holds of the old one say nothing about it. Open circuits are reported closed."""
        models, self._models = self._models, {}
        for name, m in models.items():
            if m.open_until:
                self._emit("circuit", model=name, state="closed", code=None, retryable=True, message="")

    def is_open(self, model: str) -> bool:
        """Whether ``model`` is marked down right now."""
        m = self._models.get(model)
        return bool(m and m.open_until)

    def snapshot(self) -> dict[str, Any]:
        """Models with failures or an open circuit, for health and the dashboard."""
        now = time.monotonic()
        return {name: {"state": "open" if m.open_until else "closed", "failures": m.failures,
                       "retry_in_seconds": round(max(0.0, m.open_until - now), 1) if m.open_until else 0.0,
                       "last_code": m.last_error.code if m.last_error else None}
                for name, m in self._models.items()}


def _secs(s: float) -> str:
    return f"{max(1, round(s))} s"


def _fast(template: errors.HapaError, model: str, detail: str, wait: float) -> errors.HapaError:
    """A failure without calling: same code as what took the model down, and the same incident."""
    return type(template)(detail, retry_after=wait, incident_id=template.incident_id, model=model, fast=True)


class ResilientBackend:
    """A Backend with retries for generations and the circuit breaker for every call."""

    def __init__(self, inner: Backend, breaker: CircuitBreaker, settings: Callable[[], ResilienceSettings],
                 emit: Emit):
        self.inner = inner
        self.breaker = breaker
        self._settings = settings
        self._emit = emit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # kind, base, settings, probe, ...

    def stream_fim(self, prompt: FimPrompt, usage: Usage, timeout: float | None = None) -> AsyncIterator[str]:
        """The inner FIM stream under the breaker; never retried."""
        return self._guarded(lambda: self.inner.stream_fim(prompt, usage, timeout), prompt.model, retry=False)

    def stream_chat(self, messages: list[ChatMessage], *, model: str, max_tokens: int, temperature: float,
                    usage: Usage, stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """The inner chat stream under the breaker, retried on transient failures before the first text."""
        return self._guarded(lambda: self.inner.stream_chat(messages, model=model, max_tokens=max_tokens,
                                                            temperature=temperature, usage=usage, stop=stop,
                                                            timeout=timeout), model, retry=True)

    async def _guarded(self, make: Callable[[], AsyncIterator[str]], model: str, *, retry: bool
                       ) -> AsyncIterator[str]:
        gen, first = await self._open(make, model, retry)
        try:
            if first is None:
                return
            yield first
            async for delta in gen:
                yield delta
        except errors.HapaError as exc:
            self._failed(model, exc)
            raise
        finally:
            await gen.aclose()  # type: ignore[attr-defined]

    def _failed(self, model: str, exc: errors.HapaError) -> None:
        if not exc.model:
            exc.model = model
        self.breaker.failure(model, exc)

    async def _open(self, make: Callable[[], AsyncIterator[str]], model: str, retry: bool
                    ) -> tuple[AsyncIterator[str], str | None]:
        async def attempt() -> tuple[AsyncIterator[str], str | None]:
            self.breaker.before(model)
            gen = make()
            try:
                first = await gen.__anext__()
            except StopAsyncIteration:
                self.breaker.success(model)
                return gen, None
            except BaseException as exc:
                await gen.aclose()  # type: ignore[attr-defined]
                if isinstance(exc, errors.HapaError):
                    self._failed(model, exc)
                elif isinstance(exc, asyncio.CancelledError):
                    self.breaker.aborted(model)
                raise
            self.breaker.success(model)
            return gen, first

        if not retry:
            return await attempt()
        tenacity = load_tenacity()
        s = self._settings()
        # "Full jitter": a random wait up to 0.2 s * 2^attempt, so many clients do not retry in step.
        jitter = tenacity.wait_random_exponential(multiplier=0.2, max=max(0.2, s.retry_max_wait))

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, errors.HapaError) and exc.code == "E5007" and exc.retry_after is not None:
                return exc.retry_after  # the server said when; _transient refused waits we will not make
            return min(jitter(state), s.retry_max_wait)

        def transient(exc: BaseException) -> bool:
            if not isinstance(exc, errors.HapaError) or exc.fast or exc.code not in RETRYABLE:
                return False
            return exc.code != "E5007" or (exc.retry_after or 0.0) <= s.retry_max_wait

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            code = getattr(exc, "code", None)
            wait_s = state.next_action.sleep if state.next_action else 0.0
            self._emit("retry", model=model, code=code, attempt=state.attempt_number, wait=wait_s)
            get_logger().info("retrying model call", model=model, code=code, attempt=state.attempt_number,
                              wait_s=round(wait_s, 3))

        retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(s.retries), wait=wait,
                                          retry=tenacity.retry_if_exception(transient), reraise=True,
                                          before_sleep=before_sleep)
        return await retrying(attempt)
