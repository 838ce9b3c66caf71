"""Typing replay: drive the real server over stdio while re-typing a real function at one character per 30 ms.

The fake model server (tests/fakes) answers every completion after a fixed latency (150 ms) with
the rest of the line the typist is about to type, like a good model would. For each run this
prints upstream calls per keystroke, aborted upstream requests, the server's own overhead per
answered inline request (response time minus model time minus the deliberate debounce wait),
the cache-hit / type-through round trip, the time from the last keystroke to the final answer,
time to the initialize response next to a do-nothing pygls server, and RSS. Figures are medians
of --runs runs.

    python benchmarks/typing_replay.py [--runs 3] [--latency 0.15] [--interval 0.03] [--line-pause 0.4]

It also reports how much of each prompt a prefix-caching model server (llama.cpp ``cache_prompt``, vLLM
prefix caching, Ollama) could reuse: for every prompt the fake model server received, the share of its bytes
that equals a prefix of the prompt before it (longest common prefix / its length), p50 and p10, over all
prompts and over consecutive prompts built on the same line. The debounce lets few prompts through while
the typist never pauses (and a suggestion typed through asks nothing), so --sharing-runs more runs replay
with the debounce off against a model that answers nothing: every keystroke's prompt is sent, for the
"one line" figure (target p50 >= 0.90).

Within a line the typist never pauses, so every keystroke aborts the request before it (as it
must); at the end of each line they pause for --line-pause seconds, which is when a suggestion
can arrive. With --line-pause 0 only the final request of the replay is ever answered.

    python benchmarks/typing_replay.py --llama-server "$(.ci/build-llama-server)" [--runs 3]

runs instead against a real llama.cpp llama-server (the bigram test model of tests/real) and reports the
prompt tokens the server actually evaluated (its timings.prompt_n) per request and per keystroke while one
line is typed, for the `openai` and `llamacpp` kinds, next to what cache-less requests would evaluate.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.model_server import FakeModelServer  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = {"2,273-line logging/__init__.py": STDLIB / "logging" / "__init__.py",
         "4,643-line tkinter/__init__.py": STDLIB / "tkinter" / "__init__.py"}


class Client:
    """A minimal LSP client over the server's stdio, timing every request."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.reader_task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            length = 0
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif line == b"\r\n":
                    break
            body = json.loads(await self.proc.stdout.readexactly(length))
            if "id" in body and "method" in body:  # a request from the server (configuration, ...)
                self._send({"jsonrpc": "2.0", "id": body["id"],
                            "result": [None] if body["method"] == "workspace/configuration" else None})
            elif "id" in body and body["id"] in self.pending:
                self.pending.pop(body["id"]).set_result((time.perf_counter(), body))

    def _send(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)

    def request(self, method: str, params: dict) -> tuple[float, asyncio.Future]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        t0 = time.perf_counter()
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return t0, fut

    def notify(self, method: str, params: dict) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def close(self) -> None:
        _, fut = self.request("shutdown", {})
        try:
            await asyncio.wait_for(fut, 5)
            self.notify("exit", {})
            await asyncio.wait_for(self.proc.wait(), 5)
        except (TimeoutError, asyncio.TimeoutError):
            self.proc.kill()
        self.reader_task.cancel()


