"""jedi rendering of facts, inside the jedi worker process (``hapa_lsp.jedi_worker``): one job resolves the uses
``uses.find_uses`` found into stub facts, within a cap, and returns plain data for ``facts.FactsEngine``.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from typing import Any

from hapa_lsp.context import is_excluded
from hapa_lsp.context.uses import Fact, Use, imports_of


def first_doc_line(doc: str) -> str:
    """The first non-empty line of a docstring, shortened."""
    for ln in doc.strip().split("\n"):
        s = ln.strip()
        if s:
            return s[:160]
    return ""


def _header(name: Any, max_lines: int = 12) -> str:
    """The definition's own header lines (``def``/``class`` up to the ``:``), whitespace collapsed."""
    try:
        code = name.get_line_code(after=max_lines)
    except Exception:  # noqa: BLE001 - compiled objects have no source
        return ""
    lines = code.split("\n")
    out: list[str] = []
    depth = 0
    for ln in lines:
        out.append(ln.strip())
        depth += sum(ln.count(c) for c in "([{") - sum(ln.count(c) for c in ")]}")
        if depth <= 0 and ln.rstrip().endswith(":"):
            break
        if depth <= 0 and not ln.lstrip().startswith(("def ", "async def ", "class ", "@")):
            break
    text = re.sub(r"\s+", " ", " ".join(out)).replace("( ", "(").replace(" )", ")").replace(", )", ")")
    return text[:400]


def render(name: Any) -> Fact | None:
    """A jedi definition as a stub fact, or None for what is not worth a prompt line (modules, params)."""
    kind = name.type
    if kind in ("module", "param", "keyword", "path") or name.module_name == "builtins":
        return None
    path = str(name.module_path) if name.module_path else (name.module_name or "")
    line = name.line or 0
    try:
        doc = first_doc_line(name.docstring(raw=True)) if kind in ("function", "class", "property") else ""
    except Exception:  # noqa: BLE001
        doc = ""
    header = _header(name)
    if kind in ("function", "property"):
        if not header.startswith(("def ", "async def ")):
            sigs = name.get_signatures()
            header = f"def {sigs[0].to_string()}:" if sigs else f"def {name.name}(...):"
        body = header if header.endswith(":") else header + ":"
        text = body + (f'\n    """{doc}"""' if doc else " ...")
        parent = None
        try:
            parent = name.parent()
        except Exception:  # noqa: BLE001
            pass
        if parent is not None and parent.type == "class":
            cls_header = _header(parent) or f"class {parent.name}:"
            text = cls_header + "\n" + "\n".join("    " + ln for ln in text.split("\n"))
    elif kind == "class":
        if not header.startswith("class "):
            header = f"class {name.name}:"
        parts = [header]
        if doc:
            parts.append(f'    """{doc}"""')
        try:
            sigs = name.get_signatures()
        except Exception:  # noqa: BLE001
            sigs = []
        if sigs:
            params = sigs[0].to_string()
            params = params[params.find("(") + 1:]
            params = params[:-1] if params.endswith(")") else params
            if len(params) > 300:
                # Cut at a parameter boundary: a half parameter would teach the model a wrong signature.
                cut = params.rfind(", ", 0, 300)
                params = (params[:cut] if cut > 0 else params[:300]) + ", ..."
            parts.append(f"    def __init__(self{', ' if params.strip() else ''}{params}): ...")
        text = "\n".join(parts)
    else:
        try:
            code = name.get_line_code().strip()
        except Exception:  # noqa: BLE001
            code = ""
        if not code or name.name not in code:
            return None
        text = code[:200]
    return Fact(path, line, name.name, kind, text)


def import_statement(name: str, spec: tuple[int, int, str, str | None]) -> str:
    """The statement that binds ``name`` as the import ``spec`` (from ``imports_of``) does."""
    _row, _col, module, orig = spec
    if orig is None:
        return f"import {module}" + (f" as {name}" if module.split(".")[0] != name else "")
    return f"from {module} import {orig}" + (f" as {name}" if orig != name else "")


