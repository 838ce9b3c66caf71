"""The sidecar HTTP endpoint: metrics moving after real requests, dashboards from real failures, API key, ports."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from lsprotocol import types
from prometheus_client.parser import text_string_to_metric_families
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client
from tests.fakes.model_server import FakeModelServer

MODEL = "qwen2.5-coder:1.5b-base"
INLINE = "textDocument/inlineCompletion"


def ops_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A private database, any free sidecar port, no debounce."""
    env = {"HAPA_STORAGE_PATH": str(tmp_path / "hapa.db"), "HAPA_SIDECAR_PORT": "0",
           "HAPA_COMPLETION_DEBOUNCE_MS": "0", "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0"}
    env.update(extra)
    return env


async def command(client: Any, name: str, *args: Any) -> Any:
    """workspace/executeCommand."""
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(name, list(args) or None))


async def sidecar_url(client: Any, timeout: float = 10.0) -> str | None:
    """The sidecar's URL from hapa.health, once the server has started it (None if it never does)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        health = await command(client, "hapa.health")
        if health.get("sidecar") or asyncio.get_running_loop().time() > deadline:
            return health.get("sidecar")
        await asyncio.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(smp: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return smp.get((name, tuple(sorted(labels.items()))), 0.0)


async def inline(client: Any, uri: str, line: int, col: int, invoked: bool = False) -> Any:
    """An inline completion request."""
    return await client.text_document_inline_completion_async(inline_params(uri, line, col, invoked=invoked))


async def failing_inline(client: Any, uri: str, line: int, col: int) -> dict[str, Any]:
    """An invoked inline request that must fail; the error's catalog data."""
    with pytest.raises(JsonRpcException) as info:
        await inline(client, uri, line, col, invoked=True)
    return info.value.data


