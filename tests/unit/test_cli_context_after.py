"""`hapa-lsp context FILE:LINE:COL --after-ms N`: the request N ms after didOpen, through the server's path."""

from __future__ import annotations

import json

import pytest

from hapa_lsp.cli import main


def _package(tmp_path):
    """A workspace with a package whose module ``a`` imports ``helper`` from its sibling ``b``."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "b.py").write_text('def helper(count: int, label: str = "x") -> list[str]:\n'
                              '    """Labels, count of them."""\n    return [label] * count\n')
    # The cursor's line (6) is empty: the user is about to call helper; its signature is only in b.py.
    (pkg / "a.py").write_text("from demo.b import helper\n\n\ndef main(n):\n    names = helper(n)\n    \n"
                              "    return names\n")
    return pkg


@pytest.mark.timeout(30)
def test_one_second_after_open_the_sibling_signature_is_in_the_prompt(tmp_path, capsys):
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--after-ms", "1000"]) == 0
    out = capsys.readouterr().out
    assert "state: 1000 ms after opening the file" in out
    prompt = out.split("---- prompt", 1)[1]
    assert "def helper(count: int, label: str = \"x\") -> list[str]" in prompt


@pytest.mark.timeout(30)
def test_after_ms_json_says_when(tmp_path, capsys):
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--after-ms", "1000", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["after_ms"] == 1000
    assert "def helper(" in data["prompt"]
    assert data["prompt_tokens"] <= data["budget_tokens"]


@pytest.mark.timeout(30)
def test_cold_is_after_ms_zero_and_default_is_the_steady_state(tmp_path, capsys):
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--cold", "--json"]) == 0
    cold = json.loads(capsys.readouterr().out)
    assert cold["after_ms"] == 0
    assert cold["prompt_tokens"] <= cold["budget_tokens"]
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--json"]) == 0
    steady = json.loads(capsys.readouterr().out)
    assert steady["after_ms"] is None and "def helper(" in steady["prompt"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("value", ["-1", "-0.5", "soon", "nan"])
def test_a_bad_after_ms_is_rejected_with_a_catalog_error(tmp_path, capsys, value):
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", f"--after-ms={value}"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("E4001") and "--after-ms" in out and "INC-" in out
    assert "---- prompt" not in out


@pytest.mark.timeout(10)
def test_a_negative_after_ms_as_a_separate_argument(tmp_path, capsys):
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--after-ms", "-250"]) == 2
    assert capsys.readouterr().out.startswith("E4001")


@pytest.mark.timeout(10)
def test_cold_with_a_nonzero_after_ms_is_rejected(tmp_path, capsys):
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--cold", "--after-ms", "500"]) == 2
    assert capsys.readouterr().out.startswith("E4001")


@pytest.mark.timeout(30)
def test_the_request_comes_n_ms_after_did_open_started_warming(tmp_path, capsys, monkeypatch):
    """The server's order: warm_document started in the background at open, the request N ms later."""
    import time

    from hapa_lsp.context.builder import ContextEngine

    events: list[tuple[str, float]] = []
    warm_document, build = ContextEngine.warm_document, ContextEngine.build

    async def spy_warm(self, **kw):
        events.append(("open", time.monotonic()))
        await warm_document(self, **kw)
        events.append(("warmed", time.monotonic()))

    async def spy_build(self, **kw):
        events.append(("request", time.monotonic()))
        return await build(self, **kw)

    monkeypatch.setattr(ContextEngine, "warm_document", spy_warm)
    monkeypatch.setattr(ContextEngine, "build", spy_build)
    pkg = _package(tmp_path)
    assert main(["context", f"{pkg / 'a.py'}:6:5", "--after-ms", "300"]) == 0
    names = [e[0] for e in events]
    assert names[0] == "open" and "request" in names
    t = dict(events)
    assert t["request"] - t["open"] >= 0.29
    capsys.readouterr()