def _import_script(uses: list[Use], imports: dict[str, tuple[int, int, str, str | None]]
                   ) -> tuple[str, dict[str, tuple[int, int]]]:
    """A script of just the imports ``uses`` need, plus their ``head.attr`` expressions; 1-based positions."""
    lines: list[str] = []
    heads: dict[str, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for u in uses:
        head = u.expr.split(".")[0]
        spec = imports.get(head)
        if spec is None:
            continue
        if head not in heads:
            lines.append(import_statement(head, spec))
            heads[head] = len(lines)
        if "." in u.expr:
            lines.append(u.expr)
            where[u.expr] = (len(lines), len(head) + 1)
        else:
            stmt = lines[heads[head] - 1]
            where[u.expr] = (heads[head], stmt.rfind(head))
    return "\n".join(lines) + "\n", where


def _usage_rows(text: str, names: list[str]) -> dict[str, list[int]]:
    """Where the file's far imports ``names`` are used (so that the ranking knows their distance to the cursor)."""
    import bisect

    starts = [0]
    starts.extend(m.end() for m in re.finditer("\n", text))
    usage: dict[str, list[int]] = {}
    for name in names:
        usage[name] = sorted({bisect.bisect_right(starts, m.start()) - 1
                              for m in re.finditer(rf"(?<![\w.]){re.escape(name)}\b", text)})
    return usage


def module_excluded(module: str, path: str, root: str | None, exclude_globs: tuple[str, ...]) -> bool:
    """True when the file a module name points to (in the workspace or next to the document) is excluded."""
    if not exclude_globs:
        return False
    dots = len(module) - len(module.lstrip("."))
    rel = module.lstrip(".").replace(".", "/")
    bases = []
    if dots and path:
        base = os.path.dirname(path)
        for _ in range(dots - 1):
            base = os.path.dirname(base)
        bases.append(base)
    elif root:
        bases.append(root)
    for base in bases:
        for cand in (f"{base}/{rel}.py", f"{base}/{rel}/__init__.py", f"{base}/{rel}"):
            if is_excluded(cand, exclude_globs):
                return True
    return is_excluded(rel + ".py", exclude_globs) or is_excluded(rel + "/", exclude_globs)


def resolve_batch(text: str, path: str, root: str | None, todo: list[Use], far_names: list[str],
                  exclude_globs: tuple[str, ...], cap_s: float, *, project: Any = None, environment: Any = None
                  ) -> dict[str, Any]:
    """One resolution job's jedi work (in the jedi worker process): facts for ``todo`` until ``cap_s`` after
    the first parse, the document's imports, and where the far imports ``far_names`` are used.

    Returns plain data for ``FactsEngine._apply``: {"imports", "usage", "facts": [(expr, [Fact])], "resolved",
    "took_s", "est_s"} (no "est_s" when nothing was parsed).
    """
    out: dict[str, Any] = {"imports": None, "usage": _usage_rows(text, far_names) if far_names else {},
                           "facts": [], "resolved": 0}
    if not todo:
        return out
    t0 = time.perf_counter()
    fresh = imports_of(text)
    out["imports"] = fresh
    # Imports not used near the cursor are resolved at their import statement, as it is in this text.
    todo = [replace(u, line=fresh[u.expr][0], col=fresh[u.expr][1]) if u.dist >= 1000 and u.expr in fresh
            else u for u in todo]
    import jedi

    # Imported names are resolved in a few-line script of just their imports (next to the document, so
    # relative imports work): parsing the whole document costs ~50 ms on 2,700 lines, this ~1 ms.
    small, where = _import_script([u for u in todo if u.module], fresh)
    todo = [u for u in todo if u.expr in where] + [u for u in todo if u.expr not in where]
    scripts: dict[bool, Any] = {}

    def script_for(synthetic: bool) -> Any:
        if synthetic not in scripts:
            if synthetic:
                side = os.path.join(os.path.dirname(path), "__hapa_imports__.py") if path else None
                scripts[True] = jedi.Script(code=small, path=side, project=project, environment=environment)
            else:
                scripts[False] = jedi.Script(code=text, path=path or None, project=project, environment=environment)
        return scripts[synthetic]

    try:
        script_for(bool(where))
    except Exception:  # noqa: BLE001 - jedi cannot read this document: no facts, no failure
        return out
    # The cap starts after the first parse so that a cold start (jedi's import) still resolves something.
    t_parsed = time.perf_counter()
    deadline = t_parsed + cap_s
    k = 0
    for k, u in enumerate(todo):
        if k and time.perf_counter() > deadline:
            break
        facts: list[Fact] = []
        if u.module and module_excluded(u.module, path, root, exclude_globs):
            out["facts"].append((u.expr, facts))  # jedi would have to read an excluded file: it is not asked to
            continue
        try:
            at = where.get(u.expr)
            if at is not None:
                names = script_for(True).goto(at[0], at[1], follow_imports=True)
            else:
                names = script_for(False).goto(u.line + 1, u.col, follow_imports=True)
            for n in names[:2]:
                f = render(n)
                if f is not None and not is_excluded(f.path, exclude_globs):
                    facts.append(f)
        except Exception:  # noqa: BLE001 - jedi fails on odd code; that name simply has no fact
            facts = []
        out["facts"].append((u.expr, facts))
        out["resolved"] += 1
    out["took_s"] = time.perf_counter() - t0
    per_name = (time.perf_counter() - t_parsed) / max(1, min(len(todo), k + 1))
    out["est_s"] = (t_parsed - t0) + 2 * per_name
    return out
