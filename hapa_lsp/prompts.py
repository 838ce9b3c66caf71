"""Prompt templates: fill-in-the-middle per model family, multi-file context formats, and the chat hole prompt.

Context from other files goes where each family was trained to see it: Qwen2.5-Coder's
``<|repo_name|>`` / ``<|file_sep|>`` and StarCoder2's ``<repo_name>`` / ``<file_sep>`` before the FIM
template, Codestral's ``+++++ path`` blocks at the start of the prefix; every other family (and any
family in native mode, where the server applies the template itself) gets commented blocks with paths.
"""

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

# Ordered: the first pattern found in the model name wins. Compiled at import (the warm-up thread imports this
# module), so the first keystroke pays no regex compile.
_FAMILY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), f) for p, f in (
    (r"codestral", "codestral"),
    (r"codegemma", "codegemma"),
    (r"deepseek[-_.]?coder", "deepseek"),
    (r"code[-_.]?llama", "codellama"),
    (r"starcoder|star[-_]coder", "starcoder"),
    (r"qwen.*coder|coder.*qwen", "qwen"),
))


def family_for(model: str, override: str = "auto") -> str:
    """The FIM family for a model name (``chat`` when it has no FIM format), unless overridden."""
    if override != "auto":
        return override
    name = model.lower()
    for pattern, family in _FAMILY_PATTERNS:
        if pattern.search(name):
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
    preamble: str = ""  # repository context before the FIM template (raw mode only)
    # Context from other files: the start of ``prefix`` for FIM templates; for chat prompts it is in the user
    # message (and not in ``prefix``).
    context_prefix: str = ""
    # The other files themselves, for servers that lay them out in the model's format (llama-server's /infill).
    context_files: tuple[ContextFile, ...] = ()

    @property
    def template(self) -> FimTemplate | None:
        """The FIM template, or None for chat-only models."""
        return TEMPLATES.get(self.family)

    def raw(self) -> str:
        """The raw FIM prompt string (template mode)."""
        t = self.template
        assert t is not None, "chat models have no raw FIM prompt"
        return self.preamble + t.render(self.prefix, self.suffix)

    def text(self) -> str:
        """Everything the model reads, as one string (the cache key)."""
        if self.template is None:
            return "\n".join(m.content for m in self.messages)
        return self.raw()

    def budgeted_text(self) -> str:
        """What the token budget covers: the whole raw prompt, or a chat prompt without its fixed instruction."""
        if self.template is None:
            return self.context_prefix + self.prefix + self.suffix
        return self.raw()


@dataclass(frozen=True, slots=True)
class ContextFile:
    """A piece of another file to show the model: facts rendered as stubs, or a neighbouring snippet."""

    path: str  # as shown to the model (workspace-relative when possible)
    text: str


# Families with a repository-level format the model was trained on (used in raw template mode).
REPO_FORMATS = ("qwen", "starcoder")

_LINE_COMMENT = {
    "python": "#", "shellscript": "#", "ruby": "#", "perl": "#", "r": "#", "yaml": "#", "toml": "#",
    "dockerfile": "#", "makefile": "#", "elixir": "#", "julia": "#", "nim": "#", "powershell": "#",
    "sql": "--", "lua": "--", "haskell": "--", "ada": "--", "elm": "--",
    "lisp": ";;", "clojure": ";;", "scheme": ";;", "erlang": "%", "latex": "%", "matlab": "%",
    "vim": '"',
}


def comment_prefix(language: str) -> str:
    """The line-comment marker of ``language`` (``//`` for the C family and unknown languages)."""
    return _LINE_COMMENT.get(language, "//")


def render_context(family: str, files: list[ContextFile] | tuple[ContextFile, ...], *, current_path: str,
                   language: str, repo_name: str = "", native: bool = False) -> tuple[str, str]:
    """(preamble, prefix head) that carry ``files`` in ``family``'s multi-file format."""
    if not files:
        return "", ""
    repo = repo_name or "workspace"
    if family == "qwen" and not native:
        body = "".join(f"<|file_sep|>{f.path}\n{f.text.rstrip()}\n" for f in files)
        return f"<|repo_name|>{repo}\n{body}<|file_sep|>{current_path}\n", ""
    if family == "starcoder" and not native:
        body = "".join(f"<file_sep>{f.path}\n{f.text.rstrip()}\n" for f in files)
        return f"<repo_name>{repo}{body}<file_sep>{current_path}\n", ""
    if family == "codestral":
        body = "".join(f"+++++ {f.path}\n{f.text.rstrip()}\n\n" for f in files)
        return "", f"{body}+++++ {current_path}\n"
    c = comment_prefix(language)
    blocks = []
    for f in files:
        lines = [f"{c} Path: {f.path}"] + [f"{c} {ln}" if ln.strip() else c for ln in f.text.rstrip().split("\n")]
        blocks.append("\n".join(lines) + "\n")
    return "", "".join(blocks) + "\n"


def chat_context_block(files: list[ContextFile] | tuple[ContextFile, ...]) -> str:
    """Other files' code for a chat prompt (each file in its own fenced block with its path)."""
    if not files:
        return ""
    parts = ["Relevant code from other files:"]
    for f in files:
        parts.append(f"{f.path}:\n```\n{f.text.rstrip()}\n```")
    return "\n".join(parts) + "\n\n"


def build_fim_prompt(*, model: str, family_override: str, prefix: str, suffix: str, language: str, path: str,
                     max_tokens: int, temperature: float, single_line: bool,
                     context_files: list[ContextFile] | tuple[ContextFile, ...] = (), repo_name: str = "",
                     native: bool = False) -> FimPrompt:
    """Choose the template for ``model`` and assemble the request (stop tokens and other files included)."""
    family = family_for(model, family_override)
    template = TEMPLATES.get(family)
    stop: tuple[str, ...] = template.stop if template else ()
    if single_line:
        stop = stop + ("\n",)
    preamble = head = ""
    if template:
        preamble, head = render_context(family, context_files, current_path=path or "untitled", language=language,
                                        repo_name=repo_name, native=native)
        messages = []
    else:
        messages = chat_fim_messages(prefix, suffix, language, path)
        if context_files:
            head = chat_context_block(context_files)
            user = messages[-1]
            messages[-1] = ChatMessage(user.role, head + user.content)
            return FimPrompt(model=model, family=family, prefix=prefix, suffix=suffix, language=language, path=path,
                             max_tokens=max_tokens, temperature=temperature, stop=stop, messages=messages,
                             context_prefix=head)
    return FimPrompt(model=model, family=family, prefix=head + prefix, suffix=suffix, language=language, path=path,
                     max_tokens=max_tokens, temperature=temperature, stop=stop, messages=messages,
                     preamble=preamble, context_prefix=head, context_files=tuple(context_files))
