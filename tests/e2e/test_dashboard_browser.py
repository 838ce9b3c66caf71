"""The HTML dashboard in headless Chromium (DevTools protocol): no console errors, numbers equal to the JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import websockets

from tests.e2e.conftest import open_doc, start_client, stop_client
from tests.e2e.test_sidecar import command, inline, ops_env, sidecar_url
from tests.fakes.model_server import FakeModelServer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package)")


class Page:
    """One page of a headless Chromium, driven over the DevTools protocol; collects console errors."""

    def __init__(self, ws: Any):
        self.ws = ws
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self.errors: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self._pending:
                self._pending.pop(msg["id"]).set_result(msg)
                continue
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                           for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                self.errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending[self._id] = fut
        await self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, 15)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    async def eval(self, expression: str) -> Any:
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(json.dumps(res["exceptionDetails"])[:500])
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {expression}; errors: {self.errors}")
            await asyncio.sleep(0.1)


async def open_browser(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """Start Chromium with a fresh profile; returns the process and its DevTools HTTP address."""
    proc = subprocess.Popen([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        line = (await loop.run_in_executor(None, proc.stderr.readline)).decode(errors="replace")
        m = re.search(r"DevTools listening on ws://([^/]+)/", line)
        if m:
            # Keep draining stderr so Chromium never blocks on a full pipe.
            loop.run_in_executor(None, proc.stderr.read)
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("chromium did not start its DevTools endpoint")


@contextlib.asynccontextmanager
async def browser_page(tmp_path: Path) -> AsyncIterator[tuple[Page, httpx.AsyncClient]]:
    """A headless Chromium tab driven over DevTools (Runtime, Log and Page enabled), and an HTTP client."""
    proc, devtools = await open_browser(tmp_path)
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            targets = (await http.get(f"http://{devtools}/json/list")).json()
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with websockets.connect(page_ws, max_size=None) as ws:
                page = Page(ws)
                for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                    await page.send(domain)
                yield page, http
    finally:
        proc.kill()
        proc.wait(timeout=10)


SHOWN = ["avg_response_time", "requests_per_minute", "total_requests", "p50_response_time", "p95_response_time",
         "p99_response_time", "suggestions_shown", "suggestions_accepted", "cache_hit_rate", "acceptance_rate",
         "total_tokens", "avg_tokens_per_request", "total_errors", "version", "health_status"]


async def test_dashboard_page_in_headless_chromium(fake: FakeModelServer, tmp_path: Path):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path))
    try:
        url = await sidecar_url(client)
        # Real traffic: a model answer, a cache hit, an acceptance and a failure.
        fake.queue("return a + b\n")
        open_doc(client, "file:///ws/calc.py", "def add(a, b):\n    \n")
        first = await inline(client, "file:///ws/calc.py", 1, 4)
        await inline(client, "file:///ws/calc.py", 1, 4)
        await command(client, "hapa.didAcceptCompletion", first.items[0].command.arguments[0])
        fake.fail_next("500")
        open_doc(client, "file:///ws/sub.py", "def sub(a, b):\n    \n")
        assert await inline(client, "file:///ws/sub.py", 1, 4) is None

        async with browser_page(tmp_path) as (page, http):
            await page.send("Page.navigate", url=f"{url}/dashboard")
            await page.wait_for("document.body && document.body.dataset.loaded === '1'")
            shown = await page.eval("(() => { const o = {}; for (const id of %s) "
                                    "o[id] = document.getElementById(id).textContent; return o; })()"
                                    % json.dumps(SHOWN))
            perf = (await http.get(f"{url}/analytics/performance")).json()
            dash = (await http.get(f"{url}/errors/dashboard")).json()
            rows = await page.eval("document.querySelectorAll('#recent tbody tr').length")
            methods = await page.eval("[...document.querySelectorAll('#methods tbody tr td:first-child')]"
                                      ".map(td => td.textContent)")
            bars = await page.eval("document.querySelectorAll('#methods_chart rect').length")
            resources = await page.eval("performance.getEntriesByType('resource').map(e => e.name)")

            # The page refreshes itself: a new request shows up without reloading.
            before = int(shown["total_requests"])
            await page.eval("(() => { const s = document.getElementById('every'); s.value = '2000'; "
                            "s.dispatchEvent(new Event('change')); })()")
            await command(client, "hapa.stats")
            await page.wait_for(f"Number(document.getElementById('total_requests').textContent) > {before}")
            errors_seen = list(page.errors)
        assert errors_seen == []
        for key in ("avg_response_time", "requests_per_minute", "total_requests", "p50_response_time",
                    "p95_response_time", "p99_response_time", "suggestions_shown", "suggestions_accepted"):
            # Numbers as the page shows them: JavaScript prints 8.0 as "8".
            assert float(shown[key]) == float(perf[key]), (key, shown[key], perf[key])
        assert shown["total_tokens"] == str(perf["ai_model_usage"]["total_tokens"]) != "0"
        assert float(shown["avg_tokens_per_request"]) == float(perf["ai_model_usage"]["avg_tokens_per_request"])
        assert shown["cache_hit_rate"] == f"{round(perf['cache_hit_rate'] * 10000) / 100:g} %"
        assert shown["acceptance_rate"] == f"{round(perf['acceptance_rate'] * 10000) / 100:g} %"
        assert perf["suggestions_accepted"] == 1 and perf["cache_hit_rate"] > 0
        assert shown["total_errors"] == str(dash["total_errors"]) == "1"
        assert shown["health_status"] == "degraded"  # the last model call failed
        assert rows == len(dash["recent_incidents"]) == 1
        assert set(methods) == set(perf["by_method"]) and bars == len(methods)
        # Self-contained: everything it loaded came from the sidecar itself.
        assert resources and all(r.startswith(url) for r in resources)
    finally:
        await stop_client(client)


async def test_dashboard_with_an_api_key_in_the_url_fragment(fake: FakeModelServer, tmp_path: Path):
    key = "dash-key-7Yp2Qw"
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_SIDECAR_API_KEY=key))
    try:
        url = await sidecar_url(client)
        async with browser_page(tmp_path) as (page, _http):
            # Without the key the page asks for it instead of showing numbers.
            await page.send("Page.navigate", url=f"{url}/dashboard")
            await page.wait_for("(() => { const e = document.getElementById('auth'); "
                                "return !!e && getComputedStyle(e).display === 'block'; })()")
            assert "E4003" in await page.eval("document.getElementById('err').textContent")
            # With the key in the fragment (never sent to the server) it loads.
            # A full navigation (not a same-document fragment change): leave the page first.
            await page.send("Page.navigate", url="about:blank")
            await page.wait_for("location.href === 'about:blank'")
            page.errors.clear()
            await page.send("Page.navigate", url=f"{url}/dashboard#key={key}")
            await page.wait_for("document.body && document.body.dataset.loaded === '1'")
            assert await page.eval("document.getElementById('health_status').textContent") == "healthy"
            assert page.errors == []
    finally:
        await stop_client(client)
