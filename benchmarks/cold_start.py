"""Cold start: a brand-new server per measurement, one request at a fixed time after didOpen.

Every cell starts `python -m hapa_lsp` afresh over stdio, with a fresh XDG cache/data/state/config home (so a
fresh jedi/parso cache and database) and a fresh temporary workspace whose folder name has a space and a
non-ASCII character by default. The client initializes like Neovim 0.11 (plus inline completion), answers
workspace/configuration with the settings (endpoint of the fake model server, a fixed debounce), opens a
~17-line Python file and, --offsets seconds after didOpen, sends ONE request at the `os.path.` cursor:

  completion  textDocument/completion, triggerKind Invoked: jedi's items (every item that is not the
              "hapa AI" one), isIncomplete, whether the AI item came, and the round trip;
  inline      textDocument/inlineCompletion, triggerKind Automatic (as while typing): the round trip and the
              first model call's overhead = round trip - debounce - the model's own time, the model's time
              being what the fake model server measured (request received -> last byte sent). Then the
              same once more in the same server 0.5 s later one column to the left (another prompt, no
              cache hit): "second call's" overhead is what this harness adds on every call (the fake model
              server runs in this process and shares its GIL and loop wake-ups), "first - second" is what
              being the server's first model call costs.

"model call at" is when the fake model server received the first model request, counted from the LSP request
minus the debounce the server applies to it (Automatic inline requests: --debounce-ms; Invoked ones: none).
For inline requests the server's own JSON log line (prepare_ms, model_ms, overhead_ms) is printed next to these
figures for comparison. Figures are medians over --runs fresh servers per (kind, offset); the worst run is shown
too. Cells run interleaved (run 1 of every cell, then run 2, ...) with a pause between servers, so drift on a
shared machine spreads over all cells. What is not cold: the OS page cache and Python's .pyc files of hapa-lsp and jedi.

    python benchmarks/cold_start.py [--kind completion|inline|both] [--runs 5] [--offsets 0.3,1,3]
                                    [--latency 0.15] [--debounce-ms 40] [--timeout 20]
                                    [--workspace-name "my projé"] [--cache fresh|kept] [--jedi-helper on|off]
                                    [--markdown]

Targets (the project's cold-start issue): a completion request made >= 1 s after didOpen carries jedi's
items with p50 <= 400 ms; an Invoked completion never returns an empty jedi part because jedi is warming;
the first inline answer of a new server arrives within model latency + debounce + 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.typing_replay import descendants  # noqa: E402  # the jedi worker below a server
from tests.fakes.model_server import FakeModelServer  # noqa: E402

MODEL = "qwen2.5-coder:1.5b-base"  # the default completion model: the server's FIM template for it
ANSWER = "join(dirpath, name)\n"
CURSOR_LINE_TEXT = "            full = os.path."
SOURCE = f'''"""List the largest files under a directory."""
import os
import sys


def largest(root, count=10):
    """The ``count`` largest files below ``root`` as (size, path), largest first."""
    sizes = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
{CURSOR_LINE_TEXT}
            sizes.append((os.path.getsize(full), full))
    sizes.sort(reverse=True)
    return sizes[:count]


if __name__ == "__main__":
    for size, path in largest(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(f"{{size:>12}}  {{path}}")
'''
CURSOR = (SOURCE.split("\n").index(CURSOR_LINE_TEXT), len(CURSOR_LINE_TEXT))
AI_DETAIL = "hapa AI"  # hapa_lsp/features/completion.py: ai_item() sets detail "hapa AI · <model>"


class CellError(Exception):
    """A cell that could not be measured (server died, request timed out, error response)."""


def capabilities() -> dict[str, Any]:
    """Neovim 0.11's client capabilities (pytest-lsp's profile) plus inline completion."""
    try:
        from lsprotocol import converters, types
        from pytest_lsp import client_capabilities

        caps = client_capabilities("neovim")
        assert caps.text_document is not None
        caps.text_document.inline_completion = types.InlineCompletionClientCapabilities(dynamic_registration=False)
        return converters.get_converter().unstructure(caps)
    except ImportError:  # without the test extras: what the server looks at
        return {"textDocument": {"inlineCompletion": {}, "completion": {"completionItem": {"snippetSupport": True}}},
                "workspace": {"configuration": True, "workspaceFolders": True}}


class Client:
    """A minimal LSP client over the server's stdio: timed requests, answers to the server's requests."""

    def __init__(self, proc: asyncio.subprocess.Process, settings: dict[str, Any]):
        self.proc = proc
        self.settings = settings
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.config_asked_at: float | None = None
        self.reader_task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                length = 0
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise EOFError("server closed stdout")
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    elif line == b"\r\n":
                        break
                body = json.loads(await self.proc.stdout.readexactly(length))
                if "id" in body and "method" in body:  # a request from the server
                    result: Any = None
                    if body["method"] == "workspace/configuration":
                        self.config_asked_at = time.perf_counter()
                        items = (body.get("params") or {}).get("items") or []
                        result = [self.settings if i.get("section") == "hapa" else None for i in items]
                    await self.send({"jsonrpc": "2.0", "id": body["id"], "result": result})
                elif "id" in body and body["id"] in self.pending:
                    fut = self.pending.pop(body["id"])
                    if not fut.done():
                        fut.set_result((time.perf_counter(), body))
        except (EOFError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(CellError(f"server connection lost: {exc!r}"))
            self.pending.clear()

    async def send(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        await asyncio.wait_for(self.proc.stdin.drain(), 5)

    async def request(self, method: str, params: dict, timeout: float) -> tuple[float, float, dict]:
        """Send a request; (sent at, answered at, response) or CellError on timeout / error response."""
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        t0 = time.perf_counter()
        await self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        try:
            t1, body = await asyncio.wait_for(fut, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise CellError(f"{method}: no answer within {timeout:.0f} s") from None
        if "error" in body:
            raise CellError(f"{method}: error response {body['error']}")
        return t0, t1, body

    async def notify(self, method: str, params: dict) -> None:
        await self.send({"jsonrpc": "2.0", "method": method, "params": params})


async def stop_server(client: Client | None, proc: asyncio.subprocess.Process) -> None:
    """shutdown + exit like an editor; whatever is still running after a few seconds is killed (by pid)."""
    kids = descendants(proc.pid) if proc.returncode is None else []
    if client is not None and proc.returncode is None:
        try:
            await client.request("shutdown", {}, 5)
            await client.notify("exit", {})
        except (CellError, OSError, TimeoutError, asyncio.TimeoutError):
            pass
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except (TimeoutError, asyncio.TimeoutError):
        proc.kill()
        await asyncio.wait_for(proc.wait(), 5)
    for pid in kids:  # the jedi worker exits with its server; a straggler is ended explicitly
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}") or _is_zombie(pid):
                break
            await asyncio.sleep(0.02)
        else:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    if client is not None:
        client.reader_task.cancel()


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def server_env(home: Path) -> dict[str, str]:
    """The parent's environment without hapa settings, every XDG home fresh (jedi cache, database, ...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPA_", "AI_MODEL_"))}
    for name in ("CACHE", "DATA", "STATE", "CONFIG"):
        d = home / name.lower()
        d.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name}_HOME"] = str(d)
    env["HAPA_SIDECAR_PORT"] = "0"  # the sidecar runs, as in an editor, on a port no other cell holds
    env["HAPA_LOGGING_FILE"] = str(home / "server.log")
    env["HAPA_LOGGING_FORMAT"] = "json"
    env["HAPA_LOGGING_LEVEL"] = "INFO"
    env.update(SERVER_ENV)
    return env


