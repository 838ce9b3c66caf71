"""Semantic facts from jedi: signatures and first docstring lines of what the code near the cursor uses.

Finding the names is cheap text work done on the event loop (``find_uses``). Resolving them is jedi work
done in the jedi worker process (``FactsEngine.resolve``), time-boxed by the caller: whatever is
resolved when the box ends is used, and the job keeps filling the per-document cache a little longer so
the next keystroke has it. Resolutions are cached per (document, expression) across keystrokes; a job is
coalesced per document (one queued at a time, always working on the latest text).
"""

from __future__ import annotations

import asyncio
import builtins
import keyword
import math
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable

from hapa_lsp.context import is_excluded

# Modules every code model knows by heart: their facts would only take budget from the project's own code.
_KNOWN_MODULES = frozenset({"__future__", "typing", "typing_extensions", "collections.abc", "abc"})
_SKIP = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"self", "cls", "match", "case", "_", "type"}
_CHAIN = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_STRING = re.compile(r"""(?:[rbfuRBFU]{0,2})(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""",
                     re.S)
_DEF = re.compile(r"^(\s*)(?:async\s+def|def)\s+(\w+)")
_CLASS = re.compile(r"^(\s*)class\s+(\w+)\s*(?:\(([^)]*)\))?")
_OWN_NAME = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+\w+")
_SELF_ATTR = re.compile(r"\bself\.(\w+)\s*(?::[^=\n]+)?=(?!=)")
_IMPORT_FROM = re.compile(r"^\s*from\s+(\.*[\w.]*)\s+import\s+\(?([^)#\n]*)")
_IMPORT = re.compile(r"^(\s*)import\s+([\w., ]+)")
# Names bound in a function body: assignment targets, loop variables, ``as`` names.
_BINDING = re.compile(r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?::[^=\n]+)?(?<![=!<>])=(?!=)"
                      r"|\bfor\s+\(?([A-Za-z_][\w\s,]*?)\)?\s+in\b|\bas\s+([A-Za-z_]\w*)")

# How long one resolution job may keep the jedi worker, even after the caller's time box ended.
JOB_CAP_S = 0.12
# Warming a newly opened document: every import resolved, in background jobs of this length, at most this long.
OPEN_JOB_CAP_S = 0.4
OPEN_TOTAL_S = 20.0
SLOW_PER_JOB = 2
IDLE_S = 1.5  # a pause in requests this long (the user reads or thinks) lets jedi do the expensive resolutions
_TTL_S = 300.0
_MAX_ENTRIES = 4000


@dataclass(frozen=True, slots=True)
class Use:
    """An expression used near the cursor, where its occurrence closest to the cursor is, and how often."""

    expr: str  # ``name`` or ``head.attr``
    line: int  # 0-based line of the occurrence closest to the cursor
    col: int  # column of the last component's first character (code points)
    dist: int  # lines between that occurrence and the cursor
    count: int = 1
    imported: bool = False
    slow: bool = False  # an attribute of a local value: jedi must infer its type (not waited for)
    module: str = ""  # for imported names: the module they are imported from

    @property
    def rank(self) -> float:
        """Lower is better: near the cursor, used often, imported from elsewhere; inference-heavy ones last."""
        return (self.dist - 4.0 * math.log2(1 + self.count) - (3.0 if self.imported else 0.0)
                + (12.0 if self.slow else 0.0))


@dataclass(frozen=True, slots=True)
class Fact:
    """One definition, rendered as a Python stub (header, first docstring line, constructor)."""

    path: str  # file of the definition (absolute, or a module name for compiled modules)
    line: int  # 1-based line of the definition
    name: str
    kind: str  # function, class, statement, ...
    text: str
    rank: float = 0.0
    source: str = "fact"  # "fact" or "class-outline"

    @property
    def key(self) -> tuple[str, int]:
        """Identity for deduplication."""
        return (self.path, self.line)


