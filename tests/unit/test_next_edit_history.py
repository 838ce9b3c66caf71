"""The edit history: hunks grouped at typing pauses, across files, bounded, as unified diffs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hapa_lsp.next_edit.history import EditHistory, hunk_diff, original_lines

SRC = "def area(count):\n    x = 1\n    return count * 2\n\n\nprint(area(3))\n"


def type_over(h: EditHistory, uri: str, path: str, text: str, old: str, new: str, line: int, t: float) -> str:
    """Replace ``old`` with ``new`` one character at a time (an editor's didChange per keystroke)."""
    i = text.index(old)
    text = text[:i] + text[i + len(old):]
    h.changed(uri, path, text, line, now=t)
    for k in range(1, len(new) + 1):
        t += 0.1
        h.changed(uri, path, text[:i] + new[:k] + text[i:], line, now=t)
    return text[:i] + new + text[i:]


def test_a_rename_typed_key_by_key_is_one_hunk():
    h = EditHistory(pause_s=1.0)
    h.opened("u1", "geo.py", SRC)
    type_over(h, "u1", "geo.py", SRC, "count", "total", 0, 10.0)
    events = h.events()
    assert len(events) == 1
    assert events[0].path == "geo.py"
    assert events[0].diff == "@@ -1,3 +1,3 @@\n-def area(count):\n+def area(total):\n     x = 1\n     return count * 2\n"


def test_a_pause_and_another_file_start_new_hunks_oldest_first():
    h = EditHistory(pause_s=1.0)
    h.opened("u1", "a.py", "x = 1\n")
    h.opened("u2", "b.py", "y = 2\n")
    h.changed("u1", "a.py", "x = 10\n", 0, now=1.0)
    h.changed("u2", "b.py", "y = 20\n", 0, now=1.2)  # another file
    h.changed("u2", "b.py", "y = 200\n", 0, now=5.0)  # after a pause
    assert [(e.path, e.diff.splitlines()[-1]) for e in h.events()] == [
        ("a.py", "+x = 10"), ("b.py", "+y = 20"), ("b.py", "+y = 200")]


def test_far_apart_edits_are_separate_hunks_with_their_own_line_numbers():
    text = "".join(f"v{i} = {i}\n" for i in range(40))
    h = EditHistory(pause_s=10.0, far_lines=8)
    h.opened("u", "m.py", text)
    t1 = text.replace("v2 = 2", "v2 = 22")
    h.changed("u", "m.py", t1, 2, now=1.0)
    t2 = t1.replace("v30 = 30", "v30 = 33")
    h.changed("u", "m.py", t2, 30, now=1.1)
    first, second = h.events()
    assert first.diff.startswith("@@ -1,5 +1,5 @@\n")
    assert second.diff.startswith("@@ -29,5 +29,5 @@\n")
    assert "-v30 = 30\n+v30 = 33\n" in second.diff


def test_the_history_is_bounded_in_hunks_and_characters():
    h = EditHistory(max_events=3, max_chars=10_000, pause_s=0.5)
    h.opened("u", "m.py", "n = 0\n")
    for i in range(1, 10):
        h.changed("u", "m.py", f"n = {i}\n", 0, now=float(i))
    assert [e.diff.splitlines()[-1] for e in h.events()] == ["+n = 7", "+n = 8", "+n = 9"]
    small = EditHistory(max_events=10, max_chars=60, pause_s=0.5)
    small.opened("u", "m.py", "n = 0\n")
    for i in range(1, 10):
        small.changed("u", "m.py", f"n = {i}\n", 0, now=float(i))
    events = small.events()
    assert sum(len(e.diff) for e in events) <= 60
    assert events and events[-1].diff.endswith("+n = 9\n")  # the newest kept, the oldest dropped


def test_undoing_an_edit_leaves_no_hunk_and_a_forgotten_document_no_history():
    h = EditHistory()
    h.opened("u", "m.py", "a\n")
    h.changed("u", "m.py", "ab\n", 0, now=1.0)
    h.changed("u", "m.py", "a\n", 0, now=1.1)
    assert h.events() == ()
    h.changed("u", "m.py", "ac\n", 0, now=5.0)
    assert h.events()
    h.forget("u")
    assert h.events() == ()


def test_hunk_diff_cuts_the_unchanged_head_and_tail():
    before = "".join(f"l{i}\n" for i in range(1000))
    after = before.replace("l500\n", "l500 changed\n")
    assert hunk_diff(before, after, 1) == "@@ -500,3 +500,3 @@\n l499\n-l500\n+l500 changed\n l501\n"
    assert hunk_diff("a\n", "a\nb\n", 2) == "@@ -1 +1,2 @@\n a\n+b\n"
    assert hunk_diff("x", "y", 2) == "@@ -1 +1 @@\n-x\n+y\n"


def test_the_original_text_is_the_document_before_its_oldest_recorded_change():
    h = EditHistory(pause_s=1.0)
    h.opened("u1", "geo.py", SRC)
    assert h.original_text("u1") is None  # nothing changed yet
    text = type_over(h, "u1", "geo.py", SRC, "count", "total", 0, 10.0)
    assert h.original_text("u1") == SRC
    type_over(h, "u1", "geo.py", text, "x = 1", "x = 2", 1, 20.0)  # after a pause: a second hunk
    assert h.original_text("u1") == SRC


def test_original_lines_follow_the_region_across_insertions_and_changes():
    old = [f"line {i}\n" for i in range(10)]
    new = old[:2] + ["added a\n", "added b\n"] + old[2:5] + ["changed 5\n"] + old[6:]
    # New lines 4-7 are old lines 2-5 (line 5 was changed in place).
    assert original_lines(old, new, 4, 8) == old[2:6]
    # A region that starts inside the insertion takes no old line for it.
    assert original_lines(old, new, 2, 5) == old[2:3]
    assert original_lines(old, old, 3, 6) == old[3:6]
    # A deletion at the region's edge is part of what the region was.
    gone = old[:4] + old[6:]
    assert original_lines(old, gone, 4, 6) == old[4:8]


@given(st.lists(st.sampled_from(["a", "b", "def f():", "    x", ""]), min_size=1, max_size=30), st.data())
@settings(max_examples=200, deadline=None)
def test_lines_the_edit_did_not_touch_map_to_themselves(words: list[str], data: st.DataObject):
    old = [f"{w} #{k}\n" for k, w in enumerate(words)]  # distinct lines: which line moved is not ambiguous
    i = data.draw(st.integers(0, len(old)))
    j = data.draw(st.integers(i, len(old)))
    repl = data.draw(st.lists(st.sampled_from(["X\n", "Y\n"]), max_size=4))
    new = old[:i] + repl + old[j:]
    delta = len(repl) - (j - i)
    # A range wholly above the edit, and one wholly below it, each a line away from it, map to the same old lines.
    if i >= 2:
        r1 = data.draw(st.integers(1, i - 1))
        r0 = data.draw(st.integers(0, r1 - 1))
        assert original_lines(old, new, r0, r1) == old[r0:r1]
    if i + len(repl) + 1 < len(new):
        r0 = data.draw(st.integers(i + len(repl) + 1, len(new) - 1))
        r1 = data.draw(st.integers(r0 + 1, len(new)))
        assert original_lines(old, new, r0, r1) == old[r0 - delta:r1 - delta]
