"""A real Neovim 0.11 with editors/neovim: after a rename at a def, the next use is shown as a next edit (the old
name struck out, the new one as virtual text, a jump hint at the cursor); <Tab> jumps to it, <Tab> again applies
it and the server records the accept; <Esc> dismisses it. The fake model follows tests/fakes/next_edit_rule.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.next_edit_rule import next_edit_answer

SRC = "def area(count, scale):\n    x = 1\n    return count * 2 * scale\n"
LINES = SRC.splitlines()
RENAMED = ["def area(total, scale):", "    x = 1", "    return count * 2 * scale"]


def _marks(ed) -> list[dict[str, Any]]:
    """The next-edit extmarks of the current buffer, as (row, col, end_row, end_col, hl, virtual text) dicts."""
    return ed.lua("""
        local ns = require('hapa.next_edit').ns
        local out = {}
        for _, m in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
          local d = m[4]
          local text = {}
          for _, chunk in ipairs(d.virt_text or {}) do text[#text + 1] = chunk[1] end
          out[#out + 1] = { row = m[2], col = m[3], end_row = d.end_row or vim.NIL, end_col = d.end_col or vim.NIL,
                            hl = d.hl_group or vim.NIL, text = table.concat(text), pos = d.virt_text_pos or vim.NIL }
        end
        return out
    """)


def _rename_count_at_the_def(start_editor, fake, tmp_path):
    """Open the file and rename `count` -> `total` on line 1 as a user does (ciw, type, Esc); wait for the marks."""
    fake.script(next_edit_answer)
    path = tmp_path / "geo.py"
    path.write_text(SRC)
    ed = start_editor(settings={"nextEdit": {"debounceMs": 0}}, next_edit={"debounce_ms": 80})
    ed.open(path)
    assert ed.lines() == LINES
    ed.lua("vim.api.nvim_win_set_cursor(0, { 1, 10 })")  # on `count`
    ed.keys("ciw")
    ed.wait_for(lambda: ed.lines()[0] == "def area(, scale):", what="ciw to delete the word")
    ed.type("total")
    ed.keys("<Esc>")
    ed.wait_for(lambda: ed.lua("return vim.api.nvim_get_mode().mode") == "n", what="normal mode")
    assert ed.lines() == RENAMED
    marks = ed.wait_for(lambda: [m for m in _marks(ed) if m["hl"] == "HapaNextEditDelete"] and _marks(ed),
                        timeout=15, what="the next-edit marks")
    return ed, marks


@pytest.mark.timeout(60)
def test_a_rename_shows_the_next_use_and_tab_jumps_then_applies_it(start_editor, fake, tmp_path):
    ed, marks = _rename_count_at_the_def(start_editor, fake, tmp_path)
    by_kind = {(m["hl"] or m["pos"]): m for m in marks}
    deleted = by_kind["HapaNextEditDelete"]
    # The span struck out is `count` on line 3, and `total` is shown right after it.
    assert (deleted["row"], deleted["col"], deleted["end_row"], deleted["end_col"]) == (2, 11, 2, 16)
    assert LINES[2][deleted["col"]:deleted["end_col"]] == "count"
    assert by_kind["inline"]["text"] == "total" and (by_kind["inline"]["row"], by_kind["inline"]["col"]) == (2, 16)
    # The edit is two lines below the cursor: a hint at the cursor says where.
    assert by_kind["eol"]["row"] == 0 and by_kind["eol"]["text"] == "next edit: line 3"
    assert ed.lines() == RENAMED, "showing a next edit must not touch the buffer"
    assert ed.lua("return require('hapa.next_edit').current().text") == "total"

    ed.keys("<Tab>")  # far from the cursor: the first accept goes there
    ed.wait_for(lambda: ed.lua("return vim.api.nvim_win_get_cursor(0)") == [3, 11], what="the cursor at the edit")
    ed.wait_for(lambda: [m["pos"] for m in _marks(ed) if m["pos"] == "eol"] == [], what="the jump hint to go")
    assert ed.lines() == RENAMED
    assert any(m["hl"] == "HapaNextEditDelete" for m in _marks(ed)), "still shown after the jump"

    ed.keys("<Tab>")  # at the edit: apply it
    ed.wait_for(lambda: ed.lines()[2] == "    return total * 2 * scale", what="the edit applied")
    assert ed.lines() == ["def area(total, scale):", "    x = 1", "    return total * 2 * scale"]
    assert _marks(ed) == []
    # Normal mode: the cursor on the last character of the new text.
    assert ed.lua("return vim.api.nvim_win_get_cursor(0)") == [3, 15]
    # The accept command reached the server, and the shown edit was reported too.
    ed.wait_for(lambda: ed.command("hapa.stats").get("accepted") == 1, what="the server to count the accept")
    # The feedback rows are written off the event loop: wait for the accept's row, not for the first answer.
    overall = ed.wait_for(lambda: (o if (o := ed.command("hapa.feedback.stats", {})["overall"]) and o["accepted"]
                                   else None), what="feedback stats with the accept")
    assert overall["accepted"] == 1 and overall["shown"] >= 1, overall
    assert [n["msg"] for n in ed.notes()] == []


@pytest.mark.timeout(60)
def test_esc_dismisses_the_next_edit(start_editor, fake, tmp_path):
    ed, _ = _rename_count_at_the_def(start_editor, fake, tmp_path)
    ed.keys("<Esc>")
    ed.wait_for(lambda: _marks(ed) == [], what="the marks to go away")
    assert ed.lines() == RENAMED
    assert ed.lua("return require('hapa.next_edit').current()") is None
    # With nothing shown, the keys are Neovim's again: <Tab> does not apply anything.
    # Typed and run to the end before the call returns (flag x), through the mappings (flag m).
    ed.lua("vim.api.nvim_feedkeys(vim.keycode('<Tab>'), 'mx', false)")
    assert ed.lines() == RENAMED
    assert ed.command("hapa.stats").get("accepted", 0) == 0