@dataclass(slots=True)
class Uses:
    """What the cursor's surroundings use, plus the enclosing class outline (built from the text, no jedi)."""

    uses: list[Use]
    outline: Fact | None = None
    scope_start: int = 0  # first line of the enclosing function (or of the scanned range)


def _strip_code(line: str) -> str:
    if "#" in line or "'" in line or '"' in line:
        line = _STRING.sub('""', line)
        h = line.find("#")
        if h != -1:
            line = line[:h]
    return line


_STR_OR_COMMENT = re.compile(r"""(?:[rbfuRBFU]{0,2})(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")|#[^\n]*""",
                             re.S)


def _blank_strings(code: str) -> str:
    """``code`` with string literals and comments replaced by spaces (newlines kept)."""
    if "#" not in code and "'" not in code and '"' not in code:
        return code
    return _STR_OR_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), code)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


_FROM_HEAD = re.compile(r"[ \t]*from[ \t]+[\w.]+[ \t]+$")


def imports_of(text: str) -> dict[str, tuple[int, int, str, str | None]]:
    """Names bound by the imports of ``text`` -> (line, column, module imported from)."""
    return _imports(text.split("\n"), text)


def _imports(lines: list[str], text: str | None = None) -> dict[str, tuple[int, int, str, str | None]]:
    """Names bound by imports -> (line, column of the name in its import statement, module imported from)."""
    out: dict[str, tuple[int, int, str, str | None]] = {}
    if text is None:
        text = "\n".join(lines)
    # str.find locates the few "import" words at C speed; only their lines are looked at in Python.
    rows: list[int] = []
    row = last = 0
    pos = text.find("import")
    while pos != -1:
        ls = text.rfind("\n", 0, pos) + 1
        head = text[ls:pos]
        if not head.strip() or _FROM_HEAD.match(head):
            row += text.count("\n", last, ls)
            last = ls
            rows.append(row)
        nl = text.find("\n", pos)
        if nl == -1:
            break
        pos = text.find("import", nl)
    skip_to = -1
    for i in rows:
        if i <= skip_to or i >= len(lines):
            continue
        ln = lines[i]
        m = _IMPORT_FROM.match(ln)
        if m:
            module = m.group(1)
            # Parenthesised imports span lines: gather them until the closing bracket.
            body_lines = [(i, ln)]
            if "(" in ln and ")" not in ln:
                j = i + 1
                while j < len(lines) and ")" not in lines[j - 1] and j - i < 200:
                    body_lines.append((j, lines[j]))
                    j += 1
                skip_to = j - 1
            for r, seg in body_lines:
                seg_start = seg.find(" import ") + 8 if r == i else 0
                for mm in re.finditer(r"([A-Za-z_]\w*)(?:\s+as\s+([A-Za-z_]\w*))?", seg[seg_start:].split("#")[0]):
                    bound = mm.group(2) or mm.group(1)
                    col = seg_start + (mm.start(2) if mm.group(2) else mm.start(1))
                    if bound != "import":
                        out[bound] = (r, col, module, mm.group(1))
        else:
            m2 = _IMPORT.match(ln)
            if m2:
                for mm in re.finditer(r"([\w.]+)(?:\s+as\s+(\w+))?", m2.group(2)):
                    bound = mm.group(2) or mm.group(1).split(".")[0]
                    col = m2.start(2) + (mm.start(2) if mm.group(2) else mm.start(1))
                    out[bound] = (i, col, mm.group(1), None)
    return out


def _enclosing(lines: list[str], row: int, indent: int, pattern: re.Pattern[str], bound: int = 600
               ) -> tuple[int, re.Match[str]] | None:
    for i in range(row, max(-1, row - bound), -1):
        ln = lines[i]
        if i != row and (len(ln) > indent and ln[:indent].isspace() or not ln.strip()):
            continue  # deeper than the block we are looking for (a C-speed test: most lines end here)
        if _indent(ln) < indent or i == row:
            m = pattern.match(ln)
            if m and _indent(ln) < indent:
                return i, m
            if _indent(ln) < indent and not ln.lstrip().startswith(("@", "#", ")", "]", "}")):
                indent = _indent(ln)
                if indent == 0:
                    m = pattern.match(ln)
                    return (i, m) if m else None
    return None


