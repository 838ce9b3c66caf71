"""Model-free measurement of prompt context quality: cross-module identifier recall, and context build time.

On real code nobody here wrote (installed packages chosen by the rule below), it samples lines that use an
identifier defined in *another* module of the same package, hides the line (the cursor at its indentation, as
when the user starts typing it), builds the prompt context through the server's own path
(``ContextEngine.start`` / ``complete`` / ``assemble``, jedi in a ``JediRunner`` worker process) and checks
whether each such identifier's definition (``def name(`` / ``class name`` / ``name =``: name + signature) is in
the prompt. Every condition has the same token budget and the same settings as the server (time box
``facts_time_budget_ms``), and no other tab is open unless the condition says so:

- ``prefix/suffix only``: the window around the cursor (what llm-ls sends): facts and neighbours off;
- ``steady state``: the file has been open a while: one earlier request elsewhere in it resolved the facts it
  wanted (``ContextEngine.warm``; capped at 60 s, a sample whose warm takes longer counts as a miss and is
  reported);
- ``first request``: what the first keystroke after didOpen gets: the server's didOpen starts
  ``ContextEngine.warm_document`` as a background task and the request runs at once with the normal time box
  (1 ms later: as in the server, where a keystroke is a later message than didOpen, the event loop has run that
  task up to its first wait, so its first job is in the jedi worker when the request comes);
- ``1 s after open``: the same, one second after didOpen;
- ``+ neighbour tabs`` (``--neighbours``): the steady state with tabs open as an editor would have them: the
  (up to) two same-package modules the file imports from first, and two other modules of the package at random.

Which packages (the rule; nothing is picked by hand and nothing is tuned per package):

1. candidates: every top-level package (a folder with ``__init__.py``, as ``pkgutil.iter_modules`` lists
   them) in the ``site-packages`` / ``dist-packages`` folders of ``sys.path`` with >= 10 modules, plus every
   standard-library package (under ``sysconfig.get_paths()["stdlib"]``) with >= 5 modules. A module is a
   ``.py`` file in the package's folder tree outside folders named ``__pycache__``, ``test`` or ``tests``
   (test suites are not the package's code); a name found twice counts where ``sys.path`` finds it first;
2. excluded on principle: the project itself (``hapa_lsp``) and the standard library's own test suite
   (``test``); files that do not parse or decode are skipped;
3. the candidates, sorted by name, are shuffled with ``random.Random(--seed)`` and taken in that order, skipping
   a package with fewer than ``--per-package`` candidate lines (listed on stderr), until ``--max-packages``
   are taken. ``--packages`` overrides steps 1-3.

From each package, ``--per-package`` hidden lines are drawn with ``random.Random(f"{seed}/{package}")`` (the
same lines whichever other packages are chosen), so every package has the same weight. A candidate line is a
single-line statement (not an import) using a name imported from another module of the package whose
definition there is found (re-exports followed), and which the module does not define itself. Definitions are
module-level ``def`` / ``class`` / assignments, those under ``if`` / ``try`` / ``with`` included.

Isolation: each (package, condition) gets a fresh ``ContextEngine`` and a fresh ``JediRunner`` (started and
warmed up first, as the server does after initialize), so no condition reuses facts or a jedi process warmed by
another one. Within a condition the samples share the engine and the jedi process as a server shares them
across files of one project: jedi's in-memory parse trees of modules an earlier sample parsed stay, like
they do on a user's machine once a few files of the project were open (jedi's on-disk parse cache is shared by
all runs: it is there on a user's machine too after the first open of a project). Between samples, the
previous sample's open-time warming is cancelled and the runner's queue drained (``JediRunner.idle``), so one
sample's background work never runs during the next one's request. Each sample of the first-request and 1 s
conditions is a new document (its own uri): nothing is cached for it.

Output: per package, the share of identifiers found (median over ``--runs``); "all" pools every identifier;
the worst package per condition (ties: the first by name); build time (``start`` + ``complete`` +
``assemble``) p50/p95 over all samples. Progress goes to stderr, the wall time is printed at the end.

Run time: one run of the defaults (12 packages x 15 lines) takes ~6.5 min on 2 busy cores, so the default 3
runs take ~20 min; the ``1 s after open`` condition is about half of it (a second per sample by definition),
the steady-state warm-ups most of the rest. ``--runs 1`` for a quick check.

    python benchmarks/context_recall.py [--max-packages 12] [--per-package 15] [--runs 3] [--seed 5]
        [--packages NAME ...] [--neighbours] [--markdown]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import os
import pkgutil
import random
import re
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import attrs

from hapa_lsp.config import Settings
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.jedi_client import JediRunner
from hapa_lsp.next_edit.history import EditHistory

# The rule (see the module docstring): one set of numbers for every package.
SITE_MIN_MODULES = 10
STDLIB_MIN_MODULES = 5
SKIP_DIRS = frozenset({"__pycache__", "test", "tests"})
EXCLUDED = frozenset({"hapa_lsp", "test"})
WARM_CAP_S = 60.0  # a steady-state warm-up taking longer than this counts as a miss
IDLE_CAP_S = 90.0
DID_OPEN_SETTLE_S = 0.001  # "right after didOpen": the event loop ran what didOpen started until it waits

PREFIX, STEADY, FIRST, AFTER_1S, TABS = ("prefix/suffix only", "steady state", "first request", "1 s after open",
                                         "+ neighbour tabs")
EDIT = "just edited, no facts"
TIMED = (STEADY, FIRST, AFTER_1S)


@dataclass
class Module:
    name: str  # dotted
    path: Path
    text: str
    tree: ast.Module
    defs: dict[str, str] = field(default_factory=dict)  # module-level name -> function / class / assign
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # bound name -> (module, name)


@dataclass
class Sample:
    module: Module
    row: int
    col: int
    idents: dict[str, tuple[str, str]]  # identifier as used -> (name it is defined as, kind of definition)


@dataclass
class Package:
    name: str
    folder: Path  # the package's own folder
    origin: str  # "stdlib" or "site"
    modules: int  # .py files by the rule
    mods: dict[str, Module] = field(default_factory=dict)
    pool: list[Sample] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def root(self) -> str:
        """The workspace root the server would have: the folder holding the package (paths show as
        ``rich/console.py``)."""
        return str(self.folder.parent)


# ---- which packages ------------------------------------------------------------------------------------------
def module_files(folder: Path) -> list[Path]:
    """The package's modules by the rule: ``.py`` files outside ``__pycache__``, ``test`` and ``tests``."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def discover() -> list[Package]:
    """Every package the rule admits (step 1 and 2), sorted by name."""
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[Package] = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if real == stdlib:
            origin, minimum = "stdlib", STDLIB_MIN_MODULES
        elif os.path.basename(real) in ("site-packages", "dist-packages"):
            origin, minimum = "site", SITE_MIN_MODULES
        else:
            origin, minimum = "", 0
        for info in pkgutil.iter_modules([entry]):
            if info.name in seen:
                continue
            seen.add(info.name)  # shadowed further down sys.path, whatever the folder
            if not origin or not info.ispkg or info.name in EXCLUDED:
                continue
            folder = Path(entry) / info.name
            n = len(module_files(folder))
            if n >= minimum:
                out.append(Package(info.name, folder, origin, n))
    return sorted(out, key=lambda p: p.name)


