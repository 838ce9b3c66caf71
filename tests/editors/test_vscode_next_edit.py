"""Next edit suggestions in the VS Code extension: what package.json contributes for them (fast), and a real VS Code
(code-server + headless Chromium, tests/editors/test_vscode_real.py's harness) where renaming a parameter shows the
next use struck through with the new name after it, Tab jumps there, Tab accepts, and Escape dismisses."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hapa_lsp.features import common
from tests.editors.test_vscode_real import (  # noqa: F401 - fixtures used here
    CODE_SERVER_VERSION,
    VSCode,
    fake,
    start_vscode,
    vsix,
)
from tests.fakes.next_edit_rule import next_edit_answer

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "editors" / "vscode"
SOURCE = EXT / "src" / "extension.ts"


def _package() -> dict[str, Any]:
    return json.loads((EXT / "package.json").read_text(encoding="utf-8"))


def _when(clause: str) -> set[str]:
    return {term.strip() for term in clause.split("&&")}


def test_tab_and_escape_are_bound_to_accept_and_dismiss_only_while_a_next_edit_is_shown():
    contributes = _package()["contributes"]
    commands = {c["command"]: c for c in contributes["commands"]}
    for name in ("hapa.nextEdit.accept", "hapa.nextEdit.dismiss", "hapa.nextEdit.trigger"):
        assert name in commands and commands[name]["category"] == "hapa", name
    keys = {(k["key"], k["command"]): k for k in contributes["keybindings"]}
    tab = keys[("tab", "hapa.nextEdit.accept")]
    # Tab is VS Code's (indent, accept ghost text, pick a completion) unless a next edit is what is on screen.
    assert {"hapa.nextEditVisible", "!inlineSuggestionVisible", "!suggestWidgetVisible",
            "editorTextFocus"} <= _when(tab["when"]), tab
    escape = keys[("escape", "hapa.nextEdit.dismiss")]
    assert {"hapa.nextEditVisible", "editorTextFocus"} <= _when(escape["when"]), escape
    assert not [k for k in contributes["keybindings"] if k["key"] in ("tab", "escape")
                and "hapa.nextEditVisible" not in _when(k.get("when", ""))], "Tab/Escape taken from VS Code"


def test_the_extension_speaks_the_servers_next_edit_methods_and_sets_the_context_key_it_binds_on():
    source = SOURCE.read_text(encoding="utf-8")
    consts = dict(re.findall(r"const (\w+) = '([^']*)';", source))
    assert consts["INLINE_EDIT"] == common.INLINE_EDIT
    assert consts["INLINE_EDIT_SHOWN"] == common.INLINE_EDIT_SHOWN
    assert consts["NEXT_EDIT_VISIBLE"] == "hapa.nextEditVisible"
    assert "executeCommand('setContext', NEXT_EDIT_VISIBLE, true)" in source
    assert "executeCommand('setContext', NEXT_EDIT_VISIBLE, false)" in source
    registered = set(re.findall(r"registerCommand\('(hapa\.nextEdit\.\w+)'", source))
    assert registered == {"hapa.nextEdit.accept", "hapa.nextEdit.dismiss", "hapa.nextEdit.trigger"}
    # Every theme color the decorations use is contributed (an unknown id draws nothing).
    used = set(re.findall(r"ThemeColor\('(hapa\.[\w.]+)'\)", source))
    contributed = {c["id"] for c in _package()["contributes"].get("colors", [])}
    assert used and used <= contributed, used - contributed


# ---- a real VS Code ---------------------------------------------------------------------------------------

BODY = "".join(f"    step{i} = {i}\n" for i in range(10))
SRC = f'def area(count, scale):\n    """Twice the size, scaled."""\n{BODY}    return count * 2 * scale\n\n\nprint(area(3, 1))\n'
LINES = SRC.split("\n")
USE = 12  # the line (0-based) with the parameter's next use, beyond the region around the def

# What the editor draws for a next edit: struck-through text, and the `after` texts (new text, the jump hint),
# each with its line index from the top (the file fits on one screen).
_DECORATIONS = """(() => {
    const ed = document.querySelector('.monaco-editor .view-lines');
    if (!ed) return null;
    const rows = [...ed.querySelectorAll(':scope > .view-line')]
        .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top));
    const out = [];
    rows.forEach((row, i) => row.querySelectorAll('span').forEach((e) => {
        const after = getComputedStyle(e, '::after').content;
        if (after && after !== 'none' && after !== 'normal') out.push([i, 'after', JSON.parse(after)]);
        if (getComputedStyle(e).textDecorationLine.includes('line-through')) out.push([i, 'struck', e.textContent]);
    }));
    return out;
})()"""

_CURSOR = """[...document.querySelectorAll('.statusbar-item')].map(e => e.innerText.trim())
    .find(t => /^Ln \\d+, Col \\d+$/.test(t)) || ''"""


def _require(path: str | None, what: str) -> str:
    if not path:
        pytest.fail(f"{what} is missing: this test drives a real VS Code and must not pass without one")
    return path


@pytest.fixture
def real_vscode(request: pytest.FixtureRequest):
    """test_vscode_real's start_vscode, but a missing code-server, Chromium or npm fails instead of skipping."""
    cache = Path(os.environ.get("HAPA_CI_CACHE") or Path.home() / ".cache" / "hapa-lsp-ci")
    candidates = [os.environ.get("HAPA_CODE_SERVER"),
                  str(cache / f"code-server-{CODE_SERVER_VERSION}" / "bin" / "code-server"),
                  shutil.which("code-server")]
    _require(next((c for c in candidates if c and os.access(c, os.X_OK)), None),
             "code-server (HAPA_CODE_SERVER, or bash .ci/install-code-server)")
    _require(shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"),
             "chromium")
    _require(shutil.which("npm"), "npm (to build the extension)")
    return request.getfixturevalue("start_vscode")


