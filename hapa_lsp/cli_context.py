"""`hapa-lsp context FILE:LINE:COL`: print the prompt the server would send, piece by piece, with costs.

It runs the server's own path (``ContextEngine.start`` / ``complete`` / ``assemble`` on a ``JediRunner``).
By default it shows the steady state of an open document (facts resolved by earlier keystrokes).
``--after-ms N`` shows the request N ms after opening the file, as the server has it: the server is running
(its jedi worker started, as after initialize), didOpen starts ``ContextEngine.warm_document`` in the
background, and N ms later the request runs with the normal time box (``facts_time_budget_ms``); ``--cold`` is
``--after-ms 0``, the first keystroke right after opening the file (a later message than didOpen all the same:
the warming task has sent its first job to the worker, which the request then waits behind; 1 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``context`` subcommand."""
    c = sub.add_parser("context", help="print the prompt context for a cursor: pieces, sources, tokens, timings")
    c.add_argument("location", metavar="FILE:LINE:COL", help="1-based line and column, as editors show them")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--settings", default=None, help="a JSON file with settings as an editor would send them")
    c.add_argument("--root", default=None, help="workspace root (default: nearest folder with .git or "
                                                 "pyproject.toml)")
    c.add_argument("--open", action="append", default=[], metavar="FILE",
                   help="another file open in the editor (neighbour snippets); repeatable")
    c.add_argument("--after-ms", default=None, metavar="N",
                   help="the request N ms after opening the file (didOpen warms jedi in the background, as in the "
                        "server; the request has the normal time box); default: the steady state")
    c.add_argument("--cold", action="store_true", help="the first request right after opening the file "
                                                       "(--after-ms 0)")


def _root_for(path: Path) -> str:
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return str(Path(*parts[:parts.index(marker) + 1]))
    for d in [path.parent, *path.parent.parents]:
        if (d / ".git").exists() or (d / "pyproject.toml").exists() or (d / "setup.py").exists():
            return str(d)
    top = path.parent
    while (top / "__init__.py").exists() and top.parent != top:
        top = top.parent  # the folder that holds the outermost package
    return str(top)


def _language(path: str) -> str:
    from hapa_lsp.features.common import language_for

    return language_for(path)