def find_package(name: str) -> Package:
    """A package named on the command line (any size, anywhere importable)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"no package {name} is importable here")
    folder = Path(next(iter(spec.submodule_search_locations)))
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    origin = "stdlib" if os.path.realpath(folder.parent) == stdlib else "site"
    return Package(name, folder, origin, len(module_files(folder)))


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_scope(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements at module level, those under ``if`` / ``try`` / ``with`` included (not function bodies)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.If, ast.With)):
            out.extend(_module_scope(node.body + getattr(node, "orelse", [])))
        elif isinstance(node, (ast.Try, ast.TryStar)):
            out.extend(_module_scope(node.body + [s for h in node.handlers for s in h.body] + node.orelse
                                     + node.finalbody))
    return out


def load_package(pkg: Package) -> dict[str, Module]:
    """Every module of the package, parsed, with its top-level definitions and same-package imports."""
    name, root = pkg.name, pkg.folder.parent
    mods: dict[str, Module] = {}
    for path in module_files(pkg.folder):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        m = Module(_module_name(root, path), path, text, tree)
        for node in _module_scope(tree.body):
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


def definition(mods: dict[str, Module], module: str, name: str, depth: int = 0) -> tuple[str, str, str] | None:
    """(module, name, kind) where ``module.name`` is really defined, following re-exports (and their renames:
    ``from .unix import Unix as PlatformDirs``) a few levels."""
    m = mods.get(module)
    if m is None or depth > 3:
        return None
    if name in m.defs:
        return module, name, m.defs[name]
    if name in m.imports:
        return definition(mods, *m.imports[name], depth=depth + 1)
    return None


def candidates(mods: dict[str, Module]) -> list[Sample]:
    """Single-line statements that use an identifier defined in another module of the package."""
    out: list[Sample] = []
    for m in mods.values():
        cross: dict[str, tuple[str, str]] = {}
        for bound, (mod, name) in m.imports.items():
            d = definition(mods, mod, name)
            # A name the module also defines itself (e.g. per platform) is not only in another module.
            if d is not None and d[0] != m.name and bound not in m.defs:
                cross[bound] = d[1:]
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


def prepare(pkg: Package, per_package: int, seed: int) -> Package:
    """Parse the package and draw its samples (its own RNG: the same lines whatever else is chosen)."""
    pkg.mods = load_package(pkg)
    pkg.pool = candidates(pkg.mods)
    rng = random.Random(f"{seed}/{pkg.name}")
    pkg.samples = rng.sample(pkg.pool, min(per_package, len(pkg.pool)))
    return pkg


def choose(max_packages: int, per_package: int, seed: int) -> tuple[list[Package], list[str], int]:
    """Step 3 of the rule: (chosen packages, skipped ones with why, how many the rule admitted)."""
    eligible = discover()
    order = random.Random(seed).sample(eligible, len(eligible))
    chosen: list[Package] = []
    skipped: list[str] = []
    for pkg in order:
        if len(chosen) >= max_packages:
            break
        prepare(pkg, per_package, seed)
        if len(pkg.pool) < per_package:
            skipped.append(f"{pkg.name} ({len(pkg.pool)} candidate lines)")
            continue
        chosen.append(pkg)
    return sorted(chosen, key=lambda p: p.name), skipped, len(eligible)


# ---- measuring -----------------------------------------------------------------------------------------------
def found(prompt: str, ident: str, kind: str) -> bool:
    """The definition (name + signature) is in the prompt."""
    if kind == "function":
        return re.search(rf"\bdef {re.escape(ident)}\(", prompt) is not None
    if kind == "class":
        return re.search(rf"\bclass {re.escape(ident)}\b", prompt) is not None
    return re.search(rf"^\s*{re.escape(ident)}\s*(:|=(?!=))", prompt, re.MULTILINE) is not None


def open_docs_for(sample: Sample, mods: dict[str, Module], rng: random.Random) -> list[tuple]:
    """Tabs an editor would have open: two modules the file imports from, two others of the package."""
    m = sample.module
    imported = []
    for mod, _ in m.imports.values():
        if mod != m.name and mod in mods and mod not in imported:
            imported.append(mod)
    others = [k for k in mods if k != m.name and k not in imported[:2]]
    chosen = imported[:2] + rng.sample(others, min(2, len(others)))
    return [(mods[k].path.as_uri(), str(mods[k].path), 1, mods[k].text) for k in chosen]


def _settings(condition: str) -> Settings:
    s = Settings()
    if condition in (PREFIX, EDIT):
        s = attrs.evolve(s, context=attrs.evolve(s.context, facts=False, neighbour_snippets=0))
    return s


def just_edited(smp: Sample, pkg: Package) -> tuple:
    """The edit history of a user who has just written the definition of the sample's first identifier (in its
    own module) and now uses it here: one hunk adding that definition, as the server's recorder would hold it."""
    ident = next(iter(smp.idents))
    src = smp.module.imports.get(ident)
    d = definition(pkg.mods, *src) if src else None
    if d is None:
        return ()
    m = pkg.mods[d[0]]
    node = next((n for n in _module_scope(m.tree.body)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == d[1]
                 or isinstance(n, (ast.Assign, ast.AnnAssign)) and any(
                     isinstance(t, ast.Name) and t.id == d[1]
                     for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))), None)
    if node is None:
        return ()
    lines = m.text.split("\n")
    lo = min([node.lineno, *(x.lineno for x in getattr(node, "decorator_list", []))]) - 1
    hi = node.end_lineno or node.lineno
    rel = os.path.relpath(m.path, pkg.root).replace(os.sep, "/")
    h = EditHistory()
    h.opened("edited", rel, "\n".join(lines[:lo] + lines[hi:]))
    h.changed("edited", rel, m.text, lo, now=0.0)
    return h.recent(3)