def class_outline(lines: list[str], class_row: int, path: str, max_methods: int = 40) -> Fact:
    """The enclosing class as a stub: header, ``self.`` attributes and method signatures (from the text)."""
    header = lines[class_row]
    base = _indent(header)
    body_indent: int | None = None
    attrs_seen: dict[str, None] = {}
    methods: list[str] = []
    i = class_row + 1
    while i < len(lines):
        ln = lines[i]
        if ln.strip():
            ind = _indent(ln)
            if ind <= base:
                break
            if body_indent is None:
                body_indent = ind
            if ind == body_indent:
                m = _DEF.match(ln)
                if m and len(methods) < max_methods:
                    sig = ln.strip()
                    j = i
                    # Multi-line signatures: join until the line that ends the header.
                    while not sig.rstrip().endswith(":") and j + 1 < len(lines) and j - i < 10:
                        j += 1
                        sig += " " + lines[j].strip()
                    methods.append(" " * 4 + re.sub(r"\s+", " ", sig) + " ...")
                elif re.match(r"\s*\w+\s*(:|=)", ln) and not ln.lstrip().startswith(("return", "def")):
                    attrs_seen.setdefault(ln.strip().split("=")[0].split(":")[0].strip(), None)
            for m in _SELF_ATTR.finditer(ln):
                attrs_seen.setdefault(m.group(1), None)
        i += 1
    parts = [header.strip()]
    if attrs_seen:
        parts.append("    # attributes: " + ", ".join(list(attrs_seen)[:40]))
    parts.extend(methods)
    name = _CLASS.match(header).group(2) if _CLASS.match(header) else "class"
    return Fact(path, class_row + 1, name, "class", "\n".join(parts), source="class-outline")


_OUTLINES: OrderedDict[tuple[str, str, int, int], tuple[float, Fact]] = OrderedDict()


def _cached_outline(lines: list[str], class_row: int, doc: str) -> Fact:
    """The class outline of document ``doc``, recomputed at most every 2 s per class while it is being edited (a
    big class costs a millisecond to scan). Without a document identity nothing is cached: two files may well
    have the same class header at the same row and the same number of lines."""
    if not doc:
        return class_outline(lines, class_row, "")
    key = (doc, lines[class_row], class_row, len(lines))
    hit = _OUTLINES.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < 2.0:
        return hit[1]
    fact = class_outline(lines, class_row, "")
    _OUTLINES[key] = (now, fact)
    while len(_OUTLINES) > 64:
        _OUTLINES.popitem(last=False)
    return fact


