"""hapa-lsp against a real llama.cpp llama-server (built by .ci/build-llama-server) serving the bigram test model.

Real tokenisation, FIM and chat templating, sampling, streaming and stop handling on the server's side; the
model's answers are chosen (tests/real/llama_model.py), so the tests assert on them exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hapa_lsp import config
from hapa_lsp.backends import Usage, create_backend, make_client
from hapa_lsp.backends.llamacpp import _head_lines
from hapa_lsp.prompts import ContextFile, build_fim_prompt
from tests.e2e.conftest import inline_params, open_doc, server_env, start_client, stop_client
from tests.real.conftest import MODEL, LlamaServer, llama_env
from tests.real.llama_model import CHAT_CODE, FIM_ANSWER

pytestmark = pytest.mark.timeout(120)

DOC = "def add(a, b):\n"  # the cursor at the start of line 1: the model's answer is FIM_ANSWER


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hapa_lsp", *args], env=server_env(None, env),
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)


def settings_for(env: dict[str, str]) -> config.Settings:
    settings, problems = config.load(environ=env)
    assert not problems, [p.message for p in problems]
    return settings


def fim_prompt(prefix: str, suffix: str, files: tuple[ContextFile, ...] = (), max_tokens: int = 16):
    return build_fim_prompt(model=MODEL, family_override="auto", prefix=prefix, suffix=suffix, language="python",
                            path="pkg/calc.py", max_tokens=max_tokens, temperature=0.0, single_line=False,
                            context_files=files)


async def fim(backend, prompt) -> tuple[str, Usage]:
    usage = Usage()
    parts = [d async for d in backend.stream_fim(prompt, usage, timeout=30)]
    return "".join(parts), usage


# ---- doctor ----------------------------------------------------------------------------------------------------

def test_doctor_is_ok_in_template_mode_and_says_the_server_ignores_a_suffix(llama: LlamaServer):
    out = run_cli(["doctor"], llama_env(llama, HAPA_BACKEND_FIM_MODE="template"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"model server: openai at {llama.url}: OK" in out.stdout
    assert "no problems found" in out.stdout
    report = json.loads(run_cli(["doctor", "--json"], llama_env(llama)).stdout)
    fim_report = report["model_server"]["fim"]
    assert fim_report["native"] == "ignored" and fim_report["template"] == "honoured"
    assert fim_report["llama_server"] is True and fim_report["current"] == "template"
    assert report["problems"] == []


def test_doctor_names_the_setting_to_use_when_native_fim_is_ignored(llama: LlamaServer):
    out = run_cli(["doctor", "--json"], llama_env(llama, HAPA_BACKEND_FIM_MODE="native"))
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    [problem] = [p for p in report["problems"] if p.startswith("E4009")]
    assert "ignores the suffix" in problem
    assert 'hapa.backend.fimMode "template"' in problem and 'hapa.backend.kind "llamacpp"' in problem
    # ... and native mode really does answer nothing through the editor's path (the defect doctor now names).
    text = asyncio.run(_inline_once(llama_env(llama, HAPA_BACKEND_FIM_MODE="native")))
    assert text is None


def test_doctor_is_ok_for_the_llamacpp_kind(llama: LlamaServer):
    out = run_cli(["doctor"], llama_env(llama, HAPA_BACKEND_KIND="llamacpp"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"model server: llamacpp at {llama.url}: OK" in out.stdout


# ---- generate --------------------------------------------------------------------------------------------------

def test_generate_prints_the_model_code_and_history_keeps_the_streamed_usage(llama: LlamaServer, tmp_path: Path):
    db = tmp_path / "hapa.db"
    env = llama_env(llama, HAPA_STORAGE_PATH=str(db))
    out = run_cli(["generate", "add two numbers"], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == CHAT_CODE.strip()
    out = run_cli(["generate", "--json", "add two numbers"], env)
    body = json.loads(out.stdout)
    assert body["status"] == "success" and body["generated_code"].strip() == CHAT_CODE.strip()
    from hapa_lsp.history import list_history
    from hapa_lsp.store import Store

    store = Store(str(db)).open()
    try:
        rows = list_history(store)["items"]
    finally:
        store.close()
    assert len(rows) == 2
    # The stream asked for usage (stream_options.include_usage): the server's own counts, not 0.
    assert all(r["prompt_tokens"] > 20 and r["completion_tokens"] >= 4 for r in rows), rows


def test_generate_json_prints_an_object_with_the_code_when_rejected(llama: LlamaServer):
    # One token of answer is the opening fence only: no code, rejected (E4011) even after the repair round.
    out = run_cli(["generate", "--json", "add two numbers"], llama_env(llama, HAPA_BACKEND_CHAT_MAX_TOKENS="1"))
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert body["status"] == "error" and body["code"] == "E4011"
    assert body["incident_id"] == body["error"]["incident_id"] and body["incident_id"] in out.stderr


async def test_streamed_usage_reaches_the_token_metric(llama: LlamaServer, tmp_path: Path):
    import httpx

    from tests.e2e.test_sidecar import command, samples, sidecar_url, value

    client = await start_client(None, env=llama_env(llama, HAPA_STORAGE_PATH=str(tmp_path / "hapa.db"),
                                                    HAPA_SIDECAR_PORT="0"))
    try:
        # (metrics are wired up after `initialized`, once slow imports are done; hapa.health waits for that)
        url = await sidecar_url(client)
        assert url
        result = await command(client, "hapa.generateCode", {"user_question": "add two numbers"})
        assert result["status"] == "success" and result["generated_code"].strip() == CHAT_CODE.strip()
        async with httpx.AsyncClient(trust_env=False) as http:
            metrics = samples((await http.get(f"{url}/metrics")).text)
    finally:
        await stop_client(client)
    usage = result["usage"]
    assert usage["prompt_tokens"] > 20 and usage["completion_tokens"] >= 4
    assert value(metrics, "hapa_ai_tokens_used_total", model=MODEL, kind="prompt") == usage["prompt_tokens"]
    assert value(metrics, "hapa_ai_tokens_used_total", model=MODEL, kind="completion") == usage["completion_tokens"]


# ---- inline completion -----------------------------------------------------------------------------------------

async def _inline_once(env: dict[str, str], doc: str = DOC, line: int = 1, character: int = 0,
                       repeat: int = 1) -> str | None:
    """Open ``doc`` in a real hapa-lsp session and ask for inline completions; the last answer's text."""
    client = await start_client(None, env=dict(env, HAPA_COMPLETION_DEBOUNCE_MS="0",
                                               HAPA_COMPLETION_MAX_DEBOUNCE_MS="0"))
    try:
        uri = "file:///tmp/hapa-real/calc.py"
        open_doc(client, uri, doc)
        texts = []
        for _ in range(repeat):
            result = await client.text_document_inline_completion_async(inline_params(uri, line, character, True))
            items = result if isinstance(result, list) else (result.items if result else [])
            texts.append(items[0].insert_text if items else None)
        assert len(set(texts)) == 1, texts  # a repeat answers what the first request answered
        return texts[-1]
    finally:
        await stop_client(client)


