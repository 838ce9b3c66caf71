"""A model's rewritten region turned into the fewest, smallest edits, and those edits rebased over what the user
typed since.

::

    minimal_edits(old, new)   difflib over lines, then over characters inside each changed run -> [Edit]
    apply(text, edits)        the edits applied (offsets into ``text``, non-overlapping, ascending)
    rebase(edits, old, now)   the edits still to make after the user typed part of them (or None when the text
                              moved in a way the suggestion did not foresee)

Offsets are Python string indices into the region; ``features/next_edit.py`` converts them into LSP ranges.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``text[start:end]`` with ``new``."""

    start: int
    end: int
    new: str


def apply(text: str, edits: list[Edit] | tuple[Edit, ...]) -> str:
    """``text`` with ``edits`` (ascending, non-overlapping) applied."""
    out: list[str] = []
    pos = 0
    for e in edits:
        out.append(text[pos:e.start])
        out.append(e.new)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def _chars(old: str, new: str, base: int) -> list[Edit]:
    """Character-level edits turning ``old`` into ``new`` (offsets shifted by ``base``), merged when only a
    short equal run separates two changes (two edits two letters apart read as one change)."""
    sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
    edits: list[Edit] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        if edits and base + i1 - edits[-1].end <= 2:
            last = edits.pop()
            gap = old[last.end - base:i1]
            edits.append(Edit(last.start, base + i2, last.new + gap + new[j1:j2]))
        else:
            edits.append(Edit(base + i1, base + i2, new[j1:j2]))
    return edits


def minimal_edits(old: str, new: str) -> list[Edit]:
    """The edits that turn ``old`` into ``new``: changed lines first, then the changed characters inside them,
    so a rename is a few characters, not a line. ``apply(old, minimal_edits(old, new)) == new`` always."""
    if old == new:
        return []
    a = old.splitlines(keepends=True)
    b = new.splitlines(keepends=True)
    offsets = [0]
    for line in a:
        offsets.append(offsets[-1] + len(line))
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    edits: list[Edit] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        old_run, new_run = "".join(a[i1:i2]), "".join(b[j1:j2])
        if tag == "replace":
            edits.extend(_chars(old_run, new_run, offsets[i1]))
        else:
            edits.append(Edit(offsets[i1], offsets[i2], new_run))
    return edits


def only_whitespace(old: str, edits: list[Edit]) -> bool:
    """Every edit only changes whitespace (re-indentation noise, a trailing blank line): nothing to show."""
    return all("".join(old[e.start:e.end].split()) == "".join(e.new.split()) for e in edits)


def rebase(old: str, edits: list[Edit] | tuple[Edit, ...], now: str) -> list[Edit] | None:
    """The rest of the suggested ``edits`` (made against ``old``) once the user's text is ``now``.

    The suggestion stays valid while the user types toward it: inside each edit's span the text may be a typed
    start of the new text followed by what is left of the old (``new[:k] + old_span[r:]``: typing over a
    selection, typing before deleting) or the old span cut short (``old_span[:r]``: backspacing), and nothing
    outside the spans changed. Then the answer is the edits from ``now`` to the same result, with no model call
    (``[]``: the user made all of it). Anything else returns None: the suggestion is stale.
    ``apply(now, rebase(old, edits, now)) == apply(old, edits)`` whenever the result is not None.
    """
    if now == old:
        return list(edits)
    target = apply(old, edits)
    if now == target:
        return []
    if not _toward(old, tuple(edits), now):
        return None
    return minimal_edits(now, target)


_MAX_SHAPES = 20_000  # candidate texts tried per edit; a longer edit is not rebased (the model is asked again)


def _toward(old: str, edits: tuple[Edit, ...], now: str) -> bool:
    """Whether ``now`` is ``old`` with each edit's span replaced by one of the partial shapes ``rebase`` allows."""
    seen: set[tuple[int, int]] = set()

    def walk(i: int, pos_old: int, pos_now: int) -> bool:
        if (i, pos_now) in seen:
            return False
        seen.add((i, pos_now))
        if i == len(edits):
            return now[pos_now:] == old[pos_old:]
        e = edits[i]
        gap = old[pos_old:e.start]
        if not now.startswith(gap, pos_now):
            return False
        at = pos_now + len(gap)
        removed, new = old[e.start:e.end], e.new
        if (len(new) + 1) * (len(removed) + 1) > _MAX_SHAPES:
            return False
        shapes = {new[:k] + removed[r:] for k in range(len(new) + 1) for r in range(len(removed) + 1)}
        shapes.update(removed[:r] for r in range(len(removed)))
        return any(now.startswith(x, at) and walk(i + 1, e.end, at + len(x)) for x in shapes)

    return walk(0, 0, 0)
