"""Prompt templates: fill-in-the-middle per model family, and the hole-filling chat prompt for chat-only models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FimTemplate:
    """How one model family spells fill-in-the-middle, and the tokens that end its answer."""

    name: str
    prefix_token: str
    suffix_token: str
    middle_token: str
    stop: tuple[str, ...]
    suffix_first: bool = False
    # Families whose servers accept ``prompt`` + ``suffix`` and apply the template themselves.
    native_suffix: bool = True

    def render(self, prefix: str, suffix: str) -> str:
        """The raw prompt with FIM tokens around prefix and suffix."""
        if self.suffix_first:
            return f"{self.suffix_token}{suffix}{self.prefix_token}{prefix}{self.middle_token}"
        return f"{self.prefix_token}{prefix}{self.suffix_token}{suffix}{self.middle_token}"


TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        FimTemplate("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                    ("<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
                     "<|file_sep|>", "<|repo_name|>", "<|im_end|>")),
        FimTemplate("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
                    ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>",
                     "<repo_name>")),
        FimTemplate("codellama", "<PRE> ", " <SUF>", " <MID>", ("<EOT>", "<PRE>", "<SUF>", "<MID>", "</s>")),
        FimTemplate("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
                    ("<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>")),
        # Codestral puts the suffix first.
        FimTemplate("codestral", "[PREFIX]", "[SUFFIX]", "", ("[PREFIX]", "[SUFFIX]", "</s>"), suffix_first=True),
        FimTemplate("codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                    ("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<end_of_turn>",
                     "<eos>")),
    )
}

# Ordered: the first pattern found in the model name wins.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"codestral", "codestral"),
    (r"codegemma", "codegemma"),
    (r"deepseek[-_.]?coder", "deepseek"),
    (r"code[-_.]?llama", "codellama"),
    (r"starcoder|star[-_]coder", "starcoder"),
    (r"qwen.*coder|coder.*qwen", "qwen"),
)


def family_for(model: str, override: str = "auto") -> str:
    """The FIM family for a model name (``chat`` when it has no FIM format), unless overridden."""
    if override != "auto":
        return override
    name = model.lower()
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, name):
            return family
    return "chat"


HOLE = "<FILL_HERE>"

CHAT_FIM_SYSTEM = (
    "You are a code completion engine. You receive a file with one hole marked " + HOLE + ". "
    "Reply with only the text that replaces the hole: no explanation, no markdown fences, no repetition of the "
    "code before or after the hole. Match the indentation and style of the file."
)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: str
    content: str


def chat_fim_messages(prefix: str, suffix: str, language: str, path: str = "") -> list[ChatMessage]:
    """A hole-filling chat prompt for models without a FIM format."""
    where = f" ({path})" if path else ""
    user = (f"Language: {language}{where}\n```\n{prefix}{HOLE}{suffix}\n```\n"
            f"Write the text for {HOLE}.")
    return [ChatMessage("system", CHAT_FIM_SYSTEM), ChatMessage("user", user)]


@dataclass(frozen=True, slots=True)
class FimPrompt:
    """Everything a backend needs to send one completion request."""

    model: str
    family: str
    prefix: str
    suffix: str
    language: str
    path: str
    max_tokens: int
    temperature: float
    stop: tuple[str, ...] = ()
    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def template(self) -> FimTemplate | None:
        """The FIM template, or None for chat-only models."""
        return TEMPLATES.get(self.family)

    def raw(self) -> str:
        """The raw FIM prompt string (template mode)."""
        t = self.template
        assert t is not None, "chat models have no raw FIM prompt"
        return t.render(self.prefix, self.suffix)


def build_fim_prompt(*, model: str, family_override: str, prefix: str, suffix: str, language: str, path: str,
                     max_tokens: int, temperature: float, single_line: bool) -> FimPrompt:
    """Choose the template for ``model`` and assemble the request (stop tokens included)."""
    family = family_for(model, family_override)
    template = TEMPLATES.get(family)
    stop: tuple[str, ...] = template.stop if template else ()
    if single_line:
        stop = stop + ("\n",)
    messages = [] if template else chat_fim_messages(prefix, suffix, language, path)
    return FimPrompt(model=model, family=family, prefix=prefix, suffix=suffix, language=language, path=path,
                     max_tokens=max_tokens, temperature=temperature, stop=stop, messages=messages)
