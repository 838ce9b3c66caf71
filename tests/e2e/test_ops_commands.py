"""Operations through workspace/executeCommand: rate limits, the circuit breaker as the user sees it, cache
management and incident lookup."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import open_doc, start_client, stop_client
from tests.e2e.test_sidecar import MODEL, command, inline, ops_env, samples, sidecar_url, value
from tests.fakes.model_server import FakeModelServer

INLINE = "textDocument/inlineCompletion"


def change(client, uri: str, text: str, version: int) -> None:
    """Replace the whole document (a new context each time, so nothing comes from the cache)."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def failing_command(client, name: str, *args) -> dict:
    with pytest.raises(JsonRpcException) as info:
        await command(client, name, *args)
    return info.value.data


async def test_command_over_its_limit_answers_e4004_with_the_wait(fake: FakeModelServer, tmp_path: Path):
    rules = json.dumps({"hapa.errors.dashboard": "2/minute"})
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_RATE_LIMITS_RULES=rules))
    try:
        url = await sidecar_url(client)
        for _ in range(2):
            assert "total_errors" in await command(client, "hapa.errors.dashboard")
        data = await failing_command(client, "hapa.errors.dashboard")
        assert data["code"] == "E4004"
        assert 0 < data["retry_after"] <= 60
        assert "2/minute" in data["detail"] and "try again in" in data["detail"]
        async with httpx.AsyncClient(trust_env=False) as http:
            # The sidecar endpoint shares the feature's limit.
            resp = await http.get(f"{url}/errors/dashboard")
            assert resp.status_code == 429
            assert resp.json()["error"]["code"] == "E4004"
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            # Other commands are not affected.
            assert (await command(client, "hapa.errors.patterns", {"period": "1h"}))["period"] == "1h"
            smp = samples((await http.get(f"{url}/metrics")).text)
            dash = (await http.get(f"{url}/errors/patterns?period=1h")).json()
        assert value(smp, "hapa_rate_limited_total", feature="hapa.errors.dashboard", action="rejected") == 2
        assert value(smp, "hapa_requests_total", method="hapa.errors.dashboard", status="rejected") == 1
        assert value(smp, "hapa_requests_total", method="hapa.errors.dashboard", status="ok") == 2
        assert dash["by_code"][0]["code"] == "E4004" and dash["by_code"][0]["count"] == 2
    finally:
        await stop_client(client)


async def test_inline_over_the_limit_is_dropped_quietly_and_counted(fake: FakeModelServer, tmp_path: Path):
    rules = json.dumps({INLINE: "2/minute"})
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_RATE_LIMITS_RULES=rules))
    try:
        url = await sidecar_url(client)
        uri = "file:///ws/a.py"
        open_doc(client, uri, "def f0(x):\n    \n")
        answers = []
        for n in range(4):
            change(client, uri, f"def f{n}(x):\n    \n", n + 2)
            fake.queue(f"return x + {n}\n")
            answers.append(await inline(client, uri, 1, 4))
        assert [a.items[0].insert_text if a else None for a in answers] == ["return x + 0", "return x + 1",
                                                                           None, None]
        assert fake.count() == 2  # dropped requests never reach the model
        await asyncio.sleep(0.1)
        assert not [m for m in client.messages if "E4004" in getattr(m, "message", "")]
        assert not [s for s in client.statuses if getattr(s, "code", None) == "E4004"]
        # An explicit request is answered with the code and the wait.
        with pytest.raises(JsonRpcException) as info:
            await inline(client, uri, 1, 4, invoked=True)
        assert info.value.data["code"] == "E4004" and info.value.data["retry_after"] > 0
        async with httpx.AsyncClient(trust_env=False) as http:
            smp = samples((await http.get(f"{url}/metrics")).text)
            perf = (await http.get(f"{url}/analytics/performance")).json()
        assert value(smp, "hapa_rate_limited_total", feature=INLINE, action="dropped") == 2
        assert value(smp, "hapa_rate_limited_total", feature=INLINE, action="rejected") == 1
        assert perf["rate_limited"] == {INLINE: 3}
    finally:
        await stop_client(client)


