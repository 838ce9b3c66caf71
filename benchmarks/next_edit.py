"""Model-free measurement of next edit suggestions on real code nobody here wrote.

From the Python sources on this machine (the standard library, and every package installed in site-packages), it
builds edit sequences with one obvious next edit, chosen by rule with a seeded random generator:

- ``rename-param``: rename a function parameter at its ``def`` (next: the first later line of the function that
  names it: code, docstring or comment, since a rename covers them all);
- ``add-param``: add a parameter to a one-line ``def`` of a module-level function (next: the first call of the
  function elsewhere in the same file);
- ``rename-local``: rename a local variable at its first assignment (next: the first later line naming it).

Each case goes through the server's own code (``EditHistory`` fed the edit as a didChange, ``NextEditEngine``
against the fake model server over real HTTP; the fake's oracle rule applies the last change in the prompt's
history to the region it is given). Reported per slice (source x kind) and the worst slice:

- location: the next edit's line lies in the region given to the model (the cursor's, or the jump target's);
- exact: the returned edit changes exactly what the oracle would (the next use, and any other use it rewrites in
  the region, to the right text), and nothing else;
- overhead: the server's time per request beyond the model's (total - model - debounce), p50 / p99, the first
  request of the run separately;
- prompt tokens (chars / hapa.context.charsPerToken), p50 / p90.

    python benchmarks/next_edit.py [--cases 150] [--seed 0] [--markdown]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import random
import re
import statistics
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hapa_lsp.config import Settings
from hapa_lsp.next_edit.engine import NextEditEngine, lines_of
from hapa_lsp.next_edit.history import EditHistory
from hapa_lsp.upstream import Upstream
from tests.fakes.model_server import FakeModelServer
from tests.fakes.next_edit_rule import next_edit_answer

KINDS = ("rename-param", "rename-local", "add-param")
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data",
              "__pycache__", "hapa_lsp"}


@dataclass
class Case:
    source: str  # "stdlib" or "site-packages"
    kind: str
    path: str
    before: str  # the document before the user's edit
    after: str  # after it
    edit_line: int
    cursor: tuple[int, int]
    next_line: int  # where the next edit is
    oracle: str  # the whole document with the change made everywhere it applies


def python_files(source: str) -> list[Path]:
    """Every .py file of the source tree, outside tests and vendored tool directories (sorted: deterministic)."""
    if source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts]
    else:
        root = Path(sysconfig.get_paths()["purelib"])
        files = list(root.rglob("*.py"))
    return sorted(p for p in files if not (_SKIP_DIRS & set(p.relative_to(root).parts[:-1]))
                  and not p.name.startswith("test_"))


def _word_at(line: str, name: str) -> re.Match[str] | None:
    return re.search(rf"\b{re.escape(name)}\b", line)


def _rename_everywhere(lines: list[str], name: str, new: str, rows: range) -> list[str]:
    out = list(lines)
    for r in rows:
        out[r] = re.sub(rf"\b{re.escape(name)}\b", new, out[r])
    return out


def _uses(lines: list[str], fn: ast.AST, name: str, after_line: int) -> list[int]:
    """Later lines of the function that name ``name`` (code, docstring or comment: a rename covers them all),
    when the code uses it at all."""
    if not any(isinstance(n, ast.Name) and n.id == name and n.lineno - 1 > after_line for n in ast.walk(fn)):
        return []
    end = (fn.end_lineno or fn.lineno) - 1
    return [r for r in range(after_line + 1, end + 1) if _word_at(lines[r], name)]


def cases_in(source: str, path: Path, text: str, tree: ast.Module, rng: random.Random) -> list[Case]:
    lines = text.splitlines(keepends=True)
    out: list[Case] = []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    rng.shuffle(funcs)
    for fn in funcs[:3]:
        def_row = fn.lineno - 1
        end_row = (fn.end_lineno or fn.lineno) - 1
        head = lines[def_row]
        # rename-param: a parameter named on the def line, used later in the body, a word nowhere else on the line.
        params = [a.arg for a in fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]
        rng.shuffle(params)
        for p in params:
            m = _word_at(head, p)
            uses = _uses(lines, fn, p, def_row)
            if m is None or not uses or len(re.findall(rf"\b{re.escape(p)}\b", head)) != 1:
                continue
            new = p + "_v2"
            after_lines = list(lines)
            after_lines[def_row] = head[:m.start()] + new + head[m.end():]
            oracle = _rename_everywhere(after_lines, p, new, range(def_row + 1, end_row + 1))
            out.append(Case(source, "rename-param", str(path), text, "".join(after_lines), def_row,
                            (def_row, m.start() + len(new)), uses[0], "".join(oracle)))
            break
        # rename-local: the first assignment of a plain local name, used again after it.
        assigns = [n for n in ast.walk(fn) if isinstance(n, ast.Assign) and len(n.targets) == 1
                   and isinstance(n.targets[0], ast.Name) and n.lineno == n.end_lineno]
        for a in assigns[:1]:
            name = a.targets[0].id
            row = a.lineno - 1
            m = re.match(rf"(\s*){re.escape(name)}\s*=", lines[row])
            uses = _uses(lines, fn, name, row)
            if m is None or not uses:
                continue
            new = name + "_v2"
            start = len(m.group(1))
            after_lines = list(lines)
            after_lines[row] = lines[row][:start] + new + lines[row][start + len(name):]
            oracle = _rename_everywhere(after_lines, name, new, range(row + 1, end_row + 1))
            out.append(Case(source, "rename-local", str(path), text, "".join(after_lines), row,
                            (row, start + len(new)), uses[0], "".join(oracle)))
        # add-param: a module-level function whose one-line def ends its parameter list with ")" and ":".
        if fn in tree.body and fn.lineno == fn.body[0].lineno - 1 and not fn.decorator_list:
            m = re.match(rf"(\s*(?:async\s+)?def\s+{re.escape(fn.name)}\()([^()]*)(\)\s*(?:->[^:]+)?:\s*)$",
                         head.rstrip("\n"))
            calls = sorted({c.lineno - 1 for c in ast.walk(tree) if isinstance(c, ast.Call)
                            and isinstance(c.func, ast.Name) and c.func.id == fn.name})
            # The next call site: the first after the def, else the first in the file. Only clean cases are
            # kept (a one-line call with plain positional arguments, the form the oracle can update).
            clean = {c.lineno - 1 for c in ast.walk(tree) if isinstance(c, ast.Call)
                     and isinstance(c.func, ast.Name) and c.func.id == fn.name and c.lineno == c.end_lineno
                     and not c.keywords and not any(isinstance(x, ast.Starred) for x in c.args)}
            if m and calls and "*" not in m.group(2) and "=" not in m.group(2):
                n_old = len([x for x in m.group(2).split(",") if x.strip()])
                sep = ", " if m.group(2).strip() else ""
                new_head = f"{m.group(1)}{m.group(2)}{sep}extra{m.group(3)}\n"
                after_lines = list(lines)
                after_lines[def_row] = new_head
                target = next((r for r in calls if r > def_row), calls[0])
                oracle = list(after_lines)
                ok_calls = []
                for r in sorted(clean):
                    fixed = re.sub(rf"(?<![.\w]){re.escape(fn.name)}\(([^()]*)\)",
                                   lambda mm: (f"{fn.name}({mm.group(1)}{', ' if mm.group(1).strip() else ''}extra)"
                                               if len([x for x in mm.group(1).split(',') if x.strip()]) == n_old
                                               else mm.group(0)), oracle[r])
                    if fixed != oracle[r]:
                        ok_calls.append(r)
                    oracle[r] = fixed
                if target in ok_calls:
                    out.append(Case(source, "add-param", str(path), text, "".join(after_lines), def_row,
                                    (def_row, len(new_head.rstrip("\n"))), target, "".join(oracle)))
    return out


def collect(source: str, per_kind: int, rng: random.Random) -> list[Case]:
    files = python_files(source)
    rng.shuffle(files)
    found: dict[str, list[Case]] = {k: [] for k in KINDS}
    for path in files:
        if all(len(v) >= per_kind for v in found.values()):
            break
        try:
            text = path.read_text(encoding="utf-8")
            if len(text) > 400_000 or "\r" in text:
                continue
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for c in cases_in(source, path, text, tree, rng):
            if len(found[c.kind]) < per_kind:
                found[c.kind].append(c)
    return [c for k in KINDS for c in found[k]]


def _changed_rows(a: str, b: str) -> set[int]:
    la, lb = a.splitlines(), b.splitlines()
    return {i for i in range(max(len(la), len(lb))) if (la[i] if i < len(la) else None) != (lb[i] if i < len(lb) else None)}


def _apply(text: str, edit) -> str:
    lines = lines_of(text)
    if not lines or lines[-1].endswith("\n"):
        lines.append("")
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    a = starts[edit.start[0]] + edit.start[1]
    b = starts[edit.end[0]] + edit.end[1]
    return text[:a] + edit.text + text[b:]


async def run_case(engine: NextEditEngine, history: EditHistory, case: Case, i: int) -> dict:
    uri = f"file:///bench/{i}.py"
    history.opened(uri, case.path, case.before)
    history.changed(uri, case.path, case.after, case.edit_line)
    lines = lines_of(case.after)
    if not lines or lines[-1].endswith("\n"):
        lines.append("")
    r0, r1, _ = engine.region_for(uri, case.after, lines, case.cursor[0], "python")
    located = r0 <= case.next_line < r1  # the region the model is given (the server's choice, whatever it answers)
    ne = await engine.suggest(uri=uri, path=case.path, language="python", text=case.after, line=case.cursor[0],
                              character=case.cursor[1], request_id=f"b{i}")
    history.closed(uri)
    history.forget(uri)
    engine.did_close(uri)
    exact = False
    overhead = None
    tokens = None
    if ne is not None:
        result = _apply(case.after, ne.edits[0])
        changed = _changed_rows(case.after, result)
        oracle_lines = case.oracle.splitlines()
        result_lines = result.splitlines()
        exact = (case.next_line in changed and len(result_lines) == len(oracle_lines)
                 and all(result_lines[r] == oracle_lines[r] for r in changed))
        overhead = ne.timings.get("overhead_ms")
        tokens = ne.prompt_chars / engine.settings.context.chars_per_token
    return {"located": located, "exact": exact, "overhead": overhead, "tokens": tokens, "answered": ne is not None}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def measure(cases: list[Case], fake: FakeModelServer) -> tuple[list[dict], float | None]:
    base = Settings()
    settings = attrs.evolve(base, backend=attrs.evolve(base.backend, kind="openai", endpoint=fake.url),
                            next_edit=attrs.evolve(base.next_edit, debounce_ms=0),
                            cache=attrs.evolve(base.cache, enabled=False))
    upstream = Upstream(settings)
    history = EditHistory()
    engine = NextEditEngine(settings, upstream, history)
    results = []
    first = None
    try:
        for i, c in enumerate(cases):
            r = await run_case(engine, history, c, i)
            if first is None and r["overhead"] is not None:
                first = r["overhead"]
            results.append(r)
    finally:
        await upstream.aclose()
    return results, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=150, help="cases per kind and source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3, help="runs for the overhead medians")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    cases = collect("stdlib", args.cases, rng) + collect("site-packages", args.cases, rng)
    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:7b-instruct")
    fake.script(next_edit_answer)
    try:
        runs = [asyncio.run(measure(cases, fake)) for _ in range(args.runs)]
    finally:
        fake.close()
    results = runs[0][0]
    slices: dict[tuple[str, str], list[dict]] = {}
    for c, r in zip(cases, results):
        slices.setdefault((c.source, c.kind), []).append(r)
    rows = []
    for (src, kind), rs in sorted(slices.items()):
        n = len(rs)
        rows.append((f"{src} {kind}", n, sum(r["located"] for r in rs) / n, sum(r["exact"] for r in rs) / n))
    overheads = [[r["overhead"] for r in rs if r["overhead"] is not None] for rs, _ in runs]
    p50 = statistics.median(_pct(o, 0.5) for o in overheads)
    p99 = statistics.median(_pct(o, 0.99) for o in overheads)
    first = statistics.median(f for _, f in runs if f is not None)
    tokens = [r["tokens"] for r in results if r["tokens"] is not None]
    n_all = len(results)
    loc_all = sum(r["located"] for r in results) / n_all
    exact_all = sum(r["exact"] for r in results) / n_all
    worst_loc = min(rows, key=lambda x: (x[2], x[3]))
    worst_exact = min(rows, key=lambda x: (x[3], x[2]))
    sep = "|" if args.markdown else " "
    print(f"{sep} slice {sep} cases {sep} location in region {sep} exact edit {sep}" if args.markdown else
          f"{'slice':32} {'cases':>6} {'location':>9} {'exact':>7}")
    if args.markdown:
        print("|---|---:|---:|---:|")
    for name, n, loc, ex in rows + [("all", n_all, loc_all, exact_all)]:
        if args.markdown:
            print(f"| {name} | {n} | {loc:.3f} | {ex:.3f} |")
        else:
            print(f"{name:32} {n:6d} {loc:9.3f} {ex:7.3f}")
    print(f"\nworst slice by location: {worst_loc[0]} ({worst_loc[2]:.3f}); "
          f"by exact edit: {worst_exact[0]} ({worst_exact[3]:.3f})")
    print(f"server overhead per request beyond the model: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(medians of {args.runs} runs); first request of a run {first:.2f} ms")
    print(f"prompt tokens (chars / {Settings().context.chars_per_token}): p50 {_pct(tokens, 0.5):.0f}, "
          f"p90 {_pct(tokens, 0.9):.0f}")
    print(f"seed {args.seed}; {args.cases} cases per kind and source asked, found as listed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