def find_uses(text: str, row: int, col: int, *, before: int = 60, after: int = 20,
              imports: dict[str, tuple[int, int, str, str | None]] | None = None, doc: str = "") -> Uses:
    """Names used in the enclosing function and near the cursor, ranked; imports and ``self.`` included.

    ``imports`` may be a recent ``imports_of(text)`` (the facts job keeps one per document): import rows may
    be stale by a few keystrokes, which only affects ranking; resolution re-reads the job's own text.
    ``doc`` is the document's identity (``hapa_lsp.documents.doc_key``): the enclosing class's outline is
    cached for a moment per document, and not at all without one.
    """
    lines = text.split("\n")
    if not lines:
        return Uses([])
    row = min(row, len(lines) - 1)
    cur_line = lines[row]
    indent = _indent(cur_line) if cur_line.strip() else min(col, len(cur_line))
    if not cur_line[:col].strip():
        indent = col
    func = _enclosing(lines, row, indent if indent else 1, _DEF)
    start = max(0, row - before)
    end = min(len(lines), row + after + 1)
    outline = None
    klass = None
    if func is not None:
        fstart, fm = func
        start = max(fstart, row - before * 3)
        find = len(fm.group(1))
        for j in range(row + 1, min(len(lines), row + after * 3)):
            if lines[j].strip() and _indent(lines[j]) <= find:
                end = min(end, j) if j > row else end
                break
        klass = _enclosing(lines, fstart, find, _CLASS) if find else None
        if klass is not None:
            outline = _cached_outline(lines, klass[0], doc)
    if imports is None:
        imports = _imports(lines, text)
    local: set[str] = set()
    if func is not None:
        header = lines[func[0]]
        j = func[0]
        while not _strip_code(header).rstrip().endswith(":") and j + 1 < len(lines) and j - func[0] < 20:
            j += 1
            header += " " + lines[j]
        params = header[header.find("(") + 1:]
        local.update(re.findall(r"(?:^|[(,*\s])([A-Za-z_]\w*)\s*(?=[:=,)])", params))
    for i in range(start, end):
        for m in _BINDING.finditer(_strip_code(lines[i])):
            for g in m.groups():
                if g:
                    local.update(n.strip() for n in g.split(",") if n.strip())
    local -= set(imports)
    found: dict[str, Use] = {}
    if outline is not None and klass is not None:
        # Base classes are "used" by every method of the class.
        cm = klass[1]
        for bm in _CHAIN.finditer(cm.group(3) or ""):
            b = bm.group(1)
            if b.split(".")[0] not in _SKIP:
                _add(found, b, klass[0], cm.start(3) + bm.start(1) + b.rfind(".") + 1, row, imports)
    # Strings (docstrings span lines) and comments blanked with spaces: columns and line numbers stay valid.
    blanked = _blank_strings("\n".join(lines[start:end])).split("\n")
    for i in range(start, end):
        ln = blanked[i - start] if i - start < len(blanked) else lines[i]
        if i == row:
            ln = ln[:col]
            # The identifier being typed is not a use yet.
            ln = re.sub(r"[\w.]+$", "", ln)
        code = ln
        if not code.strip() or code.lstrip().startswith(("import ", "from ")):
            continue
        code = _OWN_NAME.sub("", code)  # ``def name`` / ``class name`` defines, it does not use
        for m in _CHAIN.finditer(code):
            chain = m.group(1)
            if code[m.end():m.end() + 1] == "=" and code[m.end() + 1:m.end() + 2] != "=" and "(" in code[:m.start()]:
                continue  # a keyword argument's name, not a use
            parts = chain.split(".")
            head = parts[0]
            if head in ("self", "cls") and len(parts) > 1:
                continue  # the class outline covers self.<member>
            if head in _SKIP or keyword.iskeyword(head):
                continue
            if head not in local:
                _add(found, head, i, m.start(1), row, imports)
            if len(parts) > 1:
                expr = ".".join(parts[:2])
                _add(found, expr, i, m.start(1) + len(head) + 1, row, imports, slow=head in local)
    # Every other import of the file, resolved at its import statement, after everything used nearby.
    far = 1000
    for name, (irow, icol, _module, _orig) in imports.items():
        if name not in found and name not in _SKIP and _module not in _KNOWN_MODULES:
            found[name] = Use(name, irow, icol, far, 1, True, module=_module)
            far += 1
    uses = sorted(found.values(), key=lambda u: u.rank)
    return Uses(uses, outline, start)