async def test_circuit_marks_the_model_down_once_and_recovers_by_itself(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(
        tmp_path, HAPA_RESILIENCE_BREAKER_FAILURES="2", HAPA_RESILIENCE_BREAKER_COOLDOWN="1.0"))
    try:
        await sidecar_url(client)
        uri = "file:///ws/a.py"
        open_doc(client, uri, "def g(x):\n    \n")
        fake.fault = "500"
        for n in range(6):
            change(client, uri, f"def g{n}(x):\n    \n", n + 2)
            assert await inline(client, uri, 1, 4) is None
        assert fake.count() == 2  # after two failures the model is not called any more
        await asyncio.sleep(0.1)
        down = [s for s in client.statuses if "marked down" in s.message]
        assert len(down) == 1
        assert down[0].code == "E5009" and "tried again in 1 s" in down[0].message
        health = await command(client, "hapa.health")
        assert health["services"]["ai_model"] == "down" and health["status"] == "degraded"
        assert health["models"][MODEL]["state"] == "open"

        fake.restore()
        await asyncio.sleep(1.1)
        change(client, uri, "def h(x):\n    \n", 20)
        fake.queue("return x\n")
        ok = await inline(client, uri, 1, 4)
        assert ok is not None and ok.items[0].insert_text == "return x"
        await asyncio.sleep(0.1)
        assert client.statuses[-1].state == "ok"
        assert len([s for s in client.statuses if "marked down" in s.message]) == 1
        health = await command(client, "hapa.health")
        assert health["services"]["ai_model"] == "ok" and health["models"] == {}
        # The incidents of the outage were resolved by the model's next success.
        dash = await command(client, "hapa.errors.dashboard")
        assert dash["open_incidents"] == 0 and dash["total_errors"] >= 2
    finally:
        await stop_client(client)


async def test_cache_clear_per_type_and_stats(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        uri = "file:///ws/a.py"
        open_doc(client, uri, "def add(a, b):\n    \n")
        fake.queue("return a + b\n")
        assert (await inline(client, uri, 1, 4)).items[0].insert_text == "return a + b"
        assert (await inline(client, uri, 1, 4)).items[0].insert_text == "return a + b"
        assert fake.count() == 1
        stats = await command(client, "hapa.cache.stats")
        assert stats["regions"]["completions"] == 1 and stats["hits"] == 1 and stats["misses"] == 1

        missing = await failing_command(client, "hapa.cache.clear", {"cache_type": "completions"})
        assert missing["code"] == "E4002" and missing["field"] == "confirm"
        assert (await failing_command(client, "hapa.cache.clear", {"cache_type": "completions", "confirm": False})
                )["code"] == "E4002"
        assert (await failing_command(client, "hapa.cache.clear", {"confirm": True}))["field"] == "cache_type"
        bad = await failing_command(client, "hapa.cache.clear", {"cache_type": "everything", "confirm": True})
        assert bad["code"] == "E4001" and bad["field"] == "cache_type"
        assert (await command(client, "hapa.cache.stats"))["regions"]["completions"] == 1  # nothing cleared

        other = await command(client, "hapa.cache.clear", {"cache_type": "code_generation", "confirm": True})
        assert other["cleared"] == {"memory": 0, "shared": 0}
        assert (await command(client, "hapa.cache.stats"))["regions"]["completions"] == 1
        done = await command(client, "hapa.cache.clear", {"cache_type": "completions", "confirm": True})
        assert done["cleared"]["memory"] == 1 and done["cache_type"] == "completions"
        assert (await command(client, "hapa.cache.stats"))["regions"]["completions"] == 0
        fake.queue("return a + b\n")
        await inline(client, uri, 1, 4)
        assert fake.count() == 2  # the model is asked again
        everything = await command(client, "hapa.cache.clear", {"cache_type": "all", "confirm": True})
        assert everything["cleared"]["memory"] == 1
        for cache_type in ("user_profiles", "all"):
            assert (await command(client, "hapa.cache.clear", {"cache_type": cache_type, "confirm": True})
                    )["cleared"]["memory"] == 0
    finally:
        await stop_client(client)


async def test_errors_get_by_id(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        uri = "file:///ws/a.py"
        open_doc(client, uri, "def add(a, b):\n    \n")
        fake.fail_next("500")
        with pytest.raises(JsonRpcException) as info:
            await inline(client, uri, 1, 4, invoked=True)
        inc = info.value.data["incident_id"]
        by_string = await command(client, "hapa.errors.get", inc)
        by_object = await command(client, "hapa.errors.get", {"incident_id": inc})
        assert by_string == by_object
        assert by_string["incident_id"] == inc and by_string["error_code"] == "E5009"
        assert by_string["remedy"] and by_string["method"] == INLINE and by_string["status"] == "open"
        assert (await failing_command(client, "hapa.errors.get"))["code"] == "E4002"
        assert (await failing_command(client, "hapa.errors.get", "INC-20200101-00000000"))["code"] == "E4001"
        assert (await failing_command(client, "hapa.errors.get", "not-an-id"))["code"] == "E4001"
    finally:
        await stop_client(client)


ANSWER = "```python\ndef add(a, b):\n    return a + b\n```\nAdds two numbers."


async def test_generation_retried_after_a_transient_failure_then_rate_limited(fake: FakeModelServer, tmp_path: Path):
    rules = json.dumps({"hapa.generateCode": "2/minute"})
    client = await start_client(fake, root=tmp_path, env=ops_env(
        tmp_path, HAPA_RATE_LIMITS_RULES=rules, HAPA_RESILIENCE_RETRY_MAX_WAIT="0.2"))
    try:
        url = await sidecar_url(client)
        fake.fail_next("500")
        fake.queue(ANSWER)
        result = await command(client, "hapa.generateCode", {"user_question": "add two numbers", "stream": False})
        assert result["status"] == "success" and "return a + b" in result["generated_code"]
        assert [r.path for r in fake.requests] == ["/api/chat", "/api/chat"]  # failed once, retried once
        fake.queue(ANSWER)
        await command(client, "hapa.generateCode", {"user_question": "add two numbers again", "stream": False})
        data = await failing_command(client, "hapa.generateCode", {"user_question": "and again", "stream": False})
        assert data["code"] == "E4004" and 0 < data["retry_after"] <= 60
        assert len(fake.requests) == 3  # the refused call never reached the model
        async with httpx.AsyncClient(trust_env=False) as http:
            smp = samples((await http.get(f"{url}/metrics")).text)
        assert value(smp, "hapa_upstream_retries_total", model="qwen2.5-coder:7b-instruct", code="E5009") == 1
        assert value(smp, "hapa_requests_total", method="hapa.generateCode", status="rejected") == 1
    finally:
        await stop_client(client)


async def test_old_incidents_are_pruned_at_start(fake: FakeModelServer, tmp_path: Path):
    import time as _time

    from hapa_lsp import errors
    from hapa_lsp.store import Store

    db = tmp_path / "hapa.db"
    store = Store(str(db)).open()
    old, recent = errors.InternalError("old"), errors.InternalError("recent")
    for err, age_days in ((old, 8), (recent, 6)):
        store.execute("INSERT INTO incidents (incident_id, error_code, method, created_at) VALUES (?, ?, ?, ?)",
                      (err.incident_id, err.code, "protocol", _time.time() - age_days * 86400))
    store.close()
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, ERROR_RETENTION_DAYS="7"))
    try:
        for _ in range(100):
            health = await command(client, "hapa.health")
            if health["last_cleanup"]:
                break
            await asyncio.sleep(0.05)
        assert health["last_cleanup"].endswith("Z")
        assert (await command(client, "hapa.errors.get", recent.incident_id))["status"] == "open"
        gone = await failing_command(client, "hapa.errors.get", old.incident_id)
        assert gone["code"] == "E4001" and "kept 7 days" in gone["detail"]
    finally:
        await stop_client(client)


