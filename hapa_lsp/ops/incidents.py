"""Persistent incidents: every E4xxx / E5xxx failure in the SQLite store, resolved, pruned and summarised.

Writes go through one dedicated worker thread, so the event loop never waits on the disk and a
dashboard query submitted after a failure always sees it (one queue, in order). An incident is
resolved when the same operation next succeeds: the LSP method or command that failed, or for
model failures ``upstream:<model>`` (any successful call of that model).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from hapa_lsp import errors
from hapa_lsp.log import get_logger, redact_text

if TYPE_CHECKING:
    from hapa_lsp.store import Store

#: period name -> (seconds covered, bucket size in seconds)
PERIODS: dict[str, tuple[int, int]] = {
    "1h": (3600, 300),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 6 * 3600),
    "30d": (30 * 86400, 86400),
}
CLEANUP_KEY = "incidents.last_cleanup"
_DETAIL_MAX = 500


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 UTC (``...Z``), or None."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def operation_of(err: errors.HapaError, method: str) -> str:
    """What has to succeed again for this incident to count as resolved."""
    model = err.model
    if model and isinstance(err, errors.UpstreamError):
        return f"upstream:{model}"
    return method


class IncidentLog:
    """The incidents table of the store: record, resolve, prune and the dashboard queries."""

    def __init__(self, store: Callable[[], Store], retention_days: Callable[[], int]):
        self._store = store
        self._retention_days = retention_days
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._open_ops: set[str] = set()
        self._write_failed = False
        #: Incidents recorded by this process (the error rate's numerator).
        self.recorded = 0
        #: Called with the catalog code of every recorded incident (metrics).
        self.observers: list[Callable[[str], None]] = []

    # ---- writing ------------------------------------------------------------------------------------------
    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hapa-incidents")
        return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn`` on the incident thread (in order with every earlier write)."""
        return self._executor().submit(fn, *args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Await ``fn`` on the incident thread."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def record(self, err: errors.HapaError, method: str) -> None:
        """Store the incident without blocking the caller (the write happens on the incident thread)."""
        op = operation_of(err, method)
        self._open_ops.add(op)
        self.recorded += 1
        for obs in self.observers:
            try:
                obs(err.code)
            except Exception:  # noqa: BLE001 - accounting must not lose the incident
                pass
        row = (err.incident_id, err.code, method, err.model,
               redact_text(err.detail)[:_DETAIL_MAX], op, time.time())
        self.submit(self._safe, self._insert, row)

    def _insert(self, row: tuple[Any, ...]) -> None:
        self._store().execute(
            "INSERT OR IGNORE INTO incidents (incident_id, error_code, method, model, detail, operation, status,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, 'open', ?)", row)

    def succeeded(self, operation: str) -> None:
        """``operation`` worked: resolve its open incidents (free when it has none)."""
        if operation in self._open_ops:
            self._open_ops.discard(operation)
            self.submit(self._safe, self._resolve, operation, time.time())

    def _resolve(self, operation: str, now: float) -> None:
        self._store().execute("UPDATE incidents SET status='resolved', resolved_at=? "
                              "WHERE operation=? AND status='open'", (now, operation))

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
            self._write_failed = False
        except Exception as exc:  # noqa: BLE001 - any failure to write is a database error (E5003), never unseen
            err = exc if isinstance(exc, errors.HapaError) else errors.StorageError(
                f"storing an incident failed: {type(exc).__name__}")
            # Not recorded as an incident: that would write to the database that just failed.
            if not self._write_failed:
                get_logger("hapa_lsp.incident").error("incident not stored", code=err.code, detail=err.detail,
                                                      incident_id=err.incident_id)
            self._write_failed = True

    def prune(self, now: float | None = None) -> int:
        """Delete incidents older than the retention period and note the time (call on the incident thread)."""
        now = time.time() if now is None else now
        cutoff = now - self._retention_days() * 86400
        store = self._store()
        with store._lock:  # no other writer between the count, the delete and the note
            n = store.execute("SELECT COUNT(*) FROM incidents WHERE created_at < ?", (cutoff,))[0][0]
            store.execute("DELETE FROM incidents WHERE created_at < ?", (cutoff,))
            store.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                          "value=excluded.value", (CLEANUP_KEY, repr(now)))
        return int(n)

    def close(self) -> None:
        """Finish pending writes and stop the worker thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ---- reading (call through ``run``) -------------------------------------------------------------------
    def last_cleanup(self) -> float | None:
        """When incidents were last pruned (epoch seconds), or None."""
        rows = self._store().execute("SELECT value FROM meta WHERE key=?", (CLEANUP_KEY,))
        return float(rows[0][0]) if rows else None

    def dashboard(self, error_rate: float, now: float | None = None) -> dict[str, Any]:
        """The original backend's error dashboard JSON."""
        now = time.time() if now is None else now
        st = self._store()
        total = st.execute("SELECT COUNT(*) FROM incidents")[0][0]
        last24 = st.execute("SELECT COUNT(*) FROM incidents WHERE created_at >= ?", (now - 86400,))[0][0]
        opened = st.execute("SELECT COUNT(*) FROM incidents WHERE status='open'")[0][0]
        top = st.execute("SELECT error_code, COUNT(*) AS n FROM incidents GROUP BY error_code "
                         "ORDER BY n DESC, error_code LIMIT 10")
        recent = st.execute("SELECT incident_id, error_code, created_at, status, method, model FROM incidents "
                            "ORDER BY created_at DESC LIMIT 20")
        return {
            "total_errors": int(total),
            "errors_last_24h": int(last24),
            "open_incidents": int(opened),
            "error_rate": round(error_rate, 4),
            "top_error_codes": [{"code": r[0], "count": int(r[1]), "description": _title(r[0])} for r in top],
            "recent_incidents": [{"incident_id": r[0], "error_code": r[1], "timestamp": iso(r[2]), "status": r[3],
                                  "method": r[4], "model": r[5]} for r in recent],
            "retention_days": self._retention_days(),
        }

    def patterns(self, period: str, now: float | None = None) -> dict[str, Any]:
        """Counts per code over time buckets, and per method, model and status, for 1h / 24h / 7d / 30d."""
        if period not in PERIODS:
            raise errors.InvalidInput(f"period must be one of {', '.join(PERIODS)}, got {period!r}",
                                    field="period")
        now = time.time() if now is None else now
        span, size = PERIODS[period]
        first = (int(now - span) // size + 1) * size  # bucket starts aligned to the bucket size
        nb = int((now - first) // size) + 1
        rows = self._store().execute("SELECT error_code, method, model, status, created_at FROM incidents "
                                     "WHERE created_at >= ?", (first,))
        buckets = [{"start": iso(first + i * size), "total": 0, "by_code": {}} for i in range(nb)]
        by_code: dict[str, int] = {}
        by_method: dict[str, int] = {}
        by_model: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for code, method, model, status, ts in rows:
            b = buckets[min(nb - 1, int((ts - first) // size))]
            b["total"] += 1
            b["by_code"][code] = b["by_code"].get(code, 0) + 1
            by_code[code] = by_code.get(code, 0) + 1
            by_method[method or "-"] = by_method.get(method or "-", 0) + 1
            if model:
                by_model[model] = by_model.get(model, 0) + 1
            by_status[status] = by_status.get(status, 0) + 1
        return {
            "period": period,
            "since": iso(first),
            "bucket_seconds": size,
            "total": len(rows),
            "buckets": buckets,
            "by_code": [{"code": c, "count": n, "description": _title(c)}
                        for c, n in sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))],
            "by_method": by_method,
            "by_model": by_model,
            "by_status": by_status,
        }

    def get(self, incident_id: str) -> dict[str, Any]:
        """One incident by id; E4001 for a malformed id or one that is not (or no longer) stored."""
        if not isinstance(incident_id, str) or not re.fullmatch(r"INC-\d{8}-[0-9A-F]{8}", incident_id):
            raise errors.InvalidInput(f"expected an incident id like INC-20250101-0A1B2C3D, got {incident_id!r}", field="incident_id")
        rows = self._store().execute("SELECT incident_id, error_code, method, model, detail, operation, status, "
                                     "created_at, resolved_at FROM incidents WHERE incident_id=?", (incident_id,))
        if not rows:
            raise errors.InvalidInput(f"no incident {incident_id} (incidents are kept "
                                    f"{self._retention_days()} days)", field="incident_id")
        r = rows[0]
        spec = errors.CATALOG.get(r[1])
        return {"incident_id": r[0], "error_code": r[1], "title": spec.title if spec else "",
                "remedy": spec.remedy if spec else "", "method": r[2], "model": r[3], "detail": r[4],
                "operation": r[5], "status": r[6], "timestamp": iso(r[7]), "resolved_at": iso(r[8])}


def _title(code: str) -> str:
    spec = errors.CATALOG.get(code)
    return spec.title if spec else ""
