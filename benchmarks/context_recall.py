"""Model-free measurement of prompt context quality: cross-module identifier recall, and context build time.

On real code nobody here wrote (the installed sources of httpx, rich and click: ``pip install -e '.[bench]'``),
it samples lines that use an identifier defined in *another* module of the same package, hides the line (the
cursor at its indentation, as when the user starts typing it), builds the prompt context and checks whether
each such identifier's definition (``def name(...)`` / ``class name`` / ``name = ...``: name + signature)
is in the prompt. Three strategies under the same token budget and the same code path as the server:

- ``prefix/suffix only``: the window around the cursor (what llm-ls sends);
- ``+ neighbour snippets``: plus Jaccard-ranked snippets of open files (Copilot-style);
- ``full engine``: plus jedi facts (hapa's context engine, time-boxed as in the editor).

Open files are simulated as an editor would have them: the (up to) two same-package modules the file imports
from first, and two other modules of the package at random. "Steady state" means the file has been open for
a while: one earlier request elsewhere in the file resolved the facts it wanted; "first request" runs with
the facts cache empty. Build times are the whole ``start`` + ``complete`` (time box) + ``assemble`` path.

    python benchmarks/context_recall.py [--samples 300] [--runs 3] [--packages httpx rich click] [--markdown]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import attrs

from hapa_lsp.config import Settings
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.jedi_client import JediRunner


@dataclass
class Module:
    name: str  # dotted
    path: Path
    text: str
    tree: ast.Module
    defs: dict[str, str] = field(default_factory=dict)  # top-level name -> function / class / assign
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # bound name -> (module, name)


@dataclass
class Sample:
    module: Module
    row: int
    col: int
    idents: dict[str, str]  # identifier -> kind of its definition


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_package(name: str) -> dict[str, Module]:
    """Every module of an installed package, parsed, with its top-level definitions and imports."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name} is not installed: pip install -e '.[bench]'")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    root = pkg_dir.parent
    mods: dict[str, Module] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError):
            continue
        m = Module(_module_name(root, path), path, text, tree)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                m.defs[node.name] = "function"
            elif isinstance(node, ast.ClassDef):
                m.defs[node.name] = "class"
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        m.defs[t.id] = "assign"
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = m.name.split(".")
                    keep = len(parts) - node.level + (1 if is_pkg else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                if base.split(".")[0] != name:
                    continue
                for a in node.names:
                    m.imports[a.asname or a.name] = (base, a.name)
        mods[m.name] = m
    return mods


def definition(mods: dict[str, Module], module: str, name: str, depth: int = 0) -> tuple[str, str] | None:
    """(module, kind) where ``module.name`` is really defined, following re-exports a few levels."""
    m = mods.get(module)
    if m is None or depth > 3:
        return None
    if name in m.defs:
        return module, m.defs[name]
    if name in m.imports:
        return definition(mods, *m.imports[name], depth=depth + 1)
    return None


def candidates(mods: dict[str, Module]) -> list[Sample]:
    """Single-line statements that use an identifier defined in another module of the package."""
    out: list[Sample] = []
    for m in mods.values():
        cross: dict[str, str] = {}
        for bound, (mod, name) in m.imports.items():
            d = definition(mods, mod, name)
            if d is not None and d[0] != m.name:
                cross[bound] = d[1]
        if not cross:
            continue
        lines = m.text.split("\n")
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.stmt) or isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if node.lineno != node.end_lineno or isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            used = {n.id: cross[n.id] for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in cross}
            if used:
                line = lines[node.lineno - 1]
                out.append(Sample(m, node.lineno - 1, len(line) - len(line.lstrip()), used))
    return out


def found(prompt: str, ident: str, kind: str) -> bool:
    """The definition (name + signature) is in the prompt."""
    if kind == "function":
        return re.search(rf"\bdef {re.escape(ident)}\(", prompt) is not None
    if kind == "class":
        return re.search(rf"\bclass {re.escape(ident)}\b", prompt) is not None
    return re.search(rf"^\s*{re.escape(ident)}\s*(:|=)", prompt, re.M) is not None


def open_docs_for(sample: Sample, mods: dict[str, Module], rng: random.Random) -> list[tuple]:
    m = sample.module
    imported = []
    for mod, _ in m.imports.values():
        if mod != m.name and mod in mods and mod not in imported:
            imported.append(mod)
    others = [k for k in mods if k != m.name and k not in imported[:2]]
    chosen = imported[:2] + rng.sample(others, min(2, len(others)))
    return [(mods[k].path.as_uri(), str(mods[k].path), 1, mods[k].text) for k in chosen]