def _add(found: dict[str, Use], expr: str, line: int, col: int, row: int,
         imports: dict[str, tuple[int, int, str, str | None]] | None = None, slow: bool = False) -> None:
    dist = abs(row - line)
    u = found.get(expr)
    if u is None:
        # Where an imported name comes from: a module whose file is excluded is never resolved (never read).
        src = imports.get(expr.split(".")[0]) if imports else None
        if src is not None and src[2] in _KNOWN_MODULES:
            return
        found[expr] = Use(expr, line, col, dist, 1, src is not None, slow, src[2] if src else "")
    elif dist < u.dist:
        found[expr] = Use(expr, line, col, dist, u.count + 1, u.imported, u.slow, u.module)
    else:
        found[expr] = Use(u.expr, u.line, u.col, u.dist, u.count + 1, u.imported, u.slow, u.module)


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
            _row, _col, module, orig = spec
            if orig is None:
                stmt = f"import {module}" + (f" as {head}" if module.split(".")[0] != head else "")
            else:
                stmt = f"from {module} import {orig}" + (f" as {head}" if orig != head else "")
            lines.append(stmt)
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


class FactsEngine:
    """Resolves uses to facts in the jedi worker, with a per-document cache (on the event loop) across keystrokes."""

    def __init__(self, runner: Any, *, exclude_globs: tuple[str, ...] = ()):
        self.runner = runner
        self.exclude_globs = tuple(exclude_globs)
        self._cache: OrderedDict[tuple[str, str], tuple[float, tuple[Fact, ...]]] = OrderedDict()
        self._pending: dict[tuple[str, str], tuple[str, str, str | None, list[Use]]] = {}
        self._jobs: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._started: set[tuple[str, str]] = set()
        self._wanted: dict[tuple[str, str], Callable[[], bool]] = {}
        # Per document: the lines where each imported name is used, and the imports themselves (refreshed by
        # resolution jobs, so that a keystroke does not rescan the whole file).
        self._usage: dict[str, dict[str, list[int]]] = {}
        self._imports: dict[str, dict[str, tuple[int, int, str, str | None]]] = {}
        self._job_s: dict[str, float] = {}
        self._job_s_all = 0.0
        self._requests = 0
        self._failures_seen: set[str] = set()

        self.stats = {"resolved": 0, "jobs": 0, "job_ms": 0.0}

    def imports_for(self, uri: str) -> dict[str, tuple[int, int, str, str | None]] | None:
        """The imports of ``uri`` as the last resolution job saw them (None before the first job)."""
        return self._imports.get(uri)

    # ---- cache ----------------------------------------------------------------------------------------------
    def _get(self, uri: str, expr: str) -> tuple[Fact, ...] | None:
        hit = self._cache.get((uri, expr))
        if hit is None:
            return None
        if time.monotonic() - hit[0] > _TTL_S:
            del self._cache[(uri, expr)]
            return None
        self._cache.move_to_end((uri, expr))
        return hit[1]

    def _put(self, uri: str, expr: str, facts: tuple[Fact, ...]) -> None:
        self._cache[(uri, expr)] = (time.monotonic(), facts)
        self._cache.move_to_end((uri, expr))
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)

    def forget(self, uri: str) -> None:
        """Drop a document's cached resolutions (it was closed)."""
        self._usage.pop(uri, None)
        self._imports.pop(uri, None)
        self._job_s.pop(uri, None)
        for kind in ("fast", "slow", "open"):
            self._pending.pop((uri, kind), None)  # a queued job for it then has nothing to do
            self._wanted.pop((uri, kind), None)
        for k in [k for k in self._cache if k[0] == uri]:
            del self._cache[k]

    def known(self, uri: str, uses: list[Use]) -> tuple[list[Fact], list[Use]]:
        """Facts already resolved for ``uses`` (ranked by their best use) and the uses still unresolved."""
        best: dict[tuple[str, int], Fact] = {}
        missing: list[Use] = []
        for u in uses:
            facts = self._get(uri, u.expr)
            if facts is None:
                missing.append(u)
                continue
            r = u.rank
            for f in facts:
                prev = best.get(f.key)
                if prev is None or r < prev.rank:
                    best[f.key] = Fact(f.path, f.line, f.name, f.kind, f.text, r, f.source)
        return sorted(best.values(), key=lambda f: f.rank), missing

    # ---- resolution (jedi worker process) ------------------------------------------------------------------
    def _prepare(self, key: tuple[str, str]) -> tuple[str, tuple[Any, ...]] | None:
        """At the job's turn in the worker queue: the latest snapshot, minus what is cached meanwhile."""
        snap = self._pending.pop(key, None)
        if snap is None:
            return None
        text, path, root, uses = snap
        uri = key[0]
        todo = [u for u in uses if self._get(uri, u.expr) is None]
        far = ([u.expr for u in uses if u.imported and u.dist >= 1000 and "." not in u.expr]
               if key[1] in ("fast", "open") else [])
        if not todo and not far:
            return None
        self._started.add(key)
        return "facts", (text, path, root, todo, far, self.exclude_globs,
                         OPEN_JOB_CAP_S if key[1] == "open" else JOB_CAP_S)

    async def _job(self, key: tuple[str, str], still_wanted: Callable[[], bool]) -> None:
        from hapa_lsp.jedi_client import JediError

        try:
            out = await self.runner.submit(lambda: self._prepare(key), timeout=JOB_CAP_S + 60.0,
                                           still_wanted=lambda: self._wanted.get(key, still_wanted)(),
                                           background=key[1] == "open")
        except JediError as exc:
            # Facts are optional: a prompt without them is still a prompt. Said once per kind of failure.
            self._jedi_failed(exc)
            return
        finally:
            self._started.discard(key)
        if out:
            self._apply(key[0], out)

    def _jedi_failed(self, exc: Exception) -> None:
        sig = str(exc).split("\n", 1)[0][:120]
        if sig not in self._failures_seen:
            self._failures_seen.add(sig)
            from hapa_lsp.log import get_logger

            get_logger().warning("jedi failed resolving facts; prompts go without them", error=str(exc)[:2000])

    async def warm_document(self, uri: str, path: str, root: str | None, text: str,
                            still_wanted: Callable[[], bool]) -> None:
        """Resolve every name the document imports, in background jobs, right after it was opened: the worker
        parses the modules it imports (the first completion then answers fast) and the first prompt has facts."""
        if self.runner is None:
            return
        uses = [Use(name, row, col, 1000, 1, True, False, module)
                for name, (row, col, module, _orig) in imports_of(text).items()]
        if not uses:
            return
        deadline = time.monotonic() + OPEN_TOTAL_S
        key = (uri, "open")
        while still_wanted() and time.monotonic() < deadline:
            before = self.stats["resolved"]
            await self._submit(key, (text, path, root, uses), still_wanted)
            if self.stats["resolved"] == before:
                return  # all resolved (or jedi cannot resolve the rest)

    def _apply(self, uri: str, out: dict[str, Any]) -> None:
        """Store what a worker job resolved (event loop)."""
        if out.get("imports") is not None:
            self._imports[uri] = out["imports"]
        if out.get("usage"):
            self._usage[uri] = {**self._usage.get(uri, {}), **out["usage"]}
        for expr, facts in out.get("facts", ()):
            self._put(uri, expr, tuple(facts))
        self.stats["resolved"] += out.get("resolved", 0)
        if out.get("est_s") is None:
            return
        self.stats["jobs"] += 1
        self.stats["job_ms"] += out["took_s"] * 1000
        est = out["est_s"]
        # Per document, how long a job takes (parse + two names), smoothed: decides whether waiting pays.
        prev = self._job_s.get(uri)
        self._job_s[uri] = est if prev is None else 0.5 * prev + 0.5 * est
        # Across documents too: a document never seen yet is expected to cost what the others did.
        self._job_s_all = 0.8 * self._job_s_all + 0.2 * est if self._job_s_all else est

    def rerank(self, uri: str, uses: list[Use], row: int) -> list[Use]:
        """Far imports ranked by their nearest use in the whole file (from the last resolution job)."""
        usage = self._usage.get(uri)
        if not usage:
            return uses
        import bisect

        out = []
        for u in uses:
            rows = usage.get(u.expr) if u.dist >= 1000 else None
            if rows is not None:
                # Uses on the cursor's own line are being typed, and the import line is no use: neither counts.
                skip = (row, u.line)
                k = bisect.bisect_left(rows, row)
                near = None
                lo, hi = k - 1, k
                while lo >= 0 and rows[lo] in skip:
                    lo -= 1
                while hi < len(rows) and rows[hi] in skip:
                    hi += 1
                for j in (lo, hi):
                    if 0 <= j < len(rows):
                        d = abs(rows[j] - row)
                        near = d if near is None else min(near, d)
                n = len(rows) - sum(1 for x in skip if x in rows)
                if near is not None:
                    u = Use(u.expr, u.line, u.col, near + 20, max(1, n), u.imported, u.slow, u.module)
                else:
                    # Imported but not used yet: what the user is about to write is the likeliest use.
                    u = Use(u.expr, u.line, u.col, 30, u.count, u.imported, u.slow, u.module)
            out.append(u)
        out.sort(key=lambda x: x.rank)
        return out

    async def resolve(self, uri: str, path: str, root: str | None, text: str, uses: list[Use], *,
                      timeout: float, still_wanted: Callable[[], bool] = lambda: True, wait_slow: bool = False
                      ) -> None:
        """Resolve ``uses`` in the jedi worker, waiting at most ``timeout``; the job may finish later."""
        if self.runner is None or not uses:
            return
        # Imported names resolve in a tiny import script (cheap); everything else needs the whole document
        # parsed, and attributes of local values need type inference: those wait until jedi is idle.
        fast = [u for u in uses if u.module and not u.slow]
        slow = [u for u in uses if not u.module or u.slow]
        # Attributes of local values need type inference (often 100+ ms): they are resolved in the background,
        # after the cheap names, and never waited for.
        waits = []
        if fast:
            job = self._submit((uri, "fast"), (text, path, root, fast), still_wanted)
            # Waiting is worth it only for names from other files, and only when this document's jobs have been
            # fast enough to finish inside the box (jedi parses a 2,700-line file in ~50 ms): otherwise the
            # request goes now and the results serve the next keystroke.
            expected = self._job_s.get(uri, self._job_s_all)
            if wait_slow or (any(u.imported for u in fast) and expected <= timeout):
                waits.append(job)
        self._requests += 1
        if slow and wait_slow:
            waits.append(self._submit((uri, "slow"), (text, path, root, slow), still_wanted))
        elif slow:
            # Only after a pause in requests, a couple at a time: a whole-document parse or one inference can take
            # 100+ ms, and the next keystroke's imported names must not wait behind it.
            stamp = self._requests
            asyncio.get_running_loop().call_later(IDLE_S, self._when_idle, stamp, (uri, "slow"),
                                                  (text, path, root, slow[:SLOW_PER_JOB]), still_wanted)
        if timeout <= 0 or not waits:
            return
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*waits)), timeout)
        except TimeoutError:
            pass

    def _busy(self) -> bool:
        return any(not j.done() for j in self._jobs.values())

    def _when_idle(self, stamp: int, key: tuple[str, str], snap: tuple[str, str, str | None, list[Use]],
                   still_wanted: Callable[[], bool]) -> None:
        if stamp == self._requests and not self._busy():
            self._submit(key, snap, still_wanted)

    def _submit(self, key: tuple[str, str], snap: tuple[str, str, str | None, list[Use]],
                still_wanted: Callable[[], bool]) -> asyncio.Future[Any]:
        self._pending[key] = snap
        self._wanted[key] = still_wanted  # a queued job works for the newest request, so asks it
        job = self._jobs.get(key)
        if job is None or job.done() or key in self._started:
            # A running job already took its snapshot: queue another (it runs next, on the latest text).
            job = asyncio.ensure_future(self._job(key, still_wanted))
            self._jobs[key] = job
            job.add_done_callback(lambda f, k=key: self._jobs.pop(k, None) if self._jobs.get(k) is f else None)
        return job

