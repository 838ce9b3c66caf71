"""Incidents in the SQLite store: recorded off the caller's thread, resolved, pruned by age, summarised."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hapa_lsp import config, errors, log
from hapa_lsp.ops.incidents import IncidentLog, iso
from hapa_lsp.store import Store

MODEL = "qwen2.5-coder:1.5b-base"


@pytest.fixture
def store(tmp_path: Path):
    s = Store(str(tmp_path / "hapa.db")).open()
    yield s
    s.close()


def make_log(store: Store, days: int = 30) -> IncidentLog:
    return IncidentLog(lambda: store, lambda: days)


def upstream(code_cls=errors.UpstreamServerError, detail="answered HTTP 500", model=MODEL) -> errors.HapaError:
    err = code_cls(detail)
    err.model = model  # type: ignore[attr-defined]  # set by the resilience layer in the product
    return err


def flush(log_: IncidentLog) -> None:
    log_.submit(lambda: None).result(timeout=5)


def test_record_is_written_on_the_incident_thread_and_redacted(store):
    log.register_secret("sk-live-abcdef123456")
    il = make_log(store)
    threads: list[str] = []
    orig = il._insert
    il._insert = lambda row: (threads.append(threading.current_thread().name), orig(row))  # type: ignore
    err = errors.UpstreamAuthError("upstream said Bearer sk-live-abcdef123456 is wrong")
    il.record(err, "hapa.generateCode")
    flush(il)
    assert threads and threads[0].startswith("hapa-incidents")
    one = il.get(err.incident_id)
    assert one["error_code"] == "E5006" and one["method"] == "hapa.generateCode" and one["status"] == "open"
    assert "sk-live" not in one["detail"] and "****" in one["detail"]
    assert one["title"] == "Model server rejected the credentials"
    assert one["timestamp"].endswith("Z")
    il.close()


def test_dashboard_shape_and_counts(store):
    il = make_log(store)
    errs = [upstream(), upstream(), upstream(errors.ModelUnreachable, "cannot connect"),
            errors.InvalidInput("bad")]
    for e in errs:
        il.record(e, "textDocument/inlineCompletion")
    flush(il)
    # one incident from two days ago
    old = errors.InternalError("old")
    il.record(old, "protocol")
    flush(il)
    store.execute("UPDATE incidents SET created_at=? WHERE incident_id=?", (time.time() - 2 * 86400,
                                                                              old.incident_id))
    d = il.dashboard(error_rate=0.125)
    assert d["total_errors"] == 5 and d["errors_last_24h"] == 4 and d["error_rate"] == 0.125
    assert d["top_error_codes"][0] == {"code": "E5009", "count": 2, "description": "Model server error"}
    assert {c["code"] for c in d["top_error_codes"]} == {"E5009", "E5005", "E4001", "E5004"}
    recent = d["recent_incidents"]
    assert recent[-1]["incident_id"] == old.incident_id  # newest first
    assert set(recent[0]) >= {"incident_id", "error_code", "timestamp", "status"}
    assert d["open_incidents"] == 5
    il.close()


def test_success_of_the_same_operation_resolves(store):
    il = make_log(store)
    model_err = upstream()
    other_model = upstream(model="other-model")
    cmd_err = errors.MissingField("x")
    il.record(model_err, "textDocument/inlineCompletion")
    il.record(other_model, "textDocument/inlineCompletion")
    il.record(cmd_err, "hapa.cache.clear")
    il.succeeded(f"upstream:{MODEL}")
    il.succeeded("hapa.health")  # unrelated: nothing happens
    flush(il)
    assert il.get(model_err.incident_id)["status"] == "resolved"
    assert il.get(model_err.incident_id)["resolved_at"]
    assert il.get(other_model.incident_id)["status"] == "open"
    assert il.get(cmd_err.incident_id)["status"] == "open"
    il.succeeded("hapa.cache.clear")
    flush(il)
    assert il.get(cmd_err.incident_id)["status"] == "resolved"
    il.close()


def test_pruned_after_the_retention_period_from_error_retention_days(store):
    settings, problems = config.load(environ={"ERROR_RETENTION_DAYS": "7"})
    assert problems == [] and settings.incidents.retention_days == 7
    il = IncidentLog(lambda: store, lambda: settings.incidents.retention_days)
    now = time.time()
    ages = {"fresh": 0.5, "six_days": 6.0, "eight_days": 8.0, "forty_days": 40.0}
    ids = {}
    for name, days in ages.items():
        e = errors.InternalError(name)
        il.record(e, "protocol")
        ids[name] = e.incident_id
    flush(il)
    for name, days in ages.items():
        store.execute("UPDATE incidents SET created_at=? WHERE incident_id=?", (now - days * 86400, ids[name]))
    assert il.last_cleanup() is None
    assert il.prune(now=now) == 2
    left = {r[0] for r in store.execute("SELECT incident_id FROM incidents")}
    assert left == {ids["fresh"], ids["six_days"]}
    assert il.last_cleanup() == pytest.approx(now)
    with pytest.raises(errors.HapaError) as info:
        il.get(ids["forty_days"])
    assert info.value.code == "E4001" and "kept 7 days" in info.value.detail
    il.close()


def test_patterns_buckets_and_breakdowns(store):
    il = make_log(store)
    now = 1_800_000_150.0  # fixed, mid-bucket, so bucket edges are known
    rows = [(upstream(), 10), (upstream(), 20), (upstream(errors.ModelTimeout, "slow"), 3 * 3600),
            (errors.RateLimited("x"), 5 * 86400), (errors.RateLimited("y"), 20 * 86400)]
    for e, _ in rows:
        il.record(e, "hapa.generateCode" if e.code == "E4004" else "textDocument/inlineCompletion")
    flush(il)
    for e, age in rows:
        store.execute("UPDATE incidents SET created_at=? WHERE incident_id=?", (now - age, e.incident_id))
    h1 = il.patterns("1h", now=now)
    assert h1["total"] == 2 and h1["bucket_seconds"] == 300 and len(h1["buckets"]) == 12
    assert h1["buckets"][-1]["by_code"] == {"E5009": 2}
    d1 = il.patterns("24h", now=now)
    assert d1["total"] == 3 and len(d1["buckets"]) == 24
    assert d1["by_code"][0] == {"code": "E5009", "count": 2, "description": "Model server error"}
    assert d1["by_model"] == {MODEL: 3}
    assert d1["by_method"] == {"textDocument/inlineCompletion": 3}
    assert sum(b["total"] for b in d1["buckets"]) == 3
    w = il.patterns("7d", now=now)
    assert w["total"] == 4 and w["by_method"]["hapa.generateCode"] == 1 and w["bucket_seconds"] == 6 * 3600
    m = il.patterns("30d", now=now)
    assert m["total"] == 5 and len(m["buckets"]) == 30 and m["by_status"] == {"open": 5}
    assert m["since"] == iso((int(now - 30 * 86400) // 86400 + 1) * 86400)
    with pytest.raises(errors.HapaError) as info:
        il.patterns("2w")
    assert info.value.code == "E4001" and info.value.field == "period"
    il.close()


@pytest.mark.parametrize("bad", ["INC-1", "inc-20250101-0A1B2C3D", "", "INC-20250101-0A1B2C3"])
def test_get_rejects_malformed_ids(store, bad):
    with pytest.raises(errors.HapaError) as info:
        make_log(store).get(bad)
    assert info.value.code == "E4001"


def test_a_failing_database_never_raises_at_the_caller(tmp_path: Path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    il = IncidentLog(lambda: Store(str(blocked / "hapa.db")), lambda: 30)
    for _ in range(3):
        il.record(errors.InternalError("x"), "protocol")  # must not raise
    flush(il)
    assert il.recorded == 3 and il._write_failed
    il.close()