async def test_inline_completion_in_template_mode(llama: LlamaServer):
    assert await _inline_once(llama_env(llama)) == FIM_ANSWER


async def test_inline_completion_with_the_llamacpp_kind(llama: LlamaServer):
    assert await _inline_once(llama_env(llama, HAPA_BACKEND_KIND="llamacpp")) == FIM_ANSWER


async def test_an_empty_answer_is_not_served_from_the_cache(llama: LlamaServer):
    # Native mode on llama-server: the suffix is dropped, the prompt ends in the document's text, and the
    # model answers nothing. Asked twice with the cache on, both answers are "no suggestion", not an item
    # with insertText "" the second time.
    env = llama_env(llama, HAPA_BACKEND_FIM_MODE="native", HAPA_CACHE_ENABLED="true")
    assert await _inline_once(env, repeat=2) is None


# ---- the llamacpp kind's prompt cache -------------------------------------------------------------------------

def _file(n: int) -> ContextFile:
    body = "\n".join(f"def helper_{n}_{i}(x):\n    return x * {i} + {n}\n" for i in range(12))
    return ContextFile(f"pkg/helpers_{n}.py", body)


HEAD = "".join(f"def f{i}(a, b):\n    return a - b + {i}\n\n" for i in range(20))
SUFFIX = "\n\n" + "".join(f"def g{i}(a):\n    return a * {i}\n\n" for i in range(30))  # 91 lines


