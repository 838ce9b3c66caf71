"""`hapa-lsp context FILE:LINE:COL`: what would be sent, piece by piece, with sources, tokens and timings."""

from __future__ import annotations

import json

from hapa_lsp.cli import main


def _workspace(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "geometry.py").write_text('def area(width: float, height: float) -> float:\n'
                                     '    """Area of a rectangle."""\n    return width * height\n')
    (pkg / "app.py").write_text("from demo.geometry import area\n\n\ndef report(w, h):\n    a = area(w, h)\n"
                                "    \n    return a\n")
    return pkg


def test_context_prints_each_piece_with_source_tokens_and_timings(tmp_path, capsys):
    pkg = _workspace(tmp_path)
    assert main(["context", f"{pkg / 'app.py'}:6:5"]) == 0
    out = capsys.readouterr().out
    assert "fact from demo/geometry.py:1" in out
    assert "prefix of demo/app.py" in out and "suffix of demo/app.py" in out
    assert "timings (ms): syntax" in out and "total" in out
    assert "def area(width: float, height: float) -> float:" in out
    assert "<|fim_prefix|>from demo.geometry import area" in out


def test_context_json(tmp_path, capsys):
    pkg = _workspace(tmp_path)
    assert main(["context", f"{pkg / 'app.py'}:6:5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    kinds = [p["source"] for p in data["pieces"]]
    assert kinds[:2] == ["prefix", "suffix"] and "fact" in kinds
    assert data["prompt_tokens"] <= data["budget_tokens"]
    assert sum(p["tokens"] for p in data["pieces"]) == data["prompt_tokens"]
    assert data["multiline"] is True and data["multiline_reason"] == "empty-line"
    assert {"uses_ms", "neighbours_ms", "assemble_ms", "total_ms"} <= set(data["timings_ms"])


def test_context_on_an_excluded_file_answers_e4007(tmp_path, capsys):
    env = tmp_path / ".env.local"
    env.write_text("API_KEY=sk-very-secret\n")
    assert main(["context", f"{env}:1:1"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("E4007") and "INC-" in out
    assert "sk-very-secret" not in out


def test_context_rejects_a_bad_location(capsys):
    assert main(["context", "app.py:x"]) == 2
    assert capsys.readouterr().out.startswith("E4001")
