"""Text scanning for facts, on the event loop: the names the code near the cursor uses, the file's imports and
the enclosing class's outline. No jedi here (``jedi_facts`` resolves, in the worker; ``facts`` schedules and caches).
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass


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
    return _STR_OR_COMMENT.sub(lambda m: _NOT_NEWLINE.sub(" ", m.group()), code)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


_NOT_NEWLINE = re.compile(r"[^\n]")
_PARAM = re.compile(r"(?:^|[(,*\s])([A-Za-z_]\w*)\s*(?=[:=,)])")
_TYPED_TAIL = re.compile(r"[\w.]+$")
_FROM_HEAD = re.compile(r"[ \t]*from[ \t]+[\w.]+[ \t]+$")


def imports_of(text: str) -> dict[str, tuple[int, int, str, str | None]]:
    """Names bound by the imports of ``text`` -> (line, column, module imported from)."""
    return _imports(text.split("\n"), text)


def namespace_chains(text: str, imports: dict[str, tuple[int, int, str, str | None]], limit: int = 2) -> list[str]:
    """``name.attr`` expressions of imported names that the text uses as namespaces (``os.path.join``: ``os.path``),
    most used first: where completion lists will be asked for (``os.path.``)."""
    counts: dict[str, int] = {}
    for m in _NAMESPACE.finditer(text):
        head = m.group(1)
        if head in imports:
            key = f"{head}.{m.group(2)}"
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts, key=lambda k: -counts[k])[:limit]


_NAMESPACE = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\.([A-Za-z_]\w*)\.[A-Za-z_]")


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
        local.update(_PARAM.findall(params))
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
            ln = _TYPED_TAIL.sub("", ln)
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
