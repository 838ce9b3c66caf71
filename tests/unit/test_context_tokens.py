"""Token counting: a tokenizer.json from settings or the Hugging Face cache (never downloaded), else an estimate."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import attrs
import pytest

from hapa_lsp.config import ContextSettings, Settings
from hapa_lsp.context import tokens
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.context.tokens import estimate_tokens, find_cached_tokenizer, make_counter
from hapa_lsp.engine import Engine
from hapa_lsp.upstream import Upstream


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


def _with_tokenizer(path: Path) -> Settings:
    return attrs.evolve(Settings(), context=attrs.evolve(ContextSettings(), tokenizer_path=str(path)))


def test_a_slow_tokenizer_load_never_holds_up_a_request(tmp_path, monkeypatch):
    tj = _write_tokenizer(tmp_path / "tok" / "tokenizer.json")
    loading, release = threading.Event(), threading.Event()
    loaders: list[threading.Thread] = []
    real = tokens._load_tokenizer

    def slow(path: str, mtime: float):
        loaders.append(threading.current_thread())
        loading.set()
        release.wait(5)  # a multi-megabyte tokenizer.json on a slow disk
        return real(path, mtime)

    monkeypatch.setattr(tokens, "_load_tokenizer", slow)
    kw = dict(uri="file:///w/a.py", path="/w/a.py", language="python", text="def x ( ) :\n    ", line=1, character=4)
    try:
        t0 = time.monotonic()
        ce = ContextEngine(_with_tokenizer(tj), runner=None, root="/w", environ={})
        first = ce.assemble(ce.start(**kw))
        waited = time.monotonic() - t0
        assert waited < 1.0, f"the first request waited {waited:.1f} s for the tokenizer"
        assert first.token_counter == "estimate" and not ce.counter.exact
        assert loading.wait(5) and loaders[0] is not threading.current_thread()
    finally:
        release.set()
    loaded = ce.counter_loaded().result(timeout=5)
    assert loaded.exact and ce.counter is loaded
    assert ce.assemble(ce.start(**kw)).token_counter == str(tj)


def test_the_server_loads_the_tokenizer_at_start_up_and_when_settings_name_another(tmp_path, monkeypatch):
    a = _write_tokenizer(tmp_path / "a" / "tokenizer.json")
    b = _write_tokenizer(tmp_path / "b" / "tokenizer.json")
    loads: queue.Queue[tuple[str, bool]] = queue.Queue()
    real = tokens._load_tokenizer

    def recorded(path: str, mtime: float):
        loads.put((path, threading.current_thread() is threading.main_thread()))
        return real(path, mtime)

    monkeypatch.setattr(tokens, "_load_tokenizer", recorded)
    settings = _with_tokenizer(a)
    engine = Engine(settings, Upstream(settings))
    # No request yet: the load started with the engine, in a worker thread.
    assert loads.get(timeout=5) == (str(a), False)
    engine.update_settings(_with_tokenizer(b))
    assert loads.get(timeout=5) == (str(b), False)
    assert engine.token_counters.load(engine.settings).result(timeout=5).source == str(b)
    assert engine.context.counter.source == str(b)  # the context engine uses what the server loaded
    assert loads.empty()