async def test_metrics_names_labels_and_movement(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        url = await sidecar_url(client)
        assert url and url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(trust_env=False) as http:
            before = samples((await http.get(f"{url}/metrics")).text)
            fake.queue("return a + b\n")
            open_doc(client, "file:///ws/calc.py", "def add(a, b):\n    \n")
            first = await inline(client, "file:///ws/calc.py", 1, 4)
            again = await inline(client, "file:///ws/calc.py", 1, 4)  # same context: served from the cache
            assert first.items[0].insert_text == again.items[0].insert_text == "return a + b"
            await command(client, "hapa.didAcceptCompletion", first.items[0].command.arguments[0])
            fake.fail_next("500")
            open_doc(client, "file:///ws/sub.py", "def sub(a, b):\n    \n")
            data = await failing_inline(client, "file:///ws/sub.py", 1, 4)
            assert data["code"] == "E5009"
            resp = await http.get(f"{url}/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        after = samples(resp.text)
    finally:
        await stop_client(client)
    assert value(before, "hapa_requests_total", method=INLINE, status="ok") == 0
    assert value(after, "hapa_requests_total", method=INLINE, status="ok") == 2
    assert value(after, "hapa_requests_total", method=INLINE, status="error") == 1
    assert value(after, "hapa_requests_total", method="hapa.didAcceptCompletion", status="ok") == 1
    assert value(after, "hapa_request_duration_seconds_count", method=INLINE) == 3
    assert value(after, "hapa_request_duration_seconds_sum", method=INLINE) > 0
    assert value(after, "hapa_errors_total", code="E5009") == 1
    assert value(after, "hapa_cache_hits_total", region="completions") == 1
    assert value(after, "hapa_cache_misses_total", region="completions") == 2
    assert value(after, "hapa_ai_tokens_used_total", model=MODEL, kind="completion") > 0
    assert value(after, "hapa_ai_tokens_used_total", model=MODEL, kind="prompt") > 0
    assert value(after, "hapa_upstream_request_duration_seconds_count", model=MODEL, kind="completion",
                 outcome="ok") == 1
    assert value(after, "hapa_upstream_request_duration_seconds_count", model=MODEL, kind="completion",
                 outcome="error") == 1
    assert value(after, "hapa_suggestions_shown_total", source="model") == 1
    assert value(after, "hapa_suggestions_shown_total", source="cache") == 1
    assert value(after, "hapa_suggestions_accepted_total") == 1


async def test_dashboard_patterns_and_incidents_from_real_failures(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        url = await sidecar_url(client)
        open_doc(client, "file:///ws/a.py", "def add(a, b):\n    \n")
        fake.fail_next("500")
        e500 = await failing_inline(client, "file:///ws/a.py", 1, 4)
        fake.fail_next("404")
        e404 = await failing_inline(client, "file:///ws/a.py", 1, 4)
        async with httpx.AsyncClient(trust_env=False) as http:
            dash = (await http.get(f"{url}/errors/dashboard")).json()
            by_cmd = await command(client, "hapa.errors.dashboard")
            ids = {i["incident_id"]: i for i in dash["recent_incidents"]}
            assert dash["total_errors"] == 2 and dash["errors_last_24h"] == 2
            assert {e500["incident_id"], e404["incident_id"]} <= set(ids)
            assert ids[e500["incident_id"]]["error_code"] == "E5009"
            assert ids[e500["incident_id"]]["status"] == "open"
            assert ids[e500["incident_id"]]["timestamp"].endswith("Z")
            codes = {c["code"]: c for c in dash["top_error_codes"]}
            assert codes["E5009"] == {"code": "E5009", "count": 1, "description": "Model server error"}
            assert codes["E5010"] == {"code": "E5010", "count": 1, "description": "Model not found"}
            assert 0 < dash["error_rate"] <= 1
            assert by_cmd["recent_incidents"] == dash["recent_incidents"]

            pat = (await http.get(f"{url}/errors/patterns", params={"period": "1h"})).json()
            assert pat["period"] == "1h" and pat["bucket_seconds"] == 300 and pat["total"] == 2
            assert sum(b["total"] for b in pat["buckets"]) == 2
            assert pat["buckets"][-1]["by_code"]["E5009"] == 1
            assert pat["by_method"] == {INLINE: 2}
            assert pat["by_model"] == {MODEL: 2}
            for period in ("24h", "7d", "30d"):
                assert (await http.get(f"{url}/errors/patterns", params={"period": period})).json()["total"] == 2
            bad = await http.get(f"{url}/errors/patterns", params={"period": "2w"})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "E4001"
            # A bad request is an incident too.
            pat = await command(client, "hapa.errors.patterns", {"period": "24h"})
            assert pat["total"] == 3 and pat["by_method"]["sidecar /errors/patterns"] == 1

            # The same operation succeeding resolves its incidents.
            fake.queue("return a + b\n")
            ok = await inline(client, "file:///ws/a.py", 1, 4, invoked=True)
            assert ok.items[0].insert_text == "return a + b"
            one = await command(client, "hapa.errors.get", e500["incident_id"])
            assert one["status"] == "resolved" and one["resolved_at"]
            assert one["error_code"] == "E5009" and one["model"] == MODEL and "HTTP 500" in one["detail"]
            assert (await http.get(f"{url}/errors/{e500['incident_id']}")).json()["status"] == "resolved"
    finally:
        await stop_client(client)


async def test_api_key_enforced(fake: FakeModelServer, tmp_path: Path):
    key = "sidecar-key-Zq81xT"
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_API_KEY=key))
    try:
        url = await sidecar_url(client)
        async with httpx.AsyncClient(trust_env=False) as http:
            for path in ("/errors/dashboard", "/errors/patterns?period=7d", "/analytics/performance"):
                missing = await http.get(url + path)
                assert missing.status_code == 401
                assert missing.json()["error"]["code"] == "E4003"
                assert missing.json()["error"]["incident_id"].startswith("INC-")
                wrong = await http.get(url + path, headers={"X-API-Key": key + "x"})
                assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "E4003"
                right = await http.get(url + path, headers={"X-API-Key": key})
                assert right.status_code == 200, right.text
            # Health and metrics stay open for probes and scrapers.
            assert (await http.get(f"{url}/health")).status_code == 200
            metrics = await http.get(f"{url}/metrics")
            assert metrics.status_code == 200 and "hapa_errors_total" in metrics.text
            assert key not in metrics.text
            dash = (await http.get(f"{url}/errors/dashboard", headers={"X-API-Key": key})).json()
            assert any(c["code"] == "E4003" for c in dash["top_error_codes"])
            assert key not in str(dash)
    finally:
        await stop_client(client)


async def test_port_in_use_falls_back_to_next_and_lsp_keeps_serving(fake: FakeModelServer, tmp_path: Path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_PORT=str(taken)))
        try:
            url = await sidecar_url(client)
            assert url is not None
            port = int(url.rsplit(":", 1)[1])
            assert taken < port < taken + 20
            async with httpx.AsyncClient(trust_env=False) as http:
                assert (await http.get(f"{url}/health")).json()["status"] == "healthy"
            fake.queue("return a + b\n")
            open_doc(client, "file:///ws/a.py", "def add(a, b):\n    \n")
            assert (await inline(client, "file:///ws/a.py", 1, 4)).items[0].insert_text == "return a + b"
        finally:
            await stop_client(client)
    finally:
        blocker.close()


