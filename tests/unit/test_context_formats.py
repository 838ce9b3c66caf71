"""Multi-file prompt formats: each model family gets other files the way it was trained to see them."""

from __future__ import annotations

from hapa_lsp.prompts import ContextFile, build_fim_prompt

FILES = [ContextFile("shop/models.py", "class Invoice:\n    def total(self) -> int: ...")]


def _prompt(model, *, files=FILES, native=False, language="python"):
    return build_fim_prompt(model=model, family_override="auto", prefix="inv.", suffix="\n", language=language,
                            path="shop/service.py", max_tokens=64, temperature=0.1, single_line=False,
                            context_files=files, repo_name="shop", native=native)


def test_qwen_repo_format():
    p = _prompt("qwen2.5-coder:1.5b-base")
    assert p.raw() == ("<|repo_name|>shop\n<|file_sep|>shop/models.py\nclass Invoice:\n    def total(self) -> int: ...\n"
                       "<|file_sep|>shop/service.py\n<|fim_prefix|>inv.<|fim_suffix|>\n<|fim_middle|>")


def test_starcoder2_repo_format():
    p = _prompt("bigcode/starcoder2-3b")
    assert p.raw().startswith("<repo_name>shop<file_sep>shop/models.py\nclass Invoice:")
    assert p.raw().endswith("<file_sep>shop/service.py\n<fim_prefix>inv.<fim_suffix>\n<fim_middle>")


def test_codestral_plus_blocks_in_prefix():
    p = _prompt("codestral-latest")
    assert p.raw() == ("[SUFFIX]\n[PREFIX]+++++ shop/models.py\nclass Invoice:\n    def total(self) -> int: ...\n\n"
                       "+++++ shop/service.py\ninv.")


def test_other_families_get_commented_blocks_with_paths():
    p = _prompt("deepseek-coder-1.3b-base")
    assert p.prefix == ("# Path: shop/models.py\n# class Invoice:\n#     def total(self) -> int: ...\n\ninv.")
    js = _prompt("codellama-7b-code", language="typescript")
    assert js.prefix.startswith("// Path: shop/models.py\n// class Invoice:")


def test_native_mode_puts_context_in_the_prefix_as_comments():
    # In native mode the server applies the template; repo tokens before it are impossible.
    p = _prompt("qwen2.5-coder:1.5b-base", native=True)
    assert p.preamble == ""
    assert p.prefix.startswith("# Path: shop/models.py\n") and p.prefix.endswith("inv.")
    assert p.context_prefix + "inv." == p.prefix


def test_chat_models_get_the_files_in_the_user_message():
    p = _prompt("gpt-4o-mini")
    assert "shop/models.py:\n```\nclass Invoice:" in p.messages[-1].content


def test_no_context_leaves_the_prompt_unchanged():
    p = _prompt("qwen2.5-coder:1.5b-base", files=[])
    assert p.raw() == "<|fim_prefix|>inv.<|fim_suffix|>\n<|fim_middle|>"
