"""Cost of the sidecar and metrics on the typing path, and /metrics latency under inline load.

1. Inline completion round trips with metrics and sidecar on vs off, in one run, two servers side by side
   with requests alternating between them:
   p50 of the model path (a new context each request, the fake answers at once) and of the cache path
   (the same context again: only the server's own work). Reports the on/off ratio of the p50s.
2. /metrics p99 while the server handles 20 inline requests per second.

The real server runs over stdio; the fake model server runs in thread mode. Medians of --runs runs.

    python benchmarks/metrics_overhead.py [--runs 3] [--requests 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fakes.model_server import FakeModelServer  # noqa: E402

URI = "file:///bench/typing.py"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


async def start(fake: FakeModelServer, root: str, metrics: bool) -> LanguageClient:
    """The server over stdio with metrics and the sidecar on or off, initialized like an editor."""
    os.makedirs(root, exist_ok=True)
    client = LanguageClient("bench", "1")

    @client.feature("hapa/status")
    def status(ls: LanguageClient, params) -> None:
        return None

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(ls: LanguageClient, params) -> None:
        return None

    on = "true" if metrics else "false"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPA_")}
    env.update(HAPA_BACKEND_ENDPOINT=fake.url, HAPA_STORAGE_PATH=os.path.join(root, "hapa.db"),
               HAPA_SIDECAR_ENABLED=on, HAPA_SIDECAR_METRICS=on, HAPA_SIDECAR_PORT="0",
               HAPA_LOGGING_LEVEL="WARNING", HAPA_RATE_LIMITS_ENABLED="false",
               HAPA_COMPLETION_DEBOUNCE_MS="0", HAPA_COMPLETION_MAX_DEBOUNCE_MS="0")
    await client.start_io(sys.executable, "-m", "hapa_lsp", env=env)
    caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
        inline_completion=types.InlineCompletionClientCapabilities()))
    await client.initialize_async(types.InitializeParams(capabilities=caps, root_uri=Path(root).as_uri()))
    client.initialized(types.InitializedParams())
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(URI, "python", 1, "def f0(x):\n    \n")))
    return client


async def stop(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


async def sidecar_url(client: LanguageClient) -> str:
    for _ in range(200):
        health = await client.workspace_execute_command_async(types.ExecuteCommandParams("hapa.health"))
        if health.get("sidecar"):
            return health["sidecar"]
        await asyncio.sleep(0.05)
    raise RuntimeError("the sidecar did not start")


class Typist:
    """Sends inline requests for fresh contexts (model path) or the same one again (cache path)."""

    def __init__(self, client: LanguageClient):
        self.client = client
        self.version = 1

    async def request(self, fresh: bool) -> float:
        if fresh:
            self.version += 1
            self.client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(version=self.version, uri=URI),
                content_changes=[types.TextDocumentContentChangeWholeDocument(
                    text=f"def f{self.version}(x):\n    \n")]))
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(URI), position=types.Position(1, 4))
        t0 = time.perf_counter()
        result = await self.client.text_document_inline_completion_async(params)
        ms = (time.perf_counter() - t0) * 1000
        if result is None:
            raise RuntimeError("no suggestion: the benchmark would measure the wrong thing")
        return ms


async def overhead_run(fake: FakeModelServer, root: str, n: int) -> dict[bool, tuple[float, float]]:
    """{metrics on?: (p50 model path, p50 cache path)} in ms, for two servers running side by side.

    Requests alternate between the server with metrics off and the one with metrics on (and which goes
    first alternates too), so background load on a shared machine falls on both alike.
    """
    clients = {False: await start(fake, os.path.join(root, "off"), False),
               True: await start(fake, os.path.join(root, "on"), True)}
    try:
        await sidecar_url(clients[True])
        typists = {m: Typist(c) for m, c in clients.items()}
        for _ in range(20):  # warm up imports, the connection pool and jedi
            for t in typists.values():
                await t.request(True)
        model: dict[bool, list[float]] = {False: [], True: []}
        cache: dict[bool, list[float]] = {False: [], True: []}
        for i in range(n):
            for m in ((False, True) if i % 2 == 0 else (True, False)):
                model[m].append(await typists[m].request(True))
                cache[m].append(await typists[m].request(False))
        return {m: (statistics.median(model[m]), statistics.median(cache[m])) for m in (False, True)}
    finally:
        for c in clients.values():
            await stop(c)


_SCRAPER = """
import sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
out, size, end = [], 0, time.perf_counter() + seconds
with httpx.Client(trust_env=False) as http:
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        size = len(http.get(url).content)
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.1)
print(*out, size)
"""


async def scrape_run(fake: FakeModelServer, root: str, seconds: float) -> tuple[float, float, int]:
    """(/metrics p99 ms, achieved inline requests per second, scrape size in bytes) under 20 inline req/s."""
    client = await start(fake, root, True)
    try:
        url = await sidecar_url(client)
        typist = Typist(client)
        for _ in range(20):
            await typist.request(True)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def type_steadily() -> None:
            nonlocal done
            tick = time.perf_counter()
            while time.perf_counter() < stop_at:
                await typist.request(done % 3 != 0)  # two fresh contexts, then one repeat
                done += 1
                tick += 0.05  # 20 per second
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))

        typing = asyncio.ensure_future(type_steadily())
        started = time.perf_counter()
        # The scraper is its own process, like Prometheus: this process's event loop (the typist, the
        # LSP client) and the fake model's thread must not queue in front of its timing.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SCRAPER, f"{url}/metrics", str(seconds), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        await typing
        rate = done / (time.perf_counter() - started)
        times = [float(x) for x in out.decode().split()]
        size = int(times.pop())
        return pct(times, 99), rate, size
    finally:
        await stop(client)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200, help="inline requests of each kind per server")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each /metrics scrape run")
    args = ap.parse_args()
    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:1.5b-base", default_text="return x + 1\n")
    try:
        with tempfile.TemporaryDirectory() as root:
            rows: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for run in range(args.runs):
                res = await overhead_run(fake, os.path.join(root, str(run)), args.requests)
                for metrics in (False, True):
                    rows[metrics].append(res[metrics])
                print(f"run {run + 1}: model path p50 off {res[False][0]:.2f} / on {res[True][0]:.2f} ms, "
                      f"cache path p50 off {res[False][1]:.2f} / on {res[True][1]:.2f} ms", flush=True)
            off_m = statistics.median(r[0] for r in rows[False])
            on_m = statistics.median(r[0] for r in rows[True])
            off_c = statistics.median(r[1] for r in rows[False])
            on_c = statistics.median(r[1] for r in rows[True])
            # Each run's servers saw the same background load, so the ratio is taken per run, then the median.
            ratio_m = statistics.median(on[0] / off[0] for off, on in zip(rows[False], rows[True]))
            ratio_c = statistics.median(on[1] / off[1] for off, on in zip(rows[False], rows[True]))
            print(f"\ninline round trip p50, median of {args.runs} runs x {args.requests} requests:")
            print(f"  model path: metrics off {off_m:.2f} ms, on {on_m:.2f} ms; median per-run ratio on/off "
                  f"{ratio_m:.3f}")
            print(f"  cache path: metrics off {off_c:.2f} ms, on {on_c:.2f} ms; median per-run ratio on/off "
                  f"{ratio_c:.3f}")
            scrapes = [await scrape_run(fake, os.path.join(root, f"scrape{i}"), args.seconds)
                       for i in range(args.runs)]
            for i, (p99, rate, size) in enumerate(scrapes, 1):
                print(f"scrape run {i}: /metrics p99 {p99:.2f} ms at {rate:.1f} inline req/s ({size} bytes)")
            print(f"/metrics p99 under ~20 inline req/s, median of {args.runs} runs: "
                  f"{statistics.median(s[0] for s in scrapes):.2f} ms")
    finally:
        fake.close()


if __name__ == "__main__":
    asyncio.run(main())