STRATEGIES = ("prefix/suffix only", "+ neighbour snippets", "full engine (steady state)",
              "full engine (first request)")


def _settings(strategy: str) -> Settings:
    s = Settings()
    ctx = s.context
    if strategy == "prefix/suffix only":
        ctx = attrs.evolve(ctx, facts=False, neighbour_snippets=0)
    elif strategy == "+ neighbour snippets":
        ctx = attrs.evolve(ctx, facts=False)
    return attrs.evolve(s, context=ctx)


async def run_once(samples: list[Sample], pkgs: dict[str, dict[str, Module]], seed: int) -> dict[str, dict]:
    runner = JediRunner()
    await runner.warm_up()
    results: dict[str, dict] = {}
    try:
        for strategy in STRATEGIES:
            rng = random.Random(seed)
            engines: dict[str, ContextEngine] = {}
            hits = total = 0
            times: list[float] = []
            warmed: set[str] = set()
            for k, smp in enumerate(samples):
                pkg = smp.module.name.split(".")[0]
                mods = pkgs[pkg]
                ce = engines.get(pkg)
                if ce is None:
                    # The workspace root is site-packages: paths show as ``rich/console.py``.
                    root = str(Path(importlib.util.find_spec(pkg).submodule_search_locations[0]).parent)
                    ce = engines[pkg] = ContextEngine(_settings(strategy), runner=runner, root=root)
                lines = smp.module.text.split("\n")
                lines[smp.row] = lines[smp.row][:smp.col]
                text = "\n".join(lines)
                docs = open_docs_for(smp, mods, rng)
                path = str(smp.module.path)
                uri = smp.module.path.as_uri()
                if strategy.endswith("(first request)"):
                    uri += f"#sample{k}"  # nothing cached from earlier keystrokes
                elif strategy.startswith("full") and uri not in warmed:
                    # The file has been open a while: an earlier request elsewhere in it resolved its facts.
                    warmed.add(uri)
                    other = rng.randrange(len(lines))
                    await ce.warm(ce.start(uri=uri, path=path, language="python", text=text, line=other,
                                           character=0, encoding="utf-32", open_docs=docs))
                t0 = time.perf_counter()
                req = ce.start(uri=uri, path=path, language="python", text=text, line=smp.row, character=smp.col,
                               encoding="utf-32", open_docs=docs)
                await ce.complete(req)
                built = ce.assemble(req)
                times.append((time.perf_counter() - t0) * 1000)
                prompt = built.prompt.budgeted_text()
                assert built.tokens <= built.budget
                for ident, kind in smp.idents.items():
                    total += 1
                    hits += found(prompt, ident, kind)
            times.sort()
            results[strategy] = {"recall": hits / max(1, total), "identifiers": total,
                                 "p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}
            # Let background jedi work of this strategy finish before timing the next one.
            await runner.idle(timeout=120)
    finally:
        await runner.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packages", nargs="+", default=["httpx", "rich", "click"])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    args = ap.parse_args(argv)
    pkgs = {p: load_package(p) for p in args.packages}
    pool = [s for p in args.packages for s in candidates(pkgs[p])]
    rng = random.Random(args.seed)
    samples = rng.sample(pool, min(args.samples, len(pool)))
    print(f"{len(samples)} hidden lines sampled from {len(pool)} candidates in {', '.join(args.packages)} "
          f"({sum(len(s.idents) for s in samples)} cross-module identifiers); budget "
          f"{Settings().context.max_prompt_tokens} tokens; {args.runs} runs", file=sys.stderr)
    runs = [asyncio.run(run_once(samples, pkgs, args.seed)) for _ in range(args.runs)]
    base = statistics.median(r["prefix/suffix only"]["recall"] for r in runs)
    rows = []
    for strategy in STRATEGIES:
        rec = statistics.median(r[strategy]["recall"] for r in runs)
        p50 = statistics.median(r[strategy]["p50"] for r in runs)
        p95 = statistics.median(r[strategy]["p95"] for r in runs)
        ratio = f"{rec / base:.0f}x" if base else "n/a"
        rows.append((strategy, rec, ratio, p50, p95))
    if args.markdown:
        print("| strategy | identifier recall | vs prefix/suffix | build p50 (ms) | build p95 (ms) |")
        print("|---|---|---|---|---|")
        for strategy, rec, ratio, p50, p95 in rows:
            print(f"| {strategy} | {rec:.3f} | {ratio} | {p50:.1f} | {p95:.1f} |")
    else:
        print(f"{'strategy':32} {'recall':>7} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8}")
        for strategy, rec, ratio, p50, p95 in rows:
            print(f"{strategy:32} {rec:7.3f} {ratio:>6} {p50:8.1f} {p95:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
