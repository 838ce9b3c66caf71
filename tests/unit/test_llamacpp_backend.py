"""The llamacpp kind's request building (the real server's side is in tests/real)."""

from __future__ import annotations

from hapa_lsp.backends import Usage, read_timings
from hapa_lsp.backends.llamacpp import LlamaCppBackend, _head_lines
from hapa_lsp.config import BackendSettings
from hapa_lsp.prompts import ContextFile, build_fim_prompt


def _backend(**kw) -> LlamaCppBackend:
    return LlamaCppBackend(BackendSettings(kind="llamacpp", endpoint="http://127.0.0.1:8080/v1", **kw), client=None)


def _prompt(files, family="qwen2.5-coder:1.5b", prefix="x = 1\ny = ", suffix="\nz = 3\n"):
    return build_fim_prompt(model=family, family_override="auto", prefix=prefix, suffix=suffix, language="python",
                            path="a.py", max_tokens=8, temperature=0.0, single_line=True, context_files=files)


def test_head_lines_keeps_whole_lines():
    assert _head_lines("a\nb\nc\n", 2) == "a\nb\n"
    assert _head_lines("a\nb", 5) == "a\nb"
    assert _head_lines("a\nb\nc", 0) == "a\nb\nc"
    assert _head_lines("", 3) == ""


def test_context_files_keep_their_first_place_and_new_ones_go_last():
    b = _backend()
    a, c, d = ContextFile("a.py", "A"), ContextFile("c.py", "C"), ContextFile("d.py", "D")
    first = b._payload(_prompt((c, a)), "p", "s", 1)["input_extra"]
    assert [e["filename"] for e in first] == ["c.py", "a.py"]
    again = b._payload(_prompt((d, a, c)), "p", "s", 1)["input_extra"]
    assert [e["filename"] for e in again] == ["c.py", "a.py", "d.py"]


def test_the_payload_uses_infill_fields_and_leaves_the_commented_head_to_input_extra():
    b = _backend()
    files = (ContextFile("lib.py", "def f(): ..."),)
    # CodeLlama has no repository format: its prompt carries the files as a commented head of the prefix.
    prompt = _prompt(files, family="codellama:7b-code")
    assert prompt.context_prefix and prompt.prefix.startswith(prompt.context_prefix)
    payload = b._payload(prompt, prompt.prefix, prompt.suffix, 8)
    assert payload["input_prefix"] == "x = 1\ny = " and payload["input_suffix"] == "\nz = 3\n"
    assert payload["input_extra"] == [{"filename": "lib.py", "text": "def f(): ..."}]
    assert payload["cache_prompt"] is True and payload["n_cache_reuse"] == 16 and payload["prompt"] == ""
    assert "\n" in payload["stop"]
    assert b._root("/infill") == "http://127.0.0.1:8080/infill"


def test_timings_are_read_when_present():
    u = Usage()
    read_timings({"timings": {"prompt_n": 12, "cache_n": 300}}, u)
    assert (u.prompt_processed, u.prompt_cached) == (12, 300)
    v = Usage()
    read_timings({"timings": {"prompt_n": True}}, v)
    read_timings({}, v)
    assert (v.prompt_processed, v.prompt_cached) == (-1, -1)