SERVER_ENV: dict[str, str] = {}  # set from the command line (--jedi-helper)


def warm_fake(fake: FakeModelServer) -> None:
    """One request to the fake model server straight from here, then forget it. A real model server is warm
    when the editor starts; the fake's own first request (its parser, its loop waking up in this process) would
    otherwise be counted as the server's first-call overhead."""
    body = json.dumps({"model": MODEL, "prompt": "warm", "stream": True}).encode()
    req = urllib.request.Request(f"{fake.url}/api/generate", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
    fake.reset()


async def start_session(tmp: Path, ws: Path, uri: str, settings: dict[str, Any], args: argparse.Namespace,
                        name: str) -> tuple[asyncio.subprocess.Process, Client, float, float, float]:
    """Start a server in ``tmp``'s XDG homes, initialize it like an editor and open the file:
    (process, client, spawned at, initialize answered at, didOpen sent at)."""
    t_spawn = time.perf_counter()
    with open(tmp / f"{name}-stderr.txt", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hapa_lsp", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=err, env=server_env(tmp / "home"), cwd=str(ws))
    client = Client(proc, settings)
    try:
        _, t_init, _ = await client.request("initialize", {
            "processId": os.getpid(), "clientInfo": {"name": "cold_start.py"}, "rootUri": ws.as_uri(),
            "workspaceFolders": [{"uri": ws.as_uri(), "name": args.workspace_name}],
            "capabilities": capabilities()}, args.timeout)
        await client.notify("initialized", {})
        await client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": SOURCE}})
    except BaseException:
        await stop_server(client, proc)
        raise
    return proc, client, t_spawn, t_init, time.perf_counter()


async def prime(tmp: Path, ws: Path, uri: str, settings: dict[str, Any], args: argparse.Namespace) -> None:
    """--cache kept: an earlier session on this machine. A server opens the same file, answers a completion with
    jedi's items, stays 4 s (the facts of the file's imports are saved) and exits like an editor closing."""
    proc, client, *_ = await start_session(tmp, ws, uri, settings, args, "prime")
    try:
        line, col = CURSOR
        pos = {"textDocument": {"uri": uri}, "position": {"line": line, "character": col}, "context": {"triggerKind": 1}}
        await client.request("textDocument/completion", pos, args.timeout)
        await asyncio.sleep(4.0)
        await client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    finally:
        await stop_server(client, proc)


async def cell(kind: str, offset: float, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server, one request ``offset`` seconds after didOpen."""
    tmp = Path(tempfile.mkdtemp(prefix="hapa-cold-"))
    fake = FakeModelServer.run_in_thread(model=MODEL, latency=args.latency)
    fake.script(lambda record: ANSWER)
    warm_fake(fake)
    proc: asyncio.subprocess.Process | None = None
    client: Client | None = None
    out: dict[str, Any] = {"error": None}
    try:
        ws = tmp / "workspace" / args.workspace_name
        ws.mkdir(parents=True)
        path = ws / "largest.py"
        path.write_text(SOURCE, encoding="utf-8")
        uri = path.as_uri()  # percent-encoded, as editors send it
        settings = {"backend": {"endpoint": fake.url, "completionModel": MODEL},
                    "completion": {"debounceMs": args.debounce_ms, "maxDebounceMs": args.debounce_ms}}
        if args.cache == "kept":
            await prime(tmp, ws, uri, settings, args)
            (tmp / "home" / "server.log").unlink(missing_ok=True)  # the measured server's log lines only
            await asyncio.sleep(args.pause)
            warm_fake(fake)
        proc, client, t_spawn, t_init, t_open = await start_session(tmp, ws, uri, settings, args, "server")
        await asyncio.sleep(max(0.0, t_open + offset - time.perf_counter()))
        line, col = CURSOR
        pos = {"textDocument": {"uri": uri}, "position": {"line": line, "character": col}}
        out["init_ms"] = (t_init - t_spawn) * 1000
        if kind == "completion":
            t0, t1, body = await client.request("textDocument/completion",
                                                {**pos, "context": {"triggerKind": 1}}, args.timeout)
            result = body.get("result")
            items = result.get("items", []) if isinstance(result, dict) else (result or [])
            ai = [i for i in items if (i.get("detail") or "").startswith(AI_DETAIL)]
            out.update(jedi_items=len(items) - len(ai), ai=bool(ai),
                       incomplete=bool(isinstance(result, dict) and result.get("isIncomplete")))
            debounce_s = 0.0  # an Invoked request is not debounced
        else:
            t0, t1, body = await client.request("textDocument/inlineCompletion",
                                                {**pos, "context": {"triggerKind": 2}}, args.timeout)
            result = body.get("result")
            items = result.get("items", []) if isinstance(result, dict) else (result or [])
            out.update(ai=bool(items))
            debounce_s = args.debounce_ms / 1000
        out["latency_ms"] = (t1 - t0) * 1000
        out["sent_after_open_ms"] = (t0 - t_open) * 1000
        out["config_asked_ms"] = ((client.config_asked_at - t_open) * 1000
                                  if client.config_asked_at is not None else None)
        calls = [r for r in list(fake.requests) if r.method == "POST"]
        out["model_calls"] = len(calls)
        if calls:
            first = calls[0]
            # The fake model server runs in this process: its monotonic clock is ours.
            arrival = first.started_at - (time.monotonic() - time.perf_counter())
            out["call_at_ms"] = (arrival - t0 - debounce_s) * 1000
            if first.finished_at is not None:
                out["fake_model_ms"] = (first.finished_at - first.started_at) * 1000
                if kind == "inline" and items:
                    out["overhead_ms"] = out["latency_ms"] - debounce_s * 1000 - out["fake_model_ms"]
        if kind == "inline" and items and "overhead_ms" in out:
            # The same measurement once more in the same server, 0.5 s later, one column to the left (another
            # prompt, so no cache hit): what the harness itself costs (the fake model server shares this process),
            # so first - second is what being the server's first model call costs.
            await asyncio.sleep(0.5)
            n0 = len(calls)
            pos2 = {"textDocument": {"uri": uri}, "position": {"line": line, "character": col - 1}}
            s0, s1, body2 = await client.request("textDocument/inlineCompletion",
                                                 {**pos2, "context": {"triggerKind": 2}}, args.timeout)
            later = [r for r in list(fake.requests) if r.method == "POST"][n0:]
            res2 = body2.get("result")
            if later and later[0].finished_at is not None and (res2.get("items") if isinstance(res2, dict)
                                                                 else res2):
                fake2 = (later[0].finished_at - later[0].started_at) * 1000
                out["second_overhead_ms"] = (s1 - s0) * 1000 - debounce_s * 1000 - fake2
    except CellError as exc:
        out = {"error": str(exc), "stderr": _tail(tmp / "server-stderr.txt")}
    finally:
        if proc is not None:
            await stop_server(client, proc)
        fake.close()
        if not out["error"]:
            out["log"] = server_timings(tmp / "home" / "server.log")
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def server_timings(path: Path) -> dict[str, float]:
    """The server's own timings of its answer (its JSON log's "inline" line), for comparison."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "inline":
            return {k: ev[k] for k in ("total_ms", "model_ms", "debounce_ms", "overhead_ms", "prepare_ms") if k in ev}
    return {}


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summarize(kind: str, offset: float, cells: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [c for c in cells if not c["error"]]
    worst = max(ok, key=lambda c: c["latency_ms"]) if ok else None
    row = {
        "kind": kind, "offset": offset, "runs": len(cells), "failed": len(cells) - len(ok),
        "latency": med([c["latency_ms"] for c in ok]),
        "worst": worst,
        "jedi": med([c["jedi_items"] for c in ok]) if kind == "completion" else None,
        "with_jedi": sum(1 for c in ok if c.get("jedi_items", 0) > 0) if kind == "completion" else None,
        "incomplete": sum(1 for c in ok if c.get("incomplete")) if kind == "completion" else None,
        "ai": sum(1 for c in ok if c.get("ai")),
        "call_at": med([c["call_at_ms"] for c in ok if "call_at_ms" in c]),
        "overhead": med([c["overhead_ms"] for c in ok if "overhead_ms" in c]),
        "second": med([c["second_overhead_ms"] for c in ok if "second_overhead_ms" in c]),
        "penalty": med([c["overhead_ms"] - c["second_overhead_ms"] for c in ok if "second_overhead_ms" in c]),
        "init": med([c["init_ms"] for c in ok]),
        "fake_model": med([c["fake_model_ms"] for c in ok if "fake_model_ms" in c]),
        "log": {k: med([c["log"][k] for c in ok if k in c.get("log", {})])
                for k in ("prepare_ms", "model_ms", "overhead_ms")},
        "errors": [c["error"] + (f" (stderr: {c['stderr']})" if c.get("stderr") else "") for c in cells if c["error"]],
    }
    return row


HEAD = ["kind", "after didOpen", "runs", "p50 ms", "worst ms", "jedi items p50", "runs with jedi", "incomplete",
        "AI item / answer", "model call at p50 ms", "first-call overhead p50 ms", "second call's p50 ms",
        "first - second p50 ms", "initialize p50 ms"]


def cells_of(r: dict[str, Any]) -> list[str]:
    ok = r["runs"] - r["failed"]
    completion = r["kind"] == "completion"
    return [
        "completion (Invoked)" if completion else "inline (Automatic)",
        f"{r['offset']:g} s",
        f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
        fmt(r["latency"]),
        fmt(r["worst"]["latency_ms"]) if r["worst"] else "—",
        fmt(r["jedi"]) if completion else "—",
        f"{r['with_jedi']}/{ok}" if completion else "—",
        f"{r['incomplete']}/{ok}" if completion else "—",
        f"{r['ai']}/{ok}",
        fmt(r["call_at"], 1),
        fmt(r["overhead"], 1) if not completion else "—",
        fmt(r["second"], 1) if not completion else "—",
        fmt(r["penalty"], 1) if not completion else "—",
        fmt(r["init"]),
    ]


def worst_line(r: dict[str, Any]) -> str:
    w = r["worst"]
    if w is None:
        return "no successful run"
    parts = [f"{w['latency_ms']:.0f} ms", f"sent {w['sent_after_open_ms']:.0f} ms after didOpen"]
    if r["kind"] == "completion":
        parts += [f"{w['jedi_items']} jedi items", f"isIncomplete={str(w['incomplete']).lower()}",
                  f"AI item {'yes' if w['ai'] else 'no'}"]
    else:
        parts += [f"answer {'yes' if w['ai'] else 'no'}", f"overhead {fmt(w.get('overhead_ms'), 1)} ms"]
    parts += [f"model call at {fmt(w.get('call_at_ms'), 1)} ms", f"{w['model_calls']} model call(s)",
              f"configuration asked {fmt(w.get('config_asked_ms'))} ms after didOpen",
              f"initialize {w['init_ms']:.0f} ms"]
    return ", ".join(parts)


def targets(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    out = []
    comp = [r for r in rows if r["kind"] == "completion"]
    late = [r for r in comp if r["offset"] >= 1]
    if late:
        good = all(r["latency"] is not None and r["latency"] <= 400 and r["with_jedi"] == r["runs"] for r in late)
        detail = "; ".join(f"+{r['offset']:g} s: p50 {fmt(r['latency'])} ms, jedi items in {r['with_jedi']}/{r['runs']}"
                           for r in late)
        out.append(f"[{'PASS' if good else 'FAIL'}] completion >= 1 s after didOpen carries jedi's items, "
                   f"p50 <= 400 ms ({detail})")
    if comp:
        empty = sum(r["runs"] - r["failed"] - r["with_jedi"] for r in comp)
        failed = sum(r["failed"] for r in comp)
        total = sum(r["runs"] for r in comp)
        out.append(f"[{'PASS' if empty == 0 and failed == 0 else 'FAIL'}] Invoked completion never has an empty "
                   f"jedi part ({empty} of {total} runs empty" + (f", {failed} failed" if failed else "") + ")")
    bound = args.latency * 1000 + args.debounce_ms + 10
    for r in rows:
        if r["kind"] != "inline":
            continue
        good = r["latency"] is not None and r["latency"] <= bound and r["ai"] == r["runs"]
        out.append(f"[{'PASS' if good else 'FAIL'}] first inline answer at +{r['offset']:g} s within model latency + "
                   f"debounce + 10 ms = {bound:.0f} ms (p50 {fmt(r['latency'])} ms, worst "
                   f"{fmt(r['worst']['latency_ms']) if r['worst'] else '—'} ms, answered {r['ai']}/{r['runs']})")
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=["completion", "inline", "both"], default="both")
    ap.add_argument("--runs", type=int, default=5, help="fresh servers per (kind, offset); medians over them")
    ap.add_argument("--offsets", default="0.3,1,3", help="comma-separated seconds after didOpen")
    ap.add_argument("--latency", type=float, default=0.15, help="the fake model's latency, seconds")
    ap.add_argument("--debounce-ms", type=int, default=40, help="the server's debounce (both bounds fixed to it)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds any one request may take")
    ap.add_argument("--workspace-name", default="my projé", help="the workspace folder's name")
    ap.add_argument("--cache", choices=["fresh", "kept"], default="fresh",
                    help="fresh: a never-seen machine (empty jedi cache, no database); kept: the same XDG homes as "
                         "an earlier server that opened the same file (a restart, a new editor window)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between servers")
    ap.add_argument("--jedi-helper", choices=["on", "off"], default="on",
                    help="off: HAPA_JEDI_HELPER=0 (no helper jedi worker at didOpen while the worker starts)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown (README)")
    args = ap.parse_args()
    if args.jedi_helper == "off":
        SERVER_ENV["HAPA_JEDI_HELPER"] = "0"
    offsets = [float(x) for x in args.offsets.split(",") if x.strip()]
    kinds = ["completion", "inline"] if args.kind == "both" else [args.kind]
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    import hapa_lsp

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {cpus} cores (nproc), python {platform.python_version()} ({platform.machine()}, "
          f"{platform.system()} {platform.release()}), load average {load}; hapa-lsp {hapa_lsp.__version__} @ {commit}")
    print(f"setup: a new server per run; model latency {args.latency * 1000:.0f} ms (fake); debounce "
          f"{args.debounce_ms} ms; workspace folder {args.workspace_name!r}; cache {args.cache}; jedi helper {args.jedi_helper}; {args.runs} runs per cell; "
          f"medians (worst = slowest run)", flush=True)
    results: dict[tuple[str, float], list[dict[str, Any]]] = {(k, o): [] for k in kinds for o in offsets}
    t_start = time.perf_counter()
    for run in range(args.runs):
        for kind in kinds:
            for offset in offsets:
                await asyncio.sleep(args.pause)  # the previous server's exit is not measured
                guard = offset + 3 * args.timeout + 30  # a cell cannot hang, whatever happens inside
                try:
                    res = await asyncio.wait_for(cell(kind, offset, args), guard)
                except (TimeoutError, asyncio.TimeoutError):
                    res = {"error": f"cell took longer than {guard:.0f} s"}
                results[(kind, offset)].append(res)
                if res["error"]:
                    print(f"  run {run + 1} {kind} +{offset:g} s: FAILED {res['error']}", file=sys.stderr)
    rows = [summarize(k, o, cs) for (k, o), cs in results.items()]
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{sum(len(c) for c in results.values())} servers in {time.perf_counter() - t_start:.0f} s\n")
    table = [HEAD] + [cells_of(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEAD))]
    for row in table:
        print("  ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print("\nworst run per cell:")
    for r in rows:
        print(f"  {r['kind']} +{r['offset']:g} s: {worst_line(r)}")
        for e in r["errors"]:
            print(f"    failed: {e}")
    inline_rows = [r for r in rows if r["kind"] == "inline" and r["runs"] > r["failed"]]
    if inline_rows:
        print("\ninline, where the time goes (p50): the fake model's own time vs the server's JSON log line "
              "(its model_ms runs from the start of its model call to the parsed answer)")
        for r in inline_rows:
            lg = r["log"]
            print(f"  +{r['offset']:g} s: round trip {fmt(r['latency'])} ms = debounce {args.debounce_ms} + model "
                  f"(fake) {fmt(r['fake_model'], 1)} + overhead {fmt(r['overhead'], 1)} ms; server log: prepare "
                  f"{fmt(lg['prepare_ms'], 1)}, model_ms {fmt(lg['model_ms'], 1)}, overhead_ms "
                  f"{fmt(lg['overhead_ms'], 1)} ms")
    print("\ntargets:")
    for line in targets(rows, args):
        print(f"  {line}")
    if args.markdown:
        print()
        print("| " + " | ".join(HEAD) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEAD))) + "|")
        for r in rows:
            print("| " + " | ".join(cells_of(r)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