@dataclass
class Result:
    hits: int = 0
    total: int = 0
    times: list[float] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)  # samples whose warm-up exceeded WARM_CAP_S
    seconds: float = 0.0

    @property
    def recall(self) -> float:
        return self.hits / max(1, self.total)


async def _drain(runner: JediRunner | None, task: asyncio.Future | None = None) -> None:
    """Stop a sample's open-time warming and wait until the jedi worker has nothing queued or running."""
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    if runner is not None:
        await runner.idle(timeout=IDLE_CAP_S)


async def run_condition(pkg: Package, condition: str, seed: int) -> Result:
    """One condition on one package's samples: a fresh engine and jedi worker."""
    t_start = time.perf_counter()
    res = Result()
    runner = JediRunner() if condition not in (PREFIX, EDIT) else None
    try:
        if runner is not None:
            await runner.warm_up()  # the server starts jedi right after initialize, before any file is opened
        # No on-disk facts store: every condition measures a project opened for the first time (a reopened one
        # starts from the store's facts, which would make the first-request figures a measure of the cache).
        ce = ContextEngine(_settings(condition), runner=runner, root=pkg.root, facts_store=None)
        await asyncio.wrap_future(ce.counter_loaded())
        tabs_rng = random.Random(f"{seed}/{pkg.name}/tabs")
        warm_rng = random.Random(f"{seed}/{pkg.name}/warm")
        warmed: dict[str, bool] = {}  # uri -> its warm-up finished within the cap
        for k, smp in enumerate(pkg.samples):
            lines = smp.module.text.split("\n")
            lines[smp.row] = lines[smp.row][:smp.col]
            text = "\n".join(lines)
            path = str(smp.module.path)
            uri = smp.module.path.as_uri()
            docs = open_docs_for(smp, pkg.mods, tabs_rng) if condition == TABS else []
            opening: asyncio.Future | None = None
            if condition in (FIRST, AFTER_1S):
                uri += f"#sample{k}"  # a document opened just now: nothing cached for it
                # The server's didOpen (Engine.did_open): warm the document in the background, do not wait.
                opening = asyncio.ensure_future(ce.warm_document(uri=uri, path=path, language="python", text=text))
                # A keystroke's request is a later message than didOpen: the loop has run the task didOpen
                # started up to its first wait on the worker (1 ms), or for a second.
                await asyncio.sleep(1.0 if condition == AFTER_1S else DID_OPEN_SETTLE_S)
            elif condition in (STEADY, TABS) and uri not in warmed:
                # The file has been open a while: an earlier request elsewhere in it resolved its facts.
                other = warm_rng.randrange(len(lines))
                early = ce.start(uri=uri, path=path, language="python", text=text, line=other, character=0,
                                 encoding="utf-32", open_docs=docs)
                try:
                    await asyncio.wait_for(ce.warm(early), WARM_CAP_S)
                    warmed[uri] = True
                except TimeoutError:
                    warmed[uri] = False
                await _drain(runner)
            if condition in (STEADY, TABS) and not warmed[uri]:
                res.timeouts.append(f"{smp.module.name}:{smp.row + 1}")
                res.total += len(smp.idents)  # counted as missed
                continue
            t0 = time.perf_counter()
            req = ce.start(uri=uri, path=path, language="python", text=text, line=smp.row, character=smp.col,
                           encoding="utf-32", open_docs=docs, recent=just_edited(smp, pkg) if condition == EDIT else ())
            await ce.complete(req)
            built = ce.assemble(req, explain=False)  # as the server builds it: no per-candidate report
            res.times.append((time.perf_counter() - t0) * 1000)
            prompt = built.prompt.budgeted_text()
            assert built.tokens <= built.budget
            for name, kind in smp.idents.values():
                res.total += 1
                res.hits += found(prompt, name, kind)
            await _drain(runner, opening)
    finally:
        if runner is not None:
            await runner.aclose()
    res.seconds = time.perf_counter() - t_start
    return res


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[int(q * (len(s) - 1))]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    doc = __doc__ or ""
    rule = doc[doc.index("Which packages"):doc.index("Isolation:")].strip()
    ap = argparse.ArgumentParser(description=doc.split("\n")[0], epilog=rule,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", nargs="+", default=None, metavar="NAME",
                    help="measure these packages instead of the ones the rule chooses")
    ap.add_argument("--max-packages", type=int, default=12, help="packages the rule chooses (default 12)")
    ap.add_argument("--per-package", type=int, default=15, help="hidden lines per package (default 15)")
    ap.add_argument("--runs", type=int, default=3, help="medians over this many runs (default 3)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--neighbours", action="store_true", help="also the steady state with neighbour tabs open")
    ap.add_argument("--only", nargs="+", choices=["prefix", "steady", "first", "1s", "tabs", "edits"], default=None,
                    help="run only these conditions (prefix/suffix only is the baseline: keep it)")
    ap.add_argument("--edits", action="store_true",
                    help="also: facts off, the first identifier's definition just written (a recent edit)")
    ap.add_argument("--markdown", action="store_true", help="print the README tables")
    args = ap.parse_args(argv)
    t_wall = time.perf_counter()

    if args.packages:
        pkgs = [prepare(find_package(p), args.per_package, args.seed) for p in args.packages]
        skipped: list[str] = []
        how = "named on the command line"
    else:
        pkgs, skipped, eligible = choose(args.max_packages, args.per_package, args.seed)
        how = f"{len(pkgs)} of {eligible} packages the rule admits (seed {args.seed})"
    conditions = [PREFIX, STEADY, FIRST, AFTER_1S] + ([TABS] if args.neighbours else []) + ([EDIT] if args.edits else [])
    if args.only:
        short = {"prefix": PREFIX, "steady": STEADY, "first": FIRST, "1s": AFTER_1S, "tabs": TABS, "edits": EDIT}
        conditions = [short[c] for c in args.only]
    budget = Settings().context.max_prompt_tokens
    print(f"packages {how}: {', '.join(p.name for p in pkgs)}", file=sys.stderr)
    if skipped:
        print(f"skipped (fewer than {args.per_package} candidate lines): {', '.join(skipped)}", file=sys.stderr)
    print(f"{sum(len(p.samples) for p in pkgs)} hidden lines, budget {budget} tokens, {args.runs} runs, "
          f"conditions: {', '.join(conditions)}", file=sys.stderr)

    runs: list[dict[str, dict[str, Result]]] = []
    for r in range(args.runs):
        per: dict[str, dict[str, Result]] = {}
        for pkg in pkgs:
            per[pkg.name] = {}
            for cond in conditions:
                res = asyncio.run(run_condition(pkg, cond, args.seed))
                per[pkg.name][cond] = res
                late = f", {len(res.timeouts)} warm-ups over {WARM_CAP_S:.0f} s" if res.timeouts else ""
                print(f"[run {r + 1}/{args.runs}] {pkg.name:18} {cond:20} recall {res.recall:.3f} "
                      f"({res.hits}/{res.total}) {res.seconds:6.1f} s{late}", file=sys.stderr)
        runs.append(per)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    table: list[tuple[str, str, str, str, list[float]]] = []
    for pkg in pkgs:
        ids = runs[0][pkg.name][conditions[0]].total
        table.append((pkg.name, str(pkg.modules), str(len(pkg.samples)), str(ids),
                      [med([run[pkg.name][c].recall for run in runs]) for c in conditions]))
    pooled = []
    for c in conditions:
        pooled.append(med([sum(run[p.name][c].hits for p in pkgs) / max(1, sum(run[p.name][c].total for p in pkgs))
                           for run in runs]))
    all_ids = sum(runs[0][p.name][conditions[0]].total for p in pkgs)
    table.append(("all", str(sum(p.modules for p in pkgs)), str(sum(len(p.samples) for p in pkgs)), str(all_ids),
                  pooled))
    worst = []
    for i, c in enumerate(conditions):
        name, *_, recalls = min(table[:-1], key=lambda row: row[4][i]) if len(table) > 1 else ("-", [0.0])
        worst.append(f"{c}: {name} ({recalls[i]:.3f})")
    timing = []
    for c in [PREFIX, *TIMED]:
        if c in conditions:
            ts = [[t for p in pkgs for t in run[p.name][c].times] for run in runs]
            timing.append((c, med([_pct(t, 0.5) for t in ts]), med([_pct(t, 0.95) for t in ts])))
    timeouts = sorted({f"{p.name}: {s}" for run in runs for p in pkgs for c in conditions
                       for s in run[p.name][c].timeouts})
    wall = time.perf_counter() - t_wall

    head = ["package", "modules", "samples", "identifiers", *conditions]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for name, mods, n, ids, recalls in table:
            cells = [f"**{name}**" if name == "all" else name, mods, n, ids, *(f"{x:.3f}" for x in recalls)]
            print("| " + " | ".join(cells) + " |")
        print()
        print("Worst package: " + "; ".join(worst) + ".")
        print()
        print("| condition | build p50 (ms) | build p95 (ms) |")
        print("|---|---|---|")
        for c, p50, p95 in timing:
            print(f"| {c} | {p50:.1f} | {p95:.1f} |")
    else:
        widths = [max(len(h), 8) for h in head]
        widths[0] = max(widths[0], *(len(row[0]) for row in table))
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for name, mods, n, ids, recalls in table:
            cells = [name, mods, n, ids, *(f"{x:.3f}" for x in recalls)]
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
        print("worst package: " + "; ".join(worst))
        for c, p50, p95 in timing:
            print(f"build {c:20} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
    print()
    print(f"{len(pkgs)} packages ({how}), {sum(len(p.samples) for p in pkgs)} hidden lines, {all_ids} "
          f"cross-module identifiers, budget {budget} tokens, medians of {args.runs} run(s); "
          f"wall time {wall / 60:.1f} min.")
    if timeouts:
        print(f"Warm-ups over {WARM_CAP_S:.0f} s (counted as misses): {', '.join(timeouts)}.")
    print(f"wall time {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