async def test_non_loopback_bind_without_key_is_refused(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_HOST="0.0.0.0"))
    try:
        health = await command(client, "hapa.health")
        for _ in range(100):
            if any("HAPA_SIDECAR_API_KEY" in m.message for m in client.messages if hasattr(m, "message")):
                break
            await asyncio.sleep(0.05)
            health = await command(client, "hapa.health")
        assert health["sidecar"] is None
        shown = [m.message for m in client.messages if hasattr(m, "message") and "sidecar" in m.message]
        assert shown and "E4005" in shown[0] and "HAPA_SIDECAR_API_KEY" in shown[0]
        fake.queue("return a + b\n")
        open_doc(client, "file:///ws/a.py", "def add(a, b):\n    \n")
        assert (await inline(client, "file:///ws/a.py", 1, 4)).items[0].insert_text == "return a + b"
    finally:
        await stop_client(client)


async def test_health_fields_and_sidecar_off(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_ENABLED="false"))
    try:
        # Pruning runs on the incident thread right after start-up; health reports it once it happened.
        for _ in range(100):
            health = await command(client, "hapa.health")
            if health["last_cleanup"]:
                break
            await asyncio.sleep(0.05)
        assert health["sidecar"] is None
        assert set(health) >= {"status", "version", "uptime", "services", "last_cleanup"}
        assert health["services"] == {"database": "ok", "redis": "disabled", "ai_model": "unknown"}
        assert health["status"] == "healthy" and health["uptime"] > 0
        assert health["last_cleanup"] and health["last_cleanup"].endswith("Z")
    finally:
        await stop_client(client)


async def test_a_client_that_never_answers_configuration_does_not_delay_the_sidecar(tmp_path):
    """Start-up services do not wait for workspace/configuration; its answer, when it comes, still applies."""
    import sys

    from pytest_lsp import ClientServerConfig

    from tests.e2e.conftest import editor_capabilities, make_client, server_env

    def silent_client() -> Any:
        client = make_client()

        async def never(*args: Any) -> Any:  # pygls calls it with the params only
            client.ignored.append(asyncio.current_task())
            await asyncio.sleep(3600)

        client.ignored = []

        # pytest-lsp answers configuration requests itself; replace its handler with one that never answers.
        client.protocol.fm.features[types.WORKSPACE_CONFIGURATION] = never
        return client

    config = ClientServerConfig(server_command=[sys.executable, "-m", "hapa_lsp"], client_factory=silent_client,
                                server_env=server_env(None, ops_env(tmp_path)))
    client = await config.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await client.initialize_session(types.InitializeParams(capabilities=editor_capabilities(),
                                                               root_uri=tmp_path.as_uri()))
        url = await sidecar_url(client, timeout=10)
        assert url is not None
        assert loop.time() - t0 < 3.0, "the sidecar waited for the client's configuration answer"
        async with httpx.AsyncClient() as http:
            assert (await http.get(url + "/health")).status_code == 200
        assert client.ignored, "the server never asked for its configuration"
    finally:
        from tests.e2e.conftest import kill_server

        for task in getattr(client, "ignored", []):
            task.cancel()
        await kill_server(client)


