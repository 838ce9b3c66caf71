"""Where a next edit goes: the region around the cursor, or the next place the last change calls for."""

from __future__ import annotations

from typing import Any

import attrs

from hapa_lsp.config import Settings
from hapa_lsp.context.syntax import code_only
from hapa_lsp.next_edit import formats
from hapa_lsp.next_edit.engine import NextEditEngine, changed_symbols, jump_target, lines_of
from hapa_lsp.next_edit.history import EditHistory
from hapa_lsp.upstream import Upstream

RENAME = "@@ -1,2 +1,2 @@\n-def run(count):\n+def run(total):\n     x = 1\n"
ADD = "@@ -1 +1 @@\n-def area(w):\n+def area(w, h):\n"


def test_a_rename_and_an_added_parameter_are_told_apart():
    assert changed_symbols(RENAME) == ({"count"}, set())  # a renamed parameter changes no call
    assert changed_symbols(ADD) == (set(), {"area"})


def test_the_jump_goes_to_the_next_use_below_the_region_then_above_it():
    lines = lines_of("def run(total):\n" + "    x = 1\n" * 20 + "    return count\n")
    assert jump_target(lines, (0, 6), RENAME) == 21
    assert jump_target(lines, (15, 22), RENAME) is None  # the use is in the region: no jump
    above = lines_of("print(area(2))\n\n\n\n\ndef area(w, h):\n    return w\n")
    assert jump_target(above, (3, 7), ADD) == 0


def test_a_function_named_in_a_comment_or_docstring_is_no_call_site():
    text = 'def area(w, h):\n    """area(w) is ..."""\n    # area(3) is 3\n    return w\n\n\nprint(area(5))\n'
    lines = lines_of(text)
    code = lines_of(code_only(text))
    assert jump_target(lines, (0, 1), ADD, code) == 6
    assert jump_target(lines, (0, 1), ADD) == 1  # without the mask, prose would be taken for a call


def test_code_only_blanks_strings_and_comments_and_keeps_every_line():
    text = 'x = "f(a)"  # g(b)\ns = """\nf(c)\n"""\ny = f(d)\n'
    out = code_only(text)
    assert len(out) == len(text) and out.count("\n") == text.count("\n")
    assert "f(a)" not in out and "g(b)" not in out and "f(c)" not in out
    assert out.splitlines()[-1] == "y = f(d)"


# ---- the engine in-process, over a backend object that answers chat and raw calls --------------------------------

class EditBackend:
    """A Backend object for next edits: each call answers the scripted rewritten region (between the region
    markers, as the generic and Zeta parsers read it) and records the prompt it got."""

    def __init__(self, region: str):
        self.region = region
        self.prompts: list[str] = []

    async def _answer(self, prompt: str, usage: Any):
        self.prompts.append(prompt)
        usage.prompt_tokens = 10
        yield f"{formats.REGION_START}\n{self.region}{formats.REGION_END}"

    def stream_chat(self, messages: list, **kw: Any):
        return self._answer("\n".join(m.content for m in messages), kw["usage"])

    def stream_raw(self, prompt: str, **kw: Any):
        return self._answer(prompt, kw["usage"])


def _next_edits(backend: EditBackend, **next_edit: Any) -> tuple[NextEditEngine, EditHistory]:
    s = Settings()
    s = attrs.evolve(s, next_edit=attrs.evolve(s.next_edit, debounce_ms=0, **next_edit))
    history = EditHistory(pause_s=60)
    return NextEditEngine(s, Upstream(s, backend=backend), history), history


SRC = "def area(count, scale):\n    x = 1\n    return count * scale\n"
RENAMED = SRC.replace("area(count", "area(total")


async def _ask(engine: NextEditEngine, text: str, line: int = 0, character: int = 14, rid: str = "r1"):
    return await engine.suggest(uri="file:///g.py", path="g.py", language="python", text=text, line=line,
                                character=character, request_id=rid)


async def test_an_answer_that_would_break_python_that_parsed_is_dropped():
    engine, history = _next_edits(EditBackend("def area(total, scale):\n    x = (1\n    return total * scale\n"))
    history.opened("file:///g.py", "g.py", SRC)
    history.changed("file:///g.py", "g.py", RENAMED, 0)
    assert await _ask(engine, RENAMED) is None
    # The same answer without the broken line is offered (so it was the syntax check that dropped it).
    engine, history = _next_edits(EditBackend("def area(total, scale):\n    x = 1\n    return total * scale\n"))
    history.opened("file:///g.py", "g.py", SRC)
    history.changed("file:///g.py", "g.py", RENAMED, 0)
    out = await _ask(engine, RENAMED)
    assert out is not None and [(e.start, e.end, e.text) for e in out.edits] == [((2, 11), (2, 16), "total")]