def _feedback(vs: VSCode) -> list[tuple[str, str]]:
    """The shown/accepted rows hapa-lsp stored (what its acceptance rates are computed from)."""
    db = vs.home / "data" / "hapa-lsp" / "hapa.db"
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return list(con.execute("SELECT kind, uri FROM feedback ORDER BY id"))


@pytest.mark.timeout(300)
def test_renaming_a_parameter_suggests_its_next_use_tab_jumps_there_and_tab_accepts(real_vscode, fake):  # noqa: F811
    fake.script(lambda req: next_edit_answer(req) or "")  # next-edit prompts get the rule; ghost text nothing
    vs = real_vscode({"geo.py": SRC}, {"hapa.nextEdit.debounceMs": 0, "hapa.nextEdit.historyPauseMs": 60000})
    vs.open("geo.py")
    page = vs.page
    uri = (vs.workspace / "geo.py").as_uri()

    def decorations() -> list[list[Any]]:
        return page.js(_DECORATIONS) or []

    def cursor() -> str:
        return page.js(_CURSOR)

    # Rename the parameter at the def, key by key: `count` -> `total`.
    page.key("Home", "Home", 36)
    for _ in range(9):
        page.key("ArrowRight", "ArrowRight", 39)
    for _ in range(5):
        page.key("Delete", "Delete", 46)
    page.type("total")
    renamed = ["def area(total, scale):", *LINES[1:]]
    vs.wait_lines(renamed, 20, "the renamed def")

    # The next use is far below: struck through with the new name after it, and a hint at the cursor's line.
    hint = [0, "after", "Tab: jump to next edit (line 13)"]
    edit = [[USE, "after", "total"], [USE, "struck", "count"]]
    vs.wait(lambda: sorted(decorations()) == [hint, *edit], 30, "the next edit's decorations", interval=0.2)
    assert vs.ghost() == "" and vs.lines() == renamed, "showing an edit must not touch the document"
    vs.wait(lambda: ("shown", uri) in _feedback(vs), 20, "the server to record the edit as shown")

    page.key("Tab", "Tab", 9)  # far away: Tab goes there first
    vs.wait(lambda: cursor() == "Ln 13, Col 12", 20, "the cursor at the next edit")
    vs.wait(lambda: sorted(decorations()) == edit, 20, "the edit without the jump hint")
    assert vs.lines() == renamed

    page.key("Tab", "Tab", 9)  # there: Tab accepts
    accepted = [*renamed[:USE], "    return total * 2 * scale", *renamed[USE + 1:]]
    vs.wait_lines(accepted, 20, "the accepted edit in the editor")
    vs.wait(lambda: decorations() == [], 20, "the decorations to go")
    vs.wait(lambda: cursor() == "Ln 13, Col 17", 20, "the cursor after the accepted text")
    vs.wait(lambda: _feedback(vs)[-1:] == [("accepted", uri)], 20, "the acceptance recorded")
    assert [k for k, _ in _feedback(vs)].count("accepted") == 1

    # A second rename at the def, then Escape: the suggestion goes and the document stays as typed.
    page.key("Home", "Home", 36, modifiers=2)  # Ctrl+Home: the start of the file
    for _ in range(16):
        page.key("ArrowRight", "ArrowRight", 39)
    for _ in range(5):
        page.key("Delete", "Delete", 46)
    page.type("size")
    resized = ["def area(total, size):", *accepted[1:]]
    vs.wait_lines(resized, 20, "the second rename")
    vs.wait(lambda: sorted(decorations()) == [hint, [USE, "after", "size"], [USE, "struck", "scale"]],
            30, "the second suggestion", interval=0.2)
    page.key("Escape", "Escape", 27)
    vs.wait(lambda: decorations() == [], 20, "Escape to dismiss the suggestion")
    page.key("Tab", "Tab", 9)  # nothing shown: Tab is VS Code's again (spaces to the next tab stop)
    vs.wait(lambda: vs.lines() == ["def area(total, size    ):", *resized[1:]], 20, "Tab to indent as usual")