async def test_metrics_show_the_jedi_workers_memory_and_restarts(fake: FakeModelServer, tmp_path: Path):
    import os
    import signal

    from tests.e2e.test_completion_list import SOURCE, complete_when_jedi_ready, completion_params, labels

    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        url = await sidecar_url(client)
        open_doc(client, "file:///ws/m.py", SOURCE)
        params = completion_params("file:///ws/m.py", 5, 5, invoked=True)
        assert "path" in labels(await complete_when_jedi_ready(client, params))
        async with httpx.AsyncClient(trust_env=False) as http:
            smp = samples((await http.get(f"{url}/metrics")).text)
            assert value(smp, "hapa_jedi_worker_resident_bytes") > 10 * 1024 * 1024
            pid = (await command(client, "hapa.stats"))["jedi_worker"]["pid"]
            os.kill(pid, signal.SIGKILL)
            assert "path" in labels(await complete_when_jedi_ready(client, params))
            smp = samples((await http.get(f"{url}/metrics")).text)
        assert value(smp, "hapa_jedi_worker_restarts_total", reason="failure") == 1
        assert value(smp, "hapa_jedi_worker_resident_bytes") > 10 * 1024 * 1024  # the new worker
    finally:
        await stop_client(client)


async def test_a_failing_ai_item_of_a_completion_list_is_recorded_under_the_completion_method(
        fake: FakeModelServer, tmp_path: Path):
    """The list still answers (without the AI item); the incident an operator looks up names the request that
    failed, not the inline completion."""
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        uri = "file:///ws/a.py"
        open_doc(client, uri, "def add(a, b):\n    \n")
        fake.fail_next("500")
        params = types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 4),
            context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked))
        result = await client.text_document_completion_async(params)
        assert not [i for i in result.items if (i.detail or "").startswith("hapa AI")]
        for _ in range(100):
            if any(getattr(s, "incident_id", None) for s in client.statuses):
                break
            await asyncio.sleep(0.05)
        inc = next(s.incident_id for s in client.statuses if getattr(s, "incident_id", None))
        record = await command(client, "hapa.errors.get", inc)
        assert record["error_code"] == "E5009" and record["method"] == "textDocument/completion"
    finally:
        await stop_client(client)