async def test_llamacpp_kind_reuses_the_server_cache_while_typing_and_warms_it(llama: LlamaServer):
    settings = settings_for(llama_env(llama, HAPA_BACKEND_KIND="llamacpp"))
    assert settings.backend.infill_suffix_lines == 8
    client = make_client(settings.backend)
    backend = create_backend(settings.backend, client)
    files = (_file(1), _file(2))
    try:
        text, first = await fim(backend, fim_prompt(HEAD + "value = ad", SUFFIX, files))
        assert text == FIM_ANSWER
        assert first.prompt_tokens > 1000 and first.prompt_processed == first.prompt_tokens
        # One more character typed: the context and the prefix come from the cache; what follows the change
        # (the 8 lines of suffix sent, ~60 tokens) is evaluated again.
        text, second = await fim(backend, fim_prompt(HEAD + "value = add", SUFFIX, files))
        assert text == FIM_ANSWER
        assert second.prompt_processed <= 0.2 * second.prompt_tokens, second
        assert second.prompt_cached + second.prompt_processed == second.prompt_tokens
        # Files keep the place they were first sent in, whatever order the context engine ranks them in now,
        # and a new one goes last: the cached context stays the start of the prompt.
        _, third = await fim(backend, fim_prompt(HEAD + "value = add(", SUFFIX, (_file(3), _file(2), _file(1))))
        # (the new file and all after it are evaluated; without the stable order nothing would be reused)
        sent_suffix = _head_lines(SUFFIX, 8)
        assert third.prompt_cached >= 0.9 * (first.prompt_tokens - len(HEAD + "value = ad") - len(sent_suffix))
        # A warm-up (n_predict 0) with a changed context: the request after it evaluates only what follows the
        # lines above the cursor.
        files4 = (_file(4),) + files
        backend.warm(fim_prompt(HEAD + "value = add(", SUFFIX, files4))
        await backend.aclose_warm()
        _, fourth = await fim(backend, fim_prompt(HEAD + "value = add(1", SUFFIX, files4))
        assert fourth.prompt_processed <= 0.2 * fourth.prompt_tokens, fourth
    finally:
        await client.aclose()


async def test_all_of_the_suffix_is_sent_when_asked(llama: LlamaServer):
    settings = settings_for(llama_env(llama, HAPA_BACKEND_KIND="llamacpp", HAPA_BACKEND_INFILL_SUFFIX_LINES="0"))
    client = make_client(settings.backend)
    backend = create_backend(settings.backend, client)
    try:
        await fim(backend, fim_prompt(HEAD + "value = ad", SUFFIX))
        _, second = await fim(backend, fim_prompt(HEAD + "value = add", SUFFIX))
        # Everything after the cursor is evaluated again (llama-server keeps at most n_batch / 4 tokens of
        # suffix: 510 here): the cost the suffix cap bounds.
        assert second.prompt_processed >= 500 and second.prompt_processed > 0.2 * second.prompt_tokens, second
    finally:
        await client.aclose()


def test_the_build_script_reuses_its_cached_binary(llama: LlamaServer):
    if not os.environ.get("HAPA_LLAMA_SERVER"):
        pytest.skip("only where .ci/run built the server (HAPA_LLAMA_SERVER set)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(["bash", str(root / ".ci" / "build-llama-server")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == os.environ["HAPA_LLAMA_SERVER"]