async def start(cmd: list[str], env: dict[str, str]) -> tuple[Client, float]:
    """Start a server and return the client and the time to its initialize response."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL, env=env)
    client = Client(proc)
    _, fut = client.request("initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": {
        "textDocument": {"inlineCompletion": {}, "completion": {"completionItem": {"snippetSupport": False}}},
        "workspace": {"configuration": True}}})
    t_done, _ = await fut
    client.notify("initialized", {})
    return client, t_done - t0


def pick_function(source: str) -> tuple[int, int]:
    """(first body line, end line) of a function near the middle whose body is a few hundred characters."""
    tree = ast.parse(source)
    lines = source.split("\n")
    best: tuple[float, int, int] | None = None
    mid = len(lines) / 2
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.body and not ast.get_docstring(node):
            start, end = node.body[0].lineno - 1, node.end_lineno
            body = "\n".join(lines[start:end])
            if 250 <= len(body) <= 450 and "\t" not in body:
                score = abs(start - mid)
                if best is None or score < best[0]:
                    best = (score, start, end)
    assert best is not None
    return best[1], best[2]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the jedi worker, and any helper jedi starts for a virtualenv)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def common_prefix_len(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of ``a`` and ``b`` (bisection over slice comparisons: fast in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cursor_line(prompt: str, original: str, body_offset: int) -> int:
    """The line of ``original`` the cursor was on when ``prompt`` was built (the typed text is the original's)."""
    head = prompt.split("<|fim_suffix|>")[0]
    typed = head[head.rfind("<|fim_prefix|>") + len("<|fim_prefix|>"):][-400:]
    pos = original.find(typed, max(0, body_offset - 400))
    return -1 if pos == -1 else original.count("\n", 0, pos + len(typed))


def prefix_sharing(prompts: list[str], original: str, body_offset: int) -> tuple[list[float], list[float]]:
    """(same line, all): for each prompt after the first, the share of its bytes that equals a prefix of the prompt
    before it (longest common prefix / its length), what a prefix-caching model server need not evaluate again.
    "Same line": the two prompts were built with the cursor on the same line (typing along one line)."""
    same: list[float] = []
    every: list[float] = []
    prev: bytes | None = None
    prev_line = -2
    for text in prompts:
        data = text.encode("utf-8", "surrogatepass")
        line = cursor_line(text, original, body_offset)
        if prev is not None and data:
            share = common_prefix_len(prev, data) / len(data)
            every.append(share)
            if line == prev_line and line != -1:
                same.append(share)
        prev, prev_line = data, line
    return same, every


async def replay(path: Path, latency: float, interval: float, mode: str, log_file: str,
                 line_pause: float = 0.4, extra_env: dict[str, str] | None = None, silent: bool = False) -> dict:
    """One run: open the file without the chosen function's body and type the body back (``silent``: the model
    never answers anything, so no keystroke is served by a suggestion typed through and each one asks it)."""
    original = path.read_text()
    lines = original.split("\n")
    b0, b1 = pick_function(original)
    indent = lines[b0][: len(lines[b0]) - len(lines[b0].lstrip())]
    body = "\n".join(lines[b0:b1])[len(indent):]
    doc = "\n".join(lines[:b0] + [indent] + lines[b1:])
    body_offset = len("\n".join(lines[:b0])) + 1 + len(indent)

    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:1.5b-base", latency=latency)

    def answer(record) -> str:
        # Like a good model: the rest of the current line of the original code.
        prompt = record.prompt or ""
        prefix = prompt.split("<|fim_suffix|>")[0].replace("<|fim_prefix|>", "")
        typed = prefix[-400:]
        pos = original.find(typed, body_offset - 400)
        if pos == -1:
            return ""
        pos += len(typed)
        return original[pos:original.find("\n", pos)]

    fake.script((lambda record: "") if silent else answer)
    env = {**os.environ, "HAPA_BACKEND_ENDPOINT": fake.url, "HAPA_LOGGING_FILE": log_file,
           "HAPA_LOGGING_FORMAT": "json", "HAPA_LOGGING_LEVEL": "INFO", **(extra_env or {})}
    client, init_s = await start([sys.executable, "-m", "hapa_lsp"], env)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                           "text": doc}})
    await asyncio.sleep(1.0)  # let the server warm up (jedi, imports) as it does while the user reads
    line, col = b0, len(indent)
    answers: list[tuple[float, float, dict]] = []
    futures = []
    version = 1
    t_last_key = 0.0
    for ch in body:
        version += 1
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
            {"range": {"start": {"line": line, "character": col}, "end": {"line": line, "character": col}},
             "text": ch}]})
        if ch == "\n":
            line, col = line + 1, 0
        else:
            col += 1
        if mode == "inline":
            t0, fut = client.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": {"line": line, "character": col},
                "context": {"triggerKind": 2}})
        else:
            t0, fut = client.request("textDocument/completion", {
                "textDocument": {"uri": uri}, "position": {"line": line, "character": col},
                "context": {"triggerKind": 1}})
        futures.append((t0, fut))
        t_last_key = time.perf_counter()
        await asyncio.sleep(line_pause if ch == "\n" and line_pause else interval)
    results = await asyncio.gather(*(f for _, f in futures))
    for (t0, _), (t1, body_msg) in zip(futures, results):
        answers.append((t0, t1, body_msg))
    final_latency = results[-1][0] - t_last_key
    pid = client.proc.pid
    rss = rss_mb(pid)
    rss_children = sum(rss_mb(c) for c in descendants(pid))
    await client.close()
    keystrokes = len(body)
    calls = fake.count("/api/generate")
    aborted = sum(1 for r in fake.requests if r.client_disconnected)
    # The prompts as the model server received them, in arrival order (one document: all are "the same document").
    sent = sorted((r for r in fake.requests if r.path == "/api/generate" and r.prompt), key=lambda r: r.started_at)
    share_line, share_all = prefix_sharing([r.prompt for r in sent], original, body_offset)
    fake.close()

    # Per-request server timings from the JSON log (one "inline" line per answered request).
    timings = []
    with open(log_file) as fh:
        for ln in fh:
            try:
                ev = json.loads(ln)
            except ValueError:
                continue
            if ev.get("event") == "inline":
                timings.append(ev)
    rtts: dict[str, list[float]] = {"model": [], "cache": []}
    answered = [(t0, t1) for t0, t1, m in answers if (m.get("result") or {}) and (m["result"].get("items"))]
    for (t0, t1), ev in zip(answered, timings):
        rtt_ms = (t1 - t0) * 1000
        if ev.get("source") == "model":
            rtts["model"].append(rtt_ms - ev.get("model_ms", 0) - ev.get("debounce_ms", 0))
        else:
            rtts["cache"].append(rtt_ms)
    server_overhead = [ev["overhead_ms"] for ev in timings if "overhead_ms" in ev]
    # Completion lists: how many came with jedi's items, and how fast (jedi works in the server's worker).
    lists = [(t1 - t0, m.get("result") or {}) for t0, t1, m in answers if isinstance(m.get("result"), dict)
             and "isIncomplete" in m["result"]]
    with_jedi = [dt * 1000 for dt, r in lists
                 if any(not (i.get("detail") or "").startswith("hapa AI") for i in r.get("items", []))]
    prepare = [ev["prepare_ms"] for ev in timings if "prepare_ms" in ev]
    return {
        "keystrokes": keystrokes,
        "calls_per_keystroke": calls / keystrokes,
        "aborted": aborted,
        "overhead_p50_ms": pct(rtts["model"], 50),
        "overhead_p99_ms": pct(rtts["model"], 99),
        "server_overhead_p50_ms": pct(server_overhead, 50),
        "prepare_p50_ms": pct(prepare, 50),
        "cache_rtt_p50_ms": pct(rtts["cache"], 50),
        "reuse_answers": len(rtts["cache"]),
        "lists": len(lists),
        "lists_with_jedi": len(with_jedi),
        "jedi_list_p50_ms": pct(with_jedi, 50),
        "final_after_last_key_ms": final_latency * 1000,
        "init_ms": init_s * 1000,
        "rss_mb": rss,
        "rss_children_mb": rss_children,
        "prompts": len(sent),
        "same_line_pairs": len(share_line),
        **sharing_figures("line", share_line),
        **sharing_figures("all", share_all),
    }


