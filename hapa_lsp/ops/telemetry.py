"""Prometheus metrics and request analytics, fed by protocol-level request accounting and engine events.

One ``Telemetry`` per server with its own registry (several servers may share a process in tests).
Label values are bounded: LSP method names, registered command names, model names from settings,
catalog codes; never anything a user typed, and never a secret.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ACCEPT_COMMAND = "hapa.didAcceptCompletion"


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest-rank; 0.0 for none."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


class Telemetry:
    """The metrics registry plus the in-memory figures behind /analytics/performance."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double the scrape size and nobody graphs them
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("hapa_requests", "LSP requests and commands handled, by method and outcome.",
                                ["method", "status"], registry=r)
        self.duration = Histogram("hapa_request_duration_seconds", "Time to answer an LSP request or command.",
                                  ["method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("hapa_errors", "Incidents (E4xxx / E5xxx failures) by catalog code.", ["code"],
                              registry=r)
        self.cache_hits = Counter("hapa_cache_hits", "Suggestion cache hits, by region.", ["region"], registry=r)
        self.cache_misses = Counter("hapa_cache_misses", "Suggestion cache misses, by region.", ["region"],
                                    registry=r)
        self.tokens = Counter("hapa_ai_tokens_used", "Model tokens used, by model and kind (prompt / completion).",
                              ["model", "kind"], registry=r)
        self.upstream = Histogram("hapa_upstream_request_duration_seconds",
                                  "Duration of model server calls, by model, call kind and outcome.",
                                  ["model", "kind", "outcome"], buckets=_UPSTREAM_BUCKETS, registry=r)
        self.shown = Counter("hapa_suggestions_shown", "Suggestions returned to the editor, by source.", ["source"],
                             registry=r)
        self.accepted = Counter("hapa_suggestions_accepted", "Suggestions the user accepted.", registry=r)
        self.superseded = Counter("hapa_requests_superseded", "Suggestion requests made stale by a newer one.",
                                  registry=r)
        self.rate_limited = Counter("hapa_rate_limited", "Calls over their rate limit (action: rejected with "
                                    "E4004, or dropped quietly for inline completions).", ["feature", "action"],
                                    registry=r)
        self.retries = Counter("hapa_upstream_retries", "Model calls retried after a transient failure.",
                               ["model", "code"], registry=r)
        self.circuit = Gauge("hapa_model_circuit_open", "1 while the model is marked down by the circuit breaker.",
                             ["model"], registry=r)
        self.redis_up = Gauge("hapa_redis_up", "1 when the shared Redis cache level is in use, 0 when bypassed.",
                              registry=r)
        self.jedi_rss = Gauge("hapa_jedi_worker_resident_bytes", "Resident memory of the jedi worker process after "
                              "its last job (0 while none runs).", registry=r)
        self.jedi_restarts = Counter("hapa_jedi_worker_restarts", "jedi worker processes replaced, by reason "
                                     "(memory: over hapa.context.jediWorkerMaxMb; failure: died or hung).",
                                     ["reason"], registry=r)
        self.sidecar_refused = Counter("hapa_sidecar_refused", "Sidecar requests refused before any handler ran, by "
                                       "reason (api_key, host, origin, rate_limit); one incident stands for each "
                                       "reason's refusals per minute.", ["reason"], registry=r)
        self._jedi_seen = {"memory": 0, "failure": 0}
        self.started = time.time()
        self._recent: deque[tuple[float, str, float, str]] = deque(maxlen=20_000)
        self.total_requests = 0
        self.failed_requests = 0
        self.upstream_calls = 0
        self.total_tokens = 0
        self.by_model: dict[str, dict[str, int]] = {}
        self.n_shown = 0
        self.n_accepted = 0
        self.n_hits = 0
        self.n_misses = 0
        self.last_upstream: dict[str, Any] = {}

    # ---- inputs -------------------------------------------------------------------------------------------
    def sync_jedi(self, runner: Any) -> None:
        """Copy the jedi worker's state (hapa_lsp.jedi_client.JediRunner, or None) into the metrics at scrape time."""
        running = runner is not None and runner.pid is not None
        self.jedi_rss.set(runner.rss_mb * 1048576 if running else 0)
        if runner is None:
            return
        for reason, n in (("memory", runner.restarts), ("failure", runner.failures)):
            if n > self._jedi_seen[reason]:
                self.jedi_restarts.labels(reason).inc(n - self._jedi_seen[reason])
                self._jedi_seen[reason] = n

    def on_request(self, method: str, seconds: float, status: str) -> None:
        """One request answered (from the protocol-level accounting)."""
        self.requests.labels(method, status).inc()
        if status == "rejected":
            return
        self.duration.labels(method).observe(seconds)
        self.total_requests += 1
        if status == "error":
            self.failed_requests += 1
        self._recent.append((time.time(), method, seconds, status))
        if method == ACCEPT_COMMAND and status == "ok":
            self.accepted.inc()
            self.n_accepted += 1

    def on_event(self, event: str, f: dict[str, Any]) -> None:
        """An engine event (see ``Engine.emit``)."""
        if event == "cache":
            if f.get("hit"):
                self.cache_hits.labels(f.get("region", "")).inc()
                self.n_hits += 1
            else:
                self.cache_misses.labels(f.get("region", "")).inc()
                self.n_misses += 1
        elif event == "suggestion":
            self.shown.labels(f.get("source", "")).inc()
            self.n_shown += 1
        elif event == "upstream":
            model, kind = str(f.get("model", "")), str(f.get("kind", ""))
            outcome = str(f.get("outcome", ""))
            self.upstream.labels(model, kind, outcome).observe(float(f.get("ms", 0.0)) / 1000)
            pt, ct = int(f.get("prompt_tokens") or 0), int(f.get("completion_tokens") or 0)
            if pt:
                self.tokens.labels(model, "prompt").inc(pt)
            if ct:
                self.tokens.labels(model, "completion").inc(ct)
            self.upstream_calls += 1
            self.total_tokens += pt + ct
            m = self.by_model.setdefault(model, {"requests": 0, "tokens": 0, "errors": 0})
            m["requests"] += 1
            m["tokens"] += pt + ct
            if outcome == "error":
                m["errors"] += 1
            if outcome in ("ok", "error"):
                self.last_upstream = {"model": model, "outcome": outcome, "code": f.get("code"), "at": time.time()}
        elif event == "superseded":
            self.superseded.inc()
        elif event == "retry":
            self.retries.labels(str(f.get("model", "")), str(f.get("code") or "")).inc()
        elif event == "circuit":
            self.circuit.labels(str(f.get("model", ""))).set(1 if f.get("state") == "open" else 0)

    def on_incident(self, code: str) -> None:
        """An incident was recorded."""
        self.errors.labels(code).inc()

    def on_rate_limited(self, feature: str, quiet: bool) -> None:
        """A call went over its rate limit."""
        self.rate_limited.labels(feature, "dropped" if quiet else "rejected").inc()

    # ---- outputs ------------------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    @property
    def error_rate(self) -> float:
        """Share of this session's requests that failed."""
        return self.failed_requests / self.total_requests if self.total_requests else 0.0

    def performance(self) -> dict[str, Any]:
        """The original backend's performance analytics, plus percentiles and acceptance rate (times in ms)."""
        now = time.time()
        recent = list(self._recent)
        times = sorted(r[2] * 1000 for r in recent)
        per_min = sum(1 for r in recent if r[0] >= now - 60)
        by_method: dict[str, list[float]] = {}
        for _, method, sec, _status in recent:
            by_method.setdefault(method, []).append(sec * 1000)
        lookups = self.n_hits + self.n_misses
        return {
            "avg_response_time": round(sum(times) / len(times), 3) if times else 0.0,
            "requests_per_minute": per_min,
            "cache_hit_rate": round(self.n_hits / lookups, 4) if lookups else 0.0,
            "ai_model_usage": {
                "total_tokens": self.total_tokens,
                "requests": self.upstream_calls,
                "avg_tokens_per_request": round(self.total_tokens / self.upstream_calls, 2)
                if self.upstream_calls else 0.0,
                "by_model": {k: dict(v) for k, v in self.by_model.items()},
            },
            "p50_response_time": round(percentile(times, 0.50), 3),
            "p95_response_time": round(percentile(times, 0.95), 3),
            "p99_response_time": round(percentile(times, 0.99), 3),
            "acceptance_rate": round(self.n_accepted / self.n_shown, 4) if self.n_shown else 0.0,
            "suggestions_shown": self.n_shown,
            "suggestions_accepted": self.n_accepted,
            "total_requests": self.total_requests,
            "failed_requests": self.failed_requests,
            "error_rate": round(self.error_rate, 4),
            "by_method": {m: {"count": len(v), "avg": round(sum(v) / len(v), 3),
                              "p50": round(percentile(sorted(v), 0.5), 3),
                              "p95": round(percentile(sorted(v), 0.95), 3)} for m, v in sorted(by_method.items())},
            "time_unit": "ms",
            "since": round(self.started, 3),
        }
