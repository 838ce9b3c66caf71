"""jedi's facts kept on disk between sessions: a restart serves them on the first request; a changed source file
invalidates its entries; a corrupt store file is discarded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hapa_lsp.config import Settings
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.context.facts_store import FactsStore
from tests.unit.test_context_facts import _cursor, runner, workspace  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


async def _first_session(ws: Path, store_dir: Path, jedi) -> dict:
    ce = ContextEngine(Settings(), runner=jedi, root=str(ws), facts_store=FactsStore(str(store_dir)))
    path = ws / "shop" / "service.py"
    text = path.read_text(encoding="utf-8")
    row, col = _cursor(text)
    kw = dict(uri=path.as_uri(), path=str(path), language="python", text=text, line=row, character=col)
    await ce.warm(ce.start(**kw))
    await ce.facts.flush()
    return kw


def _second_session(ws: Path, store_dir: Path, kw: dict) -> tuple[ContextEngine, FactsStore]:
    # No jedi at all in the second session: whatever facts the prompt has come from the store (or the text).
    store = FactsStore(str(store_dir))
    return ContextEngine(Settings(), runner=None, root=str(ws), facts_store=store), store


async def test_a_restart_serves_stored_facts_on_the_first_request(workspace, runner, tmp_path):  # noqa: F811
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    kw = await _first_session(ws, tmp_path / "store", runner)
    ce, _ = _second_session(ws, tmp_path / "store", kw)
    assert await ce.facts.restore(kw["uri"], kw["path"], kw["text"]) > 0
    built = ce.assemble(ce.start(**kw, time_box_ms=0))
    facts = [p for p in built.pieces if p.source == "fact"]
    # An installed package's function (jedi only) and a workspace class, both from the first session.
    assert any("def post(" in p.text for p in facts), built.pieces
    assert any("def load_invoices(" in p.text for p in facts), built.pieces


async def test_a_changed_source_file_invalidates_its_stored_facts(workspace, runner, tmp_path):  # noqa: F811
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    kw = await _first_session(ws, tmp_path / "store", runner)
    models = ws / "shop" / "models.py"
    models.write_text(models.read_text().replace("strict: bool = False", "strict: bool = True"))
    os.utime(models, ns=(1, 1))
    ce, _ = _second_session(ws, tmp_path / "store", kw)
    await ce.facts.restore(kw["uri"], kw["path"], kw["text"])
    built = ce.assemble(ce.start(**kw, time_box_ms=0))
    stored = [p.text for p in built.pieces if p.source == "fact"]
    assert any("def post(" in t for t in stored)  # httpx did not change
    assert not any("def load_invoices(" in t for t in stored)  # models.py did: not from the store...
    fresh = [p.text for p in built.pieces if p.source == "static-fact" and "def load_invoices(" in p.text]
    assert fresh and "strict: bool = True" in fresh[0]  # ...but read again from its new text


async def test_a_corrupt_store_file_is_discarded(workspace, runner, tmp_path):  # noqa: F811
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    kw = await _first_session(ws, tmp_path / "store", runner)
    files = [p for p in (tmp_path / "store").iterdir() if p.suffix == ".json"]
    assert len(files) == 1 and json.loads(files[0].read_text())["entries"]
    files[0].write_bytes(files[0].read_bytes()[:50])  # truncated, as by a crash of an older version
    ce, store = _second_session(ws, tmp_path / "store", kw)
    assert await ce.facts.restore(kw["uri"], kw["path"], kw["text"]) == 0
    assert store.discarded == 1 and not files[0].exists()
    built = ce.assemble(ce.start(**kw, time_box_ms=0))  # the request still has a prompt, without stored facts
    assert not [p for p in built.pieces if p.source == "fact"]


def test_writes_are_atomic_and_the_store_is_pruned(tmp_path):
    store = FactsStore(str(tmp_path / "s"))
    for i in range(12):
        store.save(f"/w/doc{i}.py", {})
        os.utime(store._file(f"/w/doc{i}.py"), (1000 + i, 1000 + i))
    store.prune(keep=5)
    left = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert len(left) == 5 and not any(n.endswith(".part") for n in left)
    assert os.path.basename(store._file("/w/doc11.py")) in left  # the newest kept