def sharing_figures(which: str, shares: list[float]) -> dict:
    """p50, p10, mean, and the share of prompts that reuse less than half of the previous one (a cache miss)."""
    return {f"share_{which}_p50": pct(shares, 50), f"share_{which}_p10": pct(shares, 10),
            f"share_{which}_mean": statistics.fmean(shares) if shares else float("nan"),
            f"share_{which}_misses": sum(x < 0.5 for x in shares) / len(shares) if shares else float("nan")}


# ---- --llama-server: prompt tokens a real llama.cpp server evaluates while the user types ----------------------

LLAMA_LINE = "    record_count = self.format_count(record, include_context=True) + len(self.handlers)"


class TimingsProxy:
    """A loopback HTTP proxy in front of llama-server that keeps each answer's ``timings`` (prompt_n: prompt
    tokens evaluated; cache_n: reused from the KV cache), streamed (last SSE event) or not."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.records: list[dict] = []

    async def start(self) -> str:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp's bound port
        return f"http://127.0.0.1:{port}"

    async def _forward(self, request):
        import aiohttp
        from aiohttp import web

        try:
            return await self._relay(request)
        except (ConnectionResetError, aiohttp.ClientError):
            return web.Response(status=499)  # hapa closed the request (a newer keystroke): nothing to relay

    async def _relay(self, request):
        from aiohttp import web

        body = await request.read()
        try:
            warm = json.loads(body).get("n_predict") == 0  # the llamacpp kind's warm-up
        except (ValueError, AttributeError):
            warm = False
        rec: dict = {"path": request.path, "t": time.perf_counter(), "done": False, "warm": warm}
        self.records.append(rec)
        request["rec"] = rec
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                         headers={"Content-Type": request.headers.get("Content-Type", "")}) as up:
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")})
            await resp.prepare(request)
            tail = b""
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                    tail = (tail + chunk)[-65536:]
            except (ConnectionResetError, asyncio.CancelledError):
                rec["aborted"] = True  # hapa closed the stream (a newer keystroke): llama-server stops too
                raise
            for piece in reversed(tail.replace(b"\r", b"").split(b"\n")):
                piece = piece.strip()
                if piece.startswith(b"data:"):
                    piece = piece[5:].strip()
                if b'"timings"' not in piece:
                    continue
                try:
                    t = json.loads(piece)["timings"]
                except (ValueError, KeyError, TypeError):
                    continue
                rec.update(prompt_n=t.get("prompt_n", 0), cache_n=t.get("cache_n", 0), done=True)
                break
            return resp

    async def close(self) -> None:
        await self._session.close()
        await self._runner.cleanup()


def llama_metric(url: str, name: str) -> float:
    """One counter of llama-server's /metrics (started with --metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"llamacpp:{name} "):
                return float(line.split()[1])
    return 0.0


