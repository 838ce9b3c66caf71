"""Signatures of names imported from the workspace's own modules, read from the text without jedi.

The first keystroke after opening a file comes before jedi has parsed anything (a cold jedi takes seconds on
a big package), so prompts would go without the project's own definitions exactly when the user starts typing.
The definitions a file imports from its own package are plain text on disk: a top-level ``def`` / ``class`` /
assignment is found with one regular-expression pass over the module (no parse, no inference: ~1 ms for a
3,000-line module), its header rendered as jedi's facts are (``uses.Fact``), and kept per (path, mtime, size).
``from .x import y`` re-exports (a package's ``__init__``) are followed a few levels. jedi's facts replace these
as soon as the worker has them; names from installed packages stay jedi's.

Runs on the event loop: every step is bounded (file size, lines per header, re-export depth) and a file's scan is
cached, so a keystroke pays a dictionary lookup and, at most every few seconds per module, one ``os.stat``.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict

from hapa_lsp.context import is_excluded
from hapa_lsp.context.uses import Fact, imports_of

MAX_BYTES = 1_500_000  # a module bigger than this is generated code: jedi's facts, or none
_STAT_EVERY_S = 2.0  # how long a module's stat is trusted before its mtime is looked at again
_MAX_MODULES = 512
_MAX_DEPTH = 3
_TOP = re.compile(r"^(?:async[ \t]+def|def|class)[ \t]+([A-Za-z_]\w*)|^([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=)",
                  re.M)
_DOC_OPEN = re.compile(r"""^[ \t]+[rRuUbB]{0,2}(\"\"\"|'''|"|')""")


def _first_doc_line(lines: list[str], i: int) -> str:
    """The first line of the docstring starting at ``lines[i]`` (a body's first statement), or ''."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines):
        return ""
    m = _DOC_OPEN.match(lines[i])
    if not m:
        return ""
    rest = lines[i][m.end():]
    q = m.group(1)
    if q in rest:
        rest = rest[:rest.find(q)]
    s = rest.strip()
    if not s and len(q) == 3 and i + 1 < len(lines):
        s = lines[i + 1].strip()
        if q in s:
            s = s[:s.find(q)].strip()
    return s[:160]


def _header(lines: list[str], i: int, max_lines: int = 12) -> tuple[str, int]:
    """A ``def`` / ``class`` header from ``lines[i]`` to its ``:``, whitespace collapsed; and the next line."""
    out: list[str] = []
    depth = 0
    j = i
    while j < len(lines) and j - i < max_lines:
        ln = lines[j]
        code = ln.split("#", 1)[0] if "#" in ln and "'" not in ln and '"' not in ln else ln
        out.append(code.strip())
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        j += 1
        if depth <= 0 and code.rstrip().endswith(":"):
            break
        if depth <= 0 and not code.rstrip().endswith(("(", ",", "\\")):
            break
    text = re.sub(r"\s+", " ", " ".join(out)).replace("( ", "(").replace(" )", ")").replace(", )", ")")
    return _cut_at_colon(text)[:400], j


def _cut_at_colon(header: str) -> str:
    """A header up to the colon that ends it (``def f(a: int) -> int: return a`` -> ``def f(a: int) -> int:``)."""
    depth = 0
    for i, ch in enumerate(header):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == ":" and depth == 0:
            return header[:i + 1]
    return header


def _init_signature(lines: list[str], start: int) -> str:
    """``def __init__(...)`` of the class whose body starts at ``start`` (its first level only), or ''."""
    body = None
    for j in range(start, min(len(lines), start + 400)):
        ln = lines[j]
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        ind = len(ln) - len(ln.lstrip())
        if body is None:
            body = ind
            if ind == 0:
                return ""
        if ind < body:
            return ""
        if ind == body and ln.lstrip().startswith("def __init__("):
            head, _ = _header(lines, j)
            return head
    return ""


def scan(path: str, text: str) -> dict[str, Fact]:
    """Top-level definitions of a module's text -> facts (functions, classes, module-level assignments)."""
    lines = text.split("\n")
    out: dict[str, Fact] = {}
    # Line numbers from offsets: counted incrementally, the matches come in order.
    row = 0
    pos = 0
    for m in _TOP.finditer(text):
        row += text.count("\n", pos, m.start())
        pos = m.start()
        if m.group(1):
            name = m.group(1)
            head, nxt = _header(lines, row)
            if not head.endswith(":"):
                continue
            doc = _first_doc_line(lines, nxt)
            if head.startswith("class "):
                parts = [head]
                if doc:
                    parts.append(f'    """{doc}"""')
                init = _init_signature(lines, nxt)
                if init:
                    parts.append(f"    {init} ...")
                out[name] = Fact(path, row + 1, name, "class", "\n".join(parts))
            else:
                out[name] = Fact(path, row + 1, name, "function",
                                 head + (f'\n    """{doc}"""' if doc else " ..."))
        elif m.group(2) and m.group(2) not in out:
            name = m.group(2)
            code = lines[row].strip()
            if len(code) > 200:
                code = code[:200]
            out[name] = Fact(path, row + 1, name, "statement", code)
    return out


def module_file(importer: str, module: str, root: str | None) -> str | None:
    """The file of ``module`` as imported from the file ``importer`` (``.x``, ``..x.y`` or ``pkg.x``), looked up
    in the importer's package and the workspace; None when it is not a source file there."""
    if not importer or not os.path.isabs(importer):
        return None
    dots = len(module) - len(module.lstrip("."))
    rest = [p for p in module[dots:].split(".") if p]
    bases: list[str] = []
    if dots:
        base = os.path.dirname(importer)
        for _ in range(dots - 1):
            base = os.path.dirname(base)
        bases.append(base)
    else:
        # Absolute imports of the project's own packages: from the workspace root, and from the folder that
        # holds the importer's outermost package (a src/ layout, or site-packages when reading a library).
        top = os.path.dirname(importer)
        while os.path.isfile(os.path.join(top, "__init__.py")) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        bases.append(top)
        if root:
            bases.append(root)
            bases.append(os.path.join(root, "src"))
    for base in bases:
        stem = os.path.join(base, *rest)
        for cand in ((stem + ".py") if rest else None, os.path.join(stem, "__init__.py")):
            if cand and os.path.isfile(cand):
                return cand
    return None


class StaticFacts:
    """Per-module scans, cached by (mtime, size) and re-validated at most every two seconds."""

    def __init__(self, exclude_globs: tuple[str, ...] = ()):
        self.exclude_globs = tuple(exclude_globs)
        # path -> (checked at, (mtime_ns, size), defs, imports of the module)
        self._mods: OrderedDict[str, tuple[float, tuple[int, int], dict[str, Fact],
                                           dict[str, tuple[int, int, str, str | None]]]] = OrderedDict()
        self._files: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.stats = {"scans": 0, "scan_ms": 0.0}

    def _module(self, path: str) -> tuple[dict[str, Fact], dict[str, tuple[int, int, str, str | None]]] | None:
        now = time.monotonic()
        hit = self._mods.get(path)
        if hit is not None and now - hit[0] < _STAT_EVERY_S:
            self._mods.move_to_end(path)
            return hit[2], hit[3]
        try:
            st = os.stat(path)
        except OSError:
            self._mods.pop(path, None)
            return None
        sig = (st.st_mtime_ns, st.st_size)
        if hit is not None and hit[1] == sig:
            self._mods[path] = (now, sig, hit[2], hit[3])
            self._mods.move_to_end(path)
            return hit[2], hit[3]
        if st.st_size > MAX_BYTES or is_excluded(path, self.exclude_globs):
            return None
        t0 = time.perf_counter()
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        defs = scan(path, text)
        imports = imports_of(text) if " import " in text or text.startswith("import ") else {}
        self.stats["scans"] += 1
        self.stats["scan_ms"] += (time.perf_counter() - t0) * 1000
        self._mods[path] = (now, sig, defs, imports)
        self._mods.move_to_end(path)
        while len(self._mods) > _MAX_MODULES:
            self._mods.popitem(last=False)
        return defs, imports

    def _file(self, importer: str, module: str, root: str | None) -> str | None:
        key = (importer, module)
        now = time.monotonic()
        hit = self._files.get(key)
        if hit is not None and now - hit[0] < _STAT_EVERY_S:
            return hit[1]
        found = module_file(importer, module, root)
        if len(self._files) > 4 * _MAX_MODULES:
            self._files.clear()
        self._files[key] = (now, found)
        return found

    def lookup(self, importer: str, module: str, name: str, root: str | None) -> Fact | None:
        """The definition of ``name`` as ``from module import name`` in ``importer`` finds it, or None."""
        for _ in range(_MAX_DEPTH):
            path = self._file(importer, module, root)
            if path is None:
                return None
            mod = self._module(path)
            if mod is None:
                return None
            defs, imports = mod
            fact = defs.get(name)
            if fact is not None:
                return fact
            again = imports.get(name)
            if again is None:
                # ``from pkg import sub`` where ``sub`` is a module: nothing to show as a signature.
                return None
            importer, module, name = path, again[2], again[3] or name
        return None
