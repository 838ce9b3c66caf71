"""Token counting: a tokenizer.json from settings or the Hugging Face cache (never downloaded), else an estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from hapa_lsp.context.tokens import estimate_tokens, find_cached_tokenizer, make_counter


def _write_tokenizer(path: Path) -> Path:
    """A real (tiny) word-level tokenizer.json, made locally with the tokenizers library."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "def": 1, "return": 2, "(": 3, ")": 4, ":": 5, "x": 6}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def test_estimate_counts_long_indentation_runs_once():
    flat = "return value"
    indented = " " * 12 + "return value"
    assert estimate_tokens(flat) == 4
    assert estimate_tokens(indented) == estimate_tokens(" " + flat)
    assert estimate_tokens("") == 0


def test_configured_tokenizer_json_gives_exact_counts(tmp_path):
    tj = _write_tokenizer(tmp_path / "tok" / "tokenizer.json")
    c = make_counter(chars_per_token=3.4, tokenizer_path=str(tj), environ={})
    assert c.exact and c.source == str(tj)
    assert c.count("def x ( ) :") == 5
    assert c.count("") == 0


def test_tokenizer_found_in_the_hugging_face_cache_for_an_ollama_tag(tmp_path):
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-Coder-1.5B" / "snapshots" / "0123abcd"
    tj = _write_tokenizer(snap / "tokenizer.json")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    assert find_cached_tokenizer("qwen2.5-coder:1.5b-base", env) == tj
    assert make_counter(chars_per_token=3.4, model="qwen2.5-coder:1.5b-base", environ=env).exact
    # Another model's files are not used, and nothing is fetched for it.
    assert find_cached_tokenizer("starcoder2:3b", env) is None
    assert not make_counter(chars_per_token=3.4, model="starcoder2:3b", environ=env).exact


def test_missing_or_broken_tokenizer_falls_back_to_the_estimate(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    for path in (str(bad), str(tmp_path / "absent.json")):
        c = make_counter(chars_per_token=4.0, tokenizer_path=path, environ={})
        assert not c.exact
        assert c.count("abcdefgh") == 2