def run(args: argparse.Namespace) -> int:
    """Build and print the context; 2 with a catalog code for bad input or an excluded file."""
    from hapa_lsp import config, errors

    m = re.fullmatch(r"(.+):(\d+):(\d+)", args.location)
    if not m:
        err = errors.InvalidInput(f"expected FILE:LINE:COL, got {args.location!r}")
        print(err.message)
        return 2
    file, line, col = Path(m.group(1)).resolve(), int(m.group(2)), int(m.group(3))
    after_ms, bad = _after_ms(args)
    if bad:
        err = errors.InvalidInput(bad)
        print(err.message)
        return 2
    init: Any = None
    if args.settings:
        try:
            init = json.loads(Path(args.settings).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            err = errors.InvalidInput(f"cannot read settings file {args.settings}: {exc}")
            print(err.message)
            return 2
    settings, problems = config.load(environ=os.environ, init_options=init)
    for p in problems:
        print(p.message)
    from hapa_lsp.context import is_excluded

    if is_excluded(str(file), settings.context.exclude_globs):
        err = errors.FileExcluded(f"{file.name} is excluded from AI (hapa.context.excludeGlobs)")
        print(err.message)
        return 2
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err = errors.InvalidInput(f"cannot read {file}: {exc}")
        print(err.message)
        return 2
    opened = []
    for o in args.open:
        op = Path(o).resolve()
        if is_excluded(str(op), settings.context.exclude_globs):
            continue  # never read an excluded file, not even to index it
        try:
            opened.append((op.as_uri(), str(op), 1, op.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    root = args.root or _root_for(file)
    built = asyncio.run(_build(settings, root, file, text, line, col, opened, after_ms=after_ms))
    if args.json:
        data = built.to_json()
        data["after_ms"] = after_ms  # null: the steady state
        print(json.dumps(data, indent=2))
        return 0
    _print(built, file, after_ms)
    return 0


def _after_ms(args: argparse.Namespace) -> tuple[float | None, str]:
    """(milliseconds after opening, or None for the steady state; what is wrong with the flags, or "")."""
    raw = getattr(args, "after_ms", None)
    cold = getattr(args, "cold", False)
    if raw is None:
        return (0.0 if cold else None), ""
    try:
        ms = float(raw)
    except (TypeError, ValueError):
        return None, f"--after-ms expects a number of milliseconds, got {raw!r}"
    if not ms >= 0 or ms == float("inf"):  # also NaN
        return None, f"--after-ms expects a number of milliseconds >= 0, got {raw!r}"
    if cold and ms != 0:
        return None, f"--cold means --after-ms 0, not --after-ms {raw}"
    return ms, ""


async def _build(settings: Any, root: str, file: Path, text: str, line: int, col: int, opened: list, *,
                 after_ms: float | None) -> Any:
    from hapa_lsp.context.builder import ContextEngine
    from hapa_lsp.jedi_client import JediRunner

    runner = JediRunner()
    opening: asyncio.Future[Any] | None = None
    try:
        ce = ContextEngine(settings, runner=runner, root=root)
        # The server loads the tokenizer at start-up, long before a request; here the counts are the point.
        await asyncio.wrap_future(ce.counter_loaded())
        uri, language = file.as_uri(), _language(str(file))
        kw: dict[str, Any] = {"uri": uri, "path": str(file), "language": language, "text": text,
                              "line": line - 1, "character": col - 1, "encoding": "utf-32", "open_docs": opened}
        # The server starts its jedi worker right after initialize, before any document is opened.
        await runner.warm_up()
        if after_ms is None:
            # What earlier keystrokes in this file would have resolved: every fact the cursor wants.
            await ce.warm(ce.start(**kw))
        else:
            # didOpen (Engine.did_open): warm the document in the background; the request comes N ms later.
            opening = asyncio.ensure_future(ce.warm_document(uri=uri, path=str(file), language=language, text=text))
            # Even at 0 ms the request is a later message than didOpen: the loop has run the task didOpen
            # started up to its first wait on the worker (1 ms is plenty for that).
            await asyncio.sleep(max(after_ms, 1.0) / 1000)
        return await ce.build(**kw)
    finally:
        if opening is not None:
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        await runner.aclose()


_LABELS = {"fact": "fact from", "static-fact": "signature read from", "neighbour": "neighbour snippet from",
           "class-outline": "class outline of", "recent-edit": "recent edit of", "format": "format tokens of",
           "prefix": "prefix of", "suffix": "suffix of"}


def _print(built: Any, file: Path, after_ms: float | None = None) -> None:
    p = built.prompt
    print(f"hapa-lsp context for {file}")
    if after_ms is None:
        print("state: steady (the facts earlier keystrokes in this file would have resolved)")
    else:
        print(f"state: {after_ms:g} ms after opening the file (jedi warming it in the background since)")
    print(f"model {p.model} (family {p.family}); tokens {built.tokens} of {built.budget} "
          f"(counted with {built.token_counter}); "
          f"{'multi-line' if built.decision.multiline else 'single line'} ({built.decision.reason})")
    print("pieces:")
    for x in built.pieces:
        print(f"  {x.tokens:6d} tokens  {_LABELS.get(x.source, x.source + ' of')} {x.where}")
    if built.candidates:
        print("candidates, best ranked first (why each is in or out):")
        for c in built.candidates:
            print(f"  {'in ' if c.taken else 'out'} {c.tokens:6d} tokens  {_LABELS.get(c.source, c.source + ' of')} "
                  f"{c.where}: {c.reason}")
    print("timings (ms): " + ", ".join(f"{k.removesuffix('_ms')} {v:.2f}" for k, v in built.timings.items()))
    if built.facts_missing:
        print(f"facts not resolved within the time box: {built.facts_missing}")
    print("---- prompt " + "-" * 60)
    print(p.text())
