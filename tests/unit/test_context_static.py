"""Extra context without jedi (workspace signatures), ranked and filling the budget; recent edits in prompts."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import attrs
import pytest

from hapa_lsp.config import Settings
from hapa_lsp.context import static_facts
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.context.static_facts import StaticFacts, module_file, scan
from hapa_lsp.next_edit.history import EditHistory

pytestmark = pytest.mark.timeout(30)

UTIL = textwrap.dedent('''\
    """Utilities."""
    import os

    LIMIT: int = 10
    RETRIES = 3


    @functools.cache
    def helper(path: str,
               *, strict: bool = False) -> list[str]:
        """Split a path into parts.

        More words.
        """
        def inner():
            pass
        return path.split(os.sep)


    async def fetch(url: str) -> bytes: ...


    class Box(Base):
        """A box."""

        size = 1

        def __init__(self, width: int, height: int = 1):
            self.width = width

        def area(self) -> int:
            return self.width
    ''')


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp_path


def test_scan_renders_top_level_definitions_like_jedi_facts():
    defs = scan("/w/pkg/util.py", UTIL)
    assert set(defs) == {"LIMIT", "RETRIES", "helper", "fetch", "Box"}  # nested and class members are not
    assert defs["helper"].text == 'def helper(path: str, *, strict: bool = False) -> list[str]:\n' \
                                  '    """Split a path into parts."""'
    assert defs["helper"].line == 9 and defs["helper"].kind == "function"
    assert defs["fetch"].text == "async def fetch(url: str) -> bytes: ..."
    assert defs["Box"].text == 'class Box(Base):\n    """A box."""\n' \
                               "    def __init__(self, width: int, height: int = 1): ..."
    assert defs["LIMIT"].text == "LIMIT: int = 10" and defs["LIMIT"].kind == "statement"


def test_module_files_resolve_relative_absolute_and_packages(tmp_path):
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": UTIL, "pkg/sub/__init__.py": "",
                               "pkg/sub/deep.py": "", "src/other/__init__.py": "", "src/other/mod.py": ""})
    deep = str(root / "pkg/sub/deep.py")
    assert module_file(deep, "..util", str(root)) == str(root / "pkg/util.py")
    assert module_file(deep, ".", str(root)) == str(root / "pkg/sub/__init__.py")
    assert module_file(deep, "pkg.util", str(root)) == str(root / "pkg/util.py")
    assert module_file(deep, "other.mod", str(root)) == str(root / "src/other/mod.py")
    assert module_file(deep, "requests", str(root)) is None  # not the workspace's: jedi's job
    assert module_file("", ".util", str(root)) is None  # an untitled buffer has no folder


def test_lookup_follows_reexports_and_sees_a_changed_file(tmp_path, monkeypatch):
    root = _package(tmp_path, {"pkg/__init__.py": "from .util import helper as helper\n", "pkg/util.py": UTIL,
                               "pkg/main.py": ""})
    st = StaticFacts()
    main = str(root / "pkg/main.py")
    fact = st.lookup(main, "pkg", "helper", str(root))
    assert fact is not None and fact.path == str(root / "pkg/util.py") and fact.text.startswith("def helper(")
    monkeypatch.setattr(static_facts, "_STAT_EVERY_S", 0.0)
    util = root / "pkg/util.py"
    util.write_text(UTIL.replace("def helper(path: str,", "def helper(path: bytes,"), encoding="utf-8")
    os.utime(util, ns=(1, 1))  # a different mtime even on a coarse clock
    assert st.lookup(main, "pkg", "helper", str(root)).text.startswith("def helper(path: bytes,")
    assert st.lookup(main, ".util", "missing", str(root)) is None


def test_an_excluded_module_is_never_read(tmp_path, monkeypatch):
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/secrets/__init__.py": "", "pkg/secrets/keys.py":
                               "SIGNING_KEY = 'sk-123'\n", "pkg/main.py": ""})
    opened: list[str] = []
    real_open = open

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    st = StaticFacts(("**/secrets/**",))
    assert st.lookup(str(root / "pkg/main.py"), ".secrets.keys", "SIGNING_KEY", str(root)) is None
    assert not any("keys.py" in p for p in opened)


def _engine(root: Path, **ctx) -> ContextEngine:
    s = Settings()
    s = attrs.evolve(s, context=attrs.evolve(s.context, neighbour_snippets=0, **ctx))
    return ContextEngine(s, runner=None, root=str(root))


def _cursor(text: str) -> tuple[str, int, int]:
    i = text.index("<CURSOR>")
    before = text[:i]
    return text.replace("<CURSOR>", ""), before.count("\n"), len(before) - (before.rfind("\n") + 1)


def test_a_needed_imported_name_beats_the_class_outline_when_space_is_short(tmp_path):
    methods = "\n".join(f"    def method_number_{i}(self, first_argument, second_argument):\n        return {i}\n"
                        for i in range(60))
    doc = ("from .util import helper\n\n\nclass Big:\n" + methods +
           "\n    def run(self, p):\n        parts = helper(p)\n        <CURSOR>\n")
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": UTIL})
    text, row, col = _cursor(doc)
    ce = _engine(root, max_prompt_tokens=600)
    path = str(root / "pkg/main.py")
    built = ce.assemble(ce.start(uri="file://" + path, path=path, language="python", text=text, line=row,
                                 character=col))
    prompt = built.prompt.budgeted_text()
    assert "def helper(path: str, *, strict: bool = False) -> list[str]:" in prompt
    by = {c.source: c for c in built.candidates}
    assert by["static-fact"].taken and by["static-fact"].reason == "ranked in"
    outline = by["class-outline"]
    # The outline is worth having, but only the part that fits after the signature.
    assert outline.reason in ("trimmed to fit", "over budget"), built.candidates
    assert built.tokens <= built.budget


def test_the_budget_is_used_when_facts_are_waiting(tmp_path):
    util = "\n\n".join(f'def tool_{i}(alpha: int, beta: str = "b{i}") -> dict[str, int]:\n'
                       f'    """Tool number {i} does a thing to alpha and beta."""\n    return {{}}\n'
                       for i in range(120))
    names = ", ".join(f"tool_{i}" for i in range(120))
    uses = "\n".join(f"    tool_{i}(1)" for i in range(0, 120, 4))
    doc = f"from .util import ({names})\n\n\ndef main():\n{uses}\n    <CURSOR>\n"
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": util})
    text, row, col = _cursor(doc)
    ce = _engine(root)
    path = str(root / "pkg/main.py")
    built = ce.assemble(ce.start(uri="file://" + path, path=path, language="python", text=text, line=row,
                                 character=col))
    assert built.window.prefix == text[:len(built.window.prefix)]  # the whole small document is in the window
    assert 0.95 * built.budget <= built.tokens <= built.budget, (built.tokens, built.budget)
    left_out = [c for c in built.candidates if not c.taken]
    assert left_out and all(c.reason in ("over budget", "duplicate") for c in left_out)


def test_recent_edits_of_another_file_are_in_the_prompt_newest_nearest(tmp_path):
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": UTIL})
    h = EditHistory(pause_s=1.0)
    h.opened("util", "pkg/util.py", UTIL)
    h.changed("util", "pkg/util.py", UTIL + "\n\ndef first_new(a):\n    return a\n", 40, now=1.0)
    h.changed("util", "pkg/util.py", UTIL + "\n\ndef first_new(a):\n    return a\n"
              "\n\ndef second_new(b):\n    return b\n", 44, now=10.0)
    text, row, col = _cursor("from .util import helper\n\n\ndef go(x):\n    <CURSOR>\n")
    ce = _engine(root)
    path = str(root / "pkg/main.py")
    built = ce.assemble(ce.start(uri="file://" + path, path=path, language="python", text=text, line=row,
                                 character=col, recent=h.recent(3)))
    prompt = built.prompt.budgeted_text()
    assert "def first_new(a):\n    return a" in prompt and "def second_new(b):\n    return b" in prompt
    # Grouped under the file, best (the newest) last in it... and the file right before the document.
    assert [c.reason for c in built.candidates if c.source == "recent-edit"] == ["ranked in", "ranked in"]
    assert prompt.index("<|file_sep|>pkg/util.py") < prompt.index("<|file_sep|>pkg/main.py")


def test_no_recent_edits_when_the_setting_is_zero(tmp_path):
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": UTIL})
    h = EditHistory()
    h.opened("util", "pkg/util.py", UTIL)
    h.changed("util", "pkg/util.py", UTIL + "\n\ndef first_new(a):\n    return a\n", 40, now=1.0)
    text, row, col = _cursor("def go(x):\n    <CURSOR>\n")
    ce = _engine(root, recent_edits=0)
    path = str(root / "pkg/main.py")
    built = ce.assemble(ce.start(uri="file://" + path, path=path, language="python", text=text, line=row,
                                 character=col, recent=h.recent(3)))
    assert "first_new" not in built.prompt.budgeted_text()