async def test_the_same_document_state_is_answered_from_the_cache_without_a_second_model_call():
    backend = EditBackend("def area(total, scale):\n    x = 1\n    return total * scale\n")
    engine, history = _next_edits(backend)
    history.opened("file:///g.py", "g.py", SRC)
    history.changed("file:///g.py", "g.py", RENAMED, 0)
    first = await _ask(engine, RENAMED)
    engine.forget_shown("file:///g.py")  # dismissed: the second answer cannot come from the rebase
    second = await _ask(engine, RENAMED, rid="r2")
    assert first is not None and second is not None
    assert (first.source, second.source) == ("model", "cache")
    assert second.edits == first.edits and len(backend.prompts) == 1


async def test_sweeps_original_block_is_the_region_before_the_users_edits():
    backend = EditBackend("")
    engine, history = _next_edits(backend, format="sweep")
    history.opened("file:///g.py", "g.py", SRC)
    history.changed("file:///g.py", "g.py", RENAMED, 0)
    await _ask(engine, RENAMED)
    prompt = backend.prompts[0]
    original = prompt.split("<|file_sep|>original/g.py\n", 1)[1].split("<|file_sep|>", 1)[0]
    current = prompt.split("<|file_sep|>current/g.py\n", 1)[1].split("<|file_sep|>", 1)[0]
    assert original == SRC and current == RENAMED


def test_a_call_inside_an_f_strings_replacement_field_is_a_call_site():
    text = 'def area(w, h):\n    return w\n\n\nprint(f"area: {area(5)} m2")\n'
    assert jump_target(lines_of(text), (0, 2), ADD, lines_of(code_only(text))) == 4
    out = code_only('x = f"a{b(1)}c {{d}}" + rf\'{g(h)}\' + "e(2)"\n')
    assert "b(1)" in out and "g(h)" in out and "e(2)" not in out and "{{d}}" not in out


def test_another_objects_function_of_the_same_name_is_no_call_of_a_module_level_function():
    add = "@@ -1 +1 @@\n-def initscr():\n+def initscr(extra):\n"
    text = "def initscr(extra):\n    return _curses.initscr()\n" + "\n" * 12 + "screen = initscr()\n"
    lines = lines_of(text)
    assert jump_target(lines, (0, 3), add, lines_of(code_only(text))) == 14
    # A method's calls are attribute calls: those count.
    method = "@@ -2 +2 @@\n-    def draw(self):\n+    def draw(self, extra):\n"
    text = "class W:\n    def draw(self, extra):\n        pass\n" + "\n" * 12 + "w.draw()\n"
    assert jump_target(lines_of(text), (0, 3), method, lines_of(code_only(text))) == 15


def test_the_excerpt_does_not_start_or_end_inside_a_docstring():
    doc = '    """One.\n\n    Two.\n    """\n'
    text = "def f(a):\n" + doc + "    return a\n" * 5 + "\n\ndef g(b):\n" + doc + "    return b\n"
    lines = lines_of(text)
    # The excerpt would start on the docstring's third line: it starts after the docstring instead.
    assert NextEditEngine._excerpt_bounds(lines, 3, 6, 8, 8) == (5, 8)
    # Its end would fall inside g's docstring: it ends before it.
    assert NextEditEngine._excerpt_bounds(lines, 5, 6, 8, 15) == (5, 13)
    # A region that starts inside the docstring: the excerpt starts at the docstring's first line.
    assert NextEditEngine._excerpt_bounds(lines, 2, 3, 6, 8) == (1, 8)
    # A region that ends inside one: the excerpt runs to its end.
    assert NextEditEngine._excerpt_bounds(lines, 5, 6, 15, 15) == (5, 17)


def test_a_renamed_parameter_is_looked_for_in_its_own_function_only():
    text = ("def other(path):\n    return path\n\n\n"
            "def parse(\n    path_v2,\n    strict,\n):\n" + "    x = 1\n" * 12 + "    return path.read()\n")
    lines = lines_of(text)
    diff = "@@ -5,3 +5,3 @@\n def parse(\n-    path,\n+    path_v2,\n     strict,\n"
    # The region shows other()'s `path` (another variable): the jump still goes to the use in parse's body.
    assert jump_target(lines, (0, 9), diff, scoped=True) == 20
    assert jump_target(lines, (0, 9), diff) is None  # unscoped, other()'s `path` would count as the next use
    assert jump_target(lines, (17, 21), diff, scoped=True) is None  # the use is in the region: no jump
    # A local renamed inside a function: another function's variable of the same name is not its use.
    text = "def b(n):\n    return n\n\n\ndef a():\n    n_v2 = 1\n    return 2\n"
    local = "@@ -6 +6 @@\n-    n = 1\n+    n_v2 = 1\n"
    assert jump_target(lines_of(text), (4, 7), local, scoped=True) is None
    assert jump_target(lines_of(text), (4, 7), local) == 0  # unscoped (other languages): any `n`