async def llama_replay(server, path: Path, kind: str, interval: float, log_file: str) -> dict:
    """One run: open ``path`` with an empty line in the middle and type LLAMA_LINE into it, one character
    per ``interval``, with an inline request per keystroke, through hapa-lsp against llama-server."""
    original = path.read_text()
    lines = original.split("\n")
    b0, _ = pick_function(original)
    doc = "\n".join(lines[:b0] + [""] + lines[b0:])
    proxy = TimingsProxy(server.url)
    url = await proxy.start()
    env = {**os.environ, "HAPA_BACKEND_KIND": kind, "HAPA_BACKEND_ENDPOINT": url,
           "HAPA_BACKEND_COMPLETION_MODEL": "qwen2.5-coder:bigram", "HAPA_BACKEND_CHAT_MODEL": "qwen2.5-coder:bigram",
           "HAPA_BACKEND_MAX_TOKENS": "16",
           # Every keystroke reaches the server (no debounce to swallow it): the cost of each request is measured.
           "HAPA_COMPLETION_DEBOUNCE_MS": "0", "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0",
           # The test model's vocabulary is bytes: one token per character, so budget in characters.
           "HAPA_CONTEXT_CHARS_PER_TOKEN": "1.0",
           "HAPA_LOGGING_FILE": log_file, "HAPA_SIDECAR_ENABLED": "false"}
    client, _ = await start([sys.executable, "-m", "hapa_lsp"], env)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                           "text": doc}})
    await asyncio.sleep(1.0)
    # One answered request at the empty line first (as after the cursor lands there): the cache holds this file.
    _, fut = client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": b0, "character": 0}, "context": {"triggerKind": 1}})
    await fut
    await asyncio.sleep(0.3)
    before = len(proxy.records)
    processed0 = llama_metric(server.url, "prompt_tokens_total")
    futures, version, col = [], 1, 0
    for ch in LLAMA_LINE:
        version += 1
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
            {"range": {"start": {"line": b0, "character": col}, "end": {"line": b0, "character": col}},
             "text": ch}]})
        col += 1
        _, fut = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": b0, "character": col}, "context": {"triggerKind": 2}})
        futures.append(fut)
        await asyncio.sleep(interval)
    await asyncio.gather(*futures)
    await asyncio.sleep(0.5)  # a warm-up still in flight ends
    await client.close()
    processed_all = llama_metric(server.url, "prompt_tokens_total") - processed0
    await proxy.close()
    recs = proxy.records[before:]
    done = [r for r in recs if r.get("done")]
    fim = [r for r in done if r["path"] in ("/infill", "/v1/completions")]
    total = [r["prompt_n"] + r["cache_n"] for r in fim]
    n = len(LLAMA_LINE)
    return {
        "keystrokes": n,
        "requests": len(recs),
        "answered": sum(1 for r in fim if not r["warm"]),
        "aborted": sum(1 for r in recs if r.get("aborted")),
        "warm_ups": sum(1 for r in fim if r["warm"]),
        "processed_p50": statistics.median(r["prompt_n"] for r in fim) if fim else float("nan"),
        "prompt_p50": statistics.median(total) if total else float("nan"),
        "share_p50": statistics.median(r["prompt_n"] / max(1, r["prompt_n"] + r["cache_n"]) for r in fim)
        if fim else float("nan"),
        "processed_per_key": processed_all / n,
        "cacheless_per_key": sum(total) / n,
    }


