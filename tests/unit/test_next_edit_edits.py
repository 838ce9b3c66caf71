"""Minimal edits from a rewritten region, whitespace noise, and rebasing a suggestion over what the user typed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hapa_lsp.next_edit.edits import Edit, apply, minimal_edits, only_whitespace, rebase

TEXT = st.text(alphabet="ab c\n_(x)", max_size=60)


def test_a_rename_is_the_renamed_characters_not_the_line():
    old = "def f(total):\n    return count + 1\n"
    new = "def f(total):\n    return total + 1\n"
    edits = minimal_edits(old, new)
    assert edits == [Edit(25, 30, "total")]
    assert apply(old, edits) == new


def test_inserted_and_deleted_lines_are_whole_line_edits():
    old = "a = 1\nb = 2\n"
    assert minimal_edits(old, "a = 1\nx = 0\nb = 2\n") == [Edit(6, 6, "x = 0\n")]
    assert minimal_edits(old, "b = 2\n") == [Edit(0, 6, "")]


def test_no_change_is_no_edit():
    assert minimal_edits("same\n", "same\n") == []


def test_whitespace_only_changes_are_noise():
    old = "x = f(a,b)\n"
    assert only_whitespace(old, minimal_edits(old, "x = f(a, b)\n"))
    assert only_whitespace(old, minimal_edits(old, old + "\n"))
    assert not only_whitespace(old, minimal_edits(old, "x = f(a, c)\n"))


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT)
def test_applying_the_minimal_edits_always_yields_the_models_region(old, new):
    edits = minimal_edits(old, new)
    assert apply(old, edits) == new
    assert all(a.end <= b.start for a, b in zip(edits, edits[1:]))  # ascending, non-overlapping
    assert (old == new) == (edits == [])


def test_typing_the_suggestion_keeps_the_rest_of_it():
    old = "def f(total):\n    return count + 1\n"
    edits = minimal_edits(old, old.replace("count", "total"))
    target = apply(old, edits)
    for now in ("def f(total):\n    return  + 1\n",       # the old name deleted
                "def f(total):\n    return t + 1\n",      # typing over it
                "def f(total):\n    return tot + 1\n",
                "def f(total):\n    return totcount + 1\n",  # typed before deleting
                "def f(total):\n    return cou + 1\n"):   # backspacing
        rest = rebase(old, edits, now)
        assert rest, now
        assert apply(now, rest) == target


def test_typing_something_else_makes_the_suggestion_stale():
    old = "def f(total):\n    return count + 1\n"
    edits = minimal_edits(old, old.replace("count", "total"))
    assert rebase(old, edits, "def f(total):\n    return x + 1\n") is None
    assert rebase(old, edits, "def f(total):\n    return count + 2\n") is None
    assert rebase(old, edits, "# new\n" + old) is None


def test_typing_all_of_it_leaves_nothing():
    old = "a = count\n"
    edits = minimal_edits(old, "a = total\n")
    assert rebase(old, edits, "a = total\n") == []
    assert rebase(old, edits, old) == edits


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, st.integers(0, 1000), st.integers(0, 1000))
def test_a_rebased_suggestion_always_ends_where_the_suggestion_did(old, new, k, r):
    edits = minimal_edits(old, new)
    if not edits:
        return
    # The user typed a start of the first edit's new text over what is left of its old text.
    e = edits[0]
    typed = e.new[:k % (len(e.new) + 1)]
    removed = old[e.start:e.end]
    now = old[:e.start] + typed + removed[r % (len(removed) + 1):] + old[e.end:]
    rest = rebase(old, edits, now)
    assert rest is not None
    assert apply(now, rest) == new
