"""Explanation files: pruned by count and age, and nothing else in their folder is touched."""

from __future__ import annotations

import os
import time

from hapa_lsp.features import running as g


def test_old_and_surplus_explanations_are_pruned_and_other_files_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(g, "EXPLANATIONS_KEPT", 3)
    now = time.time()
    names = [f"20261201-1200{i:02d}-{i:012x}.md" for i in range(5)]
    for i, name in enumerate(names):
        p = tmp_path / name
        p.write_text("x")
        os.utime(p, (now - 100 + i, now - 100 + i))
    old = tmp_path / "20250101-000000-r1.md"  # the earlier naming, 11 months old
    old.write_text("x")
    os.utime(old, (now - 330 * 86400,) * 2)
    mine = tmp_path / "notes.md"
    mine.write_text("the user's own file")
    os.utime(mine, (now - 400 * 86400,) * 2)

    removed = g.prune_explanations(str(tmp_path), now=now)

    assert removed == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:] + ["notes.md"])
