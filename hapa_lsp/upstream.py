"""The model server as both paths use it: one pooled client, the resilient backend, the response cache, and the
accounting of every call.

::

    engine.py (typing path) ──┐                      ┌── backends/ (ollama, openai): the HTTP wire formats
                              ├── Upstream ──────────┼── resilience.py: retries + one circuit breaker per server
    generation.py (chat) ─────┘   counters, events   └── cache.py / cache_redis.py: the response cache (+ Redis)

``Upstream.call`` is the one place an upstream call is counted (calls, aborted, errors, tokens) and reported to
observers as an ``upstream`` event; the engine and the generations only say which model and kind. Observers
(``hapa_lsp.ops.service``: metrics, incident resolution) subscribe to ``observers``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.backends import Usage, create_backend, make_client
from hapa_lsp.cache_redis import TieredCache, make_cache
from hapa_lsp.log import get_logger, public_url
from hapa_lsp.resilience import CircuitBreaker, ResilientBackend

if TYPE_CHECKING:
    import httpx

    from hapa_lsp.backends import Backend
    from hapa_lsp.cache import ResponseCache
    from hapa_lsp.config import Settings

#: Every counter ``stats()`` reports, zero until something happens.
COUNTERS = ("requests", "upstream_calls", "upstream_aborted", "cache_hits", "typed_through", "superseded", "errors",
            "empty", "tokens")


class Upstream:
    """The backend, cache and accounting one server shares between the typing path and the generations.

    ``backend`` may be given (a test's in-process fake); otherwise it is built from the settings on first use
    over the pooled client, wrapped in retries and the circuit breaker.
    """

    def __init__(self, settings: Settings, *, backend: Backend | None = None):
        self.settings = settings
        self._client: httpx.AsyncClient | None = None
        self._given_backend = backend
        self._backend: Backend | None = None
        self._cache: ResponseCache | None = None
        #: Subscribers to events (``upstream``, ``cache``, ``suggestion``, ``superseded``, ``circuit``, ``retry``,
        #: ``shared_cache``); see ``emit``.
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: One breaker per server, kept across backend rebuilds (settings changes).
        self.breaker = CircuitBreaker(lambda: self.settings.resilience, self.emit)
        self._background: set[asyncio.Task] = set()

    # ---- the parts --------------------------------------------------------------------------------------------
    @property
    def cache(self) -> ResponseCache:
        """The response cache (created on first use), with the shared Redis level when configured."""
        if self._cache is None:
            self._cache = make_cache(self.settings, on_error=lambda e: self.emit("shared_cache", error=e))
        return self._cache

    @property
    def cache_if_built(self) -> ResponseCache | None:
        """The response cache if anything used it yet (status and shutdown must not create one)."""
        return self._cache

    @property
    def backend(self) -> Backend:
        """The model backend (created on first use)."""
        if self._backend is None:
            if self._given_backend is not None:
                self._backend = self._given_backend
            else:
                if self._client is None:
                    self._client = make_client(self.settings.backend)
                inner = create_backend(self.settings.backend, self._client)
                self._backend = ResilientBackend(inner, self.breaker, lambda: self.settings.resilience, self.emit)
        return self._backend

    def prepare(self) -> None:
        """Build the pooled HTTP client in a worker thread (its SSL context costs ~60 ms), so that the first
        keystroke's model call does not."""
        if self._client is None and self._given_backend is None:
            client = make_client(self.settings.backend)
            if self._client is None:  # the event loop did not build one meanwhile
                self._client = client
            try:
                # One request built and dropped (nothing is sent): httpx compiles its URL and header handling
                # on first use, here instead of on the first keystroke.
                client.build_request("POST", public_url(self.settings.backend.endpoint).rstrip("/") + "/v1",
                                     json={"prompt": ""})
            except Exception:  # noqa: BLE001 - a bad endpoint is reported by the first real call
                pass

    def update_settings(self, settings: Settings) -> None:
        """Apply new settings; the client, backend and cache are rebuilt only when what they depend on changed."""
        old = self.settings
        self.settings = settings
        if old.backend != settings.backend:
            self._backend = None
            b_old, b_new = old.backend, settings.backend
            if (b_old.kind, b_old.endpoint, b_old.api_key) != (b_new.kind, b_new.endpoint, b_new.api_key):
                self.breaker.reset()  # a new server: its models start with a clean record
            if (b_old.request_timeout, b_old.connect_timeout, b_old.max_connections) != (
                    b_new.request_timeout, b_new.connect_timeout, b_new.max_connections) and self._client:
                # Streams in flight keep the old client: it is closed once they can no longer be running.
                client, self._client = self._client, None
                self._keep(self._close_later(client, b_old.request_timeout + 5.0))
        if (old.cache != settings.cache or old.redis != settings.redis) and self._cache is not None:
            cache, self._cache = self._cache, None
            if hasattr(cache, "aclose"):
                self._keep(cache.aclose())  # the replaced shared level's Redis pool

    @staticmethod
    async def _close_later(client: Any, after: float) -> None:
        await asyncio.sleep(after)
        await client.aclose()

    def _keep(self, coro: Any) -> None:
        try:
            task = asyncio.ensure_future(coro)
        except RuntimeError:  # no running loop (a settings change outside the server): nothing to close on
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Close the pooled HTTP client and the shared cache's connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        cache = self._cache
        if cache is not None and hasattr(cache, "aclose"):
            await cache.aclose()

    # ---- accounting -------------------------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        """Tell observers about an event; an observer that fails never breaks a request.

        Events: ``suggestion`` (source, model, chars, timings), ``cache`` (hit: bool, region),
        ``upstream`` (model, kind, ms, prompt_tokens, completion_tokens, outcome: ok/aborted/error,
        code), ``superseded``, and the breaker's ``circuit`` / ``retry``.
        """
        for obs in self.observers:
            try:
                obs(event, fields)
            except Exception:  # noqa: BLE001 - telemetry must not cost the user a suggestion
                get_logger().debug("event observer failed", event=event, exc_info=True)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + n

    @asynccontextmanager
    async def call(self, model: str, kind: str) -> AsyncIterator[Usage]:
        """Account for one upstream call made inside the block (``kind``: completion or generation): counted,
        its tokens added, an ``upstream`` event with its outcome (ok, aborted, error + code) and duration."""
        usage = Usage()
        outcome, code = "error", None
        self.count("upstream_calls")
        t0 = time.perf_counter()
        try:
            yield usage
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "aborted"
            self.count("upstream_aborted")
            raise
        except errors.HapaError as exc:
            code = exc.code
            self.count("errors")
            raise
        finally:
            completion = usage.completion_tokens or usage.chunks
            self.count("tokens", usage.prompt_tokens + completion)
            self.emit("upstream", model=model, kind=kind, ms=(time.perf_counter() - t0) * 1000,
                      prompt_tokens=usage.prompt_tokens, completion_tokens=completion, outcome=outcome, code=code)

    async def clear_cache(self, region: str | None) -> tuple[int, int]:
        """Empty ``region`` (None: all) of the cache; (entries dropped in memory, in the shared level)."""
        cache = self.cache
        if isinstance(cache, TieredCache):
            return await cache.aclear(region)
        return cache.clear(region), 0

    def stats(self) -> dict[str, Any]:
        """The counters, and the cache's when it exists."""
        out: dict[str, Any] = dict(self.counters)
        if self._cache is not None:
            out["cache"] = self._cache.stats()
        return out