async def test_unknown_paths_and_methods_answer_404_and_405_without_incidents(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        url = await sidecar_url(client)
        async with httpx.AsyncClient(trust_env=False) as http:
            for _ in range(20):  # a browser's favicon requests, a scanner: none of it is a failure of ours
                missing = await http.get(f"{url}/favicon.ico")
                assert missing.status_code == 404 and missing.json()["error"]["code"] == "E4001"
                assert "incident_id" not in missing.json()["error"]
                for method, path in (("POST", "/health"), ("OPTIONS", "/metrics"), ("DELETE", "/errors/dashboard")):
                    wrong = await http.request(method, url + path)
                    assert wrong.status_code == 405, (method, path, wrong.text)
                    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
                for path in ("/errors/INC-20250101-0A1B2C3D", "/errors/nope"):
                    gone = await http.get(url + path)
                    assert gone.status_code == 404 and gone.json()["error"]["code"] == "E4001"
            dash = (await http.get(f"{url}/errors/dashboard")).json()
            assert (await http.get(f"{url}/health")).status_code == 200
        assert dash["total_errors"] == 0, dash["top_error_codes"]
    finally:
        await stop_client(client)


async def test_failed_api_key_attempts_are_counted_not_each_an_incident(fake: FakeModelServer, tmp_path: Path):
    key = "sidecar-key-Pp40vW"
    log_file = tmp_path / "server.log"
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_API_KEY=key,
                                                                 HAPA_LOGGING_FILE=str(log_file)))
    try:
        url = await sidecar_url(client)
        async with httpx.AsyncClient(trust_env=False) as http:
            ids = set()
            for i in range(40):
                resp = await http.get(f"{url}/errors/dashboard", headers={"X-API-Key": f"guess-{i}"} if i else {})
                assert resp.status_code == 401 and resp.json()["error"]["code"] == "E4003"
                ids.add(resp.json()["error"]["incident_id"])
            assert len(ids) == 1  # one incident stands for the window's refusals, and the answers name it
            dash = (await http.get(f"{url}/errors/dashboard", headers={"X-API-Key": key})).json()
            assert dash["total_errors"] == 1 and dash["recent_incidents"][0]["incident_id"] in ids
            smp = samples((await http.get(f"{url}/metrics")).text)
        assert value(smp, "hapa_sidecar_refused_total", reason="api_key") == 40
    finally:
        await stop_client(client)
    text = log_file.read_text(encoding="utf-8")
    assert text.count("sidecar requests refused") == 1
    assert key not in text


SIDECAR_PATHS = ("/errors/dashboard", "/errors/patterns?period=7d", "/analytics/performance", "/health", "/metrics",
                 "/dashboard")


async def test_foreign_host_or_origin_is_refused_dns_rebinding(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_ALLOWED_HOSTS="hapa.test"))
    try:
        url = await sidecar_url(client)
        port = int(url.rsplit(":", 1)[1])
        own = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(trust_env=False) as http:
            for path in SIDECAR_PATHS:
                rebound = await http.get(url + path, headers={"Host": f"evil.example:{port}",
                                                              "Origin": f"http://evil.example:{port}"})
                assert rebound.status_code == 421, (path, rebound.text)
                assert rebound.json()["error"]["code"] == "E4005"
                assert "hapa_errors_total" not in rebound.text and "total_errors" not in rebound.text
                cross = await http.get(url + path, headers={"Origin": "http://evil.example"})
                assert cross.status_code == 403 and cross.json()["error"]["code"] == "E4005", path
                other_port = await http.get(url + path, headers={"Origin": "http://localhost:1"})
                assert other_port.status_code == 403, path
                assert (await http.get(url + path, headers={"Origin": "null"})).status_code == 403
                for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST", "hapa.test"):
                    ok = await http.get(url + path, headers={"Host": host})
                    assert ok.status_code == 200, (path, host, ok.text)
                same = await http.get(url + path, headers={"Origin": own})
                assert same.status_code == 200, (path, same.text)
            dash = (await http.get(f"{url}/errors/dashboard")).json()
            smp = samples((await http.get(f"{url}/metrics")).text)
        # One incident per reason stands for all refusals; the counts are in the metric.
        assert {c["code"]: c["count"] for c in dash["top_error_codes"]} == {"E4005": 2}
        assert value(smp, "hapa_sidecar_refused_total", reason="host") == len(SIDECAR_PATHS)
        assert value(smp, "hapa_sidecar_refused_total", reason="origin") == 3 * len(SIDECAR_PATHS)
    finally:
        await stop_client(client)


