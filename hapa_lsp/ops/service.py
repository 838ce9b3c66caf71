"""The operations state of one server: metrics wiring, the command rate-limit gate, incident pruning, the sidecar,
and the data the ops commands and the sidecar's endpoints answer with.

::

    hapa_lsp/ops/
      service.py     Ops: built by HapaServer; subscribes to requests (protocol), model calls (upstream),
                     incidents and rate limits; starts the sidecar and the pruning after ``initialized``
      sidecar.py     the loopback HTTP server: /metrics, /health, /errors/*, /analytics, the dashboard
      telemetry.py   the Prometheus registry and the performance analytics
      incidents.py   the persistent incident log (over store.py) and its dashboard / patterns queries
      ratelimit.py   per-feature limits (hapa.rateLimits)

The ops commands themselves (``hapa.health``, ``hapa.cache.clear``, ...) are handlers in ``features/ops.py``.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from hapa_lsp import __version__, errors
from hapa_lsp.log import get_logger
from hapa_lsp.ops.incidents import iso

if TYPE_CHECKING:
    from hapa_lsp.ops.sidecar import Sidecar
    from hapa_lsp.ops.telemetry import Telemetry
    from hapa_lsp.server import HapaServer

CACHE_TYPES = {"code_generation": "code_generation", "completions": "completions",
               "user_profiles": "user_profiles", "all": None}
PRUNE_EVERY = 6 * 3600.0


class Ops:
    """The operations state of one server, shared by the sidecar and the commands."""

    def __init__(self, ls: HapaServer):
        self.ls = ls
        self._telemetry: Telemetry | None = None
        self.metrics_on = False
        self.sidecar: Sidecar | None = None
        self._hooked: Any = None
        self._sidecar_lock: asyncio.Lock | None = None
        self._prune_task: asyncio.Task | None = None
        self._refused_reported: str | None = None

    @property
    def telemetry(self) -> Telemetry:
        """The metrics registry and analytics (all zero while metrics are off)."""
        if self._telemetry is None:
            # deferred: telemetry imports prometheus_client, not imported before initialize (tests/unit/test_startup.py)
            from hapa_lsp.ops.telemetry import Telemetry

            self._telemetry = Telemetry()
        return self._telemetry

    # ---- wiring ---------------------------------------------------------------------------------------------
    def attach(self) -> None:
        """Subscribe to requests, engine events, incidents and rate limits (idempotent)."""
        ls = self.ls
        self.metrics_on = ls.settings.sidecar.metrics
        if self._on_request not in ls.request_observers:
            ls.request_observers.append(self._on_request)
        if ls.request_gate is None:
            ls.request_gate = self._gate
        if self._on_incident not in ls.incident_log.observers:
            ls.incident_log.observers.append(self._on_incident)
        if self._on_rate_limited not in ls.rate_limiter.observers:
            ls.rate_limiter.observers.append(self._on_rate_limited)
        upstream = ls.upstream
        if self._hooked is not upstream:  # the model calls' events, from the typing path and the generations
            upstream.observers.append(self._on_event)
            self._hooked = upstream

    def _on_request(self, label: str, seconds: float, status: str) -> None:
        if self.metrics_on:
            self.telemetry.on_request(label, seconds, status)
        if status == "ok":
            self.ls.incident_log.succeeded(label)

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        if self.metrics_on:
            self.telemetry.on_event(event, fields)
        if event == "upstream" and fields.get("outcome") == "ok":
            self.ls.incident_log.succeeded(f"upstream:{fields.get('model', '')}")
        elif event == "circuit":
            get_logger().warning("model circuit", model=fields.get("model"), state=fields.get("state"),
                                 code=fields.get("code"))
            if fields.get("state") == "open":
                # Said once, with the state and code the following fast failures carry, so they stay quiet.
                self.ls.set_status("warning" if fields.get("retryable") else "error", str(fields.get("message")),
                                   fields.get("code"), fields.get("incident_id"), force=True)
        elif event == "shared_cache":
            err = fields.get("error")
            if isinstance(err, errors.HapaError):
                get_logger().error("shared cache bypassed", code=err.code, detail=err.detail,
                                   incident_id=err.incident_id)
                self.ls.record_incident(err, "cache")

    def _on_incident(self, code: str) -> None:
        if self.metrics_on:
            self.telemetry.on_incident(code)

    def _on_rate_limited(self, feature: str, quiet: bool) -> None:
        if self.metrics_on:
            self.telemetry.on_rate_limited(feature, quiet)

    def _gate(self, label: str, params: Any) -> errors.HapaError | None:
        """Rate limits for every registered command (the LSP methods check their own)."""
        ls = self.ls
        if label not in ls.protocol.fm.commands:
            return None
        features = [label]
        args = getattr(params, "arguments", None) or []
        stream_rule = f"{label}.stream"
        if (stream_rule in ls.rate_limiter.rule_names() and args and isinstance(args[0], dict)
                and args[0].get("stream", True) is not False):
            features.append(stream_rule)
        try:
            for feature in features:
                ls.rate_limiter.check(feature)
        except errors.HapaError as err:
            ls.record_incident(err, label)
            return err
        return None

    async def start(self, ls: HapaServer) -> None:
        """After ``initialized``: wire up, prune old incidents, start the sidecar."""
        # Importing these takes ~0.7 s on a loaded machine; in a thread, so no keystroke waits for it.
        built = await asyncio.get_running_loop().run_in_executor(None, _warm_imports, ls.settings)
        if self._telemetry is None:  # built in the thread: the first keystroke's metrics need no set-up
            self._telemetry = built
        self.attach()
        self._prune_task = asyncio.ensure_future(self._prune_loop())
        ls.settings_observers.append(self._settings_changed)
        await self._start_sidecar()

    def _settings_changed(self, old: Any, new: Any) -> None:
        # The sidecar started with the settings known at `initialized`; the client's configuration may move it.
        if old.sidecar != new.sidecar:
            self.ls.keep(asyncio.ensure_future(self._start_sidecar()))

    async def _start_sidecar(self) -> None:
        """(Re)start the sidecar with the current settings (one start at a time)."""
        if self._sidecar_lock is None:
            self._sidecar_lock = asyncio.Lock()
        async with self._sidecar_lock:
            if self.sidecar is not None:
                await self.sidecar.stop()
                self.sidecar = None
            await self._start_sidecar_now()

    async def _start_sidecar_now(self) -> None:
        ls = self.ls
        s = ls.settings.sidecar
        if not s.enabled:
            return
        # deferred: not imported before initialize (tests/unit/test_startup.py); aiohttp only when the sidecar is on
        from hapa_lsp.ops.sidecar import Sidecar

        self.sidecar = Sidecar(self)
        url = await self.sidecar.start()
        refused = self.sidecar.refused
        if url:
            self._refused_reported = None
            ls.window_log_message(types.LogMessageParams(types.MessageType.Info, f"hapa-lsp sidecar: {url}"))
        elif refused and refused != self._refused_reported:  # once, not again on each settings change
            self._refused_reported = refused
            err = errors.PermissionDenied(refused, field="hapa.sidecar.host")
            ls.record_incident(err, "sidecar")
            ls.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"hapa-lsp: {err.message}"))

    async def _prune_loop(self) -> None:
        while True:
            try:
                n = await self.ls.incident_log.run(self.ls.incident_log.prune)
                get_logger().info("incidents pruned", deleted=n,
                                  retention_days=self.ls.settings.incidents.retention_days)
            except errors.HapaError as exc:
                get_logger().error("incident pruning failed", code=exc.code, detail=exc.detail)
            await asyncio.sleep(PRUNE_EVERY)

    async def stop(self) -> None:
        """Stop the sidecar and the pruning."""
        if self._prune_task is not None:
            self._prune_task.cancel()
        if self.sidecar is not None:
            await self.sidecar.stop()

    # ---- the data -------------------------------------------------------------------------------------------
    def metrics_text(self) -> bytes:
        """/metrics: Prometheus text (empty while metrics are off)."""
        if not self.metrics_on:
            return b""
        parts = self.ls.components
        cache = parts["upstream"].cache_if_built if parts["upstream"] is not None else None
        status = getattr(cache, "status", None)
        if status is not None:
            self.telemetry.redis_up.set(1 if status == "ok" else 0)
        self.telemetry.sync_jedi(parts["jedi"])
        return self.telemetry.exposition()

    async def health(self) -> dict[str, Any]:
        """status, version, uptime, services{database, redis, ai_model}, last_cleanup (+ sidecar, models)."""
        ls = self.ls
        log = ls.incident_log
        try:
            last_cleanup = await log.run(log.last_cleanup)
            database = "ok"
        except errors.HapaError as exc:
            last_cleanup, database = None, f"error ({exc.code})"
        redis = "disabled"
        if ls.settings.redis.url:
            cache = ls.upstream.cache
            ping = getattr(cache, "ping", None)
            redis = await ping() if ping is not None else "disabled"
        upstream = ls.components["upstream"]
        models = upstream.breaker.snapshot() if upstream is not None else {}
        last = self.telemetry.last_upstream if self._telemetry is not None else {}
        if any(m["state"] == "open" for m in models.values()):
            ai_model = "down"
        elif last.get("outcome") == "error":
            ai_model = f"error ({last.get('code')})"
        elif last.get("outcome") == "ok":
            ai_model = "ok"
        else:
            ai_model = "unknown"
        status = "healthy"
        if redis == "down" or ai_model not in ("ok", "unknown"):
            status = "degraded"
        if database != "ok":
            status = "unhealthy"
        return {
            "status": status,
            "version": __version__,
            "uptime": round(time.time() - ls.started, 3),
            "services": {"database": database, "redis": redis, "ai_model": ai_model},
            "last_cleanup": iso(last_cleanup),
            "models": models,
            "sidecar": self.sidecar.url if self.sidecar is not None else None,
        }

    async def errors_dashboard(self) -> dict[str, Any]:
        """The error dashboard (from the store)."""
        log = self.ls.incident_log
        return await log.run(log.dashboard, self.telemetry.error_rate)

    async def errors_patterns(self, period: str) -> dict[str, Any]:
        """Error patterns over ``period``."""
        log = self.ls.incident_log
        return await log.run(log.patterns, period)

    async def incident(self, incident_id: str) -> dict[str, Any]:
        """One stored incident."""
        log = self.ls.incident_log
        return await log.run(log.get, incident_id)

    def performance(self) -> dict[str, Any]:
        """Performance analytics."""
        out = self.telemetry.performance()
        out["metrics_enabled"] = self.metrics_on
        out["rate_limited"] = dict(self.ls.rate_limiter.limited)
        return out


def _warm_imports(settings: Any) -> Telemetry:
    # deferred on purpose: this warm-up thread imports, after initialize, what start-up must not
    # (tests/unit/test_startup.py).
    # The lazily imported ones go through their modules' loaders, which hold a lock: a keystroke that needs
    # one while this thread imports it waits for the import instead of seeing a half-initialised package.
    from hapa_lsp.cache_redis import load_redis
    from hapa_lsp.ops.ratelimit import load_limits
    from hapa_lsp.resilience import load_tenacity

    load_limits()
    load_tenacity()
    if settings.redis.url:
        load_redis()
    if settings.sidecar.enabled:
        importlib.import_module("aiohttp.web")
    from hapa_lsp.ops.telemetry import Telemetry  # prometheus_client

    return Telemetry()


