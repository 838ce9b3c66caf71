"""Keystroke-to-ghost-text latency in a real Neovim with editors/neovim, against the fake model server.

For each trial a fresh line is typed key by key through Neovim's input (so Neovim sends didChange); after the
last key the clock runs until the plugin's ghost-text extmark shows the fake model's answer. The model
latency is set on the fake (0 ms: what the editor path costs; 150 ms: a fast local model). Also counted:
model calls per trial (the plugin's and the server's debounce should keep it near one).

    python benchmarks/editor_ghost_latency.py [--trials 15] [--runs 3] [--latency-ms 0 150] [--key-gap-ms 120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.editors.conftest import Editor  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402

SUGGESTION = "return a + b"


def one_run(trials: int, latency_ms: float, debounce_ms: int, server_debounce_ms: int | None,
            key_gap_ms: float = 0.0) -> tuple[list[float], list[int]]:
    """Latencies (ms) and model calls of ``trials`` typed lines in one Neovim session."""
    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:1.5b-base", latency=latency_ms / 1000)
    fake.script(lambda req: SUGGESTION + "\n")
    tmp = Path(tempfile.mkdtemp(prefix="hapa-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPA_", "AI_MODEL_", "NVIM"))}
    env.update({"HAPA_BACKEND_ENDPOINT": fake.url, "HAPA_SIDECAR_PORT": "0", "XDG_STATE_HOME": str(tmp),
                "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp), "XDG_CACHE_HOME": str(tmp)})
    if server_debounce_ms is not None:
        env["HAPA_COMPLETION_DEBOUNCE_MS"] = env["HAPA_COMPLETION_MAX_DEBOUNCE_MS"] = str(server_debounce_ms)
    ed = Editor(shutil.which("nvim") or "nvim", tmp, env)
    latencies: list[float] = []
    calls: list[int] = []
    try:
        ed.lua("require('hapa').setup(...)", {"cmd": [sys.executable, "-m", "hapa_lsp"],
                                               "inline": {"debounce_ms": debounce_ms}})
        ed.open(tmp / "bench.py")
        ed.keys("i")
        for n in range(trials):
            before = fake.count()
            # A new function each time, so neither the cache nor type-through answers it.
            for ch in f"def add_{n}(a, b):\n":
                ed.type(ch)
                time.sleep(key_gap_ms / 1000)
            t0 = time.perf_counter()
            ed.wait_for(lambda: any(
                "".join(c[0] for c in m["virt_text"]) == SUGGESTION for m in ed.ghost()), what="ghost text")
            latencies.append((time.perf_counter() - t0) * 1000)
            calls.append(fake.count() - before)
            ed.keys("<Tab>")
            ed.wait_for(lambda: ed.lines()[-1].strip() == SUGGESTION, what="accept")
            # A new empty line at column 0 for the next function, still in insert mode.
            ed.lua("vim.api.nvim_buf_set_lines(0, -1, -1, false, { '', '' })"
                   "; vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(0), 0 })")
    finally:
        ed.close()
        fake.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return latencies, calls


def main() -> None:
    """Print the median keystroke-to-ghost latency per model latency, median of runs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 150.0])
    ap.add_argument("--debounce-ms", type=int, default=25, help="the plugin's debounce (its default: 25)")
    ap.add_argument("--key-gap-ms", type=float, default=0.0,
                    help="pause between keystrokes (0: as fast as Neovim takes them; ~120: a quick human)")
    ap.add_argument("--server-debounce-ms", type=int, default=None,
                    help="fix the server's adaptive debounce (both bounds) to this; default: the server's defaults")
    args = ap.parse_args()
    server = "server defaults" if args.server_debounce_ms is None else f"server {args.server_debounce_ms} ms"
    print(f"keystroke -> ghost text in Neovim (plugin debounce {args.debounce_ms} ms, {server} debounce, "
          f"{args.key_gap_ms:.0f} ms between keys), "
          f"{args.trials} lines x {args.runs} runs")
    print(f"{'model latency':>14} {'median ms':>10} {'p90 ms':>8} {'runs (median ms)':>30} {'calls/line':>11}")
    for latency in args.latency_ms:
        medians, p90s, calls = [], [], []
        for _ in range(args.runs):
            lat, c = one_run(args.trials, latency, args.debounce_ms, args.server_debounce_ms, args.key_gap_ms)
            medians.append(statistics.median(lat))
            p90s.append(sorted(lat)[int(0.9 * (len(lat) - 1))])
            calls.extend(c)
        runs = " ".join(f"{m:.0f}" for m in medians)
        print(f"{latency:>11.0f} ms {statistics.median(medians):>10.0f} {statistics.median(p90s):>8.0f} "
              f"{runs:>30} {statistics.mean(calls):>11.2f}")


if __name__ == "__main__":
    main()