async def llama_main(args: argparse.Namespace) -> None:
    """--llama-server: the openai and llamacpp kinds against a real llama-server, medians of --runs runs."""
    from tests.real import llama_model
    from tests.real.conftest import LlamaServer

    with tempfile.TemporaryDirectory() as tmp:
        model = llama_model.build(Path(tmp) / "bigram.gguf")
        server = LlamaServer(args.llama_server, model, Path(tmp) / "llama-server.log",
                             ("--metrics", "-c", "16384", "-b", "4096"))
        try:
            print(f"machine: {os.cpu_count()} cores; llama-server (one slot) with the bigram test model "
                  f"(tests/real/llama_model.py, byte-level: about a token per character); debounce off; typing one {len(LLAMA_LINE)}-character "
                  f"line at {args.llama_interval * 1000:.0f} ms per character; medians of {args.runs} runs")
            for label, path in FILES.items():
                if args.files not in label:
                    continue
                print(f"\n[{label}]")
                print(f"  {'kind':9} {'requests':>8} {'answered':>8} {'warm-ups':>8} {'prompt p50':>10} {'evaluated p50':>13} "
                      f"{'share p50':>9} {'evaluated/key':>13} {'cache-less/key':>14}")
                for kind in ("openai", "llamacpp"):
                    runs = [await llama_replay(server, path, kind, args.llama_interval, os.path.join(tmp, f"{kind}.log"))
                            for _ in range(args.runs)]
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    print(f"  {kind:9} {med['requests']:8.0f} {med['answered']:8.0f} {med['warm_ups']:8.0f} {med['prompt_p50']:10.0f} "
                          f"{med['processed_p50']:13.0f} {med['share_p50'] * 100:8.1f}% {med['processed_per_key']:13.1f} "
                          f"{med['cacheless_per_key']:14.1f}")
            print("\n  share p50: prompt tokens evaluated / prompt tokens of the request, median over requests "
                  "(target for llamacpp <= 20 %)")
        finally:
            server.kill()


NO_DEBOUNCE = {"HAPA_COMPLETION_DEBOUNCE_MS": "0", "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0"}


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over the runs (runs where a figure had no sample, NaN, do not count)."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if r[k] == r[k]]
        out[k] = statistics.median(vals) if vals else float("nan")
    return out


def share(med: dict, which: str) -> str:
    """A prefix-sharing figure: p50, p10, mean, and how many prompts reused less than half."""
    return (f"p50 {med[f'share_{which}_p50']:.3f}, p10 {med[f'share_{which}_p10']:.3f}, mean "
            f"{med[f'share_{which}_mean']:.3f}; {med[f'share_{which}_misses'] * 100:.1f} % below 0.5")


async def normal_pass(args: argparse.Namespace, mode: str, label: str, path: Path, extra_env: dict[str, str]
                      ) -> None:
    """--runs replays with the server's default settings (plus --env) and their figures."""
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(await replay(path, args.latency, args.interval, mode,
                                     os.path.join(tmp, "server.log"), args.line_pause, extra_env))
    med = median_of(runs)
    print(f"\n[{mode} request per keystroke] {label}, {med['keystrokes']:.0f} keystrokes")
    print(f"  upstream calls per keystroke      {med['calls_per_keystroke']:.3f}   (target <= 0.25)")
    print(f"  upstream requests aborted         {med['aborted']:.0f}")
    if mode == "inline":
        print(f"  overhead per inline request p50   {med['overhead_p50_ms']:.2f} ms   (target <= 5)")
        print(f"  overhead per inline request p99   {med['overhead_p99_ms']:.2f} ms   (target <= 25)")
        print(f"  in-server overhead p50 (log)      {med['server_overhead_p50_ms']:.2f} ms")
        print(f"  prompt preparation p50 (log)      {med['prepare_p50_ms']:.2f} ms   (inside the debounce)")
        print(f"  cache / type-through round trip   {med['cache_rtt_p50_ms']:.2f} ms p50 over "
              f"{med['reuse_answers']:.0f} answers   (target <= 3)")
    if mode == "completion":
        print(f"  lists with jedi's items           {med['lists_with_jedi']:.0f} of {med['lists']:.0f}, "
              f"round trip p50 {med['jedi_list_p50_ms']:.1f} ms")
    print(f"  final answer after last keystroke {med['final_after_last_key_ms']:.0f} ms   "
          f"(target <= {args.latency * 1000 + 100:.0f})")
    print(f"  RSS at the end                    {med['rss_mb']:.0f} MB   (target <= 100)")
    print(f"  + its child processes (jedi)      {med['rss_children_mb']:.0f} MB   "
          f"(total {med['rss_mb'] + med['rss_children_mb']:.0f} MB)")
    if mode == "inline":
        print(f"  prompt prefix shared, all         {share(med, 'all')}   over {med['prompts']:.0f} prompts")


