"""`hapa-lsp context FILE:LINE:COL`: print the prompt the server would send, piece by piece, with costs.

It runs the server's own path (``ContextEngine.start`` / ``complete`` / ``assemble`` on a ``JediRunner``).
By default it shows the steady state of an open document (facts resolved by earlier keystrokes);
``--cold`` shows the very first request after opening the file, when the time box cuts jedi short.
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
    c.add_argument("--cold", action="store_true", help="the first request after opening the file")


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
    built = asyncio.run(_build(settings, root, file, text, line, col, opened, cold=args.cold))
    if args.json:
        print(json.dumps(built.to_json(), indent=2))
        return 0
    _print(built, file)
    return 0


async def _build(settings: Any, root: str, file: Path, text: str, line: int, col: int, opened: list, *,
                 cold: bool) -> Any:
    from hapa_lsp.context.builder import ContextEngine
    from hapa_lsp.jedi_client import JediRunner

    runner = JediRunner()
    try:
        ce = ContextEngine(settings, runner=runner, root=root)
        # The server loads the tokenizer at start-up, long before a request; here the counts are the point.
        await asyncio.wrap_future(ce.counter_loaded())
        kw = dict(uri=file.as_uri(), path=str(file), language=_language(str(file)), text=text, line=line - 1,
                  character=col - 1, encoding="utf-32", open_docs=opened)
        if not cold:
            # What earlier keystrokes in this file would have resolved: every fact the cursor wants.
            await runner.warm_up()
            await ce.warm(ce.start(**kw))
        return await ce.build(**kw)
    finally:
        await runner.aclose()


def _print(built: Any, file: Path) -> None:
    p = built.prompt
    print(f"hapa-lsp context for {file}")
    print(f"model {p.model} (family {p.family}); tokens {built.tokens} of {built.budget} "
          f"(counted with {built.token_counter}); "
          f"{'multi-line' if built.decision.multiline else 'single line'} ({built.decision.reason})")
    print("pieces:")
    for x in built.pieces:
        label = {"fact": "fact from", "neighbour": "neighbour snippet from", "class-outline": "class outline of",
                 "format": "format tokens of"}.get(x.source, x.source + " of")
        print(f"  {x.tokens:6d} tokens  {label} {x.where}")
    print("timings (ms): " + ", ".join(f"{k.removesuffix('_ms')} {v:.2f}" for k, v in built.timings.items()))
    if built.facts_missing:
        print(f"facts not resolved within the time box: {built.facts_missing}")
    print("---- prompt " + "-" * 60)
    print(p.text())