async def _sidecar_on_port(client: Any, port: int, timeout: float = 10.0) -> str:
    """The sidecar URL once the server has restarted it on ``port``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        url = (await command(client, "hapa.health")).get("sidecar") or ""
        if url.endswith(f":{port}") or asyncio.get_running_loop().time() > deadline:
            return url
        await asyncio.sleep(0.05)


async def test_settings_from_the_workspace_cannot_clear_the_key_of_a_public_sidecar(fake: FakeModelServer,
                                                                                  tmp_path: Path):
    """Bound to 0.0.0.0 with a key: neither initializationOptions nor a workspace/configuration answer (a
    repository's .vscode/settings.json) can remove the key or add host names; the attempt is reported once."""
    from tests.conftest import free_port

    key = "sidecar-key-Lm92sR"
    client = await start_client(fake, root=tmp_path,
                                env=ops_env(tmp_path, HAPA_SIDECAR_HOST="0.0.0.0", HAPA_SIDECAR_API_KEY=key),
                                init_options={"sidecar": {"apiKey": ""}}, configuration={"hapa": {}})
    try:
        url = await sidecar_url(client)
        port = int(url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/errors/dashboard")).status_code == 401
            new_port = free_port()
            # The port moves (a setting a workspace may change, and a restart of the sidecar); the key stays.
            client.set_configuration({"hapa": {"sidecar": {"apiKey": "", "api_key": "", "port": new_port,
                                                           "allowedHosts": ["evil.example"]}}})
            for _ in range(2):
                client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
                await asyncio.sleep(0.2)
            moved = await _sidecar_on_port(client, new_port)
            assert moved.endswith(f":{new_port}"), moved
            base = f"http://127.0.0.1:{new_port}"
            for path in ("/errors/dashboard", "/errors/patterns?period=1h", "/analytics/performance"):
                resp = await http.get(base + path)
                assert resp.status_code == 401 and resp.json()["error"]["code"] == "E4003", (path, resp.text)
            assert (await http.get(base + "/errors/dashboard", headers={"X-API-Key": key})).status_code == 200
            rebound = await http.get(base + "/health", headers={"Host": "evil.example"})
            assert rebound.status_code == 421
    finally:
        await stop_client(client)
    shown = [m.message for m in client.messages if "E4005" in m.message]
    assert len([m for m in shown if "hapa.sidecar.apiKey (initializationOptions)" in m]) == 1
    assert len([m for m in shown if "hapa.sidecar.apiKey (workspace/configuration)" in m]) == 1
    assert len([m for m in shown if "hapa.sidecar.allowedHosts (workspace/configuration)" in m]) == 1
    assert all("INC-" in m for m in shown)
    assert not [m.message for m in client.messages if key in m.message]


async def test_settings_from_the_workspace_cannot_move_the_sidecar_off_loopback(fake: FakeModelServer,
                                                                              tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path), configuration={"hapa": {"sidecar": {
        "host": "0.0.0.0", "apiKey": "key-the-repository-knows"}, "backend": {"maxTokens": 7}}})
    try:
        open_doc(client, "file:///ws/a.py", "def add(a, b):\n    \n")
        await inline(client, "file:///ws/a.py", 1, 4, invoked=True)
        assert fake.requests[-1].json["options"]["num_predict"] == 7  # the rest of the answer applies
        url = await sidecar_url(client)
        await asyncio.sleep(0.3)  # a restart the workspace's host would have caused has had its time
        assert (await command(client, "hapa.health"))["sidecar"] == url
        assert url.startswith("http://127.0.0.1:"), url
        async with httpx.AsyncClient(trust_env=False) as http:
            # Still the user's sidecar: loopback, no key (the repository's key means nothing).
            assert (await http.get(f"{url}/errors/dashboard")).status_code == 200
    finally:
        await stop_client(client)
    shown = [m.message for m in client.messages if "E4005" in m.message]
    assert any("hapa.sidecar.host (workspace/configuration)" in m for m in shown)
    assert any("hapa.sidecar.apiKey (workspace/configuration)" in m for m in shown)


async def test_a_refused_sidecar_is_reported_once_across_settings_changes(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_HOST="0.0.0.0"),
                                configuration={"hapa": {}})
    try:
        for port in (7500, 7600, 7700):  # each change restarts the sidecar, which is refused each time
            client.set_configuration({"hapa": {"sidecar": {"port": port}}})
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
            await asyncio.sleep(0.3)
        assert (await command(client, "hapa.health"))["sidecar"] is None
    finally:
        await stop_client(client)
    refused = [m.message for m in client.messages if "sidecar is not started" in m.message]
    assert len(refused) == 1 and "E4005" in refused[0]