async def baseline_init() -> float:
    """Time to the initialize response of a do-nothing pygls server."""
    code = "from pygls.lsp.server import LanguageServer; LanguageServer('nothing', '0').start_io()"
    client, init_s = await start([sys.executable, "-c", code], dict(os.environ))
    await client.close()
    return init_s * 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.15)
    ap.add_argument("--interval", type=float, default=0.03)
    ap.add_argument("--line-pause", type=float, default=0.4)
    ap.add_argument("--modes", default="inline,completion", help="comma-separated: inline, completion")
    ap.add_argument("--files", default="", help="only files whose label contains this text")
    ap.add_argument("--sharing-runs", type=int, default=None,
                    help="runs of the inline replay with the debounce off against a model that answers nothing "
                         "(every keystroke's prompt reaches the model server), for the prompt prefix shared while "
                         "typing on one line (default: --runs; 0: skip; --runs 0 runs only these)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra server environment, e.g. HAPA_CONTEXT_FACTS=false (repeatable)")
    ap.add_argument("--llama-interval", type=float, default=0.15,
                    help="seconds per character in the --llama-server mode (slow enough for requests to be sent)")
    ap.add_argument("--llama-server", default=None, metavar="PATH",
                    help="instead: the prompt tokens a real llama-server (this binary, e.g. the one "
                         ".ci/build-llama-server prints) evaluates while typing, kinds openai vs llamacpp")
    args = ap.parse_args()
    if args.sharing_runs is None:
        args.sharing_runs = args.runs
    if args.llama_server:
        await llama_main(args)
        return
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; model latency "
          f"{args.latency * 1000:.0f} ms; {args.interval * 1000:.0f} ms per character, {args.line_pause * 1000:.0f} ms "
          f"pause at line ends; medians of {args.runs} runs ({args.sharing_runs} with every keystroke sent)")
    base, ours = [], []
    for _ in range(max(args.runs, 5) if args.runs else 0):  # --runs 0: only the prefix-sharing replays
        # A pause before each start: the previous server's exit (and its jedi worker's) must not be measured.
        await asyncio.sleep(0.5)
        base.append(await baseline_init())
        await asyncio.sleep(0.5)
        client, t = await start([sys.executable, "-m", "hapa_lsp"], {**os.environ, "HAPA_SIDECAR_ENABLED": "false"})
        await client.close()
        ours.append(t * 1000)
    if ours:
        print(f"initialize response: hapa-lsp {statistics.median(ours):.0f} ms, do-nothing pygls server "
              f"{statistics.median(base):.0f} ms (difference "
              f"{statistics.median(ours) - statistics.median(base):+.0f} ms)")
    extra_env = dict(e.split("=", 1) for e in args.env)
    if extra_env:
        print(f"server environment: {extra_env}")
    for mode in args.modes.split(","):
        for label, path in FILES.items():
            if args.files not in label:
                continue
            if args.runs:
                await normal_pass(args, mode, label, path, extra_env)
            if mode == "inline" and args.sharing_runs:
                # The debounce swallows most keystrokes above; with it off, every keystroke's prompt is sent.
                sharing = []
                for _ in range(args.sharing_runs):
                    with tempfile.TemporaryDirectory() as tmp:
                        sharing.append(await replay(path, args.latency, args.interval, mode,
                                                    os.path.join(tmp, "server.log"), args.line_pause,
                                                    {**extra_env, **NO_DEBOUNCE}, silent=True))
                sm = median_of(sharing)
                if not args.runs:
                    print(f"\n[{mode} request per keystroke] {label}, {sm['keystrokes']:.0f} keystrokes")
                print(f"  every keystroke sent (debounce 0, a model that answers nothing), {sm['prompts']:.0f} "
                      f"prompts:")
                print(f"  prompt prefix shared, one line    {share(sm, 'line')}   over "
                      f"{sm['same_line_pairs']:.0f} pairs   (target p50 >= 0.90)")
                print(f"  prompt prefix shared, all         {share(sm, 'all')}")


if __name__ == "__main__":
    asyncio.run(main())
