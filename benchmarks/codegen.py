"""Code generation overheads: code-action listing latency on a 2,000-line file (no model call) and the server's
own time before the first streamed chunk, against the fake model server. Prints medians of several runs.

    python benchmarks/codegen.py [--runs 3] [--listings 400] [--generations 20] [--latency 0.15]
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

FUNC = '''

def function_{i}(items, limit=10):
    """Return the first items below the limit."""
    out = []
    for x in items:
        if x < limit:
            out.append(x)
    return out


def stub_{i}(a: int, b: int) -> int:
    """Add two numbers."""
    ...

# TODO: cache the results of function_{i} between calls
'''


def big_file(lines: int = 2000) -> str:
    """A Python file of about ``lines`` lines with functions, stubs, TODOs and comments."""
    parts, i = ["import os\n"], 0
    while sum(p.count("\n") for p in parts) < lines:
        parts.append(FUNC.format(i=i))
        i += 1
    return "".join(parts)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


async def start(fake: FakeModelServer, root: str) -> LanguageClient:
    """The server in a subprocess, initialized like an editor with progress and code-action resolve support."""
    client = LanguageClient("bench", "1")
    client.chunks = []  # type: ignore[attr-defined]

    @client.feature("hapa/streamChunk")
    def chunk(ls: LanguageClient, params) -> None:
        ls.chunks.append((time.monotonic(), params))  # type: ignore[attr-defined]

    @client.feature("hapa/status")
    def status(ls: LanguageClient, params) -> None:
        return None

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def create(ls: LanguageClient, params) -> None:
        return None

    @client.feature(types.PROGRESS)
    def progress(ls: LanguageClient, params) -> None:
        return None

    env = {k: v for k, v in os.environ.items() if not k.startswith("HAPA_")}
    env.update(HAPA_BACKEND_ENDPOINT=fake.url, HAPA_STORAGE_PATH=os.path.join(root, "hapa.db"),
               HAPA_SIDECAR_ENABLED="false", HAPA_LOGGING_LEVEL="WARNING", HAPA_RATE_LIMITS_ENABLED="false")
    await client.start_io(sys.executable, "-m", "hapa_lsp", env=env)
    caps = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        text_document=types.TextDocumentClientCapabilities(code_action=types.CodeActionClientCapabilities(
            code_action_literal_support=types.ClientCodeActionLiteralOptions(
                code_action_kind=types.ClientCodeActionKindOptions(value_set=["", "refactor", "source"])),
            data_support=True, resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]))))
    await client.initialize_async(types.InitializeParams(capabilities=caps, root_uri=Path(root).as_uri()))
    client.initialized(types.InitializedParams())
    return client


async def stop(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


async def listing_run(client: LanguageClient, uri: str, n_lines: int, n: int) -> list[float]:
    """Round-trip times (ms) of textDocument/codeAction at positions spread over the file, some with selections."""
    out = []
    for k in range(n):
        line = (k * 37) % (n_lines - 5)
        end = types.Position(line + 3, 0) if k % 4 == 0 else types.Position(line, 4)
        params = types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri),
                                        range=types.Range(types.Position(line, 4), end),
                                        context=types.CodeActionContext(diagnostics=[]))
        t0 = time.perf_counter()
        await client.text_document_code_action_async(params)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def first_chunk_run(client: LanguageClient, fake: FakeModelServer, n: int, run: int
                          ) -> tuple[list[float], list[float]]:
    """(overhead before the first chunk, server-measured time before the upstream call), ms per generation."""
    overheads, before = [], []
    for k in range(n):
        client.chunks.clear()  # type: ignore[attr-defined]
        fake.queue("```python\ndef f(x):\n    return x + 1\n```\nAdds one.")
        t_send = time.monotonic()
        result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="hapa.generateCode", arguments=[{"user_question": f"add one, run {run} number {k}"}]))
        assert result["status"] == "success", result
        t_chunk = client.chunks[0][0]  # type: ignore[attr-defined]
        # Everything between sending the request and seeing the first chunk that is not the model's latency.
        overheads.append((t_chunk - t_send - fake.latency) * 1000)
        before.append(result["timings"]["before_upstream_ms"])
    return overheads, before


async def direct_run(fake: FakeModelServer, n: int) -> list[float]:
    """The same chat request straight to the fake with httpx: what HTTP and the fake cost with no server between."""
    import httpx

    out = []
    async with httpx.AsyncClient(trust_env=False) as http:
        for k in range(n):
            fake.queue("```python\ndef f(x):\n    return x + 1\n```\nAdds one.")
            payload = {"model": "qwen2.5-coder:7b-instruct", "stream": True,
                       "messages": [{"role": "user", "content": f"direct {k}"}]}
            t0 = time.monotonic()
            async with http.stream("POST", f"{fake.url}/api/chat", json=payload) as resp:
                async for _line in resp.aiter_lines():
                    out.append((time.monotonic() - t0 - fake.latency) * 1000)
                    break
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--listings", type=int, default=400)
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.15, help="the fake model's time to first token (s)")
    args = ap.parse_args()
    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:7b-instruct", latency=args.latency)
    text = big_file()
    n_lines = text.count("\n")
    p50s, p99s, overheads, befores, directs = [], [], [], [], []
    try:
        with tempfile.TemporaryDirectory() as root:
            client = await start(fake, root)
            try:
                uri = Path(root, "big.py").as_uri()
                client.text_document_did_open(types.DidOpenTextDocumentParams(
                    types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
                await listing_run(client, uri, n_lines, 50)  # warm-up
                calls_before = fake.count()
                for run in range(args.runs):
                    times = await listing_run(client, uri, n_lines, args.listings)
                    p50s.append(pct(times, 50))
                    p99s.append(pct(times, 99))
                    print(f"run {run + 1}: codeAction on {n_lines} lines: p50 {p50s[-1]:.2f} ms, "
                          f"p99 {p99s[-1]:.2f} ms ({len(times)} requests)")
                assert fake.count() == calls_before, "listing code actions called the model"
                await first_chunk_run(client, fake, 3, -1)  # warm-up (imports, connection pool)
                for run in range(args.runs):
                    o, b = await first_chunk_run(client, fake, args.generations, run)
                    overheads.append(statistics.median(o))
                    befores.append(statistics.median(b))
                    print(f"run {run + 1}: before the first chunk, beyond the model's {args.latency * 1000:.0f} ms: "
                          f"median {overheads[-1]:.2f} ms (server before upstream call: {befores[-1]:.2f} ms)")
                    d = await direct_run(fake, args.generations)
                    directs.append(statistics.median(d))
                    print(f"run {run + 1}: the same request straight to the fake: {directs[-1]:.2f} ms beyond the "
                          f"model's latency")
            finally:
                await stop(client)
    finally:
        fake.close()
    print(f"\nmedian of {args.runs} runs: codeAction listing p50 {statistics.median(p50s):.2f} ms, "
          f"p99 {statistics.median(p99s):.2f} ms (goal <= 20 ms p99); model calls during listing: 0")
    print(f"median of {args.runs} runs: overhead before the first streamed chunk {statistics.median(overheads):.2f} "
          f"ms end to end (client + transport + server + fake HTTP; goal <= 10 ms), of which the server before "
          f"its upstream request {statistics.median(befores):.2f} ms")
    print(f"median of {args.runs} runs: the fake reached directly {statistics.median(directs):.2f} ms; the server's "
          f"share of the overhead {statistics.median(overheads) - statistics.median(directs):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
